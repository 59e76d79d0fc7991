//! The admin role: list users, disable and enable accounts, system stats.
//!
//! There is one admin, named by `FASTNPC_ADMIN_USERNAME` and created (or promoted) at start-up
//! by [`bootstrap`]; the API cannot grant the role. No admin route deletes or edits another
//! user's data — the original's "cleanup" wiped every user's characters. Disabling keeps the
//! data, revokes the sessions, stops the API keys and ends the user's queued and running jobs.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::UserId,
    jobs::JobStatus,
    settings::AdminAccount,
    store::{self, users::AccountSummary},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{auth, page_limit, parse_id};
use crate::{error::ApiError, extract::AdminUser, state::AppState};

/// An account as the admin sees it: no settings, no content, only what it owns and runs.
#[derive(Serialize, ToSchema)]
pub struct AccountView {
    id: UserId,
    username: String,
    admin: bool,
    disabled: bool,
    /// When it was disabled; null while enabled.
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// Characters it owns.
    characters: i64,
    /// Its queued and running jobs.
    active_jobs: i64,
}

impl From<AccountSummary> for AccountView {
    fn from(account: AccountSummary) -> Self {
        Self {
            id: account.user_id,
            username: account.username,
            admin: account.is_admin,
            disabled: account.disabled_at.is_some(),
            disabled_at: account.disabled_at,
            created_at: account.created_at,
            characters: account.characters,
            active_jobs: account.active_jobs,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_after` of the previous page.
    after: Option<UserId>,
    /// Page size, 1 to 200 (50 by default).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

/// One page of accounts, oldest first.
#[derive(Serialize, ToSchema)]
pub struct AccountPage {
    items: Vec<AccountView>,
    /// Pass as `after` for the next page; null on the last one.
    next_after: Option<UserId>,
}

/// `{user, revoked_sessions, stopped_jobs}`: a disabled account and what disabling it ended.
#[derive(Serialize, ToSchema)]
pub struct AccountDisabled {
    user: AccountView,
    /// Sessions revoked now (0 when it was already disabled).
    revoked_sessions: u64,
    /// Queued jobs cancelled and running ones asked to stop.
    stopped_jobs: u32,
}

/// `{user}`: an account.
#[derive(Serialize, ToSchema)]
pub struct AccountEnvelope {
    user: AccountView,
}

/// Whole-system counts.
#[derive(Serialize, ToSchema)]
pub struct AdminStats {
    users: AdminUserCounts,
    /// Characters per status (`generating`, `ready`, `failed`); a status with none is absent.
    characters: BTreeMap<String, i64>,
    /// One-to-one chat messages, the users' and the characters'.
    messages: i64,
    groups: AdminGroupCounts,
    /// Jobs per kind, then per status: `{"chat_reply": {"succeeded": 10, …}, …}`; absent when none.
    jobs: BTreeMap<String, BTreeMap<String, i64>>,
    jobs_last_hour: AdminRecentJobs,
    /// Whether this API process is connected to the job queue's broker.
    broker_connected: bool,
}

/// Accounts: all, disabled and admins.
#[derive(Serialize, ToSchema)]
pub struct AdminUserCounts {
    total: i64,
    disabled: i64,
    admins: i64,
}

/// Group chats and their messages.
#[derive(Serialize, ToSchema)]
pub struct AdminGroupCounts {
    total: i64,
    messages: i64,
}

/// Jobs that ended in the last hour, and those of them that failed.
#[derive(Serialize, ToSchema)]
pub struct AdminRecentJobs {
    finished: i64,
    failed: i64,
}

/// `GET /v1/admin/users?after=&limit=` → `{items, next_after}`, oldest first.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "List accounts, oldest first",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = AccountPage),
        (status = 404, description = "The caller is not the admin (the admin routes answer as if they did not \
            exist)", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/invalid-field`: `limit` is not between 1 and 200",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AccountPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let accounts = state.store.list_accounts(query.after, limit).await?;
    let next_after = super::next_cursor(&accounts, limit, |a| a.user_id);
    Ok(Json(AccountPage { items: accounts.into_iter().map(Into::into).collect(), next_after }))
}

/// `POST /v1/admin/users/{id}/disable` → `{user, revoked_sessions, stopped_jobs}`. Idempotent.
/// The account's data stays; it can be enabled again.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/disable",
    tag = "admin",
    summary = "Disable an account (idempotent)",
    description = "Its data stays; its sessions are revoked, its API keys stop working, its queued jobs are \
        cancelled and its running ones asked to stop. It can be enabled again.",
    params(("id" = UserId, Path, description = "The account")),
    responses(
        (status = 200, description = "Disabled", body = AccountDisabled),
        (status = 404, description = "No such account, or the caller is not the admin", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
        (status = 409, description = "`/problems/cannot-disable-self`: the admin's own account",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn disable_user(
    State(state): State<AppState>,
    AdminUser(admin_id): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<AccountDisabled>, ApiError> {
    let user_id: UserId = parse_id(&id)?;
    if user_id == admin_id {
        return Err(ApiError::Conflict {
            code: "cannot-disable-self",
            detail: "the admin cannot disable their own account".into(),
        });
    }
    let revoked_sessions = state.store.disable_user(user_id).await?.ok_or(ApiError::NotFound)?;
    // After the commit no new job can be submitted (every credential of the user is dead), so
    // this sweep sees all of them.
    let mut jobs = Vec::new();
    for job_id in state.store.active_jobs_of(user_id).await? {
        jobs.extend(state.store.job(user_id, job_id).await?);
    }
    // Queued jobs first: stopping a running one frees its worker, which would otherwise claim
    // the user's next queued job before the sweep reaches it.
    jobs.sort_by_key(|job| job.status != JobStatus::Queued);
    let mut stopped_jobs = 0u32;
    for job in &jobs {
        if super::jobs::stop_job(&state, job).await? != store::jobs::CancelOutcome::AlreadyFinished {
            stopped_jobs += 1;
        }
    }
    tracing::info!(admin.id = %admin_id, user.id = %user_id, revoked_sessions, stopped_jobs, "account disabled");
    let account = state.store.account(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(AccountDisabled { user: AccountView::from(account), revoked_sessions, stopped_jobs }))
}

/// `POST /v1/admin/users/{id}/enable` → `{user}`. The user logs in again; API keys work again.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{id}/enable",
    tag = "admin",
    summary = "Enable a disabled account (idempotent)",
    description = "Its API keys work again; its old sessions stay revoked (the user logs in again).",
    params(("id" = UserId, Path, description = "The account")),
    responses(
        (status = 200, description = "Enabled", body = AccountEnvelope),
        (status = 404, description = "No such account, or the caller is not the admin", body = crate::openapi::Problem,
            content_type = "application/problem+json"),
    ),
)]
pub async fn enable_user(
    State(state): State<AppState>,
    AdminUser(admin_id): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<AccountEnvelope>, ApiError> {
    let user_id: UserId = parse_id(&id)?;
    if !state.store.enable_user(user_id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(admin.id = %admin_id, user.id = %user_id, "account enabled");
    let account = state.store.account(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(AccountEnvelope { user: AccountView::from(account) }))
}

/// `GET /v1/admin/stats` → counts of users, characters, conversations and jobs, and whether the
/// broker is connected.
#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    tag = "admin",
    summary = "Whole-system counts",
    responses(
        (status = 200, description = "The counts", body = AdminStats),
        (status = 404, description = "The caller is not the admin (the admin routes answer as if they did not \
            exist)", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn stats(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<AdminStats>, ApiError> {
    let store::SystemStats { totals, characters_by_status: characters, jobs_by_kind_and_status: jobs } =
        state.store.system_stats().await?;
    Ok(Json(AdminStats {
        users: AdminUserCounts { total: totals.users, disabled: totals.disabled_users, admins: totals.admins },
        characters,
        messages: totals.messages,
        groups: AdminGroupCounts { total: totals.groups, messages: totals.group_messages },
        jobs,
        jobs_last_hour: AdminRecentJobs {
            finished: totals.jobs_finished_last_hour,
            failed: totals.jobs_failed_last_hour,
        },
        broker_connected: state.publisher.is_connected(),
    }))
}

/// Makes the configured account the one admin, creating it when absent; without a configured
/// admin, nobody is one. An existing account is promoted only if the configured password is its
/// password: otherwise whoever registered that username first would inherit the role.
pub async fn bootstrap(state: &AppState, admin: Option<&AdminAccount>) -> anyhow::Result<()> {
    let Some(admin) = admin else {
        let demoted = state.store.clear_admins().await?;
        if demoted > 0 {
            tracing::warn!(demoted, "no admin configured; cleared the admin role");
        }
        return Ok(());
    };
    let username = auth::normalize_username(&admin.username);
    let password = admin.password.expose();
    let refuse = |error: ApiError| anyhow::anyhow!("FASTNPC_ADMIN_USERNAME/PASSWORD: {error}");
    auth::validate_username(&username).map_err(refuse)?;
    auth::validate_password(password, &username).map_err(refuse)?;
    let user_id = match state.store.credentials(&username).await? {
        Some(existing) => {
            let same_password = auth::verify_password(state, Some(existing.password_hash), password.to_owned())
                .await
                .map_err(refuse)?;
            anyhow::ensure!(
                same_password,
                "FASTNPC_ADMIN_USERNAME names an existing account whose password is not FASTNPC_ADMIN_PASSWORD; \
                 refusing to make it the admin"
            );
            existing.user_id
        }
        None => {
            let hash = auth::hash_password(state, password.to_owned()).await.map_err(refuse)?;
            let user_id = UserId::new();
            if state.store.insert_user(user_id, &username, &hash).await? {
                user_id
            } else {
                // Another replica created it at the same moment: take theirs.
                state
                    .store
                    .credentials(&username)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the admin account vanished while being created"))?
                    .user_id
            }
        }
    };
    state.store.make_sole_admin(user_id).await?;
    tracing::info!(user.id = %user_id, "admin account ready");
    Ok(())
}
