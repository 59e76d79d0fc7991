//! Re-sends jobs whose publish the broker never confirmed.
//!
//! The API publishes right after committing a job; if the broker is down or the process dies in
//! between, the row stays `queued` with no `published_at`. This loop finds such rows after a
//! grace period and publishes them. Several API replicas may race on a row; the worst case is a
//! duplicate message, which the worker's claim turns into a no-op.
//!
//! Each sweep also reads the queues' depths from the broker for the metrics
//! (`fastnpc_queue_depth_messages`), so a fleet's backlog is visible without a broker exporter.

use std::time::Duration;

use fastnpc_shared::dispatch;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How long a fresh job is left to its creating request before the sweeper steps in.
const GRACE: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_secs(2);
const BATCH: i64 = 200;
/// How long a head-of-line job may sit published but unclaimed before it is sent again.
const STALE: Duration = Duration::from_secs(10);

pub async fn run(state: AppState, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        record_queue_depths(&state).await;
        let jobs = match state.store.unpublished_jobs(GRACE, STALE, BATCH).await {
            Ok(jobs) => jobs,
            Err(error) => {
                tracing::warn!(%error, "re-publisher cannot read unpublished jobs");
                continue;
            }
        };
        for job_id in jobs {
            if !dispatch::publish(state.store.as_ref(), state.publisher.as_ref(), job_id).await {
                break; // the broker is unreachable; the next sweep retries
            }
            state.metrics.republished.inc();
            tracing::info!(job.id = %job_id, "re-published job");
        }
    }
}

async fn record_queue_depths(state: &AppState) {
    match state.publisher.depths().await {
        Ok(depths) => {
            for (queue, depth) in depths {
                let labels = fastnpc_shared::metrics::QueueLabels { queue: queue.to_owned() };
                state.metrics.queue_depth.get_or_create(&labels).set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
        }
        Err(error) => tracing::debug!(%error, "cannot read the queue depths"),
    }
}
