//! The production [`LlmClient`]: async-openai against any OpenAI-compatible endpoint
//! (OpenRouter by default; also OpenAI, vLLM, Ollama, llama.cpp's server, the simulator).
//!
//! Two deliberate departures from async-openai's defaults:
//!
//! - **Our own wire types** (the `byot` feature). "Compatible" servers differ in small ways
//!   (`finish_reason: ""`, extra or missing fields, an `error` object inside a 200 stream) that
//!   the crate's strict types turn into opaque deserialisation errors. Ours are lenient where
//!   leniency is harmless and explicit about errors.
//! - **Our own HTTP service and retries.** async-openai parses error bodies into a type whose
//!   `code` is a string; OpenRouter sends numbers, so its 429s surface as "failed to
//!   deserialize" and the crate's retry layer gives up on them. Our tower service turns every
//!   non-2xx answer into an error carrying the status and `Retry-After`, and we classify by
//!   status, never by body.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_openai::{Client, config::OpenAIConfig, error::OpenAIError, middleware::HttpRequestFactory};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    CallLimits, ChatRequest, Completion, FinishReason, LlmClient, LlmError, LlmErrorKind, Message, Purpose,
    RetryPolicy, StreamEvent, TextStream, Usage,
    structured::{self, Ladder, StructuredOutput},
};
use crate::settings::LlmSettings;

/// One client per process: it owns the HTTP connection pool, the process-wide bound on LLM
/// calls in flight, and what it learnt about the server (the structured-output rung of each
/// model; whether streams may ask for usage).
pub struct OpenAiClient {
    client: Client<OpenAIConfig>,
    settings: LlmSettings,
    limits: CallLimits,
    permits: Arc<Semaphore>,
    pacer: Option<super::Pacer>,
    ladder: Ladder,
    /// Cleared for good when the server refuses `stream_options`.
    stream_usage: AtomicBool,
}

impl OpenAiClient {
    pub fn new(settings: &LlmSettings) -> Self {
        let api_key = settings.api_key.as_ref().map(|k| k.expose().to_owned()).unwrap_or_default();
        let config = OpenAIConfig::new().with_api_base(settings.base_url.as_str()).with_api_key(api_key);
        // OpenRouter's attribution headers; other providers ignore them.
        let config = config.clone().with_header("X-Title", "FastNPC").unwrap_or(config);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds with static settings");
        let client = Client::with_config(config).with_http_service(StatusCheckingService { http });
        Self {
            client,
            settings: settings.clone(),
            limits: CallLimits {
                timeout: settings.timeout,
                retry: RetryPolicy::new(settings.max_retries),
                max_concurrency: settings.max_concurrency,
            },
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            pacer: super::Pacer::per_second(settings.rate_per_sec),
            ladder: Ladder::new(settings.structured_output),
            stream_usage: AtomicBool::new(true),
        }
    }

    /// The structured-output rung `request` goes out on now (`None`: it wants free text).
    fn rung(&self, request: &ChatRequest) -> Option<StructuredOutput> {
        request.json_schema.as_ref().map(|_| self.ladder.rung(self.model_for(request.purpose)))
    }

    fn body(&self, request: &ChatRequest, rung: Option<StructuredOutput>, stream: bool) -> Value {
        let schema = request.json_schema.as_ref();
        let messages = match (rung, schema) {
            (Some(rung), Some(schema)) => structured::messages(rung, schema, &request.messages),
            _ => request.messages.clone(),
        };
        let wire = WireRequest {
            model: self.model_for(request.purpose),
            messages: &messages,
            stream,
            stream_options: (stream && self.stream_usage.load(Ordering::Relaxed))
                .then_some(StreamOptions { include_usage: true }),
            response_format: rung.zip(schema).and_then(|(rung, schema)| structured::response_format(rung, schema)),
            max_tokens: request.max_tokens.unwrap_or_else(|| self.settings.max_tokens.for_purpose(request.purpose)),
            temperature: request.temperature,
        };
        serde_json::to_value(wire).expect("requests serialise")
    }

