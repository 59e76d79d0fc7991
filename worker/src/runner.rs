//! One delivery, from message to ack.
//!
//! The order is the guarantee: results and the terminal state are committed in one transaction,
//! then the terminal event is appended, and only then is the message acked. A crash anywhere
//! before the ack redelivers the message; the claim then finds the job finished (ack, skip) or
//! its lease expired (take over).

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use fastnpc_shared::{
    backoff::Backoff,
    dispatch,
    events::EventPayload,
    ids::JobId,
    jobs::{JobError, JobStatus, QueueMessage},
    llm::MeteredLlm,
    store::jobs::{Claim, Heartbeat},
};
use futures::FutureExt;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    Deps,
    jobs::{self, JobFailure},
};

/// What to tell the queue about a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Done with it (finished, or nothing to do).
    Ack,
    /// Hand it back for another attempt.
    Requeue,
    /// Poison or failed for good: to the dead-letter queue.
    DeadLetter,
}

/// A queue message being handled, from whichever queue delivered it.
pub trait Delivery: Send + 'static {
    fn data(&self) -> &[u8];
    /// Tells the queue the outcome. An error means the delivery could not be settled (its
    /// channel died): the queue redelivers it, and the claim makes that harmless.
    fn settle(self, settle: Settle) -> impl Future<Output = Result<(), String>> + Send;
}

impl Delivery for lapin::message::Delivery {
    fn data(&self) -> &[u8] {
        &self.data
    }

    async fn settle(self, settle: Settle) -> Result<(), String> {
        let settled = match settle {
            Settle::Ack => self.acker.ack(BasicAckOptions::default()).await,
            Settle::Requeue => self.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await,
            Settle::DeadLetter => self.acker.reject(BasicRejectOptions { requeue: false }).await,
        };
        settled.map(|_| ()).map_err(|error| error.to_string())
    }
}

impl Delivery for fastnpc_shared::embedded::queue::InProcessDelivery {
    fn data(&self) -> &[u8] {
        fastnpc_shared::embedded::queue::InProcessDelivery::data(self)
    }

    async fn settle(self, settle: Settle) -> Result<(), String> {
        match settle {
            Settle::Ack => self.ack(),
            Settle::Requeue => self.requeue(),
            Settle::DeadLetter => self.dead_letter(),
        }
        Ok(())
    }
}

/// Handles one delivery. Never panics and never returns an error: every outcome ends in an ack,
/// a requeue or a dead letter.
pub async fn handle(deps: &Deps, delivery: impl Delivery, abandon: &CancellationToken) {
    let settle = match serde_json::from_slice::<QueueMessage>(delivery.data()) {
        Ok(QueueMessage::RunJobV1 { job_id }) => {
            let span = tracing::info_span!("job", job.id = %job_id, job.kind = tracing::field::Empty, job.attempt = tracing::field::Empty);
            process(deps, job_id, abandon).instrument(span).await
        }
        Err(error) => {
            tracing::error!(%error, bytes = delivery.data().len(), "undecodable queue message, dead-lettering it");
            fail_poisoned(deps, delivery.data()).await;
            Settle::DeadLetter
        }
    };
    if settle == Settle::DeadLetter {
        deps.metrics.dead_lettered.inc();
    }
    if let Err(error) = delivery.settle(settle).await {
        // The channel died under us: the broker redelivers, and the claim makes that harmless.
        tracing::warn!(%error, ?settle, "could not settle the delivery");
    }
}

/// Claims, retrying with backoff while the database is unreachable: requeueing instead would
/// count against the broker's delivery limit and dead-letter healthy jobs during an outage.
async fn claim_patiently(deps: &Deps, job_id: JobId) -> Result<Option<Claim>, sqlx::Error> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut waited = Duration::ZERO;
    loop {
        match deps.store.claim_job(job_id, deps.config.lease).await {
            Err(error) if waited < CLAIM_PATIENCE => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot claim the job; retrying");
                tokio::time::sleep(delay).await;
                waited += delay;
            }
            outcome => return outcome,
        }
    }
}

