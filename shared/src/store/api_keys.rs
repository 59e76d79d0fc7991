//! API keys: long-lived bearer credentials for scripts.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::PgStore;
use super::StoreResult;
use crate::ids::UserId;

/// A key as its owner sees it in a listing (never the key itself).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    pub key_id: uuid::Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub(crate) async fn insert(
    db: impl PgExecutor<'_>,
    key_id: uuid::Uuid,
    user_id: UserId,
    name: &str,
    prefix: &str,
    key_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into api_keys (key_id, user_id, name, prefix, key_hash) values ($1, $2, $3, $4, $5)",
        key_id,
        user_id.0,
        name,
        prefix,
        key_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn list(db: impl PgExecutor<'_>, user_id: UserId) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as!(
        ApiKeyRecord,
        "select key_id, name, prefix, created_at, last_used_at, revoked_at from api_keys
         where user_id = $1 order by key_id desc",
        user_id.0,
    )
    .fetch_all(db)
    .await
}

/// Revokes one of the user's keys; revoking twice is harmless. False when the user has no such key.
pub(crate) async fn revoke(db: impl PgExecutor<'_>, user_id: UserId, key_id: uuid::Uuid) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "update api_keys set revoked_at = coalesce(revoked_at, now()) where key_id = $1 and user_id = $2",
        key_id,
        user_id.0,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// How often a key's `last_used_at` is written at most: more often would make every request
/// authenticated with a key (GETs included) a write.
pub const USE_RECORDED_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The user of a live key, recording its use at most once a [`USE_RECORDED_EVERY`]. One
/// statement: the `update` in the `with` touches (and locks) the row only when the recorded use
/// is stale; otherwise this is a plain read.
pub(crate) async fn user_of(db: impl PgExecutor<'_>, key_hash: &[u8]) -> Result<Option<UserId>, sqlx::Error> {
    let row = sqlx::query!(
        r#"with live as (
               select key_id, user_id, last_used_at from api_keys
               where key_hash = $1 and revoked_at is null
                 and user_id in (select user_id from users where disabled_at is null)
           ), touched as (
               update api_keys set last_used_at = now()
               where key_id in (select key_id from live
                                where last_used_at is null or last_used_at < now() - make_interval(secs => $2))
           )
           select user_id as "user_id!: UserId" from live"#,
        key_hash,
        USE_RECORDED_EVERY.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.user_id))
}

/// API keys: long-lived credentials for scripts, stored hashed.
#[async_trait::async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn insert_api_key(
        &self,
        key_id: uuid::Uuid,
        user_id: UserId,
        name: &str,
        prefix: &str,
        key_hash: &[u8],
    ) -> StoreResult<()>;
    async fn list_api_keys(&self, user_id: UserId) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn revoke_api_key(&self, user_id: UserId, key_id: uuid::Uuid) -> StoreResult<bool>;
    /// The user of a live key of an enabled account, recording the key's use at most once a
    /// [`api_keys::USE_RECORDED_EVERY`](crate::store::api_keys::USE_RECORDED_EVERY).
    async fn api_key_user(&self, key_hash: &[u8]) -> StoreResult<Option<UserId>>;
}

#[async_trait::async_trait]
impl ApiKeyStore for PgStore {
    async fn insert_api_key(
        &self,
        key_id: uuid::Uuid,
        user_id: UserId,
        name: &str,
        prefix: &str,
        key_hash: &[u8],
    ) -> StoreResult<()> {
        insert(&self.pool, key_id, user_id, name, prefix, key_hash).await
    }

    async fn list_api_keys(&self, user_id: UserId) -> StoreResult<Vec<ApiKeyRecord>> {
        list(&self.pool, user_id).await
    }

    async fn revoke_api_key(&self, user_id: UserId, key_id: uuid::Uuid) -> StoreResult<bool> {
        revoke(&self.pool, user_id, key_id).await
    }

    async fn api_key_user(&self, key_hash: &[u8]) -> StoreResult<Option<UserId>> {
        user_of(&self.pool, key_hash).await
    }
}
