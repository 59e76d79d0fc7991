//! FastNPC in one process: the embedded mode.
//!
//! The same API and the same workers as the distributed mode, wired to other adapters of the
//! same ports: SQLite for the store and the job event log (`fastnpc-store-sqlite`), and
//! in-process stand-ins for RabbitMQ (the job queue), Redis pub/sub (live events, cancel
//! signals) and Redis counters (limits) from `fastnpc_shared::embedded`. Nothing here is a
//! different code path for the product: handlers and jobs only see the ports.
//!
//! What the embedded mode gives up is scale-out: one process owns every delivery. That is also
//! what makes restarts simple — at start-up every job the last run left queued or running is
//! handed to this run's queue ([`Store::reset_deliveries`]), and its claim takes the job over
//! as a worker would take over a dead worker's job.
//!
//! Without a configured LLM it starts the LLM simulator (placeholder replies, no network) and
//! says so, so that trying FastNPC needs nothing at all.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use fastnpc_api::{Api, Backends};
use fastnpc_llm_sim::{LlmSimulator, SimConfig};
use fastnpc_shared::store::prelude::*;
use fastnpc_shared::{
    control::CancelRegistry,
    dispatch,
    embedded::{
        control::LocalControl,
        limits::{LocalLoginLimiter, LocalSubmissionLimiter},
        queue::InProcessQueue,
        stream_tokens::LocalStreamTokens,
    },
    event_bus::{EventHub, EventLog},
    llm::{LlmClient, MonitoredLlm, OpenAiClient},
    metrics::Metrics,
    queue::{DELIVERY_LIMIT, JobQueue},
    settings::{Secret, Settings},
    sources::{
        Sources,
        search_cache::{LocalSearchCache, SearchCache},
    },
    store::{
        Store,
        transfer::{ExportRefusal, FORMAT, Imported, UserExport},
    },
};
use fastnpc_store_sqlite::{SqliteEventLog, SqliteStore};
use fastnpc_worker::{Deps, WorkerConfig, consumer};
use tokio_util::sync::CancellationToken;

pub mod client;
pub mod eval;

/// The database file inside `FASTNPC_DATA_DIR`.
pub const DATABASE_FILE: &str = "fastnpc.db";
/// Held (an exclusive file lock) by the one process that opens `FASTNPC_DATA_DIR`: `fastnpc
/// serve` for its whole life, `export` and `import --into embedded` while they run. Taken
/// before anything else touches the directory, so a second process changes nothing.
const LOCK_FILE: &str = "fastnpc.lock";

/// How long a finished job's event log is kept: long enough for any client to come back and
/// replay it (after that, a stream of a finished job is answered from the job row alone).
const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// SQLite serves one writer at a time, so a few connections are all that helps (readers run
/// beside the writer in WAL mode).
const MAX_DB_CONNECTIONS: u32 = 8;

/// A built embedded system: data directory locked, database opened and migrated, listener
/// bound, not yet serving.
pub struct Embedded {
    /// The data directory's lock, held until the system is dropped or has stopped.
    lock: std::fs::File,
    api: Api,
    deps: Deps,
    queue: InProcessQueue,
    store: Arc<dyn Store>,
    /// The same store, for its SQLite-only upkeep (pruning old event logs).
    sqlite: SqliteStore,
    /// In-process consumers of the queue (one is enough: each runs `FASTNPC_WORKER_CONCURRENCY`
    /// jobs at once; tests use more, or none).
    workers: usize,
    /// Runs while the system runs when no LLM is configured.
    simulator: Option<LlmSimulator>,
}

