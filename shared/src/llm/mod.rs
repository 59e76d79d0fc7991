//! The LLM boundary: a small trait the worker codes against, and its production adapter.
//!
//! The trait speaks in chat messages and returns plain text (or a text stream); JSON-with-schema
//! is a request option, and parsing stays with the caller, who knows what a valid answer is and
//! retries when it is not. Transport trouble (429, 5xx, timeouts, broken connections) is retried
//! *inside* the adapter with jittered backoff, so callers see either an answer or a final,
//! classified [`LlmError`] — never an error message dressed up as a reply (the original stored
//! "调用API时发生错误…" as the character's words).

use std::time::Duration;

use futures::{future::BoxFuture, stream::BoxStream};
use serde::Serialize;

mod openai;
mod pacing;
mod retry;

pub use openai::OpenAiClient;
pub use pacing::Pacer;
pub use retry::RetryPolicy;

/// One chat message.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// A chat completion request, independent of any provider's types.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Ask for JSON matching this schema (`response_format: json_schema`).
    pub json_schema: Option<JsonSchema>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// A short label for logs and metrics (e.g. `category:personality`); never the prompt.
    pub purpose: &'static str,
}

/// A named JSON Schema for structured output.
#[derive(Clone, Debug)]
pub struct JsonSchema {
    pub name: String,
    pub schema: serde_json::Value,
}

/// Why a call failed for good (after the adapter's own retries).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct LlmError {
    pub kind: LlmErrorKind,
    /// Safe to show users: status codes and provider messages, never prompts or keys.
    pub message: String,
}

/// The classes of failure callers act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmErrorKind {
    /// 429s outlasted the retries.
    RateLimited,
    /// 5xx, connection failures, broken streams.
    Unavailable,
    /// No answer within the per-call timeout.
    Timeout,
    /// The provider refused the request (400, 401, 402, 403, 404…): retrying will not help.
    Rejected,
    /// The provider answered 200 with something that is not a completion.
    Malformed,
}

impl LlmErrorKind {
    /// The stable error code jobs report.
    pub fn code(self) -> &'static str {
        match self {
            Self::RateLimited => "llm_rate_limited",
            Self::Unavailable => "llm_unavailable",
            Self::Timeout => "llm_timeout",
            Self::Rejected => "llm_rejected",
            Self::Malformed => "llm_malformed",
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_transient(self) -> bool {
        !matches!(self, Self::Rejected)
    }
}

impl std::fmt::Display for LlmErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl LlmError {
    pub fn new(kind: LlmErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

/// A live stream of text deltas.
pub type TextStream = BoxStream<'static, Result<String, LlmError>>;

/// What the worker needs from a language model. Object-safe, so the process holds one
/// `Arc<dyn LlmClient>` and tests can substitute their own.
pub trait LlmClient: Send + Sync {
    /// The whole reply at once.
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<String, LlmError>>;

    /// The reply as it is generated. Opening the stream is retried like `complete`; a stream
    /// that breaks later yields an `Err` item and ends (the caller decides how to resume).
    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>>;

    /// The model name, for logs and job results.
    fn model(&self) -> &str;
}

/// Per-call timeout and retry settings.
#[derive(Clone, Debug)]
pub struct CallLimits {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub max_concurrency: usize,
}
