-- A user's daily spend in up to 16 rows per day instead of one. Every job that ends adds its
-- usage to the day's row in the statement that ends it, holding that row's lock until commit; with
-- one row, a user's jobs finishing together queued on it (a burst of 1,000 replies of one user:
-- 160 ms per finish on average). Each job now adds to the shard its id picks; readers add the
-- shards of a day up.
alter table llm_usage_daily add column shard smallint not null default 0;
alter table llm_usage_daily drop constraint llm_usage_daily_pkey;
alter table llm_usage_daily add primary key (user_id, day, shard);
