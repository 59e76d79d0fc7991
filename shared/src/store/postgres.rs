//! The Postgres adapter of the [`Store`] port: the distributed mode's store.
//!
//! The struct, its pool and the helpers every unit of work shares live here; each aggregate's
//! trait is implemented next to its queries (`impl CharacterStore for PgStore` in
//! [`super::characters`], …). Concurrency control is Postgres': conditional updates,
//! `for update` row locks where a check must hold until commit, and a repeatable-read snapshot
//! where two reads must agree.

use std::time::Duration;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{Capped, Quota, Store, StoreResult, Submitted, jobs, jobs::NewJob};
use crate::ids::UserId;

/// The schema, from the workspace's `migrations/` folder (its one source).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// True when `error` is a unique-constraint violation of `constraint`.
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(constraint))
}

/// Writes one round of a user's submissions (see [`super::batch::Keyed`]): `write` writes a
/// slice of them in one statement, answering each as if submitted one after another. A round of
/// one, or a round whose statement fails for a reason that is not transient (an
/// `Idempotency-Key` that another submission took, in or before the round), is written one
/// submission at a time, in order, so that each gets its own answer.
pub(super) async fn write_round<'a, T, F, Fut>(round: &'a [T], write: F) -> Vec<StoreResult<Submitted>>
where
    F: Fn(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<Submitted>>>,
{
    let write = |submissions: &'a [T]| {
        let written = write(submissions);
        async move {
            match written.await {
                // Alone, a taken key is this submission's answer; in a round, it sends the round
                // to be written one submission at a time.
                Err(error) if submissions.len() == 1 && is_unique_violation(&error, jobs::IDEMPOTENCY_KEY) => {
                    Ok(vec![Submitted::IdempotencyKeyTaken])
                }
                written => written,
            }
        }
    };
    super::batch::write_or_each_alone(round, write, |error| !super::is_transient(error)).await
}

/// Rounds of message submissions that may be written at once by one process. Each user's
/// submissions go to one lane, so they are written one round after another, in order; rounds
/// of different lanes hold different users' quota locks, so they never wait for each other.
const SUBMISSION_LANES: u8 = 4;

/// The lane of `user_id`'s submissions (user ids end in random bits).
pub(super) fn submission_lane(user_id: UserId) -> u8 {
    (user_id.0.as_u128() % u128::from(SUBMISSION_LANES)) as u8
}

/// A round's values of one field: one array parameter of its statement (`unnest`).
pub(super) fn column<'a, T, V>(round: &'a [T], value: impl Fn(&'a T) -> V) -> Vec<V> {
    round.iter().map(value).collect()
}

/// The job columns of a round of submissions, as array parameters of its statement.
pub(super) struct JobColumns<'a> {
    pub job_id: Vec<uuid::Uuid>,
    pub kind: Vec<&'a str>,
    pub serial_key: Vec<Option<&'a str>>,
    pub idempotency_key: Vec<Option<&'a str>>,
    pub request_fingerprint: Vec<Option<&'a [u8]>>,
}

