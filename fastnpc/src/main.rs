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

const USAGE: &str = "\
usage: fastnpc [serve]
       fastnpc export USERNAME FILE
       fastnpc import FILE [--into postgres|embedded]
       fastnpc eval [--help]

  serve    run the API and the workers in this process, over FASTNPC_DATA_DIR (default)
  export   write a user's data from FASTNPC_DATA_DIR to FILE (JSON)
  import   write an exported user into Postgres (DATABASE_URL, default) or FASTNPC_DATA_DIR
  eval     generate, chat with and score a fixed set of characters with the configured LLM";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["serve"] => {
            let system = fastnpc::Embedded::build(settings).await?;
            tracing::info!(addr = %system.local_addr(), "FastNPC (embedded) listening");
            // On stdout, whatever the log settings: the one line a person starting it needs.
            println!("FastNPC is running: open http://{} in a browser (Ctrl-C stops it)", system.local_addr());
            system.run_until(shutdown::signal()).await
        }
        ["export", username, file] => {
            let document = fastnpc::export_user(&settings, username).await?;
            tokio::fs::write(file, serde_json::to_vec_pretty(&document)?).await?;
            tracing::info!(user = %username, file = %file, characters = document.characters.len(), "exported");
            Ok(())
        }
        ["import", file, rest @ ..] => {
            let target = match rest {
                [] | ["--into", "postgres"] => fastnpc::Target::Postgres,
                ["--into", "embedded"] => fastnpc::Target::Embedded,
                _ => anyhow::bail!("{USAGE}"),
            };
            let text = tokio::fs::read_to_string(file).await?;
            let document = serde_json::from_str(&text)?;
            fastnpc::import_user(&settings, &document, target).await?;
            tracing::info!(file = %file, ?target, "imported");
            Ok(())
        }
        ["eval", ..] => fastnpc::eval::main(settings, &args[1..]).await,
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => anyhow::bail!("unknown command\n{USAGE}"),
    }
}
