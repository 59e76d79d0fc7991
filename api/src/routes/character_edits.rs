//! Editing a character: `PATCH` (JSON Merge Patch, RFC 7396) of its name, brief and profile,
//! the numbered versions every change leaves, and restoring one of them.
//!
//! Every generation, edit and restore writes the next version; the character's `version` is the
//! current one and its `ETag` (`"<version>"`). A `PATCH` or restore with `If-Match` applies only
//! to that version (`412` otherwise), so two editors cannot silently overwrite each other; without
//! it the patch is merged into whatever is current (a concurrent edit is merged again, never lost).
//! A patch is validated against the category table (`fastnpc_shared::domain::profile`): a field
//! that is not there, a value of the wrong shape or the removal of a required field is a `422`
//! naming the field, and nothing is written. Chat prompts read the current version; each reply's
//! prompt snapshot shows the text it used.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    domain::profile::{CATEGORIES, CategorySpec, FieldSpec},
    ids::{CharacterId, UserId},
    store::characters::{CharacterEdit, CharacterRecord, CharacterVersion, CharacterVersionSummary, Edited},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{characters::CharacterWithJob, page_limit, parse_id};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    state::AppState,
};

/// Longest brief an edit may write.
pub(crate) const MAX_BRIEF_CHARS: usize = 2_000;
/// Longest text of one profile field (or of one item of a list field).
pub(crate) const MAX_FIELD_CHARS: usize = 4_000;
/// Most items of a list field.
pub(crate) const MAX_LIST_ITEMS: usize = 100;
/// How often a patch without `If-Match` is merged again when another edit came first.
const MERGE_ATTEMPTS: usize = 3;

/// A strong `ETag` of `tag` (a character's version, a picture's digest: digits and letters).
pub(crate) fn etag(tag: impl std::fmt::Display) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{tag}\"")).expect("a tag of digits and letters, quoted")
}

/// The character (and its generation job) with its `ETag`.
pub(crate) async fn character_response(state: &AppState, character: CharacterRecord) -> Result<Response, ApiError> {
    let version = character.version;
    let body = CharacterWithJob::new(state, character).await?;
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    Ok(response)
}

/// A character just made (a copy, an import): `201` with its `Location` and `ETag`.
pub(crate) async fn created_character_response(
    state: &AppState,
    character: CharacterRecord,
) -> Result<Response, ApiError> {
    let location =
        HeaderValue::from_str(&format!("/v1/characters/{}", character.character_id)).expect("an id is ASCII");
    let mut response = character_response(state, character).await?;
    *response.status_mut() = axum::http::StatusCode::CREATED;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// What an `If-Match` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Precondition {
    /// No header: apply to whatever is current.
    None,
    /// `*`: any current version (the character exists).
    Any,
    /// One of these versions (strong comparison: a weak tag matches nothing).
    Versions(Vec<i64>),
}

