-- A user's queued and running jobs, found without reading their finished ones: every job
-- submission counts them (the active-jobs cap), so the count must not grow with the user's
-- history.
create index jobs_user_active_idx on jobs (user_id) where status in ('queued', 'running');
