//! Accounts: register, log in (bearer token), log out, and who am I.
//!
//! Passwords are hashed with argon2id on the blocking pool (hashing is deliberately slow and
//! must not stall the async workers). Tokens are 256 random bits; only their SHA-256 is stored.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::UserId,
    store::{self, users::UserRecord},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    browser_session,
    error::ApiError,
    extract::{ApiJson, AuthUser, ClientAddress, session_token_of, token_hash},
    state::AppState,
};

/// A new account's username and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 3 to 32 letters, digits, `_`, `-` or `.`, counted after trimming and NFKC normalisation
    /// (full-width and other compatibility forms name the same account); unique.
    username: String,
    /// 8 to 256 characters, at least 4 different ones, not containing the username (in any case).
    #[schema(min_length = 8, max_length = 256)]
    password: String,
}

/// An account as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
    id: UserId,
    username: String,
    /// What characters are told about the user (at most 200 characters; empty when unset).
    bio: String,
    memory_budgets: UserMemoryBudgets,
    /// The most rounds a group chat's moderator runs for one message (1 to 10).
    max_group_rounds: i32,
    /// `zh` or `en`: the preferred language, the one a group chat whose members speak different
    /// languages is moderated in.
    #[schema(value_type = fastnpc_shared::prompts::Language)]
    language: String,
    /// Whether this account is the deployment's admin (`/v1/admin/...`).
    admin: bool,
    created_at: DateTime<Utc>,
}

/// Memory budgets, in characters (50 to 5000 each).
#[derive(Serialize, ToSchema)]
struct UserMemoryBudgets {
    session: i32,
    short_term: i32,
    long_term: i32,
}

/// `{user}`: the caller's account.
#[derive(Serialize, ToSchema)]
pub struct UserEnvelope {
    user: UserView,
}

impl From<UserRecord> for UserView {
    fn from(user: UserRecord) -> Self {
        Self {
            id: user.user_id,
            username: user.username,
            bio: user.bio,
            memory_budgets: UserMemoryBudgets {
                session: user.ctx_max_chat,
                short_term: user.ctx_max_stm,
                long_term: user.ctx_max_ltm,
            },
            max_group_rounds: user.max_group_rounds,
            language: user.language,
            admin: user.is_admin,
            created_at: user.created_at,
        }
    }
}

pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
pub(crate) const MAX_PASSWORD_CHARS: usize = 256;

/// Usernames are identifiers: NFKC-normalised, so look-alike compatibility forms (full-width
/// letters, ligatures) name the same account instead of a second one.
pub(crate) fn normalize_username(username: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    username.trim().nfkc().collect()
}

pub(crate) fn validate_username(username: &str) -> Result<(), ApiError> {
    let chars = username.chars().count();
    if !(3..=32).contains(&chars) {
        return Err(ApiError::invalid_field("username must be 3 to 32 characters"));
    }
    if !username.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(ApiError::invalid_field("username may contain letters, digits, `_`, `-` and `.` only"));
    }
    Ok(())
}

pub(crate) fn validate_password(password: &str, username: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err(ApiError::invalid_field("password is too simple: use at least 4 different characters"));
    }
    if password.to_lowercase().contains(&username.to_lowercase()) {
        return Err(ApiError::invalid_field("password must not contain the username"));
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(format!("password must have at least {MIN_PASSWORD_CHARS} characters")));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_field(format!("password must have at most {MAX_PASSWORD_CHARS} characters")));
    }
    Ok(())
}

/// `POST /v1/auth/register` → `201 {user}`.
#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "auth",
    summary = "Create an account",
    description = "The account is created with default settings; log in to get a session.",
    security(()),
    request_body = Credentials,
    responses(
        (status = 201, description = "Created: the new account", body = UserEnvelope),
        (status = 409, description = "`/problems/username-taken`: the username (as normalised) is taken",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<UserEnvelope>), ApiError> {
    let username = normalize_username(&body.username);
    validate_username(&username)?;
    validate_password(&body.password, &username)?;
    let hash = hash_password(&state, body.password).await?;
    let user_id = UserId::new();
    if !state.store.insert_user(user_id, &username, &hash).await? {
        return Err(ApiError::Conflict { code: "username-taken", detail: "that username is taken".into() });
    }
    let user = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::CREATED, Json(UserEnvelope { user: UserView::from(user) })))
}

