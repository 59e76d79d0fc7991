-- Group chat: several characters and the user in one conversation, driven by a server-side
-- turn loop (a `group_turn` job per user message).

alter table jobs drop constraint jobs_kind_check;
alter table jobs add constraint jobs_kind_check
    check (kind in ('generate_character', 'chat_reply', 'compress_memory', 'group_turn', 'compress_group_memory'));

create table groups (
    group_id   uuid primary key,
    user_id    uuid not null references users (user_id) on delete cascade,
    name       text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index groups_user_idx on groups (user_id, group_id desc);

-- Members by id (the original stored names, so renaming a character broke its groups and
-- deleting one touched every user's groups with a member of that name). Deleting a character
-- removes it from its owner's groups only, since characters belong to one user.
create table group_members (
    group_id     uuid not null references groups (group_id) on delete cascade,
    character_id uuid not null references characters (character_id) on delete cascade,
    joined_at    timestamptz not null default now(),
    -- Group messages up to this id are in this character's memory (each character compresses
    -- the group transcript from its own point of view, at its own pace).
    absorbed_upto uuid,
    primary key (group_id, character_id)
);

create index group_members_character_idx on group_members (character_id);

create table group_messages (
    message_id   uuid primary key,
    group_id     uuid not null references groups (group_id) on delete cascade,
    user_id      uuid not null references users (user_id) on delete cascade,
    -- 'user', or 'character' with the speaking character's id (kept if the character is later
    -- deleted, as the transcript's record; its name is kept beside it).
    author       text not null check (author in ('user', 'character')),
    character_id uuid,
    speaker_name text not null,
    content      text not null,
    -- For character messages: the moderator decision that gave them the turn
    -- ({next_speaker, reason, confidence, decision}) and the system prompt used.
    moderator    jsonb,
    prompt_snapshot text,
    -- For character messages: the turn job and round that produced it (unique, so a redelivered
    -- job cannot store a round twice).
    job_id       uuid,
    round        integer,
    created_at   timestamptz not null default now(),
    unique (job_id, round)
);

create index group_messages_group_idx on group_messages (group_id, message_id desc);

alter table jobs add column group_id uuid references groups (group_id) on delete cascade;
create index jobs_group_idx on jobs (group_id);
