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

use std::{sync::Arc, time::Duration};

use async_openai::{Client, config::OpenAIConfig, error::OpenAIError, middleware::HttpRequestFactory};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{CallLimits, ChatRequest, LlmClient, LlmError, LlmErrorKind, Message, RetryPolicy, TextStream};
use crate::settings::LlmSettings;

/// One client per process: it owns the HTTP connection pool and the process-wide bound on LLM
/// calls in flight.
pub struct OpenAiClient {
    client: Client<OpenAIConfig>,
    model: String,
    limits: CallLimits,
    permits: Arc<Semaphore>,
    pacer: Option<super::Pacer>,
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
            model: settings.model.clone(),
            limits: CallLimits {
                timeout: settings.timeout,
                retry: RetryPolicy::new(settings.max_retries),
                max_concurrency: settings.max_concurrency,
            },
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
            pacer: super::Pacer::per_second(settings.rate_per_sec),
        }
    }

    fn wire<'a>(&'a self, request: &'a ChatRequest, stream: bool) -> WireRequest<'a> {
        WireRequest {
            model: &self.model,
            messages: &request.messages,
            stream,
            response_format: request.json_schema.as_ref().map(|schema| {
                json!({
                    "type": "json_schema",
                    "json_schema": {"name": schema.name, "strict": true, "schema": schema.schema},
                })
            }),
            max_tokens: request.max_tokens,
            temperature: request.temperature,
        }
    }

    /// Sends `request` until an attempt succeeds, fails for good, or the retries run out. Each
    /// attempt holds one concurrency permit and gets `attempt(client, body, permit, timeout)`.
    async fn with_retries<T>(
        &self,
        request: &ChatRequest,
        stream: bool,
        attempt: fn(Attempt) -> BoxFuture<'static, Result<T, Failure>>,
    ) -> Result<T, LlmError> {
        let body = serde_json::to_value(self.wire(request, stream)).expect("requests serialise");
        let mut retry = 0;
        loop {
            if let Some(pacer) = &self.pacer {
                pacer.wait().await;
            }
            let permit = self.permits.clone().acquire_owned().await.expect("semaphore never closes");
            let failure = match attempt(Attempt {
                client: self.client.clone(),
                body: body.clone(),
                permit,
                timeout: self.limits.timeout,
            })
            .await
            {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if !failure.error.kind.is_transient() || retry >= self.limits.retry.max_retries {
                tracing::warn!(llm.purpose = request.purpose, retries = retry, error = %failure.error, "LLM call failed");
                return Err(failure.error);
            }
            let delay = self.limits.retry.delay(retry, failure.retry_after);
            tracing::info!(
                llm.purpose = request.purpose,
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

/// What one attempt gets: its own client handle, the request body, its concurrency permit
/// (held until the reply, or the stream, is done) and its timeout.
struct Attempt {
    client: Client<OpenAIConfig>,
    body: Value,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
}

impl LlmClient for OpenAiClient {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<String, LlmError>> {
        async move {
            self.with_retries(&request, false, |Attempt { client, body, permit, timeout }| {
                async move {
                    let chat = client.chat();
                    let call = chat.create_byot::<_, WireResponse>(body);
                    let response = tokio::time::timeout(timeout, call)
                        .await
                        .map_err(|_| Failure::timeout(timeout))?
                        .map_err(Failure::from)?;
                    drop(permit);
                    response.into_text()
                }
                .boxed()
            })
            .await
        }
        .boxed()
    }

    fn stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<TextStream, LlmError>> {
        async move {
            self.with_retries(&request, true, |Attempt { client, body, permit, timeout }| {
                async move {
                    let chat = client.chat();
                    let open = chat.create_stream_byot::<_, WireResponse>(body);
                    let chunks = tokio::time::timeout(timeout, open)
                        .await
                        .map_err(|_| Failure::timeout(timeout))?
                        .map_err(Failure::from)?;
                    Ok(text_stream(chunks, timeout, permit))
                }
                .boxed()
            })
            .await
        }
        .boxed()
    }

    fn model(&self) -> &str {
        &self.model
    }
}

/// Turns provider chunks into text deltas. Ends with an error when the provider reports one,
/// goes silent for longer than `idle_timeout`, or closes without a finish reason (a dropped
/// connection looks like a clean end to an SSE parser).
fn text_stream<S>(chunks: S, idle_timeout: Duration, permit: OwnedSemaphorePermit) -> TextStream
where
    S: futures::Stream<Item = Result<WireResponse, OpenAIError>> + Send + Unpin + 'static,
{
    futures::stream::unfold((chunks, Some(permit), false), move |(mut chunks, permit, finished)| async move {
        permit.as_ref()?;
        loop {
            let next = match tokio::time::timeout(idle_timeout, chunks.next()).await {
                Err(_) => {
                    let error = LlmError::new(LlmErrorKind::Timeout, format!("no tokens for {idle_timeout:?}"));
                    return Some((Err(error), (chunks, None, finished)));
                }
                Ok(next) => next,
            };
            match next {
                None if finished => return None,
                None => {
                    let error = LlmError::new(LlmErrorKind::Unavailable, "the stream ended before the reply finished");
                    return Some((Err(error), (chunks, None, finished)));
                }
                Some(Err(error)) => return Some((Err(Failure::from(error).error), (chunks, None, finished))),
                Some(Ok(chunk)) => {
                    if let Some(error) = chunk.error {
                        return Some((Err(error.into_llm_error()), (chunks, None, finished)));
                    }
                    let mut text = String::new();
                    let mut done = finished;
                    for choice in chunk.choices {
                        if let Some(content) = choice.delta.and_then(|d| d.content) {
                            text.push_str(&content);
                        }
                        done |= choice.finish_reason.is_some_and(|r| !r.is_empty());
                    }
                    if !text.is_empty() {
                        return Some((Ok(text), (chunks, permit, done)));
                    }
                    if done {
                        // Drain to [DONE] so the permit and connection are released cleanly.
                        return chunks.next().now_or_never().and(None);
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
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
}

/// A completion or a stream chunk, leniently: everything optional, unknown fields ignored.
#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Vec<WireChoice>,
    /// OpenRouter reports some failures as an `error` object in a 200 body or stream.
    error: Option<WireError>,
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
    fn into_text(self) -> Result<String, Failure> {
        if let Some(error) = self.error {
            return Err(Failure { error: error.into_llm_error(), retry_after: None });
        }
        let text = self
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message)
            .and_then(|message| message.content)
            .unwrap_or_default();
        if text.is_empty() {
            return Err(Failure {
                error: LlmError::new(LlmErrorKind::Malformed, "the completion has no content"),
                retry_after: None,
            });
        }
        Ok(text)
    }
}

/// One failed attempt: the error and the provider's requested wait, if any.
struct Failure {
    error: LlmError,
    retry_after: Option<Duration>,
}

impl Failure {
    fn timeout(after: Duration) -> Self {
        Self { error: LlmError::new(LlmErrorKind::Timeout, format!("no answer within {after:?}")), retry_after: None }
    }
}

impl From<OpenAIError> for Failure {
    fn from(error: OpenAIError) -> Self {
        let (kind, message, retry_after) = match error {
            OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatusError>() {
                Ok(status) => (classify_status(status.status), status.to_string(), status.retry_after),
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
        Self { error: LlmError::new(kind, message), retry_after }
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
            Err(OpenAIError::Boxed(Box::new(HttpStatusError { status, retry_after, message: error_message(&body) })))
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
