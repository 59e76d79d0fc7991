-- Pictures of characters and users. Only images the API decoded and re-encoded itself (a PNG of
-- at most 512 px a side) are stored, never uploaded bytes; they live in the database so a
-- backup of it (pg_dump) holds them, and deleting a character or user deletes its picture.
-- `etag` is a hash of `image`, for conditional GETs.
create table character_avatars (
    character_id uuid primary key references characters (character_id) on delete cascade,
    image        bytea not null,
    etag         text not null,
    width        integer not null check (width > 0),
    height       integer not null check (height > 0),
    updated_at   timestamptz not null default now()
);

create table user_avatars (
    user_id      uuid primary key references users (user_id) on delete cascade,
    image        bytea not null,
    etag         text not null,
    width        integer not null check (width > 0),
    height       integer not null check (height > 0),
    updated_at   timestamptz not null default now()
);
