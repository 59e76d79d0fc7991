//! The SQLite adapter of the store port (`fastnpc_shared::store::Store`): the embedded mode's
//! store. The struct and the helpers every unit of work shares live here; each aggregate's trait
//! is implemented next to this crate's queries for it (`impl CharacterStore for SqliteStore` in
//! [`crate::characters`], …), as `PgStore` is next to the Postgres ones. The units of work run in
//! `BEGIN IMMEDIATE` transactions ([`crate::begin_immediate`]), SQLite's stand-in for the row
//! locks the Postgres adapter relies on.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId, MessageId, UserId},
    store::{
        Capped, ChatContext, QueuedMessage, Quota, Store, StoreResult, Submitted,
        batch::{Batch, Keyed},
        jobs::{Claim, JobRecord, NewJob},
        messages::{ContextKey, StoredReply},
    },
};
use sqlx::SqlitePool;

use crate::{characters, groups, is_unique_violation, jobs};

/// The store over one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Reads (any number at once beside the writer, in WAL mode).
    pub(crate) pool: SqlitePool,
    /// Writes: one connection, so writers wait in the pool's first-come queue, woken the moment
    /// the connection is free. Sharing SQLite's one write lock among many connections would have
    /// them wait in its busy handler instead, which polls with sleeps of up to 100 ms: under
    /// load the lock sits idle while its waiters sleep.
    pub(crate) writer: SqlitePool,
    /// Publish confirmations, written in rounds (`fastnpc_shared::store::batch`).
    pub(crate) confirms: Batch<JobId>,
    /// Message submissions, written in rounds (`fastnpc_shared::store::batch::Keyed`). One
    /// round for all users, where Postgres has one per user: every write waits for the one write
    /// connection anyway, so per-user rounds would only queue behind each other for it.
    pub(crate) message_rounds: Keyed<(), QueuedMessage, Submitted>,
    /// Claims, written in rounds (one per lease length, which is one in practice).
    pub(crate) claim_rounds: Keyed<Duration, JobId, Option<Claim>>,
    /// Every request's session lookup, read in rounds (`Keyed::ask`).
    pub(crate) session_reads: Keyed<(), Vec<u8>, Option<UserId>>,
    /// The job reads of status polls and event streams, likewise.
    pub(crate) job_reads: Keyed<(), (UserId, JobId), Option<JobRecord>>,
    /// Chat replies' contexts, read in rounds (one per session window, which is one in practice).
    pub(crate) context_reads: Keyed<i64, ContextKey, Option<ChatContext>>,
    /// Chat reply finishes, written in rounds.
    pub(crate) finish_rounds: Keyed<(), crate::messages::QueuedFinish, Option<StoredReply>>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub async fn open(path: &Path, max_connections: u32) -> Result<Self, anyhow::Error> {
        let writer = crate::connect(path, 1).await?;
        crate::migrate(&writer).await?;
        let pool = crate::connect(path, max_connections).await?;
        Ok(Self {
            pool,
            writer,
            confirms: Default::default(),
            message_rounds: Default::default(),
            claim_rounds: Default::default(),
            finish_rounds: Default::default(),
            session_reads: Default::default(),
            job_reads: Default::default(),
            context_reads: Default::default(),
        })
    }

    /// The read pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The one write connection's pool: every write goes through it.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools (waiting for their connections to be returned).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Deletes the event logs of jobs that finished before `older_than` (see
    /// [`crate::events::prune`]); returns how many events went.
    pub async fn prune_events(&self, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        crate::events::prune(&self.writer, older_than).await
    }
}

/// Inserts a job in `tx`; a reused idempotency key becomes [`Submitted::IdempotencyKeyTaken`].
pub(crate) async fn insert_submitted_job(
    tx: &mut sqlx::SqliteConnection,
    job: NewJob<'_>,
) -> StoreResult<Result<(), Submitted>> {
    match jobs::insert(&mut *tx, job).await {
        Ok(()) => Ok(Ok(())),
        Err(error) if is_unique_violation(&error, fastnpc_shared::store::jobs::IDEMPOTENCY_KEY) => {
            Ok(Err(Submitted::IdempotencyKeyTaken))
        }
        Err(error) => Err(error),
    }
}

/// The first of `caps` that the rows written so far in `tx` took the user past. No lock of its
/// own: `tx` is a `BEGIN IMMEDIATE` transaction, so no other submission writes in between.
pub(crate) async fn over_quota(
    tx: &mut sqlx::SqliteConnection,
    user_id: UserId,
    quota: &Quota,
    caps: &[Capped],
) -> StoreResult<Option<Capped>> {
    let mut counts = Vec::with_capacity(caps.len());
    for &cap in caps {
        let count = match cap {
            Capped::ActiveJobs => jobs::active_count(&mut *tx, user_id).await?,
            Capped::Characters => characters::count(&mut *tx, user_id).await?,
            Capped::Groups => groups::count(&mut *tx, user_id).await?,
        };
        counts.push((cap, count));
    }
    Ok(quota.exceeded(&counts))
}

/// Writes `round` in one `BEGIN IMMEDIATE` transaction, each item as if written alone, in order:
/// each in a savepoint of its own, so an item whose outcome `keep` refuses (a guard that failed, a
/// refused insert, an error) leaves nothing behind and fails only itself, and the others stand.
/// A failure of the transaction itself fails the round. This is how the embedded store's rounds
/// (`fastnpc_shared::store::batch::Keyed`) take the one write connection once per round.
pub(crate) async fn write_each_in_savepoint<T, R>(
    writer: &SqlitePool,
    round: &[T],
    write: impl AsyncFn(&mut sqlx::SqliteConnection, &T) -> StoreResult<R>,
    keep: impl Fn(&StoreResult<R>) -> bool,
) -> Vec<StoreResult<R>> {
    let written = async {
        let mut tx = crate::begin_immediate(writer).await?;
        let mut outcomes = Vec::with_capacity(round.len());
        for item in round {
            let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
            let outcome = write(&mut savepoint, item).await;
            if keep(&outcome) {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    };
    written.await.unwrap_or_else(|error| fastnpc_shared::store::batch::failed_round(error, round.len()))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await.map(|_| ())
    }

    async fn chat_context(
        &self,
        user_id: UserId,
        character_id: CharacterId,
        message_id: MessageId,
        session_limit: i64,
    ) -> StoreResult<Option<ChatContext>> {
        // Every reply asks this as it starts; under a burst, one statement answers a round.
        let pool = self.pool.clone();
        self.context_reads
            .ask(session_limit, (user_id, character_id, message_id), move |limit, keys| {
                let pool = pool.clone();
                async move { crate::messages::chat_contexts(&pool, &keys, limit).await }
            })
            .await
    }
}