impl Precondition {
    fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let values: Vec<&HeaderValue> = headers.get_all(header::IF_MATCH).iter().collect();
        if values.is_empty() {
            return Ok(Self::None);
        }
        let malformed = || ApiError::bad_request("If-Match must be `*` or a list of ETags such as \"3\"");
        let mut versions = Vec::new();
        for value in values {
            for tag in value.to_str().map_err(|_| malformed())?.split(',').map(str::trim) {
                if tag == "*" {
                    return Ok(Self::Any);
                }
                if let Some(_weak) = tag.strip_prefix("W/") {
                    continue;
                }
                let inner = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).ok_or_else(malformed)?;
                // A well-formed tag that is not one of ours simply never matches.
                if let Ok(version) = inner.parse() {
                    versions.push(version);
                }
            }
        }
        Ok(Self::Versions(versions))
    }

    fn check(&self, current: i64) -> Result<(), ApiError> {
        match self {
            Self::Versions(versions) if !versions.contains(&current) => Err(ApiError::PreconditionFailed {
                detail: format!(
                    "the character is at version {current} (ETag \"{current}\"), not the one If-Match names; \
                     read it again and reapply the change"
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// A character's name, brief and profile after a patch, and the paths it changed.
#[derive(Debug, PartialEq)]
struct Draft {
    name: String,
    brief: Option<String>,
    profile: Value,
    changed: Vec<String>,
}

/// Applies a JSON Merge Patch to `current`'s name, brief and profile. Every refusal is a 422
/// naming the field.
fn apply_patch(current: &CharacterRecord, patch: &Value) -> Result<Draft, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid_field("the patch must be a JSON object with name, brief and/or profile"));
    };
    let mut draft = Draft {
        name: current.name.clone(),
        brief: current.brief.clone(),
        profile: current.profile.clone().unwrap_or_else(|| json!({})),
        changed: Vec::new(),
    };
    for (key, value) in patch {
        match key.as_str() {
            "name" => {
                let Value::String(name) = value else {
                    return Err(ApiError::invalid_field("name must be a string (it cannot be removed)"));
                };
                let name = super::characters::validate_name(name)?;
                if name != draft.name {
                    draft.name = name;
                    draft.changed.push("name".to_owned());
                }
            }
            "brief" => {
                let brief = match value {
                    Value::Null => None,
                    Value::String(brief) if brief.chars().count() > MAX_BRIEF_CHARS => {
                        return Err(ApiError::invalid_field(format!(
                            "brief is longer than {MAX_BRIEF_CHARS} characters"
                        )));
                    }
                    Value::String(brief) => Some(brief.clone()),
                    _ => return Err(ApiError::invalid_field("brief must be a string, or null to remove it")),
                };
                if brief != draft.brief {
                    draft.brief = brief;
                    draft.changed.push("brief".to_owned());
                }
            }
            "profile" => merge_profile(&mut draft, value)?,
            other => {
                return Err(ApiError::invalid_field(format!(
                    "`{other}` cannot be edited: a patch may hold name, brief and profile"
                )));
            }
        }
    }
    Ok(draft)
}

/// A profile from outside (a card's `extensions.fastnpc`) checked as an edit would be: every
/// category and field known and of its shape; missing fields empty, so the profile is complete.
pub(crate) fn complete_profile(profile: &Value) -> Result<Value, ApiError> {
    let empty = fastnpc_shared::domain::profile::empty_profile();
    let mut draft = Draft { name: String::new(), brief: None, profile: Value::Object(empty), changed: Vec::new() };
    merge_profile(&mut draft, profile)?;
    Ok(draft.profile)
}

fn merge_profile(draft: &mut Draft, patch: &Value) -> Result<(), ApiError> {
    let Value::Object(categories) = patch else {
        return Err(ApiError::invalid_field("profile must be an object of categories (it cannot be removed)"));
    };
    let profile = draft.profile.as_object_mut().expect("a profile is an object");
    for (category_key, fields) in categories {
        let category = CategorySpec::by_key(category_key).ok_or_else(|| {
            let known: Vec<&str> = CATEGORIES.iter().map(|c| c.key).collect();
            ApiError::invalid_field(format!(
                "profile.{category_key} is not a category (the categories are {})",
                known.join(", ")
            ))
        })?;
        let Value::Object(fields) = fields else {
            return Err(ApiError::invalid_field(format!(
                "profile.{category_key} must be an object of fields (a category cannot be removed)"
            )));
        };
        let stored = profile.entry(category_key.clone()).or_insert_with(|| Value::Object(Map::new()));
        let stored = stored
            .as_object_mut()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored category {category_key} is not an object")))?;
        for (field_key, value) in fields {
            let path = format!("profile.{category_key}.{field_key}");
            let field = category.fields.iter().find(|f| f.key == field_key).ok_or_else(|| {
                let known: Vec<&str> = category.fields.iter().map(|f| f.key).collect();
                ApiError::invalid_field(format!(
                    "{path} is not a field of {category_key} (its fields are {})",
                    known.join(", ")
                ))
            })?;
            validate_field(field, value, &path)?;
            if stored.get(field_key) != Some(value) {
                stored.insert(field_key.clone(), value.clone());
                draft.changed.push(path);
            }
        }
    }
    Ok(())
}

fn validate_field(field: &FieldSpec, value: &Value, path: &str) -> Result<(), ApiError> {
    let too_long = || ApiError::invalid_field(format!("{path} is longer than {MAX_FIELD_CHARS} characters"));
    match (field.list, value) {
        (false, Value::String(text)) => {
            if text.chars().count() > MAX_FIELD_CHARS {
                return Err(too_long());
            }
        }
        (true, Value::Array(items)) => {
            if items.len() > MAX_LIST_ITEMS {
                return Err(ApiError::invalid_field(format!("{path} has more than {MAX_LIST_ITEMS} items")));
            }
            for item in items {
                let Value::String(text) = item else {
                    return Err(ApiError::invalid_field(format!("{path} must be a list of strings")));
                };
                if text.chars().count() > MAX_FIELD_CHARS {
                    return Err(too_long());
                }
            }
        }
        (false, Value::Null) => {
            return Err(ApiError::invalid_field(format!(
                "{path} cannot be removed (every field is part of the profile); write \"\" to empty it"
            )));
        }
        (true, Value::Null) => {
            return Err(ApiError::invalid_field(format!(
                "{path} cannot be removed (every field is part of the profile); write [] to empty it"
            )));
        }
        (false, _) => return Err(ApiError::invalid_field(format!("{path} must be a string"))),
        (true, _) => return Err(ApiError::invalid_field(format!("{path} must be a list of strings"))),
    }
    Ok(())
}

/// A JSON Merge Patch of a character (RFC 7396): the members present replace the stored ones.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the body; the handler reads it as JSON to tell null from absent.
pub struct PatchCharacter {
    /// 1 to 64 characters (after trimming; NFC), no control characters; cannot be removed.
    #[schema(min_length = 1, max_length = 64)]
    name: Option<String>,
    /// Up to 2,000 characters; null removes it.
    #[schema(max_length = 2000)]
    brief: Option<String>,
    /// Categories to change, each with the fields to change: `{"personality": {"traits":
    /// "..."}}`. Text fields take a string (up to 4,000 characters), list fields
    /// (`background.experiences`, `background.relationships`) a list of up to 100 strings. Fields
    /// and categories cannot be removed.
    #[schema(value_type = Option<Object>)]
    profile: Option<Value>,
}

/// Loads the user's character, or 404.
async fn owned(state: &AppState, user_id: UserId, character_id: CharacterId) -> Result<CharacterRecord, ApiError> {
    state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)
}

fn not_ready(status: &str) -> ApiError {
    ApiError::character_not_ready(status, "it can be edited once it is ready")
}

/// Writes the next version built by `build` from the current character, under `precondition`;
/// without `If-Match`, a concurrent change makes it build again from the newer version.
async fn write_version(
    state: &AppState,
    user_id: UserId,
    character_id: CharacterId,
    precondition: Precondition,
    change: &'static str,
    build: impl Fn(&CharacterRecord) -> Result<(Draft, Value), ApiError>,
) -> Result<Response, ApiError> {
    for _ in 0..MERGE_ATTEMPTS {
        let current = owned(state, user_id, character_id).await?;
        precondition.check(current.version)?;
        if current.status != "ready" {
            return Err(not_ready(&current.status));
        }
        let (draft, detail) = build(&current)?;
        if change == "edited" && draft.changed.is_empty() {
            return character_response(state, current).await;
        }
        let edit = CharacterEdit {
            name: &draft.name,
            brief: draft.brief.as_deref(),
            profile: &draft.profile,
            change,
            detail: &detail,
        };
        match state.store.edit_character(user_id, character_id, current.version, edit).await? {
            Edited::Saved(saved) => return character_response(state, *saved).await,
            Edited::NotFound => return Err(ApiError::NotFound),
            Edited::NotReady(status) => return Err(not_ready(&status)),
            // The next round reads the newer version: a 412 under If-Match, a fresh merge without.
            Edited::Stale(_) => {}
        }
    }
    Err(ApiError::Conflict {
        code: "edit-conflict",
        detail: "the character kept changing while this edit was applied; retry it".to_owned(),
    })
}

/// `PATCH /v1/characters/{id}` with a JSON Merge Patch → `200 {character, job}` and the new
/// `ETag`.
#[utoipa::path(
    patch,
    operation_id = "edit_character",
    path = "/v1/characters/{id}",
    tag = "characters",
    summary = "Edit a character's name, brief or profile (JSON Merge Patch)",
    description = "Members present replace the stored ones; the result is the character's next version. \
        With `If-Match: \"<version>\"` (the `ETag` of `GET`) it applies only to that version. A patch \
        that changes nothing writes no version.",
    params(
        ("id" = CharacterId, Path, description = "The character"),
        ("If-Match" = Option<String>, Header, description = "The ETag the edit was made from"),
    ),
    request_body(content = PatchCharacter, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The edited character", body = CharacterWithJob,
            headers(("ETag" = String, description = "Its new version"))),
        (status = 409, description = "`/problems/character-not-ready`: generating or failed",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 400, description = "An If-Match that is neither `*` nor a list of ETags",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`/problems/version-mismatch`: If-Match names an older version",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field that is not there, or a value of the wrong shape",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let precondition = Precondition::from_headers(&headers)?;
    write_version(&state, user_id, character_id, precondition, "edited", |current| {
        let draft = apply_patch(current, &patch)?;
        let detail = json!({ "fields": draft.changed });
        Ok((draft, detail))
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    /// The `next_before` of the previous page.
    before: Option<i64>,
    /// Page size, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// A version in a listing.
#[derive(Serialize, ToSchema)]
pub struct VersionItem {
    version: i64,
    /// `generated`, `edited`, `restored` or `imported`.
    change: String,
    /// What it touched: `{"fields": ["name", "profile.personality.traits"]}` for an edit,
    /// `{"from_version": 3}` for a restore.
    #[schema(value_type = Object)]
    detail: Value,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<CharacterVersionSummary> for VersionItem {
    fn from(v: CharacterVersionSummary) -> Self {
        Self { version: v.version, change: v.change, detail: v.detail, name: v.name, created_at: v.created_at }
    }
}

/// One page of a character's versions, newest first.
#[derive(Serialize, ToSchema)]
pub struct VersionPage {
    items: Vec<VersionItem>,
    /// The character's current version.
    current: i64,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<i64>,
}

/// `GET /v1/characters/{id}/versions?before=&limit=` → `{items, current, next_before}`.
#[utoipa::path(
    get,
    operation_id = "list_character_versions",
    path = "/v1/characters/{id}/versions",
    tag = "characters",
    summary = "A character's versions, newest first",
    params(("id" = CharacterId, Path, description = "The character"), VersionsQuery),
    responses((status = 200, description = "One page", body = VersionPage)),
)]
pub async fn versions(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<VersionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<VersionPage>, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let character = owned(&state, user_id, character_id).await?;
    let items = state.store.character_versions(user_id, character_id, query.before, limit).await?;
    let next_before = super::next_cursor(&items, limit, |v| v.version);
    Ok(Json(VersionPage {
        items: items.into_iter().map(Into::into).collect(),
        current: character.version,
        next_before,
    }))
}

/// One version, whole.
#[derive(Serialize, ToSchema)]
pub struct VersionView {
    version: i64,
    change: String,
    #[schema(value_type = Object)]
    detail: Value,
    name: String,
    brief: Option<String>,
    #[schema(value_type = Object)]
    profile: Value,
    created_at: DateTime<Utc>,
}

impl From<CharacterVersion> for VersionView {
    fn from(v: CharacterVersion) -> Self {
        Self {
            version: v.version,
            change: v.change,
            detail: v.detail,
            name: v.name,
            brief: v.brief,
            profile: v.profile,
            created_at: v.created_at,
        }
    }
}

async fn owned_version(
    state: &AppState,
    user_id: UserId,
    id: &str,
    version: &str,
) -> Result<(CharacterId, CharacterVersion), ApiError> {
    let character_id: CharacterId = parse_id(id)?;
    let version: i64 = parse_id(version)?;
    let found = state.store.character_version(user_id, character_id, version).await?.ok_or(ApiError::NotFound)?;
    Ok((character_id, found))
}

/// `GET /v1/characters/{id}/versions/{version}` → the version's name, brief and profile.
#[utoipa::path(
    get,
    operation_id = "get_character_version",
    path = "/v1/characters/{id}/versions/{version}",
    tag = "characters",
    summary = "One version of a character",
    params(
        ("id" = CharacterId, Path, description = "The character"),
        ("version" = i64, Path, description = "The version"),
    ),
    responses((status = 200, description = "The version", body = VersionView)),
)]
pub async fn version(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, version)): Path<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    let (_, found) = owned_version(&state, user_id, &id, &version).await?;
    Ok(Json(found.into()))
}

