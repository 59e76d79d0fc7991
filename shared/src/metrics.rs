//! Prometheus metrics: what an operator watches (request rates and latencies, jobs and their
//! outcomes, LLM health, streams, the queue), in the OpenMetrics text format Prometheus scrapes.
//!
//! One [`Metrics`] per process part that owns it — the API's, each worker's; the embedded mode's
//! API and workers share one — passed to where it is recorded, never a global: two apps in one
//! process (the tests run many) keep separate counts. Served by [`serve`] on
//! `FASTNPC_METRICS_ADDR`, a listener of its own, so the metrics are not on the public port unless
//! an operator puts them there.
//!
//! Names follow Prometheus conventions (`fastnpc_` prefix, `_total` counters, `_seconds`
//! histograms) and every label has a bounded set of values: route templates, job kinds, outcomes,
//! LLM purposes — never an id.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The route template (`/v1/characters/{id}`), or `unmatched`.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: &'static str,
    /// `succeeded`, `failed`, `cancelled`, `retried` (handed back for another attempt) or
    /// `abandoned` (its lease was lost or the worker stopped).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabels {
    pub purpose: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LlmOutcomeLabels {
    pub purpose: &'static str,
    /// `ok`, or the error's code (`llm_timeout`, `llm_rate_limited`, …).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub purpose: &'static str,
    /// `prompt` or `completion`.
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric FastNPC records, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Histograms<RouteLabels>,
    /// Jobs the API accepted (committed and handed to the queue).
    pub jobs_accepted: Family<KindLabels, Counter>,
    /// Attempts a worker started (a retried job counts each attempt).
    pub jobs_started: Family<KindLabels, Counter>,
    pub jobs_finished: Family<OutcomeLabels, Counter>,
    pub jobs_in_flight: Family<KindLabels, Gauge>,
    pub job_duration: Histograms<KindLabels>,
    /// From the job's creation to its attempt's start.
    pub job_queue_wait: Histograms<KindLabels>,
    pub llm_calls: Family<LlmOutcomeLabels, Counter>,
    pub llm_call_duration: Histograms<PurposeLabels>,
    pub llm_first_token: Histograms<PurposeLabels>,
    pub llm_tokens: Family<TokenLabels, Counter>,
    pub sse_streams: Gauge,
    pub event_append_duration: Histogram,
    /// Jobs the re-publisher sent again (their first publish was not confirmed).
    pub republished: Counter,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: Counter,
    /// Messages waiting in a queue, as the broker last said.
    pub queue_depth: Family<QueueLabels, Gauge>,
}

