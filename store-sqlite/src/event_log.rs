//! The event log port over SQLite: the embedded mode's stand-in for the Redis streams.
//!
//! Events are rows of `job_events` (see [`crate::events`]), so a client resuming with
//! `Last-Event-ID` after a restart finds the numbering where it left off. Live listeners are in
//! the same process: each append is handed to the process's [`EventHub`] after its commit, the
//! order the Redis script gives (stored, then published).
//!
//! **One writer task, many events per commit.** A busy embedded server appends thousands of
//! `token` events a second, one per job every 50 ms. As one transaction each they would queue for
//! SQLite's single write lock with everything else (claims, replies), and SQLite's busy handler
//! waits by sleeping, so the queue stretches far past the work in it. Instead every append goes
//! to one task over a channel; the task takes whatever has arrived (up to [`MAX_BATCH`]), writes
//! it in one statement ([`crate::events::append_all`]: one commit, and one trip to SQLite's
//! thread instead of one per event, which is what a busy writer waits on), and only after the
//! commit answers each caller and hands its event to the hub. One job's appends come from one
//! task that awaits each, so they reach the writer, the table and the listeners in order.

use fastnpc_shared::{
    event_bus::{AppendKey, EventBusError, EventHub, EventLog},
    events::{EventPayload, JobEvent},
    ids::JobId,
};
use serde_json::Value;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::SqliteStore;
use crate::events::NewEvent;

/// The most events one read returns: more than any job emits (the Redis streams keep 10,000).
const READ_LIMIT: i64 = 10_000;
/// The most appends one transaction writes: enough to take a burst's worth in one commit,
/// few enough that the write lock is held for milliseconds.
const MAX_BATCH: usize = 512;
/// Appends waiting for the writer before callers wait to hand theirs over.
const QUEUE_DEPTH: usize = 4096;

#[derive(Clone)]
pub struct SqliteEventLog {
    pool: SqlitePool,
    appends: mpsc::Sender<Append>,
}

/// One event on its way to the writer, and where its outcome goes.
struct Append {
    job_id: JobId,
    payload: EventPayload,
    outcome: oneshot::Sender<Result<u64, EventBusError>>,
}

impl SqliteEventLog {
    /// Appends to `store`'s log (through its write connection) and fans out to `hub`'s
    /// listeners (an `EventHub::in_process`). Starts the writer task (on the current Tokio
    /// runtime), which ends when the last clone of the log is dropped.
    pub fn new(store: &SqliteStore, hub: EventHub) -> Self {
        let (appends, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(write_appends(store.writer().clone(), hub, queue));
        Self { pool: store.pool().clone(), appends }
    }
}

#[async_trait::async_trait]
impl EventLog for SqliteEventLog {
    /// The key is not needed here: the append is a local transaction, so an error means nothing
    /// was stored and a retry cannot duplicate.
    async fn append_once(&self, job_id: JobId, payload: &EventPayload, _key: AppendKey) -> Result<u64, EventBusError> {
        let (outcome, answer) = oneshot::channel();
        let append = Append { job_id, payload: payload.clone(), outcome };
        self.appends.send(append).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn read_after(&self, job_id: JobId, after: u64) -> Result<Vec<JobEvent>, EventBusError> {
        crate::events::read_after(&self.pool, job_id, after, READ_LIMIT)
            .await?
            .into_iter()
            .map(|(seq, event_type, data)| {
                let payload =
                    EventPayload::from_parts(&event_type, data).map_err(|e| EventBusError::Malformed(e.to_string()))?;
                Ok(JobEvent { job_id, seq, payload })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), EventBusError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn writer_gone() -> EventBusError {
    EventBusError::Unavailable("the event log's writer has stopped".into())
}

/// The writer task: one transaction per batch of whatever appends are waiting.
async fn write_appends(pool: SqlitePool, hub: EventHub, mut queue: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcomes = write_batch(&pool, &batch).await;
        for (append, outcome) in batch.drain(..).zip(outcomes) {
            let outcome = outcome.map_err(EventBusError::from);
            if let Ok(seq) = outcome {
                hub.publish_local(JobEvent { job_id: append.job_id, seq, payload: append.payload });
            }
            // A caller that gave up waiting has nothing to be told.
            let _ = append.outcome.send(outcome);
        }
    }
}

/// Writes the batch in one statement (one commit). When the database refuses it (an event of a
/// job that is gone: a foreign-key error), nothing of it was stored, and each append is written
/// again alone, so that only the one that concerns the gone job fails. An error of the
/// connection itself fails the batch.
async fn write_batch(pool: &SqlitePool, batch: &[Append]) -> Vec<Result<u64, sqlx::Error>> {
    let write = async |appends: &[Append]| {
        let data: Vec<Value> = appends.iter().map(|append| append.payload.data_json()).collect();
        let events: Vec<NewEvent<'_>> = appends
            .iter()
            .zip(&data)
            .map(|(append, data)| NewEvent { job_id: append.job_id, event_type: append.payload.event_type(), data })
            .collect();
        crate::events::append_all(pool, &events).await
    };
    let refused = |error: &sqlx::Error| matches!(error, sqlx::Error::Database(_));
    fastnpc_shared::store::batch::write_or_each_alone(batch, write, refused).await
}