    /// Sends `request` until an attempt succeeds, fails for good, or the retries run out. Each
    /// attempt holds one concurrency permit and gets `attempt(client, body, permit, timeout)`.
    /// A refusal of the structured-output mode (or of `stream_options`) is not a failure of the
    /// call: the request is rebuilt one rung down and sent again at once, without using a retry.
    async fn with_retries<T>(
        &self,
        request: &ChatRequest,
        stream: bool,
        attempt: fn(Attempt) -> BoxFuture<'static, Result<T, Failure>>,
    ) -> Result<T, LlmError> {
        let model = self.model_for(request.purpose);
        let mut retry = 0;
        loop {
            if let Some(pacer) = &self.pacer {
                pacer.wait().await;
            }
            let permit = self.permits.clone().acquire_owned().await.expect("semaphore never closes");
            // Built once the call may go: a call that waited for its permit goes out on the rung
            // the calls before it found, instead of paying the refused round-trip again.
            let rung = self.rung(request);
            let body = self.body(request, rung, stream);
            let failure = match attempt(Attempt {
                client: self.client.clone(),
                body,
                permit,
                timeout: self.limits.timeout,
            })
            .await
            {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if let Some(refused) = &failure.refusal {
                if let Some(rung) = rung.filter(|_| structured::refuses_response_format(refused.status, &refused.body))
                    && self.ladder.step_down(model, rung, &failure.error.message).is_some()
                {
                    continue;
                }
                if stream
                    && refuses_stream_options(refused.status, &refused.body)
                    && self.stream_usage.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!(
                        llm.model = model,
                        "the LLM server refuses stream_options; counting stream tokens locally"
                    );
                    continue;
                }
            }
            if !failure.error.kind.is_transient() || retry >= self.limits.retry.max_retries {
                tracing::warn!(llm.purpose = %request.purpose, retries = retry, error = %failure.error, "LLM call failed");
                return Err(failure.error);
            }
            let delay = self.limits.retry.delay(retry, failure.retry_after);
            tracing::info!(
                llm.purpose = %request.purpose,
                retry,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error,
                "LLM call failed, retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

fn refuses_stream_options(status: u16, body: &str) -> bool {
    matches!(status, 400 | 422 | 500) && body.contains("stream_options")
}

/// What one attempt gets: its own client handle, the request body, its concurrency permit
/// (held until the reply, or the stream, is done) and its timeout.
struct Attempt {
    client: Client<OpenAIConfig>,
    body: Value,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
}

impl LlmClient for OpenAiClient {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<Completion, LlmError>> {
        async move {
            let (text, finish, usage) = self
                .with_retries(&request, false, |Attempt { client, body, permit, timeout }| {
                    async move {
                        let chat = client.chat();
                        let call = chat.create_byot::<_, WireResponse>(body);
                        let response = tokio::time::timeout(timeout, call)
                            .await
                            .map_err(|_| Failure::timeout(timeout))?
                            .map_err(Failure::from)?;
                        drop(permit);
                        response.into_reply()
                    }
                    .boxed()
                })
                .await?;
            let usage = match usage {
                Some(usage) => usage,
                None => Usage::counted(&request.messages, &text).await,
            };
            if finish.is_cut() {
                tracing::info!(llm.purpose = %request.purpose, "the completion was cut at max_tokens");
            }
            Ok(Completion { text, finish, usage })
        }
        .boxed()
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>> {
        async move {
            let (chunks, permit) = self
                .with_retries(&request, true, |Attempt { client, body, permit, timeout }| {
                    async move {
                        let chat = client.chat();
                        let open = chat.create_stream_byot::<_, WireResponse>(body);
                        let chunks = tokio::time::timeout(timeout, open)
                            .await
                            .map_err(|_| Failure::timeout(timeout))?
                            .map_err(Failure::from)?;
                        Ok((chunks, permit))
                    }
                    .boxed()
                })
                .await?;
            Ok(text_stream(chunks, self.limits.timeout, permit, request.messages))
        }
        .boxed()
    }

    fn model_for(&self, purpose: Purpose) -> &str {
        self.settings.model_for(purpose.role())
    }
}

/// How long a stream may take after its finish reason to deliver the usage chunk and close.
const STREAM_TAIL: Duration = Duration::from_secs(1);

/// A reply stream being read: the provider's chunks and what was seen of them.
struct StreamState<S> {
    chunks: S,
    /// Held until the stream ends or is dropped; `None` once it has ended.
    permit: Option<OwnedSemaphorePermit>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The text so far, to count tokens when the server reports no usage.
    text: String,
    prompt: Vec<Message>,
}

/// Turns provider chunks into [`StreamEvent`]s. Copes with what real servers send: a first
/// chunk with only the role, chunks with no choices, usage in a final chunk after the finish
/// reason (or none at all: then the tokens are counted here), keep-alive comments, and no
/// `[DONE]`. Ends with an error when the provider reports one, goes silent for longer than
/// `idle_timeout`, or closes before a finish reason (a dropped connection looks like a clean
/// end to an SSE parser).
fn text_stream<S>(chunks: S, idle_timeout: Duration, permit: OwnedSemaphorePermit, prompt: Vec<Message>) -> TextStream
where
    S: futures::Stream<Item = Result<WireResponse, OpenAIError>> + Send + Unpin + 'static,
{
    let state = StreamState { chunks, permit: Some(permit), finish: None, usage: None, text: String::new(), prompt };
    futures::stream::unfold(state, move |mut state| async move {
        state.permit.as_ref()?;
        loop {
            let wait = if state.finish.is_some() { STREAM_TAIL.min(idle_timeout) } else { idle_timeout };
            let next = match (tokio::time::timeout(wait, state.chunks.next()).await, state.finish) {
                (Err(_), None) => {
                    let error = LlmError::new(LlmErrorKind::Timeout, format!("no tokens for {idle_timeout:?}"));
                    state.permit = None;
                    return Some((Err(error), state));
                }
                // After the finish reason, silence, an error or the end all just end the reply.
                (Err(_) | Ok(None) | Ok(Some(Err(_))), Some(finish)) => {
                    state.permit = None;
                    let usage = match state.usage {
                        Some(usage) => usage,
                        None => Usage::counted(&state.prompt, &state.text).await,
                    };
                    return Some((Ok(StreamEvent::Finished { finish, usage }), state));
                }
                (Ok(next), None) => next,
                (Ok(Some(Ok(chunk))), Some(_)) => Some(Ok(chunk)),
            };
            match next {
                None => {
                    let error = LlmError::new(LlmErrorKind::Unavailable, "the stream ended before the reply finished");
                    state.permit = None;
                    return Some((Err(error), state));
                }
                Some(Err(error)) => {
                    state.permit = None;
                    return Some((Err(Failure::from(error).error), state));
                }
                Some(Ok(chunk)) => {
                    if let Some(error) = chunk.error {
                        state.permit = None;
                        return Some((Err(error.into_llm_error()), state));
                    }
                    if let Some(usage) = chunk.usage {
                        state.usage = Some(usage.into());
                    }
                    let mut text = String::new();
                    for choice in chunk.choices {
                        if let Some(content) = choice.delta.and_then(|d| d.content) {
                            text.push_str(&content);
                        }
                        if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                            state.finish = Some(FinishReason::from_wire(&reason));
                        }
                    }
                    if !text.is_empty() {
                        state.text.push_str(&text);
                        return Some((Ok(StreamEvent::Text(text)), state));
                    }
                }
            }
        }
    })
    .boxed()
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A completion or a stream chunk, leniently: everything optional, unknown fields ignored.
#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    /// OpenRouter reports some failures as an `error` object in a 200 body or stream.
    error: Option<WireError>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: Option<WireContent>,
    delta: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage::call(usage.prompt_tokens, usage.completion_tokens)
    }
}

#[derive(Deserialize)]
struct WireError {
    message: Option<String>,
    /// A number on OpenRouter, a string on OpenAI.
    code: Option<Value>,
}

impl WireError {
    fn into_llm_error(self) -> LlmError {
        let status = self.code.as_ref().and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
        let kind = status.and_then(|s| StatusCode::from_u16(s).ok()).map_or(LlmErrorKind::Unavailable, classify_status);
        LlmError::new(kind, format!("provider error: {}", self.message.unwrap_or_default()))
    }
}

impl WireResponse {
    fn into_reply(self) -> Result<(String, FinishReason, Option<Usage>), Failure> {
        if let Some(error) = self.error {
            return Err(Failure::new(error.into_llm_error()));
        }
        let usage = self.usage.map(Usage::from);
        let Some(choice) = self.choices.into_iter().next() else {
            return Err(Failure::new(LlmError::new(LlmErrorKind::Malformed, "the completion has no choices")));
        };
        let finish = choice.finish_reason.as_deref().map_or(FinishReason::Stop, FinishReason::from_wire);
        let text = choice.message.and_then(|message| message.content).unwrap_or_default();
        if text.is_empty() {
            return Err(Failure::new(LlmError::new(LlmErrorKind::Malformed, "the completion has no content")));
        }
        Ok((text, finish, usage))
    }
}

/// One failed attempt: the error, the provider's requested wait, and for error answers what the
/// server said (to recognise a refused request option).
struct Failure {
    error: LlmError,
    retry_after: Option<Duration>,
    refusal: Option<Refusal>,
}

/// An error answer's status and the start of its body.
struct Refusal {
    status: u16,
    body: String,
}

impl Failure {
    fn new(error: LlmError) -> Self {
        Self { error, retry_after: None, refusal: None }
    }

    fn timeout(after: Duration) -> Self {
        Self::new(LlmError::new(LlmErrorKind::Timeout, format!("no answer within {after:?}")))
    }
}

impl From<OpenAIError> for Failure {
    fn from(error: OpenAIError) -> Self {
        let mut refusal = None;
        let (kind, message, retry_after) = match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
                Ok(status) => {
                    refusal = Some(Refusal { status: status.status.as_u16(), body: status.body.clone() });
                    (classify_status(status.status), status.to_string(), status.retry_after)
                }
                Err(other) => match other.downcast::<reqwest::Error>() {
                    Ok(http) => (classify_transport(&http), format!("transport: {http}"), None),
                    Err(other) => (LlmErrorKind::Unavailable, other.to_string(), None),
                },
            },
            OpenAIError::Reqwest(http) => (classify_transport(&http), format!("transport: {http}"), None),
            OpenAIError::ApiError(api) => (classify_status(api.status_code), api.to_string(), None),
            OpenAIError::JSONDeserialize(error, _) => {
                (LlmErrorKind::Malformed, format!("unreadable completion: {error}"), None)
            }
            OpenAIError::StreamError(error) => (LlmErrorKind::Unavailable, format!("stream: {error}"), None),
            OpenAIError::InvalidArgument(message) => (LlmErrorKind::Rejected, message, None),
            other => (LlmErrorKind::Unavailable, other.to_string(), None),
        };
        Self { error: LlmError::new(kind, message), retry_after, refusal }
    }
}

fn classify_status(status: StatusCode) -> LlmErrorKind {
    match status {
        StatusCode::TOO_MANY_REQUESTS => LlmErrorKind::RateLimited,
        StatusCode::REQUEST_TIMEOUT => LlmErrorKind::Timeout,
        status if status.is_server_error() => LlmErrorKind::Unavailable,
        _ => LlmErrorKind::Rejected,
    }
}

fn classify_transport(error: &reqwest::Error) -> LlmErrorKind {
    if error.is_timeout() { LlmErrorKind::Timeout } else { LlmErrorKind::Unavailable }
}

/// A non-2xx answer, with what we need to decide on a retry.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: {message}")]
struct HttpStatusError {
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
    /// The start of the body, whatever its shape: refusals of a request option are recognised
    /// in it (see [`structured::refuses_response_format`]).
    body: String,
}

/// The HTTP layer under async-openai: plain reqwest, except that a non-2xx answer becomes an
/// [`HttpStatusError`] before anyone tries to parse its body.
#[derive(Clone)]
struct StatusCheckingService {
    http: reqwest::Client,
}

impl tower::Service<HttpRequestFactory> for StatusCheckingService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<'static, Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        async move {
            let request = factory.build().await?;
            let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .and_then(|secs| Duration::try_from_secs_f64(secs.min(3600.0)).ok());
            let body = response.text().await.unwrap_or_default();
            let message = error_message(&body);
            let body = body.chars().take(4000).collect();
            Err(OpenAIError::Boxed(Box::new(HttpStatusError { status, retry_after, message, body })))
        }
        .boxed()
    }
}

/// The provider's error message from an error body, whatever its shape; a short excerpt of the
/// raw body when it is not JSON.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")));
    match message.and_then(Value::as_str) {
        Some(message) => message.chars().take(300).collect(),
        None => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_code_not_body() {
        assert_eq!(classify_status(StatusCode::TOO_MANY_REQUESTS), LlmErrorKind::RateLimited);
        assert_eq!(classify_status(StatusCode::BAD_GATEWAY), LlmErrorKind::Unavailable);
        assert_eq!(classify_status(StatusCode::PAYMENT_REQUIRED), LlmErrorKind::Rejected);
        assert!(!LlmErrorKind::Rejected.is_transient());
    }

    #[test]
    fn openrouter_numeric_codes_are_understood() {
        let body = r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#;
        assert_eq!(error_message(body), "Rate limit exceeded");
        let error: WireError = serde_json::from_str(r#"{"code":502,"message":"upstream"}"#).unwrap();
        assert_eq!(error.into_llm_error().kind, LlmErrorKind::Unavailable);
    }
}
