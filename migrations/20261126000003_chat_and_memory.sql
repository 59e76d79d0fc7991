-- Single-character chat and the three-layer memory.

alter table jobs drop constraint jobs_kind_check;
alter table jobs add constraint jobs_kind_check
    check (kind in ('generate_character', 'chat_reply', 'compress_memory'));

-- Jobs with the same serial key run one at a time, in creation (id) order: a conversation's
-- replies ("chat:<character id>") and a character's memory compressions ("memory:<character
-- id>"). The claim refuses a job while an earlier job of its key is unfinished.
alter table jobs add column serial_key text;
create index jobs_serial_pending_idx on jobs (serial_key, job_id) where status in ('queued', 'running');

create table messages (
    message_id   uuid primary key,
    user_id      uuid not null references users (user_id) on delete cascade,
    character_id uuid not null references characters (character_id) on delete cascade,
    author       text not null check (author in ('user', 'character')),
    content      text not null,
    -- True once memory compression has absorbed the message into short-term memory; the session
    -- layer of the prompt is the uncompressed messages.
    compressed   boolean not null default false,
    -- For replies: the job that produced it. Unique, so a redelivered job cannot store a reply
    -- twice.
    job_id       uuid unique,
    -- For replies: the user message answered. A reply is written after later messages may have
    -- been sent, so prompts order the conversation by (reply_to or own id), not by id alone.
    reply_to     uuid references messages (message_id) on delete cascade,
    -- For replies: the exact system prompt used (shown only to the owner, on request).
    prompt_snapshot text,
    created_at   timestamptz not null default now()
);

-- History, newest first, and the session layer (uncompressed, in conversation order).
create index messages_character_idx on messages (character_id, message_id desc);
create index messages_uncompressed_idx on messages (character_id, (coalesce(reply_to, message_id))) where not compressed;

-- A chat job answers one user message.
alter table jobs add column message_id uuid references messages (message_id) on delete cascade;
-- Cascading deletes and the retry check look jobs up by message; without these, deleting a
-- character with a long history scans jobs and messages once per message.
create index jobs_message_idx on jobs (message_id);
-- One reply per user message: a racing retry cannot store a second.
create unique index messages_reply_to_key on messages (reply_to);

create table memories (
    character_id uuid not null references characters (character_id) on delete cascade,
    layer        text not null check (layer in ('short_term', 'long_term')),
    position     integer not null,
    content      text not null,
    -- Long-term entries carry the 0-15 importance the integration gave them.
    importance   smallint,
    created_at   timestamptz not null default now(),
    primary key (character_id, layer, position)
);

-- Bumped by every write of a character's memories (compression, manual edit). A compression
-- reads the version with the memories and writes only if it is unchanged, so an edit made while
-- the LLM was summarising is never overwritten; the compression starts over instead.
alter table characters add column memory_version bigint not null default 0;
