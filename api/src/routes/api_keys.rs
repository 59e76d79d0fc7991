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
use serde_json::{Value, json};

use super::{parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{API_KEY_PREFIX, ApiJson, AuthUser, token_hash},
    state::AppState,
};

const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
}

#[derive(Serialize)]
struct KeyView {
    id: uuid::Uuid,
    name: String,
    prefix: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// `POST /v1/api-keys` with `{name}` → `201 {api_key, key}`: `key` is the secret, shown this
/// once (only its SHA-256 is stored).
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
    let body = json!({"api_key": view(record), "key": key});
    Ok(with_location(StatusCode::CREATED, body, &format!("/v1/api-keys/{key_id}")))
}

fn view(record: store::api_keys::ApiKeyRecord) -> KeyView {
    KeyView {
        id: record.key_id,
        name: record.name,
        prefix: record.prefix,
        created_at: record.created_at,
        last_used_at: record.last_used_at,
        revoked_at: record.revoked_at,
    }
}

/// `GET /v1/api-keys` → `{items}` (no secrets).
pub async fn list(State(state): State<AppState>, AuthUser(user_id): AuthUser) -> Result<Json<Value>, ApiError> {
    let items: Vec<KeyView> = state.store.list_api_keys(user_id).await?.into_iter().map(view).collect();
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /v1/api-keys/{id}` → `204`: the key stops working at once.
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
