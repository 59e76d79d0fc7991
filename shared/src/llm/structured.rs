//! Structured output that degrades gracefully.
//!
//! The strongest request is `response_format: {type: "json_schema", strict: true}`; many
//! OpenAI-compatible servers refuse it (llama-cpp-python's server accepts only `text` and
//! `json_object` — and says so with an HTTP **500** and a validation message, so the status alone
//! would read as an outage), and some providers ignore it. So each model walks down a ladder,
//! once per process:
//!
//! 1. [`StructuredOutput::JsonSchema`]: the schema as `json_schema`, strict.
//! 2. [`StructuredOutput::JsonObject`]: `json_object` (servers that take a `schema` beside it,
//!    like llama-cpp-python and Fireworks, constrain the output to it; the rest ignore it), and
//!    the schema described in the prompt.
//! 3. [`StructuredOutput::Prompt`]: no `response_format` at all, the schema in the prompt.
//!
//! A rejection that names the response format steps the model down one rung, is logged once at
//! `warn`, and the call is sent again at once; later calls start at the working rung. The
//! reply's JSON is read tolerantly ([`super::reply`]) on every rung, since a model may ignore
//! the format it was given. `FASTNPC_LLM_STRUCTURED_OUTPUT` pins a rung (no stepping).

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Mutex, PoisonError},
};

use serde_json::{Value, json};

use super::{JsonSchema, Message, Role};

/// How structured output is asked for: a rung of the ladder, or `Auto` to find the best one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StructuredOutput {
    #[default]
    Auto,
    JsonSchema,
    JsonObject,
    Prompt,
}

impl StructuredOutput {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::JsonSchema => "json_schema",
            Self::JsonObject => "json_object",
            Self::Prompt => "prompt",
        }
    }

    /// The rung below this one, if any.
    fn weaker(self) -> Option<Self> {
        match self {
            Self::Auto | Self::JsonSchema => Some(Self::JsonObject),
            Self::JsonObject => Some(Self::Prompt),
            Self::Prompt => None,
        }
    }
}

impl fmt::Display for StructuredOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StructuredOutput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "json_schema" => Ok(Self::JsonSchema),
            "json_object" => Ok(Self::JsonObject),
            "prompt" => Ok(Self::Prompt),
            other => Err(format!("expected auto, json_schema, json_object or prompt, got `{other}`")),
        }
    }
}

/// The rung each model is on, remembered for the process.
#[derive(Debug)]
pub struct Ladder {
    /// A pinned rung, or `Auto`.
    configured: StructuredOutput,
    rungs: Mutex<HashMap<String, StructuredOutput>>,
}

impl Ladder {
    pub fn new(configured: StructuredOutput) -> Self {
        Self { configured, rungs: Mutex::default() }
    }

    /// The rung to use for `model` now.
    pub fn rung(&self, model: &str) -> StructuredOutput {
        if self.configured != StructuredOutput::Auto {
            return self.configured;
        }
        let rungs = self.rungs.lock().unwrap_or_else(PoisonError::into_inner);
        rungs.get(model).copied().unwrap_or(StructuredOutput::JsonSchema)
    }

    /// Steps `model` down from `failed` after the server refused it. Returns the rung to try
    /// next, or `None` when the ladder is pinned or exhausted. Concurrent calls that failed on
    /// the same rung step once: only the first logs.
    pub fn step_down(&self, model: &str, failed: StructuredOutput, reason: &str) -> Option<StructuredOutput> {
        if self.configured != StructuredOutput::Auto {
            return None;
        }
        let mut rungs = self.rungs.lock().unwrap_or_else(PoisonError::into_inner);
        let current = rungs.get(model).copied().unwrap_or(StructuredOutput::JsonSchema);
        if current > failed {
            // Someone already stepped past the rung this call used.
            return Some(current);
        }
        let next = failed.weaker()?;
        rungs.insert(model.to_owned(), next);
        tracing::warn!(
            llm.model = model,
            from = %failed,
            to = %next,
            reason,
            "the LLM server refused this structured-output mode; using a weaker one from now on"
        );
        Some(next)
    }
}

/// Whether an error answer says the server does not take the requested `response_format`.
/// Decided on what the server says, not only on the status: llama-cpp-python answers a
/// `json_schema` request with HTTP 500 and a validation error at `response_format.type`.
pub fn refuses_response_format(status: u16, body: &str) -> bool {
    if !matches!(status, 400 | 404 | 415 | 422 | 500 | 501) {
        return false;
    }
    let body = body.to_ascii_lowercase();
    ["response_format", "json_schema", "json_object", "structured output", "structured_output", "guided_json"]
        .iter()
        .any(|needle| body.contains(needle))
}

