//! The first step of a generation whose source is fetched (Wikipedia, Baidu Baike, a web page):
//! the document, from the character (a retried job fetched it already), the store's fetch cache
//! (another character of the same source, recently) or the source itself.
//!
//! Transient failures (timeouts, broken connections, `5xx`, `429`) are tried again here, with
//! backoff and the source's `Retry-After` honoured (`FASTNPC_FETCH_TRIES` fetches in all, within
//! the job's deadline); then the job fails `source_unavailable`: a source that was down through
//! all of that will not be back for another attempt of the job a moment later, and the user can
//! retry the job. The rest (no such article, a refused address, an ambiguous title, too little
//! text) fail the job at once, with the source named in the message.

use std::time::Duration;

use fastnpc_shared::{
    backoff::Backoff,
    domain::CharacterSource,
    events::EventPayload,
    jobs::JobError,
    sources::{Snapshot, SourceFailure},
    store::{characters::CharacterRecord, jobs::Claim},
};
use tokio_util::sync::CancellationToken;

use super::JobFailure;
use crate::{Deps, runner::emit};

/// The longest wait between two fetches, whatever `Retry-After` asks: a server asking for more
/// gets the job handed back instead.
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// The progress step clients see while the source is fetched.
pub const FETCHING_STEP: &str = "fetching";

/// The document `character` is built from.
pub(crate) async fn source_document(
    deps: &Deps,
    claim: &Claim,
    character: &CharacterRecord,
    source: &CharacterSource,
    total: u32,
    cancel: &CancellationToken,
) -> Result<Snapshot, JobFailure> {
    if let Some(stored) = &character.source_snapshot
        && let Ok(snapshot) = serde_json::from_value::<Snapshot>(stored.clone())
    {
        return Ok(snapshot);
    }
    emit(deps, claim.job_id, EventPayload::Progress { done: 0, total, step: FETCHING_STEP.to_owned() }).await;
    let address = deps.sources.document_url(source);
    let cached = match &address {
        Some(address) => deps.store.cached_document(address, deps.sources.cache_ttl()).await?,
        None => None,
    };
    let snapshot = match cached.and_then(|value| serde_json::from_value::<Snapshot>(value).ok()) {
        Some(snapshot) => snapshot,
        None => {
            let snapshot = fetch_with_retries(deps, source, cancel).await?;
            if let Some(address) = &address {
                deps.store.cache_document(address, &to_value(&snapshot)?, snapshot.fetched_at).await?;
            }
            snapshot
        }
    };
    deps.store.set_source_snapshot(character.character_id, &to_value(&snapshot)?).await?;
    Ok(snapshot)
}

async fn fetch_with_retries(
    deps: &Deps,
    source: &CharacterSource,
    cancel: &CancellationToken,
) -> Result<Snapshot, JobFailure> {
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16)).with_equal_jitter();
    let mut tries = 0;
    loop {
        let failure = match deps.sources.fetch(source).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(failure) => failure,
        };
        tries += 1;
        let wait = match failure.retry() {
            Some(asked) if tries < deps.sources.fetch_tries() => asked.unwrap_or_else(|| backoff.delay(tries - 1)),
            _ => return Err(job_failure(&failure)),
        };
        if wait > LONGEST_WAIT {
            return Err(job_failure(&failure));
        }
        tracing::info!(
            code = failure.code(),
            tries,
            wait_ms = wait.as_millis() as u64,
            "source fetch failed; trying again"
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Err(JobFailure::LostClaim),
        }
    }
}

fn job_failure(failure: &SourceFailure) -> JobFailure {
    JobFailure::Failed(JobError::new(failure.code(), failure.to_string()))
}

fn to_value(snapshot: &Snapshot) -> Result<serde_json::Value, JobFailure> {
    serde_json::to_value(snapshot).map_err(|error| JobFailure::Failed(JobError::new("internal", error.to_string())))
}
