//! A character's memory: view and edit both layers.

use axum::{
    Json,
    extract::{Path, State},
};
use fastnpc_shared::{ids::CharacterId, store::memories::MemoryEntry};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::parse_id;
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    state::AppState,
};

pub(crate) const MAX_ENTRIES: usize = 500;
pub(crate) const MAX_ENTRY_CHARS: usize = 1000;

/// A character's memory: both layers, in order, as of one version.
#[derive(Serialize, ToSchema)]
pub struct MemoryLayers {
    /// Recent facts, `subject | action/state/fact | object`.
    short_term: Vec<MemoryEntryView>,
    /// Integrated memories, each with its importance.
    long_term: Vec<MemoryEntryView>,
    /// Bumped by every write.
    version: i64,
    /// A compression that will rewrite the layers is queued or running.
    compressing: bool,
}

/// One memory entry.
#[derive(Serialize, ToSchema)]
pub struct MemoryEntryView {
    content: String,
    /// 0 to 15, for long-term entries (absent when none was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    importance: Option<i16>,
}

impl From<MemoryEntry> for MemoryEntryView {
    fn from(entry: MemoryEntry) -> Self {
        Self { content: entry.content, importance: entry.importance }
    }
}

/// `GET /v1/characters/{id}/memories` → `{short_term, long_term, version, compressing}`;
/// `compressing`: a compression that will rewrite them is queued or running.
#[utoipa::path(
    get,
    path = "/v1/characters/{id}/memories",
    operation_id = "get_memories",
    tag = "chat",
    summary = "A character's short- and long-term memory",
    params(("id" = CharacterId, Path, description = "The character")),
    responses((status = 200, description = "Both layers", body = MemoryLayers)),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<MemoryLayers>, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let memories = state.store.memories(character_id).await?;
    let compressing = state.store.compression_pending(character_id).await?;
    Ok(Json(MemoryLayers {
        short_term: memories.short_term.into_iter().map(Into::into).collect(),
        long_term: memories.long_term.into_iter().map(Into::into).collect(),
        version: memories.version,
        compressing,
    }))
}

/// An entry as a client may send it: a bare string or `{content, importance}`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MemoryEntryInput {
    /// The entry's text: 1 to 1000 characters (after trimming).
    Text(String),
    /// An entry with its importance.
    Entry {
        /// 1 to 1000 characters (after trimming).
        content: String,
        /// 0 to 15.
        #[serde(default)]
        #[schema(minimum = 0, maximum = 15)]
        importance: Option<i16>,
    },
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceMemories {
    /// At most 500 entries.
    #[schema(max_items = 500)]
    short_term: Vec<MemoryEntryInput>,
    /// At most 500 entries.
    #[schema(max_items = 500)]
    long_term: Vec<MemoryEntryInput>,
}

fn validate(layer: &str, entries: Vec<MemoryEntryInput>) -> Result<Vec<MemoryEntry>, ApiError> {
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::invalid_field(format!("{layer}: at most {MAX_ENTRIES} entries")));
    }
    entries
        .into_iter()
        .map(|entry| {
            let entry = match entry {
                MemoryEntryInput::Text(content) => MemoryEntry::new(content),
                MemoryEntryInput::Entry { content, importance } => MemoryEntry { content, importance },
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
#[utoipa::path(
    put,
    path = "/v1/characters/{id}/memories",
    operation_id = "replace_memories",
    tag = "chat",
    summary = "Replace a character's memory (both layers)",
    description = "Replaces both layers whole and bumps `version`; a compression running meanwhile notices \
        and starts over from the new layers.",
    params(("id" = CharacterId, Path, description = "The character")),
    request_body = ReplaceMemories,
    responses((status = 200, description = "The memory as stored", body = MemoryLayers)),
)]
pub async fn replace(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReplaceMemories>,
) -> Result<Json<MemoryLayers>, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let short_term = validate("short_term", body.short_term)?;
    let long_term = validate("long_term", body.long_term)?;
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    state.store.replace_memories(character_id, &short_term, &long_term).await?;
    get(State(state), AuthUser(user_id), Path(id)).await
}
