//! Users and their login sessions.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::PgStore;
use super::StoreResult;
use super::postgres::is_unique_violation;
use crate::ids::UserId;

/// A user as `/v1/me` shows it.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub user_id: UserId,
    pub username: String,
    pub bio: String,
    pub ctx_max_chat: i32,
    pub ctx_max_stm: i32,
    pub ctx_max_ltm: i32,
    pub max_group_rounds: i32,
    /// `zh` or `en`: the user's preferred language, the one a group chat whose members speak
    /// different languages is moderated and prompted in.
    pub language: String,
    pub is_admin: bool,
    pub created_at: DateTime<Utc>,
}

/// What login needs to know about a username.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub user_id: UserId,
    pub password_hash: String,
    pub disabled: bool,
}

/// The name of the case-insensitive username uniqueness index.
pub const USERNAME_KEY: &str = "users_username_lower_key";

pub(crate) async fn insert(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    username: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into users (user_id, username, password_hash) values ($1, $2, $3)",
        user_id.0,
        username,
        password_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The id, password hash and state of `username` (case-insensitive), for login.
pub(crate) async fn credentials(db: impl PgExecutor<'_>, username: &str) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        r#"select user_id as "user_id: UserId", password_hash, disabled_at is not null as "disabled!"
           from users where lower(username) = lower($1)"#,
        username,
    )
    .fetch_optional(db)
    .await
}

