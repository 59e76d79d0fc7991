//! In-process stand-ins for RabbitMQ and Redis, for the embedded mode: the API and the workers in
//! one process, with Postgres as the only service.
//!
//! A single process does not need a broker to hand job ids to its own workers, nor a shared
//! store for counts that only it keeps. Each adapter here mirrors the public methods of its
//! networked counterpart (same names, argument types and `Ok` types) so that the two can sit
//! behind one trait, and keeps its semantics where callers rely on them: the queue delivers at
//! least once, counts returns against a delivery limit and dead-letters poison; the limiters
//! lock, expire and window exactly like their Redis versions.
//!
//! What differs is durability: everything here lives in memory and is gone after a restart.
//! That is acceptable because Postgres stays the source of truth:
//!
//! - the job queue is rebuilt by the re-publisher, which re-sends queued jobs that were never
//!   published and running jobs whose lease expired (see [`queue`] for the one case it misses);
//! - lost login backoff only restarts an attacker's free attempts;
//! - lost stream tokens make `EventSource` clients fetch a new one, as they do when one expires;
//! - lost submission counts give each user one fresh minute.
//!
//! # Layout
//!
//! - [`queue`]: [`InProcessQueue`](queue::InProcessQueue), for `queue::JobPublisher` and the
//!   worker's consumer and dead-letter tools.
//! - [`control`]: [`LocalControl`](control::LocalControl), for `control::ControlSender`.
//! - [`limits`]: the in-memory twins of `rate_limit`'s limiters and stream tokens.

pub mod control;
pub mod limits;
pub mod queue;
