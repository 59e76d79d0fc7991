//! `eval`: `fastnpc eval` as its own binary (`cargo run -p fastnpc --bin eval -- --help`).

use fastnpc_shared::{settings::Settings, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    fastnpc::eval::main(settings, &args).await
}
