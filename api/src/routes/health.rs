//! Liveness and readiness probes.

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// `{status: "ok"}`.
#[derive(Serialize, ToSchema)]
pub struct Live {
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    operation_id = "liveness",
    path = "/healthz",
    tag = "system",
    summary = "Liveness: the process is up",
    security(()),
    responses((status = 200, description = "Up", body = Live)),
)]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// Whether the process can serve, and each dependency's state.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    checks: Checks,
}

/// Each dependency: `up` or `down` (the queue: `up` or `not connected`).
#[derive(Serialize, ToSchema)]
pub struct Checks {
    database: &'static str,
    event_log: &'static str,
    event_subscription: &'static str,
    queue: &'static str,
}

/// `GET /readyz`: 200 when the database and the event log answer (Postgres and Redis in the
/// distributed mode, SQLite twice in the embedded one); 503 otherwise, naming what is down. The
/// queue is reported but does not gate readiness: jobs are accepted while the broker is down
/// (they wait in the database for the re-publisher).
#[utoipa::path(
    get,
    operation_id = "readiness",
    path = "/readyz",
    tag = "system",
    summary = "Readiness: the database and the event log answer",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the checks say what is down", body = Readiness),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = state.store.ping().await.is_ok();
    let event_log = state.events.ping().await.is_ok();
    let live_events = state.hub.is_connected();
    let broker = state.publisher.is_connected();
    let ready = database && event_log;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let up = |ok: bool| if ok { "up" } else { "down" };
    let checks = Checks {
        database: up(database),
        event_log: up(event_log),
        event_subscription: up(live_events),
        queue: if broker { "up" } else { "not connected" },
    };
    (status, Json(Readiness { status: if ready { "ready" } else { "unavailable" }, checks }))
}
