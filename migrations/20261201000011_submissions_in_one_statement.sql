-- A user's queued and running jobs, found without reading their finished ones: every job
-- submission counts them (the active-jobs cap) while it holds the user's quota lock, so the
-- count must not grow with the user's history.
create index jobs_user_active_idx on jobs (user_id) where status in ('queued', 'running');

-- What a user holds against their caps, counted under the user's quota lock (the row lock every
-- capped submission takes, so two submissions cannot both see room for one more). Called from
-- the submission's own statement: the lock is held only for the rest of that statement and its
-- commit, one round-trip instead of one per statement of a transaction. Each query here takes a
-- fresh snapshot after the lock is granted (READ COMMITTED, volatile), so it sees what the
-- submission that held the lock before committed.
create function quota_usage(p_user_id uuid)
returns table (active_jobs bigint, characters bigint, groups bigint)
language plpgsql volatile as $$
begin
    perform 1 from users where user_id = p_user_id for no key update;
    return query select
        (select count(*) from jobs where user_id = p_user_id and status in ('queued', 'running')),
        (select count(*) from characters where user_id = p_user_id),
        (select count(*) from groups where user_id = p_user_id);
end
$$;
