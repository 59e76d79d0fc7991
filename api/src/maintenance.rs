//! Housekeeping that keeps the database from growing without bound. Any replica may run it:
//! each step is an idempotent delete, so replicas racing on it do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Sessions last days (`FASTNPC_SESSION_TTL_HOURS`), so an hourly sweep keeps the table small
/// without adding load.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Forgets expired and revoked sessions, at start and then every [`SESSION_PURGE_INTERVAL`].
pub async fn purge_sessions(state: AppState, stop: CancellationToken) {
    loop {
        match state.store.purge_sessions().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged old sessions"),
            Err(error) => tracing::warn!(%error, "cannot purge old sessions"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SESSION_PURGE_INTERVAL) => {}
        }
    }
}
