//! In-process stand-ins for RabbitMQ and Redis, for the embedded mode: the API and the workers in
//! one process, with the store (SQLite) as the only thing that lasts.
//!
//! A single process does not need a broker to hand job ids to its own workers, nor a shared
//! store for counts that only it keeps. Each adapter here mirrors the public methods of its
//! networked counterpart (same names, argument types and `Ok` types) so that the two can sit
//! behind one trait, and keeps its semantics where callers rely on them: the queue delivers at
//! least once, counts returns against a delivery limit and dead-letters poison; the limiters
//! lock, expire and window exactly like their Redis versions.
//!
//! What differs is durability: everything here lives in memory and is gone after a restart.
//! That is acceptable because the store stays the source of truth:
//!
//! - the job queue is rebuilt from the job rows at start-up (`Store::reset_deliveries`, then a
//!   publish of every queued and running job; see [`queue`]);
//! - lost login backoff only restarts an attacker's free attempts;
//! - lost stream tokens make `EventSource` clients fetch a new one, as they do when one expires;
//! - lost submission counts give each user one fresh minute.
//!
//! # Layout
//!
//! - [`queue`]: [`InProcessQueue`](queue::InProcessQueue), for `queue::JobPublisher` and the
//!   worker's consumer and dead-letter tools.
//! - [`control`]: [`LocalControl`](control::LocalControl), for `control::ControlSender`.
//! - [`limits`]: the in-memory twins of `rate_limit`'s limiters.
//! - [`stream_tokens`]: the in-memory twin of `stream_tokens::StreamTokens`.
//! - The event bus's live fan-out is `event_bus::EventHub::in_process`.

pub mod control;
pub mod limits;
pub mod queue;
pub mod stream_tokens;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast::error::TryRecvError;

    use crate::{
        event_bus::EventHub,
        events::{EventPayload, JobEvent},
        ids::JobId,
        jobs::JobStatus,
    };

    fn running(job_id: JobId, seq: u64) -> JobEvent {
        JobEvent { job_id, seq, payload: EventPayload::Status { status: JobStatus::Running } }
    }

    #[tokio::test]
    async fn the_in_process_hub_delivers_to_the_jobs_listeners_only() {
        let hub = EventHub::in_process();
        let (job, other_job) = (JobId::new(), JobId::new());
        let mut listener = hub.subscribe(job);
        let mut second_listener = hub.subscribe(job);
        let mut other_listener = hub.subscribe(other_job);

        hub.publish_local(running(job, 1));

        for events in [&mut listener.events, &mut second_listener.events] {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
            assert_eq!(*event, running(job, 1));
        }
        assert!(matches!(other_listener.events.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn the_in_process_hub_is_connected_and_never_asks_for_a_backfill() {
        let hub = EventHub::in_process();
        let job = JobId::new();
        let listener = hub.subscribe(job);

        hub.publish_local(running(JobId::new(), 1));

        assert!(hub.is_connected());
        assert_eq!(*listener.generation.borrow(), 0);
        assert!(!listener.generation.has_changed().unwrap());
        assert_eq!(hub.listened_jobs(), 1, "publishing to a job nobody listens to registers nothing");
        drop(listener);
        assert_eq!(hub.listened_jobs(), 0);
    }
}
