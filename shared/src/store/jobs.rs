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

use super::Capped;
use super::JobGuard;
use super::PgStore;
use super::Quota;
use super::StoreResult;
use super::Submitted;
use super::characters;
use super::usage;
use crate::{
    ids::{CharacterId, GroupId, JobId, MessageId, UserId},
    jobs::{JobError, JobKind, JobStatus},
    llm::{Usage, UsageMeter},
};

/// A job as the API shows it.
#[derive(Clone, Debug)]
pub struct JobRecord {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub character_id: Option<CharacterId>,
    pub message_id: Option<MessageId>,
    pub group_id: Option<GroupId>,
    pub serial_key: Option<String>,
    pub progress_done: i32,
    pub progress_total: i32,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub attempts: i32,
    /// LLM calls and tokens of every attempt that ended or was handed back.
    pub usage: Usage,
    /// What the job was asked to do beyond its kind and ids (a regeneration's categories).
    pub params: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Which jobs a listing shows: all, or those of one status and/or kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<JobKind>,
}

/// A job row as both adapters read it: a [`JobRecord`] with its usage still in three columns.
#[derive(Clone, Debug)]
pub struct JobRow {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub character_id: Option<CharacterId>,
    pub message_id: Option<MessageId>,
    pub group_id: Option<GroupId>,
    pub serial_key: Option<String>,
    pub progress_done: i32,
    pub progress_total: i32,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub attempts: i32,
    pub usage_calls: i64,
    pub usage_prompt_tokens: i64,
    pub usage_completion_tokens: i64,
    pub params: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<JobRow> for JobRecord {
    fn from(row: JobRow) -> Self {
        Self {
            job_id: row.job_id,
            user_id: row.user_id,
            kind: row.kind,
            status: row.status,
            character_id: row.character_id,
            message_id: row.message_id,
            group_id: row.group_id,
            serial_key: row.serial_key,
            progress_done: row.progress_done,
            progress_total: row.progress_total,
            result: row.result,
            error: row.error,
            attempts: row.attempts,
            usage: usage::from_columns(row.usage_calls, row.usage_prompt_tokens, row.usage_completion_tokens),
            params: row.params,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: row.updated_at,
        }
    }
}

/// What a worker holds after a successful claim.
#[derive(Clone, Debug)]
pub struct Claim {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub character_id: Option<CharacterId>,
    pub message_id: Option<MessageId>,
    pub group_id: Option<GroupId>,
    pub serial_key: Option<String>,
    /// This claim's number: every write the worker makes is guarded on it.
    pub attempt: i32,
    /// The user asked to cancel the job (before this claim, e.g. while its last worker died).
    pub cancel_requested: bool,
    /// When the job was created (its queue wait is measured from here).
    pub created_at: DateTime<Utc>,
    /// What this attempt's LLM calls spent so far (clones share it). Fresh for every claim, so
    /// the write that ends or hands back the attempt adds exactly this attempt's spend to the
    /// job and to the user's day.
    pub usage: UsageMeter,
    /// Steps this attempt has done (clones share it). Not a write of its own: the lease's
    /// heartbeat carries it to the row, and success sets the row's progress to the total.
    pub progress: ProgressMeter,
    /// A chat reply's context, when the claim's statement read it too (see [`ClaimedContext`]).
    pub chat_context: ClaimedContext,
}

/// The context a chat reply's claim read in its own statement, from the snapshot that saw the
/// job free to run, so that the reply's handler does not read it again: a round-trip and a
/// round of reads fewer between a delivery and the model's request. Empty when the store does
/// not read it with the claim, or found the character, the user or the message gone; the
/// handler then reads it itself ([`super::Store::chat_context`]), which tells which.
#[derive(Clone, Default)]
pub struct ClaimedContext(pub Option<std::sync::Arc<super::ChatContext>>);

impl std::fmt::Debug for ClaimedContext {
    // The context is the prompt's material (profile, memories, messages): never in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ClaimedContext(..)" } else { "ClaimedContext(None)" })
    }
}

/// A job's progress as its handler advances it, for the heartbeat to record. Clients follow
/// progress live on the event stream; the row's copy (what polling shows) lags by at most a
/// heartbeat, which saves a commit per step (nine per character).
#[derive(Clone, Debug, Default)]
pub struct ProgressMeter(std::sync::Arc<std::sync::atomic::AtomicI32>);