/// A login: the account's credentials, and whether the session is the web app's cookie.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Trimmed and NFKC-normalised, as at registration.
    username: String,
    password: String,
    /// A browser session: the token goes into an `HttpOnly` cookie instead of the body. Such a
    /// login must come from this site's pages (`Sec-Fetch-Site` / `Origin`), or it answers 403.
    #[serde(default)]
    cookie: bool,
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginView {
    /// The bearer token. Absent for a cookie session: page scripts never see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// `Bearer`; absent for a cookie session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "Bearer")]
    token_type: Option<&'static str>,
    expires_at: DateTime<Utc>,
    user: UserView,
}

/// `POST /v1/auth/login` with `{username, password}` → `200 {token, token_type, expires_at,
/// user}`; with `"cookie": true` (the web app) → `200 {expires_at, user}` and the session in an
/// `HttpOnly` cookie (see [`crate::browser_session`]).
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    summary = "Log in: a session token, or the web app's session cookie",
    description = "Wrong passwords are counted per username and per client address; past a few, both are \
        refused for a while (429, `Retry-After`), whatever the password.",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in: the token (or, with `\"cookie\": true`, only its expiry) and \
            the account", body = LoginView,
            headers(("Set-Cookie" = String, description = "With `\"cookie\": true` only: the session \
                (`HttpOnly; SameSite=Strict`; `__Host-` prefixed and `Secure` over HTTPS)"))),
        (status = 401, description = "`/problems/unauthorized`: wrong username or password (the same answer \
            for an unknown username)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "`/problems/account-disabled`: the password is right but an administrator \
            disabled the account; or `/problems/cross-site-request`: a cookie login not from this site's pages",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this username or from this address \
            (`Retry-After`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let cookie = body.cookie;
    if cookie {
        // A forged cookie login would sign the victim into the forger's account.
        browser_session::require_same_origin(&Method::POST, &headers)?;
    }
    let invalid = ApiError::Unauthorized { detail: "wrong username or password" };
    let body = Credentials { username: normalize_username(&body.username), password: body.password };
    // Redis being down must not lock everyone out: the limiter fails open, loudly.
    match state.login_limiter.locked_for(&body.username, address).await {
        Ok(Some(wait)) => return Err(too_many_attempts(wait)),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "login limiter unavailable; not limiting"),
    }
    let stored = state.store.credentials(&body.username).await?;
    let (account, hash) = match stored {
        Some(credentials) => (Some((credentials.user_id, credentials.disabled)), Some(credentials.password_hash)),
        None => (None, None),
    };
    let verified = verify_password(&state, hash, body.password).await?;
    let Some((user_id, disabled)) = account.filter(|_| verified) else {
        if let Err(error) = state.login_limiter.failed(&body.username, address).await {
            tracing::warn!(%error, "login limiter unavailable; not counting");
        }
        return Err(invalid);
    };
    // Said only after the password checked out, so it tells a guesser nothing.
    if disabled {
        return Err(ApiError::Invalid {
            status: StatusCode::FORBIDDEN,
            code: "account-disabled",
            detail: "this account has been disabled by an administrator".into(),
        });
    }
    if let Err(error) = state.login_limiter.succeeded(&body.username, address).await {
        tracing::warn!(%error, "login limiter unavailable");
    }

    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let expires_at = Utc::now() + state.config.session_ttl;
    state.store.insert_session(&token_hash(&token), user_id, expires_at).await?;
    let user = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?.into();
    if !cookie {
        return Ok(Json(LoginView { token: Some(token), token_type: Some("Bearer"), expires_at, user }).into_response());
    }
    let set_cookie = browser_session::set_cookie(&token, state.config.session_ttl, browser_session::is_https(&headers));
    let view = LoginView { token: None, token_type: None, expires_at, user };
    Ok(([(header::SET_COOKIE, set_cookie)], Json(view)).into_response())
}

