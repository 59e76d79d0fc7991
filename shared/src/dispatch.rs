//! Handing committed jobs to the queue: the one place that knows the order "event, publish,
//! record the confirm", shared by the API (new jobs) and the worker (follow-up jobs, and the
//! next job of a series).

use crate::{
    event_bus::EventLog,
    events::EventPayload,
    ids::JobId,
    jobs::{JobStatus, QueueMessage},
    queue::JobQueue,
    store::Store,
};

/// Announces a job just committed as `queued` and publishes it. Never fails: a job that could
/// not be published stays unconfirmed and the re-publisher sends it.
pub async fn enqueue_new(store: &dyn Store, events: &dyn EventLog, publisher: &dyn JobQueue, job_id: JobId) {
    if let Err(error) = events.append(job_id, &EventPayload::Status { status: JobStatus::Queued }).await {
        tracing::warn!(job.id = %job_id, %error, "cannot append the queued event");
    }
    publish(store, publisher, job_id).await;
}

/// Publishes a job's message and records the broker's confirm. Returns whether it was confirmed.
pub async fn publish(store: &dyn Store, publisher: &dyn JobQueue, job_id: JobId) -> bool {
    match publisher.publish(&QueueMessage::RunJobV1 { job_id }).await {
        Ok(()) => {
            if let Err(error) = store.mark_published(job_id).await {
                // Harmless: the re-publisher sends it again and the claim skips the duplicate.
                tracing::warn!(job.id = %job_id, %error, "cannot record the publish");
            }
            true
        }
        Err(error) => {
            tracing::warn!(job.id = %job_id, %error, "publish failed; the re-publisher will retry");
            false
        }
    }
}
