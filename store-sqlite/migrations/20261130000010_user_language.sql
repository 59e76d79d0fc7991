-- The user's preferred language (SQLite translation of migrations/20261130000009_user_language.sql;
-- the reasons are there): the language of a group chat whose members speak different languages
-- (the moderator and the shared turn prompts need one language), and later the web interface's
-- default. `users` is STRICT; the added column is text like every other text column there.

alter table users add column language text not null default 'zh' check (language in ('zh', 'en'));
