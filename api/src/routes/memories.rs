//! A character's memory: view and edit both layers.

use axum::{
    Json,
    extract::{Path, State},
};
use fastnpc_shared::{ids::CharacterId, store::memories::MemoryEntry};
use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_id;
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    state::AppState,
};

pub(crate) const MAX_ENTRIES: usize = 500;
pub(crate) const MAX_ENTRY_CHARS: usize = 1000;

/// `GET /v1/characters/{id}/memories` → `{short_term, long_term, version, compressing}`;
/// `compressing`: a compression that will rewrite them is queued or running.
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let memories = state.store.memories(character_id).await?;
    let compressing = state.store.compression_pending(character_id).await?;
    Ok(Json(json!({
        "short_term": memories.short_term,
        "long_term": memories.long_term,
        "version": memories.version,
        "compressing": compressing,
    })))
}

/// An entry as a client may send it: a bare string or `{content, importance}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum EntryInput {
    Text(String),
    Entry(MemoryEntry),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceMemories {
    short_term: Vec<EntryInput>,
    long_term: Vec<EntryInput>,
}

fn validate(layer: &str, entries: Vec<EntryInput>) -> Result<Vec<MemoryEntry>, ApiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::invalid_field(format!("{layer}: at most {MAX_ENTRIES} entries")));
    }
    entries
        .into_iter()
        .map(|entry| {
            let entry = match entry {
                EntryInput::Text(content) => MemoryEntry::new(content),
                EntryInput::Entry(entry) => entry,
            };
            let chars = entry.content.trim().chars().count();
            if chars == 0 || chars > MAX_ENTRY_CHARS {
                return Err(ApiError::invalid_field(format!(
                    "{layer}: entries must have 1 to {MAX_ENTRY_CHARS} characters"
                )));
            }
            if entry.importance.is_some_and(|i| !(0..=15).contains(&i)) {
                return Err(ApiError::invalid_field(format!("{layer}: importance is 0 to 15")));
            }
            Ok(MemoryEntry { content: entry.content.trim().to_owned(), importance: entry.importance })
        })
        .collect()
}

/// `PUT /v1/characters/{id}/memories` with `{short_term, long_term}` → the stored memories.
/// Replaces both layers; a compression running meanwhile notices and starts over.
pub async fn replace(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplaceMemories>,
) -> Result<Json<Value>, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let short_term = validate("short_term", body.short_term)?;
    let long_term = validate("long_term", body.long_term)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    state.store.replace_memories(character_id, &short_term, &long_term).await?;
    get(State(state), AuthUser(user_id), Path(id)).await
}