impl<'a> JobColumns<'a> {
    pub(super) fn of<T>(round: &'a [T], job: impl Fn(&'a T) -> &'a super::QueuedJob) -> Self {
        Self {
            job_id: column(round, |submission| job(submission).job_id.0),
            kind: column(round, |submission| job(submission).kind.as_str()),
            serial_key: column(round, |submission| job(submission).serial_key.as_deref()),
            idempotency_key: column(round, |submission| job(submission).idempotency_key()),
            request_fingerprint: column(round, |submission| job(submission).request_fingerprint()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// Publish confirmations, written in rounds (see [`super::batch`]).
    pub(super) confirms: super::batch::Batch<crate::ids::JobId>,
    /// Message submissions, written in rounds (see [`super::batch::Keyed`]), one round at a time
    /// per lane (see [`submission_lane`]).
    pub(super) message_rounds: super::batch::Keyed<u8, super::QueuedMessage, super::Submitted>,
    /// Each user's character submissions, likewise.
    pub(super) character_rounds: super::batch::Keyed<UserId, super::QueuedCharacter, super::Submitted>,
    /// A worker's claims, written in rounds (one per lease length, which is one in practice).
    pub(super) claim_rounds: super::batch::Keyed<Duration, crate::ids::JobId, Option<jobs::Claim>>,
    /// Every request's session lookup, read in rounds (see [`super::batch::Keyed::ask`]).
    pub(super) session_reads: super::batch::Keyed<(), Vec<u8>, Option<UserId>>,
    /// The job reads of status polls and event streams, likewise.
    pub(super) job_reads: super::batch::Keyed<(), (UserId, crate::ids::JobId), Option<jobs::JobRecord>>,
    /// The workers' reads of the character a claimed job is about, likewise.
    pub(super) character_reads:
        super::batch::Keyed<(), crate::ids::CharacterId, Option<super::characters::CharacterRecord>>,
    /// The next queued job of each series whose job just ended, likewise.
    pub(super) series_reads: super::batch::Keyed<(), String, Option<crate::ids::JobId>>,
    /// Each user's spend today, read once for the submissions that ask at the same time.
    pub(super) spend_reads: super::batch::Keyed<UserId, (), u64>,
    /// The chat replies' contexts, read in rounds (one per session window, which is one in
    /// practice): a burst of claimed replies reads its prompts in one statement.
    pub(super) context_reads: super::batch::Keyed<i64, super::messages::ContextKey, Option<super::ChatContext>>,
    /// The chat replies' finishes, written in rounds (see [`super::messages::Finish`]).
    pub(super) finish_rounds: super::batch::Keyed<(), super::messages::Finish, Option<super::messages::StoredReply>>,
}

impl PgStore {
    /// Opens the process's pool. `max_connections` bounds what one process can take from
    /// Postgres.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        // Every statement here is prepared once per connection and run with parameters. For the
        // rounds' `= ANY($1)` statements PostgreSQL keeps choosing a custom plan, so it plans them
        // again at every call (a quarter of a millisecond per chat reply under a burst). Their
        // generic plans are the same index lookups.
        let options = database_url.parse::<PgConnectOptions>()?.options([("plan_cache_mode", "force_generic_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // A request that cannot get a connection within this fails fast (503) rather than
            // queueing forever behind a database outage.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            confirms: Default::default(),
            message_rounds: Default::default(),
            character_rounds: Default::default(),
            claim_rounds: Default::default(),
            session_reads: Default::default(),
            job_reads: Default::default(),
            character_reads: Default::default(),
            series_reads: Default::default(),
            spend_reads: Default::default(),
            context_reads: Default::default(),
            finish_rounds: Default::default(),
        }
    }

    /// Applies pending migrations. sqlx serialises concurrent runs with an advisory lock, so
    /// every replica may call this at start.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Asks for `item` in a round of `rounds` (see [`super::batch::Keyed::ask`]); `answer`
    /// answers a whole round with one statement on the pool.
    pub(super) async fn ask<K, T, R, A, F>(
        &self,
        rounds: &super::batch::Keyed<K, T, R>,
        key: K,
        item: T,
        answer: A,
    ) -> StoreResult<R>
    where
        K: Eq + std::hash::Hash + Clone + Send + 'static,
        T: Send + 'static,
        R: Send + 'static,
        A: Fn(PgPool, K, Vec<T>) -> F + Send + 'static,
        F: std::future::Future<Output = StoreResult<Vec<R>>> + Send + 'static,
    {
        let pool = self.pool.clone();
        rounds.ask(key, item, move |key, items| answer(pool.clone(), key, items)).await
    }

    /// Inserts a job in `tx`; a reused idempotency key becomes [`Submitted::IdempotencyKeyTaken`].
    pub(super) async fn insert_submitted_job(
        tx: &mut sqlx::PgConnection,
        job: NewJob<'_>,
    ) -> StoreResult<Result<(), Submitted>> {
        match jobs::insert(&mut *tx, job).await {
            Ok(()) => Ok(Ok(())),
            Err(error) if is_unique_violation(&error, jobs::IDEMPOTENCY_KEY) => Ok(Err(Submitted::IdempotencyKeyTaken)),
            Err(error) => Err(error),
        }
    }

    /// The outcome of a submission in a one-statement round (its inserts run only below every
    /// cap), given what the user held before it: over a cap means nothing was written.
    pub(super) fn submitted(held_before: Vec<(Capped, i64)>, quota: &Quota) -> Submitted {
        let with_new: Vec<_> = held_before.into_iter().map(|(cap, count)| (cap, count + 1)).collect();
        quota.exceeded(&with_new).map_or(Submitted::Created, Submitted::OverQuota)
    }

    /// The first of `caps` that the rows written so far in `tx` took the user past.
    ///
    /// Called last in a multi-statement submission: `quota_usage` takes the user's quota lock
    /// (see [`Quota`]) and counts with fresh snapshots, which include `tx`'s own rows and those
    /// of the submission that held the lock before; the lock is held only from here to the
    /// commit. The one-statement submissions (characters, messages) call the same function.
    pub(super) async fn over_quota(
        tx: &mut sqlx::PgConnection,
        user_id: UserId,
        quota: &Quota,
        caps: &[Capped],
    ) -> StoreResult<Option<Capped>> {
        let usage = sqlx::query!(
            r#"select active_jobs as "active_jobs!", characters as "characters!", groups as "groups!"
               from quota_usage($1)"#,
            user_id.0,
        )
        .fetch_one(&mut *tx)
        .await?;
        let counts: Vec<_> = caps
            .iter()
            .map(|&cap| {
                let count = match cap {
                    Capped::ActiveJobs => usage.active_jobs,
                    Capped::Characters => usage.characters,
                    Capped::Groups => usage.groups,
                };
                (cap, count)
            })
            .collect();
        Ok(quota.exceeded(&counts))
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await.map(|_| ())
    }

    async fn chat_context(
        &self,
        user_id: UserId,
        character_id: crate::ids::CharacterId,
        message_id: crate::ids::MessageId,
        session_limit: i64,
    ) -> StoreResult<Option<super::ChatContext>> {
        self.ask(
            &self.context_reads,
            session_limit,
            (user_id, character_id, message_id),
            |pool, limit, keys| async move { super::messages::chat_contexts(&pool, &keys, limit).await },
        )
        .await
    }
}
