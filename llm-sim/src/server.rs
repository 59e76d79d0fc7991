//! The HTTP side: the OpenAI-compatible endpoints and the `/sim` control API.
//!
//! Every response body that takes time, or that has to fail half-way, is written as a list of
//! [`Step`]s played back by a body stream. Dropping that stream (the client went away) or
//! finishing it releases the request's in-flight slot, and an `Err` from it makes hyper abort
//! the chunked response, which is how a dropped provider connection looks to a client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::content::{estimate_tokens, rng_for, split_even, text_tokens, value_for_schema};
use super::fault::{self, Fault, INVALID_JSON_REPLY, error_response};
use super::state::{InFlight, SimState};
use super::{Dialect, RecordedRequest, Rule, SimConfig};

/// The one model `GET /v1/models` lists; any model name is accepted on requests.
const MODEL_ID: &str = "sim-model";

pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/sim/stats", get(stats))
        .route("/sim/requests", get(requests))
        .route("/sim/reset", post(reset))
        .route("/sim/faults", post(push_faults))
        .route("/sim/rules", post(add_rule))
        .route("/sim/config", get(get_config).put(put_config))
        .fallback(not_found)
        .with_state(state)
}

/// The parts of an OpenAI chat completion request the simulator looks at; the rest is only
/// recorded.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default = "default_model")]
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<usize>,
}

fn default_model() -> String {
    MODEL_ID.to_owned()
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchemaFormat>,
    /// llama-cpp-python and Fireworks take a schema beside `json_object`.
    #[serde(default)]
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    #[serde(default)]
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

impl ChatRequest {
    /// Message contents joined with newlines; content given as parts contributes its text
    /// parts.
    fn prompt_text(&self) -> String {
        let mut texts = Vec::new();
        for message in &self.messages {
            match &message.content {
                Some(Value::String(text)) => texts.push(text.as_str()),
                Some(Value::Array(parts)) => {
                    texts.extend(parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)))
                }
                _ => {}
            }
        }
        texts.join("\n")
    }

    fn asks_for(&self, kind: &str) -> bool {
        self.response_format.as_ref().is_some_and(|format| format.kind == kind)
    }

    fn output(&self) -> Output {
        match &self.response_format {
            Some(format) if format.kind == "json_schema" => {
                match format.json_schema.as_ref().and_then(|f| f.schema.clone()) {
                    Some(schema) => Output::JsonSchema(schema),
                    None => Output::JsonObject,
                }
            }
            Some(format) if format.kind == "json_object" => match &format.schema {
                Some(schema) => Output::JsonSchema(schema.clone()),
                None => Output::JsonObject,
            },
            _ => Output::Text,
        }
    }
}

/// What kind of content a request asked for.
enum Output {
    Text,
    JsonSchema(Value),
    JsonObject,
}

impl Output {
    fn is_json(&self) -> bool {
        !matches!(self, Output::Text)
    }

    /// The reply tokens for request `index`. JSON is generated whole and then cut into
    /// `reply_tokens` pieces, so JSON replies take as long as free text.
    fn generate(&self, config: &SimConfig, index: u64) -> Vec<String> {
        let mut rng = rng_for(config.seed, index);
        match self {
            Output::Text => text_tokens(&mut rng, config.reply_tokens, true),
            Output::JsonSchema(schema) => {
                let value = value_for_schema(schema, &mut rng);
                split_even(&value.to_string(), config.reply_tokens)
            }
            Output::JsonObject => {
                let text = text_tokens(&mut rng, config.reply_tokens, true).concat();
                split_even(&json!({ "reply": text }).to_string(), config.reply_tokens)
            }
        }
    }
}

/// One completion about to be sent, with everything needed to render it either way.
struct Reply {
    id: String,
    created: i64,
    model: String,
    tokens: Vec<String>,
    prompt_tokens: u64,
    include_usage: bool,
    /// `length` when `max_tokens` cut the reply.
    finish_reason: &'static str,
    dialect: Dialect,
}

impl Reply {
    /// (prompt, completion) tokens as `usage` reports them.
    fn token_counts(&self) -> (u64, u64) {
        (self.prompt_tokens, self.tokens.len() as u64)
    }