impl ProgressMeter {
    /// `done` steps are done (never moves back).
    pub fn advance(&self, done: i32) {
        self.0.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn done(&self) -> i32 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The columns a claim returns, as both adapters read them.
#[derive(Clone, Debug)]
pub struct ClaimRow {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub character_id: Option<CharacterId>,
    pub message_id: Option<MessageId>,
    pub group_id: Option<GroupId>,
    pub serial_key: Option<String>,
    pub attempt: i32,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
}

impl From<ClaimRow> for Claim {
    fn from(row: ClaimRow) -> Self {
        Self {
            job_id: row.job_id,
            user_id: row.user_id,
            kind: row.kind,
            character_id: row.character_id,
            message_id: row.message_id,
            group_id: row.group_id,
            serial_key: row.serial_key,
            attempt: row.attempt,
            cancel_requested: row.cancel_requested,
            created_at: row.created_at,
            usage: UsageMeter::default(),
            progress: ProgressMeter::default(),
            chat_context: ClaimedContext::default(),
        }
    }
}

/// A new job row.
pub struct NewJob<'a> {
    pub job_id: JobId,
    pub user_id: UserId,
    pub kind: JobKind,
    pub character_id: Option<CharacterId>,
    /// For chat replies: the user message answered.
    pub message_id: Option<MessageId>,
    /// For group jobs: the group.
    pub group_id: Option<GroupId>,
    /// Jobs sharing a key run one at a time, in creation order (see [`serial`]).
    pub serial_key: Option<String>,
    pub progress_total: i32,
    /// `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<(&'a str, &'a [u8])>,
    /// What the job is asked to do beyond its kind and ids ([`JobRecord::params`]).
    pub params: Option<&'a Value>,
}

impl NewJob<'_> {
    /// The reply job of a user's chat message: one at a time per character, in order.
    pub fn chat_reply(job_id: JobId, user_id: UserId, character_id: CharacterId, message_id: MessageId) -> Self {
        Self {
            job_id,
            user_id,
            kind: JobKind::ChatReply,
            character_id: Some(character_id),
            message_id: Some(message_id),
            group_id: None,
            serial_key: Some(serial::chat(character_id)),
            progress_total: 0,
            idempotency: None,
            params: None,
        }
    }
}

/// The name of the per-user idempotency-key index.
pub const IDEMPOTENCY_KEY: &str = "jobs_idempotency_key";

pub(crate) async fn insert(db: impl PgExecutor<'_>, job: NewJob<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into jobs (job_id, user_id, kind, character_id, message_id, group_id, serial_key, progress_total,
                           idempotency_key, request_fingerprint, params)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        job.job_id.0,
        job.user_id.0,
        job.kind.as_str(),
        job.character_id.map(|id| id.0),
        job.message_id.map(|id| id.0),
        job.group_id.map(|id| id.0),
        job.serial_key,
        job.progress_total,
        job.idempotency.map(|(key, _)| key),
        job.idempotency.map(|(_, fingerprint)| fingerprint),
        job.params,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Jobs by id, each only for its owner (another user's job is `None`, like a missing one), in
/// one statement: one answer per `(user, job)`, in order.
pub(crate) async fn get(
    db: impl PgExecutor<'_>,
    wanted: &[(UserId, JobId)],
) -> Result<Vec<Option<JobRecord>>, sqlx::Error> {
    let job_ids: Vec<uuid::Uuid> = wanted.iter().map(|(_, job_id)| job_id.0).collect();
    let rows = sqlx::query_as!(
        JobRow,
        r#"select job_id as "job_id: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                  status as "status: JobStatus", character_id as "character_id: CharacterId",
                  message_id as "message_id: MessageId", group_id as "group_id: GroupId", serial_key,
                  progress_done, progress_total, result, error, attempts,
                  usage_calls, usage_prompt_tokens, usage_completion_tokens, params,
                  created_at, started_at, finished_at, updated_at
           from jobs where job_id = any($1)"#,
        &job_ids,
    )
    .fetch_all(db)
    .await?;
    let jobs: std::collections::HashMap<JobId, JobRecord> =
        rows.into_iter().map(JobRecord::from).map(|job| (job.job_id, job)).collect();
    // The owner is checked per ask: one statement serves several users.
    Ok(wanted.iter().map(|(user_id, job_id)| jobs.get(job_id).filter(|job| job.user_id == *user_id).cloned()).collect())
}

/// A page of a user's jobs, newest first, optionally of one status and kind.
pub(crate) async fn list(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    filter: JobFilter,
    before: Option<JobId>,
    limit: i64,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"select job_id as "job_id: JobId", user_id as "user_id: UserId", kind as "kind: JobKind",
                  status as "status: JobStatus", character_id as "character_id: CharacterId",
                  message_id as "message_id: MessageId", group_id as "group_id: GroupId", serial_key,
                  progress_done, progress_total, result, error, attempts,
                  usage_calls, usage_prompt_tokens, usage_completion_tokens, params,
                  created_at, started_at, finished_at, updated_at
           from jobs
           where user_id = $1 and ($2::uuid is null or job_id < $2)
             and ($3::text is null or status = $3) and ($4::text is null or kind = $4)
           order by job_id desc
           limit $5"#,
        user_id.0,
        before.map(|id| id.0),
        filter.status.map(JobStatus::as_str),
        filter.kind.map(JobKind::as_str),
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(JobRecord::from).collect())
}

