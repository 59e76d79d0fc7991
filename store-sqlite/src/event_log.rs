//! The event log port over SQLite: the embedded mode's stand-in for the Redis streams.
//!
//! Events are rows of `job_events` (see [`crate::events`]), so a client resuming with
//! `Last-Event-ID` after a restart finds the numbering where it left off. Live listeners are in
//! the same process: each append is handed to the process's [`EventHub`] after its commit, the
//! order the Redis script gives (stored, then published).

use fastnpc_shared::{
    event_bus::{AppendKey, EventBusError, EventHub, EventLog},
    events::{EventPayload, JobEvent},
    ids::JobId,
};
use sqlx::SqlitePool;

/// The most events one read returns: more than any job emits (the Redis streams keep 10,000).
const READ_LIMIT: i64 = 10_000;

#[derive(Clone)]
pub struct SqliteEventLog {
    pool: SqlitePool,
    hub: EventHub,
}

impl SqliteEventLog {
    /// Appends to `pool`'s log and fans out to `hub`'s listeners (an `EventHub::in_process`).
    pub fn new(pool: SqlitePool, hub: EventHub) -> Self {
        Self { pool, hub }
    }
}

#[async_trait::async_trait]
impl EventLog for SqliteEventLog {
    /// The key is not needed here: the append is a local transaction, so an error means nothing
    /// was stored and a retry cannot duplicate.
    async fn append_once(&self, job_id: JobId, payload: &EventPayload, _key: AppendKey) -> Result<u64, EventBusError> {
        let seq = crate::events::append(&self.pool, job_id, payload.event_type(), &payload.data_json()).await?;
        self.hub.publish_local(JobEvent { job_id, seq, payload: payload.clone() });
        Ok(seq)
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
