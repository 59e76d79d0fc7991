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

mod metered;
mod monitored;
mod openai;
mod pacing;
pub mod reply;
mod retry;
mod sse;
pub mod structured;
mod usage;

pub use metered::MeteredLlm;
pub use monitored::MonitoredLlm;
pub use openai::OpenAiClient;
pub use pacing::Pacer;
pub use retry::RetryPolicy;
pub use structured::StructuredOutput;
pub use usage::{Usage, UsageMeter};

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
    /// Ask for JSON matching this schema: `response_format: json_schema` where the server
    /// takes it, a weaker rung of the [`structured`] ladder where it does not.
    pub json_schema: Option<JsonSchema>,
    /// Overrides the purpose's configured output budget.
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// What the call is for: picks the model and the output budget, and labels logs (never the
    /// prompt itself).
    pub purpose: Purpose,
}

/// What an LLM call is for. Each purpose has its own output budget, and belongs to a
/// [`ModelRole`] that can be given its own model (small models for the moderator and memory are
/// a common cost saver).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// One profile category of a character being generated.
    #[default]
    ProfileCategory,
    /// The character's brief.
    Brief,
    /// A character's reply in a one-to-one chat.
    ChatReply,
    /// A character's reply in a group.
    GroupReply,
    /// The group moderator's choice of the next speaker.
    Moderator,
    /// Session → short-term memory.
    MemoryShortTerm,
    /// Short-term → long-term memory.
    MemoryLongTerm,
    /// Scoring a generated character (`fastnpc eval`).
    Judge,
}

impl Purpose {
    pub const ALL: [Purpose; 8] = [
        Self::ProfileCategory,
        Self::Brief,
        Self::ChatReply,
        Self::GroupReply,
        Self::Moderator,
        Self::MemoryShortTerm,
        Self::MemoryLongTerm,
        Self::Judge,
    ];

    /// The label in logs, metrics and usage records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProfileCategory => "profile_category",
            Self::Brief => "brief",
            Self::ChatReply => "chat_reply",
            Self::GroupReply => "group_reply",
            Self::Moderator => "moderator",
            Self::MemoryShortTerm => "memory_short_term",
            Self::MemoryLongTerm => "memory_long_term",
            Self::Judge => "judge",
        }
    }

    pub fn role(self) -> ModelRole {
        match self {
            Self::ProfileCategory | Self::Brief | Self::Judge => ModelRole::Profile,
            Self::ChatReply | Self::GroupReply => ModelRole::Chat,
            Self::Moderator => ModelRole::Moderator,
            Self::MemoryShortTerm | Self::MemoryLongTerm => ModelRole::Memory,
        }
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The groups of purposes an operator can point at different models
/// (`FASTNPC_LLM_MODEL_PROFILE`, `_CHAT`, `_MEMORY`, `_MODERATOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelRole {
    Profile,
    Chat,
    Memory,
    Moderator,
}

/// Why the model stopped writing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinishReason {
    /// It finished on its own.
    #[default]
    Stop,
    /// It hit `max_tokens`: the text is cut.
    Length,
    /// Anything else the provider reported (`content_filter`, `tool_calls`, …).
    Other,
}

impl FinishReason {
    fn from_wire(reason: &str) -> Self {
        match reason {
            "stop" | "eos" | "end_turn" => Self::Stop,
            "length" | "max_tokens" => Self::Length,
            _ => Self::Other,
        }
    }

    pub fn is_cut(self) -> bool {
        self == Self::Length
    }
}

/// A whole reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub finish: FinishReason,
    /// This call's tokens (one call; counted locally when the server reports none).
    pub usage: Usage,
}

/// What a reply stream yields: text as it is generated, then one `Finished`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Text(String),
    Finished { finish: FinishReason, usage: Usage },
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

/// A live reply: [`StreamEvent::Text`] deltas, then [`StreamEvent::Finished`] (or an `Err` item
/// when the stream breaks, after which it ends).
pub type TextStream = BoxStream<'static, Result<StreamEvent, LlmError>>;

/// What the worker needs from a language model. Object-safe, so the process holds one
/// `Arc<dyn LlmClient>` and tests can substitute their own.
pub trait LlmClient: Send + Sync {
    /// The whole reply at once.
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<Completion, LlmError>>;

    /// The reply as it is generated. Opening the stream is retried like `complete`; a stream
    /// that breaks later yields an `Err` item and ends (the caller decides how to resume).
    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>>;

    /// The model that serves `purpose`, for logs and records.
    fn model_for(&self, purpose: Purpose) -> &str;
}

/// Asks for a structured reply until `accept` takes one, at most `attempts` times. A refused
/// reply goes back to the model with the reason (its own words and what was wrong with them),
/// which fixes most slips in one more turn; a reply cut at `max_tokens` says so. Returns the
/// accepted value, or the last reason when every reply was refused (the caller decides what
/// that means: a failed job, a moderator that waits, a judge without scores).
pub async fn ask_structured<T>(
    llm: &dyn LlmClient,
    mut request: ChatRequest,
    attempts: u32,
    accept: impl Fn(&str) -> Result<T, String>,
) -> Result<Result<T, String>, LlmError> {
    let mut reason = String::new();
    for attempt in 1..=attempts {
        let completion = llm.complete(request.clone()).await?;
        match accept(&completion.text) {
            Ok(value) => return Ok(Ok(value)),
            Err(error) => {
                reason = if completion.finish.is_cut() {
                    format!("{error} (the reply was cut off at the output limit)")
                } else {
                    error
                };
                tracing::warn!(purpose = %request.purpose, attempt, %reason, "structured reply refused, asking again");
                request.messages.push(Message::assistant(completion.text));
                request.messages.push(Message::user(format!(
                    "That reply cannot be used: {reason}. Answer again with only the corrected JSON object, \
                     complete, with every required field."
                )));
            }
        }
    }
    Ok(Err(reason))
}

/// Per-call timeout and retry settings.
#[derive(Clone, Debug)]
pub struct CallLimits {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub max_concurrency: usize,
}
