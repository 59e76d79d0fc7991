-- The admin role and disabled accounts (SQLite translation of migrations/20261126000007_admin.sql).
alter table users add column is_admin integer not null default 0 check (is_admin in (0, 1));
alter table users add column disabled_at text;
