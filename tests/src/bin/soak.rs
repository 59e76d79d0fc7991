//! `soak`: the long run the original's acceptance asked for — no deadlock, no leak. Not a test:
//! it runs, checks and prints.
//!
//! One API and one worker (or one `fastnpc serve`) as release processes over the real services
//! (`fastnpc_tests::deployment`), the simulator as the model. As one user, at a steady
//! `--concurrency` (that many requests always in flight):
//!
//! 1. `--characters` generations, each followed over SSE to its end;
//! 2. `--replies` chat messages spread over those characters, each followed over SSE to its end
//!    (the user's memory budgets are small, so each conversation's growth runs compressions into
//!    short- and long-term memory along the way);
//! 3. waits until no job is queued or running (the compressions the replies scheduled).
//!
//! Every `--sample-ms` it reads each process's resident memory (`VmRSS`). It prints the memory
//! at the end of the warm-up (the generations and the first fifth of the replies), its peak
//! after, and at the end, with a reading at each tenth of the work; the
//! growth after warm-up; how many jobs ended in each state (every one must have succeeded); what
//! the event logs hold at the end (Redis: keys of the namespace, each must carry an expiry, and
//! `used_memory`; embedded: `job_events` rows, pruned after 24 h); and the errors the client saw.
//! It exits non-zero when a job did not succeed, a request failed, or a Redis key would live
//! forever.
//!
//! ```text
//! cargo build --release -p fastnpc -p fastnpc-api -p fastnpc-worker -p fastnpc-tests -p fastnpc-llm-sim --bins
//! target/release/soak [--characters 1000] [--replies 10000] [--concurrency 50] [--embedded true]
//!     [--ttft-ms 50] [--itl-ms 5] [--tokens 24] [--worker-concurrency 512] [--sample-ms 1000]
//! ```

use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastnpc_tests::deployment::{Deployment, Memory, Options, follow_job, simulator_stream};
use serde_json::{Value, json};

struct Args {
    characters: usize,
    replies: usize,
    concurrency: usize,
    embedded: bool,
    ttft_ms: u64,
    itl_ms: u64,
    tokens: u64,
    worker_concurrency: u64,
    sample: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        characters: 1000,
        replies: 10_000,
        concurrency: 50,
        embedded: false,
        ttft_ms: 50,
        itl_ms: 5,
        tokens: 24,
        worker_concurrency: 512,
        sample: Duration::from_millis(1000),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--characters" => args.characters = value.parse()?,
            "--replies" => args.replies = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            "--embedded" => args.embedded = value.parse()?,
            "--ttft-ms" => args.ttft_ms = value.parse()?,
            "--itl-ms" => args.itl_ms = value.parse()?,
            "--tokens" => args.tokens = value.parse()?,
            "--worker-concurrency" => args.worker_concurrency = value.parse()?,
            "--sample-ms" => args.sample = Duration::from_millis(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.characters == 0 {
        bail!("--characters must be at least 1");
    }
    Ok(args)
}

/// One memory reading of each process.
#[derive(Clone, Copy)]
struct Sample {
    /// Work items (generations + replies) finished when it was taken.
    done: usize,
    api: f64,
    worker: f64,
}

/// Runs `total` items at `concurrency`, `item(i)` for each; counts finished ones in `done` and
/// returns the errors.
async fn steady<F, Fut>(total: usize, concurrency: usize, done: &AtomicUsize, item: F) -> Vec<String>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    let lane = || async {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= total {
                return;
            }
            if let Err(error) = item(index).await {
                errors.lock().expect("errors").push(format!("{error:#}"));
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    };
    futures::future::join_all((0..concurrency).map(|_| lane())).await;
    errors.into_inner().expect("errors")
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Value) -> anyhow::Result<Value> {
    let response = http.post(url).bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response.json().await?)
}