    fn usage(&self) -> Value {
        let completion_tokens = self.tokens.len() as u64;
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": self.tokens.concat() },
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage(),
        })
    }

    /// A `chat.completion.chunk` event; `usage` is only set on the extra final chunk OpenAI
    /// sends for `stream_options.include_usage`.
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        sse(&chunk)
    }

    fn delta_chunk(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        let choice = json!({ "index": 0, "delta": delta, "finish_reason": finish_reason });
        self.chunk(json!([choice]), None)
    }

    /// The steps of a streamed answer, with `fault` worked in.
    fn stream_steps(&self, config: &SimConfig, fault: Option<&Fault>) -> Vec<Step> {
        let per_chunk = config.tokens_per_chunk.max(1);
        let mut chunks: Vec<String> = self.tokens.chunks(per_chunk).map(<[_]>::concat).collect();
        if chunks.is_empty() {
            chunks.push(String::new());
        }
        let chunk_delay = config.inter_token_delay.saturating_mul(saturating_u32(per_chunk));
        // Mid-stream faults strike after "a few" chunks, so the client has already started
        // consuming when things go wrong.
        let strike_after = (chunks.len() / 2).clamp(1, 3);

        let mut steps = vec![Step::Wait(config.time_to_first_token)];
        if self.dialect == Dialect::LlamaCppPython {
            // Its keep-alive comment, then a first chunk with only the role.
            steps.push(Step::Send(Bytes::from(format!(": ping - {}\n\n", chrono::Utc::now()))));
            steps.push(Step::Send(self.delta_chunk(json!({ "role": "assistant" }), None)));
        }
        for (i, text) in chunks.iter().enumerate() {
            if i > 0 {
                steps.push(Step::Wait(chunk_delay));
            }
            // Like OpenAI, only the first delta carries the role (llama-cpp-python sent it alone).
            let delta = if i == 0 && self.dialect == Dialect::OpenAi {
                json!({ "role": "assistant", "content": text })
            } else {
                json!({ "content": text })
            };
            steps.push(Step::Send(self.delta_chunk(delta, None)));
            if i + 1 == strike_after {
                match fault {
                    Some(Fault::DropConnection) => {
                        steps.push(Step::Abort);
                        return steps;
                    }
                    Some(Fault::MidStreamError) => {
                        steps.push(Step::Send(sse(&fault::mid_stream_error())));
                        return steps;
                    }
                    Some(Fault::MalformedChunk) => {
                        steps.push(Step::Send(Bytes::from_static(b"data: {not json\n\n")));
                    }
                    _ => {}
                }
            }
        }
        steps.push(Step::Send(self.delta_chunk(json!({}), Some(self.finish_reason))));
        let mut reported = None;
        // llama-cpp-python accepts `stream_options` but never sends the usage chunk.
        if self.include_usage && self.dialect == Dialect::OpenAi {
            steps.push(Step::Send(self.chunk(json!([]), Some(self.usage()))));
            reported = Some(self.token_counts());
        }
        if fault != Some(&Fault::EndWithoutDone) {
            steps.push(Step::Send(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        if !fault.is_some_and(Fault::is_failure) {
            steps.push(Step::Served { reported });
        }
        steps
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One step of a response body's playback.
enum Step {
    Wait(Duration),
    Send(Bytes),
    /// End the body with an error: hyper then closes the connection mid-response.
    Abort,
    /// The client has everything; count the request as served, with the (prompt, completion)
    /// tokens its `usage` reported, if it had one.
    Served {
        reported: Option<(u64, u64)>,
    },
}

/// A body that plays `steps` back, holding the request's in-flight slot until it ends or is
/// dropped.
fn scripted_body(state: Arc<SimState>, in_flight: InFlight, steps: Vec<Step>) -> Body {
    struct Playback {
        state: Arc<SimState>,
        steps: VecDeque<Step>,
        /// When the previous wait was due. Waits are chained from it rather than from "now",
        /// so timer granularity and slow consumers do not add up over a long reply.
        clock: Option<Instant>,
        _in_flight: InFlight,
    }

    let playback = Playback { state, steps: steps.into(), clock: None, _in_flight: in_flight };
    let stream = futures::stream::unfold(playback, |mut playback| async move {
        loop {
            let error = match playback.steps.pop_front()? {
                Step::Wait(duration) => {
                    let due = playback.clock.unwrap_or_else(Instant::now) + duration;
                    playback.clock = Some(due);
                    if playback.state.sleep_until(due).await {
                        continue;
                    }
                    "LLM simulator shutting down"
                }
                Step::Send(bytes) => return Some((Ok(bytes), playback)),
                Step::Abort => {
                    // Returning Pending once lets hyper flush what was sent so far; without
                    // it, a zero-latency script could abort before the headers leave.
                    tokio::task::yield_now().await;
                    "connection dropped (simulated)"
                }
                Step::Served { reported } => {
                    playback.state.count_served();
                    if let Some((prompt, completion)) = reported {
                        playback.state.count_reported_usage(prompt, completion);
                    }
                    continue;
                }
            };
            playback.steps.clear();
            return Some((Err(std::io::Error::other(error)), playback));
        }
    });
    Body::from_stream(stream)
}

fn with_content_type(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn shutting_down() -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, "LLM simulator shutting down")
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

async fn chat_completions(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let in_flight = InFlight::enter(&state);
    let (body, request) = match parse_chat_request(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            state.count_received(false, false);
            return bad_request(&message);
        }
    };
    let stream = request.stream.unwrap_or(false);
    let output = request.output();
    let index = state.count_received(stream, output.is_json());
    let prompt_text = request.prompt_text();
    let authorization = bearer_token(&headers);
    if authorization.is_none() {
        tracing::debug!(index, "chat request without a bearer token");
    }
    let config = state.config();
    let fault = state.next_fault(&prompt_text);
    tracing::debug!(index, stream, ?fault, "chat completion request");
    let prompt_tokens = estimate_tokens(&prompt_text);
    state.record(RecordedRequest { model: request.model.clone(), stream, body, prompt_text, authorization });

    if fault.as_ref().is_some_and(Fault::is_failure) {
        state.count_faulted();
    }
    if let Some(Fault::Stall(duration)) = &fault
        && !state.sleep(*duration).await
    {
        return shutting_down();
    }
    match &fault {
        Some(Fault::RateLimited { retry_after }) => return fault::rate_limited(*retry_after),
        Some(Fault::ServerError) => return fault::server_error(),
        _ => {}
    }
    if config.dialect == Dialect::LlamaCppPython && request.asks_for("json_schema") {
        return fault::llama_cpp_python_refuses_json_schema();
    }

    let mut tokens = match &fault {
        Some(Fault::Reply(content)) => split_even(content, config.reply_tokens),
        Some(Fault::InvalidJson) => split_even(INVALID_JSON_REPLY, config.reply_tokens),
        _ => output.generate(&config, index),
    };
    let cut = request.max_tokens.is_some_and(|max| tokens.len() > max);
    if let Some(max) = request.max_tokens {
        tokens.truncate(max);
    }
    let reply = Reply {
        id: format!("chatcmpl-sim-{index}"),
        created: chrono::Utc::now().timestamp(),
        model: request.model,
        tokens,
        prompt_tokens,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        finish_reason: if cut { "length" } else { "stop" },
        dialect: config.dialect,
    };
    if stream {
        let steps = reply.stream_steps(&config, fault.as_ref());
        let body = scripted_body(state, in_flight, steps);
        let mut response = with_content_type(StatusCode::OK, "text/event-stream", body);
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        complete(state, in_flight, &config, &reply, fault.as_ref()).await
    }
}

/// The raw body (for recording) and the fields the simulator needs, or why it is not a chat
/// completion request.
fn parse_chat_request(body: &[u8]) -> Result<(Value, ChatRequest), String> {
    let body: Value = parse_body(body, "a JSON body")?;
    let request = ChatRequest::deserialize(&body).map_err(|error| format!("not a chat completion request: {error}"))?;
    Ok((body, request))
}

/// A non-streamed answer, after the whole generation time.
async fn complete(
    state: Arc<SimState>,
    in_flight: InFlight,
    config: &SimConfig,
    reply: &Reply,
    fault: Option<&Fault>,
) -> Response {
    let latency =
        config.time_to_first_token + config.inter_token_delay.saturating_mul(saturating_u32(config.reply_tokens));
    if !state.sleep(latency).await {
        return shutting_down();
    }
    match fault {
        Some(Fault::DropConnection) => {
            let full = reply.completion().to_string();
            let half = Bytes::copy_from_slice(&full.as_bytes()[..full.len() / 2]);
            let body = scripted_body(state, in_flight, vec![Step::Send(half), Step::Abort]);
            with_content_type(StatusCode::OK, "application/json", body)
        }
        Some(Fault::MalformedChunk) => with_content_type(
            StatusCode::OK,
            "application/json",
            Body::from(format!("{{\"id\":\"{}\",\"choices\":[{{not json", reply.id)),
        ),
        Some(Fault::MidStreamError) => Json(fault::mid_stream_error()).into_response(),
        _ => {
            state.count_served();
            let (prompt, completion) = reply.token_counts();
            state.count_reported_usage(prompt, completion);
            Json(reply.completion()).into_response()
        }
    }
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": MODEL_ID, "object": "model", "owned_by": "fastnpc-sim" }],
    }))
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.stats()).into_response()
}

