//! Fetched source documents: the snapshot each character was built from, and the fetch cache by
//! address (see the migration `source_documents` for why the cache is not per user).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

use super::{PgStore, StoreResult};
use crate::ids::CharacterId;

#[async_trait::async_trait]
pub trait SourceStore: Send + Sync {
    /// The document fetched from `url`, if one was within `max_age`.
    async fn cached_document(&self, url: &str, max_age: Duration) -> StoreResult<Option<Value>>;
    /// Keeps a fetched document for the next character of the same source (replacing an older
    /// one).
    async fn cache_document(&self, url: &str, snapshot: &Value, fetched_at: DateTime<Utc>) -> StoreResult<()>;
    /// Forgets documents fetched longer than `max_age` ago; returns how many.
    async fn expire_documents(&self, max_age: Duration) -> StoreResult<u64>;
    /// Records the document a character is built from.
    async fn set_source_snapshot(&self, character_id: CharacterId, snapshot: &Value) -> StoreResult<()>;
}

pub(crate) async fn cached(
    db: impl PgExecutor<'_>,
    url: &str,
    max_age: Duration,
) -> Result<Option<Value>, sqlx::Error> {
    let seconds = max_age.as_secs_f64();
    sqlx::query_scalar!(
        "select snapshot from source_documents
         where url = $1 and fetched_at > now() - make_interval(secs => $2)",
        url,
        seconds,
    )
    .fetch_optional(db)
    .await
}

pub(crate) async fn cache(
    db: impl PgExecutor<'_>,
    url: &str,
    snapshot: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into source_documents (url, snapshot, fetched_at) values ($1, $2, $3)
         on conflict (url) do update set snapshot = excluded.snapshot, fetched_at = excluded.fetched_at
         where source_documents.fetched_at < excluded.fetched_at",
        url,
        snapshot,
        fetched_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) async fn expire(db: impl PgExecutor<'_>, max_age: Duration) -> Result<u64, sqlx::Error> {
    let seconds = max_age.as_secs_f64();
    let done =
        sqlx::query!("delete from source_documents where fetched_at <= now() - make_interval(secs => $1)", seconds)
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}

pub(crate) async fn set_snapshot(
    db: impl PgExecutor<'_>,
    character_id: CharacterId,
    snapshot: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update characters set source_snapshot = $2 where character_id = $1", character_id.0, snapshot)
        .execute(db)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl SourceStore for PgStore {
    async fn cached_document(&self, url: &str, max_age: Duration) -> StoreResult<Option<Value>> {
        cached(&self.pool, url, max_age).await
    }

    async fn cache_document(&self, url: &str, snapshot: &Value, fetched_at: DateTime<Utc>) -> StoreResult<()> {
        cache(&self.pool, url, snapshot, fetched_at).await
    }

    async fn expire_documents(&self, max_age: Duration) -> StoreResult<u64> {
        expire(&self.pool, max_age).await
    }

    async fn set_source_snapshot(&self, character_id: CharacterId, snapshot: &Value) -> StoreResult<()> {
        set_snapshot(&self.pool, character_id, snapshot).await
    }
}
