//! The FastNPC HTTP API: validates input, records work as jobs, and streams their progress.
//!
//! It does no LLM work itself. A request that starts something slow writes the domain rows and a
//! job row in one transaction, answers `202` after the commit, and publishes the job id to
//! RabbitMQ; progress comes back from the workers through Redis and leaves as Server-Sent Events.
//!
//! # Layout
//!
//! - [`Api`]: start-up (connections, migrations, background tasks) and graceful shutdown.
//! - [`app`]: the router; [`routes`] holds one module per resource.
//! - [`state`]: the cheap-to-clone handles every handler shares.
//! - [`error`]: the one error type handlers return, rendered as RFC 9457 problem details.
//! - [`extract`]: request extractors (bearer or cookie auth, JSON with problem-details
//!   rejections); [`browser_session`]: the web app's session cookie and its CSRF check.
//! - [`web`]: the web app, compiled in and served at `/`.
//! - [`idempotency`]: `Idempotency-Key` on job-creating POSTs.
//! - [`limits`]: per-user abuse limits (429).
//! - [`sse`]: the resumable job event stream.
//! - [`republisher`]: re-sends jobs whose publish the broker never confirmed.
//! - [`maintenance`]: housekeeping (purging old sessions).
//! - [`timeout`]: the request timeout (not for SSE streams nor `Prefer: wait`).
//! - [`openapi`]: the OpenAPI 3.1 description (`/v1/openapi.json`) and its reference page (`/docs`).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, http::HeaderName, serve::ListenerExt as _};
use fastnpc_shared::{
    event_bus::{EventHub, EventLog, RedisEventLog},
    queue::{JobPublisher, Topology},
    settings::Settings,
    store,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub mod avatars;
pub mod browser_session;
pub mod cards;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod limits;
pub mod maintenance;
pub mod openapi;
pub mod republisher;
pub mod routes;
pub mod sse;
pub mod state;
pub mod timeout;
pub mod web;
mod web_files;

pub use state::AppState;

/// Request bodies beyond this are refused with 413 before they are read: the largest legitimate
/// body is a character source (100,000 characters, at most 400 KB of UTF-8).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The body limit of the routes that take a file ([`takes_a_file`]): a card (whose image may be
/// a large picture) or a picture to make an avatar of.
pub const MAX_UPLOAD_BYTES: usize = 8 * 1024 * 1024;

/// True for the routes whose body is a file: a card import, an avatar upload.
fn takes_a_file(method: &axum::http::Method, path: &str) -> bool {
    (method == axum::http::Method::POST && path == "/v1/characters/import")
        || (method == axum::http::Method::PUT && path.starts_with("/v1/") && path.ends_with("/avatar"))
}

/// Bounds every request body: [`MAX_UPLOAD_BYTES`] for a file, [`MAX_BODY_BYTES`] for the rest.
/// A body declared larger is refused with 413 before it is read; one that turns out larger fails
/// its extractor with 413. (axum's own default limit is off: this is the one limit.)
async fn limit_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let limit = if takes_a_file(request.method(), request.uri().path()) { MAX_UPLOAD_BYTES } else { MAX_BODY_BYTES };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return error::ApiError::Invalid {
            status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            code: "body-too-large",
            detail: format!("the body is {} bytes; at most {limit} are accepted here", declared.unwrap_or_default()),
        }
        .into_response();
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit));
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// The router with all routes and middleware.
pub fn app(state: AppState) -> Router {
    let (api, _) = routes::router();
    Router::new()
        .merge(api)
        .merge(openapi::docs())
        .route("/assets/{version}/{*path}", axum::routing::get(web::asset))
        .fallback(web::fallback)
        // Innermost: bounds the handler and its extractors (not a streamed body, see
        // `timeout`); its 503 is already a problem document.
        .layer(axum::middleware::from_fn_with_state(state.config.request_timeout, timeout::limit))
        .layer(axum::middleware::from_fn(limit_body))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(error::problem_for_bare_errors))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), record_request))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or_else(|| request.uri().path().to_owned(), |p| p.as_str().to_owned());
            // The route pattern, not the URI: no ids or query strings (which may hold cursors) in logs.
            tracing::info_span!("request", method = %request.method(), route)
        }))
        .with_state(state)
}

