//! Whole-system counts for the admin's `GET /v1/admin/stats` (mirrors
//! `fastnpc_shared::store::stats`). The "last hour" cut-off is computed in Rust and bound, as
//! every time in this crate is.

use std::collections::BTreeMap;

use fastnpc_shared::store::stats::Totals;
use sqlx::SqliteExecutor;

use crate::SqliteStore;
use crate::{minus, now};
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::SystemStats;
use fastnpc_shared::store::stats::StatsStore;

pub async fn totals(db: impl SqliteExecutor<'_>) -> Result<Totals, sqlx::Error> {
    let hour_ago = minus(now(), std::time::Duration::from_secs(60 * 60));
    sqlx::query_as!(
        Totals,
        r#"select (select count(*) from users) as "users!: i64",
                  (select count(*) from users where disabled_at is not null) as "disabled_users!: i64",
                  (select count(*) from users where is_admin) as "admins!: i64",
                  (select count(*) from messages) as "messages!: i64",
                  (select count(*) from groups) as "groups!: i64",
                  (select count(*) from group_messages) as "group_messages!: i64",
                  (select count(*) from jobs where finished_at > ?1) as "jobs_finished_last_hour!: i64",
                  (select count(*) from jobs where status = 'failed' and finished_at > ?1)
                      as "jobs_failed_last_hour!: i64""#,
        hour_ago,
    )
    .fetch_one(db)
    .await
}

/// Characters per status (`generating`, `ready`, `failed`).
pub async fn characters_by_status(db: impl SqliteExecutor<'_>) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows = sqlx::query!(r#"select status, count(*) as "count!: i64" from characters group by status"#)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Jobs per kind and status: `{"chat_reply": {"succeeded": 10, ...}, ...}`.
pub async fn jobs_by_kind_and_status(
    db: impl SqliteExecutor<'_>,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, sqlx::Error> {
    let rows = sqlx::query!(r#"select kind, status, count(*) as "count!: i64" from jobs group by kind, status"#)
        .fetch_all(db)
        .await?;
    let mut jobs: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in rows {
        jobs.entry(row.kind).or_default().insert(row.status, row.count);
    }
    Ok(jobs)
}

#[async_trait::async_trait]
impl StatsStore for SqliteStore {
    async fn system_stats(&self) -> StoreResult<SystemStats> {
        Ok(SystemStats {
            totals: totals(&self.pool).await?,
            characters_by_status: characters_by_status(&self.pool).await?,
            jobs_by_kind_and_status: jobs_by_kind_and_status(&self.pool).await?,
        })
    }
}
