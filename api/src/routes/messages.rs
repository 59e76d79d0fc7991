//! Chat with a character: send a message (a reply job), read the history.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{
        HeaderMap, HeaderName, HeaderValue, StatusCode,
        header::{ACCEPT, LOCATION},
    },
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId, MessageId, UserId},
    jobs::{JobKind, JobStatus},
    store::{self, NewUserMessage, Submitted, jobs::NewJob, messages::MessageRecord},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{characters::enqueue, include_prompt, jobs::JobLinks, page_limit, parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    idempotency::Idempotency,
    sse,
    state::AppState,
};

/// Longest message a user may send (characters).
pub const MAX_MESSAGE_CHARS: usize = 8000;
/// Longest `Prefer: wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// 1 to 8000 characters (after trimming).
    content: String,
}

/// A message as clients see it.
#[derive(Serialize, ToSchema)]
pub struct MessageView {
    id: MessageId,
    /// `user` or `character`.
    author: String,
    content: String,
    created_at: DateTime<Utc>,
    /// For replies: the job that produced it.
    job_id: Option<JobId>,
    /// For replies: the user message answered.
    reply_to: Option<MessageId>,
    /// Absorbed into short-term memory.
    compressed: bool,
    /// A reply the model stopped at its output limit: the text ends mid-thought.
    truncated: bool,
    /// The prompt set a reply was written with (absent for user messages and older replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_version: Option<String>,
    /// The system prompt the reply was written with (only with `?include=prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
}

impl MessageView {
    fn new(message: MessageRecord, include_prompt: bool) -> Self {
        Self {
            id: message.message_id,
            author: message.author,
            content: message.content,
            created_at: message.created_at,
            job_id: message.job_id,
            reply_to: message.reply_to,
            compressed: message.compressed,
            truncated: message.truncated,
            prompt_version: message.prompt_version,
            prompt: if include_prompt { message.prompt_snapshot } else { None },
        }
    }
}

/// The user's message and the job writing the reply.
#[derive(Serialize, ToSchema)]
pub struct MessageAccepted {
    message: MessageView,
    job: JobLinks,
}

/// The user's message, the character's reply and the finished job (`Prefer: wait=N`).
#[derive(Serialize, ToSchema)]
pub struct MessageWithReply {
    message: MessageView,
    reply: MessageView,
    job: JobLinks,
}