/// How long a delivery waits for the database before it is requeued.
const CLAIM_PATIENCE: Duration = Duration::from_secs(60);

async fn process(deps: &Deps, job_id: JobId, abandon: &CancellationToken) -> Settle {
    let claim = match claim_patiently(deps, job_id).await {
        Ok(Some(claim)) => claim,
        Ok(None) => {
            if let Ok(Some(JobStatus::Queued)) = deps.store.job_status(job_id).await {
                // Waiting behind an earlier job of its series: drop this message; the earlier
                // job publishes this one when it ends (or the re-publisher does, if it died).
                tracing::debug!("job waits for an earlier job of its series");
                if let Err(error) = deps.store.mark_unpublished(job_id).await {
                    tracing::warn!(%error, "cannot mark the waiting job unpublished; requeueing");
                    return Settle::Requeue;
                }
            } else {
                tracing::debug!("job is finished, gone, or held by another worker; skipping the delivery");
            }
            return Settle::Ack;
        }
        Err(error) => {
            tracing::error!(%error, "cannot claim the job (database unavailable?); requeueing");
            return Settle::Requeue;
        }
    };
    let span = tracing::Span::current();
    span.record("job.kind", claim.kind.as_str());
    span.record("job.attempt", claim.attempt);
    if claim.attempt > deps.config.max_claims {
        // Started this often without ever finishing or failing: it takes its workers down with it.
        let error = JobError::new(
            "too_many_attempts",
            format!("the job was started {} times without finishing", claim.attempt - 1),
        );
        return fail(deps, &claim, error).await;
    }
    // The queue wait of a first attempt; a retry's would include the earlier attempts' run time.
    let queue_wait = (claim.attempt == 1).then(|| (chrono::Utc::now() - claim.created_at).to_std().ok()).flatten();
    let mut timer = deps.metrics.job_started(claim.kind.as_str(), queue_wait);
    emit(deps, job_id, EventPayload::Status { status: JobStatus::Running }).await;

    // Three ways an attempt stops early, each its own token so the outcome knows which:
    // the user cancelled (signal or heartbeat), the lease was lost, or shutdown's grace ran out.
    let cancel_requested = CancellationToken::new();
    let lease_lost = CancellationToken::new();
    let _registration = deps.cancels.register(job_id, cancel_requested.clone());
    if claim.cancel_requested {
        cancel_requested.cancel();
    }
    let heartbeat = tokio::spawn(keep_lease(deps.clone(), claim.clone(), lease_lost.clone(), cancel_requested.clone()));
    // The handler's LLM calls add up in the claim's meter; the store writes the total with the
    // attempt's end, whichever way it ends.
    let metered = Deps { llm: Arc::new(MeteredLlm::new(deps.llm.clone(), claim.usage.clone())), ..deps.clone() };
    let started = std::time::Instant::now();
    // Dropping the handler future (any branch but the first) drops its in-flight LLM requests.
    let outcome = tokio::select! {
        biased;
        () = cancel_requested.cancelled() => Err(Stop::Cancelled),
        () = lease_lost.cancelled() => Err(Stop::LeaseLost),
        () = abandon.cancelled() => Err(Stop::Abandoned),
        () = tokio::time::sleep(deps.config.job_deadline) => Err(Stop::Deadline),
        outcome = AssertUnwindSafe(jobs::run(&metered, &claim, &cancel_requested)).catch_unwind() => Ok(outcome),
    };
    heartbeat.abort();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    timer.set_outcome(outcome_label(&outcome, claim.attempt < deps.config.max_job_attempts));

    let settle = match outcome {
        Err(Stop::Cancelled) => cancelled(deps, &claim, json!({"stopped": "cancelled"}), elapsed_ms).await,
        Err(Stop::LeaseLost) => Settle::Ack,
        Err(Stop::Abandoned) => release(deps, &claim).await,
        Err(Stop::Deadline) => {
            let limit = deps.config.job_deadline.as_secs();
            fail(deps, &claim, JobError::new("deadline_exceeded", format!("the job ran longer than {limit} s"))).await
        }
        Ok(outcome) => settle_outcome(deps, &claim, outcome, elapsed_ms).await,
    };
    if settle != Settle::Requeue
        && let Some(serial_key) = &claim.serial_key
    {
        publish_next_in_series(deps, serial_key).await;
    }
    settle
}

