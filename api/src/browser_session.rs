//! Browser sessions: the session token in an `HttpOnly` cookie, and the cross-site request
//! forgery (CSRF) check for every request that cookie authenticates.
//!
//! Why a cookie and not a token in page storage: a script on the page (an injected one
//! included) can never read an `HttpOnly` cookie, so a session cannot be exfiltrated; the web
//! app holds no credential at all. Scripts keep using `Authorization: Bearer` (sessions or API
//! keys), which browsers never attach on their own and which therefore needs no CSRF check.
//!
//! A cookie, though, is attached by the browser to requests other sites make it send. Two
//! layers stop that:
//!
//! 1. `SameSite=Strict`: the browser sends the cookie only with requests from this site's own
//!    pages.
//! 2. The origin check below, for every state-changing (non-`GET`/`HEAD`/`OPTIONS`) request
//!    authenticated by the cookie, and for the cookie login itself (a forged login would sign
//!    the victim into the attacker's account): `Sec-Fetch-Site` must be `same-origin`; a browser
//!    that sends no fetch metadata must send an `Origin` equal to the request's own origin
//!    (scheme aside, its host and port are the `Host` header's). A request with neither header
//!    is refused: every browser that honours `SameSite` sends at least one of them with a
//!    `POST`, and non-browser clients use bearer tokens. We chose these header checks over a
//!    double-submit token because they need no state, no token plumbing in the page, and cover
//!    the login form too.
//!
//! The cookie is `Secure` (and then named with the `__Host-` prefix, which browsers only accept
//! from a secure origin, for the whole host, path `/`) when the login came over HTTPS: its
//! `Origin` is `https://…` or a proxy says `X-Forwarded-Proto: https`. Either header only
//! decides the requester's own cookie, so neither needs to be trusted.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::error::ApiError;

/// The session cookie over plain HTTP (a local deployment).
pub const SESSION_COOKIE: &str = "fastnpc_session";
/// The session cookie over HTTPS.
pub const SECURE_SESSION_COOKIE: &str = "__Host-fastnpc_session";

/// The session token a request's cookies carry, if any. Over HTTPS only the `__Host-` cookie
/// counts: a plain-named one there was not set by us but planted (by a sibling subdomain or a
/// tampered plain-HTTP answer) to work the victim into the planter's account.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    let pairs = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
    };
    let names: &[&str] =
        if is_https(headers) { &[SECURE_SESSION_COOKIE] } else { &[SECURE_SESSION_COOKIE, SESSION_COOKIE] };
    names.iter().find_map(|name| pairs().find(|(key, value)| key == name && !value.is_empty()).map(|(_, value)| value))
}

/// Whether the browser reached us over HTTPS (see the module docs).
pub fn is_https(headers: &HeaderMap) -> bool {
    let says_https = |name: header::HeaderName| {
        headers.get(name).and_then(|value| value.to_str().ok()).is_some_and(|value| {
            let value = value.trim();
            value.eq_ignore_ascii_case("https") || value.to_ascii_lowercase().starts_with("https://")
        })
    };
    says_https(header::ORIGIN) || says_https(header::HeaderName::from_static("x-forwarded-proto"))
}

/// The `Set-Cookie` value that stores `token` for `lifetime`.
pub fn set_cookie(token: &str, lifetime: Duration, secure: bool) -> HeaderValue {
    let name = if secure { SECURE_SESSION_COOKIE } else { SESSION_COOKIE };
    let secure = if secure { "; Secure" } else { "" };
    let value = format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", lifetime.as_secs());
    HeaderValue::from_str(&value).expect("a base64url token and fixed attributes make a valid header")
}

/// The `Set-Cookie` values that delete whichever session cookie the browser may hold.
pub fn clear_cookies() -> [HeaderValue; 2] {
    [
        HeaderValue::from_static("fastnpc_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        HeaderValue::from_static("__Host-fastnpc_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"),
    ]
}

/// Refuses a state-changing request that did not come from this site's own pages.
pub fn require_same_origin(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let same_origin = match text(header::HeaderName::from_static("sec-fetch-site")) {
        Some(site) => site.eq_ignore_ascii_case("same-origin"),
        None => match (text(header::ORIGIN), text(header::HOST)) {
            (Some(origin), Some(host)) => {
                origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
            }
            _ => false,
        },
    };
    if same_origin {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            status: StatusCode::FORBIDDEN,
            code: "cross-site-request",
            detail: "a request authenticated by the session cookie must come from this site's own pages \
                     (`Sec-Fetch-Site: same-origin` or a same-origin `Origin`); scripts should send \
                     `Authorization: Bearer <token>` instead"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn finds_the_session_among_other_cookies_preferring_the_secure_one() {
        assert_eq!(session_token(&headers(&[("cookie", "a=1; fastnpc_session=tok; b=2")])), Some("tok"));
        assert_eq!(session_token(&headers(&[("cookie", "a=1"), ("cookie", "fastnpc_session=t2")])), Some("t2"));
        assert_eq!(
            session_token(&headers(&[("cookie", "fastnpc_session=plain; __Host-fastnpc_session=secure")])),
            Some("secure")
        );
        assert_eq!(session_token(&headers(&[("cookie", "fastnpc_session=")])), None);
        assert_eq!(session_token(&headers(&[("cookie", "xfastnpc_session=no")])), None);
        assert_eq!(session_token(&HeaderMap::new()), None);
        let planted = headers(&[("cookie", "fastnpc_session=planted"), ("x-forwarded-proto", "https")]);
        assert_eq!(session_token(&planted), None, "over HTTPS only the __Host- cookie counts");
    }

    #[test]
    fn only_same_origin_may_change_state_with_the_cookie() {
        let post = Method::POST;
        assert!(require_same_origin(&Method::GET, &HeaderMap::new()).is_ok(), "reads need no check");
        assert!(require_same_origin(&post, &headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        for site in ["cross-site", "same-site", "none"] {
            let refused = headers(&[("sec-fetch-site", site), ("origin", "http://app:8080"), ("host", "app:8080")]);
            assert!(require_same_origin(&post, &refused).is_err(), "Sec-Fetch-Site: {site} wins over Origin");
        }
        assert!(require_same_origin(&post, &headers(&[("origin", "http://app:8080"), ("host", "app:8080")])).is_ok());
        assert!(require_same_origin(&post, &headers(&[("origin", "http://evil:8080"), ("host", "app:8080")])).is_err());
        assert!(require_same_origin(&post, &headers(&[("origin", "null"), ("host", "app:8080")])).is_err());
        assert!(require_same_origin(&Method::DELETE, &headers(&[("host", "app:8080")])).is_err(), "no evidence");
    }

    #[test]
    fn the_cookie_is_secure_and_host_prefixed_over_https_only() {
        let plain = set_cookie("tok", Duration::from_secs(60), false);
        assert_eq!(plain, "fastnpc_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        let secure = set_cookie("tok", Duration::from_secs(60), true);
        assert_eq!(secure, "__Host-fastnpc_session=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure");
        assert!(is_https(&headers(&[("origin", "https://app.example")])));
        assert!(is_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!is_https(&headers(&[("origin", "http://127.0.0.1:8080")])));
    }
}
