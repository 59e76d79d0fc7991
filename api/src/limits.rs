//! Per-user abuse limits on job submission, active jobs, characters and groups, and the daily
//! LLM token budget. Each answers `429 Too Many Requests` with `Retry-After` and a detail naming
//! the limit; nothing is created.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fastnpc_shared::{
    ids::UserId,
    store::{Capped, Quota, Submitted},
};

use crate::{error::ApiError, state::AppState};

fn limited(detail: String, retry_after: Duration) -> ApiError {
    ApiError::TooManyRequests { retry_after, detail }
}

/// Before creating a job: the submission rate and the daily token budget. The caps on what a
/// user holds (active jobs, characters, groups) are the store's to enforce, atomically with the
/// write ([`quota`], [`over_quota`]).
pub async fn admit_job(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    admit_submission(state, user_id).await?;
    admit_spend(state, user_id).await
}

/// Before an encyclopedia search: it counts against the same per-minute budget as a job
/// submission, since each may make the server fetch from the web on the user's behalf.
pub async fn admit_search(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    admit_submission(state, user_id).await
}

async fn admit_submission(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    match state.submissions.admit(user_id).await {
        Ok(Some(wait)) => {
            let per_minute = state.config.limits.submissions_per_minute;
            Err(limited(format!("at most {per_minute} job submissions and searches per minute"), wait))
        }
        Ok(None) => Ok(()),
        // Like login limiting, this fails open: Redis trouble must not stop all work.
        Err(error) => {
            tracing::warn!(%error, "submission limiter unavailable; not limiting");
            Ok(())
        }
    }
}

/// The caps a submission is checked against inside its transaction.
pub fn quota(state: &AppState) -> Quota {
    let limits = &state.config.limits;
    Quota { active_jobs: limits.active_jobs, characters: limits.characters, groups: limits.groups }
}

/// Whether a job-creating submission wrote its rows: `false` when the idempotency key was
/// taken by a concurrent request (the caller replays the winner); the 429 when over quota.
pub fn created(state: &AppState, outcome: Submitted) -> Result<bool, ApiError> {
    match outcome {
        Submitted::Created => Ok(true),
        Submitted::IdempotencyKeyTaken => Ok(false),
        Submitted::OverQuota(cap) => Err(over_quota(state, cap)),
        Submitted::GuardFailed => {
            Err(ApiError::Internal(anyhow::anyhow!("a guarded submission's outcome for an unguarded one")))
        }
    }
}

/// The answer to a submission the store refused for `cap`.
pub fn over_quota(state: &AppState, cap: Capped) -> ApiError {
    let limit = quota(state).limit(cap);
    match cap {
        Capped::ActiveJobs => limited(
            format!("at most {limit} jobs may be queued or running at once; wait for some to finish"),
            Duration::from_secs(5),
        ),
        Capped::Characters => {
            limited(format!("at most {limit} characters per user; delete some first"), Duration::from_secs(60))
        }
        Capped::Groups => {
            limited(format!("at most {limit} groups per user; delete some first"), Duration::from_secs(60))
        }
    }
}

/// The daily token budget: every job spends tokens, so once today's are gone no job is created
/// until the UTC day turns. Checked against what finished attempts recorded, so jobs running
/// when the budget runs out still finish (a day can end somewhat over it).
async fn admit_spend(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    let budget = state.config.limits.daily_tokens;
    if budget == 0 {
        return Ok(());
    }
    let spent = state.store.tokens_today(user_id).await?;
    if spent >= budget {
        return Err(limited(
            format!("the daily budget of {budget} LLM tokens is spent ({spent} used today); it resets at 00:00 UTC"),
            until_next_utc_day(Utc::now()),
        ));
    }
    Ok(())
}

/// How long until the UTC day after `now` begins.
fn until_next_utc_day(now: DateTime<Utc>) -> Duration {
    now.date_naive()
        .succ_opt()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|midnight| (midnight.and_utc() - now).to_std().ok())
        .unwrap_or(Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_budget_resets_at_the_next_utc_midnight() {
        let evening = Utc.with_ymd_and_hms(2026, 11, 29, 23, 59, 30).unwrap();
        assert_eq!(until_next_utc_day(evening), Duration::from_secs(30));
        let midnight = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
        assert_eq!(until_next_utc_day(midnight), Duration::from_secs(24 * 3600));
    }
}
