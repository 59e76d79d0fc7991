//! Routes, one module per resource. Paths are `/v1/...`; health probes are unversioned.

use axum::{
    Router,
    routing::{delete, get, post, put},
};

use crate::state::AppState;

pub mod admin;
pub mod api_keys;
pub mod auth;
pub mod characters;
pub mod groups;
pub mod health;
pub mod jobs;
pub mod memories;
pub mod messages;
pub mod sources;
pub mod system;
pub mod usage;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/logout-everywhere", post(auth::logout_everywhere))
        .route("/v1/system", get(system::get))
        .route("/v1/me", get(auth::me).patch(auth::update_me).delete(auth::delete_me))
        .route("/v1/me/usage", get(usage::mine))
        .route("/v1/auth/password", post(auth::change_password))
        .route("/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route("/v1/sources/search", get(sources::search))
        .route("/v1/characters", post(characters::create).get(characters::list))
        .route("/v1/characters/{id}", get(characters::get).delete(characters::delete))
        .route("/v1/characters/{id}/messages", post(messages::send).get(messages::history))
        .route("/v1/characters/{id}/memories", get(memories::get).merge(put(memories::replace)))
        .route("/v1/groups", post(groups::create).get(groups::list))
        .route("/v1/groups/{id}", get(groups::get).patch(groups::patch).delete(groups::delete))
        .route("/v1/groups/{id}/members", post(groups::add_member))
        .route("/v1/groups/{id}/members/{character_id}", delete(groups::remove_member))
        .route("/v1/groups/{id}/messages", post(groups::send).get(groups::history))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/stream-token", post(jobs::stream_token))
        .route("/v1/jobs/{id}/events", get(jobs::events))
        .route("/v1/admin/users", get(admin::list_users))
        .route("/v1/admin/users/{id}/disable", post(admin::disable_user))
        .route("/v1/admin/users/{id}/enable", post(admin::enable_user))
        .route("/v1/admin/stats", get(admin::stats))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
}

/// Parses a path id; a malformed id is as unknown as a missing one.
pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str) -> Result<T, crate::error::ApiError> {
    raw.parse().map_err(|_| crate::error::ApiError::NotFound)
}

/// A JSON response with a `Location` header (`201` for a created resource, `202` for a job).
pub(crate) fn with_location(
    status: axum::http::StatusCode,
    body: serde_json::Value,
    location: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(location) = axum::http::HeaderValue::from_str(location) {
        response.headers_mut().insert(axum::http::header::LOCATION, location);
    }
    response
}

/// A listing's page size: `limit`, 50 by default, 1 to 200.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, crate::error::ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(crate::error::ApiError::invalid_field("limit must be between 1 and 200"));
    }
    Ok(limit)
}

/// `?include=prompt`: whether to show replies' system prompts.
pub(crate) fn include_prompt(include: Option<&str>) -> Result<bool, crate::error::ApiError> {
    match include {
        None => Ok(false),
        Some("prompt") => Ok(true),
        Some(other) => {
            Err(crate::error::ApiError::invalid_field(format!("include: unknown value `{other}`; use `prompt`")))
        }
    }
}

/// `?before=<message id>&limit=&include=prompt`: a page of a conversation's history.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub before: Option<fastnpc_shared::ids::MessageId>,
    pub limit: Option<i64>,
    pub include: Option<String>,
}