fn too_many_attempts(wait: std::time::Duration) -> ApiError {
    ApiError::TooManyRequests {
        retry_after: wait,
        detail: "too many wrong passwords for this username or from this address; wait before trying again".into(),
    }
}

/// Checks a signed-in user's own password (`POST /v1/auth/password`, `DELETE /v1/me`) behind the
/// login back-off, keyed on the same username and client address: a stolen session guesses no
/// faster than a login would, and failures here and at login add up. `Ok(false)` is a wrong
/// password, already counted.
async fn check_own_password(
    state: &AppState,
    user_id: UserId,
    username: &str,
    address: std::net::IpAddr,
    password: String,
) -> Result<bool, ApiError> {
    // Like login, the limiter fails open, loudly, when Redis is down.
    match state.login_limiter.locked_for(username, address).await {
        Ok(Some(wait)) => return Err(too_many_attempts(wait)),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "login limiter unavailable; not limiting"),
    }
    let stored = state.store.password_hash(user_id).await?;
    let verified = verify_password(state, stored, password).await?;
    let recorded = if verified {
        state.login_limiter.succeeded(username, address).await
    } else {
        state.login_limiter.failed(username, address).await.map(|_| ())
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, "login limiter unavailable; not counting");
    }
    Ok(verified)
}

/// A place within the hashing bound (`FASTNPC_PASSWORD_HASHING_CONCURRENCY`), waited for at most
/// `FASTNPC_PASSWORD_HASHING_QUEUE_MS`. The permit is moved into the blocking task, so a request
/// dropped mid-hash (its client gone, or the request timeout) cannot free it while the hash
/// still runs.
async fn hashing_permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    queued_permit(&state.password_hashing, state.config.password_hashing_queue).await
}

/// A permit of `bound`, waited for at most `queue`; past that the request is answered `503` with
/// `Retry-After` having hashed nothing, so a burst of logins costs queueing time, not memory:
/// every hash holds ~19 MiB while it runs.
async fn queued_permit(
    bound: &std::sync::Arc<tokio::sync::Semaphore>,
    queue: std::time::Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(queue, bound.clone().acquire_owned()).await {
        Ok(permit) => permit.map_err(|e| ApiError::Internal(e.into())),
        Err(_) => Err(ApiError::Busy {
            retry_after: queue.max(std::time::Duration::from_secs(1)),
            detail: "too many password checks in progress; retry shortly",
        }),
    }
}

/// Hashes a password with argon2id on the blocking pool, within the hashing bound.
pub(crate) async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    let permit = hashing_permit(state).await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("password hashing failed: {e}")))
}

/// Checks a password against a stored hash. Without a hash (no such user) it checks against a
/// dummy hash, so timing does not reveal which usernames exist.
pub(crate) async fn verify_password(
    state: &AppState,
    hash: Option<String>,
    password: String,
) -> Result<bool, ApiError> {
    let permit = hashing_permit(state).await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
        PasswordHash::new(hash)
            .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

/// A password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    /// 8 to 256 characters, at least 4 different ones, not containing the username (in any case).
    #[schema(min_length = 8, max_length = 256)]
    new_password: String,
}