/// Counts and times every answer by method, route template and status (the metrics'
/// `fastnpc_http_requests_total` and `fastnpc_http_request_duration_seconds`).
async fn record_request(
    axum::extract::State(metrics): axum::extract::State<Arc<fastnpc_shared::metrics::Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use fastnpc_shared::metrics::{HttpLabels, RouteLabels};
    // Label values must stay few: a method a client made up is `other`; a path no route
    // matched (the web app's pages, 404s) is `fallback`.
    let method = match *request.method() {
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::PATCH | Method::DELETE | Method::OPTIONS => {
            request.method().as_str().to_owned()
        }
        _ => "other".to_owned(),
    };
    let route =
        request.extensions().get::<axum::extract::MatchedPath>().map_or("fallback", |path| path.as_str()).to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .http_request_duration
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics.http_requests.get_or_create(&HttpLabels { method, route, status }).inc();
    response
}

/// A built API: connected, migrated, bound, not yet serving.
pub struct Api {
    listener: TcpListener,
    /// `FASTNPC_METRICS_ADDR`'s listener, when set.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// Stops the background loops (re-publisher, event hub) and tells SSE streams to end.
    stop: CancellationToken,
}

/// The ports an API process runs on: Postgres, Redis and RabbitMQ in the distributed mode
/// ([`Api::build`]), SQLite and in-process stand-ins in the embedded one.
pub struct Backends {
    pub store: Arc<dyn fastnpc_shared::store::Store>,
    pub events: Arc<dyn EventLog>,
    pub hub: EventHub,
    pub publisher: Arc<dyn fastnpc_shared::queue::JobQueue>,
    pub control: Arc<dyn fastnpc_shared::control::CancelSignal>,
    pub login_limiter: Arc<dyn fastnpc_shared::rate_limit::LoginAttempts>,
    pub stream_tokens: Arc<dyn fastnpc_shared::stream_tokens::StreamTokenStore>,
    pub submissions: Arc<dyn fastnpc_shared::rate_limit::SubmissionRate>,
    /// Encyclopedia search results, kept briefly.
    pub search_cache: Arc<dyn fastnpc_shared::sources::search_cache::SearchCache>,
    /// The registry the API records into (the embedded mode's workers share it).
    pub metrics: Arc<fastnpc_shared::metrics::Metrics>,
}