/// The job a user created with `key`, with the fingerprint of the request that created it.
pub(crate) async fn find_by_idempotency_key(
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

/// The broker confirmed these jobs' messages (a round of [`super::batch::Batch`]).
///
/// Like every statement that writes a round of job rows (the claims, the reply finishes), it
/// locks them in id order first: a round of confirms meets the claims of the same jobs (a
/// confirm can come after its job's delivery), and rounds that each locked in the order of
/// their scan (the table's order, which moves as rows are rewritten) deadlocked, costing both
/// rounds the database's one-second deadlock timeout and one of them its work. (Public, as are
/// [`claim`] and `messages::finish_replies`, for the test that holds a round up at one job.)
pub async fn mark_published(db: impl PgExecutor<'_>, job_ids: &[JobId]) -> Result<(), sqlx::Error> {
    let job_ids: Vec<uuid::Uuid> = job_ids.iter().map(|id| id.0).collect();
    // Always the latest confirm: the re-publisher's staleness rules compare against it.
    sqlx::query!(
        "update jobs set published_at = now()
         where job_id in (select job_id from jobs where job_id = any($1) order by job_id for no key update)",
        &job_ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Jobs that need a message and may have none:
///
/// - queued jobs whose publish was never confirmed (or whose message was dropped while the job
///   waited for its turn, see [`mark_unpublished`], or that were handed back) and that are older
///   than `grace` (so the request that created them has had its chance to publish);
/// - queued jobs at the head of their serial key that were published more than `stale` ago and
///   are still not claimed: their message may have been dropped while they waited (a race
///   between the API recording its confirm and a worker refusing the early delivery);
/// - running jobs whose lease expired more than `grace` ago and that were not published since:
///   their worker died, and its delivery may be gone too (acked as a duplicate while the lease
///   was live, or lost with a broker connection).
///
/// Jobs still waiting behind another job of their serial key are left alone: that job publishes
/// them when it ends.
pub(crate) async fn unpublished(
    db: impl PgExecutor<'_>,
    grace: Duration,
    stale: Duration,
    limit: i64,
) -> Result<Vec<JobId>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select job_id as "job_id: JobId" from jobs
           where (status = 'queued'
                  and ((published_at is null and created_at < now() - make_interval(secs => $1))
                       or (serial_key is not null and published_at < now() - make_interval(secs => $2)))
                  and not exists (
                      select 1 from jobs other
                      where other.serial_key = jobs.serial_key and other.job_id <> jobs.job_id
                        and (other.status = 'running' or (other.status = 'queued' and other.job_id < jobs.job_id))))
              or (status = 'running' and lease_until < now() - make_interval(secs => $1)
                  and (published_at is null or published_at < lease_until))
           order by created_at
           limit $3"#,
        grace.as_secs_f64(),
        stale.as_secs_f64(),
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

/// Claims jobs for `lease`, each a queued job or a running one whose lease expired (its worker
/// died or stalled), in one statement and one commit; one answer per id, in order. `None` when
/// the job is finished, another worker holds a live lease, or the job must wait its turn:
/// another job of its serial key is running (whatever its id: ids are made before commit, so id
/// order is not commit order), or an earlier one is queued. Two jobs of one series asked for
/// together are claimed as if one after the other (the statement's one snapshot shows the later
/// one the earlier still queued); a job asked for twice is claimed for the first ask only.
///
/// A chat reply's claim carries its context ([`ClaimedContext`], the newest `session_limit`
/// messages of its session), read by the same statement: from the snapshot in which the job's
/// series was free, so it holds the reply before it.
///
/// The round's jobs are locked in id order before any is written (see [`mark_published`]).
pub async fn claim(
    db: impl PgExecutor<'_>,
    job_ids: &[JobId],
    lease: Duration,
    session_limit: i64,
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = job_ids.iter().map(|id| id.0).collect();
    let rows = sqlx::query_as!(
        ClaimedRow,
        r#"with claimed as (
               update jobs
               set status = 'running', attempts = attempts + 1,
                   lease_until = now() + make_interval(secs => $2),
                   started_at = coalesce(started_at, now()), updated_at = now()
               where job_id in (select job_id from jobs where job_id = any($1) order by job_id for no key update)
                 and (status = 'queued' or (status = 'running' and lease_until < now()))
                 and not exists (
                     select 1 from jobs other
                     where other.serial_key = jobs.serial_key and other.job_id <> jobs.job_id
                       and (other.status = 'running' or (other.status = 'queued' and other.job_id < jobs.job_id)))
               returning job_id, user_id, kind, character_id, message_id, group_id, serial_key, attempts,
                         cancel_requested_at, created_at
           )
           select k.job_id as "job_id!: JobId", k.user_id as "user_id!: UserId", k.kind as "kind!: JobKind",
                  k.character_id as "character_id: CharacterId", k.message_id as "message_id: MessageId",
                  k.group_id as "group_id: GroupId", k.serial_key, k.attempts as "attempt!",
                  k.cancel_requested_at is not null as "cancel_requested!", k.created_at as "created_at!",
                  x.character_user_id as "character_user_id?: UserId", x.name as "name?", x.status as "status?",
                  x.source as "source?", x.profile, x.brief, x.language as "language?", x.prompt_version,
                  x.source_snapshot, x.version as "version?", x.created_at as "character_created_at?",
                  x.updated_at as "updated_at?", x.memory_version as "memory_version?",
                  x.username as "username?", x.bio as "bio?", x.ctx_max_chat as "ctx_max_chat?",
                  x.ctx_max_stm as "ctx_max_stm?", x.ctx_max_ltm as "ctx_max_ltm?",
                  x.max_group_rounds as "max_group_rounds?", x.user_language as "user_language?",
                  x.is_admin as "is_admin?", x.user_created_at as "user_created_at?", x.message as "message?",
                  x.memories as "memories?", x.session as "session?"
           from claimed k
           left join lateral chat_reply_context(k.user_id, k.character_id, k.message_id, $3) x
               on k.kind = 'chat_reply'"#,
        &ids,
        lease.as_secs_f64(),
        session_limit,
    )
    .fetch_all(db)
    .await?;
    let mut claimed = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let claim = row.into_claim()?;
        claimed.insert(claim.job_id, claim);
    }
    Ok(job_ids.iter().map(|job_id| claimed.remove(job_id)).collect())
}

/// A row of [`claim`]: the job's claim columns, and a chat reply's context columns (all null
/// for other kinds, or when the reply's character, user or message is gone).
struct ClaimedRow {
    job_id: JobId,
    user_id: UserId,
    kind: JobKind,
    character_id: Option<CharacterId>,
    message_id: Option<MessageId>,
    group_id: Option<GroupId>,
    serial_key: Option<String>,
    attempt: i32,
    cancel_requested: bool,
    created_at: DateTime<Utc>,
    character_user_id: Option<UserId>,
    name: Option<String>,
    status: Option<String>,
    source: Option<Value>,
    profile: Option<Value>,
    brief: Option<String>,
    language: Option<String>,
    prompt_version: Option<String>,
    source_snapshot: Option<Value>,
    version: Option<i64>,
    character_created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    memory_version: Option<i64>,
    username: Option<String>,
    bio: Option<String>,
    ctx_max_chat: Option<i32>,
    ctx_max_stm: Option<i32>,
    ctx_max_ltm: Option<i32>,
    max_group_rounds: Option<i32>,
    user_language: Option<String>,
    is_admin: Option<bool>,
    user_created_at: Option<DateTime<Utc>>,
    message: Option<String>,
    memories: Option<Value>,
    session: Option<Value>,
}

impl ClaimedRow {
    fn into_claim(self) -> Result<Claim, sqlx::Error> {
        let claim = ClaimRow {
            job_id: self.job_id,
            user_id: self.user_id,
            kind: self.kind,
            character_id: self.character_id,
            message_id: self.message_id,
            group_id: self.group_id,
            serial_key: self.serial_key,
            attempt: self.attempt,
            cancel_requested: self.cancel_requested,
            created_at: self.created_at,
        };
        // The context's columns as the context reads' row, when the statement found a context.
        let context = (|| {
            Some(super::ContextRow {
                ord: 1,
                character_id: self.character_id?,
                character_user_id: self.character_user_id?,
                name: self.name?,
                status: self.status?,
                source: self.source?,
                profile: self.profile,
                brief: self.brief,
                language: self.language?,
                prompt_version: self.prompt_version,
                source_snapshot: self.source_snapshot,
                version: self.version?,
                created_at: self.character_created_at?,
                updated_at: self.updated_at?,
                memory_version: self.memory_version?,
                user_id: self.user_id,
                username: self.username?,
                bio: self.bio?,
                ctx_max_chat: self.ctx_max_chat?,
                ctx_max_stm: self.ctx_max_stm?,
                ctx_max_ltm: self.ctx_max_ltm?,
                max_group_rounds: self.max_group_rounds?,
                user_language: self.user_language?,
                is_admin: self.is_admin?,
                user_created_at: self.user_created_at?,
                message: self.message?,
                memories: self.memories?,
                session: self.session?,
            })
        })();
        let context = context.map(super::ContextRow::into_context).transpose()?;
        let chat_context = ClaimedContext(context.map(|(_, context)| std::sync::Arc::new(context)));
        Ok(Claim { chat_context, ..claim.into() })
    }
}

/// The current status of a job, without owner check (worker side).
pub(crate) async fn status(db: impl PgExecutor<'_>, job_id: JobId) -> Result<Option<JobStatus>, sqlx::Error> {
    let row = sqlx::query!(r#"select status as "status: JobStatus" from jobs where job_id = $1"#, job_id.0)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| r.status))
}

/// What a heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The lease is extended; carry on.
    Renewed,
    /// The lease is extended, and the user asked to cancel the job.
    CancelRequested,
    /// The claim is no longer this worker's.
    Lost,
}

/// Extends the claim's lease, and reports a pending cancellation request.
pub(crate) async fn renew_lease(
    db: impl PgExecutor<'_>,
    claim: &Claim,
    lease: Duration,
) -> Result<Heartbeat, sqlx::Error> {
    let row = sqlx::query!(
        r#"update jobs set lease_until = now() + make_interval(secs => $3),
                          progress_done = greatest(progress_done, $4)
           where job_id = $1 and attempts = $2 and status = 'running'
           returning cancel_requested_at is not null as "cancel_requested!""#,
        claim.job_id.0,
        claim.attempt,
        lease.as_secs_f64(),
        claim.progress.done(),
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
pub(crate) async fn set_progress(db: impl PgExecutor<'_>, claim: &Claim, done: i32) -> Result<bool, sqlx::Error> {
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
///
/// Like every write that ends or hands back an attempt ([`fail`], [`cancel`], [`release`]), it
/// adds the attempt's LLM usage to the job and, when there was any, to the user's UTC day, in the
/// same statement: the day's upsert reads the rows the guarded update returned, so a lost claim
/// adds nothing anywhere, and callers keep passing any executor.
pub(crate) async fn succeed(db: impl PgExecutor<'_>, claim: &Claim, result: &Value) -> Result<bool, sqlx::Error> {
    let (calls, prompt_tokens, completion_tokens) = usage::to_columns(claim.usage.total());
    let row = sqlx::query!(
        r#"with ended as (
               update jobs set status = 'succeeded', result = $3, progress_done = progress_total,
                      lease_until = null, finished_at = now(), updated_at = now(),
                      usage_calls = usage_calls + $4::bigint,
                      usage_prompt_tokens = usage_prompt_tokens + $5::bigint,
                      usage_completion_tokens = usage_completion_tokens + $6::bigint
               where job_id = $1 and attempts = $2 and status = 'running'
               returning user_id
           ), spent as (
               insert into llm_usage_daily (user_id, day, shard, calls, prompt_tokens, completion_tokens)
               select user_id, (now() at time zone 'utc')::date, $7::smallint, $4::bigint, $5::bigint, $6::bigint
               from ended where $4::bigint > 0
               on conflict (user_id, day, shard) do update
               set calls = llm_usage_daily.calls + excluded.calls,
                   prompt_tokens = llm_usage_daily.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = llm_usage_daily.completion_tokens + excluded.completion_tokens
           )
           select count(*) as "ended!" from ended"#,
        claim.job_id.0,
        claim.attempt,
        result,
        calls,
        prompt_tokens,
        completion_tokens,
        usage::shard(claim.job_id),
    )
    .fetch_one(db)
    .await?;
    Ok(row.ended == 1)
}

/// Ends the claimed job as failed, adding the attempt's usage (see [`succeed`]).
pub(crate) async fn fail(db: impl PgExecutor<'_>, claim: &Claim, error: &JobError) -> Result<bool, sqlx::Error> {
    let error = serde_json::to_value(error).unwrap_or_default();
    let (calls, prompt_tokens, completion_tokens) = usage::to_columns(claim.usage.total());
    let row = sqlx::query!(
        r#"with ended as (
               update jobs set status = 'failed', error = $3, lease_until = null, finished_at = now(),
                      updated_at = now(),
                      usage_calls = usage_calls + $4::bigint,
                      usage_prompt_tokens = usage_prompt_tokens + $5::bigint,
                      usage_completion_tokens = usage_completion_tokens + $6::bigint
               where job_id = $1 and attempts = $2 and status = 'running'
               returning user_id
           ), spent as (
               insert into llm_usage_daily (user_id, day, shard, calls, prompt_tokens, completion_tokens)
               select user_id, (now() at time zone 'utc')::date, $7::smallint, $4::bigint, $5::bigint, $6::bigint
               from ended where $4::bigint > 0
               on conflict (user_id, day, shard) do update
               set calls = llm_usage_daily.calls + excluded.calls,
                   prompt_tokens = llm_usage_daily.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = llm_usage_daily.completion_tokens + excluded.completion_tokens
           )
           select count(*) as "ended!" from ended"#,
        claim.job_id.0,
        claim.attempt,
        error,
        calls,
        prompt_tokens,
        completion_tokens,
        usage::shard(claim.job_id),
    )
    .fetch_one(db)
    .await?;
    Ok(row.ended == 1)
}

/// Hands a claimed job back (graceful shutdown, transient failure): another worker can claim it
/// at once instead of waiting for the lease to expire. The job counts as unpublished until the
/// caller publishes it again, so the re-publisher sends it if that publish never happens. The
/// attempt's usage is added (see [`succeed`]): its tokens were spent even though its work is
/// done again.
pub(crate) async fn release(db: impl PgExecutor<'_>, claim: &Claim) -> Result<bool, sqlx::Error> {
    let (calls, prompt_tokens, completion_tokens) = usage::to_columns(claim.usage.total());
    let row = sqlx::query!(
        r#"with ended as (
               update jobs set status = 'queued', lease_until = null, published_at = null, updated_at = now(),
                      usage_calls = usage_calls + $3::bigint,
                      usage_prompt_tokens = usage_prompt_tokens + $4::bigint,
                      usage_completion_tokens = usage_completion_tokens + $5::bigint
               where job_id = $1 and attempts = $2 and status = 'running'
               returning user_id
           ), spent as (
               insert into llm_usage_daily (user_id, day, shard, calls, prompt_tokens, completion_tokens)
               select user_id, (now() at time zone 'utc')::date, $6::smallint, $3::bigint, $4::bigint, $5::bigint
               from ended where $3::bigint > 0
               on conflict (user_id, day, shard) do update
               set calls = llm_usage_daily.calls + excluded.calls,
                   prompt_tokens = llm_usage_daily.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = llm_usage_daily.completion_tokens + excluded.completion_tokens
           )
           select count(*) as "ended!" from ended"#,
        claim.job_id.0,
        claim.attempt,
        calls,
        prompt_tokens,
        completion_tokens,
        usage::shard(claim.job_id),
    )
    .fetch_one(db)
    .await?;
    Ok(row.ended == 1)
}

/// Serial keys: the jobs sharing one run one at a time, in creation order.
pub mod serial {
    use crate::ids::CharacterId;

    /// A character's conversation: replies are produced in the order the messages were sent.
    pub fn chat(character_id: CharacterId) -> String {
        format!("chat:{character_id}")
    }

    /// A character's memory: two compressions never run at once (single chat or group).
    pub fn memory(character_id: CharacterId) -> String {
        format!("memory:{character_id}")
    }

    /// A character's regenerations: one at a time, in the order they were asked for.
    pub fn regeneration(character_id: CharacterId) -> String {
        format!("regenerate:{character_id}")
    }

    /// A group's turn loops: one at a time, a newer user message interrupting the running one.
    pub fn group(group_id: crate::ids::GroupId) -> String {
        format!("group:{group_id}")
    }
}

/// The job's message was dropped because the job must wait for an earlier one of its serial
/// key; the earlier job (or the re-publisher, once the job's turn comes) publishes it again.
pub(crate) async fn mark_unpublished(db: impl PgExecutor<'_>, job_id: JobId) -> Result<(), sqlx::Error> {
    sqlx::query!("update jobs set published_at = null where job_id = $1 and status = 'queued'", job_id.0)
        .execute(db)
        .await?;
    Ok(())
}

/// The next queued job of each series (the earliest by id), in one statement: one answer per
/// key, in order.
pub(crate) async fn next_in_series(
    db: impl PgExecutor<'_>,
    serial_keys: &[String],
) -> Result<Vec<Option<JobId>>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select distinct on (serial_key) serial_key as "serial_key!", job_id as "job_id: JobId" from jobs
           where serial_key = any($1) and status = 'queued' order by serial_key, job_id"#,
        serial_keys,
    )
    .fetch_all(db)
    .await?;
    let next: std::collections::HashMap<String, JobId> = rows.into_iter().map(|r| (r.serial_key, r.job_id)).collect();
    Ok(serial_keys.iter().map(|key| next.get(key).copied()).collect())
}

