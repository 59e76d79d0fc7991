//! Jobs: poll (`GET /v1/jobs/{id}`) and stream (`GET /v1/jobs/{id}/events`).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response, Sse, sse::KeepAlive},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId},
    jobs::{JobKind, JobStatus},
    llm::Usage,
    store::{self, jobs::JobRecord},
    store::{RetryGuard, Submitted},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::parse_id;
use crate::{SSE_KEEP_ALIVE, X_ACCEL_BUFFERING, error::ApiError, extract::AuthUser, sse, state::AppState};

/// A job's id, status and where to follow it: what a `202` carries.
#[derive(Serialize)]
pub struct JobLinks {
    id: JobId,
    status: JobStatus,
    status_url: String,
    events_url: String,
}

impl JobLinks {
    pub fn new(id: JobId, status: JobStatus) -> Self {
        Self { id, status, status_url: format!("/v1/jobs/{id}"), events_url: format!("/v1/jobs/{id}/events") }
    }
}

#[derive(Serialize)]
struct Progress {
    done: i32,
    total: i32,
}

#[derive(Serialize)]
struct JobView {
    id: JobId,
    kind: JobKind,
    status: JobStatus,
    progress: Progress,
    character_id: Option<CharacterId>,
    /// For chat replies: the user message answered.
    message_id: Option<fastnpc_shared::ids::MessageId>,
    /// For group jobs: the group.
    group_id: Option<fastnpc_shared::ids::GroupId>,
    result: Option<Value>,
    error: Option<Value>,
    attempts: i32,
    /// LLM calls and tokens of the attempts that ended so far (a running attempt adds its own
    /// when it ends).
    usage: Usage,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    events_url: String,
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        Self {
            id: job.job_id,
            kind: job.kind,
            status: job.status,
            progress: Progress { done: job.progress_done, total: job.progress_total },
            character_id: job.character_id,
            message_id: job.message_id,
            group_id: job.group_id,
            result: job.result,
            error: job.error,
            attempts: job.attempts,
            usage: job.usage,
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            updated_at: job.updated_at,
            events_url: format!("/v1/jobs/{}/events", job.job_id),
        }
    }
}

/// `GET /v1/jobs/{id}` → `{job}`. Reads Postgres only: polling works while Redis is down.
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job_id: JobId = parse_id(&id)?;
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(serde_json::json!({ "job": JobView::from(job) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<String>,
    /// A short-lived single-job token (`POST /v1/jobs/{id}/stream-token`), for `EventSource`.
    stream_token: Option<String>,
}

/// `GET /v1/jobs/{id}/events` (SSE). Resumes after `Last-Event-ID` (what browsers send on
/// reconnect) or `?after=N` (for a first connection); the header wins when both are present.
pub async fn events(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let job_id: JobId = parse_id(&id)?;
    let user_id = match (user, &query.stream_token) {
        (Some(AuthUser(user_id)), _) => user_id,
        (None, Some(token)) => {
            let hash = hex_hash(token);
            let user =
                state.stream_tokens.user_for(&hash, job_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let user = user
                .ok_or(ApiError::Unauthorized { detail: "the stream token is invalid, expired, or for another job" })?;
            // A token issued before its account was disabled dies with the account.
            if !state.store.is_enabled(user).await? {
                return Err(ApiError::Unauthorized {
                    detail: "the stream token is invalid, expired, or for another job",
                });
            }
            user
        }
        (None, None) => {
            return Err(ApiError::Unauthorized { detail: "send `Authorization: Bearer <token>` or `?stream_token=`" });
        }
    };
    let header_cursor = headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or("Last-Event-ID"))
        .transpose();
    let query_cursor = query.after.map(|s| s.trim().parse::<u64>().map_err(|_| "after")).transpose();
    let after = match (header_cursor, query_cursor) {
        (Err(name), _) | (_, Err(name)) => {
            return Err(ApiError::bad_request(format!("{name} must be a non-negative integer event id")));
        }
        (Ok(header), Ok(query)) => header.or(query).unwrap_or(0),
    };
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    let stream = sse::job_events(state, job, after).await;
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)).into_response();
    response.headers_mut().insert(X_ACCEL_BUFFERING.clone(), axum::http::HeaderValue::from_static("no"));
    Ok(response)
}