/// `POST /v1/auth/password` with `{current_password, new_password}` → `204`. Every other session
/// is revoked (a stolen session dies with the old password); API keys stay.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    summary = "Change your password",
    description = "Every other session of the account is revoked; the one making the request (when it is a \
        session) and API keys stay. Wrong current passwords count towards the login back-off.",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 403, description = "`/problems/wrong-password`: `current_password` is wrong; or \
            `/problems/cross-site-request`: a cookie-authenticated change not from this site's pages",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this username or from this address \
            (`Retry-After`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn change_password(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    let username = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?.username;
    validate_password(&body.new_password, &username)?;
    if !check_own_password(&state, user_id, &username, address, body.current_password).await? {
        return Err(ApiError::Invalid {
            status: StatusCode::FORBIDDEN,
            code: "wrong-password",
            detail: "current_password is wrong".into(),
        });
    }
    let hash = hash_password(&state, body.new_password).await?;
    let current = session_token_of(&headers).map(token_hash);
    state.store.change_password(user_id, &hash, current.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The account's password, to confirm its deletion.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccount {
    password: String,
}

/// `DELETE /v1/me` with `{password}` → `204`: the account and everything it owns (characters,
/// messages, memories, groups, jobs, sessions, API keys) are deleted; nobody else's data is
/// touched (every row is owned through the user).
#[utoipa::path(
    delete,
    path = "/v1/me",
    tag = "auth",
    summary = "Delete your account and everything it owns",
    description = "Characters, messages, memories, groups, jobs, sessions and API keys go with it. Wrong \
        passwords count towards the login back-off.",
    request_body = DeleteAccount,
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`/problems/wrong-password`: `password` is wrong; or \
            `/problems/cross-site-request`: a cookie-authenticated change not from this site's pages",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords for this username or from this address \
            (`Retry-After`)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn delete_me(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<DeleteAccount>,
) -> Result<StatusCode, ApiError> {
    let username = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?.username;
    if !check_own_password(&state, user_id, &username, address, body.password).await? {
        return Err(ApiError::Invalid {
            status: StatusCode::FORBIDDEN,
            code: "wrong-password",
            detail: "password is wrong".into(),
        });
    }
    state.store.delete_user(user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An argon2id hash of a random password, verified against when the username is unknown.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"no such user", &salt).map(|h| h.to_string()).unwrap_or_default()
    })
}

/// `POST /v1/auth/logout` → `204`: revokes the presented session (bearer or cookie) and clears
/// the cookie.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    summary = "Log out: revoke this session",
    description = "With an API key, nothing is revoked (revoke keys with `DELETE /v1/api-keys/{id}`).",
    responses(
        (status = 204, description = "Logged out",
            headers(("Set-Cookie" = String, description = "Deletes the session cookie (both names)"))),
    ),
)]
pub async fn logout(State(state): State<AppState>, _user: AuthUser, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = session_token_of(&headers) {
        state.store.revoke_session(&token_hash(token)).await?;
    }
    Ok(logged_out())
}

/// `POST /v1/auth/logout-everywhere` → `204`: revokes every session of the account (each
/// browser and bearer session; API keys stay, they are revoked one by one) and clears the cookie.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-everywhere",
    tag = "auth",
    summary = "Log out everywhere: revoke every session of the account",
    description = "Every browser and bearer session; API keys stay (they are revoked one by one).",
    responses(
        (status = 204, description = "Logged out",
            headers(("Set-Cookie" = String, description = "Deletes the session cookie (both names)"))),
    ),
)]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
) -> Result<Response, ApiError> {
    let revoked = state.store.revoke_sessions(user_id).await?;
    tracing::info!(revoked, "logged out everywhere");
    Ok(logged_out())
}

/// `204` that deletes the browser's session cookie, if it has one.
fn logged_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    for cookie in browser_session::clear_cookies() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `GET /v1/me` → `{user}`.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "auth",
    summary = "Your account and settings",
    responses((status = 200, description = "The account", body = UserEnvelope)),
)]
pub async fn me(State(state): State<AppState>, AuthUser(user_id): AuthUser) -> Result<Json<UserEnvelope>, ApiError> {
    let user = state.store.user(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(UserEnvelope { user: UserView::from(user) }))
}

/// Memory budgets a user may set, in characters (the original's range).
const BUDGET_RANGE: std::ops::RangeInclusive<i32> = 50..=5000;
pub(crate) const MAX_BIO_CHARS: usize = 200;
/// The languages a user may prefer (what `users.language`'s check allows).
const LANGUAGES: [&str; 2] = ["zh", "en"];