/// How an attempt ended, as the metrics count it (see `settle_outcome` for what each means).
fn outcome_label(
    outcome: &Result<std::thread::Result<Result<serde_json::Value, JobFailure>>, Stop>,
    attempts_left: bool,
) -> &'static str {
    match outcome {
        Err(Stop::Cancelled) | Ok(Ok(Err(JobFailure::Interrupted(_)))) => "cancelled",
        Err(Stop::LeaseLost | Stop::Abandoned) | Ok(Ok(Err(JobFailure::LostClaim))) => "abandoned",
        Err(Stop::Deadline) | Ok(Err(_)) | Ok(Ok(Err(JobFailure::Failed(_)))) => "failed",
        Ok(Ok(Err(JobFailure::Retryable(_)))) if attempts_left => "retried",
        Ok(Ok(Err(JobFailure::Retryable(_)))) => "failed",
        Ok(Ok(Ok(_))) => "succeeded",
    }
}

/// Why an attempt stopped before its handler finished.
enum Stop {
    Cancelled,
    LeaseLost,
    Abandoned,
    Deadline,
}

/// Ends the job as cancelled, with what that means for its subject.
async fn cancelled(deps: &Deps, claim: &Claim, result: serde_json::Value, elapsed_ms: u64) -> Settle {
    // The store also fails a character whose generation was cancelled (never left half-made).
    match deps.store.cancel_claimed_job(claim, &result).await {
        Ok(true) => {
            tracing::info!(elapsed_ms, "job cancelled");
            emit(deps, claim.job_id, EventPayload::Cancelled {}).await;
            Settle::Ack
        }
        Ok(false) => Settle::Ack,
        Err(error) => {
            tracing::error!(%error, "cannot record the cancellation; handing the job back");
            release(deps, claim).await
        }
    }
}

async fn settle_outcome(
    deps: &Deps,
    claim: &Claim,
    outcome: std::thread::Result<Result<serde_json::Value, JobFailure>>,
    elapsed_ms: u64,
) -> Settle {
    let job_id = claim.job_id;
    match outcome {
        Ok(Ok(result)) => {
            tracing::info!(elapsed_ms, "job succeeded");
            emit(deps, job_id, EventPayload::Succeeded { result }).await;
            Settle::Ack
        }
        Ok(Err(JobFailure::Retryable(error))) if claim.attempt < deps.config.max_job_attempts => {
            tracing::warn!(elapsed_ms, error.code = %error.code, error.message = %error.message, "job attempt failed, handing it back");
            // Back off before the requeue so a struggling dependency gets air.
            tokio::time::sleep(Duration::from_millis(500) * claim.attempt.unsigned_abs()).await;
            release(deps, claim).await
        }
        Ok(Err(JobFailure::Retryable(error) | JobFailure::Failed(error))) => fail(deps, claim, error).await,
        Ok(Err(JobFailure::Interrupted(result))) => cancelled(deps, claim, result, elapsed_ms).await,
        Ok(Err(JobFailure::LostClaim)) => {
            tracing::warn!("job claim lost to another worker; dropping this attempt");
            Settle::Ack
        }
        Err(_panic) => {
            tracing::error!("job handler panicked");
            fail(deps, claim, JobError::new("internal", "the job failed unexpectedly")).await
        }
    }
}

