//! Avatars: `PUT`, `GET` and `DELETE` of `/v1/characters/{id}/avatar` (a character's picture)
//! and `/v1/me/avatar` (the user's). An upload (PNG, JPEG, WebP or GIF; the file as the body or
//! a form's `file` part, up to 8 MB) is decoded and stored re-encoded (`crate::avatars`); `GET`
//! serves that PNG with an `ETag` and `Cache-Control: private, no-cache`, so a browser keeps it
//! and asks again with `If-None-Match` (a `304` costs no image bytes). A PNG card export carries
//! the character's picture.

use axum::{
    Json,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use fastnpc_shared::{
    ids::{CharacterId, UserId},
    store::avatars::{Avatar, AvatarOf},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{character_edits::etag as etag_header, parse_id};
use crate::{
    avatars::avatar_from_upload,
    error::ApiError,
    extract::{AuthUser, uploaded_file},
    state::AppState,
    web::client_copy_is_current,
};

/// A stored avatar, as `PUT` answers it.
#[derive(Serialize, ToSchema)]
pub struct AvatarView {
    /// Where it is served.
    url: String,
    /// In pixels, after scaling down to at most 512 a side.
    width: i32,
    height: i32,
    /// Its `ETag`.
    etag: String,
}

/// The picture upload, as a form.
#[derive(ToSchema)]
#[allow(dead_code)] // Documents the form; `uploaded_file` reads the `file` part itself.
pub struct AvatarForm {
    /// A PNG, JPEG, WebP or GIF image.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

async fn put(
    state: &AppState,
    user_id: UserId,
    of: AvatarOf,
    url: String,
    request: Request,
) -> Result<Response, ApiError> {
    // A missing character is a 404 before its upload is read and decoded.
    if let AvatarOf::Character(character_id) = of {
        state.store.character(user_id, character_id).await?.ok_or(ApiError::NotFound)?;
    }
    let bytes = uploaded_file(state, request, "the picture").await?;
    let avatar = avatar_from_upload(bytes).await.map_err(|error| ApiError::Invalid {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid-image",
        detail: error.to_string(),
    })?;
    if !state.store.put_avatar(user_id, of, &avatar).await? {
        return Err(ApiError::NotFound);
    }
    let view = AvatarView { url, width: avatar.width, height: avatar.height, etag: avatar.etag.clone() };
    let mut response = Json(view).into_response();
    response.headers_mut().insert(header::ETAG, etag_header(&avatar.etag));
    Ok(response)
}

async fn get(state: &AppState, user_id: UserId, of: AvatarOf, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Avatar { image, etag, updated_at, .. } = state.store.avatar(user_id, of).await?.ok_or(ApiError::NotFound)?;
    let tag = etag_header(&etag);
    let unchanged = client_copy_is_current(headers, &tag);
    let mut response = if unchanged { StatusCode::NOT_MODIFIED.into_response() } else { image.into_response() };
    let headers = response.headers_mut();
    if !unchanged {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    }
    headers.insert(header::ETAG, tag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if let Ok(modified) = HeaderValue::from_str(&updated_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    Ok(response)
}

async fn delete(state: &AppState, user_id: UserId, of: AvatarOf) -> Result<Response, ApiError> {
    if !state.store.delete_avatar(user_id, of).await? {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/characters/{id}/avatar` with a picture → `200 {url, width, height, etag}`.
#[utoipa::path(
    put,
    operation_id = "put_character_avatar",
    path = "/v1/characters/{id}/avatar",
    tag = "avatars",
    summary = "Set a character's picture",
    description = "A PNG, JPEG, WebP or GIF (its first frame), as the body or a form's `file` part, up to \
        8 MB and 40 megapixels (10,000 px a side). It is decoded, scaled down to at most 512 px a side and \
        stored as PNG: the uploaded bytes are not kept. It replaces the character's picture, if any.",
    params(("id" = CharacterId, Path, description = "The character")),
    request_body(content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"), (Vec<u8> = "image/gif"),
        (AvatarForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "The stored picture", body = AvatarView,
            headers(("ETag" = String, description = "Its tag"))),
        (status = 413, description = "The file is over 8 MB", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "`/problems/invalid-image`: not an accepted image, too many pixels, or \
            undecodable, naming which", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn put_character(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    let url = format!("/v1/characters/{character_id}/avatar");
    put(&state, user_id, AvatarOf::Character(character_id), url, request).await
}

/// `GET /v1/characters/{id}/avatar` → the PNG.
#[utoipa::path(
    get,
    operation_id = "get_character_avatar",
    path = "/v1/characters/{id}/avatar",
    tag = "avatars",
    summary = "A character's picture (PNG)",
    params(
        ("id" = CharacterId, Path, description = "The character"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag the client holds"),
    ),
    responses(
        (status = 200, description = "The picture", content((Vec<u8> = "image/png")),
            headers(("ETag" = String), ("Cache-Control" = String), ("Last-Modified" = String))),
        (status = 304, description = "The client's copy is current"),
    ),
)]
pub async fn get_character(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    get(&state, user_id, AvatarOf::Character(character_id), &headers).await
}

/// `DELETE /v1/characters/{id}/avatar` → `204`.
#[utoipa::path(
    delete,
    operation_id = "delete_character_avatar",
    path = "/v1/characters/{id}/avatar",
    tag = "avatars",
    summary = "Remove a character's picture",
    params(("id" = CharacterId, Path, description = "The character")),
    responses((status = 204, description = "Removed")),
)]
pub async fn delete_character(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let character_id: CharacterId = parse_id(&id)?;
    delete(&state, user_id, AvatarOf::Character(character_id)).await
}

/// `PUT /v1/me/avatar` with a picture → `200 {url, width, height, etag}`.
#[utoipa::path(
    put,
    operation_id = "put_my_avatar",
    path = "/v1/me/avatar",
    tag = "avatars",
    summary = "Set your picture",
    description = "As for a character's picture: PNG, JPEG, WebP or GIF, up to 8 MB and 40 megapixels, \
        stored re-encoded at most 512 px a side.",
    request_body(content(
        (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp"), (Vec<u8> = "image/gif"),
        (AvatarForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "The stored picture", body = AvatarView,
            headers(("ETag" = String, description = "Its tag"))),
        (status = 413, description = "The file is over 8 MB", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 422, description = "`/problems/invalid-image`: not an accepted image, too many pixels, or \
            undecodable, naming which", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn put_mine(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    request: Request,
) -> Result<Response, ApiError> {
    put(&state, user_id, AvatarOf::User, "/v1/me/avatar".to_owned(), request).await
}

/// `GET /v1/me/avatar` → the PNG.
#[utoipa::path(
    get,
    operation_id = "get_my_avatar",
    path = "/v1/me/avatar",
    tag = "avatars",
    summary = "Your picture (PNG)",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag the client holds")),
    responses(
        (status = 200, description = "The picture", content((Vec<u8> = "image/png")),
            headers(("ETag" = String), ("Cache-Control" = String), ("Last-Modified" = String))),
        (status = 304, description = "The client's copy is current"),
        (status = 404, description = "You have no picture", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn get_mine(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get(&state, user_id, AvatarOf::User, &headers).await
}

/// `DELETE /v1/me/avatar` → `204`.
#[utoipa::path(
    delete,
    operation_id = "delete_my_avatar",
    path = "/v1/me/avatar",
    tag = "avatars",
    summary = "Remove your picture",
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "You have no picture", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn delete_mine(State(state): State<AppState>, AuthUser(user_id): AuthUser) -> Result<Response, ApiError> {
    delete(&state, user_id, AvatarOf::User).await
}
