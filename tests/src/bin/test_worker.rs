//! `fastnpc-test-worker`: the worker as a child process for fault tests (kill -9, SIGTERM).
//! The same code as `fastnpc-worker`; built with the test crate so integration tests can find
//! it (`CARGO_BIN_EXE_fastnpc-test-worker`).

use fastnpc_shared::{settings::Settings, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown::signal().await;
            stop.cancel();
        }
    });
    fastnpc_worker::run(settings, stop).await
}
