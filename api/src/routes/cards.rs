//! Character Cards in and out: `GET /v1/characters/{id}/card` writes a character as a V2 or V3
//! card (JSON, or a PNG with the card in its text chunks, in the character's picture); `POST /v1/characters/import` makes a
//! ready character from a V1, V2 or V3 card (JSON or PNG; the file as the body or as the `file`
//! part of a `multipart/form-data` form) without an LLM call. The mapping is `crate::cards`'.

use axum::{
    extract::{Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use fastnpc_shared::{
    ids::CharacterId,
    store::{NewCharacter, avatars::AvatarOf, characters::ImportedCharacter},
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{character_edits::created_character_response, characters::validate_name, parse_id};
use crate::{
    avatars::avatar_from_upload,
    cards::{self, CardVersion, CharacterForCard, Spec},
    error::ApiError,
    extract::{AuthUser, uploaded_file},
    state::AppState,
};

/// The container of an exported card.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CardFormat {
    #[default]
    Json,
    Png,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CardQuery {
    /// `json` (default) or `png` (the card in the image's `tEXt` chunks).
    #[param(inline)]
    format: Option<CardFormat>,
    /// `v2` (default: what every card reader knows) or `v3`.
    #[param(inline)]
    spec: Option<Spec>,
    /// `true`: the character's long-term memory goes out too, as always-on lorebook
    /// (`character_book`) entries. Default `false`: a card shared with others carries none of
    /// your conversations.
    memory: Option<bool>,
}

/// A file name for `Content-Disposition`: the character's name, with an ASCII fallback.
fn attachment(name: &str, extension: &str) -> HeaderValue {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let encoded: String = format!("{name}.{extension}")
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}.{extension}\"; filename*=UTF-8''{encoded}"))
        .expect("ASCII only")
}