/// True when a job answering `message_id` is queued, running or succeeded (a retry would
/// answer the message twice).
pub(crate) async fn message_answered_or_pending(
    db: impl PgExecutor<'_>,
    message_id: MessageId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where message_id = $1 and status in ('queued', 'running', 'succeeded'))
           as "busy!""#,
        message_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.busy)
}

/// Ends the claimed job as cancelled (a group loop interrupted by a newer user message), adding
/// the attempt's usage (see [`succeed`]).
pub(crate) async fn cancel(db: impl PgExecutor<'_>, claim: &Claim, result: &Value) -> Result<bool, sqlx::Error> {
    let (calls, prompt_tokens, completion_tokens) = usage::to_columns(claim.usage.total());
    let row = sqlx::query!(
        r#"with ended as (
               update jobs set status = 'cancelled', result = $3, lease_until = null, finished_at = now(),
                      updated_at = now(),
                      usage_calls = usage_calls + $4::bigint,
                      usage_prompt_tokens = usage_prompt_tokens + $5::bigint,
                      usage_completion_tokens = usage_completion_tokens + $6::bigint
               where job_id = $1 and attempts = $2 and status = 'running'
               returning user_id
           ), spent as (
               insert into llm_usage_daily (user_id, day, shard, calls, prompt_tokens, completion_tokens)
               select user_id, (now() at time zone 'utc')::date, $7::smallint, $4::bigint, $5::bigint, $6::bigint
               from ended where $4::bigint > 0
               on conflict (user_id, day, shard) do update
               set calls = llm_usage_daily.calls + excluded.calls,
                   prompt_tokens = llm_usage_daily.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = llm_usage_daily.completion_tokens + excluded.completion_tokens
           )
           select count(*) as "ended!" from ended"#,
        claim.job_id.0,
        claim.attempt,
        result,
        calls,
        prompt_tokens,
        completion_tokens,
        usage::shard(claim.job_id),
    )
    .fetch_one(db)
    .await?;
    Ok(row.ended == 1)
}

