//! Chat with a character: send a message (a reply job), read the history.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId, MessageId, UserId},
    jobs::{JobKind, JobStatus},
    store::NewUserMessage,
    store::{self, jobs::NewJob, messages::MessageRecord},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{characters::enqueue, include_prompt, jobs::JobLinks, page_limit, parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    idempotency::Idempotency,
    state::AppState,
};

/// Longest message a user may send (characters).
pub const MAX_MESSAGE_CHARS: usize = 8000;
/// Longest `Prefer: wait` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    content: String,
}

/// A message as clients see it.
#[derive(Serialize)]
pub struct MessageView {
    id: MessageId,
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

/// `POST /v1/characters/{id}/messages` → `202 {message, job}`; with `Prefer: wait=N`, `200
/// {message, reply, job}` when the reply is stored within N seconds.
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
    let wait = prefer_wait(&headers);
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let idempotency = Idempotency::from_request(
        &headers,
        &json!({"send_message": {"character_id": character_id, "content": content}}),
    )?;
    if let Some(idempotency) = &idempotency
        && let Some(job) = idempotency.original(&state, user_id).await?
    {
        return replay(&state, user_id, job).await;
    }
    crate::limits::admit_job(&state, user_id).await?;
    if character.status != "ready" {
        return Err(ApiError::Conflict {
            code: "character-not-ready",
            detail: format!("the character is {}; chat opens when it is ready", character.status),
        });
    }

    let message_id = MessageId::new();
    let job_id = JobId::new();
    let job = NewJob {
        job_id,
        user_id,
        kind: JobKind::ChatReply,
        character_id: Some(character_id),
        message_id: Some(message_id),
        group_id: None,
        serial_key: Some(store::jobs::serial::chat(character_id)),
        progress_total: 0,
        idempotency: idempotency.as_ref().map(Idempotency::for_new_job),
    };
    let message = NewUserMessage { message_id, user_id, character_id, content };
    if !crate::limits::created(&state, state.store.submit_message(message, job, &crate::limits::quota(&state)).await?)?
    {
        let winner = Idempotency::winner(idempotency.as_ref(), &state, user_id).await?;
        return replay(&state, user_id, winner).await;
    }

    // Listen before the job can possibly finish, so a fast reply is not missed.
    let subscription = wait.map(|_| state.hub.subscribe(job_id));
    state.background.spawn(enqueue(state.clone(), job_id, JobKind::ChatReply));
    let message = state.store.message(user_id, message_id).await?.ok_or(ApiError::NotFound)?;
    let message = MessageView::new(message, false);

    if let (Some(wait), Some(subscription)) = (wait, subscription) {
        let status = wait_for_terminal(&state, subscription, user_id, job_id, wait).await?;
        if status == JobStatus::Succeeded
            && let Some(reply) = state.store.reply_of_job(job_id).await?
        {
            let body = json!({"message": message, "reply": MessageView::new(reply, false), "job": JobLinks::new(job_id, status)});
            let mut response = (StatusCode::OK, Json(body)).into_response();
            let applied = HeaderValue::from_str(&format!("wait={}", wait.as_secs())).expect("ASCII header");
            response.headers_mut().insert("preference-applied", applied);
            return Ok(response);
        }
        return Ok(accepted(message, job_id, status));
    }
    Ok(accepted(message, job_id, JobStatus::Queued))
}

/// The original answer for a repeated request: the message and its job as they are now.
async fn replay(state: &AppState, user_id: UserId, job: store::jobs::JobRecord) -> Result<Response, ApiError> {
    let message_id = job.message_id.ok_or(ApiError::NotFound)?;
    let message = state.store.message(user_id, message_id).await?.ok_or(ApiError::NotFound)?;
    Ok(accepted(MessageView::new(message, false), job.job_id, job.status))
}

fn accepted(message: MessageView, job_id: JobId, status: JobStatus) -> Response {
    let body = json!({"message": message, "job": JobLinks::new(job_id, status)});
    with_location(StatusCode::ACCEPTED, body, &format!("/v1/jobs/{job_id}"))
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

/// `GET /v1/characters/{id}/messages?before=&limit=&include=prompt` → `{items, next_before}`,
/// newest first.
pub async fn history(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<super::HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let character_id: CharacterId = parse_id(&id)?;
    let include_prompt = include_prompt(query.include.as_deref())?;
    let limit = page_limit(query.limit)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let items = state.store.message_history(user_id, character_id, query.before, limit).await?;
    let next_before = (items.len() as i64 == limit).then(|| items.last().map(|m| m.message_id)).flatten();
    let items: Vec<MessageView> = items.into_iter().map(|m| MessageView::new(m, include_prompt)).collect();
    Ok(Json(json!({"items": items, "next_before": next_before})))
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
}
