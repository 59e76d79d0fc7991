//! Liveness and readiness probes.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when Postgres and Redis answer; 503 otherwise, naming what is down. The
/// broker is reported but does not gate readiness: jobs are accepted while it is down (they wait
/// in Postgres for the re-publisher).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.store.ping().await.is_ok();
    let redis = state.events.ping().await.is_ok();
    let live_events = state.hub.is_connected();
    let broker = state.publisher.is_connected();
    let ready = database && redis;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let up = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": {
                "postgres": up(database),
                "redis": up(redis),
                "event_subscription": up(live_events),
                "broker": if broker { "up" } else { "not connected" },
            },
        })),
    )
}
