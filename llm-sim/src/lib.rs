//! An OpenAI-compatible chat completion server for tests, benchmarks and demos.
//!
//! The worker talks to a real LLM provider (OpenRouter) in production. Tests need something
//! that answers instantly and deterministically, benchmarks need something whose latency and
//! throughput are known so that the numbers measure FastNPC rather than the provider, and the
//! retry/parsing code needs the provider's failure modes on demand. [`LlmSimulator`] is that:
//! an in-process axum server (or the `llm-sim` binary) speaking `POST /v1/chat/completions`,
//! streamed and not, with free text or JSON that satisfies the requested `json_schema`.
//!
//! Knobs:
//! - [`SimConfig`] sets the timing (time to first token, delay per token), reply length,
//!   chunking and the seed. Content depends only on `(seed, request index)`, so runs replay.
//! - [`Fault`]s script misbehaviour: 429s with `Retry-After`, 500s, stalls, dropped
//!   connections, malformed SSE, OpenRouter's error-inside-a-200, broken JSON, or a fixed
//!   reply. Queue them FIFO with [`LlmSimulator::push_faults`], or tie them to prompts with a
//!   [`Rule`] ("the moderator prompt gets this reply", "category X fails twice").
//! - [`LlmSimulator::stats`] and [`LlmSimulator::requests`] show what the client did,
//!   including peak concurrency.
//!
//! Besides the chat endpoint and `GET /v1/models`, the server has a control API for when it
//! runs as a separate process: `GET /sim/stats`, `GET /sim/requests`, `POST /sim/reset`,
//! `POST /sim/faults` (a JSON array of faults, see [`Fault`]), `POST /sim/rules` (one
//! [`Rule`]), and `GET`/`PUT /sim/config` (see [`SimConfig`]; `PUT` merges the given fields).

mod content;
mod fault;
mod server;
mod state;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

pub use fault::Fault;
use state::SimState;

/// Timing, length and seed of the simulated model.
///
/// Over HTTP (`PUT /sim/config`) durations are integer milliseconds:
/// `{"time_to_first_token_ms":50,"inter_token_delay_ms":5,"reply_tokens":24,"tokens_per_chunk":1,"seed":0}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SimConfigWire", into = "SimConfigWire")]
pub struct SimConfig {
    /// Delay before the first streamed chunk, or before the whole answer when not streaming.
    pub time_to_first_token: Duration,
    /// Delay per generated token after the first chunk. A non-streamed answer takes
    /// `time_to_first_token + reply_tokens * inter_token_delay`.
    pub inter_token_delay: Duration,
    /// Tokens (English words or CJK characters) in a free-text reply. Fixed content (JSON
    /// replies, [`Fault::Reply`]) is cut into at most this many tokens.
    pub reply_tokens: usize,
    /// Tokens per SSE chunk; a chunk goes out every `tokens_per_chunk * inter_token_delay`.
    pub tokens_per_chunk: usize,
    /// With the request index since the last reset, determines every reply's content.
    pub seed: u64,
    /// Which real server's quirks to imitate.
    pub dialect: Dialect,
}

/// The server the simulator imitates, where OpenAI-compatible servers differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// OpenAI and OpenRouter: `json_schema` honoured, usage in the stream when asked for.
    #[default]
    OpenAi,
    /// llama-cpp-python's server (0.3.36, seen through `scripts/llm-server`): `json_schema`
    /// refused with an HTTP 500 validation error, `json_object` (optionally constrained by a
    /// `schema` beside it) honoured; streams open with a keep-alive comment and a role-only
    /// chunk, and carry no usage even when asked.
    LlamaCppPython,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            time_to_first_token: Duration::from_millis(50),
            inter_token_delay: Duration::from_millis(5),
            reply_tokens: 24,
            tokens_per_chunk: 1,
            seed: 0,
            dialect: Dialect::OpenAi,
        }
    }
}

