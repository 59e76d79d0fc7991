//! Regenerating chosen categories of a ready character: `POST /v1/characters/{id}/regenerate`.
//!
//! A job (`regenerate_character`) writes the named categories (and/or the brief) again from the
//! character's stored source, streamed like a generation: a `progress` event per category done.
//! The character stays `ready` and chat goes on with the current profile meanwhile. When the job
//! ends, the regenerated categories replace the profile's *whole*, edits included (the version
//! history keeps the edited text, and a restore brings it back); every other category keeps what
//! it holds then, edits made during the job included. Regenerations of one character run one at
//! a time, in the order they were asked for.

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use fastnpc_shared::{
    domain::CATEGORIES,
    ids::{CharacterId, JobId, UserId},
    jobs::{JobKind, JobStatus, RegenerationParams},
    store::{
        JobGuard, Submitted,
        jobs::{JobRecord, NewJob, serial},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{characters::CharacterView, jobs::JobLinks, parse_id, with_location};
use crate::{
    error::ApiError,
    extract::{ApiJson, AuthUser},
    idempotency::Idempotency,
    state::AppState,
};

/// The name that asks for the brief in `categories`.
const BRIEF: &str = "brief";

/// What to regenerate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateCharacter {
    /// Category keys (`basic_identity`, `personality`, `background`, `knowledge`,
    /// `dialogue_rules`, `tasks`, `worldview`, `system_params`, `source`) and/or `brief`; at least
    /// one. A name given twice counts once.
    #[schema(min_items = 1, example = json!(["personality", "brief"]))]
    categories: Vec<String>,
}

impl RegenerateCharacter {
    /// The request as the job's parameters; `422` naming the first name that is not a category.
    fn params(&self) -> Result<RegenerationParams, ApiError> {
        if self.categories.is_empty() {
            return Err(ApiError::invalid_field("categories: name at least one category, or `brief`"));
        }
        let mut params = RegenerationParams { categories: Vec::new(), brief: false };
        for (index, name) in self.categories.iter().enumerate() {
            if name == BRIEF {
                params.brief = true;
            } else if CATEGORIES.iter().any(|category| category.key == name) {
                if !params.categories.contains(name) {
                    params.categories.push(name.clone());
                }
            } else {
                let known: Vec<&str> = CATEGORIES.iter().map(|category| category.key).chain([BRIEF]).collect();
                return Err(ApiError::invalid_field(format!(
                    "categories[{index}]: `{}` is not a category; expected one of {}",
                    name.chars().take(64).collect::<String>(),
                    known.join(", ")
                )));
            }
        }
        Ok(params)
    }
}

/// The character as it is now (unchanged until the job ends) and the job regenerating it.
#[derive(Serialize, ToSchema)]
pub struct RegenerationAccepted {
    character: CharacterView,
    job: JobLinks,
}

/// `POST /v1/characters/{id}/regenerate` → `202 {character, job}` with the job's `Location`.
#[utoipa::path(
    post,
    operation_id = "regenerate_character",
    path = "/v1/characters/{id}/regenerate",
    tag = "characters",
    summary = "Write chosen categories (or the brief) again from the source (a job)",
    description = "The job writes the named categories and/or the brief again from the character's stored \
        source, with a `progress` event per one done. The character stays `ready` meanwhile. At the end the \
        regenerated categories replace the current ones whole — edits in them are replaced (the version \
        history keeps them) — as the character's next version (`regenerated`); the other categories are \
        untouched.",
    params(
        ("id" = CharacterId, Path, description = "The character"),
        crate::openapi::IdempotencyKey,
    ),
    request_body = RegenerateCharacter,
    responses(
        (status = 202, description = "Accepted: the character and the regeneration job", body = RegenerationAccepted,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 409, description = "`/problems/character-not-ready`: generating or failed",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No categories, or a name that is not a category",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many jobs submitted, running, or queued for this user (`Retry-After`)",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn regenerate(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegenerateCharacter>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let params = body.params()?;
    let params_value = serde_json::to_value(&params).map_err(|error| ApiError::Internal(error.into()))?;
    let idempotency = Idempotency::from_request(
        &headers,
        &json!({"regenerate_character": {"character_id": character_id, "params": params_value}}),
    )?;
    if let Some(idempotency) = &idempotency
        && let Some(job) = idempotency.original(&state, user_id).await?
    {
        return accepted(&state, user_id, &job).await;
    }
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    if character.status != "ready" {
        return Err(not_ready(&character.status));
    }
    crate::limits::admit_job(&state, user_id).await?;

    let job_id = JobId::new();
    let job = NewJob {
        job_id,
        user_id,
        kind: JobKind::RegenerateCharacter,
        character_id: Some(character_id),
        message_id: None,
        group_id: None,
        serial_key: Some(serial::regeneration(character_id)),
        progress_total: (params.categories.len() + usize::from(params.brief)) as i32,
        idempotency: idempotency.as_ref().map(Idempotency::for_new_job),
        params: Some(&params_value),
    };
    let guard = JobGuard::CharacterReady { user_id, character_id };
    let outcome = state.store.submit_guarded(job, guard, &crate::limits::quota(&state)).await?;
    if outcome == Submitted::GuardFailed {
        // Deleted or no longer ready since it was read.
        let status = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?.status;
        return Err(not_ready(&status));
    }
    if !crate::limits::created(&state, outcome)? {
        let winner = Idempotency::winner(idempotency.as_ref(), &state, user_id).await?;
        return accepted(&state, user_id, &winner).await;
    }
    state.background.spawn(super::characters::enqueue(state.clone(), job_id, JobKind::RegenerateCharacter));
    let body = RegenerationAccepted {
        character: CharacterView::from(character),
        job: JobLinks::new(job_id, JobStatus::Queued),
    };
    Ok(with_location(StatusCode::ACCEPTED, &body, &format!("/v1/jobs/{job_id}")))
}

fn not_ready(status: &str) -> ApiError {
    ApiError::character_not_ready(status, "it can be regenerated once it is ready")
}

/// The answer for `job` (a repeated request's original), with the character as it is now.
async fn accepted(state: &AppState, user_id: UserId, job: &JobRecord) -> Result<Response, ApiError> {
    let character_id = job.character_id.ok_or(ApiError::NotFound)?;
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let body =
        RegenerationAccepted { character: CharacterView::from(character), job: JobLinks::new(job.job_id, job.status) };
    Ok(with_location(StatusCode::ACCEPTED, &body, &format!("/v1/jobs/{}", job.job_id)))
}
