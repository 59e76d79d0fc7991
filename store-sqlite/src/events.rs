//! The per-job event log of embedded mode (no Postgres counterpart: with Postgres the log is a
//! Redis stream per job, see `fastnpc_shared::event_bus`).
//!
//! In one process with SQLite there is no Redis, and an in-memory log would lose every stream on
//! restart, so a client resuming with `Last-Event-ID` would miss events. Here the log is the
//! `job_events` table: `seq` = 1, 2, 3, ... per job, the `id:` SSE sends and a client sends
//! back. Rows go with their job (`on delete cascade`), and [`prune`] drops the logs of jobs that
//! ended long ago.

use chrono::{DateTime, Utc};
use fastnpc_shared::ids::JobId;
use serde_json::Value;
use sqlx::SqliteExecutor;

use crate::now;

/// Appends an event to a job's log and returns its `seq` (1 for the first event of a job).
///
/// The next `seq` is read and written by one `insert ... select` ([`append_all`]): SQLite takes
/// the write lock before the statement reads `max(seq)`, and the statement is its own write
/// transaction, so concurrent appends to one job get distinct, gapless numbers without a retry
/// loop. (A separate read then insert would need [`crate::begin_immediate`] for the same
/// guarantee.) Fails with a foreign-key error when the job does not exist.
pub async fn append(
    db: impl SqliteExecutor<'_>,
    job_id: JobId,
    event_type: &str,
    data: &Value,
) -> Result<u64, sqlx::Error> {
    let seqs = append_all(db, &[NewEvent { job_id, event_type, data }]).await?;
    seqs.into_iter().next().ok_or_else(|| sqlx::Error::Protocol("an append answered no number".into()))
}

/// An event to append with others in one statement ([`append_all`]).
pub struct NewEvent<'a> {
    pub job_id: JobId,
    pub event_type: &'a str,
    pub data: &'a Value,
}

/// Appends `events` in one statement, in order, as [`append`] would one after another: each
/// job's events get its next numbers in the order given. Returns each event's `seq`, in order.
///
/// The statement reads each job's `max(seq)` before it inserts anything (SQLite computes an
/// `insert ... select` that reads its own table into a temporary table first, and the window
/// function needs the whole input anyway), so a job's events in the batch are numbered from its
/// last stored one by their place in the batch. One statement is one write transaction: all of
/// `events` are stored or none is (an event of a job that is gone fails the whole statement with
/// a foreign-key error).
pub async fn append_all(db: impl SqliteExecutor<'_>, events: &[NewEvent<'_>]) -> Result<Vec<u64>, sqlx::Error> {
    let now = now();
    #[derive(serde::Serialize)]
    struct Row<'a> {
        job: String,
        #[serde(rename = "type")]
        event_type: &'a str,
        data: &'a Value,
    }
    let rows: Vec<Row<'_>> = events
        .iter()
        .map(|event| Row { job: crate::id_hex(event.job_id.0), event_type: event.event_type, data: event.data })
        .collect();
    let batch = crate::json_text(&rows)?;
    let rows = sqlx::query!(
        r#"insert into job_events (job_id, seq, type, data, created_at)
           select unhex(appended.value ->> 'job'),
                  coalesce((select max(seq) from job_events logged where logged.job_id = unhex(appended.value ->> 'job')), 0)
                      + row_number() over (partition by appended.value ->> 'job' order by appended.key),
                  appended.value ->> 'type', appended.value -> 'data', ?2
           from json_each(?1) appended
           returning job_id as "job_id!: JobId", seq as "seq!: i64""#,
        batch,
        now,
    )
    .fetch_all(db)
    .await?;
    if rows.len() != events.len() {
        return Err(sqlx::Error::Protocol(format!("{} events appended as {}", events.len(), rows.len())));
    }
    // RETURNING comes in no promised order: each job's numbers, lowest first, go to its events
    // in the order given.
    let mut numbers: std::collections::HashMap<JobId, Vec<i64>> = std::collections::HashMap::new();
    for row in rows {
        numbers.entry(row.job_id).or_default().push(row.seq);
    }
    for seqs in numbers.values_mut() {
        seqs.sort_unstable_by(|a, b| b.cmp(a));
    }
    events
        .iter()
        .map(|event| {
            numbers
                .get_mut(&event.job_id)
                .and_then(Vec::pop)
                .map(i64::unsigned_abs)
                .ok_or_else(|| sqlx::Error::Protocol(format!("no number for an event of job {}", event.job_id)))
        })
        .collect()
}

/// Events of a job with `seq > after`, oldest first, at most `limit`: `(seq, type, data)`.
pub async fn read_after(
    db: impl SqliteExecutor<'_>,
    job_id: JobId,
    after: u64,
    limit: i64,
) -> Result<Vec<(u64, String, Value)>, sqlx::Error> {
    // A `seq` past i64::MAX cannot exist, so clamping asks for "nothing after the end".
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let rows = sqlx::query!(
        r#"select seq as "seq!: i64", type as "event_type!: String", data as "data!: Value"
           from job_events where job_id = ?1 and seq > ?2 order by seq limit ?3"#,
        job_id.0,
        after,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.seq.unsigned_abs(), r.event_type, r.data)).collect())
}

/// Deletes the logs of jobs that finished before `older_than` (a finished job's log only serves
/// late resumes and replays). Returns how many events were deleted. Jobs still queued or running
/// have no `finished_at` and keep their logs whatever their age.
pub async fn prune(db: impl SqliteExecutor<'_>, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "delete from job_events where job_id in (select job_id from jobs where finished_at < ?1)",
        older_than,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}