impl Api {
    /// The distributed API: connects to Postgres (and migrates), Redis and the broker, and binds
    /// the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = store::PgStore::connect(settings.database_url.expose(), settings.db_pool_size).await?;
        db.migrate().await?;
        let stop = CancellationToken::new();
        let redis = fastnpc_shared::event_bus::connect(&settings.redis_url).await?;
        let namespace = &settings.namespace;
        let backends = Backends {
            store: Arc::new(db),
            events: Arc::new(RedisEventLog::new(redis.clone(), namespace)),
            hub: EventHub::start(&settings.redis_url, namespace, stop.clone()).await?,
            publisher: Arc::new(JobPublisher::new(settings.amqp_url.clone(), Topology::from_settings(&settings))),
            control: Arc::new(fastnpc_shared::control::ControlSender::new(redis.clone(), namespace)),
            login_limiter: Arc::new(fastnpc_shared::rate_limit::LoginLimiter::new(redis.clone(), namespace)),
            stream_tokens: Arc::new(fastnpc_shared::stream_tokens::StreamTokens::new(redis.clone(), namespace)),
            submissions: Arc::new(fastnpc_shared::rate_limit::SubmissionLimiter::new(
                redis.clone(),
                namespace,
                settings.limits.submissions_per_minute,
            )),
            search_cache: Arc::new(fastnpc_shared::sources::search_cache::RedisSearchCache::new(redis, namespace)),
            metrics: Arc::new(fastnpc_shared::metrics::Metrics::new()),
        };
        Self::with_backends(&settings, backends, stop).await
    }

    /// An API over the given backends: bootstraps the admin and binds the listener. `stop` is
    /// cancelled when the API stops (the backends' own loops may watch it).
    pub async fn with_backends(
        settings: &Settings,
        backends: Backends,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let Backends {
            store,
            events,
            hub,
            publisher,
            control,
            login_limiter,
            stream_tokens,
            submissions,
            search_cache,
            metrics,
        } = backends;
        let state = AppState {
            store,
            events,
            hub,
            publisher,
            control,
            login_limiter,
            stream_tokens,
            submissions,
            config: Arc::new(state::ApiConfig {
                session_ttl: settings.session_ttl,
                request_timeout: settings.http_request_timeout,
                limits: settings.limits.clone(),
                trusted_proxies: settings.trusted_proxies.clone(),
                password_hashing_queue: settings.password_hashing.queue_timeout,
                llm_simulated: settings.llm.simulated,
                llm_model: settings.llm.model.clone(),
            }),
            shutdown: stop.clone(),
            background: tokio_util::task::TaskTracker::new(),
            password_hashing: Arc::new(tokio::sync::Semaphore::new(settings.password_hashing.concurrency)),
            web: web::WebFiles::new(settings.web_dir.clone()),
            sources: fastnpc_shared::sources::Sources::new(&settings.sources, Some(search_cache))?,
            metrics,
        };
        routes::admin::bootstrap(&state, settings.admin.as_ref()).await?;
        let listener = listen(settings.http_addr)?;
        let metrics_listener = fastnpc_shared::metrics::bind(settings.metrics_addr).await?;
        Ok(Self { listener, metrics_listener, state, stop })
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The metrics listener's address, when `FASTNPC_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (SSE streams are told to end), and stops the background tasks.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, metrics_listener, state, stop } = self;
        if let Some(metrics_listener) = metrics_listener {
            fastnpc_shared::metrics::serve(state.metrics.clone(), metrics_listener, stop.clone());
        }
        tokio::spawn(republisher::run(state.clone(), stop.clone()));
        tokio::spawn(maintenance::purge_sessions(state.clone(), stop.clone()));
        tracing::info!(addr = %listener.local_addr()?, "API listening");
        let stopping = stop.clone();
        let pending = state.background.clone();
        // Events are small writes that must leave at once. With Nagle's algorithm on, an event
        // written while the previous one is unacknowledged waits for the client's delayed ACK
        // (40 ms on Linux): a lone client saw a job's `running` event 40 ms late.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
            }
        });
        // With the peer's address on every request: the login back-off counts per client address.
        axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Ends SSE streams and background tasks, so the drain does not wait on them.
                stopping.cancel();
            })
            .await?;
        // Publishes of jobs accepted just before the stop; whatever does not make it is left to
        // the re-publisher of the next process.
        pending.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), pending.wait()).await;
        stop.cancel();
        tracing::info!("API stopped");
        Ok(())
    }
}

/// `X-Accel-Buffering: no` tells nginx-style proxies not to buffer SSE.
pub(crate) static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// How often an idle SSE stream gets a keep-alive comment.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Handshakes the kernel may hold completed for the API before it accepts them. Tokio's
/// `TcpListener::bind` asks for 128, and a burst of new clients past that (a thousand
/// conversations opening at once) overflowed the queue: each dropped handshake cost its client a
/// SYN retransmission, a whole second (docs/benchmarks.md, 2026-12-03 evening). The kernel caps
/// the request at `net.core.somaxconn` (4096 by default since Linux 5.4).
const ACCEPT_BACKLOG: u32 = 4096;

/// The API's listening socket on `address`, with room for a burst of connections.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As `TcpListener::bind` does on Unix: a restarted API can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// More clients than Tokio's default backlog (128) connect at once while nothing is
    /// accepted: with the API's backlog every handshake completes; with 128, those past it
    /// would wait for SYN retransmissions and, never accepted here, never complete.
    #[tokio::test]
    async fn a_burst_of_connections_past_tokios_default_backlog_completes_before_any_is_accepted() {
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let address = listener.local_addr().unwrap();
        let connects = (0..600).map(|_| tokio::net::TcpStream::connect(address));
        let connected = tokio::time::timeout(Duration::from_secs(30), futures::future::try_join_all(connects))
            .await
            .expect("every handshake completes without an accept")
            .unwrap();
        assert_eq!(connected.len(), 600);
    }
}
