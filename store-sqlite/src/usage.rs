//! LLM token usage per user and UTC day (mirrors `fastnpc_shared::store::usage`).
//!
//! Postgres upserts the day inside the statement that ends the job's attempt; SQLite has no
//! data-modifying CTEs, so [`spend`] is a second statement that `jobs::succeed` and its siblings
//! run in their caller's transaction. The day is computed in Rust from the same instant the job
//! row records, as every time here is, and stored as `YYYY-MM-DD` text.

use chrono::{DateTime, NaiveDate, Utc};
use fastnpc_shared::{
    ids::UserId,
    llm::Usage,
    store::usage::{DailyUsage, DailyUsageRow, to_columns},
};
use sqlx::SqliteExecutor;

use crate::SqliteStore;
use crate::now;
use fastnpc_shared::store::StoreResult;
use fastnpc_shared::store::usage::UsageStore;

/// Adds `usage` to the user's row for the UTC day of `at`; nothing when no call was made.
pub async fn spend(
    db: impl SqliteExecutor<'_>,
    user_id: UserId,
    at: DateTime<Utc>,
    usage: Usage,
) -> Result<(), sqlx::Error> {
    if usage.calls == 0 {
        return Ok(());
    }
    let day = at.date_naive();
    let (calls, prompt_tokens, completion_tokens) = to_columns(usage);
    sqlx::query!(
        "insert into llm_usage_daily (user_id, day, calls, prompt_tokens, completion_tokens)
         values (?1, ?2, ?3, ?4, ?5)
         on conflict (user_id, day) do update
         set calls = calls + excluded.calls,
             prompt_tokens = prompt_tokens + excluded.prompt_tokens,
             completion_tokens = completion_tokens + excluded.completion_tokens",
        user_id.0,
        day,
        calls,
        prompt_tokens,
        completion_tokens,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The user's spend on each of the last `days` UTC days that had any (today included), newest
/// first.
pub async fn daily(db: impl SqliteExecutor<'_>, user_id: UserId, days: u32) -> Result<Vec<DailyUsage>, sqlx::Error> {
    // As Postgres' `day > current_date - days`; the epoch stands in for "since ever".
    let before_window = now().date_naive().checked_sub_days(chrono::Days::new(u64::from(days))).unwrap_or_default();
    let rows = sqlx::query_as!(
        DailyUsageRow,
        r#"select day as "day!: NaiveDate", calls, prompt_tokens, completion_tokens from llm_usage_daily
           where user_id = ?1 and day > ?2
           order by day desc"#,
        user_id.0,
        before_window,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(DailyUsage::from).collect())
}

/// Prompt plus completion tokens the user spent today (UTC).
pub async fn tokens_today(db: impl SqliteExecutor<'_>, user_id: UserId) -> Result<u64, sqlx::Error> {
    let today = now().date_naive();
    let row = sqlx::query!(
        r#"select coalesce(sum(prompt_tokens + completion_tokens), 0) as "tokens!: i64" from llm_usage_daily
           where user_id = ?1 and day = ?2"#,
        user_id.0,
        today,
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(row.tokens).unwrap_or_default())
}

#[async_trait::async_trait]
impl UsageStore for SqliteStore {
    async fn daily_usage(&self, user_id: UserId, days: u32) -> StoreResult<Vec<DailyUsage>> {
        daily(&self.pool, user_id, days).await
    }

    async fn tokens_today(&self, user_id: UserId) -> StoreResult<u64> {
        tokens_today(&self.pool, user_id).await
    }
}
