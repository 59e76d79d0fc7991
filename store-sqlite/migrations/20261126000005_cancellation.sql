-- Cancellation (SQLite translation of migrations/20261126000005_cancellation.sql).
alter table jobs add column cancel_requested_at text;
