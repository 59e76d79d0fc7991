-- Group chat (SQLite translation of migrations/20261126000004_groups.sql). The widened
-- `jobs.kind` check is already in 20261126000002.

create table groups (
    group_id   blob not null primary key,
    user_id    blob not null references users (user_id) on delete cascade,
    name       text not null,
    created_at text not null,
    updated_at text not null
) strict;

create index groups_user_idx on groups (user_id, group_id desc);

create table group_members (
    group_id     blob not null references groups (group_id) on delete cascade,
    character_id blob not null references characters (character_id) on delete cascade,
    joined_at    text not null,
    absorbed_upto blob,
    primary key (group_id, character_id)
) strict;

create index group_members_character_idx on group_members (character_id);

create table group_messages (
    message_id   blob not null primary key,
    group_id     blob not null references groups (group_id) on delete cascade,
    user_id      blob not null references users (user_id) on delete cascade,
    author       text not null check (author in ('user', 'character')),
    character_id blob,
    speaker_name text not null,
    content      text not null,
    moderator    text check (json_valid(moderator)),
    prompt_snapshot text,
    job_id       blob,
    round        integer,
    created_at   text not null,
    unique (job_id, round)
) strict;

create index group_messages_group_idx on group_messages (group_id, message_id desc);

alter table jobs add column group_id blob references groups (group_id) on delete cascade;
create index jobs_group_idx on jobs (group_id);
