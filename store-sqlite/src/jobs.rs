//! Job rows: creation, claims with leases, progress and terminal states (mirrors
//! `fastnpc_shared::store::jobs`).
//!
//! The fencing is the same as in Postgres: a claim bumps `attempts`, and every later write of
//! that worker is guarded on `attempts` still being its own and the job still `running`.
//!
//! What differs:
//!
//! - Postgres' `now() + make_interval(...)` become times computed in Rust and bound, compared
//!   with the stored text (see the crate docs).
//! - [`claim`] relies on SQLite's single writer where Postgres relies on row locks: the
//!   statement holds the database's write lock from before it evaluates the serial-key
//!   `not exists`, so two claims of jobs of one key cannot both pass it.
//! - [`lock_message`] has no `for update`: it takes the database's write lock instead (see there).
//! - The writes that end or hand back an attempt ([`succeed`], [`fail`], [`cancel`],
//!   [`release`]) are two statements, the job's update and the day's usage (SQLite has no
//!   data-modifying CTEs), so they take a connection and must run in a transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, GroupId, JobId, MessageId, UserId},
    jobs::{JobError, JobKind, JobStatus},
    store::{
        jobs::{CancelOutcome, Claim, ClaimRow, Heartbeat, JobFilter, JobRecord, JobRow, NewJob},
        usage::to_columns,
    },
};
use serde_json::Value;
use sqlx::{SqliteConnection, SqliteExecutor, SqlitePool};

use crate::SqliteStore;
use crate::characters;
use crate::store::over_quota;
use crate::{begin_immediate, id_list, minus, now, plus, usage};
use fastnpc_shared::store::Capped;
use fastnpc_shared::store::JobGuard;
use fastnpc_shared::store::Quota;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::Submitted;
use fastnpc_shared::store::jobs::ClaimStore;
use fastnpc_shared::store::jobs::DeliveryStore;
use fastnpc_shared::store::jobs::JobStore;