/// Memory budgets to change, in characters (50 to 5000 each); absent or null ones stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsPatch {
    #[schema(minimum = 50, maximum = 5000)]
    session: Option<i32>,
    #[schema(minimum = 50, maximum = 5000)]
    short_term: Option<i32>,
    #[schema(minimum = 50, maximum = 5000)]
    long_term: Option<i32>,
}

/// Settings to change; absent or null ones stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MePatch {
    /// At most 200 characters after trimming, without control characters; empty clears it.
    bio: Option<String>,
    memory_budgets: Option<BudgetsPatch>,
    /// 1 to 10.
    #[schema(minimum = 1, maximum = 10)]
    max_group_rounds: Option<i32>,
    #[schema(value_type = Option<fastnpc_shared::prompts::Language>)]
    language: Option<String>,
}

/// `PATCH /v1/me` with any of `{bio, memory_budgets: {session, short_term, long_term},
/// max_group_rounds, language}` → `{user}`.
#[utoipa::path(
    patch,
    path = "/v1/me",
    tag = "auth",
    summary = "Change your settings",
    request_body = MePatch,
    responses((status = 200, description = "The account as changed", body = UserEnvelope)),
)]
pub async fn update_me(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    ApiJson(body): ApiJson<MePatch>,
) -> Result<Json<UserEnvelope>, ApiError> {
    let bio = body.bio.map(|bio| bio.trim().to_owned());
    if bio.as_ref().is_some_and(|bio| bio.chars().count() > MAX_BIO_CHARS || bio.chars().any(char::is_control)) {
        return Err(ApiError::invalid_field(format!(
            "bio must be at most {MAX_BIO_CHARS} characters, without control characters"
        )));
    }
    let budgets = body.memory_budgets.unwrap_or(BudgetsPatch { session: None, short_term: None, long_term: None });
    for (name, value) in
        [("session", budgets.session), ("short_term", budgets.short_term), ("long_term", budgets.long_term)]
    {
        if value.is_some_and(|v| !BUDGET_RANGE.contains(&v)) {
            return Err(ApiError::invalid_field(format!(
                "memory_budgets.{name} must be between {} and {} characters",
                BUDGET_RANGE.start(),
                BUDGET_RANGE.end()
            )));
        }
    }
    if body.max_group_rounds.is_some_and(|r| !(1..=10).contains(&r)) {
        return Err(ApiError::invalid_field("max_group_rounds must be between 1 and 10"));
    }
    if body.language.as_deref().is_some_and(|language| !LANGUAGES.contains(&language)) {
        return Err(ApiError::invalid_field("language must be \"zh\" or \"en\""));
    }
    state
        .store
        .update_user_settings(
            user_id,
            store::users::SettingsPatch {
                bio: bio.as_deref(),
                ctx_max_chat: budgets.session,
                ctx_max_stm: budgets.short_term,
                ctx_max_ltm: budgets.long_term,
                max_group_rounds: body.max_group_rounds,
                language: body.language.as_deref(),
            },
        )
        .await?;
    me(State(state), AuthUser(user_id)).await
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use axum::response::IntoResponse;
    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hash_waits_for_a_place_at_most_the_queue_timeout_then_gets_a_503() {
        let bound = Arc::new(Semaphore::new(1));
        let queue = Duration::from_secs(3);
        let running = queued_permit(&bound, queue).await.expect("a free place");

        // The paused clock jumps to the deadline as soon as the waiter is the only thing left.
        let refused = queued_permit(&bound, queue).await.expect_err("no place within the queue timeout");
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.headers()["content-type"], "application/problem+json");

        // A waiter gets the place as soon as it is freed, within its queue timeout.
        let waiting = tokio::spawn({
            let bound = bound.clone();
            async move { queued_permit(&bound, queue).await.map(drop).is_ok() }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(running);
        assert!(waiting.await.unwrap(), "the queued request got the freed place");
    }
}