/// `POST /v1/characters/{id}/messages` → `202 {message, job}`; with `Prefer: wait=N`, `200
/// {message, reply, job}` when the reply is stored within N seconds; with `Accept:
/// text/event-stream`, `200` and the reply job's event stream, so a chat client sends one
/// request per message instead of a `POST` and a `GET …/events` (which cost the server a second
/// session check, job read and log read per reply).
#[utoipa::path(
    post,
    path = "/v1/characters/{id}/messages",
    operation_id = "send_message",
    tag = "chat",
    summary = "Send a message (a reply job)",
    description = "Stores the message and queues the job writing the character's reply; the reply's text \
        streams as the job's `token` events. Replies to one character are written one at a time, in order. \
        A client that sends `Accept: text/event-stream` gets the reply job's event stream as the answer \
        (`200`) instead of the `202`, so one request both sends and follows; a repeated `Idempotency-Key` \
        then streams the original job's events from its first.",
    params(
        ("id" = CharacterId, Path, description = "The character (must be `ready`)"),
        ("Prefer" = Option<String>, Header, description = "`wait=N` (RFC 7240): wait up to N seconds (at \
            most 60) for the reply. If it is stored in time the answer is `200` with the reply and \
            `Preference-Applied: wait=N`; otherwise the usual `202` (its job's status as it is then). \
            Other preferences are ignored, and so is this one with `Accept: text/event-stream`; a \
            repeated `Idempotency-Key` answers `202` without waiting."),
        crate::openapi::IdempotencyKey,
    ),
    request_body = SendMessage,
    responses(
        (status = 200, description = "With `Accept: text/event-stream`: the reply job's events as they happen, \
            the same stream as `GET /v1/jobs/{id}/events` (ids included, so that one resumes it), in the answer \
            itself; `Location` names the job, `FastNPC-Message-Id` the stored message. With `Prefer: wait=N` \
            (and JSON): the reply, stored within N seconds",
            content(
                (MessageWithReply = "application/json"),
                (String = "text/event-stream"),
            ),
            headers(
                ("Preference-Applied" = String, description = "`wait=N`, N as honoured (at most 60); JSON only"),
                ("Location" = String, description = "The reply job's URL; event streams only"),
                ("FastNPC-Message-Id" = MessageId, description = "The stored message; event streams only"),
            )),
        (status = 202, description = "Accepted: the message and its reply job", body = MessageAccepted,
            headers(("Location" = String, description = "The reply job's URL"))),
        (status = 409, description = "`/problems/character-not-ready`: the character is still generating or \
            failed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many jobs submitted, running, or queued for this user, or the daily \
            token budget is spent (`Retry-After`)", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let content = body.content.trim();
    if content.is_empty() {
        return Err(ApiError::invalid_field("content is empty"));
    }
    if content.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid_field(format!("content is longer than {MAX_MESSAGE_CHARS} characters")));
    }
    let stream = accepts_event_stream(&headers);
    let wait = prefer_wait(&headers).filter(|_| !stream);
    let idempotency = Idempotency::from_request(
        &headers,
        &json!({"send_message": {"character_id": character_id, "content": content}}),
    )?;
    if let Some(idempotency) = &idempotency
        && let Some(job) = idempotency.original(&state, user_id).await?
    {
        return replay(&state, user_id, job, stream).await;
    }
    crate::limits::admit_job(&state, user_id).await?;

    let message_id = MessageId::new();
    let job_id = JobId::new();
    let job = NewJob {
        idempotency: idempotency.as_ref().map(Idempotency::for_new_job),
        ..NewJob::chat_reply(job_id, user_id, character_id, message_id)
    };
    let message = NewUserMessage::new(message_id, user_id, character_id, content);
    let stored = message.record();
    // The submission checks the character (the user's, and ready) in its own statement, so the
    // accept is one round-trip; only a refusal reads the character again, to say why.
    let submitted = state.store.submit_message(message, job, &crate::limits::quota(&state)).await?;
    if submitted == Submitted::GuardFailed {
        let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
        return Err(ApiError::character_not_ready(&character.status, "chat opens when it is ready"));
    }
    if !crate::limits::created(&state, submitted)? {
        let winner = Idempotency::winner(idempotency.as_ref(), &state, user_id).await?;
        return replay(&state, user_id, winner, stream).await;
    }

    // Listen before the job can possibly finish, so a fast reply is not missed.
    let subscription = (wait.is_some() || stream).then(|| state.hub.subscribe(job_id));
    state.background.spawn(enqueue(state.clone(), job_id, JobKind::ChatReply));
    let subscription = match subscription {
        Some(subscription) if stream => {
            let events = sse::new_job_events(state, job_id, user_id, subscription);
            return Ok(streaming(events, job_id, message_id));
        }
        subscription => subscription,
    };
    let message = MessageView::new(stored, false);

    if let (Some(wait), Some(subscription)) = (wait, subscription) {
        let status = wait_for_terminal(&state, subscription, user_id, job_id, wait).await?;
        if status == JobStatus::Succeeded
            && let Some(reply) = state.store.reply_of_job(job_id).await?
        {
            let body =
                MessageWithReply { message, reply: MessageView::new(reply, false), job: JobLinks::new(job_id, status) };
            let mut response = (StatusCode::OK, Json(body)).into_response();
            let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ASCII header");
            response.headers_mut().insert("preference-applied", applied);
            return Ok(response);
        }
        return Ok(accepted(message, job_id, status));
    }
    Ok(accepted(message, job_id, JobStatus::Queued))
}

/// The original answer for a repeated request: the message and its job as they are now, or the
/// job's whole event stream (from its first event) for a client that asked for one.
async fn replay(
    state: &AppState,
    user_id: UserId,
    job: store::jobs::JobRecord,
    stream: bool,
) -> Result<Response, ApiError> {
    let message_id = job.message_id.ok_or(ApiError::NotFound)?;
    if stream {
        let job_id = job.job_id;
        return Ok(streaming(sse::job_events(state.clone(), job, 0).await, job_id, message_id));
    }
    let message = state.store.message(user_id, message_id).await?.ok_or(ApiError::NotFound)?;
    Ok(accepted(MessageView::new(message, false), job.job_id, job.status))
}

fn accepted(message: MessageView, job_id: JobId, status: JobStatus) -> Response {
    let body = MessageAccepted { message, job: JobLinks::new(job_id, status) };
    with_location(StatusCode::ACCEPTED, &body, &format!("/v1/jobs/{job_id}"))
}

/// The reply job's event stream as the answer to its `POST`: `Location` names the job (whose
/// `GET …/events` resumes the stream with `Last-Event-ID`), `FastNPC-Message-Id` the message.
fn streaming(
    events: impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>> + Send + 'static,
    job_id: JobId,
    message_id: MessageId,
) -> Response {
    let mut response = sse::response(events);
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_str(&format!("/v1/jobs/{job_id}")).expect("ASCII header"));
    headers.insert(MESSAGE_ID.clone(), HeaderValue::from_str(&message_id.to_string()).expect("ASCII header"));
    response
}

