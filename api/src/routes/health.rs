//! Liveness and readiness probes.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database and the event log answer (Postgres and Redis in the
/// distributed mode, SQLite twice in the embedded one); 503 otherwise, naming what is down. The
/// queue is reported but does not gate readiness: jobs are accepted while the broker is down
/// (they wait in the database for the re-publisher).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = state.store.ping().await.is_ok();
    let event_log = state.events.ping().await.is_ok();
    let live_events = state.hub.is_connected();
    let broker = state.publisher.is_connected();
    let ready = database && event_log;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let up = |ok: bool| if ok { "up" } else { "down" };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": {
                "database": up(database),
                "event_log": up(event_log),
                "event_subscription": up(live_events),
                "queue": if broker { "up" } else { "not connected" },
            },
        })),
    )
}
