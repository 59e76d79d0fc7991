-- API keys for scripts: long-lived bearer credentials, shown once, stored as SHA-256, revocable.
create table api_keys (
    key_id       uuid primary key,
    user_id      uuid not null references users (user_id) on delete cascade,
    name         text not null,
    -- The first characters of the key, so a user can tell their keys apart in a listing.
    prefix       text not null,
    key_hash     bytea not null unique,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

create index api_keys_user_idx on api_keys (user_id, key_id desc);
