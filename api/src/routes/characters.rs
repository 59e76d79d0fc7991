//! Characters: create (a generation job), list, read, delete.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    dispatch,
    domain::{CharacterSource, profile::CATEGORY_COUNT, prompt_document},
    ids::{CharacterId, JobId, UserId},
    jobs::{JobKind, JobStatus},
    prompts::Language,
    store::NewCharacter,
    store::{
        self,
        characters::{CharacterRecord, CharacterSummary},
        jobs::NewJob,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{jobs::JobLinks, page_limit, parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    idempotency::Idempotency,
    state::AppState,
};

/// Longest character name, as in the original (`normalize_role_name` capped at 64).
pub(crate) const MAX_NAME_CHARS: usize = 64;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCharacter {
    /// 1 to 64 characters (after trimming; NFC), no control characters.
    #[schema(min_length = 1, max_length = 64)]
    name: String,
    source: CharacterSource,
    /// The language of the profile and the character's replies; detected from the source when
    /// absent.
    #[serde(default)]
    language: Option<Language>,
}

/// A character name as stored: trimmed, NFC (the same name typed with combining marks or
/// precomposed is one name), 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub(crate) fn validate_name(name: &str) -> Result<String, ApiError> {
    let name: String = unicode_normalization::UnicodeNormalization::nfc(name.trim()).collect();
    if name.is_empty() {
        return Err(ApiError::invalid_field("name is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid_field(format!("name is longer than {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name contains control characters"));
    }
    Ok(name)
}

impl CreateCharacter {
    /// The validated name (trimmed).
    fn validate(&self) -> Result<String, ApiError> {
        let name = validate_name(&self.name)?;
        self.source.validate().map_err(|error| ApiError::invalid_field(error.to_string()))?;
        Ok(name)
    }
}

/// `POST /v1/characters` → `202 {character, job}` with `Location`. The character exists at once
/// (status `generating`); the job fills it in.
#[utoipa::path(
    post,
    operation_id = "create_character",
    path = "/v1/characters",
    tag = "characters",
    summary = "Create a character (a generation job)",
    description = "The character exists at once (status `generating`); its generation job fetches the \
        source (for encyclopedia and web sources), writes the eight profile categories and the brief \
        concurrently, and makes it `ready`. Follow the job's events for progress.",
    params(crate::openapi::IdempotencyKey),
    request_body = CreateCharacter,
    responses(
        (status = 202, description = "Accepted: the character and its generation job", body = CharacterAccepted,
            headers(("Location" = String, description = "The character's URL"))),
        (status = 409, description = "`/problems/ambiguous-source`: the encyclopedia title names several \
            entries, listed in `candidates`", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many jobs submitted, running, or queued for this user (`Retry-After`)",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateCharacter>,
) -> Result<Response, ApiError> {
    let name = body.validate()?;
    let source = serde_json::to_value(&body.source).map_err(|e| ApiError::Internal(e.into()))?;
    let language = body.language.unwrap_or_else(|| default_language(&body.source, &name));
    let idempotency = Idempotency::from_request(
        &headers,
        &json!({"create_character": {"name": name, "source": source, "language": language}}),
    )?;
    if let Some(idempotency) = &idempotency
        && let Some(job) = idempotency.original(&state, user_id).await?
    {
        return replay(&state, user_id, job).await;
    }
    crate::limits::admit_job(&state, user_id).await?;
    if let Some(candidates) = ambiguity(&state, &body.source).await {
        return Err(ApiError::Ambiguous {
            detail: format!(
                "{} names {} entries; choose one and create the character from it (kind and title, and id for Baike)",
                body.source.describe(),
                candidates.len()
            ),
            candidates,
        });
    }

    let character_id = CharacterId::new();
    let job_id = JobId::new();
    let job = NewJob {
        job_id,
        user_id,
        kind: JobKind::GenerateCharacter,
        character_id: Some(character_id),
        message_id: None,
        group_id: None,
        serial_key: None,
        progress_total: CATEGORY_COUNT as i32,
        idempotency: idempotency.as_ref().map(Idempotency::for_new_job),
        params: None,
    };
    let character = NewCharacter::new(character_id, user_id, &name, &source, language.code());
    // What the submission stores is known: the answer is built from it, not read back.
    let stored = character.record();
    if !crate::limits::created(
        &state,
        state.store.submit_character(character, job, &crate::limits::quota(&state)).await?,
    )? {
        let winner = Idempotency::winner(idempotency.as_ref(), &state, user_id).await?;
        return replay(&state, user_id, winner).await;
    }

    // The job is durable from the commit on; publishing it is not the client's wait.
    state.background.spawn(enqueue(state.clone(), job_id, JobKind::GenerateCharacter));
    Ok(accepted(&stored, job_id, JobStatus::Queued))
}

/// The longest a new character waits for the encyclopedia to say whether its title is ambiguous.
/// Past it the character is created; its job asks again and fails `source_ambiguous` rather than
/// pick an entry.
const AMBIGUITY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The entries an encyclopedia title names, when it names several.
async fn ambiguity(state: &AppState, source: &CharacterSource) -> Option<Vec<fastnpc_shared::sources::Candidate>> {
    match tokio::time::timeout(AMBIGUITY_CHECK_TIMEOUT, state.sources.ambiguity(source)).await {
        Ok(Ok(candidates)) => candidates,
        Ok(Err(failure)) => {
            tracing::info!(code = failure.code(), "the ambiguity check failed; the job will check again");
            None
        }
        Err(_) => {
            tracing::info!("the ambiguity check timed out; the job will check again");
            None
        }
    }
}

/// The language of a character whose creator named none: its source's. A fetched source is not
/// read yet, so its kind decides (an edition's language, Baike's Chinese) or, for a web page,
/// the character's name.
fn default_language(source: &CharacterSource, name: &str) -> Language {
    match source {
        CharacterSource::Text { text } => Language::detect(&prompt_document(name, text)),
        CharacterSource::Wikipedia { lang, .. } => {
            let chinese = ["zh", "yue", "wuu", "gan", "hak", "cdo", "lzh"];
            if chinese.contains(&lang.split('-').next().unwrap_or_default()) { Language::Zh } else { Language::En }
        }
        CharacterSource::Baike { .. } => Language::Zh,
        CharacterSource::Url { .. } => Language::detect(name),
    }
}

/// After the commit: count the job as accepted, announce it and hand it to the broker (see
/// `fastnpc_shared::dispatch`).
pub(crate) async fn enqueue(state: AppState, job_id: JobId, kind: JobKind) {
    state.metrics.jobs_accepted.get_or_create(&fastnpc_shared::metrics::KindLabels { kind: kind.as_str() }).inc();
    dispatch::enqueue_new(state.store.as_ref(), state.events.as_ref(), state.publisher.as_ref(), job_id).await;
}

/// The original answer for a repeated request.
async fn replay(state: &AppState, user_id: UserId, job: store::jobs::JobRecord) -> Result<Response, ApiError> {
    let character_id = job.character_id.ok_or(ApiError::NotFound)?;
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    Ok(accepted(&character, job.job_id, job.status))
}

fn accepted(character: &CharacterRecord, job_id: JobId, status: JobStatus) -> Response {
    let body =
        CharacterAccepted { character: CharacterView::from(character.clone()), job: JobLinks::new(job_id, status) };
    with_location(StatusCode::ACCEPTED, &body, &format!("/v1/characters/{}", character.character_id))
}

/// A new character and the job generating it.
#[derive(Serialize, ToSchema)]
pub struct CharacterAccepted {
    character: CharacterView,
    job: JobLinks,
}

/// A character and its generation job.
#[derive(Serialize, ToSchema)]
pub struct CharacterWithJob {
    character: CharacterView,
    /// The generation job (null for a character imported without one).
    job: Option<JobLinks>,
}

impl CharacterWithJob {
    pub(crate) async fn new(state: &AppState, character: CharacterRecord) -> Result<Self, ApiError> {
        let job =
            state.store.generation_job(character.character_id).await?.map(|(id, status)| JobLinks::new(id, status));
        Ok(Self { character: CharacterView::from(character), job })
    }
}

/// A character as clients see it.
#[derive(Serialize, ToSchema)]
pub struct CharacterView {
    id: CharacterId,
    name: String,
    /// `generating`, `ready` or `failed`.
    status: String,
    brief: Option<String>,
    /// One object per category (English keys); null until generation succeeds.
    #[schema(value_type = Option<Object>)]
    profile: Option<Value>,
    #[schema(value_type = CharacterSource)]
    source: Value,
    /// `zh` or `en`: the language of the profile and of the character's replies.
    language: String,
    /// The prompt set that wrote the profile; null until it is generated.
    prompt_version: Option<String>,
    /// What a fetched source gave: `{url, title, revision, fetched_at, bytes, chars, sha256,
    /// truncated, markdown}`; null for pasted text and until the job fetched it.
    #[schema(value_type = Option<Object>)]
    source_snapshot: Option<Value>,
    /// The current version of name, brief and profile (0 until the profile is generated); also
    /// the `ETag`. See `GET /v1/characters/{id}/versions`.
    version: i64,
    /// Its picture (`GET /v1/characters/{id}/avatar`, with a query that changes with the picture,
    /// so the address of a new one is new); null when it has none.
    avatar_url: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CharacterRecord> for CharacterView {
    fn from(c: CharacterRecord) -> Self {
        Self {
            id: c.character_id,
            name: c.name,
            status: c.status,
            brief: c.brief,
            profile: c.profile,
            source: c.source,
            language: c.language,
            prompt_version: c.prompt_version,
            source_snapshot: c.source_snapshot,
            version: c.version,
            avatar_url: avatar_url(c.character_id, c.avatar_etag.as_deref()),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CharacterListItem {
    id: CharacterId,
    name: String,
    /// `generating`, `ready` or `failed`.
    status: String,
    brief: Option<String>,
    /// Its picture, as in the character; null when it has none.
    avatar_url: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Where a character's picture is served, the tag in the query (see `CharacterView::avatar_url`).
fn avatar_url(character_id: CharacterId, etag: Option<&str>) -> Option<String> {
    etag.map(|etag| format!("/v1/characters/{character_id}/avatar?v={etag}"))
}

impl From<CharacterSummary> for CharacterListItem {
    fn from(c: CharacterSummary) -> Self {
        Self {
            id: c.character_id,
            name: c.name,
            status: c.status,
            brief: c.brief,
            avatar_url: avatar_url(c.character_id, c.avatar_etag.as_deref()),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_before` of the previous page.
    before: Option<CharacterId>,
    /// Page size, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// One page of characters, newest first.
#[derive(Serialize, ToSchema)]
pub struct CharacterPage {
    items: Vec<CharacterListItem>,
    /// Pass as `before` for the next page; null on the last one.
    next_before: Option<CharacterId>,
}

/// `GET /v1/characters?before=&limit=` → `{items, next_before}`, newest first.
#[utoipa::path(
    get,
    operation_id = "list_characters",
    path = "/v1/characters",
    tag = "characters",
    summary = "List your characters, newest first",
    params(ListQuery),
    responses((status = 200, description = "One page", body = CharacterPage)),
)]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CharacterPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let items = state.store.list_characters(user_id, query.before, limit).await?;
    let next_before = super::next_cursor(&items, limit, |c| c.character_id);
    Ok(Json(CharacterPage { items: items.into_iter().map(Into::into).collect(), next_before }))
}

/// `GET /v1/characters/{id}` → `{character, job}`: `job` is the generation job (`{id, status,
/// status_url, events_url}`, as a `202` names it), so any client can follow or retry it.
#[utoipa::path(
    get,
    operation_id = "get_character",
    path = "/v1/characters/{id}",
    tag = "characters",
    summary = "A character, with its generation job",
    params(("id" = CharacterId, Path, description = "The character")),
    responses((status = 200, description = "The character", body = CharacterWithJob,
        headers(("ETag" = String, description = "Its version, for an edit's If-Match")))),
)]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    super::character_edits::character_response(&state, character).await
}

/// `DELETE /v1/characters/{id}` → `204`. Its jobs go with it; a worker still generating it
/// finds the character gone and stops.
#[utoipa::path(
    delete,
    operation_id = "delete_character",
    path = "/v1/characters/{id}",
    tag = "characters",
    summary = "Delete a character, its chats, memories and jobs",
    params(("id" = CharacterId, Path, description = "The character")),
    responses((status = 204, description = "Deleted")),
)]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    if state.store.delete_character(user_id, character_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// What `POST /v1/characters/{id}/copy` may carry (the body may also be empty).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CopyCharacter {
    /// The copy's name (the rules of a new character's); the original's when absent.
    #[schema(min_length = 1, max_length = 64)]
    name: Option<String>,
}

/// `POST /v1/characters/{id}/copy` → `201 {character, job: null}` with `Location`: a new ready
/// character with the original's current profile, brief and source, as its version 1; no
/// conversation, memory or version history. No LLM call.
#[utoipa::path(
    post,
    operation_id = "copy_character",
    path = "/v1/characters/{id}/copy",
    tag = "characters",
    summary = "Copy a character (profile, brief and source; no conversation or memory)",
    params(("id" = CharacterId, Path, description = "The character to copy")),
    request_body(content = Option<CopyCharacter>, description = "Optional; an empty body keeps the name"),
    responses(
        (status = 201, description = "The copy", body = CharacterWithJob,
            headers(("Location" = String, description = "The copy's URL"), ("ETag" = String, description = "Its version"))),
        (status = 409, description = "`/problems/character-not-ready`: generating or failed",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "At the cap on characters", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn copy(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let original: CharacterId = parse_id(&id)?;
    let request: CopyCharacter = if body.iter().all(u8::is_ascii_whitespace) {
        CopyCharacter::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| ApiError::invalid_field(format!("the body: {error}")))?
    };
    let name = request.name.as_deref().map(validate_name).transpose()?;
    let copy = CharacterId::new();
    let quota = crate::limits::quota(&state);
    let created = match state.store.copy_character(user_id, original, copy, name.as_deref(), &quota).await? {
        store::characters::Copied::Created(created) => *created,
        store::characters::Copied::NotFound => return Err(ApiError::NotFound),
        store::characters::Copied::NotReady(status) => {
            return Err(ApiError::character_not_ready(&status, "it can be copied once it is ready"));
        }
        store::characters::Copied::OverQuota(cap) => return Err(crate::limits::over_quota(&state, cap)),
    };
    super::character_edits::created_character_response(&state, created).await
}
