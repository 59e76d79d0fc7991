//! Whole-system counts for the admin's `GET /v1/admin/stats`.
//!
//! Counted on demand (a handful of `count(*)`s over indexed tables); an operator reads this
//! rarely, so it is not worth keeping counters up to date on every write.

use std::collections::BTreeMap;

use super::PgStore;
use super::StoreResult;
use super::SystemStats;
use sqlx::PgExecutor;

/// Row counts across all users.
#[derive(Clone, Debug)]
pub struct Totals {
    pub users: i64,
    pub disabled_users: i64,
    pub admins: i64,
    pub messages: i64,
    pub groups: i64,
    pub group_messages: i64,
    pub jobs_finished_last_hour: i64,
    pub jobs_failed_last_hour: i64,
}

pub(crate) async fn totals(db: impl PgExecutor<'_>) -> Result<Totals, sqlx::Error> {
    sqlx::query_as!(
        Totals,
        r#"select (select count(*) from users) as "users!",
                  (select count(*) from users where disabled_at is not null) as "disabled_users!",
                  (select count(*) from users where is_admin) as "admins!",
                  (select count(*) from messages) as "messages!",
                  (select count(*) from groups) as "groups!",
                  (select count(*) from group_messages) as "group_messages!",
                  (select count(*) from jobs where finished_at > now() - interval '1 hour') as "jobs_finished_last_hour!",
                  (select count(*) from jobs where status = 'failed' and finished_at > now() - interval '1 hour')
                      as "jobs_failed_last_hour!""#
    )
    .fetch_one(db)
    .await
}

/// Characters per status (`generating`, `ready`, `failed`).
pub(crate) async fn characters_by_status(db: impl PgExecutor<'_>) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let rows =
        sqlx::query!(r#"select status, count(*) as "count!" from characters group by status"#).fetch_all(db).await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Jobs per kind and status: `{"chat_reply": {"succeeded": 10, ...}, ...}`.
pub(crate) async fn jobs_by_kind_and_status(
    db: impl PgExecutor<'_>,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, sqlx::Error> {
    let rows = sqlx::query!(r#"select kind, status, count(*) as "count!" from jobs group by kind, status"#)
        .fetch_all(db)
        .await?;
    let mut jobs: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in rows {
        jobs.entry(row.kind).or_default().insert(row.status, row.count);
    }
    Ok(jobs)
}

/// Whole-system counts for operators.
#[async_trait::async_trait]
pub trait StatsStore: Send + Sync {
    async fn system_stats(&self) -> StoreResult<SystemStats>;
}

#[async_trait::async_trait]
impl StatsStore for PgStore {
    async fn system_stats(&self) -> StoreResult<SystemStats> {
        Ok(SystemStats {
            totals: totals(&self.pool).await?,
            characters_by_status: characters_by_status(&self.pool).await?,
            jobs_by_kind_and_status: jobs_by_kind_and_status(&self.pool).await?,
        })
    }
}
