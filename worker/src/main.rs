//! `fastnpc-worker`: consumes jobs from RabbitMQ and does the LLM work. Run as many as you like.
//!
//! `fastnpc-worker dead-letters list` shows the dead-letter queue; `fastnpc-worker dead-letters
//! requeue (--all | JOB_ID...)` gives those jobs another chance.

use fastnpc_shared::{ids::JobId, settings::Settings, shutdown, telemetry};
use fastnpc_worker::dead_letters::{self, Selection};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] | ["run"] => {
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
        ["dead-letters", "list"] => {
            for letter in dead_letters::list(&settings).await? {
                let job = letter.job_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
                println!("{job}\t{}\t{}", letter.reason, letter.body);
            }
            Ok(())
        }
        ["dead-letters", "requeue", rest @ ..] if !rest.is_empty() => {
            let selection = if rest == ["--all"] {
                Selection::All
            } else {
                Selection::Jobs(rest.iter().map(|id| id.parse()).collect::<Result<_, _>>()?)
            };
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
        _ => {
            anyhow::bail!("usage: fastnpc-worker [run] | dead-letters list | dead-letters requeue (--all | JOB_ID...)")
        }
    }
}
