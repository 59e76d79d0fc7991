-- `quota_active_jobs_of` (the previous migration) counts a round's users; the one-user version
-- it replaced has no caller left.
drop function quota_active_jobs(uuid);
