//! Job handlers, one module per kind. A handler does its work, commits its results together
//! with the job's `succeeded` state, and returns the result shown to clients.

use fastnpc_shared::{
    dispatch,
    ids::{CharacterId, GroupId, JobId, UserId},
    jobs::{JobError, JobKind},
    llm::LlmError,
    store::{self, jobs::Claim},
};
use tokio_util::sync::CancellationToken;

use crate::Deps;

pub mod chat_reply;
pub mod compress_memory;
pub mod generate_character;
pub mod group_turn;

/// How a job attempt ended, when it did not succeed.
#[derive(Debug)]
pub enum JobFailure {
    /// Final: retrying cannot help (bad input, the provider refused).
    Failed(JobError),
    /// Another attempt may succeed (the LLM or the database was unavailable).
    Retryable(JobError),
    /// Another worker owns the job now; write nothing.
    LostClaim,
    /// The job stopped early on purpose (a group loop interrupted by a newer user message);
    /// it ends `cancelled` with this result.
    Interrupted(serde_json::Value),
}

impl From<sqlx::Error> for JobFailure {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(%error, "database error during a job");
        Self::Retryable(JobError::new("store_unavailable", "the database was unavailable"))
    }
}

impl From<LlmError> for JobFailure {
    fn from(error: LlmError) -> Self {
        let job_error = JobError::new(error.kind.code(), error.message);
        if error.kind.is_transient() { Self::Retryable(job_error) } else { Self::Failed(job_error) }
    }
}

/// Runs the claimed job's handler.
pub async fn run(deps: &Deps, claim: &Claim, cancel: &CancellationToken) -> Result<serde_json::Value, JobFailure> {
    match claim.kind {
        JobKind::GenerateCharacter => generate_character::run(deps, claim, cancel).await,
        JobKind::ChatReply => chat_reply::run(deps, claim, cancel).await,
        JobKind::CompressMemory | JobKind::CompressGroupMemory => compress_memory::run(deps, claim, cancel).await,
        JobKind::GroupTurn => group_turn::run(deps, claim, cancel).await,
    }
}

/// Schedules a compression of a character's memory — of its single chat, or of one group with
/// `group_id` — unless one is already waiting (it will see everything when it runs). It shares
/// the character's `memory:` serial key, so no two compressions of one memory ever overlap.
pub(crate) async fn schedule_compression(
    deps: &Deps,
    user_id: UserId,
    character_id: CharacterId,
    group_id: Option<GroupId>,
) -> Result<(), sqlx::Error> {
    if deps.store.compression_queued(character_id, group_id).await? {
        return Ok(());
    }
    let job_id = JobId::new();
    let kind = if group_id.is_some() { JobKind::CompressGroupMemory } else { JobKind::CompressMemory };
    deps.store
        .insert_job(store::jobs::NewJob {
            job_id,
            user_id,
            kind,
            character_id: Some(character_id),
            message_id: None,
            group_id,
            serial_key: Some(store::jobs::serial::memory(character_id)),
            progress_total: 0,
            idempotency: None,
        })
        .await?;
    tracing::info!(memory_job.id = %job_id, kind = kind.as_str(), "scheduled memory compression");
    dispatch::enqueue_new(deps.store.as_ref(), deps.events.as_ref(), deps.publisher.as_ref(), job_id).await;
    Ok(())
}