pub async fn insert(db: impl SqliteExecutor<'_>, job: NewJob<'_>) -> Result<(), sqlx::Error> {
    let now = now();
    // The SQLite arguments borrow what they bind, so no temporaries in the macro call.
    let kind = job.kind.as_str();
    let character_id = job.character_id.map(|id| id.0);
    let message_id = job.message_id.map(|id| id.0);
    let group_id = job.group_id.map(|id| id.0);
    let (key, fingerprint) = job.idempotency.unzip();
    sqlx::query!(
        "insert into jobs (job_id, user_id, kind, character_id, message_id, group_id, serial_key, progress_total,
                           idempotency_key, request_fingerprint, created_at, updated_at, params)
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
        job.job_id.0,
        job.user_id.0,
        kind,
        character_id,
        message_id,
        group_id,
        job.serial_key,
        job.progress_total,
        key,
        fingerprint,
        now,
        job.params,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A user's job; `None` for another user's job, exactly as for a missing one.
pub async fn get(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    job_id: JobId,
) -> Result<Option<JobRecord>, sqlx::Error> {
    Ok(get_all(db, &[(user_id, job_id)]).await?.pop().flatten())
}

/// Each of `wanted`'s jobs, as [`get`] reads one, in one statement: one answer per ask, in order.
pub async fn get_all(
    db: impl SqliteExecutor<'_>,
    wanted: &[(UserId, JobId)],
) -> Result<Vec<Option<JobRecord>>, sqlx::Error> {
    let job_ids = id_list(wanted.iter().map(|(_, job_id)| job_id.0));
    let rows = sqlx::query_as!(
        JobRow,
        r#"select job_id as "job_id!: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                  status as "status: JobStatus", character_id as "character_id: CharacterId",
                  message_id as "message_id: MessageId", group_id as "group_id: GroupId", serial_key,
                  progress_done as "progress_done: i32", progress_total as "progress_total: i32",
                  result as "result: Value", error as "error: Value", attempts as "attempts: i32",
                  usage_calls, usage_prompt_tokens, usage_completion_tokens, params as "params: Value",
                  created_at as "created_at: DateTime<Utc>", started_at as "started_at: DateTime<Utc>",
                  finished_at as "finished_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from jobs where job_id in (select unhex(value) from json_each(?1))"#,
        job_ids,
    )
    .fetch_all(db)
    .await?;
    let jobs: std::collections::HashMap<JobId, JobRecord> =
        rows.into_iter().map(JobRecord::from).map(|job| (job.job_id, job)).collect();
    // The owner is checked per ask: one statement serves several users.
    Ok(wanted.iter().map(|(user_id, job_id)| jobs.get(job_id).filter(|job| job.user_id == *user_id).cloned()).collect())
}

/// A page of a user's jobs, newest first, optionally of one status and kind.
pub async fn list(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    filter: JobFilter,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let status = filter.status.map(JobStatus::as_str);
    let kind = filter.kind.map(JobKind::as_str);
    let before = before.map(|id| id.0);
    let rows = sqlx::query_as!(
        JobRow,
        r#"select job_id as "job_id!: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                  status as "status: JobStatus", character_id as "character_id: CharacterId",
                  message_id as "message_id: MessageId", group_id as "group_id: GroupId", serial_key,
                  progress_done as "progress_done: i32", progress_total as "progress_total: i32",
                  result as "result: Value", error as "error: Value", attempts as "attempts: i32",
                  usage_calls, usage_prompt_tokens, usage_completion_tokens, params as "params: Value",
                  created_at as "created_at: DateTime<Utc>", started_at as "started_at: DateTime<Utc>",
                  finished_at as "finished_at: DateTime<Utc>", updated_at as "updated_at: DateTime<Utc>"
           from jobs
           where user_id = ?1 and (?2 is null or job_id < ?2)
             and (?3 is null or status = ?3) and (?4 is null or kind = ?4)
           order by job_id desc
           limit ?5"#,
        user_id.0,
        before,
        status,
        kind,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(JobRecord::from).collect())
}

/// The job a user created with `key`, with the fingerprint of the request that created it.
pub async fn find_by_idempotency_key(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    key: &str,
) -> Result<Option<(JobId, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select job_id as "job_id!: JobId", request_fingerprint from jobs where user_id = ?1 and idempotency_key = ?2"#,
        user_id.0,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| (r.job_id, r.request_fingerprint.unwrap_or_default())))
}

/// The broker confirmed the job's message.
pub async fn mark_published(db: impl SqliteExecutor<'_>, job_id: JobId) -> Result<(), sqlx::Error> {
    mark_all_published(db, &[job_id]).await
}