/// `POST /v1/characters/{id}/versions/{version}/restore` → `200 {character, job}`: the version's
/// name, brief and profile become the next version.
#[utoipa::path(
    post,
    operation_id = "restore_character_version",
    path = "/v1/characters/{id}/versions/{version}/restore",
    tag = "characters",
    summary = "Make an earlier version current again (as a new version)",
    params(
        ("id" = CharacterId, Path, description = "The character"),
        ("version" = i64, Path, description = "The version to restore"),
        ("If-Match" = Option<String>, Header, description = "The ETag the restore was decided on"),
    ),
    responses(
        (status = 200, description = "The character, restored", body = CharacterWithJob,
            headers(("ETag" = String, description = "Its new version"))),
        (status = 409, description = "`/problems/character-not-ready`: generating or failed",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 400, description = "An If-Match that is neither `*` nor a list of ETags",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 412, description = "`/problems/version-mismatch`: If-Match names an older version",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn restore(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path((id, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let (character_id, restored) = owned_version(&state, user_id, &id, &version).await?;
    write_version(&state, user_id, character_id, precondition, "restored", |_| {
        let draft = Draft {
            name: restored.name.clone(),
            brief: restored.brief.clone(),
            profile: restored.profile.clone(),
            changed: Vec::new(),
        };
        Ok((draft, json!({ "from_version": restored.version })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(profile: Value) -> CharacterRecord {
        CharacterRecord {
            character_id: CharacterId::new(),
            user_id: UserId::new(),
            name: "诸葛亮".into(),
            status: "ready".into(),
            source: json!({}),
            profile: Some(profile),
            brief: Some("丞相".into()),
            language: "zh".into(),
            prompt_version: None,
            avatar_etag: None,
            source_snapshot: None,
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn refusal(current: &CharacterRecord, patch: Value) -> String {
        match apply_patch(current, &patch) {
            Err(ApiError::Invalid { detail, .. }) => detail,
            other => panic!("expected a 422 for {patch}, got {other:?}"),
        }
    }

    #[test]
    fn a_merge_patch_replaces_what_it_names_and_lists_the_paths_it_changed() {
        let current = ready(
            json!({"personality": {"traits": "谨慎", "values": "忠"}, "background": {"experiences": ["隆中对"]}}),
        );
        let draft = apply_patch(
            &current,
            &json!({"name": " 孔明 ", "brief": null, "profile": {"personality": {"traits": "谨慎而果决", "values": "忠"},
                     "background": {"experiences": ["隆中对", "出师表"]}}}),
        )
        .unwrap();
        assert_eq!(draft.name, "孔明");
        assert_eq!(draft.brief, None);
        assert_eq!(draft.profile["personality"], json!({"traits": "谨慎而果决", "values": "忠"}));
        assert_eq!(draft.profile["background"]["experiences"], json!(["隆中对", "出师表"]));
        assert_eq!(
            draft.changed,
            ["brief", "name", "profile.background.experiences", "profile.personality.traits"],
            "values that did not change are not listed"
        );
        assert!(apply_patch(&current, &json!({"name": "诸葛亮"})).unwrap().changed.is_empty());
    }

    #[test]
    fn a_patch_that_does_not_fit_the_profile_is_refused_naming_the_field() {
        let current = ready(json!({"personality": {"traits": "谨慎"}}));
        assert!(refusal(&current, json!({"age": 3})).contains("`age`"));
        assert!(refusal(&current, json!({"name": null})).contains("name"));
        assert!(refusal(&current, json!({"name": ""})).contains("empty"));
        assert!(refusal(&current, json!({"profile": {"magic": {}}})).contains("profile.magic"));
        assert!(refusal(&current, json!({"profile": {"personality": null}})).contains("profile.personality"));
        assert!(
            refusal(&current, json!({"profile": {"personality": {"wings": "x"}}}))
                .contains("profile.personality.wings")
        );
        assert!(refusal(&current, json!({"profile": {"personality": {"traits": 7}}})).contains("must be a string"));
        assert!(refusal(&current, json!({"profile": {"personality": {"traits": null}}})).contains("cannot be removed"));
        assert!(
            refusal(&current, json!({"profile": {"background": {"experiences": "one"}}})).contains("list of strings")
        );
        assert!(
            refusal(&current, json!({"profile": {"background": {"experiences": [1]}}})).contains("list of strings")
        );
        let long = "字".repeat(MAX_FIELD_CHARS + 1);
        assert!(refusal(&current, json!({"profile": {"knowledge": {"skills": long}}})).contains("longer than"));
        assert!(refusal(&current, json!([1])).contains("JSON object"));
    }

    #[test]
    fn if_match_is_parsed_strongly() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(Precondition::from_headers(&HeaderMap::new()).unwrap(), Precondition::None);
        assert_eq!(Precondition::from_headers(&headers("*")).unwrap(), Precondition::Any);
        assert_eq!(Precondition::from_headers(&headers("\"3\", \"5\"")).unwrap(), Precondition::Versions(vec![3, 5]));
        assert_eq!(Precondition::from_headers(&headers("W/\"3\"")).unwrap(), Precondition::Versions(vec![]));
        assert!(Precondition::from_headers(&headers("3")).is_err());
        assert!(Precondition::Versions(vec![3]).check(3).is_ok());
        assert!(matches!(Precondition::Versions(vec![3]).check(4), Err(ApiError::PreconditionFailed { .. })));
        assert!(Precondition::Any.check(4).is_ok());
    }
}
