//! Request extractors that fail with problem details instead of axum's plain-text rejections.

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{header, request::Parts},
};
use fastnpc_shared::ids::UserId;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

/// `Json<T>` whose rejections (wrong content type, malformed JSON, missing or unknown fields)
/// are 400/415/422 problem details naming the problem.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Buffered first (within the body limit) to refuse NUL before it reaches Postgres, which
        // cannot store it in text or jsonb; the JSON extractor then parses the same bytes.
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, crate::MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(error) => {
                return Err(ApiError::Invalid {
                    status: axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    code: "body-unreadable",
                    detail: format!("the request body could not be read: {error}"),
                });
            }
        };
        if has_escaped_nul(&bytes) {
            return Err(ApiError::invalid_field("text must not contain the NUL character (\\u0000)"));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonDataError(_) => ApiError::invalid_field(rejection.body_text()),
                JsonRejection::MissingJsonContentType(_) => ApiError::Invalid {
                    status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code: "unsupported-media-type",
                    detail: "send the body as JSON with `Content-Type: application/json`".into(),
                },
                JsonRejection::BytesRejection(_) => ApiError::Invalid {
                    status: rejection.status(),
                    code: "body-unreadable",
                    detail: rejection.body_text(),
                },
                _ => ApiError::bad_request(rejection.body_text()),
            }),
        }
    }
}

/// Whether JSON text holds a `\u0000` escape (the only way JSON can carry NUL): one whose
/// backslash is not itself escaped.
fn has_escaped_nul(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window.eq_ignore_ascii_case(b"\\u0000")
            && json[..at].iter().rev().take_while(|&&byte| byte == b'\\').count() % 2 == 0
    })
}

/// The authenticated user, from `Authorization: Bearer <token>`.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub UserId);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token =
            bearer_token(parts).ok_or(ApiError::Unauthorized { detail: "send `Authorization: Bearer <token>`" })?;
        let user = if token.starts_with(API_KEY_PREFIX) {
            state.store.api_key_user(&token_hash(token)).await?
        } else {
            state.store.session_user(&token_hash(token)).await?
        };
        user.map(AuthUser).ok_or(ApiError::Unauthorized { detail: "the token is invalid, expired or revoked" })
    }
}

/// `Option<AuthUser>`: `None` without an `Authorization` header (the route has another way in,
/// e.g. a stream token); a header with a bad token is still a 401.
impl axum::extract::OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_token_of(&parts.headers)
}

/// The bearer token in a header map, if there is one.
pub fn bearer_token_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// API keys start with this, so the server (and a secret scanner) can tell them from sessions.
pub const API_KEY_PREFIX: &str = "fnpk_";

/// What the sessions and API key tables store in place of the secret.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// An authenticated, enabled admin. Anyone else gets the 404 an unknown route gets, so the admin
/// routes do not advertise themselves.
#[derive(Clone, Copy, Debug)]
pub struct AdminUser(pub UserId);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(user_id) = AuthUser::from_request_parts(parts, state).await?;
        if state.store.is_admin(user_id).await? { Ok(Self(user_id)) } else { Err(ApiError::NotFound) }
    }
}

#[cfg(test)]
mod tests {
    use super::has_escaped_nul;

    #[test]
    fn finds_nul_escapes_but_not_escaped_backslashes() {
        assert!(has_escaped_nul(br#"{"content": "a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"content": "\\\u0000"}"#), "an escaped backslash, then NUL");
        assert!(!has_escaped_nul(br#"{"content": "\\u0000"}"#), "a backslash, then the text u0000");
        assert!(!has_escaped_nul(br#"{"content": "plain"}"#));
    }
}
