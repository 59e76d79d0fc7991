-- A character's numbered versions (see the Postgres migration of the same name).
alter table characters add column version integer not null default 0;

create table character_versions (
    character_id blob not null references characters (character_id) on delete cascade,
    version      integer not null,
    change       text not null check (change in ('generated', 'regenerated', 'edited', 'restored', 'imported', 'copied')),
    detail       text not null default '{}' check (json_valid(detail)),
    name         text not null,
    brief        text,
    profile      text not null check (json_valid(profile)),
    created_at   text not null,
    primary key (character_id, version)
) strict;

update characters set version = 1 where profile is not null;
insert into character_versions (character_id, version, change, name, brief, profile, created_at)
select character_id, 1, 'generated', name, brief, profile, updated_at from characters where profile is not null;
