//! The failure modes the simulator can inject, and the error bodies it answers them with.
//!
//! Error bodies follow OpenRouter rather than OpenAI: `{"error":{"code":429,"message":"..."}}`
//! with a *numeric* `code`. OpenAI uses a string `code`, so a client that only copes with one
//! of the two shapes is exactly the kind of bug these faults exist to catch.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Content of the [`Fault::InvalidJson`] reply: chatty preamble plus a truncated object, the
/// way real models break JSON mode.
pub(crate) const INVALID_JSON_REPLY: &str = "Sure! {broken";

/// Error object sent by [`Fault::MidStreamError`], on a response that already said 200.
pub(crate) const MID_STREAM_ERROR_CODE: u16 = 502;

/// One scripted misbehaviour, applied to a single chat completion request.
///
/// Faults are queued with [`LlmSimulator::push_faults`](super::LlmSimulator::push_faults) or
/// attached to prompts with [`Rule`](super::Rule)s. Over HTTP (`POST /sim/faults`) they are
/// written as `{"kind": "<snake_case variant>", ...}`, with durations in milliseconds:
/// `{"kind":"rate_limited","retry_after_ms":1000}`, `{"kind":"stall","duration_ms":5000}`,
/// `{"kind":"reply","content":"..."}`, `{"kind":"server_error"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FaultWire", into = "FaultWire")]
pub enum Fault {
    /// 429 with `Retry-After: <whole seconds, rounded up>` and an OpenRouter-shaped body.
    RateLimited {
        /// How long the client is told to back off.
        retry_after: Duration,
    },
    /// 500 with an OpenRouter-shaped body.
    ServerError,
    /// Sleep this long before anything else, then answer normally; meant to trip client
    /// timeouts.
    Stall(Duration),
    /// Streaming: a few chunks, then the connection is aborted without `[DONE]`.
    /// Non-streaming: headers and half a body, then the connection is aborted.
    DropConnection,
    /// Streaming: one `data: {not json` event mid-stream, then the stream carries on normally.
    /// Non-streaming: a 200 whose body is not JSON.
    MalformedChunk,
    /// Streaming: a few chunks, then an OpenRouter-style error event
    /// (`{"error":{"code":502,...}}`) and the end of the stream, without `[DONE]`.
    /// Non-streaming: the same error object as the body of a 200.
    MidStreamError,
    /// The reply content is not valid JSON (`Sure! {broken`), whatever the response format
    /// asked for.
    InvalidJson,
    /// Answer with exactly this content, streamed or not, with the usual timing.
    Reply(String),
    /// Streaming: a complete reply, finish reason included, but the body ends without
    /// `data: [DONE]` (seen from servers whose stream was cut short after the last chunk).
    EndWithoutDone,
}

impl Fault {
    /// Whether the request ends up failing from the client's point of view; such requests
    /// count as faulted rather than served. A stall that ends in a normal answer and a
    /// scripted reply are successes.
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, Fault::Stall(_) | Fault::Reply(_) | Fault::EndWithoutDone)
    }
}

/// Serde shape of [`Fault`]: internally tagged, so a JSON array of faults is easy to write by
/// hand with curl.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FaultWire {
    RateLimited { retry_after_ms: u64 },
    ServerError,
    Stall { duration_ms: u64 },
    DropConnection,
    MalformedChunk,
    MidStreamError,
    InvalidJson,
    Reply { content: String },
    EndWithoutDone,
}

impl From<FaultWire> for Fault {
    fn from(wire: FaultWire) -> Self {
        match wire {
            FaultWire::RateLimited { retry_after_ms } => {
                Fault::RateLimited { retry_after: Duration::from_millis(retry_after_ms) }
            }
            FaultWire::ServerError => Fault::ServerError,
            FaultWire::Stall { duration_ms } => Fault::Stall(Duration::from_millis(duration_ms)),
            FaultWire::DropConnection => Fault::DropConnection,
            FaultWire::MalformedChunk => Fault::MalformedChunk,
            FaultWire::MidStreamError => Fault::MidStreamError,
            FaultWire::InvalidJson => Fault::InvalidJson,
            FaultWire::Reply { content } => Fault::Reply(content),
            FaultWire::EndWithoutDone => Fault::EndWithoutDone,
        }
    }
}

impl From<Fault> for FaultWire {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::RateLimited { retry_after } => FaultWire::RateLimited { retry_after_ms: millis(retry_after) },
            Fault::ServerError => FaultWire::ServerError,
            Fault::Stall(duration) => FaultWire::Stall { duration_ms: millis(duration) },
            Fault::DropConnection => FaultWire::DropConnection,
            Fault::MalformedChunk => FaultWire::MalformedChunk,
            Fault::MidStreamError => FaultWire::MidStreamError,
            Fault::InvalidJson => FaultWire::InvalidJson,
            Fault::Reply(content) => FaultWire::Reply { content },
            Fault::EndWithoutDone => FaultWire::EndWithoutDone,
        }
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The OpenRouter error object: `{"error":{"code":<number>,"message":"..."}}`.
pub(crate) fn error_body(code: u16, message: &str) -> Value {
    json!({ "error": { "code": code, "message": message } })
}

/// A JSON error response whose body code matches its status.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(error_body(status.as_u16(), message))).into_response()
}

/// What llama-cpp-python's server answers a `json_schema` response format: its request model
/// allows only `text` and `json_object`, and the validation error comes back as an HTTP 500.
pub(crate) fn llama_cpp_python_refuses_json_schema() -> Response {
    // The body llama-cpp-python 0.3.36 sends, but for the file path in its traceback line.
    let message = "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), \
                   'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', \
                   'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"llama_cpp/server/app.py\", \
                   line 376, in create_chat_completion\n    POST /v1/chat/completions";
    let body = json!({"error": {"message": message, "type": "internal_server_error", "param": null, "code": null}});
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

pub(crate) fn rate_limited(retry_after: Duration) -> Response {
    // Retry-After only has whole seconds; rounding up keeps a client that honours it from
    // coming back early.
    let secs = retry_after.as_millis().div_ceil(1000);
    let mut response = error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "Rate limit exceeded (simulated). Please retry after the indicated delay.",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_str(&secs.to_string()).expect("digits are a valid header value"),
    );
    response
}

pub(crate) fn server_error() -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error (simulated)")
}

pub(crate) fn mid_stream_error() -> Value {
    error_body(MID_STREAM_ERROR_CODE, "provider error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip_through_their_wire_form() {
        let faults = vec![
            Fault::RateLimited { retry_after: Duration::from_millis(1500) },
            Fault::ServerError,
            Fault::Stall(Duration::from_millis(20)),
            Fault::DropConnection,
            Fault::MalformedChunk,
            Fault::MidStreamError,
            Fault::InvalidJson,
            Fault::Reply("你好\nworld".into()),
        ];
        let json = serde_json::to_value(&faults).unwrap();
        assert_eq!(json[0], json!({"kind": "rate_limited", "retry_after_ms": 1500}));
        assert_eq!(json[2], json!({"kind": "stall", "duration_ms": 20}));
        let back: Vec<Fault> = serde_json::from_value(json).unwrap();
        assert_eq!(back, faults);
    }
}
