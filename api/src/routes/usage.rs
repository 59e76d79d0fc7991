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
use utoipa::{IntoParams, ToSchema};

use crate::{error::ApiError, extract::AuthUser, state::AppState};

/// Days shown when `days` is not given.
const DEFAULT_DAYS: u32 = 30;
/// The longest window: a year, leap day included.
const MAX_DAYS: u32 = 366;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The last N UTC days, today included: 1 to 366 (30 by default).
    // Text, so a bad value gets a detail naming the field instead of the query parser's.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 366)]
    days: Option<String>,
}

/// One UTC day's LLM calls and tokens.
#[derive(Serialize, ToSchema)]
pub struct UsageDay {
    day: NaiveDate,
    #[serde(flatten)]
    usage: Usage,
}

/// The caller's usage per UTC day, and its sum.
#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    /// The days of the window that had any usage, newest first.
    days: Vec<UsageDay>,
    /// The sum of `days`.
    total: Usage,
}

/// `GET /v1/me/usage?days=N` → `{days: [{day, calls, prompt_tokens, completion_tokens}], total}`:
/// the last N UTC days (today included) that had any usage, newest first, and their sum.
#[utoipa::path(
    get,
    path = "/v1/me/usage",
    tag = "auth",
    summary = "Your LLM calls and tokens per UTC day",
    description = "The figures the daily token budget is checked against. Days without usage are left out.",
    params(UsageQuery),
    responses(
        (status = 200, description = "The usage", body = UsageReport),
        (status = 422, description = "`/problems/invalid-field`: `days` is not a whole number from 1 to 366",
            body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn mine(
    State(state): State<AppState>,
    AuthUser(user_id): AuthUser,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let days = window(query.days.as_deref())?;
    let days: Vec<UsageDay> = state
        .store
        .daily_usage(user_id, days)
        .await?
        .into_iter()
        .map(|d| UsageDay { day: d.day, usage: d.usage })
        .collect();
    let mut total = Usage::default();
    for day in &days {
        total += day.usage;
    }
    Ok(Json(UsageReport { days, total }))
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
