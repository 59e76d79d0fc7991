//! The FastNPC worker: takes job ids off RabbitMQ and runs the jobs.
//!
//! # Layout
//!
//! - [`consumer`]: the connection supervisor. It (re)connects, re-declares the topology,
//!   re-applies prefetch (lapin's recovery would not) and feeds deliveries to the runner, never
//!   holding more than the configured number of jobs at once. `consumer::run_in_process` does the
//!   same over the embedded mode's in-process queue.
//! - [`runner`]: one delivery's life: decode, claim with a lease, heartbeat, run the handler,
//!   commit, emit the terminal event, and only then ack.
//! - [`jobs`]: one module per job kind.
//!
//! Delivery is at-least-once; the claim in Postgres makes processing effectively-once: a
//! redelivered message for a finished job is acked and skipped, and a worker that lost its claim
//! cannot write results.

use std::{sync::Arc, time::Duration};

use fastnpc_shared::{
    control::CancelRegistry,
    event_bus::{EventLog, RedisEventLog},
    llm::{LlmClient, OpenAiClient},
    queue::{JobPublisher, JobQueue, Topology},
    settings::Settings,
    store,
};
use tokio_util::sync::CancellationToken;

pub mod consumer;
pub mod dead_letters;
pub mod jobs;
pub mod runner;

/// What every job needs, shared by all jobs of the process.
#[derive(Clone)]
pub struct Deps {
    /// The database, through its port (Postgres or SQLite).
    pub store: Arc<dyn store::Store>,
    pub events: Arc<dyn EventLog>,
    pub llm: Arc<dyn LlmClient>,
    /// For follow-up jobs (memory compression) and the next job of a series.
    pub publisher: Arc<dyn JobQueue>,
    /// The jobs running here, for cancel signals from the API.
    pub cancels: CancelRegistry,
    /// Fetchers of Wikipedia, Baike and web pages (generation from a fetched source).
    pub sources: fastnpc_shared::sources::Sources,
    pub config: WorkerConfig,
}

/// The worker's knobs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Jobs in flight (also the prefetch count).
    pub concurrency: u16,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// On shutdown, how long in-flight jobs may run before they are handed back.
    pub shutdown_grace: Duration,
    /// Claims of one job before a transient failure becomes final.
    pub max_job_attempts: i32,
    /// Claims of one job, whatever happened to them, before it is failed as poison (a job whose
    /// worker keeps dying never finishes nor fails by itself).
    pub max_claims: i32,
    /// Pause between group-chat rounds (the user's chance to cut in).
    pub group_turn_pause: Duration,
    /// The longest one attempt may run.
    pub job_deadline: Duration,
}

impl WorkerConfig {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            concurrency: settings.worker_concurrency.max(1),
            lease: settings.job_lease,
            shutdown_grace: Duration::from_secs(20),
            max_job_attempts: 3,
            max_claims: 5,
            group_turn_pause: settings.group_turn_pause,
            job_deadline: settings.job_deadline,
        }
    }
}

/// Runs a worker until `shutdown` is cancelled, then drains: no new jobs are taken, in-flight
/// jobs get [`WorkerConfig::shutdown_grace`] to finish, and the rest are handed back.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::PgStore::connect(settings.database_url.expose(), settings.db_pool_size).await?;
    let events = Arc::new(RedisEventLog::new(
        fastnpc_shared::event_bus::connect(&settings.redis_url).await?,
        &settings.namespace,
    ));
    let llm: Arc<dyn LlmClient> = Arc::new(OpenAiClient::new(&settings.llm));
    if settings.llm.api_key.is_none() {
        tracing::warn!(llm.base_url = %settings.llm.base_url, "no LLM API key configured (FASTNPC_LLM_API_KEY / OPENROUTER_API_KEY)");
    }
    tracing::info!(llm.base_url = %settings.llm.base_url, llm.model = %settings.llm.model, concurrency = settings.worker_concurrency, "worker starting");
    let topology = Topology::from_settings(&settings);
    let publisher = Arc::new(JobPublisher::new(settings.amqp_url.clone(), topology.clone()));
    let cancels = CancelRegistry::default();
    tokio::spawn(cancels.clone().listen(settings.redis_url.clone(), settings.namespace.clone(), shutdown.clone()));
    let deps = Deps {
        store: Arc::new(store),
        events,
        llm,
        publisher,
        cancels,
        sources: fastnpc_shared::sources::Sources::new(
            &settings.sources,
            Arc::new(fastnpc_shared::sources::search_cache::LocalSearchCache::default()),
        )?,
        config: WorkerConfig::from_settings(&settings),
    };
    consumer::run(deps, settings.amqp_url.clone(), topology, shutdown).await;
    Ok(())
}
