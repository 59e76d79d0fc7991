//! Users and their login sessions (mirrors `fastnpc_shared::store::users`).
//!
//! Case-insensitive usernames: Postgres indexes `lower(username)`, which folds by the database's
//! locale, but SQLite's `lower()` folds ASCII only. The folded name is computed in Rust
//! (`str::to_lowercase`, Unicode-aware), stored in `username_lower`, and that column carries the
//! unique index and the login lookup.

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::UserId,
    store::users::{AccountSummary, Credentials, SettingsPatch, UserRecord},
};
use sqlx::{SqliteExecutor, SqlitePool};

use crate::SqliteStore;
use crate::is_unique_violation;
use crate::{begin_immediate, minus, now};
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::users::AccountStore;

/// How long expired and revoked sessions are kept before [`purge_sessions`] forgets them.
const SESSION_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    username: &str,
    password_hash: &str,
) -> Result<(), sqlx::Error> {
    let now = now();
    let folded = username.to_lowercase();
    sqlx::query!(
        "insert into users (user_id, username, username_lower, password_hash, created_at, updated_at)
         values (?1, ?2, ?3, ?4, ?5, ?5)",
        user_id.0,
        username,
        folded,
        password_hash,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The id, password hash and state of `username` (case-insensitive), for login.
pub async fn credentials(db: impl SqliteExecutor<'_>, username: &str) -> Result<Option<Credentials>, sqlx::Error> {
    let folded = username.to_lowercase();
    sqlx::query_as!(
        Credentials,
        r#"select user_id as "user_id!: UserId", password_hash, disabled_at is not null as "disabled!: bool"
           from users where username_lower = ?1"#,
        folded,
    )
    .fetch_optional(db)
    .await
}

pub async fn get(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as!(
        UserRecord,
        r#"select user_id as "user_id!: UserId", username, bio, ctx_max_chat as "ctx_max_chat: i32",
                  ctx_max_stm as "ctx_max_stm: i32", ctx_max_ltm as "ctx_max_ltm: i32",
                  max_group_rounds as "max_group_rounds: i32", language, is_admin as "is_admin: bool",
                  created_at as "created_at: DateTime<Utc>"
           from users where user_id = ?1"#,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

pub async fn insert_session(
    db: impl SqliteExecutor<'_>,
    token_hash: &[u8],
    user_id: UserId,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!(
        "insert into sessions (token_hash, user_id, created_at, expires_at) values (?1, ?2, ?3, ?4)",
        token_hash,
        user_id.0,
        now,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user of a live session: not revoked, not expired, the account not disabled.
pub async fn session_user(db: impl SqliteExecutor<'_>, token_hash: &[u8]) -> Result<Option<UserId>, sqlx::Error> {
    Ok(session_users(db, &[token_hash.to_vec()]).await?.pop().flatten())
}

/// The users of the sessions of `token_hashes`, as [`session_user`] reads one, in one
/// statement: one answer per hash, in order.
pub async fn session_users(
    db: impl SqliteExecutor<'_>,
    token_hashes: &[Vec<u8>],
) -> Result<Vec<Option<UserId>>, sqlx::Error> {
    let now = now();
    let hashes = crate::hex_list(token_hashes.iter().map(Vec::as_slice));
    let rows = sqlx::query!(
        r#"select s.token_hash as "token_hash!: Vec<u8>", s.user_id as "user_id!: UserId"
           from sessions s join users u on u.user_id = s.user_id
           where s.token_hash in (select unhex(value) from json_each(?1))
             and s.revoked_at is null and s.expires_at > ?2 and u.disabled_at is null"#,
        hashes,
        now,
    )
    .fetch_all(db)
    .await?;
    let users: std::collections::HashMap<Vec<u8>, UserId> =
        rows.into_iter().map(|r| (r.token_hash, r.user_id)).collect();
    Ok(token_hashes.iter().map(|hash| users.get(hash).copied()).collect())
}

/// Revokes one session; revoking twice is harmless.
pub async fn revoke_session(db: impl SqliteExecutor<'_>, token_hash: &[u8]) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!("update sessions set revoked_at = ?2 where token_hash = ?1 and revoked_at is null", token_hash, now)
        .execute(db)
        .await?;
    Ok(())
}

/// Revokes every live session of a user; returns how many.
pub async fn revoke_sessions(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<u64, sqlx::Error> {
    let now = now();
    let done =
        sqlx::query!("update sessions set revoked_at = ?2 where user_id = ?1 and revoked_at is null", user_id.0, now)
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

pub async fn update_settings(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    patch: SettingsPatch<'_>,
) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!(
        "update users set bio = coalesce(?2, bio), ctx_max_chat = coalesce(?3, ctx_max_chat),
                ctx_max_stm = coalesce(?4, ctx_max_stm), ctx_max_ltm = coalesce(?5, ctx_max_ltm),
                max_group_rounds = coalesce(?6, max_group_rounds), language = coalesce(?7, language),
                updated_at = ?8
         where user_id = ?1",
        user_id.0,
        patch.bio,
        patch.ctx_max_chat,
        patch.ctx_max_stm,
        patch.ctx_max_ltm,
        patch.max_group_rounds,
        patch.language,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The stored password hash of a user (to re-check the password before sensitive changes).
pub async fn password_hash(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query!("select password_hash from users where user_id = ?1", user_id.0).fetch_optional(db).await?;
    Ok(row.map(|r| r.password_hash))
}

/// Sets a new password hash and revokes every session but `keep` (the one making the change).
pub async fn change_password(
    db: &SqlitePool,
    user_id: UserId,
    password_hash: &str,
    keep: Option<&[u8]>,
) -> Result<(), sqlx::Error> {
    let now = now();
    let mut tx = begin_immediate(db).await?;
    sqlx::query!(
        "update users set password_hash = ?2, updated_at = ?3 where user_id = ?1",
        user_id.0,
        password_hash,
        now
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update sessions set revoked_at = ?3
         where user_id = ?1 and revoked_at is null and (?2 is null or token_hash <> ?2)",
        user_id.0,
        keep,
        now,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes a user and, by cascade, everything they own.
pub async fn delete(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!("delete from users where user_id = ?1", user_id.0).execute(db).await?;
    Ok(result.rows_affected() == 1)
}

/// Forgets sessions that expired or were revoked more than a day ago.
pub async fn purge_sessions(db: impl SqliteExecutor<'_>) -> Result<u64, sqlx::Error> {
    let cutoff = minus(now(), SESSION_RETENTION);
    let result =
        sqlx::query!("delete from sessions where expires_at < ?1 or revoked_at < ?1", cutoff).execute(db).await?;
    Ok(result.rows_affected())
}

/// Whether a user is an enabled admin.
pub async fn is_admin(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from users where user_id = ?1 and is_admin and disabled_at is null)
           as "admin!: bool""#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.admin)
}

/// Whether a user exists and is not disabled.
pub async fn is_enabled(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let row = sqlx::query!(
        r#"select exists (select 1 from users where user_id = ?1 and disabled_at is null) as "enabled!: bool""#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(row.enabled)
}

/// Makes `user_id` the one admin: sets its flag (and enables it) and clears every other's.
pub async fn make_sole_admin(db: &SqlitePool, user_id: UserId) -> Result<(), sqlx::Error> {
    let now = now();
    let mut tx = begin_immediate(db).await?;
    sqlx::query!("update users set is_admin = 0 where is_admin and user_id <> ?1", user_id.0).execute(&mut *tx).await?;
    sqlx::query!(
        "update users set is_admin = 1, disabled_at = null, updated_at = ?2 where user_id = ?1",
        user_id.0,
        now
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Clears every admin flag (no admin is configured).
pub async fn clear_admins(db: impl SqliteExecutor<'_>) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!("update users set is_admin = 0 where is_admin").execute(db).await?;
    Ok(result.rows_affected())
}

/// Users in id (creation) order after `after`, with what they own and run.
pub async fn list(
    db: impl SqliteExecutor<'_>,
    after: Option<UserId>,
    limit: i64,
) -> Result<Vec<AccountSummary>, sqlx::Error> {
    let after = after.map(|id| id.0);
    sqlx::query_as!(
        AccountSummary,
        r#"select u.user_id as "user_id!: UserId", u.username, u.is_admin as "is_admin: bool",
                  u.disabled_at as "disabled_at: DateTime<Utc>", u.created_at as "created_at: DateTime<Utc>",
                  (select count(*) from characters c where c.user_id = u.user_id) as "characters!: i64",
                  (select count(*) from jobs j where j.user_id = u.user_id and j.status in ('queued', 'running'))
                      as "active_jobs!: i64"
           from users u
           where ?1 is null or u.user_id > ?1
           order by u.user_id
           limit ?2"#,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One user as the admin listing shows it.
pub async fn summary(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Option<AccountSummary>, sqlx::Error> {
    sqlx::query_as!(
        AccountSummary,
        r#"select u.user_id as "user_id!: UserId", u.username, u.is_admin as "is_admin: bool",
                  u.disabled_at as "disabled_at: DateTime<Utc>", u.created_at as "created_at: DateTime<Utc>",
                  (select count(*) from characters c where c.user_id = u.user_id) as "characters!: i64",
                  (select count(*) from jobs j where j.user_id = u.user_id and j.status in ('queued', 'running'))
                      as "active_jobs!: i64"
           from users u where u.user_id = ?1"#,
        user_id.0,
    )
    .fetch_optional(db)
    .await
}

/// Disables an account and revokes all its sessions, in one transaction. Returns the number of
/// sessions revoked, or `None` when there is no such user.
pub async fn disable(db: &SqlitePool, user_id: UserId) -> Result<Option<u64>, sqlx::Error> {
    let now = now();
    let mut tx = begin_immediate(db).await?;
    let found = sqlx::query!(
        "update users set disabled_at = coalesce(disabled_at, ?2), updated_at = ?2 where user_id = ?1",
        user_id.0,
        now,
    )
    .execute(&mut *tx)
    .await?;
    if found.rows_affected() == 0 {
        return Ok(None);
    }
    let revoked =
        sqlx::query!("update sessions set revoked_at = ?2 where user_id = ?1 and revoked_at is null", user_id.0, now)
            .execute(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(Some(revoked.rows_affected()))
}

/// Enables an account again; its API keys work again, its old sessions stay revoked.
pub async fn enable(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<bool, sqlx::Error> {
    let now = now();
    let result =
        sqlx::query!("update users set disabled_at = null, updated_at = ?2 where user_id = ?1", user_id.0, now)
            .execute(db)
            .await?;
    Ok(result.rows_affected() == 1)
}

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn insert_user(&self, user_id: UserId, username: &str, password_hash: &str) -> StoreResult<bool> {
        match insert(&self.writer, user_id, username, password_hash).await {
            Ok(()) => Ok(true),
            Err(error) if is_unique_violation(&error, fastnpc_shared::store::users::USERNAME_KEY) => Ok(false),
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
        update_settings(&self.writer, user_id, patch).await
    }

    async fn password_hash(&self, user_id: UserId) -> StoreResult<Option<String>> {
        password_hash(&self.pool, user_id).await
    }

    async fn change_password(&self, user_id: UserId, password_hash: &str, keep: Option<&[u8]>) -> StoreResult<()> {
        change_password(&self.writer, user_id, password_hash, keep).await
    }

    async fn delete_user(&self, user_id: UserId) -> StoreResult<bool> {
        delete(&self.writer, user_id).await
    }

    async fn insert_session(&self, token_hash: &[u8], user_id: UserId, expires_at: DateTime<Utc>) -> StoreResult<()> {
        insert_session(&self.writer, token_hash, user_id, expires_at).await
    }

    async fn session_user(&self, token_hash: &[u8]) -> StoreResult<Option<UserId>> {
        // Every authenticated request asks this; under a burst, one statement answers a round.
        let pool = self.pool.clone();
        self.session_reads
            .ask((), token_hash.to_vec(), move |(), hashes| {
                let pool = pool.clone();
                async move { session_users(&pool, &hashes).await }
            })
            .await
    }

    async fn revoke_session(&self, token_hash: &[u8]) -> StoreResult<()> {
        revoke_session(&self.writer, token_hash).await
    }

    async fn revoke_sessions(&self, user_id: UserId) -> StoreResult<u64> {
        revoke_sessions(&self.writer, user_id).await
    }

    async fn purge_sessions(&self) -> StoreResult<u64> {
        purge_sessions(&self.writer).await
    }

    async fn is_admin(&self, user_id: UserId) -> StoreResult<bool> {
        is_admin(&self.pool, user_id).await
    }

    async fn is_enabled(&self, user_id: UserId) -> StoreResult<bool> {
        is_enabled(&self.pool, user_id).await
    }

    async fn make_sole_admin(&self, user_id: UserId) -> StoreResult<()> {
        make_sole_admin(&self.writer, user_id).await
    }

    async fn clear_admins(&self) -> StoreResult<u64> {
        clear_admins(&self.writer).await
    }

    async fn list_accounts(&self, after: Option<UserId>, limit: i64) -> StoreResult<Vec<AccountSummary>> {
        list(&self.pool, after, limit).await
    }

    async fn account(&self, user_id: UserId) -> StoreResult<Option<AccountSummary>> {
        summary(&self.pool, user_id).await
    }

    async fn disable_user(&self, user_id: UserId) -> StoreResult<Option<u64>> {
        disable(&self.writer, user_id).await
    }

    async fn enable_user(&self, user_id: UserId) -> StoreResult<bool> {
        enable(&self.writer, user_id).await
    }
}
