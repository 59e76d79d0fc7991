//! API keys for scripts: created (shown once), listed (never shown again), revoked.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use fastnpc_shared::store;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{API_KEY_PREFIX, ApiJson, AuthUser, token_hash},
    state::AppState,
};

const MAX_NAME_CHARS: usize = 64;

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for: 1 to 64 characters after trimming, no control characters.
    name: String,
}

/// An API key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    id: uuid::Uuid,
    name: String,
    /// The secret's first characters (`fnpk_` and six more), to tell keys apart.
    prefix: String,
    created_at: DateTime<Utc>,
    /// Recorded at most once a minute; null if never used.
    last_used_at: Option<DateTime<Utc>>,
    /// Null while the key works.
    revoked_at: Option<DateTime<Utc>>,
}

/// A new key and its secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreated {
    api_key: ApiKeyView,
    /// The secret (`fnpk_…`): send it as `Authorization: Bearer <key>`. Only its SHA-256 is kept.
    key: String,
}

/// `{items}`: the caller's API keys, newest first, revoked ones included.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    items: Vec<ApiKeyView>,
}

/// `POST /v1/api-keys` with `{name}` → `201 {api_key, key}`: `key` is the secret, shown this
/// once (only its SHA-256 is stored).
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    operation_id = "create_api_key",
    tag = "auth",
    summary = "Create an API key (its secret is shown this once)",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created: the key and its secret", body = ApiKeyCreated,
            headers(("Location" = String, description = "The key's URL (for `DELETE`)"))),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("{API_KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let prefix: String = key.chars().take(API_KEY_PREFIX.len() + 6).collect();
    let key_id = uuid::Uuid::now_v7();
    state.store.insert_api_key(key_id, user_id, name, &prefix, &token_hash(&key)).await?;
    let record = state.store.list_api_keys(user_id).await?.into_iter().find(|k| k.key_id == key_id);
    let record = record.ok_or(ApiError::NotFound)?;
    let body = ApiKeyCreated { api_key: view(record), key };
    Ok(with_location(StatusCode::CREATED, &body, &format!("/v1/api-keys/{key_id}")))
}

fn view(record: store::api_keys::ApiKeyRecord) -> ApiKeyView {
    ApiKeyView {
        id: record.key_id,
        name: record.name,
        prefix: record.prefix,
        created_at: record.created_at,
        last_used_at: record.last_used_at,
        revoked_at: record.revoked_at,
    }
}

/// `GET /v1/api-keys` → `{items}` (no secrets).
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "auth",
    summary = "List your API keys (without their secrets)",
    responses((status = 200, description = "The keys", body = ApiKeyList)),
)]
pub async fn list(State(state): State<AppState>, AuthUser(user_id): AuthUser) -> Result<Json<ApiKeyList>, ApiError> {
    let items = state.store.list_api_keys(user_id).await?.into_iter().map(view).collect();
    Ok(Json(ApiKeyList { items }))
}

/// `DELETE /v1/api-keys/{id}` → `204`: the key stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revoke_api_key",
    tag = "auth",
    summary = "Revoke an API key",
    description = "The key stops working at once; it stays listed, with `revoked_at`. Idempotent.",
    params(("id" = Uuid, Path, description = "The key")),
    responses((status = 204, description = "Revoked (or already revoked)")),
)]
pub async fn revoke(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key_id: uuid::Uuid = parse_id(&id)?;
    if state.store.revoke_api_key(user_id, key_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
