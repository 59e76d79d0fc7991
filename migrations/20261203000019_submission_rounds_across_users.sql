-- A round of chat-message submissions may hold several users' messages: many users sending at
-- once then share a statement and a commit, where each paid one of its own.
--
-- Like `quota_active_jobs`, for each user in turn: its row is locked (in user id order, so two
-- rounds over the same users wait for each other instead of deadlocking), then its active jobs
-- are counted. Each statement of a plpgsql function takes a fresh snapshot, so the counts see
-- every job committed by the round that held a lock before this one.
create function quota_active_jobs_of(p_user_ids uuid[])
returns table (quota_user_id uuid, active_jobs bigint)
language plpgsql volatile as $$
begin
    perform 1 from users where user_id = any(p_user_ids) order by user_id for no key update;
    return query
        select u.id, (select count(*) from jobs j where j.user_id = u.id and j.status in ('queued', 'running'))
        from unnest(p_user_ids) as u (id);
end
$$;
