-- Single-character chat and the three-layer memory (SQLite translation of
-- migrations/20261126000003_chat_and_memory.sql). The widened `jobs.kind` check is already in
-- 20261126000002.

alter table jobs add column serial_key text;
create index jobs_serial_pending_idx on jobs (serial_key, job_id) where status in ('queued', 'running');

create table messages (
    message_id   blob not null primary key,
    user_id      blob not null references users (user_id) on delete cascade,
    character_id blob not null references characters (character_id) on delete cascade,
    author       text not null check (author in ('user', 'character')),
    content      text not null,
    compressed   integer not null default 0 check (compressed in (0, 1)),
    job_id       blob unique,
    reply_to     blob references messages (message_id) on delete cascade,
    prompt_snapshot text,
    created_at   text not null
) strict;

create index messages_character_idx on messages (character_id, message_id desc);
create index messages_uncompressed_idx on messages (character_id, coalesce(reply_to, message_id)) where not compressed;

-- SQLite allows adding a column with a foreign key as long as its default is null.
alter table jobs add column message_id blob references messages (message_id) on delete cascade;
create index jobs_message_idx on jobs (message_id);
create unique index messages_reply_to_key on messages (reply_to);

create table memories (
    character_id blob not null references characters (character_id) on delete cascade,
    layer        text not null check (layer in ('short_term', 'long_term')),
    position     integer not null,
    content      text not null,
    -- smallint in Postgres: the range check keeps values an i16 can hold.
    importance   integer check (importance between -32768 and 32767),
    created_at   text not null,
    primary key (character_id, layer, position)
) strict;

alter table characters add column memory_version integer not null default 0;
