//! `GET /v1/me/usage`: what the caller's LLM calls cost, per UTC day — the figures the daily
//! token budget (`FASTNPC_LIMIT_DAILY_TOKENS`) is checked against, so a user can see how close
//! they are before a request is refused.

use axum::{
    Json,
    extract::{Query, State},
};
use chrono::NaiveDate;
use fastnpc_shared::llm::Usage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{error::ApiError, extract::AuthUser, state::AppState};

/// Days shown when `days` is not given.
const DEFAULT_DAYS: u32 = 30;
/// The longest window: a year, leap day included.
const MAX_DAYS: u32 = 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Text, so a bad value gets a detail naming the field instead of the query parser's.
    days: Option<String>,
}

#[derive(Serialize)]
struct DayView {
    day: NaiveDate,
    #[serde(flatten)]
    usage: Usage,
}

/// `GET /v1/me/usage?days=N` → `{days: [{day, calls, prompt_tokens, completion_tokens}], total}`:
/// the last N UTC days (today included) that had any usage, newest first, and their sum.
pub async fn mine(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let days = window(query.days.as_deref())?;
    let days: Vec<DayView> = state
        .store
        .daily_usage(user_id, days)
        .await?
        .into_iter()
        .map(|d| DayView { day: d.day, usage: d.usage })
        .collect();
    let mut total = Usage::default();
    for day in &days {
        total += day.usage;
    }
    Ok(Json(json!({ "days": days, "total": total })))
}

/// `days`: 1 to [`MAX_DAYS`], [`DEFAULT_DAYS`] when absent.
fn window(days: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = days else { return Ok(DEFAULT_DAYS) };
    match raw.trim().parse::<u32>() {
        Ok(days) if (1..=MAX_DAYS).contains(&days) => Ok(days),
        _ => Err(ApiError::invalid_field(format!("days must be a whole number from 1 to {MAX_DAYS}, not `{raw}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_one_to_366_days() {
        assert_eq!(window(None).unwrap(), DEFAULT_DAYS);
        assert_eq!(window(Some("1")).unwrap(), 1);
        assert_eq!(window(Some("366")).unwrap(), 366);
        for bad in ["0", "367", "-1", "week", ""] {
            let error = window(Some(bad)).unwrap_err();
            assert!(error.to_string().starts_with("days"), "{bad}: {error}");
        }
    }
}