/// Latencies from a millisecond to about ten minutes.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fastnpc");
        let metrics = Self {
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(seconds),
            jobs_accepted: Family::default(),
            jobs_started: Family::default(),
            jobs_finished: Family::default(),
            jobs_in_flight: Family::default(),
            job_duration: Family::new_with_constructor(seconds),
            job_queue_wait: Family::new_with_constructor(seconds),
            llm_calls: Family::default(),
            llm_call_duration: Family::new_with_constructor(seconds),
            llm_first_token: Family::new_with_constructor(seconds),
            llm_tokens: Family::default(),
            sse_streams: Gauge::default(),
            event_append_duration: seconds(),
            republished: Counter::default(),
            dead_lettered: Counter::default(),
            queue_depth: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("http_requests", "HTTP requests answered", metrics.http_requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency", metrics.http_request_duration.clone());
        r.register("jobs_accepted", "Jobs accepted by the API", metrics.jobs_accepted.clone());
        r.register("jobs_started", "Job attempts started by a worker", metrics.jobs_started.clone());
        r.register("jobs_finished", "Job attempts ended, by outcome", metrics.jobs_finished.clone());
        r.register("jobs_in_flight", "Job attempts running now", metrics.jobs_in_flight.clone());
        r.register("job_duration_seconds", "Run time of a job attempt", metrics.job_duration.clone());
        r.register(
            "job_queue_wait_seconds",
            "From a job's creation to its attempt's start",
            metrics.job_queue_wait.clone(),
        );
        r.register("llm_calls", "LLM calls, by purpose and outcome", metrics.llm_calls.clone());
        r.register(
            "llm_call_duration_seconds",
            "LLM call latency (a stream: to its end)",
            metrics.llm_call_duration.clone(),
        );
        r.register(
            "llm_first_token_seconds",
            "Time to a streamed reply's first token",
            metrics.llm_first_token.clone(),
        );
        r.register("llm_tokens", "LLM tokens used", metrics.llm_tokens.clone());
        r.register("sse_streams", "Job event streams open", metrics.sse_streams.clone());
        r.register("event_append_duration_seconds", "Job event append latency", metrics.event_append_duration.clone());
        r.register("republished_jobs", "Jobs published again by the re-publisher", metrics.republished.clone());
        r.register("dead_lettered_messages", "Messages sent to the dead-letter queue", metrics.dead_lettered.clone());
        r.register("queue_depth_messages", "Messages waiting in a queue", metrics.queue_depth.clone());
        Self { registry, ..metrics }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A job attempt started; the guard ends it (`outcome`) and keeps `jobs_in_flight` right
    /// whichever way the attempt ends, a panic included.
    pub fn job_started(self: &Arc<Self>, kind: &'static str, queue_wait: Option<Duration>) -> JobTimer {
        self.jobs_started.get_or_create(&KindLabels { kind }).inc();
        self.jobs_in_flight.get_or_create(&KindLabels { kind }).inc();
        if let Some(wait) = queue_wait {
            self.job_queue_wait.get_or_create(&KindLabels { kind }).observe(wait.as_secs_f64());
        }
        JobTimer { metrics: self.clone(), kind, started: std::time::Instant::now(), outcome: "abandoned" }
    }
}

/// One job attempt being timed (see [`Metrics::job_started`]).
pub struct JobTimer {
    metrics: Arc<Metrics>,
    kind: &'static str,
    started: std::time::Instant,
    outcome: &'static str,
}

impl JobTimer {
    /// How the attempt ended; recorded when the timer is dropped.
    pub fn set_outcome(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        let kind = self.kind;
        self.metrics.jobs_in_flight.get_or_create(&KindLabels { kind }).dec();
        self.metrics.jobs_finished.get_or_create(&OutcomeLabels { kind, outcome: self.outcome }).inc();
        self.metrics.job_duration.get_or_create(&KindLabels { kind }).observe(self.started.elapsed().as_secs_f64());
    }
}

/// Counts one in a gauge for as long as it lives (an open stream).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` (any other path: 404) on `listener` until `stop`, in the background.
/// Binds `FASTNPC_METRICS_ADDR`'s listener, when it is set (at start-up, so a taken port fails
/// the start rather than the first scrape).
pub async fn bind(address: Option<std::net::SocketAddr>) -> std::io::Result<Option<tokio::net::TcpListener>> {
    match address {
        Some(address) => tokio::net::TcpListener::bind(address).await.map(Some),
        None => Ok(None),
    }
}

pub fn serve(metrics: Arc<Metrics>, listener: tokio::net::TcpListener, stop: CancellationToken) {
    use axum::{Router, http::header, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()) }
        }),
    );
    let address = listener.local_addr();
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    if let Ok(address) = address {
        tracing::info!(%address, "serving Prometheus metrics at /metrics");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_counters_and_histograms_by_convention() {
        let metrics = Arc::new(Metrics::new());
        metrics.jobs_accepted.get_or_create(&KindLabels { kind: "chat_reply" }).inc();
        {
            let mut timer = metrics.job_started("chat_reply", Some(Duration::from_millis(5)));
            timer.set_outcome("succeeded");
        }
        let text = metrics.render();
        assert!(text.contains("fastnpc_jobs_accepted_total{kind=\"chat_reply\"} 1"), "{text}");
        assert!(text.contains("fastnpc_jobs_finished_total{kind=\"chat_reply\",outcome=\"succeeded\"} 1"), "{text}");
        assert!(text.contains("fastnpc_jobs_in_flight{kind=\"chat_reply\"} 0"), "{text}");
        assert!(text.contains("fastnpc_job_queue_wait_seconds_count{kind=\"chat_reply\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn every_metric_the_grafana_dashboard_queries_exists() {
        let metrics = Arc::new(Metrics::new());
        // Families show only the label sets they have seen: give each one.
        let (method, route) = ("GET".to_owned(), "/v1/jobs/{id}".to_owned());
        metrics
            .http_requests
            .get_or_create(&HttpLabels { method: method.clone(), route: route.clone(), status: 200 })
            .inc();
        metrics.http_request_duration.get_or_create(&RouteLabels { method, route }).observe(0.1);
        metrics.jobs_accepted.get_or_create(&KindLabels { kind: "chat_reply" }).inc();
        drop(metrics.job_started("chat_reply", Some(Duration::ZERO)));
        let purpose = "chat_reply";
        metrics.llm_calls.get_or_create(&LlmOutcomeLabels { purpose, outcome: "ok".into() }).inc();
        metrics.llm_call_duration.get_or_create(&PurposeLabels { purpose }).observe(1.0);
        metrics.llm_first_token.get_or_create(&PurposeLabels { purpose }).observe(0.1);
        metrics.llm_tokens.get_or_create(&TokenLabels { purpose, direction: "prompt" }).inc();
        metrics.queue_depth.get_or_create(&QueueLabels { queue: "jobs".into() }).set(1);
        let exposition = metrics.render();

        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana/fastnpc.json")).expect("the dashboard is JSON");
        let mut queried = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (start, _) in expr.match_indices("fastnpc_") {
                    let name: String =
                        expr[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    queried.push(name);
                }
            }
        }
        assert!(queried.len() > 15, "{queried:?}");
        for name in queried {
            assert!(exposition.contains(&format!("\n{name}")), "the dashboard queries `{name}`, which is not exposed");
        }
    }
}
