//! Per-user abuse limits on job submission, active jobs, characters and groups, and the daily
//! LLM token budget. Each answers `429 Too Many Requests` with `Retry-After` and a detail naming
//! the limit; nothing is created.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fastnpc_shared::ids::UserId;

use crate::{error::ApiError, state::AppState};

fn limited(detail: String, retry_after: Duration) -> ApiError {
    ApiError::TooManyRequests { retry_after, detail }
}

/// Before creating a job: the submission rate and the number of active jobs.
pub async fn admit_job(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    let limits = &state.config.limits;
    match state.submissions.admit(user_id).await {
        Ok(Some(wait)) => {
            return Err(limited(format!("at most {} job submissions per minute", limits.submissions_per_minute), wait));
        }
        Ok(None) => {}
        // Like login limiting, this fails open: Redis trouble must not stop all work.
        Err(error) => tracing::warn!(%error, "submission limiter unavailable; not limiting"),
    }
    if state.store.active_job_count(user_id).await? >= limits.active_jobs {
        return Err(limited(
            format!("at most {} jobs may be queued or running at once; wait for some to finish", limits.active_jobs),
            Duration::from_secs(5),
        ));
    }
    admit_spend(state, user_id).await
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

/// Before creating a character.
pub async fn admit_character(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    let cap = state.config.limits.characters;
    if state.store.count_characters(user_id).await? >= cap {
        return Err(limited(format!("at most {cap} characters per user; delete some first"), Duration::from_secs(60)));
    }
    Ok(())
}

/// Before creating a group.
pub async fn admit_group(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    let cap = state.config.limits.groups;
    if state.store.count_groups(user_id).await? >= cap {
        return Err(limited(format!("at most {cap} groups per user; delete some first"), Duration::from_secs(60)));
    }
    Ok(())
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
