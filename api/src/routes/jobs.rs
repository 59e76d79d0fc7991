//! Jobs: list (`GET /v1/jobs`), poll (`GET /v1/jobs/{id}`) and stream (`GET /v1/jobs/{id}/events`);
//! cancel and retry.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::{CharacterId, JobId},
    jobs::{JobKind, JobStatus},
    llm::Usage,
    store::{self, jobs::JobRecord},
    store::{JobGuard, Submitted},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::parse_id;
use crate::{error::ApiError, extract::AuthUser, sse, state::AppState};

/// A job's id, status and where to follow it: what a `202` carries.
#[derive(Serialize, ToSchema)]
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

/// Steps done of the job's total (the nine generation steps; 0 of 0 for other kinds).
#[derive(Serialize, ToSchema)]
pub struct Progress {
    done: i32,
    total: i32,
}

/// A job as clients see it.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    id: JobId,
    kind: JobKind,
    status: JobStatus,
    progress: Progress,
    character_id: Option<CharacterId>,
    /// For chat replies: the user message answered.
    message_id: Option<fastnpc_shared::ids::MessageId>,
    /// For group jobs: the group.
    group_id: Option<fastnpc_shared::ids::GroupId>,
    /// What a succeeded job produced (e.g. `{character_id}`, `{message_id}`).
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// Why a failed job failed: `{code, message}`.
    #[schema(value_type = Option<Object>)]
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

/// `{job}`: a job's state.
#[derive(Serialize, ToSchema)]
pub struct JobEnvelope {
    job: JobView,
}

/// `GET /v1/jobs/{id}` → `{job}`. Reads Postgres only: polling works while Redis is down.
#[utoipa::path(
    get,
    operation_id = "get_job",
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job's status, progress, result or error",
    params(("id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The job", body = JobEnvelope)),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<JobEnvelope>, ApiError> {
    let job_id: JobId = parse_id(&id)?;
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(JobEnvelope { job: JobView::from(job) }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// Only jobs in this state.
    status: Option<JobStatus>,
    /// Only jobs of this kind.
    kind: Option<JobKind>,
    /// The `next_before` of the previous page.
    before: Option<JobId>,
    /// Page size, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// One page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    items: Vec<JobView>,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<JobId>,
}

/// `GET /v1/jobs?status=&kind=&before=&limit=` → `{items, next_before}`: the user's jobs, newest
/// first — what is running, what failed and can be retried.
#[utoipa::path(
    get,
    operation_id = "list_jobs",
    path = "/v1/jobs",
    tag = "jobs",
    summary = "List your jobs, newest first (optionally of one status and kind)",
    params(JobListQuery),
    responses((status = 200, description = "One page", body = JobPage)),
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    query: Result<Query<JobListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = super::page_limit(query.limit)?;
    let filter = store::jobs::JobFilter { status: query.status, kind: query.kind };
    let jobs = state.store.list_jobs(user_id, filter, query.before, limit).await?;
    let next_before = super::next_cursor(&jobs, limit, |job| job.job_id);
    Ok(Json(JobPage { items: jobs.into_iter().map(JobView::from).collect(), next_before }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this event id (a first connection's cursor; `Last-Event-ID` wins).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// A short-lived single-job token (`POST /v1/jobs/{id}/stream-token`), for `EventSource`.
    stream_token: Option<String>,
}

/// `GET /v1/jobs/{id}/events` (SSE). Resumes after `Last-Event-ID` (what browsers send on
/// reconnect) or `?after=N` (for a first connection); the header wins when both are present.
#[utoipa::path(
    get,
    operation_id = "job_events",
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    summary = "A job's events, as Server-Sent Events",
    description = "Each event has `id: <seq>` (1, 2, 3, … per job), `event: <type>` and the payload as \
        JSON `data` — see the `EventPayload` schema: its `type` is the SSE event name and its `data` the \
        SSE data. The stream replays the job's log after the cursor, then follows it live, and ends after \
        the job's one terminal event (`succeeded`, `failed` or `cancelled`). Comments (`:`) keep it alive. \
        Authenticate with a bearer token, the session cookie, or `?stream_token=` (for `EventSource`).",
    params(
        ("id" = JobId, Path, description = "The job"),
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0,
            description = "Resume after this event id (what browsers send on reconnect)"),
        EventsQuery,
    ),
    security(("bearer" = []), ("session_cookie" = []), ()),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream",
            body = fastnpc_shared::events::EventPayload),
    ),
)]
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
    let header_cursor =
        headers.get("last-event-id").map(|v| v.to_str().ok().and_then(event_id).ok_or("Last-Event-ID")).transpose();
    let query_cursor = query.after.map(|s| event_id(&s).ok_or("after")).transpose();
    let after = match (header_cursor, query_cursor) {
        (Err(name), _) | (_, Err(name)) => {
            return Err(ApiError::bad_request(format!("{name} must be a non-negative integer event id")));
        }
        (Ok(header), Ok(query)) => header.or(query).unwrap_or(0),
    };
    let job = state.store.job(user_id, job_id).await?.ok_or(ApiError::NotFound)?;
    Ok(sse::response(sse::job_events(state, job, after).await))
}