async fn requests(State(state): State<Arc<SimState>>) -> Response {
    Json(state.requests()).into_response()
}

async fn reset(State(state): State<Arc<SimState>>) -> StatusCode {
    state.reset();
    StatusCode::NO_CONTENT
}

/// Parses a control request body without insisting on a JSON content type, so a bare
/// `curl -d` works.
fn parse_body<T: DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("expected {expected}: {error}"))
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, message)
}

async fn push_faults(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_body::<Vec<Fault>>(&body, "a JSON array of faults") {
        Ok(faults) => {
            let queued = faults.len();
            state.push_faults(faults);
            Json(json!({ "queued": queued })).into_response()
        }
        Err(message) => bad_request(&message),
    }
}

async fn add_rule(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match parse_body::<Rule>(&body, "a rule") {
        Ok(rule) => {
            state.add_rule(rule);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => bad_request(&message),
    }
}

async fn get_config(State(state): State<Arc<SimState>>) -> Json<SimConfig> {
    Json(state.config())
}

/// Merges the given fields into the current configuration, so `{"seed": 3}` keeps the
/// timing the binary was started with.
async fn put_config(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let patch = match parse_body::<Map<String, Value>>(&body, "a JSON object") {
        Ok(patch) => patch,
        Err(message) => return bad_request(&message),
    };
    let mut fields = match serde_json::to_value(state.config()) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    fields.extend(patch);
    match serde_json::from_value::<SimConfig>(Value::Object(fields)) {
        Ok(config) => {
            state.set_config(config.clone());
            Json(config).into_response()
        }
        Err(error) => bad_request(&format!("invalid configuration: {error}")),
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such endpoint on the LLM simulator")
}
