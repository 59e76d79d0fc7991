//! `fastnpc-worker`: consumes jobs from RabbitMQ and does the LLM work. Run as many as you like.

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
