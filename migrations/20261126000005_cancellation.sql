-- Cancellation: a queued job is cancelled outright; a running one is asked to stop (the API
-- sets this and signals workers over Redis; the worker's heartbeat also reads it, as a fallback
-- when the signal is lost).
alter table jobs add column cancel_requested_at timestamptz;
