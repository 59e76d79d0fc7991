//! `fastnpc-api`: the HTTP API. `fastnpc-api migrate` applies migrations and exits;
//! `fastnpc-api healthcheck` asks the running API's `/readyz` and exits 0 when it is ready (for
//! container healthchecks: the image has no shell tools to do it).

use fastnpc_shared::{settings::Settings, shutdown, store, telemetry};

/// jemalloc rather than glibc's malloc: an argon2id password hash takes ~19 MiB, and glibc keeps
/// such blocks in its per-thread arenas once freed, so a burst of logins left the process above
/// 500 MiB for good even with two hashes at a time; jemalloc gives them back to the system at
/// once. The figures are in docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// FastNPC's HTTP API (distributed mode): accounts, characters, chats, groups and jobs over
/// Postgres, RabbitMQ and Redis, and the web app. Configured by environment variables (the
/// README's "Configuration" lists them: DATABASE_URL, FASTNPC_AMQP_URL, FASTNPC_REDIS_URL,
/// FASTNPC_HTTP_ADDR, FASTNPC_METRICS_ADDR, …).
#[derive(clap::Parser)]
#[command(name = "fastnpc-api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Apply pending migrations, then serve on FASTNPC_HTTP_ADDR until SIGTERM or Ctrl-C (the
    /// default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Ask the running API's /readyz (on its own FASTNPC_HTTP_ADDR); exit 0 when it is ready.
    /// For container healthchecks: the image has no shell tools to do it.
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let api = fastnpc_api::Api::build(settings).await?;
            api.run_until(shutdown::signal()).await
        }
        Command::Migrate => {
            store::PgStore::connect(settings.database_url.expose(), 1).await?.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Healthcheck => healthcheck(&settings).await,
    }
}

/// `GET /readyz` on this API's own listen address (loopback when it listens on every address).
async fn healthcheck(settings: &Settings) -> anyhow::Result<()> {
    let mut address = settings.http_addr;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build()?;
    let response = client.get(format!("http://{address}/readyz")).send().await?;
    anyhow::ensure!(response.status().is_success(), "/readyz answered {}", response.status());
    Ok(())
}
