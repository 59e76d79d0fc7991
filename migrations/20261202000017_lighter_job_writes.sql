-- Cheaper writes on the chat path, where a reply's job row is written four times (insert,
-- publish confirmation, claim, finish) and a status change is never a HOT update: every write
-- adds an entry to each index whose predicate the new row version satisfies.

-- Chat-reply jobs have no group and character jobs no message: their rows need no entry in
-- these indexes (which serve the foreign keys' cascades and a group's or message's jobs, all
-- of them `= $1` lookups that a partial index answers).
drop index jobs_group_idx;
create index jobs_group_idx on jobs (group_id) where group_id is not null;
drop index jobs_message_idx;
create index jobs_message_idx on jobs (message_id) where message_id is not null;

-- The prompt of every reply is kept with it (3-4 KB, compressed on insert): lz4 compresses it
-- in a fraction of pglz's time. Existing values stay as they are until rewritten.
alter table messages alter column prompt_snapshot set compression lz4;

-- A chat message's submission needs only the active-jobs count: `quota_usage` also counts the
-- user's characters and groups, which for a user with many characters is most of its work.
create function quota_active_jobs(p_user_id uuid)
returns bigint
language plpgsql volatile as $$
begin
    perform 1 from users where user_id = p_user_id for no key update;
    return (select count(*) from jobs where user_id = p_user_id and status in ('queued', 'running'));
end
$$;