impl Embedded {
    /// Locks `FASTNPC_DATA_DIR` (failing at once, having changed nothing, when another process
    /// holds it), opens `fastnpc.db` there (creating it), starts the simulator when no LLM is
    /// configured, and binds `FASTNPC_HTTP_ADDR`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_workers(settings, 1).await
    }

    /// [`Embedded::build`] with `workers` in-process consumers.
    pub async fn build_with_workers(mut settings: Settings, workers: usize) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&settings.data_dir)
            .await
            .with_context(|| format!("cannot create FASTNPC_DATA_DIR {}", settings.data_dir.display()))?;
        // Before the database is opened (and migrated), the admin bootstrapped or the port bound.
        let lock = lock(&settings.data_dir)?;
        let path = settings.data_dir.join(DATABASE_FILE);
        let sqlite = SqliteStore::open(&path, MAX_DB_CONNECTIONS)
            .await
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        tracing::info!(database = %path.display(), "embedded store ready");

        let simulator = if settings.llm.is_configured() {
            None
        } else {
            let simulator = LlmSimulator::start(SimConfig::default()).await?;
            tracing::warn!(
                simulator = %simulator.base_url(),
                "no LLM configured (FASTNPC_LLM_API_KEY / OPENROUTER_API_KEY / FASTNPC_LLM_BASE_URL): \
                 using the built-in LLM simulator, whose replies are placeholders"
            );
            settings.llm.base_url = simulator.base_url();
            settings.llm.api_key = Some(Secret::new("simulator"));
            settings.llm.simulated = true;
            Some(simulator)
        };
        // One registry for the API and the workers: `/metrics` (FASTNPC_METRICS_ADDR) shows both.
        let metrics = Arc::new(Metrics::new());
        let llm: Arc<dyn LlmClient> =
            Arc::new(MonitoredLlm::new(Arc::new(OpenAiClient::new(&settings.llm)), metrics.clone()));

        let hub = EventHub::in_process();
        let events: Arc<dyn EventLog> = Arc::new(SqliteEventLog::new(&sqlite, hub.clone()));
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let queue = InProcessQueue::new(DELIVERY_LIMIT.unsigned_abs());
        let publisher: Arc<dyn JobQueue> = Arc::new(queue.clone());
        let cancels = CancelRegistry::default();
        let search_cache: Arc<dyn SearchCache> = Arc::new(LocalSearchCache::default());
        let backends = Backends {
            store: store.clone(),
            events: events.clone(),
            hub,
            publisher: publisher.clone(),
            control: Arc::new(LocalControl::new(cancels.clone())),
            login_limiter: Arc::new(LocalLoginLimiter::new()),
            stream_tokens: Arc::new(LocalStreamTokens::new()),
            submissions: Arc::new(LocalSubmissionLimiter::new(settings.limits.submissions_per_minute)),
            search_cache: search_cache.clone(),
            metrics: metrics.clone(),
        };
        let api = Api::with_backends(&settings, backends, CancellationToken::new()).await?;
        let deps = Deps {
            store: store.clone(),
            events,
            llm,
            publisher,
            cancels,
            sources: Sources::new(&settings.sources, Some(search_cache))?,
            metrics,
            config: WorkerConfig::from_settings(&settings),
        };
        Ok(Self { lock, api, deps, queue, store, sqlite, workers, simulator })
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.api.local_addr()
    }

    /// The metrics listener's address, when `FASTNPC_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.api.metrics_addr()
    }

    /// The simulator's address, when it stands in for the LLM.
    pub fn simulator(&self) -> Option<&LlmSimulator> {
        self.simulator.as_ref()
    }

    /// Resumes what the last run left, then serves until `shutdown`: the API stops accepting
    /// and finishes its requests, then the workers finish (or hand back) their jobs.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        // Resuming takes over every unfinished job: only one process may do that to a database,
        // the one holding `lock` (taken by `build`, released when this returns).
        let Self { lock, api, deps, queue, store, sqlite, workers, simulator } = self;
        let outcome = async {
            let resumed = resume(store.as_ref(), deps.publisher.as_ref()).await?;
            if resumed > 0 {
                tracing::info!(jobs = resumed, "resuming jobs the last run left unfinished");
            }
            let worker_stop = CancellationToken::new();
            let pruner = tokio::spawn(prune_events(sqlite, worker_stop.clone()));
            let consumers: Vec<_> = (0..workers)
                .map(|_| tokio::spawn(consumer::run_in_process(deps.clone(), queue.clone(), worker_stop.clone())))
                .collect();
            let served = api.run_until(shutdown).await;
            worker_stop.cancel();
            // Every task is awaited before any failure is reported, so none outlives the system.
            let mut panicked = None;
            for task in consumers.into_iter().chain([pruner]) {
                if let Err(error) = task.await {
                    panicked.get_or_insert(error);
                }
            }
            served?;
            panicked.map_or(Ok(()), |error| Err(anyhow::Error::new(error).context("a worker task panicked")))
        }
        .await;
        if let Some(simulator) = simulator {
            simulator.shutdown().await;
        }
        tracing::info!("FastNPC stopped");
        drop(lock);
        outcome
    }
}

