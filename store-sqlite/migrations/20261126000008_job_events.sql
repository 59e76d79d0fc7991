-- The per-job event log, embedded mode only. With Postgres the log is a Redis stream per job;
-- in one process with SQLite it lives here, so a client's `Last-Event-ID` resume still works
-- after a restart. `seq` is 1, 2, 3, ... per job (assigned by `events::append`).
create table job_events (
    job_id     blob not null references jobs (job_id) on delete cascade,
    seq        integer not null check (seq >= 1),
    type       text not null,
    data       text not null check (json_valid(data)),
    created_at text not null,
    primary key (job_id, seq)
) strict, without rowid;
