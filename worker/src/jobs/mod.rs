//! Job handlers, one module per kind. A handler does its work, commits its results together
//! with the job's `succeeded` state, and returns the result shown to clients.

use fastnpc_shared::{
    dispatch,
    ids::{CharacterId, GroupId, JobId, UserId},
    jobs::{JobError, JobKind},
    llm::{ChatRequest, LlmError, LlmErrorKind, Message},
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

/// Asks for a structured reply until `accept` takes one, at most `attempts` times. A refused
/// reply goes back to the model with the reason (its own words and what was wrong with them),
/// which fixes most slips in one more turn; a reply cut at `max_tokens` says so. Returns the
/// accepted value, or the last reason when every reply was refused (see [`malformed`]).
pub(crate) async fn ask_structured<T>(
    deps: &Deps,
    mut request: ChatRequest,
    attempts: u32,
    accept: impl Fn(&str) -> Result<T, String>,
) -> Result<Result<T, String>, LlmError> {
    let mut reason = String::new();
    for attempt in 1..=attempts {
        let completion = deps.llm.complete(request.clone()).await?;
        match accept(&completion.text) {
            Ok(value) => return Ok(Ok(value)),
            Err(error) => {
                reason = if completion.finish.is_cut() {
                    format!("{error} (the reply was cut off at the output limit)")
                } else {
                    error
                };
                tracing::warn!(purpose = %request.purpose, attempt, %reason, "structured reply refused, asking again");
                request.messages.push(Message::assistant(completion.text));
                request.messages.push(Message::user(format!(
                    "That reply cannot be used: {reason}. Answer again with only the corrected JSON object, \
                     complete, with every required field."
                )));
            }
        }
    }
    Ok(Err(reason))
}

/// The job's failure when no reply for `what` was usable after `attempts`.
pub(crate) fn malformed(what: &str, attempts: u32, reason: &str) -> JobFailure {
    JobFailure::Failed(JobError::new(
        LlmErrorKind::Malformed.code(),
        format!("{what}: no valid reply after {attempts} attempts: {reason}"),
    ))
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