impl SimConfig {
    /// A configuration with no artificial latency, for tests that only care about content.
    pub fn instant() -> Self {
        Self { time_to_first_token: Duration::ZERO, inter_token_delay: Duration::ZERO, ..Self::default() }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimConfigWire {
    time_to_first_token_ms: u64,
    inter_token_delay_ms: u64,
    reply_tokens: usize,
    tokens_per_chunk: usize,
    seed: u64,
    #[serde(default)]
    dialect: Dialect,
}

impl From<SimConfigWire> for SimConfig {
    fn from(wire: SimConfigWire) -> Self {
        Self {
            time_to_first_token: Duration::from_millis(wire.time_to_first_token_ms),
            inter_token_delay: Duration::from_millis(wire.inter_token_delay_ms),
            reply_tokens: wire.reply_tokens,
            tokens_per_chunk: wire.tokens_per_chunk,
            seed: wire.seed,
            dialect: wire.dialect,
        }
    }
}

impl From<SimConfig> for SimConfigWire {
    fn from(config: SimConfig) -> Self {
        Self {
            time_to_first_token_ms: fault::millis(config.time_to_first_token),
            inter_token_delay_ms: fault::millis(config.inter_token_delay),
            reply_tokens: config.reply_tokens,
            tokens_per_chunk: config.tokens_per_chunk,
            seed: config.seed,
            dialect: config.dialect,
        }
    }
}

/// Applies `fault` to requests whose prompt (all message contents joined with `"\n"`) contains
/// `when_contains`. Rules are checked in the order they were added, before the FIFO queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Substring to look for in the prompt; the empty string matches every request.
    pub when_contains: String,
    /// What matching requests get.
    pub fault: Fault,
    /// How many matching requests get it; `None` is forever.
    #[serde(default)]
    pub times: Option<usize>,
}

/// Counters since start or the last [`LlmSimulator::reset`].
///
/// A request is *served* when it completed successfully (the response was returned, or the
/// stream reached `[DONE]`), including stalled ones and [`Fault::Reply`]; it is *faulted* when
/// it was given any other fault. Malformed requests (400) and requests whose client went away
/// are neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Every `POST /v1/chat/completions`.
    pub requests_received: u64,
    /// Completed successfully.
    pub requests_served: u64,
    /// Answered with a failure fault.
    pub requests_faulted: u64,
    /// Chat requests whose response is still being produced or streamed. A request leaves when
    /// its response ends or its client goes away: a closed connection drops the response (the
    /// server notices even while the response waits for its next token), so this falls to 0
    /// once a client has dropped its requests, and stays above 0 while one holds them.
    pub in_flight: u64,
    /// Most chat requests in flight at once.
    pub peak_in_flight: u64,
    /// Received requests with `stream: true`.
    pub streamed: u64,
    /// Received requests asking for `json_schema` or `json_object` output.
    pub json_mode: u64,
    /// Prompt tokens in the `usage` of served answers that carried one (every completion; a
    /// stream when asked for `stream_options.include_usage`): what a client metering usage
    /// should have counted.
    #[serde(default)]
    pub prompt_tokens_reported: u64,
    /// Completion tokens, likewise.
    #[serde(default)]
    pub completion_tokens_reported: u64,
}

/// A chat completion request as received.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// The requested model.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The whole JSON body.
    pub body: serde_json::Value,
    /// All message contents joined with `"\n"`, for easy assertions.
    pub prompt_text: String,
    /// The bearer token from `Authorization`, if any, to check the client sends its key.
    pub authorization: Option<String>,
}

/// A running simulator. Dropping it shuts the server down.
pub struct LlmSimulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    server: Option<JoinHandle<()>>,
}

impl LlmSimulator {
    /// Starts a simulator on a free port of 127.0.0.1.
    pub async fn start(config: SimConfig) -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a simulator on `addr`, serving from a background task.
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> anyhow::Result<Self> {
        let listener = listen(addr).with_context(|| format!("binding the LLM simulator to {addr}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState::new(config));
        let router = server::router(Arc::clone(&state));
        let shutdown = state.shutdown.clone();
        let server = tokio::spawn(async move {
            // A provider's server sends each chunk of a stream as it is made; with Nagle's
            // algorithm a chunk would wait for the client's delayed ACK of the one before.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let served = axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await;
            if let Err(error) = served {
                tracing::error!(%error, "LLM simulator server failed");
            }
        });
        tracing::debug!(%addr, "LLM simulator started");
        Ok(Self { addr, state, server: Some(server) })
    }

    /// The OpenAI base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current configuration.
    pub fn config(&self) -> SimConfig {
        self.state.config()
    }

    /// Replaces the configuration; requests already running keep the one they started with.
    pub fn set_config(&self, config: SimConfig) {
        self.state.set_config(config);
    }

    /// Queues faults; each chat request not matched by a [`Rule`] takes the next one.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.push_faults(faults);
    }

    /// Adds a rule, checked after the rules added before it.
    pub fn add_rule(&self, rule: Rule) {
        self.state.add_rule(rule);
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        self.state.stats()
    }

    /// Chat requests received, oldest first (the latest 10 000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Clears the counters, recorded requests, queued faults and rules. Request indices, and
    /// so content, start over; the configuration is kept.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting requests, cuts running ones short and waits (up to 5 s) for open
    /// connections to close.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        if let Some(server) = self.server.take() {
            // Idle keep-alive connections close at once and running responses are aborted,
            // so this only times out if a client holds a connection without reading from it.
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

impl Drop for LlmSimulator {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

impl std::fmt::Debug for LlmSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSimulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Handshakes the kernel may hold completed before the simulator accepts them. A hosted
/// provider's front end does not drop a burst of new connections; with Tokio's default of 128 a
/// burst of a thousand streams overflowed the queue, and each dropped handshake added a second
/// (a SYN retransmission) to the very baseline the benchmarks divide by. The kernel caps the
/// request at `net.core.somaxconn`.
const ACCEPT_BACKLOG: u32 = 4096;

/// The simulator's listening socket on `address`, with room for a burst of connections.
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}
