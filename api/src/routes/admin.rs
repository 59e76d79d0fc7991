//! The admin role: list users, disable and enable accounts, system stats.
//!
//! There is one admin, named by `FASTNPC_ADMIN_USERNAME` and created (or promoted) at start-up
//! by [`bootstrap`]; the API cannot grant the role. No admin route deletes or edits another
//! user's data — the original's "cleanup" wiped every user's characters. Disabling keeps the
//! data, revokes the sessions, stops the API keys and ends the user's queued and running jobs.

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
use serde_json::{Value, json};

use super::{auth, page_limit, parse_id};
use crate::{error::ApiError, extract::AdminUser, state::AppState};

#[derive(Serialize)]
struct AccountView {
    id: UserId,
    username: String,
    admin: bool,
    disabled: bool,
    disabled_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    characters: i64,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<UserId>,
    limit: Option<i64>,
}

/// `GET /v1/admin/users?after=&limit=` → `{items, next_after}`, oldest first.
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = page_limit(query.limit)?;
    let accounts = state.store.list_accounts(query.after, limit).await?;
    let next_after = (accounts.len() as i64 == limit).then(|| accounts.last().map(|a| a.user_id)).flatten();
    let items: Vec<AccountView> = accounts.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "items": items, "next_after": next_after })))
}

/// `POST /v1/admin/users/{id}/disable` → `{user, revoked_sessions, stopped_jobs}`. Idempotent.
/// The account's data stays; it can be enabled again.
pub async fn disable_user(
    State(state): State<AppState>,
    AdminUser(admin_id): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
    let mut stopped_jobs = 0;
    for job in &jobs {
        if super::jobs::stop_job(&state, job).await? != store::jobs::CancelOutcome::AlreadyFinished {
            stopped_jobs += 1;
        }
    }
    tracing::info!(admin.id = %admin_id, user.id = %user_id, revoked_sessions, stopped_jobs, "account disabled");
    let account = state.store.account(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!({
        "user": AccountView::from(account),
        "revoked_sessions": revoked_sessions,
        "stopped_jobs": stopped_jobs,
    })))
}

/// `POST /v1/admin/users/{id}/enable` → `{user}`. The user logs in again; API keys work again.
pub async fn enable_user(
    State(state): State<AppState>,
    AdminUser(admin_id): AdminUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id: UserId = parse_id(&id)?;
    if !state.store.enable_user(user_id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(admin.id = %admin_id, user.id = %user_id, "account enabled");
    let account = state.store.account(user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "user": AccountView::from(account) })))
}

/// `GET /v1/admin/stats` → counts of users, characters, conversations and jobs, and whether the
/// broker is connected.
pub async fn stats(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<Value>, ApiError> {
    let store::SystemStats { totals, characters_by_status: characters, jobs_by_kind_and_status: jobs } =
        state.store.system_stats().await?;
    Ok(Json(json!({
        "users": { "total": totals.users, "disabled": totals.disabled_users, "admins": totals.admins },
        "characters": characters,
        "messages": totals.messages,
        "groups": { "total": totals.groups, "messages": totals.group_messages },
        "jobs": jobs,
        "jobs_last_hour": { "finished": totals.jobs_finished_last_hour, "failed": totals.jobs_failed_last_hour },
        "broker_connected": state.publisher.is_connected(),
    })))
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
