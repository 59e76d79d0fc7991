-- The Character Card a character was imported from (its `data` object as the file held it), so an
-- export gives back what FastNPC does not model: greetings, the lorebook, other apps'
-- extensions, the creator's notes. `imported_version` is the character's version at the import:
-- while it is still current, the card's own prose goes back out unchanged.
create table character_cards (
    character_id     uuid primary key references characters (character_id) on delete cascade,
    data             jsonb not null,
    imported_version bigint not null,
    created_at       timestamptz not null default now()
);
