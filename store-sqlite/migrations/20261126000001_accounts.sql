-- Accounts and login sessions (SQLite translation of migrations/20261126000001_accounts.sql).
--
-- Type mapping used by every file here: uuid -> blob (sqlx writes a `Uuid` as its 16 bytes, so
-- UUIDv7 ids compare, and therefore sort, by creation time), timestamptz -> text (the RFC 3339
-- text sqlx writes for `DateTime<Utc>`), jsonb -> text holding JSON, bytea -> blob,
-- boolean -> integer 0/1.
--
-- Tables are STRICT: a value of the wrong storage class (a text id, a numeric timestamp) is an
-- error rather than a row that silently never matches or sorts out of place.
--
-- Primary keys are declared `not null`: unlike Postgres, SQLite lets a non-integer primary key
-- hold nulls unless told otherwise.
--
-- Timestamp columns have no SQL default on purpose: SQLite's own clock functions write another
-- text format than sqlx does, and timestamps are compared as text, so every one is bound from
-- Rust (`crate::now()`); an insert that forgets one fails on `not null` instead of silently
-- storing a value that sorts wrong.

create table users (
    user_id       blob not null primary key,
    username      text not null,
    -- Usernames are unique case-insensitively so "Ada" and "ada" cannot both exist. Postgres
    -- indexes lower(username), folding by the database's (UTF-8) locale; SQLite's lower() folds
    -- ASCII only, so "Élodie" and "élodie" could both register. The folded name is computed in
    -- Rust (`str::to_lowercase`, Unicode-aware) and stored beside the name instead.
    username_lower text not null,
    password_hash text not null, -- argon2id PHC string
    bio           text not null default '',
    ctx_max_chat  integer not null default 3000 check (ctx_max_chat between 50 and 20000),
    ctx_max_stm   integer not null default 3000 check (ctx_max_stm between 50 and 20000),
    ctx_max_ltm   integer not null default 4000 check (ctx_max_ltm between 50 and 20000),
    max_group_rounds integer not null default 3 check (max_group_rounds between 1 and 10),
    created_at    text not null,
    updated_at    text not null
) strict;

create unique index users_username_lower_key on users (username_lower);

-- Only a SHA-256 of the token is stored.
create table sessions (
    token_hash  blob not null primary key,
    user_id     blob not null references users (user_id) on delete cascade,
    created_at  text not null,
    expires_at  text not null,
    revoked_at  text
) strict;

create index sessions_user_id_idx on sessions (user_id);