/// A round of confirmations: one statement, so one commit (and one trip to SQLite's thread) for
/// all of them.
async fn mark_all_published(db: impl SqliteExecutor<'_>, job_ids: &[JobId]) -> Result<(), sqlx::Error> {
    let now = now();
    let job_ids = id_list(job_ids.iter().map(|id| id.0));
    sqlx::query!(
        "update jobs set published_at = ?2 where job_id in (select unhex(value) from json_each(?1))",
        job_ids,
        now
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Jobs that need a message and may have none; the same three cases as the Postgres function
/// (never-confirmed queued jobs older than `grace`, serial-key heads published more than `stale`
/// ago and still queued, running jobs whose lease expired more than `grace` ago and that were not
/// published since), leaving alone jobs that wait behind another job of their serial key.
pub async fn unpublished(
    db: impl SqliteExecutor<'_>,
    grace: Duration,
    stale: Duration,
    limit: i64,
) -> Result<Vec<JobId>, sqlx::Error> {
    let now = now();
    let grace_cutoff = minus(now, grace);
    let stale_cutoff = minus(now, stale);
    let rows = sqlx::query!(
        r#"select job_id as "job_id!: JobId" from jobs
           where (status = 'queued'
                  and ((published_at is null and created_at < ?1)
                       or (serial_key is not null and published_at < ?2))
                  and not exists (
                      select 1 from jobs other
                      where other.serial_key = jobs.serial_key and other.job_id <> jobs.job_id
                        and (other.status = 'running' or (other.status = 'queued' and other.job_id < jobs.job_id))))
              or (status = 'running' and lease_until < ?1
                  and (published_at is null or published_at < lease_until))
           order by created_at
           limit ?3"#,
        grace_cutoff,
        stale_cutoff,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

/// Claims a job for `lease`: a queued job, or a running one whose lease expired (its worker
/// died or stalled). `None` when the job is finished, another worker holds a live lease, or the
/// job must wait its turn: another job of its serial key is running (whatever its id), or an
/// earlier one is queued.
pub async fn claim(db: impl SqliteExecutor<'_>, job_id: JobId, lease: Duration) -> Result<Option<Claim>, sqlx::Error> {
    Ok(claim_all(db, &[job_id], lease).await?.pop().flatten())
}

/// Claims each of `job_ids` as [`claim`] does, in one statement: one answer per id, in order (an
/// id asked for twice is claimed for its first ask only, as two claims one after the other
/// would be).
///
/// Two jobs of one series in the same statement come out as they would one after the other,
/// whichever row SQLite updates first: the later one is refused (the earlier is queued before
/// it, or already running), and the earlier one passes (the later one is neither running nor
/// queued before it).
pub async fn claim_all(
    db: impl SqliteExecutor<'_>,
    job_ids: &[JobId],
    lease: Duration,
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let now = now();
    let lease_until = plus(now, lease);
    let ids = id_list(job_ids.iter().map(|id| id.0));
    let rows = sqlx::query_as!(
        ClaimRow,
        r#"update jobs
           set status = 'running', attempts = attempts + 1, lease_until = ?2,
               started_at = coalesce(started_at, ?3), updated_at = ?3
           where job_id in (select unhex(value) from json_each(?1))
             and (status = 'queued' or (status = 'running' and lease_until < ?3))
             and not exists (
                 select 1 from jobs other
                 where other.serial_key = jobs.serial_key and other.job_id <> jobs.job_id
                   and (other.status = 'running' or (other.status = 'queued' and other.job_id < jobs.job_id)))
           returning job_id as "job_id!: JobId", user_id as "user_id!: UserId", kind as "kind!: JobKind",
                     character_id as "character_id: CharacterId", message_id as "message_id: MessageId",
                     group_id as "group_id: GroupId", serial_key, attempts as "attempt!: i32",
                     cancel_requested_at is not null as "cancel_requested!: bool",
                     created_at as "created_at!: DateTime<Utc>""#,
        ids,
        lease_until,
        now,
    )
    .fetch_all(db)
    .await?;
    let mut claimed: std::collections::HashMap<JobId, ClaimRow> =
        rows.into_iter().map(|row| (row.job_id, row)).collect();
    Ok(job_ids.iter().map(|job_id| claimed.remove(job_id).map(Claim::from)).collect())
}

/// Claims a round of jobs on the write connection (see [`claim_all`]). The write lock first,
/// then the clock: every write goes through that one connection, so holding it is holding the
/// lock, and a claim stamped before it waited for the lock could start a job of a series earlier
/// than the previous one, committing meanwhile, was stamped as finished.
async fn claim_round(writer: SqlitePool, job_ids: Vec<JobId>, lease: Duration) -> StoreResult<Vec<Option<Claim>>> {
    let mut connection = writer.acquire().await?;
    claim_all(&mut *connection, &job_ids, lease).await
}

/// The current status of a job, without owner check (worker side).
pub async fn status(db: impl SqliteExecutor<'_>, job_id: JobId) -> Result<Option<JobStatus>, sqlx::Error> {
    let row = sqlx::query!(r#"select status as "status: JobStatus" from jobs where job_id = ?1"#, job_id.0)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.status))
}

/// Extends the claim's lease, and reports a pending cancellation request.
pub async fn renew_lease(
    db: impl SqliteExecutor<'_>,
    claim: &Claim,
    lease: Duration,
) -> Result<Heartbeat, sqlx::Error> {
    let lease_until = plus(now(), lease);
    let progress = claim.progress.done();
    let row = sqlx::query!(
        r#"update jobs set lease_until = ?3, progress_done = max(progress_done, ?4)
           where job_id = ?1 and attempts = ?2 and status = 'running'
           returning cancel_requested_at is not null as "cancel_requested!: bool""#,
        claim.job_id.0,
        claim.attempt,
        lease_until,
        progress,
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => Heartbeat::Lost,
        Some(row) if row.cancel_requested => Heartbeat::CancelRequested,
        Some(_) => Heartbeat::Renewed,
    })
}

/// Records progress. Only ever moves forward, so a late write cannot move the bar back.
pub async fn set_progress(db: impl SqliteExecutor<'_>, claim: &Claim, done: i32) -> Result<bool, sqlx::Error> {
    let now = now();
    // SQLite's two-argument max() is Postgres' greatest().
    let result = sqlx::query!(
        "update jobs set progress_done = max(progress_done, ?3), updated_at = ?4
         where job_id = ?1 and attempts = ?2 and status = 'running'",
        claim.job_id.0,
        claim.attempt,
        done,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Ends the claimed job as succeeded. False when the claim was lost (then the caller must roll
/// back whatever else it wrote in the same transaction).
///
/// Like every write that ends or hands back an attempt ([`fail`], [`cancel`], [`release`]), it
/// adds the attempt's LLM usage to the job and, when there was any, to the user's UTC day. Those
/// are two statements here: run it in a transaction, as the store's methods do, so both or
/// neither happen. A lost claim adds nothing.
pub async fn succeed(tx: &mut SqliteConnection, claim: &Claim, result: &Value) -> Result<bool, sqlx::Error> {
    let now = now();
    let (calls, prompt_tokens, completion_tokens) = to_columns(claim.usage.total());
    let ended = sqlx::query!(
        r#"update jobs set status = 'succeeded', result = ?3, progress_done = progress_total,
                lease_until = null, finished_at = ?4, updated_at = ?4,
                usage_calls = usage_calls + ?5, usage_prompt_tokens = usage_prompt_tokens + ?6,
                usage_completion_tokens = usage_completion_tokens + ?7
         where job_id = ?1 and attempts = ?2 and status = 'running'
         returning user_id as "user_id!: UserId""#,
        claim.job_id.0,
        claim.attempt,
        result,
        now,
        calls,
        prompt_tokens,
        completion_tokens,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ended) = ended else { return Ok(false) };
    usage::spend(&mut *tx, ended.user_id, now, claim.usage.total()).await?;
    Ok(true)
}

/// Ends the claimed job as failed, adding the attempt's usage (see [`succeed`]).
pub async fn fail(tx: &mut SqliteConnection, claim: &Claim, error: &JobError) -> Result<bool, sqlx::Error> {
    let now = now();
    let error = serde_json::to_value(error).unwrap_or_default();
    let (calls, prompt_tokens, completion_tokens) = to_columns(claim.usage.total());
    let ended = sqlx::query!(
        r#"update jobs set status = 'failed', error = ?3, lease_until = null, finished_at = ?4, updated_at = ?4,
                usage_calls = usage_calls + ?5, usage_prompt_tokens = usage_prompt_tokens + ?6,
                usage_completion_tokens = usage_completion_tokens + ?7
         where job_id = ?1 and attempts = ?2 and status = 'running'
         returning user_id as "user_id!: UserId""#,
        claim.job_id.0,
        claim.attempt,
        error,
        now,
        calls,
        prompt_tokens,
        completion_tokens,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ended) = ended else { return Ok(false) };
    usage::spend(&mut *tx, ended.user_id, now, claim.usage.total()).await?;
    Ok(true)
}

/// Hands a claimed job back (graceful shutdown, transient failure): another worker can claim it
/// at once. The job counts as unpublished until the caller publishes it again. The attempt's
/// usage is added (see [`succeed`]): its tokens were spent even though its work is done again.
pub async fn release(tx: &mut SqliteConnection, claim: &Claim) -> Result<bool, sqlx::Error> {
    let now = now();
    let (calls, prompt_tokens, completion_tokens) = to_columns(claim.usage.total());
    let ended = sqlx::query!(
        r#"update jobs set status = 'queued', lease_until = null, published_at = null, updated_at = ?3,
                usage_calls = usage_calls + ?4, usage_prompt_tokens = usage_prompt_tokens + ?5,
                usage_completion_tokens = usage_completion_tokens + ?6
         where job_id = ?1 and attempts = ?2 and status = 'running'
         returning user_id as "user_id!: UserId""#,
        claim.job_id.0,
        claim.attempt,
        now,
        calls,
        prompt_tokens,
        completion_tokens,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ended) = ended else { return Ok(false) };
    usage::spend(&mut *tx, ended.user_id, now, claim.usage.total()).await?;
    Ok(true)
}

/// The job's message was dropped because the job must wait for an earlier one of its serial
/// key; the earlier job (or the re-publisher, once the job's turn comes) publishes it again.
pub async fn mark_unpublished(db: impl SqliteExecutor<'_>, job_id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!("update jobs set published_at = null where job_id = ?1 and status = 'queued'", job_id.0)
        .execute(db)
        .await?;
    Ok(())
}

/// The next job waiting in a serial key, if any.
pub async fn next_in_series(db: impl SqliteExecutor<'_>, serial_key: &str) -> Result<Option<JobId>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select job_id as "job_id!: JobId" from jobs
           where serial_key = ?1 and status = 'queued' order by job_id limit 1"#,
        serial_key,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.job_id))
}

/// True when a job answering `message_id` is queued, running or succeeded (a retry would
/// answer the message twice).
pub async fn message_answered_or_pending(
    db: impl SqliteExecutor<'_>,
    message_id: MessageId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where message_id = ?1 and status in ('queued', 'running', 'succeeded'))
           as "busy!: bool""#,
        message_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.busy)
}

/// Ends the claimed job as cancelled (a group loop interrupted by a newer user message), adding
/// the attempt's usage (see [`succeed`]).
pub async fn cancel(tx: &mut SqliteConnection, claim: &Claim, result: &Value) -> Result<bool, sqlx::Error> {
    let now = now();
    let (calls, prompt_tokens, completion_tokens) = to_columns(claim.usage.total());
    let ended = sqlx::query!(
        r#"update jobs set status = 'cancelled', result = ?3, lease_until = null, finished_at = ?4, updated_at = ?4,
                usage_calls = usage_calls + ?5, usage_prompt_tokens = usage_prompt_tokens + ?6,
                usage_completion_tokens = usage_completion_tokens + ?7
         where job_id = ?1 and attempts = ?2 and status = 'running'
         returning user_id as "user_id!: UserId""#,
        claim.job_id.0,
        claim.attempt,
        result,
        now,
        calls,
        prompt_tokens,
        completion_tokens,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(ended) = ended else { return Ok(false) };
    usage::spend(&mut *tx, ended.user_id, now, claim.usage.total()).await?;
    Ok(true)
}

/// True when a compression of this character's memory — of its single chat (`group_id` none)
/// or of one group — is queued and not yet started.
pub async fn compression_queued(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
    group_id: Option<GroupId>,
) -> Result<bool, sqlx::Error> {
    let group_id = group_id.map(|id| id.0);
    // `is` is SQLite's `is not distinct from`.
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where kind in ('compress_memory', 'compress_group_memory')
                          and status = 'queued' and character_id = ?1
                          and group_id is ?2) as "queued!: bool""#,
        character_id.0,
        group_id,
    )
    .fetch_one(db)
    .await?;
    Ok(row.queued)
}

/// True when another job of this serial key is waiting: for a group's turn loop, a newer user
/// message that interrupts it.
pub async fn successor_waiting(
    db: impl SqliteExecutor<'_>,
    serial_key: &str,
    job_id: JobId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where serial_key = ?1 and status = 'queued' and job_id <> ?2)
           as "waiting!: bool""#,
        serial_key,
        job_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.waiting)
}

