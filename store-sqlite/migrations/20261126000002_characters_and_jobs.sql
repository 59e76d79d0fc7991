-- Characters and the jobs that produce everything slow (SQLite translation of
-- migrations/20261126000002_characters_and_jobs.sql; see 20261126000001 for the type mapping).

create table characters (
    character_id blob not null primary key,
    user_id      blob not null references users (user_id) on delete cascade,
    name         text not null,
    status       text not null default 'generating' check (status in ('generating', 'ready', 'failed')),
    source       text not null check (json_valid(source)),
    profile      text check (json_valid(profile)),
    brief        text,
    created_at   text not null,
    updated_at   text not null
) strict;

create index characters_user_created_idx on characters (user_id, created_at desc, character_id desc);

create table jobs (
    job_id        blob not null primary key,
    user_id       blob not null references users (user_id) on delete cascade,
    -- Postgres widens this check in its migrations 3 and 4. SQLite cannot alter a check without
    -- rebuilding the table, and no SQLite database predates those kinds, so all five are
    -- allowed from the start.
    kind          text not null
                  check (kind in ('generate_character', 'chat_reply', 'compress_memory', 'group_turn',
                                  'compress_group_memory')),
    status        text not null default 'queued'
                  check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    character_id  blob references characters (character_id) on delete cascade,
    progress_done  integer not null default 0,
    progress_total integer not null default 0,
    result        text check (json_valid(result)),
    error         text check (json_valid(error)),
    attempts      integer not null default 0,
    lease_until   text,
    published_at  text,
    idempotency_key text,
    request_fingerprint blob,
    created_at    text not null,
    started_at    text,
    finished_at   text,
    updated_at    text not null
) strict;

create index jobs_user_created_idx on jobs (user_id, created_at desc);
create index jobs_character_idx on jobs (character_id);
create index jobs_unpublished_idx on jobs (created_at) where status = 'queued' and published_at is null;
create unique index jobs_idempotency_key on jobs (user_id, idempotency_key) where idempotency_key is not null;
