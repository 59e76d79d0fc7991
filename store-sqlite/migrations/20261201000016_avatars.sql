-- Pictures of characters and users (Postgres: migrations/20261201000016_avatars.sql): only
-- images the API re-encoded itself, kept in the database file so its backup holds them.
create table character_avatars (
    character_id blob not null primary key references characters (character_id) on delete cascade,
    image        blob not null,
    etag         text not null,
    width        integer not null check (width > 0),
    height       integer not null check (height > 0),
    updated_at   text not null
) strict;

create table user_avatars (
    user_id      blob not null primary key references users (user_id) on delete cascade,
    image        blob not null,
    etag         text not null,
    width        integer not null check (width > 0),
    height       integer not null check (height > 0),
    updated_at   text not null
) strict;
