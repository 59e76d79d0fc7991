//! LLM token usage as the stores keep it: per job (summed over its attempts, in the job row) and
//! per user and UTC day (`llm_usage_daily`).
//!
//! The day table exists because a job row is not a durable record of spend: jobs are deleted
//! with their character, and a user who could wipe their spend by deleting a character could
//! spend past the daily budget at will. Both are written by the statement (Postgres) or the
//! transaction (SQLite) that ends or hands back an attempt — see `jobs::succeed` — so the two
//! never disagree and a worker that lost its claim writes neither.
//!
//! The database counts in `bigint`s; [`Usage`] counts in unsigned integers. The conversions here
//! saturate instead of wrapping, which only matters for numbers no deployment reaches.

use chrono::NaiveDate;
use sqlx::PgExecutor;

use super::PgStore;
use super::StoreResult;
use crate::{ids::UserId, llm::Usage};

/// A user's spend on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub usage: Usage,
}

/// A `llm_usage_daily` row as both adapters read it.
#[derive(Clone, Debug)]
pub struct DailyUsageRow {
    pub day: NaiveDate,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl From<DailyUsageRow> for DailyUsage {
    fn from(row: DailyUsageRow) -> Self {
        Self { day: row.day, usage: from_columns(row.calls, row.prompt_tokens, row.completion_tokens) }
    }
}

/// [`Usage`] from the three stored counters.
pub fn from_columns(calls: i64, prompt_tokens: i64, completion_tokens: i64) -> Usage {
    Usage {
        calls: u32::try_from(calls.max(0)).unwrap_or(u32::MAX),
        prompt_tokens: u64::try_from(prompt_tokens).unwrap_or_default(),
        completion_tokens: u64::try_from(completion_tokens).unwrap_or_default(),
    }
}

/// The three counters to store for `usage`: (calls, prompt tokens, completion tokens).
pub fn to_columns(usage: Usage) -> (i64, i64, i64) {
    let saturate = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    (i64::from(usage.calls), saturate(usage.prompt_tokens), saturate(usage.completion_tokens))
}

/// The row of a user's day that `job_id`'s usage is added to: jobs of one user ending at once
/// spread over 16 rows instead of queueing on one row's lock. UUIDv7's low bits are random.
pub fn shard(job_id: crate::ids::JobId) -> i16 {
    (job_id.0.as_u128() % 16) as i16
}

/// The user's spend on each of the last `days` UTC days that had any (today included), newest
/// first.
pub(crate) async fn daily(db: impl PgExecutor<'_>, user_id: UserId, days: u32) -> Result<Vec<DailyUsage>, sqlx::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let rows = sqlx::query_as!(
        DailyUsageRow,
        r#"select day, sum(calls)::bigint as "calls!", sum(prompt_tokens)::bigint as "prompt_tokens!",
                  sum(completion_tokens)::bigint as "completion_tokens!"
           from llm_usage_daily
           where user_id = $1 and day > (now() at time zone 'utc')::date - $2::integer
           group by day
           order by day desc"#,
        user_id.0,
        days,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(DailyUsage::from).collect())
}

/// Prompt plus completion tokens the user spent today (UTC): what the daily budget compares.
pub(crate) async fn tokens_today(db: impl PgExecutor<'_>, user_id: UserId) -> Result<u64, sqlx::Error> {
    let row = sqlx::query!(
        r#"select coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint as "tokens!" from llm_usage_daily
           where user_id = $1 and day = (now() at time zone 'utc')::date"#,
        user_id.0,
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(row.tokens).unwrap_or_default())
}

/// LLM usage: what each user spent, per UTC day.
#[async_trait::async_trait]
pub trait UsageStore: Send + Sync {
    /// The user's spend on each of the last `days` UTC days that had any, today included,
    /// newest first.
    async fn daily_usage(&self, user_id: UserId, days: u32) -> StoreResult<Vec<DailyUsage>>;
    /// Prompt plus completion tokens the user spent today (UTC).
    async fn tokens_today(&self, user_id: UserId) -> StoreResult<u64>;
}

#[async_trait::async_trait]
impl UsageStore for PgStore {
    async fn daily_usage(&self, user_id: UserId, days: u32) -> StoreResult<Vec<DailyUsage>> {
        daily(&self.pool, user_id, days).await
    }

    async fn tokens_today(&self, user_id: UserId) -> StoreResult<u64> {
        // Each job submission asks; those of one user asking together share one read.
        self.ask(&self.spend_reads, user_id, (), |pool, user_id, asks| async move {
            Ok(vec![tokens_today(&pool, user_id).await?; asks.len()])
        })
        .await
    }
}