/// True when a compression of this character's memory — of its single chat (`group_id` none)
/// or of one group — is queued and not yet started: a new one would find nothing left to do.
pub(crate) async fn compression_queued(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
    group_id: Option<GroupId>,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where kind in ('compress_memory', 'compress_group_memory')
                          and status = 'queued' and character_id = $1
                          and group_id is not distinct from $2) as "queued!""#,
        character_id.0,
        group_id.map(|id| id.0),
    )
    .fetch_one(db)
    .await?;
    Ok(row.queued)
}

/// True when another job of this serial key is waiting: for a group's turn loop, a newer user
/// message that interrupts it.
pub(crate) async fn successor_waiting(
    db: impl PgExecutor<'_>,
    serial_key: &str,
    job_id: JobId,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from jobs where serial_key = $1 and status = 'queued' and job_id <> $2) as "waiting!""#,
        serial_key,
        job_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.waiting)
}

/// Locks the user message a chat retry answers, so two concurrent retries cannot both pass the
/// "no reply on its way" check.
pub(crate) async fn lock_message(db: impl PgExecutor<'_>, message_id: MessageId) -> Result<(), sqlx::Error> {
    sqlx::query!("select 1 as locked from messages where message_id = $1 for update", message_id.0)
        .fetch_optional(db)
        .await?;
    Ok(())
}

