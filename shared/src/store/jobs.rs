//! Job rows: creation, claims with leases, progress and terminal states.
//!
//! Every state change is a conditional update, so concurrent or redelivered workers cannot
//! both finish a job: a claim bumps `attempts`, and every later write of that worker is guarded
//! on `attempts` still being its own and the job still `running`. A worker that lost its lease
//! (stalled, then woke up) finds its writes rejected and stops.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use crate::{
    ids::{CharacterId, JobId, UserId},
    jobs::{JobError, JobKind, JobStatus},
};

/// A job as the API shows it.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub character_id: Option<CharacterId>,
    pub progress_done: i32,
    pub progress_total: i32,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What a worker holds after a successful claim.
#[derive(Clone, Debug)]
pub struct Claim {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub character_id: Option<CharacterId>,
    /// This claim's number: every write the worker makes is guarded on it.
    pub attempt: i32,
}

/// A new job row.
pub struct NewJob<'a> {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub character_id: Option<CharacterId>,
    pub progress_total: i32,
    /// `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(&'a str, &'a [u8])>,
}

/// The name of the per-user idempotency-key index.
pub const IDEMPOTENCY_KEY: &str = "jobs_idempotency_key";

pub async fn insert(db: impl PgExecutor<'_>, job: NewJob<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into jobs (job_id, user_id, kind, character_id, progress_total, idempotency_key, request_fingerprint)
         values ($1, $2, $3, $4, $5, $6, $7)",
        job.job_id.0,
        job.user_id.0,
        job.kind.as_str(),
        job.character_id.map(|id| id.0),
        job.progress_total,
        job.idempotency.map(|(key, _)| key),
        job.idempotency.map(|(_, fingerprint)| fingerprint),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A user's job; `None` for another user's job, exactly as for a missing one.
pub async fn get(db: impl PgExecutor<'_>, user_id: UserId, job_id: JobId) -> Result<Option<JobRecord>, sqlx::Error> {
    sqlx::query_as!(
        JobRecord,
        r#"select job_id as "job_id: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                  status as "status: JobStatus", character_id as "character_id: CharacterId",
                  progress_done, progress_total, result, error, attempts,
                  created_at, started_at, finished_at, updated_at
           from jobs where job_id = $1 and user_id = $2"#,
        job_id.0,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// The job a user created with `key`, with the fingerprint of the request that created it.
pub async fn find_by_idempotency_key(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    key: &str,
) -> Result<Option<(JobId, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select job_id as "job_id: JobId", request_fingerprint from jobs where user_id = $1 and idempotency_key = $2"#,
        user_id.0,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.job_id, r.request_fingerprint.unwrap_or_default())))
}

/// The broker confirmed the job's message.
pub async fn mark_published(db: impl PgExecutor<'_>, job_id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!("update jobs set published_at = now() where job_id = $1 and published_at is null", job_id.0)
        .execute(db)
        .await?;
    Ok(())
}

/// Queued jobs whose publish was never confirmed and that are older than `grace` (so the
/// request that created them has had its chance to publish).
pub async fn unpublished(db: impl PgExecutor<'_>, grace: Duration, limit: i64) -> Result<Vec<JobId>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select job_id as "job_id: JobId" from jobs
           where status = 'queued' and published_at is null
             and created_at < now() - make_interval(secs => $1)
           order by created_at
           limit $2"#,
        grace.as_secs_f64(),
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

/// Claims a job for `lease`: a queued job, or a running one whose lease expired (its worker
/// died or stalled). `None` when the job is finished or another worker holds a live lease.
pub async fn claim(db: impl PgExecutor<'_>, job_id: JobId, lease: Duration) -> Result<Option<Claim>, sqlx::Error> {
    sqlx::query_as!(
        Claim,
        r#"update jobs
           set status = 'running', attempts = attempts + 1,
               lease_until = now() + make_interval(secs => $2),
               started_at = coalesce(started_at, now()), updated_at = now()
           where job_id = $1
             and (status = 'queued' or (status = 'running' and lease_until < now()))
           returning job_id as "job_id: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                     character_id as "character_id: CharacterId", attempts as attempt"#,
        job_id.0,
        lease.as_secs_f64(),
    )
    .fetch_optional(db)
    .await
}

/// The current status of a job, without owner check (worker side).
pub async fn status(db: impl PgExecutor<'_>, job_id: JobId) -> Result<Option<JobStatus>, sqlx::Error> {
    let row = sqlx::query!(r#"select status as "status: JobStatus" from jobs where job_id = $1"#, job_id.0)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.status))
}

/// Extends the claim's lease. False when the claim is no longer this worker's.
pub async fn renew_lease(db: impl PgExecutor<'_>, claim: &Claim, lease: Duration) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update jobs set lease_until = now() + make_interval(secs => $3)
         where job_id = $1 and attempts = $2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
        lease.as_secs_f64(),
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records progress. Only ever moves forward, so a late write cannot move the bar back.
pub async fn set_progress(db: impl PgExecutor<'_>, claim: &Claim, done: i32) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update jobs set progress_done = greatest(progress_done, $3), updated_at = now()
         where job_id = $1 and attempts = $2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
        done,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Ends the claimed job as succeeded. False when the claim was lost (then the caller must roll
/// back whatever else it wrote in the same transaction).
pub async fn succeed(db: impl PgExecutor<'_>, claim: &Claim, result: &Value) -> Result<bool, sqlx::Error> {
    let outcome = sqlx::query!(
        "update jobs set status = 'succeeded', result = $3, progress_done = progress_total,
                lease_until = null, finished_at = now(), updated_at = now()
         where job_id = $1 and attempts = $2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
        result,
    )
    .execute(db)
    .await?;
    Ok(outcome.rows_affected() == 1)
}

/// Ends the claimed job as failed.
pub async fn fail(db: impl PgExecutor<'_>, claim: &Claim, error: &JobError) -> Result<bool, sqlx::Error> {
    let error = serde_json::to_value(error).unwrap_or_default();
    let outcome = sqlx::query!(
        "update jobs set status = 'failed', error = $3, lease_until = null, finished_at = now(), updated_at = now()
         where job_id = $1 and attempts = $2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
        error,
    )
    .execute(db)
    .await?;
    Ok(outcome.rows_affected() == 1)
}

/// Hands a claimed job back to the queue (graceful shutdown, transient failure): another worker
/// can claim it at once instead of waiting for the lease to expire.
pub async fn release(db: impl PgExecutor<'_>, claim: &Claim) -> Result<bool, sqlx::Error> {
    let outcome = sqlx::query!(
        "update jobs set status = 'queued', lease_until = null, updated_at = now()
         where job_id = $1 and attempts = $2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
    )
    .execute(db)
    .await?;
    Ok(outcome.rows_affected() == 1)
}
