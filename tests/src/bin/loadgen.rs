//! `loadgen`: the benchmark for character generation. Not a test: it measures and prints.
//!
//! It starts a whole FastNPC in this process (API, workers, and the LLM simulator at a fixed
//! per-call latency) over the real PostgreSQL, RabbitMQ and Redis, then, as a client over HTTP:
//!
//! 1. creates characters one at a time and follows each over SSE to its terminal event;
//! 2. creates `--concurrency` characters at once and follows them all;
//! 3. polls `GET /v1/jobs/{id}` to time a plain API read;
//!
//! and counts PostgreSQL's commits during the burst (`pg_stat_database`), per character.
//!
//! With every call taking exactly `--latency-ms`, one character's critical path is one call (the
//! nine categories and the brief overlap), so `end-to-end − latency` is what the system adds:
//! HTTP, Postgres, RabbitMQ, Redis and scheduling.
//!
//! ```text
//! cargo run --release -p fastnpc-tests --bin loadgen -- [--latency-ms 1000] [--concurrency 50]
//!     [--single-runs 5] [--workers 1] [--polls 200]
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::SimConfig,
};
use futures::StreamExt;

struct Args {
    latency: Duration,
    concurrency: usize,
    single_runs: usize,
    workers: usize,
    polls: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args =
        Args { latency: Duration::from_millis(1000), concurrency: 50, single_runs: 5, workers: 1, polls: 200 };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value: u64 = raw.next().with_context(|| format!("{flag} needs a value"))?.parse()?;
        match flag.as_str() {
            "--latency-ms" => args.latency = Duration::from_millis(value),
            "--concurrency" => args.concurrency = value as usize,
            "--single-runs" => args.single_runs = value as usize,
            "--workers" => args.workers = value as usize,
            "--polls" => args.polls = value as usize,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Transactions committed in the app's database so far (read-only statements included: each is
/// a transaction), and WAL flushes of the whole server (what a writing commit costs; the machine
/// is otherwise idle). Backends report their counts when idle, at most every 10 s (PostgreSQL's
/// `PGSTAT_IDLE_INTERVAL`): the wait lets every count in.
async fn commits(app: &TestApp) -> anyhow::Result<Counts> {
    tokio::time::sleep(Duration::from_secs(11)).await;
    let pool = app.db.postgres();
    let (transactions, wal_syncs): (i64, i64) = sqlx::query_as(
        "select (select xact_commit from pg_stat_database where datname = current_database()), \
                (select wal_sync from pg_stat_wal)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Counts { transactions: transactions as f64, wal_syncs: wal_syncs as f64 })
}

#[derive(Clone, Copy)]
struct Counts {
    transactions: f64,
    wal_syncs: f64,
}

impl std::ops::Sub for Counts {
    type Output = Self;
    fn sub(self, other: Self) -> Self {
        Self { transactions: self.transactions - other.transactions, wal_syncs: self.wal_syncs - other.wal_syncs }
    }
}

/// Client-side timings of one character.
struct Timing {
    /// `POST /v1/characters` until its `202`.
    accept: Duration,
    /// `POST` until the terminal SSE event.
    total: Duration,
}

async fn create_and_follow(app: &TestApp, user: &TestUser, name: &str) -> anyhow::Result<Timing> {
    let started = Instant::now();
    let created = app.create_character(user, name).await;
    let accept = started.elapsed();
    let job_id = created["job"]["id"].as_str().context("job id")?;
    let mut events = app.open_events(user, job_id, None).await;
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "succeeded" => return Ok(Timing { accept, total: started.elapsed() }),
            "failed" | "cancelled" => bail!("job {job_id} ended {}: {}", event.event, event.data),
            _ => {}
        }
    }
    bail!("stream of {job_id} ended without a terminal event")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 10.0 { format!("{millis:.1} ms") } else { format!("{millis:.0} ms") }
}

fn summary(label: &str, mut values: Vec<Duration>) -> String {
    values.sort_unstable();
    format!(
        "| {label} | {} | {} | {} | {} | {} |",
        values.len(),
        ms(percentile(&values, 0.0)),
        ms(percentile(&values, 0.5)),
        ms(percentile(&values, 0.95)),
        ms(percentile(&values, 1.0)),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let sim =
        SimConfig { time_to_first_token: args.latency, inter_token_delay: Duration::ZERO, ..SimConfig::default() };
    // Production pool size (the harness's default is smaller, for many parallel tests).
    let app = TestApp::builder()
        .sim(sim)
        .workers(args.workers)
        .worker_concurrency(64)
        .setting("FASTNPC_DB_POOL_SIZE", "32")
        .spawn()
        .await;
    let user = app.user("bench").await;

    // Warm-up: connections, pools, the first consumer.
    create_and_follow(&app, &user, "warm-up").await?;

    let mut single = Vec::new();
    for run in 0..args.single_runs {
        single.push(create_and_follow(&app, &user, &format!("single-{run}")).await?);
    }

    app.sim.reset();
    // What the app commits with nothing to do (re-publisher sweeps, heartbeats), per second.
    let idle_started = Instant::now();
    let idle_start = commits(&app).await?;
    let commits_before = commits(&app).await?;
    let idle_commits = commits_before - idle_start;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let started = Instant::now();
    let burst = futures::future::join_all((0..args.concurrency).map(|i| {
        let (app, user) = (&app, &user);
        async move { create_and_follow(app, user, &format!("burst-{i}")).await }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let burst_wall = started.elapsed();
    let burst_stats = app.sim.stats();
    let burst_commits = commits(&app).await? - commits_before;
    let share = started.elapsed().as_secs_f64() / idle_seconds;
    let per_character = |total: f64, idle: f64| (total - idle * share) / args.concurrency as f64;

    let job_id = {
        let created = app.create_character(&user, "poll-target").await;
        created["job"]["id"].as_str().context("job id")?.to_owned()
    };
    app.wait_for_job(&user, &job_id).await;
    let mut polls = Vec::with_capacity(args.polls);
    for _ in 0..args.polls {
        let started = Instant::now();
        let response = app.get(&format!("/v1/jobs/{job_id}"), &user).await;
        response.error_for_status()?.bytes().await?;
        polls.push(started.elapsed());
    }

    // Cancellation: with calls that would take a minute, how long from `POST …/cancel` until
    // the stream says `cancelled` (the worker drops its in-flight calls).
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(60), ..SimConfig::default() });
    let mut cancels = Vec::new();
    for run in 0..5 {
        let created = app.create_character(&user, &format!("cancel-{run}")).await;
        let job_id = created["job"]["id"].as_str().context("job id")?.to_owned();
        let mut events = app.open_events(&user, &job_id, None).await;
        while let Some(event) = events.next().await {
            if event?.event == "status" {
                let running: serde_json::Value = app.get(&format!("/v1/jobs/{job_id}"), &user).await.json().await?;
                if running["job"]["status"] == "running" {
                    break;
                }
            }
        }
        let started = Instant::now();
        app.request(reqwest::Method::POST, &format!("/v1/jobs/{job_id}/cancel"), Some(&user)).send().await?;
        while let Some(event) = events.next().await {
            if event?.event == "cancelled" {
                break;
            }
        }
        cancels.push(started.elapsed());
    }

    let latency = args.latency;
    println!("Simulator: every call takes {} (time to first token; no per-token delay).", ms(latency));
    println!("Workers: {} in-process, 64 jobs in flight each.\n", args.workers);
    println!("| measurement | n | min | p50 | p95 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("one character, end to end (POST → `succeeded` on SSE)", single.iter().map(|t| t.total).collect())
    );
    println!(
        "{}",
        summary(
            "added by the system (end to end − one LLM call)",
            single.iter().map(|t| t.total.saturating_sub(latency)).collect()
        )
    );
    println!("{}", summary("`POST /v1/characters` → `202` (one at a time)", single.iter().map(|t| t.accept).collect()));
    println!(
        "{}",
        summary(
            &format!("{} concurrent characters, each end to end", args.concurrency),
            burst.iter().map(|t| t.total).collect()
        )
    );
    println!(
        "{}",
        summary("`POST /v1/characters` → `202` (under the burst)", burst.iter().map(|t| t.accept).collect())
    );
    println!("{}", summary("`GET /v1/jobs/{id}` (idle system)", polls));
    println!("{}", summary("`POST …/cancel` of a running job → `cancelled` on SSE", cancels));
    println!();
    println!(
        "Burst of {}: all finished {} after the first POST; the simulator served {} calls with {} in flight at the peak.",
        args.concurrency,
        ms(burst_wall),
        burst_stats.requests_served,
        burst_stats.peak_in_flight
    );
    println!(
        "PostgreSQL per character (the idle app's own background work subtracted): {:.1} transactions, \
         {:.1} WAL flushes.",
        per_character(burst_commits.transactions, idle_commits.transactions),
        per_character(burst_commits.wal_syncs, idle_commits.wal_syncs),
    );
    app.stop().await;
    Ok(())
}
