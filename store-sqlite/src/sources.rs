//! Fetched source documents; mirrors `fastnpc_shared::store::sources`.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use fastnpc_shared::{
    ids::CharacterId,
    store::{StoreResult, sources::SourceStore},
};
use serde_json::Value;
use sqlx::SqliteExecutor;

use crate::{SqliteStore, minus, now};

pub async fn cached(db: impl SqliteExecutor<'_>, url: &str, max_age: Duration) -> Result<Option<Value>, sqlx::Error> {
    let since = minus(now(), max_age);
    sqlx::query_scalar!(
        r#"select snapshot as "snapshot: Value" from source_documents where url = ?1 and fetched_at > ?2"#,
        url,
        since,
    )
    .fetch_optional(db)
    .await
}

pub async fn cache(
    db: impl SqliteExecutor<'_>,
    url: &str,
    snapshot: &Value,
    fetched_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let fetched_at = fetched_at.trunc_subsecs(6);
    sqlx::query!(
        "insert into source_documents (url, snapshot, fetched_at) values (?1, ?2, ?3)
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

pub async fn expire(db: impl SqliteExecutor<'_>, max_age: Duration) -> Result<u64, sqlx::Error> {
    let until = minus(now(), max_age);
    let done = sqlx::query!("delete from source_documents where fetched_at <= ?1", until).execute(db).await?;
    Ok(done.rows_affected())
}

pub async fn set_snapshot(
    db: impl SqliteExecutor<'_>,
    character_id: CharacterId,
    snapshot: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!("update characters set source_snapshot = ?2 where character_id = ?1", character_id.0, snapshot)
        .execute(db)
        .await?;
    Ok(())
}

#[async_trait::async_trait]
impl SourceStore for SqliteStore {
    async fn cached_document(&self, url: &str, max_age: Duration) -> StoreResult<Option<Value>> {
        cached(&self.pool, url, max_age).await
    }

    async fn cache_document(&self, url: &str, snapshot: &Value, fetched_at: DateTime<Utc>) -> StoreResult<()> {
        cache(&self.writer, url, snapshot, fetched_at).await
    }

    async fn expire_documents(&self, max_age: Duration) -> StoreResult<u64> {
        expire(&self.writer, max_age).await
    }

    async fn set_source_snapshot(&self, character_id: CharacterId, snapshot: &Value) -> StoreResult<()> {
        set_snapshot(&self.writer, character_id, snapshot).await
    }
}