pub(crate) async fn get(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as!(
        UserRecord,
        r#"select user_id as "user_id: UserId", username, bio, ctx_max_chat, ctx_max_stm, ctx_max_ltm,
                  max_group_rounds, language, is_admin, created_at
           from users where user_id = $1"#,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

pub(crate) async fn insert_session(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
    user_id: UserId,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into sessions (token_hash, user_id, expires_at) values ($1, $2, $3)",
        token_hash,
        user_id.0,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The users of live sessions of enabled accounts, by token hash, in one statement: one answer
/// per hash, in order.
pub(crate) async fn session_users(
    db: impl PgExecutor<'_>,
    token_hashes: &[Vec<u8>],
) -> Result<Vec<Option<UserId>>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select s.token_hash, s.user_id as "user_id: UserId" from sessions s join users u using (user_id)
           where s.token_hash = any($1) and s.revoked_at is null and s.expires_at > now() and u.disabled_at is null"#,
        token_hashes,
    )
    .fetch_all(db)
    .await?;
    let users: std::collections::HashMap<Vec<u8>, UserId> =
        rows.into_iter().map(|r| (r.token_hash, r.user_id)).collect();
    Ok(token_hashes.iter().map(|hash| users.get(hash).copied()).collect())
}

/// Revokes one session; revoking twice is harmless.
pub(crate) async fn revoke_session(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!("update sessions set revoked_at = now() where token_hash = $1 and revoked_at is null", token_hash,)
        .execute(db)
        .await?;
    Ok(())
}

/// Revokes every live session of a user ("log out everywhere"); returns how many.
pub(crate) async fn revoke_sessions(db: impl PgExecutor<'_>, user_id: UserId) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query!("update sessions set revoked_at = now() where user_id = $1 and revoked_at is null", user_id.0)
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

/// Settings to change; `None` keeps the stored value.
pub struct SettingsPatch<'a> {
    pub bio: Option<&'a str>,
    pub ctx_max_chat: Option<i32>,
    pub ctx_max_stm: Option<i32>,
    pub ctx_max_ltm: Option<i32>,
    pub max_group_rounds: Option<i32>,
    /// `zh` or `en` (the column's check refuses anything else).
    pub language: Option<&'a str>,
}

pub(crate) async fn update_settings(
    db: impl PgExecutor<'_>,
    user_id: UserId,
    patch: SettingsPatch<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update users set bio = coalesce($2, bio), ctx_max_chat = coalesce($3, ctx_max_chat),
                ctx_max_stm = coalesce($4, ctx_max_stm), ctx_max_ltm = coalesce($5, ctx_max_ltm),
                max_group_rounds = coalesce($6, max_group_rounds), language = coalesce($7, language),
                updated_at = now()
         where user_id = $1",
        user_id.0,
        patch.bio,
        patch.ctx_max_chat,
        patch.ctx_max_stm,
        patch.ctx_max_ltm,
        patch.max_group_rounds,
        patch.language,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The stored password hash of a user (to re-check the password before sensitive changes).
pub(crate) async fn password_hash(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query!("select password_hash from users where user_id = $1", user_id.0).fetch_optional(db).await?;
    Ok(row.map(|r| r.password_hash))
}

/// Sets a new password hash and revokes every session but `keep` (the one making the change).
pub(crate) async fn change_password(
    db: &sqlx::PgPool,
    user_id: UserId,
    password_hash: &str,
    keep: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        "update users set password_hash = $2, updated_at = now() where user_id = $1",
        user_id.0,
        password_hash
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update sessions set revoked_at = now()
         where user_id = $1 and revoked_at is null and ($2::bytea is null or token_hash <> $2)",
        user_id.0,
        keep,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes a user and, by cascade, everything they own.
pub(crate) async fn delete(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("delete from users where user_id = $1", user_id.0).execute(db).await?;
    Ok(result.rows_affected() == 1)
}

/// Forgets sessions that expired or were revoked more than a day ago.
pub(crate) async fn purge_sessions(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "delete from sessions where expires_at < now() - interval '1 day' or revoked_at < now() - interval '1 day'"
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Whether a user is an enabled admin.
pub(crate) async fn is_admin(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from users where user_id = $1 and is_admin and disabled_at is null) as "admin!""#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.admin)
}

/// Whether a user exists and is not disabled.
pub(crate) async fn is_enabled(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from users where user_id = $1 and disabled_at is null) as "enabled!""#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.enabled)
}

/// Makes `user_id` the one admin: sets its flag (and enables it) and clears every other's.
pub(crate) async fn make_sole_admin(db: &sqlx::PgPool, user_id: UserId) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query!("update users set is_admin = false where is_admin and user_id <> $1", user_id.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "update users set is_admin = true, disabled_at = null, updated_at = now() where user_id = $1",
        user_id.0
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Clears every admin flag (no admin is configured).
pub(crate) async fn clear_admins(db: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!("update users set is_admin = false where is_admin").execute(db).await?;
    Ok(result.rows_affected())
}

/// A user as the admin listing shows it.
#[derive(Clone, Debug)]
pub struct AccountSummary {
    pub user_id: UserId,
    pub username: String,
    pub is_admin: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub characters: i64,
    pub active_jobs: i64,
}

/// Users in id (creation) order after `after`, with what they own and run.
pub(crate) async fn list(
    db: impl PgExecutor<'_>,
    after: Option<UserId>,
    limit: i64,
) -> Result<Vec<AccountSummary>, sqlx::Error> {
    sqlx::query_as!(
        AccountSummary,
        r#"select u.user_id as "user_id: UserId", u.username, u.is_admin, u.disabled_at, u.created_at,
                  (select count(*) from characters c where c.user_id = u.user_id) as "characters!",
                  (select count(*) from jobs j where j.user_id = u.user_id and j.status in ('queued', 'running'))
                      as "active_jobs!"
           from users u
           where $1::uuid is null or u.user_id > $1
           order by u.user_id
           limit $2"#,
        after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// One user as the admin listing shows it.
pub(crate) async fn summary(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Option<AccountSummary>, sqlx::Error> {
    sqlx::query_as!(
        AccountSummary,
        r#"select u.user_id as "user_id: UserId", u.username, u.is_admin, u.disabled_at, u.created_at,
                  (select count(*) from characters c where c.user_id = u.user_id) as "characters!",
                  (select count(*) from jobs j where j.user_id = u.user_id and j.status in ('queued', 'running'))
                      as "active_jobs!"
           from users u where u.user_id = $1"#,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// Disables an account and revokes all its sessions, in one transaction. Returns the number of
/// sessions revoked, or `None` when there is no such user.
pub(crate) async fn disable(db: &sqlx::PgPool, user_id: UserId) -> Result<Option<u64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let found = sqlx::query!(
        "update users set disabled_at = coalesce(disabled_at, now()), updated_at = now() where user_id = $1",
        user_id.0
    )
    .execute(&mut *tx)
    .await?;
    if found.rows_affected() == 0 {
        return Ok(None);
    }
    let revoked =
        sqlx::query!("update sessions set revoked_at = now() where user_id = $1 and revoked_at is null", user_id.0)
            .execute(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Some(revoked.rows_affected()))
}

/// Enables an account again; its API keys work again, its old sessions stay revoked.
pub(crate) async fn enable(db: impl PgExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("update users set disabled_at = null, updated_at = now() where user_id = $1", user_id.0)
        .execute(db)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Accounts: users, their settings, login sessions and the admin's view of them.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// False when the username is taken (case-insensitively).
    async fn insert_user(&self, user_id: UserId, username: &str, password_hash: &str) -> StoreResult<bool>;
    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>>;
    async fn user(&self, user_id: UserId) -> StoreResult<Option<UserRecord>>;
    async fn update_user_settings(&self, user_id: UserId, patch: SettingsPatch<'_>) -> StoreResult<()>;
    async fn password_hash(&self, user_id: UserId) -> StoreResult<Option<String>>;
    /// Sets a new password hash and revokes every session but `keep`.
    async fn change_password(&self, user_id: UserId, password_hash: &str, keep: Option<&[u8]>) -> StoreResult<()>;
    /// Deletes a user and everything they own.
    async fn delete_user(&self, user_id: UserId) -> StoreResult<bool>;
    async fn insert_session(&self, token_hash: &[u8], user_id: UserId, expires_at: DateTime<Utc>) -> StoreResult<()>;
    /// The user of a live session of an enabled account.
    async fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<UserId>>;
    async fn revoke_session(&self, token_hash: &[u8]) -> StoreResult<()>;
    /// Revokes every live session of the user (API keys stay); returns how many.
    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64>;
    /// Forgets sessions that expired or were revoked long ago; returns how many.
    async fn purge_sessions(&self) -> StoreResult<u64>;
    async fn is_admin(&self, user_id: UserId) -> StoreResult<bool>;
    async fn is_enabled(&self, user_id: UserId) -> StoreResult<bool>;
    /// Makes `user_id` the one admin (and enables it).
    async fn make_sole_admin(&self, user_id: UserId) -> StoreResult<()>;
    async fn clear_admins(&self) -> StoreResult<u64>;
    async fn list_accounts(&self, after: Option<UserId>, limit: i64) -> StoreResult<Vec<AccountSummary>>;
    async fn account(&self, user_id: UserId) -> StoreResult<Option<AccountSummary>>;
    /// Disables an account and revokes its sessions; the number revoked, `None` if no such user.
    async fn disable_user(&self, user_id: UserId) -> StoreResult<Option<u64>>;
    async fn enable_user(&self, user_id: UserId) -> StoreResult<bool>;
}

#[async_trait::async_trait]
impl AccountStore for PgStore {
    async fn insert_user(&self, user_id: UserId, username: &str, password_hash: &str) -> StoreResult<bool> {
        match insert(&self.pool, user_id, username, password_hash).await {
            Ok(()) => Ok(true),
            Err(error) if is_unique_violation(&error, USERNAME_KEY) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn credentials(&self, username: &str) -> StoreResult<Option<Credentials>> {
        credentials(&self.pool, username).await
    }

    async fn user(&self, user_id: UserId) -> StoreResult<Option<UserRecord>> {
        get(&self.pool, user_id).await
    }

    async fn update_user_settings(&self, user_id: UserId, patch: SettingsPatch<'_>) -> StoreResult<()> {
        update_settings(&self.pool, user_id, patch).await
    }

    async fn password_hash(&self, user_id: UserId) -> StoreResult<Option<String>> {
        password_hash(&self.pool, user_id).await
    }

    async fn change_password(&self, user_id: UserId, password_hash: &str, keep: Option<&[u8]>) -> StoreResult<()> {
        change_password(&self.pool, user_id, password_hash, keep).await
    }

    async fn delete_user(&self, user_id: UserId) -> StoreResult<bool> {
        delete(&self.pool, user_id).await
    }

    async fn insert_session(&self, token_hash: &[u8], user_id: UserId, expires_at: DateTime<Utc>) -> StoreResult<()> {
        insert_session(&self.pool, token_hash, user_id, expires_at).await
    }

    async fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<UserId>> {
        // Every authenticated request asks this; under a burst, one statement answers a round.
        self.ask(&self.session_reads, (), token_hash.to_vec(), |pool, (), hashes| async move {
            session_users(&pool, &hashes).await
        })
        .await
    }

    async fn revoke_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        revoke_session(&self.pool, token_hash).await
    }

    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64> {
        revoke_sessions(&self.pool, user_id).await
    }

    async fn purge_sessions(&self) -> StoreResult<u64> {
        purge_sessions(&self.pool).await
    }

    async fn is_admin(&self, user_id: UserId) -> StoreResult<bool> {
        is_admin(&self.pool, user_id).await
    }

    async fn is_enabled(&self, user_id: UserId) -> StoreResult<bool> {
        is_enabled(&self.pool, user_id).await
    }

    async fn make_sole_admin(&self, user_id: UserId) -> StoreResult<()> {
        make_sole_admin(&self.pool, user_id).await
    }

    async fn clear_admins(&self) -> StoreResult<u64> {
        clear_admins(&self.pool).await
    }

    async fn list_accounts(&self, after: Option<UserId>, limit: i64) -> StoreResult<Vec<AccountSummary>> {
        list(&self.pool, after, limit).await
    }

    async fn account(&self, user_id: UserId) -> StoreResult<Option<AccountSummary>> {
        summary(&self.pool, user_id).await
    }

    async fn disable_user(&self, user_id: UserId) -> StoreResult<Option<u64>> {
        disable(&self.pool, user_id).await
    }

    async fn enable_user(&self, user_id: UserId) -> StoreResult<bool> {
        enable(&self.pool, user_id).await
    }
}