/// Serialises chat retries of one message, as Postgres' `select ... for update` does.
///
/// SQLite has no row locks, so this takes the database's write lock with a write that changes
/// nothing: from here to the end of the caller's transaction no other connection can write,
/// so two retries cannot both pass the "no reply on its way" check. Inside a transaction begun
/// with [`crate::begin_immediate`] (which every write transaction should be) the lock is already
/// held and this costs one no-op update; as the first statement of a deferred transaction it
/// takes the lock itself. After a read in a deferred transaction it may fail with
/// `SQLITE_BUSY` instead, which is why callers should begin immediate.
pub async fn lock_message(db: impl SqliteExecutor<'_>, message_id: MessageId) -> Result<(), sqlx::Error> {
    sqlx::query!("update messages set compressed = compressed where message_id = ?1", message_id.0).execute(db).await?;
    Ok(())
}

/// Cancels a queued job outright, or flags a running one. Idempotent. Each update is atomic on
/// its own, so `db` may be a plain connection or a transaction (from [`crate::begin_immediate`]
/// when the caller writes more in it).
pub async fn request_cancel(db: &mut SqliteConnection, job_id: JobId) -> Result<CancelOutcome, sqlx::Error> {
    let now = now();
    let cancelled = sqlx::query!(
        "update jobs set status = 'cancelled', result = '{\"stopped\": \"cancelled\"}', cancel_requested_at = ?2,
                finished_at = ?2, updated_at = ?2
         where job_id = ?1 and status = 'queued'",
        job_id.0,
        now,
    )
    .execute(&mut *db)
    .await?;
    if cancelled.rows_affected() == 1 {
        return Ok(CancelOutcome::Cancelled);
    }
    let requested = sqlx::query!(
        "update jobs set cancel_requested_at = coalesce(cancel_requested_at, ?2), updated_at = ?2
         where job_id = ?1 and status = 'running'",
        job_id.0,
        now,
    )
    .execute(&mut *db)
    .await?;
    Ok(if requested.rows_affected() == 1 { CancelOutcome::Requested } else { CancelOutcome::AlreadyFinished })
}

