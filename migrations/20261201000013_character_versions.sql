-- Every change to what a character is (its name, brief and profile) is a numbered version: the
-- generation that first wrote it, then each edit or restore. The character row holds the current
-- one, whose number is the ETag that an edit's If-Match is compared with; this table keeps them
-- all, so any can be shown and restored.
alter table characters add column version bigint not null default 0;

create table character_versions (
    character_id uuid not null references characters (character_id) on delete cascade,
    version      bigint not null,
    -- generated | regenerated (some categories written again) | edited | restored | imported
    -- (account import or character card) | copied (from another character)
    change       text not null check (change in ('generated', 'regenerated', 'edited', 'restored', 'imported', 'copied')),
    -- What the change touched: {"fields": ["name", "profile.personality.traits"]} for an edit,
    -- {"from_version": 3} for a restore, {} otherwise.
    detail       jsonb not null default '{}',
    name         text not null,
    brief        text,
    profile      jsonb not null,
    created_at   timestamptz not null default now(),
    primary key (character_id, version)
);

-- The profiles written before versions existed become version 1.
update characters set version = 1 where profile is not null;
insert into character_versions (character_id, version, change, name, brief, profile, created_at)
select character_id, 1, 'generated', name, brief, profile, updated_at from characters where profile is not null;
