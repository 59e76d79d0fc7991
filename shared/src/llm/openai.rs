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
    future::Future as _,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Poll, ready},
    time::Duration,
};

use async_openai::{
    Client,
    config::{Config as _, OpenAIConfig},
    error::OpenAIError,
    middleware::HttpRequestFactory,
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

use super::{
    CallLimits, ChatRequest, Completion, FinishReason, LlmClient, LlmError, LlmErrorKind, Message, Purpose,
    RetryPolicy, StreamEvent, TextStream, Usage,
    sse::SseParser,
    structured::{self, Ladder, StructuredOutput},
};
use crate::settings::LlmSettings;

/// One client per process: it owns the HTTP connection pool, the process-wide bound on LLM
/// calls in flight, and what it learnt about the server (the structured-output rung of each
/// model; whether streams may ask for usage).
pub struct OpenAiClient {
    client: Clients,
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
        let openai = Client::with_config(config).with_http_service(StatusCheckingService { http: http.clone() });
        Self {
            client: Clients { openai, http },
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

/// The HTTP clients of a call: async-openai's for completions, and the plain one under it for
/// streams, which are read without async-openai's forwarding task (see [`super::sse`]). Both share
/// one connection pool.
#[derive(Clone)]
struct Clients {
    openai: Client<OpenAIConfig>,
    http: reqwest::Client,
}

/// What one attempt gets: its own client handle, the request body, its concurrency permit
/// (held until the reply, or the stream, is done) and its timeout.
struct Attempt {
    client: Clients,
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
                        let chat = client.openai.chat();
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
            let (response, permit) = self
                .with_retries(&request, true, |Attempt { client, body, permit, timeout }| {
                    async move {
                        let open = open_stream(client.http, client.openai.config(), &body);
                        let response =
                            tokio::time::timeout(timeout, open).await.map_err(|_| Failure::timeout(timeout))??;
                        Ok((response, permit))
                    }
                    .boxed()
                })
                .await?;
            let body = response.bytes_stream().map(|piece| piece.map_err(|error| Failure::transport(error).error));
            Ok(text_stream(body, self.limits.timeout, permit, request.messages))
        }
        .boxed()
    }

    fn model_for(&self, purpose: Purpose) -> &str {
        self.settings.model_for(purpose.role())
    }
}

/// How long a stream may take after its finish reason to deliver the usage chunk and close.
const STREAM_TAIL: Duration = Duration::from_secs(1);

/// Opens a reply stream: the same request async-openai would send (its configuration's address
/// and headers), read by our own SSE parser (see [`super::sse`] for why).
async fn open_stream(http: reqwest::Client, config: &OpenAIConfig, body: &Value) -> Result<reqwest::Response, Failure> {
    let request = http.post(config.url("/chat/completions")).headers(config.headers()).json(body);
    let response = request.send().await.map_err(Failure::transport)?;
    checked(response).await.map_err(Failure::from)
}

/// A reply stream being read: the body, the parser's place in it, and what was seen so far.
struct StreamState<B> {
    body: B,
    events: SseParser,
    /// Held until the stream ends or is dropped; `None` once it has ended.
    permit: Option<OwnedSemaphorePermit>,
    /// Fires when the body has been silent for too long. Set once and moved on only when it
    /// fires early, rather than re-armed for every chunk (a timer per chunk is measurable when a
    /// worker reads tens of thousands of chunks a second).
    silence: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    last_heard: Instant,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// An error the body reported after text that has not been handed out yet.
    failure: Option<LlmError>,
    /// `[DONE]` was read, or the body ended.
    done: bool,
    /// The text so far, to count tokens when the server reports no usage.
    text: String,
    prompt: Vec<Message>,
}

impl<B, Chunk> StreamState<B>
where
    B: futures::Stream<Item = Result<Chunk, LlmError>> + Unpin,
    Chunk: AsRef<[u8]>,
{
    /// How long the body may be silent now: after the finish reason, only the tail's wait.
    fn allowed_silence(&self) -> Duration {
        if self.finish.is_some() { STREAM_TAIL.min(self.idle_timeout) } else { self.idle_timeout }
    }

    /// The body's next piece, or `None` when it stayed silent for [`Self::allowed_silence`].
    async fn next_piece(&mut self) -> Option<Option<Result<Chunk, LlmError>>> {
        let allowed = self.allowed_silence();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(piece) = self.body.poll_next_unpin(cx) {
                self.last_heard = Instant::now();
                return Poll::Ready(Some(piece));
            }
            loop {
                ready!(self.silence.as_mut().poll(cx));
                let deadline = self.last_heard + allowed;
                if deadline <= Instant::now() {
                    return Poll::Ready(None);
                }
                self.silence.as_mut().reset(deadline);
            }
        })
        .await
    }

    /// Reads one piece of the body (or its end, `None`); returns the text it completed.
    fn read(&mut self, piece: Option<&[u8]>) -> String {
        let mut text = String::new();
        let Self { events, finish, usage, failure, done, .. } = self;
        let mut on_data = |data: &str| {
            if failure.is_some() || *done {
                return;
            }
            if data == "[DONE]" {
                *done = true;
                return;
            }
            let chunk = match serde_json::from_str::<WireResponse>(data) {
                Ok(chunk) => chunk,
                // After the finish reason, an unreadable chunk just ends the reply.
                Err(_) if finish.is_some() => {
                    *done = true;
                    return;
                }
                Err(error) => {
                    *failure =
                        Some(LlmError::new(LlmErrorKind::Malformed, format!("unreadable stream chunk: {error}")));
                    return;
                }
            };
            if let Some(error) = chunk.error {
                *failure = Some(error.into_llm_error());
                return;
            }
            if let Some(reported) = chunk.usage {
                *usage = Some(reported.into());
            }
            for choice in chunk.choices {
                if let Some(content) = choice.delta.and_then(|d| d.content) {
                    text.push_str(&content);
                }
                if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                    *finish = Some(FinishReason::from_wire(&reason));
                }
            }
        };
        match piece {
            Some(bytes) => events.feed(bytes, &mut on_data),
            None => {
                events.finish(&mut on_data);
                *done = true;
            }
        }
        if finish.is_some() {
            // From here only the tail's wait applies: the timer is moved to it now.
            let tail = self.last_heard + self.allowed_silence();
            if tail < self.silence.deadline() {
                self.silence.as_mut().reset(tail);
            }
        }
        self.text.push_str(&text);
        text
    }

    /// Ends the stream with `item`: the permit goes back at once.
    fn end<T>(mut self, item: T) -> Option<(T, Self)> {
        self.permit = None;
        Some((item, self))
    }
}

