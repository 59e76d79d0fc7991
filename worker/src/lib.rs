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
    llm::{LlmClient, MonitoredLlm, OpenAiClient},
    metrics::Metrics,
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
    /// What the worker records for Prometheus.
    pub metrics: Arc<Metrics>,
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

/// A worker connected to its services, not yet consuming.
pub struct Worker {
    deps: Deps,
    settings: Settings,
    /// `FASTNPC_METRICS_ADDR`'s listener, when set.
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Worker {
    /// Connects to Postgres and Redis and binds the metrics listener; the broker is connected
    /// (and reconnected) by the consumer.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = store::PgStore::connect(settings.database_url.expose(), settings.db_pool_size).await?;
        let events = Arc::new(RedisEventLog::new(
            fastnpc_shared::event_bus::connect(&settings.redis_url).await?,
            &settings.namespace,
        ));
        let metrics = Arc::new(Metrics::new());
        let llm: Arc<dyn LlmClient> =
            Arc::new(MonitoredLlm::new(Arc::new(OpenAiClient::new(&settings.llm)), metrics.clone()));
        if settings.llm.api_key.is_none() {
            tracing::warn!(llm.base_url = %settings.llm.base_url, "no LLM API key configured (FASTNPC_LLM_API_KEY / OPENROUTER_API_KEY)");
        }
        let metrics_listener = fastnpc_shared::metrics::bind(settings.metrics_addr).await?;
        let deps = Deps {
            store: Arc::new(store),
            events,
            llm,
            publisher: Arc::new(JobPublisher::new(settings.amqp_url.clone(), Topology::from_settings(&settings))),
            cancels: CancelRegistry::default(),
            // Workers fetch documents and never search: no search cache.
            sources: fastnpc_shared::sources::Sources::new(&settings.sources, None)?,
            metrics,
            config: WorkerConfig::from_settings(&settings),
        };
        Ok(Self { deps, settings, metrics_listener })
    }

    /// The metrics listener's address, when `FASTNPC_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Consumes jobs until `shutdown` is cancelled, then drains: no new jobs are taken, in-flight
    /// jobs get [`WorkerConfig::shutdown_grace`] to finish, and the rest are handed back.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { deps, settings, metrics_listener } = self;
        tracing::info!(llm.base_url = %settings.llm.base_url, llm.model = %settings.llm.model, concurrency = settings.worker_concurrency, "worker starting");
        if let Some(listener) = metrics_listener {
            fastnpc_shared::metrics::serve(deps.metrics.clone(), listener, shutdown.clone());
        }
        tokio::spawn(deps.cancels.clone().listen(
            settings.redis_url.clone(),
            settings.namespace.clone(),
            shutdown.clone(),
        ));
        consumer::run(deps, settings.amqp_url.clone(), Topology::from_settings(&settings), shutdown).await;
    }
}

/// Builds a worker and runs it until `shutdown` (see [`Worker::run`]).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::build(settings).await?.run(shutdown).await;
    Ok(())
}
