-- The Character Card a character was imported from (see the Postgres migration of the same name).
create table character_cards (
    character_id     blob not null primary key references characters (character_id) on delete cascade,
    data             text not null check (json_valid(data)),
    imported_version integer not null,
    created_at       text not null
) strict;