/// An event id a client sends back: a non-negative integer that fits the 63 bits ids are
/// described with (clients in languages without unsigned 64-bit integers read them too).
fn event_id(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&id| i64::try_from(id).is_ok())
}

/// `POST /v1/jobs/{id}/retry` → `202 {job}`: a new job that does what a failed or cancelled job
/// set out to do (the old job stays as it ended). A chat reply is retried only while its message
/// has no reply and no other attempt on its way.
#[utoipa::path(
    post,
    operation_id = "retry_job",
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    summary = "Retry a failed or cancelled job (as a new job)",
    params(("id" = JobId, Path, description = "The failed or cancelled job")),
    responses(
        (status = 202, description = "The new job", body = RetryAccepted,
            headers(("Location" = String, description = "The new job's URL"))),
        (status = 409, description = "`/problems/job-not-retryable`: the job did not fail nor was cancelled, \
            or what it set out to do is done or on its way", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 429, description = "Too many jobs for this user (`Retry-After`)", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
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
                JobGuard::MessageUnanswered(message_id),
                "this message already has a reply, or one on its way",
            )
        }
        JobKind::GenerateCharacter => {
            let character_id = job.character_id.ok_or(ApiError::NotFound)?;
            (
                None,
                job.progress_total,
                JobGuard::CharacterFailed { user_id, character_id },
                "the character is not in a failed state",
            )
        }
        JobKind::CompressMemory | JobKind::CompressGroupMemory => {
            (job.character_id.map(store::jobs::serial::memory), 0, JobGuard::None, "")
        }
        JobKind::GroupTurn => (job.group_id.map(store::jobs::serial::group), 0, JobGuard::None, ""),
        JobKind::RegenerateCharacter => {
            let character_id = job.character_id.ok_or(ApiError::NotFound)?;
            (
                Some(store::jobs::serial::regeneration(character_id)),
                job.progress_total,
                JobGuard::CharacterReady { user_id, character_id },
                "the character is not ready",
            )
        }
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
        params: job.params.as_ref(),
    };
    let outcome = state.store.submit_guarded(retry, guard, &crate::limits::quota(&state)).await?;
    if outcome == Submitted::GuardFailed {
        return Err(conflict(refusal));
    }
    crate::limits::created(&state, outcome)?;
    state.background.spawn(super::characters::enqueue(state.clone(), new_id, job.kind));
    let body = RetryAccepted { job: JobLinks::new(new_id, JobStatus::Queued), retry_of: job_id };
    Ok(super::with_location(axum::http::StatusCode::ACCEPTED, &body, &format!("/v1/jobs/{new_id}")))
}

/// `POST /v1/jobs/{id}/cancel` → `{job}`. Idempotent. A queued job is cancelled at once (it will
/// never start) and answers `200`; a running job is asked to stop — its worker drops its
/// in-flight LLM requests and ends it `cancelled` — and answers `202` with the job as it is now;
/// a finished job answers `200` unchanged.
#[utoipa::path(
    post,
    operation_id = "cancel_job",
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job (idempotent)",
    params(("id" = JobId, Path, description = "The job")),
    responses(
        (status = 200, description = "Cancelled (it was queued), or already finished: the job as it is", body = JobEnvelope),
        (status = 202, description = "Running: its worker was asked to stop; the job as it is now", body = JobEnvelope),
    ),
)]
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
    Ok((status, Json(JobEnvelope { job: JobView::from(job) })).into_response())
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
#[utoipa::path(
    post,
    operation_id = "create_stream_token",
    path = "/v1/jobs/{id}/stream-token",
    tag = "jobs",
    summary = "A short-lived token to read one job's events with `EventSource`",
    params(("id" = JobId, Path, description = "The job")),
    responses((status = 200, description = "The token", body = StreamToken)),
)]
pub async fn stream_token(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<StreamToken>, ApiError> {
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
    Ok(Json(StreamToken {
        expires_in: fastnpc_shared::stream_tokens::STREAM_TOKEN_TTL.as_secs(),
        events_url: format!("/v1/jobs/{job_id}/events?stream_token={token}"),
        stream_token: token,
    }))
}

/// A single-job stream token.
#[derive(Serialize, ToSchema)]
pub struct StreamToken {
    stream_token: String,
    /// Seconds the token is valid for.
    expires_in: u64,
    /// The events URL with the token in it.
    events_url: String,
}

/// A retry's new job.
#[derive(Serialize, ToSchema)]
pub struct RetryAccepted {
    job: JobLinks,
    /// The job retried.
    retry_of: JobId,
}