/// Where `fastnpc import` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The distributed mode's Postgres (`DATABASE_URL`), migrated first.
    Postgres,
    /// This machine's embedded store (`FASTNPC_DATA_DIR`).
    Embedded,
}

/// `fastnpc export USERNAME`: one user's data from the embedded store in `FASTNPC_DATA_DIR`
/// (see `fastnpc_shared::store::transfer`). It holds the data directory's lock while it runs,
/// so `fastnpc serve` must be stopped; it refuses while the user's jobs are queued or running
/// (left so by the last run).
pub async fn export_user(settings: &Settings, username: &str) -> anyhow::Result<UserExport> {
    let path = settings.data_dir.join(DATABASE_FILE);
    anyhow::ensure!(path.exists(), "no embedded database at {} (set FASTNPC_DATA_DIR)", path.display());
    let _lock = lock(&settings.data_dir)?;
    let store = SqliteStore::open(&path, 2).await?;
    match store.export_user(username).await? {
        Ok(document) => Ok(document),
        Err(ExportRefusal::NoSuchUser) => anyhow::bail!("no user named `{username}` in {}", path.display()),
        Err(ExportRefusal::JobsActive(jobs)) => {
            anyhow::bail!("`{username}` has {jobs} job(s) queued or running; let them finish (or cancel them) first")
        }
    }
}

/// `fastnpc import FILE`: writes an exported user into `target`, all or nothing. Into the
/// embedded store, it holds the data directory's lock while it runs (`fastnpc serve` stopped).
pub async fn import_user(settings: &Settings, document: &UserExport, target: Target) -> anyhow::Result<()> {
    anyhow::ensure!(
        document.format == FORMAT,
        "unknown export format `{}` (this version reads `{FORMAT}`)",
        document.format
    );
    let (store, _lock): (Arc<dyn Store>, _) = match target {
        Target::Postgres => {
            let store = fastnpc_shared::store::PgStore::connect(settings.database_url.expose(), 2).await?;
            store.migrate().await?;
            (Arc::new(store), None)
        }
        Target::Embedded => {
            tokio::fs::create_dir_all(&settings.data_dir).await?;
            let lock = lock(&settings.data_dir)?;
            (Arc::new(SqliteStore::open(&settings.data_dir.join(DATABASE_FILE), 2).await?), Some(lock))
        }
    };
    let username = &document.user.username;
    match store.import_user(document).await? {
        Imported::Done => Ok(()),
        Imported::UsernameTaken => anyhow::bail!("the target already has an account named `{username}`"),
        Imported::IdsTaken => {
            anyhow::bail!("the target already holds rows with these ids: was `{username}` imported before?")
        }
    }
}

/// Takes the data directory's lock, held until the returned file is dropped.
fn lock(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another fastnpc process is running over {} (FASTNPC_DATA_DIR); stop it first",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(anyhow::Error::new(error).context(format!("cannot lock {}", path.display())))
        }
    }
}

/// Deletes finished jobs' event logs once they are [`EVENT_RETENTION`] old, every
/// [`PRUNE_INTERVAL`] until `stop` (Redis expires them in the distributed mode).
async fn prune_events(store: SqliteStore, stop: CancellationToken) {
    loop {
        let cutoff = fastnpc_store_sqlite::minus(fastnpc_store_sqlite::now(), EVENT_RETENTION);
        match store.prune_events(cutoff).await {
            Ok(0) => {}
            Ok(events) => tracing::info!(events, "pruned the event logs of long-finished jobs"),
            Err(error) => tracing::warn!(%error, "cannot prune old event logs"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// Hands every job the last run left queued or running to this run's queue.
async fn resume(store: &dyn Store, queue: &dyn JobQueue) -> anyhow::Result<usize> {
    store.reset_deliveries().await?;
    let jobs = store.unpublished_jobs(Duration::ZERO, Duration::ZERO, i64::MAX).await?;
    for &job_id in &jobs {
        dispatch::publish(store, queue, job_id).await;
    }
    Ok(jobs.len())
}
