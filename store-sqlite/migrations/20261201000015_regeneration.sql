-- Regeneration: a job that rewrites chosen categories of a ready character, and the parameters
-- a job runs with (which categories), kept on the job so a retry repeats the same request
-- (Postgres: migrations/20261201000015_regeneration.sql).
--
-- SQLite cannot widen a check without rebuilding the table. `job_events` references `jobs`
-- with `on delete cascade`, and dropping `jobs` with foreign keys on (the embedded store turns
-- them on, and a migration's transaction cannot turn them off) deletes every row of it first,
-- cascading to the events: they are set aside and restored around the rebuild.
create temp table job_events_kept as select * from job_events;
drop table job_events;

create table jobs_rebuilt (
    job_id        blob not null primary key,
    user_id       blob not null references users (user_id) on delete cascade,
    kind          text not null
                  check (kind in ('generate_character', 'chat_reply', 'compress_memory', 'group_turn',
                                  'compress_group_memory', 'regenerate_character')),
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
    updated_at    text not null,
    serial_key    text,
    message_id    blob references messages (message_id) on delete cascade,
    group_id      blob references groups (group_id) on delete cascade,
    cancel_requested_at text,
    usage_calls   integer not null default 0,
    usage_prompt_tokens integer not null default 0,
    usage_completion_tokens integer not null default 0,
    params        text check (params is null or json_valid(params))
) strict;

insert into jobs_rebuilt (job_id, user_id, kind, status, character_id, progress_done, progress_total, result, error,
                          attempts, lease_until, published_at, idempotency_key, request_fingerprint, created_at,
                          started_at, finished_at, updated_at, serial_key, message_id, group_id, cancel_requested_at,
                          usage_calls, usage_prompt_tokens, usage_completion_tokens)
select job_id, user_id, kind, status, character_id, progress_done, progress_total, result, error,
       attempts, lease_until, published_at, idempotency_key, request_fingerprint, created_at,
       started_at, finished_at, updated_at, serial_key, message_id, group_id, cancel_requested_at,
       usage_calls, usage_prompt_tokens, usage_completion_tokens
from jobs;

drop table jobs;
alter table jobs_rebuilt rename to jobs;

create index jobs_user_created_idx on jobs (user_id, created_at desc);
create index jobs_character_idx on jobs (character_id);
create index jobs_unpublished_idx on jobs (created_at) where status = 'queued' and published_at is null;
create unique index jobs_idempotency_key on jobs (user_id, idempotency_key) where idempotency_key is not null;
create index jobs_serial_pending_idx on jobs (serial_key, job_id) where status in ('queued', 'running');
create index jobs_message_idx on jobs (message_id);
create index jobs_group_idx on jobs (group_id);
create index jobs_user_active_idx on jobs (user_id) where status in ('queued', 'running');

create table job_events (
    job_id     blob not null references jobs (job_id) on delete cascade,
    seq        integer not null check (seq >= 1),
    type       text not null,
    data       text not null check (json_valid(data)),
    created_at text not null,
    primary key (job_id, seq)
) strict, without rowid;
insert into job_events (job_id, seq, type, data, created_at)
select job_id, seq, type, data, created_at from job_events_kept;
drop table job_events_kept;
