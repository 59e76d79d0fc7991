//! Per-user abuse limits on job submission, active jobs, characters and groups. Each answers
//! `429 Too Many Requests` with `Retry-After` and a detail naming the limit; nothing is created.

use std::time::Duration;

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
    Ok(())
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
