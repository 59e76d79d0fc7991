//! `fastnpc-api`: the HTTP API. `fastnpc-api migrate` applies migrations and exits.

use fastnpc_shared::{settings::Settings, shutdown, store, telemetry};

/// jemalloc rather than glibc's malloc: an argon2id password hash takes ~19 MiB, and glibc keeps
/// such blocks in its per-thread arenas once freed, so a burst of logins left the process above
/// 500 MiB for good even with two hashes at a time; jemalloc gives them back to the system at
/// once. The figures are in docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let api = fastnpc_api::Api::build(settings).await?;
            api.run_until(shutdown::signal()).await
        }
        Some("migrate") => {
            store::PgStore::connect(settings.database_url.expose(), 1).await?.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command `{other}`; use `serve` (default) or `migrate`"),
    }
}