/// Turns the body of a streamed completion into [`StreamEvent`]s: each piece the body delivers
/// becomes at most one `Text` (all the chunks it holds, so a worker that falls behind catches up
/// in one step instead of one per token). Copes with what real servers send: a first chunk with
/// only the role, chunks with no choices, usage in a final chunk after the finish reason (or
/// none at all: then the tokens are counted here), keep-alive comments, and no `[DONE]`. Ends with
/// an error when the provider reports one, goes silent for longer than `idle_timeout`, or closes
/// before a finish reason (a dropped connection looks like a clean end to an SSE parser).
fn text_stream<B, Chunk>(
    body: B,
    idle_timeout: Duration,
    permit: OwnedSemaphorePermit,
    prompt: Vec<Message>,
) -> TextStream
where
    B: futures::Stream<Item = Result<Chunk, LlmError>> + Send + Unpin + 'static,
    Chunk: AsRef<[u8]> + Send + 'static,
{
    let state = StreamState {
        body,
        events: SseParser::default(),
        permit: Some(permit),
        silence: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_timeout,
        last_heard: Instant::now(),
        finish: None,
        usage: None,
        failure: None,
        done: false,
        text: String::new(),
        prompt,
    };
    futures::stream::unfold(state, |mut state| async move {
        state.permit.as_ref()?;
        loop {
            if let Some(error) = state.failure.take() {
                return state.end(Err(error));
            }
            if state.done {
                let Some(finish) = state.finish else {
                    let error = LlmError::new(LlmErrorKind::Unavailable, "the stream ended before the reply finished");
                    return state.end(Err(error));
                };
                let usage = match state.usage {
                    Some(usage) => usage,
                    None => Usage::counted(&state.prompt, &state.text).await,
                };
                return state.end(Ok(StreamEvent::Finished { finish, usage }));
            }
            let text = match state.next_piece().await {
                Some(Some(Ok(bytes))) => state.read(Some(bytes.as_ref())),
                // After the finish reason, silence or a broken connection just end the reply.
                None | Some(Some(Err(_))) if state.finish.is_some() => {
                    state.done = true;
                    continue;
                }
                None => {
                    let error = LlmError::new(LlmErrorKind::Timeout, format!("no tokens for {:?}", state.idle_timeout));
                    return state.end(Err(error));
                }
                Some(Some(Err(error))) => return state.end(Err(error)),
                Some(None) => state.read(None),
            };
            if !text.is_empty() {
                return Some((Ok(StreamEvent::Text(text)), state));
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

    fn transport(error: reqwest::Error) -> Self {
        Self::new(LlmError::new(classify_transport(&error), format!("transport: {error}")))
    }
}

impl From<HttpStatusError> for Failure {
    fn from(status: HttpStatusError) -> Self {
        let refusal = Some(Refusal { status: status.status.as_u16(), body: status.body.clone() });
        let error = LlmError::new(classify_status(status.status), status.to_string());
        Self { error, retry_after: status.retry_after, refusal }
    }
}

impl From<OpenAIError> for Failure {
    fn from(error: OpenAIError) -> Self {
        let (kind, message) = match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
                Ok(status) => return Self::from(*status),
                Err(other) => match other.downcast::<reqwest::Error>() {
                    Ok(http) => return Self::transport(*http),
                    Err(other) => (LlmErrorKind::Unavailable, other.to_string()),
                },
            },
            OpenAIError::Reqwest(http) => return Self::transport(http),
            OpenAIError::ApiError(api) => (classify_status(api.status_code), api.to_string()),
            OpenAIError::JSONDeserialize(error, _) => {
                (LlmErrorKind::Malformed, format!("unreadable completion: {error}"))
            }
            OpenAIError::StreamError(error) => (LlmErrorKind::Unavailable, format!("stream: {error}")),
            OpenAIError::InvalidArgument(message) => (LlmErrorKind::Rejected, message),
            other => (LlmErrorKind::Unavailable, other.to_string()),
        };
        Self::new(LlmError::new(kind, message))
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
            checked(response).await.map_err(|error| OpenAIError::Boxed(Box::new(error)))
        }
        .boxed()
    }
}

/// `response` if it is a success; otherwise what it says, as an [`HttpStatusError`].
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, HttpStatusError> {
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
    Err(HttpStatusError { status, retry_after, message, body })
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

    /// Drives a reply stream over `pieces` (each piece one read of the body) to its end, and
    /// checks that the call's permit is back once it has ended.
    async fn read_stream<B, Piece>(body: B) -> Vec<Result<StreamEvent, LlmError>>
    where
        B: futures::Stream<Item = Result<Piece, LlmError>> + Send + Unpin + 'static,
        Piece: AsRef<[u8]> + Send + 'static,
    {
        let permits = Arc::new(Semaphore::new(1));
        let permit = permits.clone().acquire_owned().await.unwrap();
        let events: Vec<_> =
            text_stream(body, Duration::from_secs(30), permit, vec![Message::user("hi")]).collect().await;
        assert_eq!(permits.available_permits(), 1, "the permit is back when the stream ends");
        events
    }

    fn pieces(pieces: &[&str]) -> impl futures::Stream<Item = Result<String, LlmError>> + Unpin + use<> {
        futures::stream::iter(pieces.iter().map(|&piece| Ok(piece.to_owned())).collect::<Vec<_>>())
    }

    fn texts(events: &[Result<StreamEvent, LlmError>]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|event| match event {
                Ok(StreamEvent::Text(text)) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    const ROLE: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    const HEL: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    const LO: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n";
    const STOP: &str = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n";

    #[tokio::test]
    async fn each_read_of_the_body_is_one_text_event_however_many_chunks_it_holds() {
        let body = [ROLE, HEL].concat();
        let rest = [": keep-alive\n\n", LO, STOP, USAGE, "data: [DONE]\n\n"].concat();
        let events = read_stream(pieces(&[&body, &rest])).await;
        assert_eq!(texts(&events), ["Hel", "lo"]);
        let Some(Ok(StreamEvent::Finished { finish, usage })) = events.last() else { panic!("{events:?}") };
        assert_eq!((*finish, *usage), (FinishReason::Stop, Usage::call(7, 2)));
        assert_eq!(events.len(), 3);
    }

    #[tokio::test]
    async fn a_chunk_split_across_reads_is_read_whole() {
        let whole = [HEL, LO, STOP, USAGE].concat();
        let cut = whole.find("Hel").unwrap() + 1; // inside the first chunk's JSON
        let (first, second) = whole.split_at(cut);
        let events = read_stream(pieces(&[first, second])).await;
        assert_eq!(texts(&events), ["Hello"]);
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Finished { .. }))));
    }

    #[tokio::test]
    async fn a_provider_error_in_the_stream_ends_it_with_that_error_after_the_text_before_it() {
        let error = "data: {\"error\":{\"code\":502,\"message\":\"upstream died\"}}\n\n";
        let events = read_stream(pieces(&[&[HEL, error, LO].concat()])).await;
        assert_eq!(texts(&events), ["Hel"]);
        let Some(Err(error)) = events.last() else { panic!("{events:?}") };
        assert_eq!(error.kind, LlmErrorKind::Unavailable);
        assert!(error.message.contains("upstream died"), "{error:?}");
        assert_eq!(events.len(), 2);
    }

    #[tokio::test]
    async fn a_body_that_ends_before_the_finish_reason_is_an_error_not_a_short_reply() {
        let events = read_stream(pieces(&[HEL, LO])).await;
        assert_eq!(texts(&events), ["Hel", "lo"]);
        let Some(Err(error)) = events.last() else { panic!("{events:?}") };
        assert_eq!(error.kind, LlmErrorKind::Unavailable);
        assert!(error.kind.is_transient());
    }

    #[tokio::test]
    async fn a_broken_connection_after_the_finish_reason_ends_the_reply_with_counted_usage() {
        let broken = LlmError::new(LlmErrorKind::Unavailable, "connection reset");
        let body = futures::stream::iter(vec![Ok([HEL, STOP].concat()), Err(broken)]);
        let events = read_stream(body).await;
        let Some(Ok(StreamEvent::Finished { usage, .. })) = events.last() else { panic!("{events:?}") };
        assert_eq!(usage.calls, 1);
        assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0, "counted locally: {usage:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_stream_only_after_the_idle_timeout_since_the_last_piece() {
        // A piece every 20 s for a minute keeps a 30 s idle timeout from firing; then silence.
        let body = futures::stream::unfold(0, |sent| async move {
            if sent == 3 {
                futures::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            Some((Ok(HEL), sent + 1))
        })
        .boxed();
        let started = Instant::now();
        let events = read_stream(body).await;
        assert_eq!(texts(&events), ["Hel", "Hel", "Hel"]);
        let Some(Err(error)) = events.last() else { panic!("{events:?}") };
        assert_eq!(error.kind, LlmErrorKind::Timeout);
        assert_eq!(started.elapsed(), Duration::from_secs(60 + 30), "timed out 30 s after the last piece");
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_finish_reason_the_stream_waits_only_the_tail_for_its_usage() {
        let body = pieces(&[&[HEL, STOP].concat()]).chain(futures::stream::pending());
        let started = Instant::now();
        let events = read_stream(body).await;
        assert!(matches!(events.last(), Some(Ok(StreamEvent::Finished { finish: FinishReason::Stop, .. }))));
        assert_eq!(started.elapsed(), STREAM_TAIL);
    }

    #[test]
    fn openrouter_numeric_codes_are_understood() {
        let body = r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#;
        assert_eq!(error_message(body), "Rate limit exceeded");
        let error: WireError = serde_json::from_str(r#"{"code":502,"message":"upstream"}"#).unwrap();
        assert_eq!(error.into_llm_error().kind, LlmErrorKind::Unavailable);
    }
}
