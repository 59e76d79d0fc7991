//! Shared handler state: cheap handles only (pools and clients are internally reference
//! counted), so cloning per request costs nothing.

use std::{sync::Arc, time::Duration};

use fastnpc_shared::{
    control::CancelSignal,
    event_bus::{EventHub, EventLog},
    queue::JobQueue,
    rate_limit::{LoginAttempts, SubmissionRate},
    stream_tokens::StreamTokenStore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

#[derive(Clone)]
pub struct AppState {
    /// The database, through its port: Postgres or SQLite, chosen at start-up.
    pub store: Arc<dyn fastnpc_shared::store::Store>,
    /// Appends (the `queued` event) and backfills for SSE.
    pub events: Arc<dyn EventLog>,
    /// The process's one live subscription, fanned out to SSE clients.
    pub hub: EventHub,
    pub publisher: Arc<dyn JobQueue>,
    /// Cancel signals to the workers.
    pub control: Arc<dyn CancelSignal>,
    /// Failed-password back-off per (username, address), per address and per username.
    pub login_limiter: Arc<dyn LoginAttempts>,
    /// Short-lived single-job tokens for browser `EventSource`s.
    pub stream_tokens: Arc<dyn StreamTokenStore>,
    /// Job submissions per user per minute.
    pub submissions: Arc<dyn SubmissionRate>,
    pub config: Arc<ApiConfig>,
    /// Cancelled when the API shuts down: long-lived responses (SSE) end so the drain can finish.
    pub shutdown: CancellationToken,
    /// Work a request started but does not wait for (publishing an accepted job); shutdown
    /// waits for it.
    pub background: TaskTracker,
    /// Bounds concurrent password hashing (argon2id takes ~19 MiB and real CPU per hash), so a
    /// flood of logins queues (for at most `config.password_hashing_queue`, then `503`) instead
    /// of exhausting memory and the blocking pool.
    pub password_hashing: Arc<tokio::sync::Semaphore>,
    /// The web app's files.
    pub web: crate::web::WebFiles,
    /// What the process records for Prometheus (served on `FASTNPC_METRICS_ADDR`).
    pub metrics: Arc<fastnpc_shared::metrics::Metrics>,
    /// Encyclopedia search and the ambiguity check of new characters' sources.
    pub sources: fastnpc_shared::sources::Sources,
}

/// The API's own knobs.
#[derive(Debug)]
pub struct ApiConfig {
    pub session_ttl: Duration,
    /// `FASTNPC_HTTP_REQUEST_TIMEOUT_SECS` (see [`crate::timeout`]).
    pub request_timeout: Duration,
    pub limits: fastnpc_shared::settings::UserLimits,
    /// `FASTNPC_TRUSTED_PROXIES`: the peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: fastnpc_shared::settings::IpNetworks,
    /// `FASTNPC_PASSWORD_HASHING_QUEUE_MS`: the longest a request waits for a hashing place.
    pub password_hashing_queue: Duration,
    /// The workers' LLM is the simulator (`GET /v1/system`; the web app's banner).
    pub llm_simulated: bool,
    /// The default model, as configured (`GET /v1/system`).
    pub llm_model: String,
}
