//! `fastnpc-worker`: consumes jobs from RabbitMQ and does the LLM work. Run as many as you like.
//!
//! `fastnpc-worker dead-letters list` shows the dead-letter queue; `fastnpc-worker dead-letters
//! requeue (--all | JOB_ID...)` gives those jobs another chance.

use fastnpc_shared::{ids::JobId, settings::Settings, shutdown, telemetry};
use fastnpc_worker::dead_letters::{self, Selection};
use tokio_util::sync::CancellationToken;

/// jemalloc rather than glibc's malloc: a streamed reply allocates and frees small buffers for
/// every chunk of the model's stream (the HTTP body, the SSE parse, the JSON, the event), and
/// glibc's malloc took a quarter of the worker's CPU at 1,000 conversations; with jemalloc the
/// worker's CPU per reply falls by the share in docs/benchmarks.md ("2026-12-02, later").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A FastNPC worker (distributed mode): takes jobs off RabbitMQ and does their LLM work. Run as
/// many as you like. Configured by environment variables (the README's "Configuration":
/// DATABASE_URL, FASTNPC_AMQP_URL, FASTNPC_REDIS_URL, FASTNPC_LLM_*, FASTNPC_METRICS_ADDR, …).
#[derive(clap::Parser)]
#[command(name = "fastnpc-worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Consume jobs until SIGTERM or Ctrl-C, then drain (the default).
    Run,
    /// The dead-letter queue: jobs that failed for good or could not be read.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
}

#[derive(clap::Subcommand)]
enum DeadLetters {
    /// List the dead letters: job id, reason, message.
    List,
    /// Give failed jobs another chance: their letters go back to the jobs queue.
    Requeue {
        /// Every dead letter.
        #[arg(long, conflicts_with = "jobs")]
        all: bool,
        /// The jobs to requeue.
        #[arg(value_name = "JOB_ID", required_unless_present = "all")]
        jobs: Vec<JobId>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = <Cli as clap::Parser>::parse();
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
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
        Command::DeadLetters(DeadLetters::List) => {
            for letter in dead_letters::list(&settings).await? {
                let job = letter.job_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
                println!("{job}\t{}\t{}", letter.reason, letter.body);
            }
            Ok(())
        }
        Command::DeadLetters(DeadLetters::Requeue { all, jobs }) => {
            let selection = if all { Selection::All } else { Selection::Jobs(jobs) };
            let outcome = dead_letters::requeue(&settings, &selection).await?;
            for job_id in &outcome.requeued {
                println!("requeued {job_id}");
            }
            for (job_id, status) in &outcome.left {
                let why = status.map_or("unknown to the database", |s| s.as_str());
                println!("left {job_id}: the job is {why}, not failed; its letter stays in the queue");
            }
            if let Selection::Jobs(ids) = &selection {
                let seen = |id: &&JobId| outcome.requeued.contains(id) || outcome.left.iter().any(|(l, _)| l == *id);
                for job_id in ids.iter().filter(|id| !seen(id)) {
                    println!("no dead letter names {job_id}");
                }
            }
            Ok(())
        }
    }
}