/// An operator gives a failed job another chance (requeueing its dead letter): back to
/// `queued`, its attempts reset; a failed character goes back to `generating`.
pub async fn reopen(db: &SqlitePool, job_id: JobId) -> Result<bool, sqlx::Error> {
    let now = now();
    let mut tx = begin_immediate(db).await?;
    let reopened = sqlx::query!(
        r#"update jobs set status = 'queued', error = null, finished_at = null, lease_until = null, attempts = 0,
                           published_at = null, updated_at = ?2
           where job_id = ?1 and status = 'failed'
           returning character_id as "character_id: CharacterId", kind as "kind!: JobKind""#,
        job_id.0,
        now,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = &reopened
        && row.kind == JobKind::GenerateCharacter
        && let Some(character_id) = row.character_id
    {
        // Like the Postgres function, this leaves the character's `updated_at` alone.
        sqlx::query!(
            "update characters set status = 'generating' where character_id = ?1 and status = 'failed'",
            character_id.0
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(reopened.is_some())
}

/// Fails a job without a claim: its queue message could not be decoded, so no worker can run it.
pub async fn fail_unclaimed(db: impl SqliteExecutor<'_>, job_id: JobId, error: &JobError) -> Result<bool, sqlx::Error> {
    let now = now();
    let error = serde_json::to_value(error).unwrap_or_default();
    let outcome = sqlx::query!(
        "update jobs set status = 'failed', error = ?2, lease_until = null, finished_at = ?3, updated_at = ?3
         where job_id = ?1 and status in ('queued', 'running')",
        job_id.0,
        error,
        now,
    )
    .execute(db)
    .await?;
    Ok(outcome.rows_affected() == 1)
}

/// The user's jobs that are queued or running.
pub async fn active_count(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "count!: i64" from jobs where user_id = ?1 and status in ('queued', 'running')"#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.count)
}

/// The user's jobs that are queued or running, oldest first (to cancel them all).
pub async fn active_of(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Vec<JobId>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select job_id as "job_id!: JobId" from jobs
           where user_id = ?1 and status in ('queued', 'running') order by job_id"#,
        user_id.0,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

/// See `Store::reset_deliveries`: queued jobs become unpublished, running jobs' leases expire.
pub async fn reset_deliveries(db: impl SqliteExecutor<'_>) -> Result<u64, sqlx::Error> {
    let now = now();
    let expired = minus(now, Duration::from_secs(1));
    let result = sqlx::query!(
        "update jobs set published_at = null,
                lease_until = case when status = 'running' then ?1 end,
                updated_at = ?2
         where status in ('queued', 'running')",
        expired,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: NewJob<'_>) -> StoreResult<()> {
        insert(&self.writer, job).await
    }

    async fn job(&self, user_id: UserId, job_id: JobId) -> StoreResult<Option<JobRecord>> {
        // Status polls and event streams ask this; under a burst, one statement answers a round.
        let pool = self.pool.clone();
        self.job_reads
            .ask((), (user_id, job_id), move |(), wanted| {
                let pool = pool.clone();
                async move { get_all(&pool, &wanted).await }
            })
            .await
    }

    async fn list_jobs(
        &self,
        user_id: UserId,
        filter: JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> StoreResult<Vec<JobRecord>> {
        list(&self.pool, user_id, filter, before, limit).await
    }

    async fn job_by_idempotency_key(&self, user_id: UserId, key: &str) -> StoreResult<Option<(JobId, Vec<u8>)>> {
        find_by_idempotency_key(&self.pool, user_id, key).await
    }

    async fn submit_guarded(&self, job: NewJob<'_>, guard: JobGuard, quota: &Quota) -> StoreResult<Submitted> {
        let user_id = job.user_id;
        let mut tx = begin_immediate(&self.writer).await?;
        let holds = match guard {
            JobGuard::MessageUnanswered(message_id) => {
                // Locked so two concurrent retries cannot both pass the check.
                lock_message(&mut *tx, message_id).await?;
                !message_answered_or_pending(&mut *tx, message_id).await?
            }
            JobGuard::CharacterFailed { user_id, character_id } => {
                characters::mark_generating(&mut *tx, user_id, character_id).await?
            }
            JobGuard::CharacterReady { user_id, character_id } => {
                characters::hold_ready(&mut *tx, user_id, character_id).await?
            }
            JobGuard::None => true,
        };
        if !holds {
            return Ok(Submitted::GuardFailed);
        }
        if let Err(taken) = crate::store::insert_submitted_job(&mut tx, job).await? {
            return Ok(taken);
        }
        if let Some(cap) = over_quota(&mut tx, user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn active_jobs_of(&self, user_id: UserId) -> StoreResult<Vec<JobId>> {
        active_of(&self.pool, user_id).await
    }

    async fn cancel_job(&self, job_id: JobId, generating: Option<CharacterId>) -> StoreResult<CancelOutcome> {
        let mut tx = begin_immediate(&self.writer).await?;
        let outcome = request_cancel(&mut tx, job_id).await?;
        if outcome == CancelOutcome::Cancelled
            && let Some(character_id) = generating
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn reopen_job(&self, job_id: JobId) -> StoreResult<bool> {
        reopen(&self.writer, job_id).await
    }
}

#[async_trait::async_trait]
impl DeliveryStore for SqliteStore {
    async fn mark_published(&self, job_id: JobId) -> StoreResult<()> {
        let pool = self.writer.clone();
        self.confirms
            .submit(job_id, move || {
                Box::new(move |job_ids: Vec<JobId>| {
                    let pool = pool.clone();
                    Box::pin(async move { mark_all_published(&pool, &job_ids).await })
                })
            })
            .await
    }

    async fn mark_unpublished(&self, job_id: JobId) -> StoreResult<()> {
        mark_unpublished(&self.writer, job_id).await
    }

    async fn unpublished_jobs(&self, grace: Duration, stale: Duration, limit: i64) -> StoreResult<Vec<JobId>> {
        unpublished(&self.pool, grace, stale, limit).await
    }

    async fn next_in_series(&self, serial_key: &str) -> StoreResult<Option<JobId>> {
        next_in_series(&self.pool, serial_key).await
    }

    async fn successor_waiting(&self, serial_key: &str, job_id: JobId) -> StoreResult<bool> {
        successor_waiting(&self.pool, serial_key, job_id).await
    }

    async fn compression_queued(&self, character_id: CharacterId, group_id: Option<GroupId>) -> StoreResult<bool> {
        compression_queued(&self.pool, character_id, group_id).await
    }

    async fn reset_deliveries(&self) -> StoreResult<u64> {
        reset_deliveries(&self.writer).await
    }
}

#[async_trait::async_trait]
impl ClaimStore for SqliteStore {
    async fn claim_job(&self, job_id: JobId, lease: Duration) -> StoreResult<Option<Claim>> {
        // A burst's deliveries arrive together: one transaction claims a round of them.
        let writer = self.writer.clone();
        self.claim_rounds.ask(lease, job_id, move |lease, job_ids| claim_round(writer.clone(), job_ids, lease)).await
    }

    async fn job_status(&self, job_id: JobId) -> StoreResult<Option<JobStatus>> {
        status(&self.pool, job_id).await
    }

    async fn renew_lease(&self, claim: &Claim, lease: Duration) -> StoreResult<Heartbeat> {
        renew_lease(&self.writer, claim, lease).await
    }

    async fn succeed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool> {
        // The job's update and the day's usage, together (see `jobs::succeed`).
        let mut tx = begin_immediate(&self.writer).await?;
        if !succeed(&mut tx, claim, result).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_job(&self, claim: &Claim, error: &JobError) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.writer).await?;
        if !fail(&mut tx, claim, error).await? {
            return Ok(false);
        }
        // A failed chat reply keeps the user's message (the client may retry); a failed
        // generation leaves no half-made character behind.
        if claim.kind == JobKind::GenerateCharacter
            && let Some(character_id) = claim.character_id
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_claimed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool> {
        let mut tx = begin_immediate(&self.writer).await?;
        if !cancel(&mut tx, claim, result).await? {
            return Ok(false);
        }
        if claim.kind == JobKind::GenerateCharacter
            && let Some(character_id) = claim.character_id
        {
            characters::mark_failed(&mut *tx, character_id).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn release_job(&self, claim: &Claim) -> StoreResult<bool> {
        // The job's update and the day's usage, together (see `jobs::succeed`).
        let mut tx = begin_immediate(&self.writer).await?;
        if !release(&mut tx, claim).await? {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn fail_unclaimed_job(&self, job_id: JobId, error: &JobError) -> StoreResult<bool> {
        fail_unclaimed(&self.writer, job_id, error).await
    }
}
