//! The API's error type and its rendering as RFC 9457 problem details.
//!
//! Handlers return `Result<_, ApiError>`. Client errors carry a detail that names what is wrong;
//! server errors are logged here, once, with their cause, and the client gets a generic detail
//! (no SQL, no internal messages).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid (400 or 422 depending on `status`).
    #[error("{detail}")]
    Invalid { status: StatusCode, code: &'static str, detail: String },
    #[error("authentication required")]
    Unauthorized { detail: &'static str },
    /// Missing or belonging to someone else: the two are indistinguishable on purpose.
    #[error("not found")]
    NotFound,
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    /// An `If-Match` that no longer names the current version: 412, naming the current one.
    #[error("{detail}")]
    PreconditionFailed { detail: String },
    /// An encyclopedia title that names several entries: 409 listing them (`candidates`), so the
    /// client asks its user to choose instead of the server picking one.
    #[error("{detail}")]
    Ambiguous { detail: String, candidates: Vec<fastnpc_shared::sources::Candidate> },
    /// A source the request needed answered with an error or not at all: 502, naming it.
    #[error("{detail}")]
    SourceFailed { code: &'static str, detail: String },
    /// A rate limit: retry after the given time.
    #[error("{detail}")]
    TooManyRequests { retry_after: std::time::Duration, detail: String },
    /// A dependency is down; the client may retry.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// This process is at a capacity bound (concurrent password hashing) and the request waited
    /// its turn as long as it may: 503 with `Retry-After`; nothing was done.
    #[error("{detail}")]
    Busy { retry_after: std::time::Duration, detail: &'static str },
    /// The request took longer than the request timeout (`FASTNPC_HTTP_REQUEST_TIMEOUT_SECS`)
    /// and its handler was dropped. 503 rather than 408: 408 says the *client* was too slow
    /// sending its request (RFC 9110 §15.5.9), while here the server failed to answer in time, a
    /// transient condition of ours that 503 + `Retry-After` describes (§15.6.4) and that clients
    /// already handle like the other `unavailable` problem.
    #[error("the request timed out after {0:?}")]
    TimedOut(std::time::Duration),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 400 with a detail naming the problem.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::Invalid { status: StatusCode::BAD_REQUEST, code: "bad-request", detail: detail.into() }
    }

    /// 409 `/problems/character-not-ready`: the character is `status` (generating or failed), so
    /// `consequence` (what the request would need, or when it can be made).
    pub fn character_not_ready(status: &str, consequence: &str) -> Self {
        Self::Conflict { code: "character-not-ready", detail: format!("the character is {status}; {consequence}") }
    }

    /// 422: well-formed, but a field's value is unacceptable.
    pub fn invalid_field(detail: impl Into<String>) -> Self {
        Self::Invalid { status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid-field", detail: detail.into() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // Pool exhaustion, an unreachable or restarting server, a lost race: the database is
            // the problem, not us, and a retry may succeed.
            error if fastnpc_shared::store::is_transient(&error) => Self::Unavailable(format!("database: {error}")),
            other => Self::Internal(anyhow::Error::new(other).context("database query failed")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title, detail) = match &self {
            Self::Invalid { status, code, detail } => (*status, *code, "Invalid request", detail.clone()),
            Self::Unauthorized { detail } => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required", (*detail).to_owned())
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "not-found", "Not found", "no such resource".to_owned()),
            Self::Conflict { code, detail } => (StatusCode::CONFLICT, *code, "Conflict", detail.clone()),
            Self::PreconditionFailed { detail } => {
                (StatusCode::PRECONDITION_FAILED, "version-mismatch", "Precondition failed", detail.clone())
            }
            Self::Ambiguous { detail, .. } => {
                (StatusCode::CONFLICT, "ambiguous-source", "The title names several entries", detail.clone())
            }
            Self::SourceFailed { code, detail } => (StatusCode::BAD_GATEWAY, *code, "Source failed", detail.clone()),
            Self::TooManyRequests { detail, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests", detail.clone())
            }
            Self::Unavailable(cause) => {
                tracing::error!(%cause, "dependency unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    "a backing service is unavailable; retry shortly".to_owned(),
                )
            }
            Self::Busy { detail, .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy", "Server busy", (*detail).to_owned()),
            Self::TimedOut(after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "request-timeout",
                "Request timed out",
                format!(
                    "no answer within {} s; the request was abandoned and may or may not have taken effect \
                     (retry with the same Idempotency-Key, or check)",
                    after.as_secs()
                ),
            ),
            Self::Internal(cause) => {
                tracing::error!(cause = format!("{cause:#}"), "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "an unexpected error occurred".to_owned(),
                )
            }
        };
        let mut body = json!({
            "type": format!("/problems/{code}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        if let Self::Ambiguous { candidates, .. } = &self {
            body["candidates"] = json!(candidates);
        }
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match self {
            Self::Unauthorized { .. } => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable(_) | Self::TimedOut(_) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            Self::TooManyRequests { retry_after, .. } | Self::Busy { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        response
    }
}

/// Turns the plain-text or empty 4xx answers of the layers below the handlers (the body limit's
/// 413, the router's 405, axum's path and query rejections) into problem details, so a client
/// parses one error format. The original text, when there is one, becomes the detail.
pub async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/problem+json"));
    if !status.is_client_error() || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let (code, fallback) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body-too-large", "the request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "this route does not accept this method"),
        StatusCode::NOT_FOUND => ("not-found", "no such resource"),
        _ => ("bad-request", "the request is malformed"),
    };
    let detail = match text {
        Ok(text) if !text.trim().is_empty() => text,
        _ => fallback.to_owned(),
    };
    let mut problem = ApiError::Invalid { status, code, detail }.into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}
