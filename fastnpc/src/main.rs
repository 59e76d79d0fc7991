//! `fastnpc`: FastNPC in one process, with no external services.
//!
//! `fastnpc serve` (the default) runs the API and the workers over SQLite in
//! `FASTNPC_DATA_DIR` (default `./data`), listening on `FASTNPC_HTTP_ADDR`. The environment
//! variables of the distributed binaries apply (see the README); the service URLs are unused.

use fastnpc_shared::{settings::Settings, shutdown, telemetry};

const USAGE: &str = "usage: fastnpc [serve]\n\n  serve   run the API and the workers in this process (default)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let system = fastnpc::Embedded::build(settings).await?;
            tracing::info!(addr = %system.local_addr(), "FastNPC (embedded) listening");
            system.run_until(shutdown::signal()).await
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command `{other}`\n{USAGE}"),
    }
}
