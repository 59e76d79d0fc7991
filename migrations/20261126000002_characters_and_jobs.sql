-- Characters and the jobs that produce everything slow.

create table characters (
    character_id uuid primary key,
    user_id      uuid not null references users (user_id) on delete cascade,
    name         text not null,
    -- generating: a generation job is in flight; ready: profile present; failed: generation
    -- failed (the row stays so the user sees why; deleting it is the user's call).
    status       text not null default 'generating' check (status in ('generating', 'ready', 'failed')),
    -- The source as submitted: {"kind":"text","text":"..."}. Kept so a failed generation can be
    -- retried and so the profile can be regenerated with better prompts later.
    source       jsonb not null,
    -- One document with one key per category (English keys; see shared::domain::profile).
    -- Null until generation succeeds.
    profile      jsonb,
    -- The 2-4 sentence third-person brief (the original's 人物简介).
    brief        text,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

-- "The user's characters, newest first" is the list query.
create index characters_user_created_idx on characters (user_id, created_at desc, character_id desc);

create table jobs (
    job_id        uuid primary key,
    user_id       uuid not null references users (user_id) on delete cascade,
    kind          text not null check (kind in ('generate_character')),
    status        text not null default 'queued'
                  check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- The subject of the job. Deleting the character deletes its jobs.
    character_id  uuid references characters (character_id) on delete cascade,
    -- Progress as {done, total}; total is known when the job is created.
    progress_done  integer not null default 0,
    progress_total integer not null default 0,
    -- Terminal payloads: result on success, {code, message} on failure.
    result        jsonb,
    error         jsonb,
    -- Claims: attempts counts claims; lease_until lets another worker take over a job whose
    -- worker died (the message is redelivered) or stalled past its lease.
    attempts      integer not null default 0,
    lease_until   timestamptz,
    -- Set when the broker confirmed the publish. A queued row with no confirm is re-published
    -- by the sweeper, so a broker outage delays jobs but never loses them.
    published_at  timestamptz,
    -- Idempotency-Key from the creating request (unique per user), and a hash of that request's
    -- body: a repeat with the same key and body gets this job back, a different body is refused.
    idempotency_key text,
    request_fingerprint bytea,
    created_at    timestamptz not null default now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz not null default now()
);

create index jobs_user_created_idx on jobs (user_id, created_at desc);
create index jobs_character_idx on jobs (character_id);
-- The re-publisher's scan: only unconfirmed queued rows, so the index stays tiny.
create index jobs_unpublished_idx on jobs (created_at) where status = 'queued' and published_at is null;
create unique index jobs_idempotency_key on jobs (user_id, idempotency_key) where idempotency_key is not null;
