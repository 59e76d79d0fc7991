-- API keys (SQLite translation of migrations/20261126000006_api_keys.sql).
create table api_keys (
    key_id       blob not null primary key,
    user_id      blob not null references users (user_id) on delete cascade,
    name         text not null,
    prefix       text not null,
    key_hash     blob not null unique,
    created_at   text not null,
    last_used_at text,
    revoked_at   text
) strict;

create index api_keys_user_idx on api_keys (user_id, key_id desc);
