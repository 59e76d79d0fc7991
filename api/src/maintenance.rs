//! Housekeeping that keeps the database from growing without bound (old sessions, fetched source
//! documents past the cache's age). Any replica may run it:
//! each step is an idempotent delete, so replicas racing on it do no harm.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Sessions last days (`FASTNPC_SESSION_TTL_HOURS`), so an hourly sweep keeps the table small
/// without adding load.
const SESSION_PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Forgets expired and revoked sessions and fetched documents older than the fetch cache keeps
/// them (`FASTNPC_SOURCE_CACHE_SECS`; a character's own snapshot stays), at start and then every
/// [`SESSION_PURGE_INTERVAL`].
pub async fn purge_sessions(state: AppState, stop: CancellationToken) {
    loop {
        match state.store.purge_sessions().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged old sessions"),
            Err(error) => tracing::warn!(%error, "cannot purge old sessions"),
        }
        match state.store.expire_documents(state.sources.cache_ttl()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "forgot fetched source documents past the cache's age"),
            Err(error) => tracing::warn!(%error, "cannot expire fetched source documents"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SESSION_PURGE_INTERVAL) => {}
        }
    }
}