/// `GET /v1/characters/{id}/card?format=json|png&spec=v2|v3` → the character as a card file.
#[utoipa::path(
    get,
    operation_id = "export_character_card",
    path = "/v1/characters/{id}/card",
    tag = "characters",
    summary = "The character as a Character Card (V2 or V3; JSON or PNG)",
    description = "The profile mapped to the card's fields in the character's language; the whole FastNPC \
        character under `data.extensions.fastnpc`, so importing the card restores it exactly. A character \
        imported from a card gives back that card's greetings, lorebook and extensions.",
    params(("id" = CharacterId, Path, description = "The character"), CardQuery),
    responses(
        (status = 200, description = "The card (`application/json`, or `image/png` for `format=png`)",
            content((Object = "application/json"), (Vec<u8> = "image/png")),
            headers(("Content-Disposition" = String, description = "A file name from the character's name"))),
        (status = 409, description = "`/problems/character-not-ready`: generating or failed",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn export(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<CardQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    let Some(profile) = &character.profile else {
        return Err(ApiError::character_not_ready(&character.status, "it has no profile to export yet"));
    };
    let stored = state.store.character_card(user_id, character_id).await?;
    let memory: Vec<String> = if query.memory.unwrap_or(false) {
        state.store.memories(character_id).await?.long_term.into_iter().map(|entry| entry.content).collect()
    } else {
        Vec::new()
    };
    let for_card = CharacterForCard {
        name: &character.name,
        brief: character.brief.as_deref(),
        profile,
        language: &character.language,
        source: &character.source,
        source_snapshot: character.source_snapshot.as_ref(),
        version: character.version,
        imported: stored.as_ref().and_then(|(data, _)| data.as_object()),
        unchanged_since_import: stored.as_ref().is_some_and(|(_, version)| *version == character.version),
        memory: &memory,
    };
    let spec = query.spec.unwrap_or(Spec::V2);
    let mut response = match query.format.unwrap_or_default() {
        CardFormat::Json => {
            let mut response = axum::Json(cards::write(&for_card, spec)).into_response();
            response.headers_mut().insert(header::CONTENT_DISPOSITION, attachment(&character.name, "json"));
            response
        }
        CardFormat::Png => {
            let chunks = cards::png_chunks(&for_card, spec);
            let chunks: Vec<(&str, &str)> = chunks.iter().map(|(keyword, text)| (*keyword, text.as_str())).collect();
            let picture = match state.store.avatar(user_id, AvatarOf::Character(character_id)).await? {
                Some(avatar) => avatar.image,
                None => placeholder_for(character_id),
            };
            let image = cards::png::with_text_chunks(&picture, &chunks)
                .map_err(|error| ApiError::Internal(anyhow::anyhow!("writing the card image: {error}")))?;
            let mut response = image.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            response.headers_mut().insert(header::CONTENT_DISPOSITION, attachment(&character.name, "png"));
            response
        }
    };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    Ok(response)
}

/// The image of a card whose character has no avatar: one colour, chosen by the id so each
/// character's card looks its own.
fn placeholder_for(character_id: CharacterId) -> Vec<u8> {
    let bytes = character_id.0.as_bytes();
    // The id's last bytes are random (UUIDv7); kept in the middle of the range, never black or white.
    let channel = |b: u8| 64 + b / 2;
    cards::png::placeholder(256, [channel(bytes[13]), channel(bytes[14]), channel(bytes[15])])
}

/// The form of a `multipart/form-data` import.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the form; the handler reads the `file` part itself.
pub struct ImportCardForm {
    /// The card file: a PNG image or a JSON document.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// `POST /v1/characters/import` with a card file → `201 {character, job: null}`, ready at once.
#[utoipa::path(
    post,
    operation_id = "import_character_card",
    path = "/v1/characters/import",
    tag = "characters",
    summary = "Create a character from a Character Card (V1, V2 or V3; JSON or PNG)",
    description = "The file is the body (`image/png` or `application/json`) or the first part of a \
        `multipart/form-data` form's `file` part, at most 8 MB. A PNG's `ccv3` chunk is read before its `chara`; `zTXt` \
        chunks are inflated. A card written by FastNPC restores its character exactly; any other card's \
        text is mapped into the profile's categories (none of it dropped), and the card itself is kept \
        so an export gives back its greetings, lorebook and extensions. No LLM call: the character is \
        ready at once.",
    request_body(content(
        (ImportCardForm = "multipart/form-data"),
        (Vec<u8> = "image/png"),
        (Object = "application/json"),
    )),
    responses(
        (status = 201, description = "The character", body = super::characters::CharacterWithJob,
            headers(("Location" = String, description = "The character's URL"), ("ETag" = String, description = "Its version"))),
        (status = 413, description = "The file is over 8 MB", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "`/problems/invalid-card`: not a card, naming what is wrong (a truncated \
            or corrupted PNG, a chunk that is not base64, base64 that is not JSON, a compression bomb…)",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "At the cap on characters", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn import(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    request: Request,
) -> Result<Response, ApiError> {
    let bytes = uploaded_file(&state, request, "the card file").await?;
    let invalid =
        |detail: String| ApiError::Invalid { status: StatusCode::UNPROCESSABLE_ENTITY, code: "invalid-card", detail };
    let card = cards::read(&bytes).map_err(|error| invalid(error.to_string()))?;
    let imported = cards::character_from_card(&card);
    let name = validate_name(&imported.name).map_err(|error| invalid(format!("the card's name: {error}")))?;
    // A card of ours is trusted no more than an edit: its profile must fit the categories.
    let profile = super::character_edits::complete_profile(&imported.profile)
        .map_err(|error| invalid(format!("the card's extensions.fastnpc: {error}")))?;
    let spec = match card.version {
        CardVersion::V1 => "v1",
        CardVersion::V2 => "v2",
        CardVersion::V3 => "v3",
    };
    // A PNG card's image is the character's picture: kept, re-encoded like any upload.
    let avatar = if bytes.starts_with(&cards::png::SIGNATURE) {
        let picture =
            avatar_from_upload(bytes).await.map_err(|error| invalid(format!("the card's picture: {error}")))?;
        Some(picture)
    } else {
        None
    };
    let character_id = CharacterId::new();
    let card_data = Value::Object(card.data);
    let detail = json!({ "card": spec });
    let outcome = state
        .store
        .import_character(
            ImportedCharacter {
                character: NewCharacter::new(character_id, user_id, &name, &imported.source, imported.language.code()),
                profile: &profile,
                brief: imported.brief.as_deref(),
                card: &card_data,
                detail: &detail,
                avatar: avatar.as_ref(),
            },
            &crate::limits::quota(&state),
        )
        .await?;
    if !crate::limits::created(&state, outcome)? {
        return Err(ApiError::Internal(anyhow::anyhow!("an import has no idempotency key to lose")));
    }
    let character = state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    created_character_response(&state, character).await
}