/// How a cancellation request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running; its worker was asked to stop.
    Requested,
    /// The job had already ended (or does not exist): nothing to do.
    AlreadyFinished,
}

/// Cancels a queued job outright, or flags a running one. Idempotent.
pub(crate) async fn request_cancel(db: &mut sqlx::PgConnection, job_id: JobId) -> Result<CancelOutcome, sqlx::Error> {
    let cancelled = sqlx::query!(
        "update jobs set status = 'cancelled', result = '{\"stopped\": \"cancelled\"}', cancel_requested_at = now(),
                finished_at = now(), updated_at = now()
         where job_id = $1 and status = 'queued'",
        job_id.0,
    )
    .execute(&mut *db)
    .await?;
    if cancelled.rows_affected() == 1 {
        return Ok(CancelOutcome::Cancelled);
    }
    let requested = sqlx::query!(
        "update jobs set cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
         where job_id = $1 and status = 'running'",
        job_id.0,
    )
    .execute(&mut *db)
    .await?;
    Ok(if requested.rows_affected() == 1 { CancelOutcome::Requested } else { CancelOutcome::AlreadyFinished })
}

/// An operator gives a failed job another chance (requeueing its dead letter): back to
/// `queued`, its attempts reset; a failed character goes back to `generating`.
pub(crate) async fn reopen(db: &sqlx::PgPool, job_id: JobId) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let reopened = sqlx::query!(
        r#"update jobs set status = 'queued', error = null, finished_at = null, lease_until = null, attempts = 0,
                           published_at = null, updated_at = now()
           where job_id = $1 and status = 'failed'
           returning character_id as "character_id: CharacterId", kind as "kind: JobKind""#,
        job_id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = &reopened
        && row.kind == JobKind::GenerateCharacter
        && let Some(character_id) = row.character_id
    {
        sqlx::query!(
            "update characters set status = 'generating' where character_id = $1 and status = 'failed'",
            character_id.0
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(reopened.is_some())
}

/// Fails a job without a claim: its queue message could not be decoded, so no worker can run it.
pub(crate) async fn fail_unclaimed(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    error: &JobError,
) -> Result<bool, sqlx::Error> {
    let error = serde_json::to_value(error).unwrap_or_default();
    let outcome = sqlx::query!(
        "update jobs set status = 'failed', error = $2, lease_until = null, finished_at = now(), updated_at = now()
         where job_id = $1 and status in ('queued', 'running')",
        job_id.0,
        error,
    )
    .execute(db)
    .await?;
    Ok(outcome.rows_affected() == 1)
}

/// The user's jobs that are queued or running.
pub(crate) async fn active_count(db: impl PgExecutor<'_>, user_id: UserId) -> Result<i64, sqlx::Error> {
    let row = sqlx::query!(
        r#"select count(*) as "count!" from jobs where user_id = $1 and status in ('queued', 'running')"#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.count)
}

/// The user's jobs that are queued or running, oldest first (to cancel them all).
pub(crate) async fn active_of(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<JobId>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select job_id as "job_id: JobId" from jobs
           where user_id = $1 and status in ('queued', 'running') order by job_id"#,
        user_id.0,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

/// See `Store::reset_deliveries`.
pub(crate) async fn reset_deliveries(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "update jobs set published_at = null,
                lease_until = case when status = 'running' then now() - interval '1 second' end,
                updated_at = now()
         where status in ('queued', 'running')"
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Jobs as users see them: read, retried, cancelled, reopened by an operator.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// A job on its own (follow-up work a worker schedules).
    async fn insert_job(&self, job: NewJob<'_>) -> StoreResult<()>;
    async fn job(&self, user_id: UserId, job_id: JobId) -> StoreResult<Option<JobRecord>>;
    /// A page of a user's jobs, newest first.
    async fn list_jobs(
        &self,
        user_id: UserId,
        filter: JobFilter,
        before: Option<JobId>,
        limit: i64,
    ) -> StoreResult<Vec<JobRecord>>;
    async fn job_by_idempotency_key(&self, user_id: UserId, key: &str) -> StoreResult<Option<(JobId, Vec<u8>)>>;
    /// A job that may only exist while `guard` holds (a retry, a regeneration): written if the
    /// guard still holds (else `GuardFailed`) and the quota allows it.
    async fn submit_guarded(&self, job: NewJob<'_>, guard: JobGuard, quota: &Quota) -> StoreResult<Submitted>;
    async fn active_jobs_of(&self, user_id: UserId) -> StoreResult<Vec<JobId>>;
    /// Cancels a queued job in place (failing `generating`, the character it generated) or flags
    /// a running one, together.
    async fn cancel_job(&self, job_id: JobId, generating: Option<CharacterId>) -> StoreResult<CancelOutcome>;
    /// An operator gives a failed job another chance.
    async fn reopen_job(&self, job_id: JobId) -> StoreResult<bool>;
}

#[async_trait::async_trait]
impl JobStore for PgStore {
    async fn insert_job(&self, job: NewJob<'_>) -> StoreResult<()> {
        insert(&self.pool, job).await
    }

    async fn job(&self, user_id: UserId, job_id: JobId) -> StoreResult<Option<JobRecord>> {
        // Status polls and event streams ask this; under a burst, one statement answers a round.
        self.ask(&self.job_reads, (), (user_id, job_id), |pool, (), wanted| async move { get(&pool, &wanted).await })
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
        let mut tx = self.pool.begin().await?;
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
        match insert(&mut *tx, job).await {
            Err(error) if super::postgres::is_unique_violation(&error, IDEMPOTENCY_KEY) => {
                return Ok(Submitted::IdempotencyKeyTaken);
            }
            inserted => inserted?,
        }
        if let Some(cap) = Self::over_quota(&mut tx, user_id, quota, &[Capped::ActiveJobs]).await? {
            return Ok(Submitted::OverQuota(cap));
        }
        tx.commit().await?;
        Ok(Submitted::Created)
    }

    async fn active_jobs_of(&self, user_id: UserId) -> StoreResult<Vec<JobId>> {
        active_of(&self.pool, user_id).await
    }

    async fn cancel_job(&self, job_id: JobId, generating: Option<CharacterId>) -> StoreResult<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
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
        reopen(&self.pool, job_id).await
    }
}

/// Delivery bookkeeping: which jobs still need a message in the queue (the rules are at the
/// `unpublished` query).
#[async_trait::async_trait]
pub trait DeliveryStore: Send + Sync {
    async fn mark_published(&self, job_id: JobId) -> StoreResult<()>;
    async fn mark_unpublished(&self, job_id: JobId) -> StoreResult<()>;
    async fn unpublished_jobs(&self, grace: Duration, stale: Duration, limit: i64) -> StoreResult<Vec<JobId>>;
    async fn next_in_series(&self, serial_key: &str) -> StoreResult<Option<JobId>>;
    async fn successor_waiting(&self, serial_key: &str, job_id: JobId) -> StoreResult<bool>;
    async fn compression_queued(&self, character_id: CharacterId, group_id: Option<GroupId>) -> StoreResult<bool>;
    /// For a process that owns every delivery and lost them all (the embedded mode, restarting
    /// with an empty in-memory queue): every queued job counts as unpublished and every running
    /// job's lease as expired, so the re-publisher sends them all again and their claims take
    /// over. Returns how many jobs that concerns. Never call it while other workers run.
    async fn reset_deliveries(&self) -> StoreResult<u64>;
}

#[async_trait::async_trait]
impl DeliveryStore for PgStore {
    async fn mark_published(&self, job_id: JobId) -> StoreResult<()> {
        let pool = self.pool.clone();
        self.confirms
            .submit(job_id, move || {
                Box::new(move |job_ids: Vec<JobId>| {
                    let pool = pool.clone();
                    Box::pin(async move { mark_published(&pool, &job_ids).await })
                })
            })
            .await
    }

    async fn mark_unpublished(&self, job_id: JobId) -> StoreResult<()> {
        mark_unpublished(&self.pool, job_id).await
    }

    async fn unpublished_jobs(&self, grace: Duration, stale: Duration, limit: i64) -> StoreResult<Vec<JobId>> {
        unpublished(&self.pool, grace, stale, limit).await
    }

    async fn next_in_series(&self, serial_key: &str) -> StoreResult<Option<JobId>> {
        // Every job of a series asks when it ends; under a burst, one statement answers a round.
        self.ask(&self.series_reads, (), serial_key.to_owned(), |pool, (), serial_keys| async move {
            next_in_series(&pool, &serial_keys).await
        })
        .await
    }

    async fn successor_waiting(&self, serial_key: &str, job_id: JobId) -> StoreResult<bool> {
        successor_waiting(&self.pool, serial_key, job_id).await
    }

    async fn compression_queued(&self, character_id: CharacterId, group_id: Option<GroupId>) -> StoreResult<bool> {
        compression_queued(&self.pool, character_id, group_id).await
    }

    async fn reset_deliveries(&self) -> StoreResult<u64> {
        reset_deliveries(&self.pool).await
    }
}

/// The worker's side of a job: claim, heartbeat, progress, end. Every write that ends or hands
/// back an attempt (`succeed_job`, `fail_job`, `cancel_claimed_job`, `release_job`, and the
/// units of work that end in success) also adds the claim's usage meter to the job and to the
/// user's day, in the same transaction as the status change.
#[async_trait::async_trait]
pub trait ClaimStore: Send + Sync {
    async fn claim_job(&self, job_id: JobId, lease: Duration) -> StoreResult<Option<Claim>>;
    async fn job_status(&self, job_id: JobId) -> StoreResult<Option<JobStatus>>;
    async fn renew_lease(&self, claim: &Claim, lease: Duration) -> StoreResult<Heartbeat>;
    async fn succeed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool>;
    /// Fails the job (and a character it was generating), together.
    async fn fail_job(&self, claim: &Claim, error: &JobError) -> StoreResult<bool>;
    /// Ends the job cancelled (and fails a character it was generating), together.
    async fn cancel_claimed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool>;
    /// Hands the job back to the queue.
    async fn release_job(&self, claim: &Claim) -> StoreResult<bool>;
    /// Fails a job no worker can claim (its message was undecodable).
    async fn fail_unclaimed_job(&self, job_id: JobId, error: &JobError) -> StoreResult<bool>;
}

#[async_trait::async_trait]
impl ClaimStore for PgStore {
    async fn claim_job(&self, job_id: JobId, lease: Duration) -> StoreResult<Option<Claim>> {
        // A worker's deliveries arrive together under a burst: one statement and one commit
        // claims a round of them.
        self.ask(&self.claim_rounds, lease, job_id, |pool, lease, job_ids| async move {
            claim(&pool, &job_ids, lease, super::messages::CHAT_SESSION_WINDOW).await
        })
        .await
    }

    async fn job_status(&self, job_id: JobId) -> StoreResult<Option<JobStatus>> {
        status(&self.pool, job_id).await
    }

    async fn renew_lease(&self, claim: &Claim, lease: Duration) -> StoreResult<Heartbeat> {
        renew_lease(&self.pool, claim, lease).await
    }

    async fn succeed_job(&self, claim: &Claim, result: &Value) -> StoreResult<bool> {
        succeed(&self.pool, claim, result).await
    }

    async fn fail_job(&self, claim: &Claim, error: &JobError) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        if !fail(&mut *tx, claim, error).await? {
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
        let mut tx = self.pool.begin().await?;
        if !cancel(&mut *tx, claim, result).await? {
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
        release(&self.pool, claim).await
    }

    async fn fail_unclaimed_job(&self, job_id: JobId, error: &JobError) -> StoreResult<bool> {
        fail_unclaimed(&self.pool, job_id, error).await
    }
}
