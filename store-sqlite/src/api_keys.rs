//! API keys: long-lived bearer credentials for scripts (mirrors `fastnpc_shared::store::api_keys`).
//!
//! Nothing SQLite-specific beyond the crate-wide rules (times are bound from Rust), except that
//! [`user_of`] reads first and writes only when the recorded use is stale: SQLite has no
//! data-modifying `with`, and a read must not take the single write lock.

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::UserId,
    store::api_keys::{ApiKeyRecord, USE_RECORDED_EVERY},
};
use sqlx::{SqliteExecutor, SqlitePool};

use crate::SqliteStore;
use crate::{minus, now};
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::api_keys::ApiKeyStore;

pub async fn insert(
    db: impl SqliteExecutor<'_>,
    key_id: uuid::Uuid,
    user_id: UserId,
    name: &str,
    prefix: &str,
    key_hash: &[u8],
) -> Result<(), sqlx::Error> {
    let now = now();
    sqlx::query!(
        "insert into api_keys (key_id, user_id, name, prefix, key_hash, created_at) values (?1, ?2, ?3, ?4, ?5, ?6)",
        key_id,
        user_id.0,
        name,
        prefix,
        key_hash,
        now,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub async fn list(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as!(
        ApiKeyRecord,
        r#"select key_id as "key_id!: uuid::Uuid", name, prefix, created_at as "created_at: DateTime<Utc>",
                  last_used_at as "last_used_at: DateTime<Utc>", revoked_at as "revoked_at: DateTime<Utc>"
           from api_keys
           where user_id = ?1 order by key_id desc"#,
        user_id.0,
    )
    .fetch_all(db)
    .await
}

/// Revokes one of the user's keys; revoking twice is harmless. False when the user has no such key.
pub async fn revoke(db: impl SqliteExecutor<'_>, user_id: UserId, key_id: uuid::Uuid) -> Result<bool, sqlx::Error> {
    let now = now();
    let result = sqlx::query!(
        "update api_keys set revoked_at = coalesce(revoked_at, ?3) where key_id = ?1 and user_id = ?2",
        key_id,
        user_id.0,
        now,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The user of a live key, recording its use at most once a [`USE_RECORDED_EVERY`]: a plain read
/// otherwise, so authenticating with a key does not take the write lock on every request. The
/// write, when due, is a second statement; a revocation between the two is the same as one just
/// after the request.
pub async fn user_of(pool: &SqlitePool, key_hash: &[u8]) -> Result<Option<UserId>, sqlx::Error> {
    let now = now();
    let stale_before = minus(now, USE_RECORDED_EVERY);
    let Some(row) = sqlx::query!(
        r#"select key_id as "key_id!: uuid::Uuid", user_id as "user_id!: UserId",
                  (last_used_at is null or last_used_at < ?2) as "stale!: bool"
           from api_keys
           where key_hash = ?1 and revoked_at is null
             and user_id in (select user_id from users where disabled_at is null)"#,
        key_hash,
        stale_before,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    if row.stale {
        sqlx::query!(
            "update api_keys set last_used_at = ?2
             where key_id = ?1 and (last_used_at is null or last_used_at < ?3)",
            row.key_id,
            now,
            stale_before,
        )
        .execute(pool)
        .await?;
    }
    Ok(Some(row.user_id))
}

#[async_trait::async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(
        &self,
        key_id: uuid::Uuid,
        user_id: UserId,
        name: &str,
        prefix: &str,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        insert(&self.writer, key_id, user_id, name, prefix, key_hash).await
    }

    async fn list_api_keys(&self, user_id: UserId) -> StoreResult<Vec<ApiKeyRecord>> {
        list(&self.pool, user_id).await
    }

    async fn revoke_api_key(&self, user_id: UserId, key_id: uuid::Uuid) -> StoreResult<bool> {
        revoke(&self.writer, user_id, key_id).await
    }

    async fn api_key_user(&self, key_hash: &[u8]) -> StoreResult<Option<UserId>> {
        user_of(&self.pool, key_hash).await
    }
}
