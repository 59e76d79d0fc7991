//! `fastnpc`: FastNPC in one process, with no external services.
//!
//! `fastnpc serve` (the default) runs the API and the workers over SQLite in
//! `FASTNPC_DATA_DIR` (default `./data`), listening on `FASTNPC_HTTP_ADDR`. The environment
//! variables of the distributed binaries apply (see the README); the service URLs are unused.
//!
//! `fastnpc export USERNAME user.json` and `fastnpc import user.json` move a user's data to the
//! distributed mode's Postgres (`DATABASE_URL`; `--into embedded` imports into this machine's
//! store instead).

use fastnpc_shared::{settings::Settings, shutdown, telemetry};

/// jemalloc rather than glibc's malloc: an argon2id password hash takes ~19 MiB, and glibc keeps
/// such blocks in its per-thread arenas once freed, so a burst of logins left the process above
/// 500 MiB for good even with two hashes at a time; jemalloc gives them back to the system at
/// once. The figures are in docs/benchmarks.md.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// FastNPC in one process, with no external services: the API, the workers, an in-process queue
/// and event bus over SQLite in FASTNPC_DATA_DIR (default ./data). The distributed binaries'
/// environment variables apply (the README's "Configuration"); the service URLs are unused. With
/// no LLM configured it runs its own simulator and says so.
#[derive(clap::Parser)]
#[command(name = "fastnpc", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the API and the workers in this process, over FASTNPC_DATA_DIR (the default).
    Serve,
    /// Write a user's data from FASTNPC_DATA_DIR to a file (JSON).
    Export { username: String, file: std::path::PathBuf },
    /// Write an exported user into Postgres (DATABASE_URL) or into FASTNPC_DATA_DIR.
    Import {
        file: std::path::PathBuf,
        /// Where to: the distributed mode's Postgres, or this machine's embedded store.
        #[arg(long, value_enum, default_value_t = ImportTarget::Postgres)]
        into: ImportTarget,
    },
    /// The command-line client of any FastNPC server (login, create, say, characters, jobs).
    #[command(flatten)]
    Client(fastnpc::client::ClientCommand),
    /// Generate, chat with and score a fixed set of characters with the configured LLM
    /// (`fastnpc eval --help` for its options).
    #[command(disable_help_flag = true)]
    Eval {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportTarget {
    Postgres,
    Embedded,
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = <Cli as clap::Parser>::parse();
    // The client needs none of the server's settings, nor its logs.
    if let Some(Command::Client(command)) = cli.command {
        return Ok(match fastnpc::client::run(command).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(exit) => {
                eprintln!("error: {}", exit.message);
                std::process::ExitCode::from(exit.code)
            }
        });
    }
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let system = fastnpc::Embedded::build(settings).await?;
            tracing::info!(addr = %system.local_addr(), "FastNPC (embedded) listening");
            // On stdout, whatever the log settings: the one line a person starting it needs.
            println!("FastNPC is running: open http://{} in a browser (Ctrl-C stops it)", system.local_addr());
            system.run_until(shutdown::signal()).await?;
        }
        Command::Export { username, file } => {
            let document = fastnpc::export_user(&settings, &username).await?;
            tokio::fs::write(&file, serde_json::to_vec_pretty(&document)?).await?;
            tracing::info!(user = %username, file = %file.display(), characters = document.characters.len(), "exported");
        }
        Command::Import { file, into } => {
            let target = match into {
                ImportTarget::Postgres => fastnpc::Target::Postgres,
                ImportTarget::Embedded => fastnpc::Target::Embedded,
            };
            let text = tokio::fs::read_to_string(&file).await?;
            let document = serde_json::from_str(&text)?;
            fastnpc::import_user(&settings, &document, target).await?;
            tracing::info!(file = %file.display(), ?target, "imported");
        }
        Command::Eval { args } => fastnpc::eval::main(settings, &args).await?,
        Command::Client(_) => unreachable!("handled before the settings are read"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}