/// `POST /v1/jobs/{id}/retry` → `202 {job}`: a new job that does what a failed or cancelled job
/// set out to do (the old job stays as it ended). A chat reply is retried only while its message
/// has no reply and no other attempt on its way.
pub async fn retry(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&id)?;
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    if !matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) {
        return Err(ApiError::Conflict {
            code: "job-not-retryable",
            detail: format!("the job is {}; only failed or cancelled jobs can be retried", job.status),
        });
    }
    crate::limits::admit_job(&state, user_id).await?;
    let conflict = |detail: &str| ApiError::Conflict { code: "job-not-retryable", detail: detail.to_owned() };
    let new_id = JobId::new();
    let (serial_key, progress_total, guard, refusal) = match job.kind {
        JobKind::ChatReply => {
            let message_id = job.message_id.ok_or(ApiError::NotFound)?;
            (
                job.character_id.map(store::jobs::serial::chat),
                0,
                RetryGuard::MessageUnanswered(message_id),
                "this message already has a reply, or one on its way",
            )
        }
        JobKind::GenerateCharacter => {
            let character_id = job.character_id.ok_or(ApiError::NotFound)?;
            (
                None,
                job.progress_total,
                RetryGuard::CharacterFailed { user_id, character_id },
                "the character is not in a failed state",
            )
        }
        JobKind::CompressMemory | JobKind::CompressGroupMemory => {
            (job.character_id.map(store::jobs::serial::memory), 0, RetryGuard::None, "")
        }
        JobKind::GroupTurn => (job.group_id.map(store::jobs::serial::group), 0, RetryGuard::None, ""),
    };
    let retry = store::jobs::NewJob {
        job_id: new_id,
        user_id,
        kind: job.kind,
        character_id: job.character_id,
        message_id: job.message_id,
        group_id: job.group_id,
        serial_key,
        progress_total,
        idempotency: None,
    };
    let outcome = state.store.submit_retry(retry, guard, &crate::limits::quota(&state)).await?;
    if outcome == Submitted::NotRetryable {
        return Err(conflict(refusal));
    }
    crate::limits::created(&state, outcome)?;
    state.background.spawn(super::characters::enqueue(state.clone(), new_id, job.kind));
    let body = serde_json::json!({ "job": JobLinks::new(new_id, JobStatus::Queued), "retry_of": job_id });
    Ok(super::with_location(axum::http::StatusCode::ACCEPTED, body, &format!("/v1/jobs/{new_id}")))
}

/// `POST /v1/jobs/{id}/cancel` → `{job}`. Idempotent. A queued job is cancelled at once (it will
/// never start) and answers `200`; a running job is asked to stop — its worker drops its
/// in-flight LLM requests and ends it `cancelled` — and answers `202` with the job as it is now;
/// a finished job answers `200` unchanged.
pub async fn cancel(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job_id: JobId = parse_id(&id)?;
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    let status = match stop_job(&state, &job).await? {
        store::jobs::CancelOutcome::Requested => axum::http::StatusCode::ACCEPTED,
        store::jobs::CancelOutcome::Cancelled | store::jobs::CancelOutcome::AlreadyFinished => {
            axum::http::StatusCode::OK
        }
    };
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    Ok((status, Json(serde_json::json!({ "job": JobView::from(job) }))).into_response())
}

/// Cancels a queued job in place (its character, if it was being generated, fails; the next job
/// of its series is published) or asks the worker running it to stop. Idempotent.
pub(crate) async fn stop_job(state: &AppState, job: &JobRecord) -> Result<store::jobs::CancelOutcome, ApiError> {
    let job_id = job.job_id;
    let generating = (job.kind == JobKind::GenerateCharacter).then_some(job.character_id).flatten();
    let outcome = state.store.cancel_job(job_id, generating).await?;
    match outcome {
        store::jobs::CancelOutcome::Cancelled => {
            if let Err(error) = state.events.append(job_id, &fastnpc_shared::events::EventPayload::Cancelled {}).await {
                tracing::warn!(job.id = %job_id, %error, "cannot append the cancelled event");
            }
            if let Some(serial_key) = &job.serial_key
                && let Some(next) = state.store.next_in_series(serial_key).await?
            {
                fastnpc_shared::dispatch::publish(state.store.as_ref(), state.publisher.as_ref(), next).await;
            }
        }
        store::jobs::CancelOutcome::Requested => {
            // The row already says so; the signal only makes the stop immediate.
            if let Err(error) = state.control.cancel(job_id).await {
                tracing::warn!(job.id = %job_id, %error, "cannot signal the cancellation; the worker's heartbeat will see it");
            }
        }
        store::jobs::CancelOutcome::AlreadyFinished => {}
    }
    Ok(outcome)
}

fn hex_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST /v1/jobs/{id}/stream-token` → `{stream_token, expires_in, events_url}`: a token that
/// lets a browser's `EventSource` (which cannot send headers) read this one job's events for
/// ten minutes — instead of putting a long-lived credential in a URL.
pub async fn stream_token(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    use base64::Engine;
    use rand::RngCore;
    let job_id: JobId = parse_id(&id)?;
    state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    state
        .stream_tokens
        .issue(&hex_hash(&token), user_id, job_id)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(serde_json::json!({
        "stream_token": token,
        "expires_in": fastnpc_shared::stream_tokens::STREAM_TOKEN_TTL.as_secs(),
        "events_url": format!("/v1/jobs/{job_id}/events?stream_token={token}"),
    })))
}