/// The `response_format` value for `rung`, if it sends one.
pub fn response_format(rung: StructuredOutput, schema: &JsonSchema) -> Option<Value> {
    match rung {
        StructuredOutput::Auto | StructuredOutput::JsonSchema => Some(json!({
            "type": "json_schema",
            "json_schema": {"name": schema.name, "strict": true, "schema": schema.schema},
        })),
        StructuredOutput::JsonObject => Some(json!({"type": "json_object", "schema": schema.schema})),
        StructuredOutput::Prompt => None,
    }
}

/// The messages for `rung`: below `json_schema` the last user message also says what JSON to
/// write (models follow instructions in the user turn more reliably than in a late system
/// message, and some chat templates have no system role at all).
pub fn messages(rung: StructuredOutput, schema: &JsonSchema, messages: &[Message]) -> Vec<Message> {
    let mut messages = messages.to_vec();
    if matches!(rung, StructuredOutput::JsonObject | StructuredOutput::Prompt) {
        let instruction = format!(
            "\n\nReply with one JSON object and nothing else (no prose, no Markdown), matching this JSON Schema:\n{}",
            schema.schema
        );
        match messages.iter_mut().rev().find(|m| m.role == Role::User) {
            Some(user) => user.content.push_str(&instruction),
            None => messages.push(Message::user(instruction.trim_start())),
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> JsonSchema {
        JsonSchema { name: "x".into(), schema: json!({"type": "object", "properties": {"a": {"type": "string"}}}) }
    }

    #[test]
    fn rejections_are_recognised_by_what_the_server_says() {
        // Recorded from llama-cpp-python 0.3.36 (scripts/llm-server), verbatim.
        let llama_cpp_python = r#"{"error":{"message":"1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"/var/cache/fastnpc/llm-venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST /v1/chat/completions","type":"internal_server_error","param":null,"code":null}}"#;
        assert!(refuses_response_format(500, llama_cpp_python));
        let openai = r#"{"error":{"message":"Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.","type":"invalid_request_error","param":"response_format"}}"#;
        assert!(refuses_response_format(400, openai));
        let vllm = r#"{"object":"error","message":"guided_json is not supported by this backend","code":400}"#;
        assert!(refuses_response_format(400, vllm));
        assert!(!refuses_response_format(500, r#"{"error":{"message":"CUDA out of memory"}}"#));
        assert!(!refuses_response_format(429, r#"{"error":{"message":"response_format rate limit"}}"#));
        assert!(!refuses_response_format(502, "json_schema upstream"));
    }

    #[test]
    fn the_ladder_steps_once_per_rung_and_remembers_per_model() {
        let ladder = Ladder::new(StructuredOutput::Auto);
        assert_eq!(ladder.rung("small"), StructuredOutput::JsonSchema);
        assert_eq!(ladder.step_down("small", StructuredOutput::JsonSchema, "r"), Some(StructuredOutput::JsonObject));
        // A concurrent call that also failed on json_schema does not step twice.
        assert_eq!(ladder.step_down("small", StructuredOutput::JsonSchema, "r"), Some(StructuredOutput::JsonObject));
        assert_eq!(ladder.rung("small"), StructuredOutput::JsonObject);
        assert_eq!(ladder.rung("big"), StructuredOutput::JsonSchema);
        assert_eq!(ladder.step_down("small", StructuredOutput::JsonObject, "r"), Some(StructuredOutput::Prompt));
        assert_eq!(ladder.step_down("small", StructuredOutput::Prompt, "r"), None);
    }

    #[test]
    fn a_pinned_rung_never_moves() {
        let ladder = Ladder::new(StructuredOutput::Prompt);
        assert_eq!(ladder.rung("m"), StructuredOutput::Prompt);
        assert_eq!(ladder.step_down("m", StructuredOutput::Prompt, "r"), None);
        let ladder = Ladder::new(StructuredOutput::JsonSchema);
        assert_eq!(ladder.step_down("m", StructuredOutput::JsonSchema, "r"), None);
    }

    #[test]
    fn weaker_rungs_put_the_schema_in_the_prompt() {
        let asked = [Message::system("sys"), Message::user("write it")];
        assert_eq!(messages(StructuredOutput::JsonSchema, &schema(), &asked)[1].content, "write it");
        for rung in [StructuredOutput::JsonObject, StructuredOutput::Prompt] {
            let sent = messages(rung, &schema(), &asked);
            assert!(sent[1].content.starts_with("write it\n\nReply with one JSON object"));
            assert!(sent[1].content.contains(r#""properties""#));
            assert_eq!(sent[0].content, "sys");
        }
        assert!(response_format(StructuredOutput::Prompt, &schema()).is_none());
        assert_eq!(response_format(StructuredOutput::JsonObject, &schema()).unwrap()["type"], "json_object");
    }
}