/// Jobs of the user in `status`, up to 100 (enough to tell none from some).
async fn jobs_in(http: &reqwest::Client, api: &str, token: &str, status: &str) -> anyhow::Result<usize> {
    let page: Value = http
        .get(format!("{api}/v1/jobs?status={status}&limit=100"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(page["items"].as_array().map_or(0, Vec::len))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let deployment = Deployment::start(Options {
        embedded: args.embedded,
        workers: 1,
        worker_concurrency: args.worker_concurrency,
        simulator_args: simulator_stream(args.ttft_ms, args.itl_ms, args.tokens),
        name: "soak",
        env: Vec::new(),
    })
    .await?;
    let (http, api) = (&deployment.http, deployment.api.as_str());
    let token = deployment.user("soak").await?;
    let token = token.as_str();
    // Small memory budgets, so that every conversation's growth runs compressions into both
    // memory layers during the soak, as long conversations do.
    let budgets = json!({"memory_budgets": {"session": 400, "short_term": 300, "long_term": 2000}});
    http.patch(format!("{api}/v1/me")).bearer_auth(token).json(&budgets).send().await?.error_for_status()?;
    let total = args.characters + args.replies;
    let done = AtomicUsize::new(0);
    let samples = Mutex::new(Vec::<Sample>::new());
    let started = Instant::now();
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let sampling = async {
        let read = || Sample {
            done: done.load(Ordering::Relaxed),
            api: deployment.memory_mib("api", Memory::Resident),
            worker: deployment.memory_mib("worker", Memory::Resident),
        };
        let mut ticks = tokio::time::interval(args.sample);
        loop {
            tokio::select! {
                _ = ticks.tick() => samples.lock().expect("samples").push(read()),
                () = stop_sampling.cancelled() => break,
            }
        }
        samples.lock().expect("samples").push(read());
    };
    let work = async {
        let characters = Mutex::new(vec![String::new(); args.characters]);
        let generation_errors = steady(args.characters, args.concurrency, &done, |index| {
            let characters = &characters;
            async move {
                let name = format!("诸葛亮{index}");
                let source = json!({"kind": "text", "text": fastnpc_tests::harness::sample_source(&name)});
                let created =
                    post(http, format!("{api}/v1/characters"), token, json!({"name": name, "source": source})).await?;
                let id = created["character"]["id"].as_str().context("character id")?.to_owned();
                follow_job(http, api, token, created["job"]["id"].as_str().context("job id")?, |_| {}).await?;
                characters.lock().expect("characters")[index] = id;
                Ok(())
            }
        })
        .await;
        let generated = Instant::now();
        let characters: Vec<String> =
            characters.into_inner().expect("characters").into_iter().filter(|id| !id.is_empty()).collect();
        if characters.is_empty() {
            bail!("no character was generated: {generation_errors:?}");
        }
        let reply_errors = steady(args.replies, args.concurrency, &done, |index| {
            let character = &characters[index % characters.len()];
            async move {
                let url = format!("{api}/v1/characters/{character}/messages");
                let sent = post(http, url, token, json!({"content": format!("第{index}个问题：你怎么看？")})).await?;
                follow_job(http, api, token, sent["job"]["id"].as_str().context("job id")?, |_| {}).await?;
                Ok(())
            }
        })
        .await;
        let replied = Instant::now();
        // The compressions the replies scheduled.
        while jobs_in(http, api, token, "queued").await? + jobs_in(http, api, token, "running").await? > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop_sampling.cancel();
        anyhow::Ok((generation_errors, reply_errors, generated, replied))
    };
    let (outcome, ()) = tokio::join!(work, sampling);
    let (generation_errors, reply_errors, generated, replied) = outcome?;
    let drained = Instant::now();

    println!(
        "Soak: {} characters then {} replies, {} at a time, one user; {} mode; simulator {} ms to first token, {} tokens {} ms apart.\n",
        args.characters,
        args.replies,
        args.concurrency,
        if args.embedded { "embedded" } else { "distributed (one API, one worker)" },
        args.ttft_ms,
        args.tokens,
        args.itl_ms
    );
    println!(
        "Generations took {:.1} s, replies {:.1} s ({:.0} replies/s), the compressions left after them {:.1} s.\n",
        (generated - started).as_secs_f64(),
        (replied - generated).as_secs_f64(),
        args.replies as f64 / (replied - generated).as_secs_f64(),
        (drained - replied).as_secs_f64()
    );

    let samples = samples.into_inner().expect("samples");
    // Warm-up: the generations and the first fifth of the replies. By then every conversation has
    // had turns and compressions run, so the mix of work is the one the rest of the run repeats.
    let warm_up = args.characters + args.replies / 5;
    let warm = samples.iter().find(|s| s.done >= warm_up).copied().context("no sample after the warm-up")?;
    let last = *samples.last().context("no sample")?;
    let after_warm_up: Vec<&Sample> = samples.iter().filter(|s| s.done >= warm_up).collect();
    let mut failures = Vec::new();
    println!("| process | at warm-up end ({warm_up} items) | peak after | at the end | growth after warm-up |");
    println!("|---|---|---|---|---|");
    type Figure = fn(&Sample) -> f64;
    let processes: &[(&str, Figure)] =
        if args.embedded { &[("fastnpc serve", |s| s.api)] } else { &[("API", |s| s.api), ("worker", |s| s.worker)] };
    for (name, figure) in processes {
        let peak = after_warm_up.iter().map(|s| figure(s)).fold(0.0, f64::max);
        let growth = (figure(&last) / figure(&warm) - 1.0) * 100.0;
        println!("| {name} | {:.1} MiB | {peak:.1} MiB | {:.1} MiB | {growth:+.1} % |", figure(&warm), figure(&last));
    }
    println!(
        "\n{} memory samples, one every {} ms. Resident memory as the work went on:\n",
        samples.len(),
        args.sample.as_millis()
    );
    println!("| work done | {} |", processes.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" | "));
    println!("|---|{}", "---|".repeat(processes.len()));
    for tenth in 1..=10 {
        let Some(sample) = samples.iter().find(|s| s.done >= total * tenth / 10) else { continue };
        let figures: Vec<String> = processes.iter().map(|(_, figure)| format!("{:.1} MiB", figure(sample))).collect();
        println!("| {} % | {} |", tenth * 10, figures.join(" | "));
    }

    let statuses = job_statuses(&deployment).await?;
    println!(
        "\nJobs by kind and final status: {}",
        statuses.iter().map(|(k, s, n)| format!("{k} {s}: {n}")).collect::<Vec<_>>().join(", ")
    );
    let unfinished: i64 = statuses.iter().filter(|(_, status, _)| status != "succeeded").map(|(_, _, n)| n).sum();
    if unfinished > 0 {
        failures.push(format!("{unfinished} jobs did not succeed"));
    }
    let errors: Vec<&String> = generation_errors.iter().chain(&reply_errors).collect();
    println!("Client errors: {}", errors.len());
    for error in errors.iter().take(5) {
        println!("  {error}");
    }
    if !errors.is_empty() {
        failures.push(format!("{} requests failed", errors.len()));
    }
    if let Some(problem) = event_logs(&deployment).await? {
        failures.push(problem);
    }
    deployment.stop().await?;
    if !failures.is_empty() {
        bail!("the soak failed: {}", failures.join("; "));
    }
    Ok(())
}

/// (kind, status, count) of every job in the deployment's database.
async fn job_statuses(deployment: &Deployment) -> anyhow::Result<Vec<(String, String, i64)>> {
    let query = "select kind, status, count(*) from jobs group by kind, status order by kind, status";
    Ok(match &deployment.database_url {
        Some(url) => sqlx::query_as(query).fetch_all(&sqlx::PgPool::connect(url).await?).await?,
        None => {
            let db = fastnpc_store_sqlite::connect(&deployment.data_dir.join(fastnpc::DATABASE_FILE), 1).await?;
            sqlx::query_as(query).fetch_all(&db).await?
        }
    })
}

/// Prints what the event logs hold; a problem when a Redis key of the namespace has no expiry.
async fn event_logs(deployment: &Deployment) -> anyhow::Result<Option<String>> {
    if deployment.database_url.is_none() {
        let db = fastnpc_store_sqlite::connect(&deployment.data_dir.join(fastnpc::DATABASE_FILE), 1).await?;
        let (rows,): (i64,) = sqlx::query_as("select count(*) from job_events").fetch_one(&db).await?;
        println!("Event log: {rows} rows in job_events (finished jobs' rows are pruned after 24 h).");
        return Ok(None);
    }
    let redis_url = std::env::var("FASTNPC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis = redis::Client::open(redis_url)?.get_multiplexed_async_connection().await?;
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}:*", deployment.namespace)).query_async(&mut redis).await?;
    let mut forever = 0;
    for key in &keys {
        let ttl: i64 = redis::cmd("TTL").arg(key).query_async(&mut redis).await?;
        if ttl < 0 {
            forever += 1;
        }
    }
    let info: String = redis::cmd("INFO").arg("memory").query_async(&mut redis).await?;
    let used = info.lines().find_map(|l| l.strip_prefix("used_memory_human:")).unwrap_or("?").trim().to_owned();
    println!(
        "Event log: {} Redis keys in the namespace, {forever} without an expiry (finished jobs' logs expire after 1 h); Redis used_memory {used}.",
        keys.len()
    );
    Ok((forever > 0).then(|| format!("{forever} Redis keys never expire")))
}
