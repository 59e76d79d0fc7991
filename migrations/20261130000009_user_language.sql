-- The user's preferred language.
--
-- A character speaks its own language (characters.language), but a group chat whose members
-- speak different languages still needs one: the moderator and the turn prompts all members
-- share are written in a single language, and this is it. Later it is also the web interface's
-- default. Every user before this migration used the Chinese interface and prompts.
alter table users
    add column language text not null default 'zh' check (language in ('zh', 'en'));