/// The job's series may continue: publish the next waiting job. If this fails (or this worker
/// dies first), the re-publisher sends it once it sees the series free.
async fn publish_next_in_series(deps: &Deps, serial_key: &str) {
    match deps.store.next_in_series(serial_key).await {
        Ok(Some(next)) => {
            dispatch::publish(deps.store.as_ref(), deps.publisher.as_ref(), next).await;
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot look up the next job of the series"),
    }
}

/// A message no worker understands (a newer version, or garbage): if it names a job, that job
/// can never run, so it fails clearly instead of waiting forever.
async fn fail_poisoned(deps: &Deps, body: &[u8]) {
    let job_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("job_id").and_then(|id| id.as_str()).and_then(|id| id.parse::<JobId>().ok()));
    let Some(job_id) = job_id else { return };
    let error = JobError::new("poison_message", "the job's queue message could not be understood by the worker");
    match deps.store.fail_unclaimed_job(job_id, &error).await {
        Ok(true) => emit(deps, job_id, EventPayload::Failed { code: error.code, message: error.message }).await,
        Ok(false) => {}
        Err(store_error) => tracing::error!(job.id = %job_id, error = %store_error, "cannot fail the poisoned job"),
    }
}

async fn fail(deps: &Deps, claim: &Claim, error: JobError) -> Settle {
    match deps.store.fail_job(claim, &error).await {
        Ok(true) => {
            tracing::warn!(error.code = %error.code, error.message = %error.message, "job failed");
            emit(deps, claim.job_id, EventPayload::Failed { code: error.code, message: error.message }).await;
            Settle::DeadLetter
        }
        Ok(false) => Settle::Ack,
        Err(store_error) => {
            tracing::error!(error = %store_error, "cannot record the job's failure; requeueing");
            Settle::Requeue
        }
    }
}

/// Hands the job back under a fresh message and acks the old delivery, so hand-backs do not
/// count against the broker's delivery limit. If the publish fails, the job is unpublished and
/// the re-publisher sends it.
async fn release(deps: &Deps, claim: &Claim) -> Settle {
    match deps.store.release_job(claim).await {
        Ok(true) => {
            // A job of a series is its series' next job now, which `process` publishes once the
            // attempt is settled; publishing it here as well would send it twice.
            if claim.serial_key.is_none() {
                dispatch::publish(deps.store.as_ref(), deps.publisher.as_ref(), claim.job_id).await;
            }
            Settle::Ack
        }
        Ok(false) => Settle::Ack,
        Err(error) => {
            // The lease expires by itself; the redelivery then takes the job over.
            tracing::warn!(%error, "cannot release the job; its lease will expire");
            Settle::Requeue
        }
    }
}

/// Renews the claim's lease until aborted; stops the attempt when the claim is lost, and
/// relays a cancellation request whose signal this worker missed.
async fn keep_lease(deps: Deps, claim: Claim, lease_lost: CancellationToken, cancel_requested: CancellationToken) {
    let every = deps.config.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match deps.store.renew_lease(&claim, deps.config.lease).await {
            Ok(Heartbeat::Renewed) => {}
            Ok(Heartbeat::CancelRequested) => cancel_requested.cancel(),
            Ok(Heartbeat::Lost) => {
                tracing::warn!(job.id = %claim.job_id, "job lease lost; stopping this attempt");
                lease_lost.cancel();
                return;
            }
            // A blip: the next beat may succeed well before the lease runs out.
            Err(error) => tracing::warn!(job.id = %claim.job_id, %error, "cannot renew the job lease"),
        }
    }
}

/// Appends an event; a failure is logged, not fatal (the job's row is the truth, and SSE
/// clients fall back to it for the terminal state).
pub(crate) async fn emit(deps: &Deps, job_id: JobId, payload: EventPayload) {
    let started = std::time::Instant::now();
    let appended = deps.events.append_with_retry(job_id, &payload).await;
    deps.metrics.event_append_duration.observe(started.elapsed().as_secs_f64());
    if let Err(error) = appended {
        tracing::error!(%error, event = payload.event_type(), "cannot append job event");
    }
}
