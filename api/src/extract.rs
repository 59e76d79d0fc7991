//! Request extractors that fail with problem details instead of axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    Json,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Multipart, Request, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use fastnpc_shared::{ids::UserId, settings::IpNetworks};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{browser_session, error::ApiError, state::AppState};

/// An uploaded file (a card, a picture): the body as it came, or a `multipart/form-data`
/// form's `file` part; at most [`crate::MAX_UPLOAD_BYTES`] (413 past it, naming `what`).
pub async fn uploaded_file(state: &AppState, request: Request, what: &str) -> Result<Vec<u8>, ApiError> {
    let too_large = |detail: String| ApiError::Invalid {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "body-too-large",
        detail: format!("{what} could not be read whole (at most {} MB): {detail}", crate::MAX_UPLOAD_BYTES >> 20),
    };
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        while let Some(field) =
            form.next_field().await.map_err(|error| ApiError::bad_request(format!("the form: {error}")))?
        {
            if field.name() == Some("file") {
                let bytes = field.bytes().await.map_err(|error| too_large(error.body_text()))?;
                return Ok(bytes.to_vec());
            }
        }
        return Err(ApiError::invalid_field("the form has no `file` part"));
    }
    let bytes = axum::body::to_bytes(request.into_body(), crate::MAX_UPLOAD_BYTES)
        .await
        .map_err(|error| too_large(error.to_string()))?;
    Ok(bytes.to_vec())
}

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

/// The authenticated user, from `Authorization: Bearer <token>` (a session or an API key) or,
/// without that header, from the browser session cookie, whose state-changing requests must come
/// from this site's own pages (see [`crate::browser_session`]).
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub UserId);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let invalid = ApiError::Unauthorized { detail: "the token is invalid, expired or revoked" };
        if let Some(token) = bearer_token(parts) {
            let user = if token.starts_with(API_KEY_PREFIX) {
                state.store.api_key_user(&token_hash(token)).await?
            } else {
                state.store.session_user(&token_hash(token)).await?
            };
            return user.map(AuthUser).ok_or(invalid);
        }
        let token = browser_session::session_token(&parts.headers)
            .ok_or(ApiError::Unauthorized { detail: "send `Authorization: Bearer <token>` or log in" })?;
        browser_session::require_same_origin(&parts.method, &parts.headers)?;
        let user = state.store.session_user(&token_hash(token)).await?;
        user.map(AuthUser)
            .ok_or(ApiError::Unauthorized { detail: "the session has expired or was revoked; log in again" })
    }
}

/// The session token a request authenticates with, bearer or cookie (not an API key): the one
/// that logging out revokes and that a password change keeps.
pub fn session_token_of(headers: &HeaderMap) -> Option<&str> {
    match bearer_token_of(headers) {
        Some(token) => (!token.starts_with(API_KEY_PREFIX)).then_some(token),
        None => browser_session::session_token(headers),
    }
}

/// `Option<AuthUser>`: `None` without credentials (the route has another way in, e.g. a stream
/// token); bad credentials are still a 401.
impl axum::extract::OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) || browser_session::session_token(&parts.headers).is_some()
        {
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

/// The client's address, which the login back-off counts by: the TCP peer, or, when the peer is
/// one of `FASTNPC_TRUSTED_PROXIES`, the address its `X-Forwarded-For` names (see
/// [`client_address`]). Anyone else's `X-Forwarded-For` is ignored: a client cannot choose the
/// address it is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Present on every request `Api::run_until` serves (`into_make_service_with_connect_info`).
        let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("no peer address: the router must be served with connect info"))
        })?;
        Ok(Self(client_address(peer.ip(), &parts.headers, &state.config.trusted_proxies)))
    }
}

/// The client of a request that arrived from `peer`. A trusted proxy appends the address it
/// received the request from to `X-Forwarded-For`, so the list is read from the right: past the
/// entries that are trusted proxies themselves (a chain of them), the first one that is not is
/// the client. Whatever lies further left was written by the client and is not believed. An
/// entry that is not an address stops the walk at the last trusted hop.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &IpNetworks) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    for hop in hops.into_iter().rev() {
        let Ok(address) = hop.parse::<IpAddr>() else { break };
        client = address.to_canonical();
        if !trusted.contains(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn finds_nul_escapes_but_not_escaped_backslashes() {
        assert!(has_escaped_nul(br#"{"content": "a\u0000b"}"#));
        assert!(has_escaped_nul(br#"{"content": "\\\u0000"}"#), "an escaped backslash, then NUL");
        assert!(!has_escaped_nul(br#"{"content": "\\u0000"}"#), "a backslash, then the text u0000");
        assert!(!has_escaped_nul(br#"{"content": "plain"}"#));
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let nobody = IpNetworks::default();
        assert_eq!(client_address(ip("203.0.113.7"), &forwarded(&["198.51.100.1"]), &nobody), ip("203.0.113.7"));
        let proxies: IpNetworks = "10.0.0.0/8".parse().unwrap();
        assert_eq!(client_address(ip("203.0.113.7"), &forwarded(&["198.51.100.1"]), &proxies), ip("203.0.113.7"));
        assert_eq!(client_address(ip("::ffff:203.0.113.7"), &HeaderMap::new(), &nobody), ip("203.0.113.7"));
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_client_cannot_forge_past_it() {
        let proxies: IpNetworks = "10.0.0.0/8, ::1".parse().unwrap();
        let through = |values: &[&str]| client_address(ip("10.0.0.2"), &forwarded(values), &proxies);
        assert_eq!(through(&["198.51.100.1"]), ip("198.51.100.1"));
        // The client sent its own header; the proxy appended the real address.
        assert_eq!(through(&["1.2.3.4, 198.51.100.1"]), ip("198.51.100.1"));
        assert_eq!(through(&["1.2.3.4", "198.51.100.1"]), ip("198.51.100.1"), "repeated headers are one list");
        // A chain of trusted proxies is walked past.
        assert_eq!(through(&["1.2.3.4, 198.51.100.1, 10.9.9.9"]), ip("198.51.100.1"));
        assert_eq!(through(&["2001:db8::5"]), ip("2001:db8::5"));
        // Nothing usable: the last trusted hop is the client.
        assert_eq!(through(&[]), ip("10.0.0.2"));
        assert_eq!(through(&["not-an-address"]), ip("10.0.0.2"));
        assert_eq!(through(&["1.2.3.4, garbage, 10.9.9.9"]), ip("10.9.9.9"));
    }
}
