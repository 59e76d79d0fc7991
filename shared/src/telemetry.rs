//! Logging set-up. `RUST_LOG` filters (default `info`); `FASTNPC_LOG_FORMAT=json` switches to
//! one JSON object per line for log shippers. Nothing here logs prompts, replies or secrets: the
//! call sites log ids, sizes and timings only.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

/// Installs the global subscriber. Safe to call twice (the second call is a no-op), which tests
/// that build several apps in one process rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    // Already initialised (tests): keep the first subscriber.
    let _ = result;
}