/// Names the stored user message in a streamed answer (its body is the reply job's events).
static MESSAGE_ID: HeaderName = HeaderName::from_static("fastnpc-message-id");

/// Whether the client asked for the reply as an event stream (`Accept: text/event-stream`, as
/// an `EventSource`-style or `fetch` client sends it); `*/*` and JSON keep the `202`.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().filter_map(|value| value.to_str().ok()).flat_map(|value| value.split(',')).any(
        |range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts
                .any(|param| param.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()) == Some(0.0));
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        },
    )
}

/// `Prefer: wait=N` (RFC 7240), capped at [`MAX_WAIT_SECS`]; other preferences are ignored.
pub(crate) fn prefer_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait")).then(|| value.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .map(|secs| Duration::from_secs(secs.min(MAX_WAIT_SECS)))
}

/// Waits until the job is terminal or `wait` passes; returns the job's status then. Live events
/// make it prompt; a periodic read of the row makes it correct even if an event is lost.
async fn wait_for_terminal(
    state: &AppState,
    mut subscription: fastnpc_shared::event_bus::Subscription,
    user_id: UserId,
    job_id: JobId,
    wait: Duration,
) -> Result<JobStatus, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let status = || async {
        let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
        Ok::<_, ApiError>(job.status)
    };
    loop {
        tokio::select! {
            received = subscription.events.recv() => {
                if matches!(&received, Ok(event) if !event.payload.is_terminal()) {
                    continue;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = tokio::time::sleep_until(deadline) => return status().await,
        }
        let current = status().await?;
        if current.is_terminal() {
            return Ok(current);
        }
    }
}

/// `?before=<message id>&limit=&include=prompt`: a page of a conversation's history (a
/// character's or a group's).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageHistoryQuery {
    /// The `next_before` of the previous page.
    pub before: Option<MessageId>,
    /// Page size, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<i64>,
    /// `prompt`: show the system prompt each reply was written with.
    #[param(value_type = Option<MessageInclude>, inline)]
    pub include: Option<String>,
}

// What `include` may name.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // A schema only: `include_prompt` reads the string.
pub enum MessageInclude {
    Prompt,
}

/// One page of a conversation, newest first.
#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    items: Vec<MessageView>,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<MessageId>,
}

/// `GET /v1/characters/{id}/messages?before=&limit=&include=prompt` → `{items, next_before}`,
/// newest first.
#[utoipa::path(
    get,
    path = "/v1/characters/{id}/messages",
    operation_id = "message_history",
    tag = "chat",
    summary = "A chat's history, newest first",
    params(("id" = CharacterId, Path, description = "The character"), MessageHistoryQuery),
    responses(
        (status = 200, description = "One page", body = MessagePage),
        (status = 422, description = "`limit` is not 1 to 200, or `include` is not `prompt`",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<MessageHistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagePage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let character_id: CharacterId = parse_id(&id)?;
    let include_prompt = include_prompt(query.include.as_deref())?;
    let limit = page_limit(query.limit)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let items = state.store.message_history(user_id, character_id, query.before, limit).await?;
    let next_before = super::next_cursor(&items, limit, |m| m.message_id);
    let items: Vec<MessageView> = items.into_iter().map(|m| MessageView::new(m, include_prompt)).collect();
    Ok(Json(MessagePage { items, next_before }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait_is_parsed_and_capped() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("prefer", HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(prefer_wait(&headers("wait=5")), Some(Duration::from_secs(5)));
        assert_eq!(prefer_wait(&headers("respond-async, wait=10")), Some(Duration::from_secs(10)));
        assert_eq!(prefer_wait(&headers("wait=999")), Some(Duration::from_secs(MAX_WAIT_SECS)));
        assert_eq!(prefer_wait(&headers("return=minimal")), None);
        assert_eq!(prefer_wait(&HeaderMap::new()), None);
    }

    #[test]
    fn only_an_explicit_event_stream_media_range_asks_for_one() {
        let accepting = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_str(value).unwrap());
            accepts_event_stream(&headers)
        };
        assert!(accepting("text/event-stream"));
        assert!(accepting("application/json, Text/Event-Stream;q=0.5"));
        assert!(accepting("text/event-stream; charset=utf-8"));
        assert!(!accepting("*/*"));
        assert!(!accepting("text/*"));
        assert!(!accepting("application/json"));
        assert!(!accepting("text/event-stream;q=0, application/json"));
        assert!(!accepting("text/event-stream; q=0.000"));
        assert!(!accepts_event_stream(&HeaderMap::new()));
    }
}
