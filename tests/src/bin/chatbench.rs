//! `chatbench`: the chat benchmark. Not a test: it measures and prints.
//!
//! Unlike `loadgen`, it runs the system as it is deployed: the `fastnpc-api`, `fastnpc-worker`
//! and `llm-sim` release binaries as separate processes (so their peak memory can be read from
//! `/proc`), over the real PostgreSQL, RabbitMQ and Redis. For each concurrency level it runs
//! that many conversations at once (one character each), each sending `--messages` messages one
//! after another and following every reply over SSE:
//!
//! - *time to first token added*: client-observed first `token` event − the simulator's own time
//!   to first token, measured by calling the simulator directly;
//! - *latency added*: client-observed `succeeded` − the simulator's own full-stream time;
//! - *throughput*: replies completed per second of the level's wall time;
//! - *peak memory*: `VmHWM` of the API and of the largest worker after the level.
//!
//! ```text
//! cargo build --release -p fastnpc -p fastnpc-api -p fastnpc-worker -p fastnpc-tests --bins
//! target/release/chatbench [--levels 1,10,100,1000] [--messages 3] [--ttft-ms 1000] [--itl-ms 20]
//!     [--tokens 24] [--workers 2] [--worker-concurrency 512] [--embedded true]
//! ```
//!
//! `--embedded true` runs the embedded mode instead: one `fastnpc serve` process over SQLite (API
//! and workers together, so there is one peak memory), no services.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastnpc_tests::sse_client;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

struct Args {
    levels: Vec<usize>,
    messages: usize,
    ttft_ms: u64,
    itl_ms: u64,
    tokens: u64,
    workers: usize,
    worker_concurrency: u64,
    group_levels: Vec<usize>,
    group_rounds: i32,
    embedded: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        levels: vec![1, 10, 100, 1000],
        messages: 3,
        ttft_ms: 1000,
        itl_ms: 20,
        tokens: 24,
        workers: 2,
        worker_concurrency: 512,
        group_levels: vec![1, 10],
        group_rounds: 5,
        embedded: false,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--levels" => args.levels = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--messages" => args.messages = value.parse()?,
            "--ttft-ms" => args.ttft_ms = value.parse()?,
            "--itl-ms" => args.itl_ms = value.parse()?,
            "--tokens" => args.tokens = value.parse()?,
            "--workers" => args.workers = value.parse()?,
            "--worker-concurrency" => args.worker_concurrency = value.parse()?,
            "--group-levels" => args.group_levels = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--group-rounds" => args.group_rounds = value.parse()?,
            "--embedded" => args.embedded = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Child processes, terminated (SIGTERM, then kill) when dropped.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, child) in &mut self.0 {
            for _ in 0..50 {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn spawn(bin: &Path, name: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut command = Command::new(bin.join(name));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
    command.spawn().with_context(|| format!("start {name} (build the release binaries first)"))
}

async fn wait_healthy(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not come up")
}

/// The simulator's time for one moderator call (JSON, not streamed).
async fn simulator_json_baseline(http: &reqwest::Client, sim_url: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    http.post(format!("{sim_url}/chat/completions"))
        .json(&json!({
            "model": "sim",
            "messages": [{"role": "user", "content": "群聊中控 baseline"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "m", "schema": {"type": "object"}}},
        }))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(started.elapsed())
}

/// Group rounds: `level` groups of three at once, each running `--group-rounds` rounds after one
/// user message. A round's added cost is the time from the previous `message` event (or the POST,
/// for the first round) to this round's `message` event, minus the simulator's own time for a
/// moderator call plus a streamed reply.
async fn group_rounds(
    http: &reqwest::Client,
    api: &str,
    sim_url: &str,
    token: &str,
    characters: &[String],
    args: &Args,
) -> anyhow::Result<()> {
    let (_, reply_total) = simulator_baseline(http, sim_url).await?;
    let moderator = simulator_json_baseline(http, sim_url).await?;
    let round_baseline = moderator + reply_total;
    // The moderator always gives the turn (confidence 0.9) to the first member, as a script.
    // Every clone is named 诸葛亮, so the moderator sees the labels 诸葛亮#1..#3.
    let template_name = "诸葛亮#1";
    let rule = json!({
        "when_contains": "群聊中控",
        "fault": {"kind": "reply", "content": json!({"next_speaker": template_name, "reason": "bench", "confidence": 0.9}).to_string()},
        "times": null,
    });
    http.post(format!("{}/sim/rules", sim_url.trim_end_matches("/v1"))).json(&rule).send().await?.error_for_status()?;
    http.patch(format!("{api}/v1/me"))
        .bearer_auth(token)
        .json(&json!({"max_group_rounds": args.group_rounds}))
        .send()
        .await?
        .error_for_status()?;
    println!(
        "\nGroup rounds: simulator alone takes {} per round ({} moderator + {} reply).\n",
        ms(round_baseline),
        ms(moderator),
        ms(reply_total)
    );
    println!("| groups at once | rounds | round time p50 | p99 | added per round p50 | p99 |");
    println!("|---|---|---|---|---|---|");
    for &level in &args.group_levels {
        let mut groups = Vec::new();
        for index in 0..level {
            let members: Vec<&String> = characters.iter().skip(index * 3).take(3).collect();
            let created: Value = http
                .post(format!("{api}/v1/groups"))
                .bearer_auth(token)
                .json(&json!({"name": format!("bench-{index}"), "character_ids": members}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            groups.push(created["group"]["id"].as_str().context("group id")?.to_owned());
        }
        let tasks: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let (http, api, token) = (http.clone(), api.to_owned(), token.to_owned());
                tokio::spawn(async move { run_group(&http, &api, &token, &group).await })
            })
            .collect();
        let mut rounds = Vec::new();
        for task in tasks {
            rounds.extend(task.await??);
        }
        let added: Vec<Duration> = rounds.iter().map(|r| r.saturating_sub(round_baseline)).collect();
        println!(
            "| {level} | {} | {} | {} | {} | {} |",
            rounds.len(),
            ms(percentile(rounds.clone(), 0.5)),
            ms(percentile(rounds, 0.99)),
            ms(percentile(added.clone(), 0.5)),
            ms(percentile(added, 0.99)),
        );
    }
    Ok(())
}

/// One user message to a group; returns each round's duration.
async fn run_group(http: &reqwest::Client, api: &str, token: &str, group: &str) -> anyhow::Result<Vec<Duration>> {
    let mut last = Instant::now();
    let sent: Value = http
        .post(format!("{api}/v1/groups/{group}/messages"))
        .bearer_auth(token)
        .json(&json!({"content": "诸位怎么看？"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let job = sent["job"]["id"].as_str().context("job id")?;
    let response =
        http.get(format!("{api}/v1/jobs/{job}/events")).bearer_auth(token).send().await?.error_for_status()?;
    let mut events = sse_client::events(response);
    let mut rounds = Vec::new();
    while let Some(event) = events.next().await {
        let event = event?;
        match event.event.as_str() {
            "message" => {
                rounds.push(last.elapsed());
                last = Instant::now();
            }
            "succeeded" => return Ok(rounds),
            "failed" | "cancelled" => bail!("group turn {job} ended {}", event.event),
            _ => {}
        }
    }
    bail!("the stream of {job} ended early")
}

/// The simulator's own timings for one streamed reply: (first token, whole stream).
async fn simulator_baseline(http: &reqwest::Client, sim_url: &str) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let response = http
        .post(format!("{sim_url}/chat/completions"))
        .json(&json!({"model": "sim", "stream": true, "messages": [{"role": "user", "content": "baseline"}]}))
        .send()
        .await?;
    let mut body = response.bytes_stream();
    let mut first = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if first.is_none() && chunk.windows(7).any(|w| w == b"content") {
            first = Some(started.elapsed());
        }
    }
    Ok((first.context("no token from the simulator")?, started.elapsed()))
}

struct Reply {
    first_token: Duration,
    total: Duration,
}

async fn converse(
    http: reqwest::Client,
    api: String,
    token: String,
    character: String,
    messages: usize,
) -> anyhow::Result<Vec<Reply>> {
    let mut replies = Vec::with_capacity(messages);
    for index in 0..messages {
        let started = Instant::now();
        let sent: Value = http
            .post(format!("{api}/v1/characters/{character}/messages"))
            .bearer_auth(&token)
            .json(&json!({"content": format!("第{index}个问题：你怎么看？")}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let job = sent["job"]["id"].as_str().context("job id")?;
        let response =
            http.get(format!("{api}/v1/jobs/{job}/events")).bearer_auth(&token).send().await?.error_for_status()?;
        let mut events = sse_client::events(response);
        let mut first_token = None;
        loop {
            let event = events.next().await.context("the stream ended early")??;
            match event.event.as_str() {
                "token" if first_token.is_none() => first_token = Some(started.elapsed()),
                "succeeded" => break,
                "failed" | "cancelled" => bail!("reply {job} ended {}: {}", event.event, event.data),
                _ => {}
            }
        }
        replies.push(Reply { first_token: first_token.context("no token event")?, total: started.elapsed() });
    }
    Ok(replies)
}

fn percentile(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort_unstable();
    values[(((values.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bin: PathBuf = std::env::current_exe()?.parent().context("binary folder")?.to_owned();
    let data_dir = std::env::temp_dir().join(format!("fastnpc-chatbench-{}", std::process::id()));
    let database_url = if args.embedded {
        "postgres://unused@127.0.0.1:9/none".to_owned()
    } else {
        let admin_url = std::env::var("FASTNPC_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let database = "fastnpc_chatbench";
        let mut admin = PgConnection::connect(&admin_url).await?;
        admin.execute(format!("drop database if exists {database} with (force)").as_str()).await?;
        admin.execute(format!("create database {database}").as_str()).await?;
        format!("{}/{database}", admin_url.rsplit_once('/').context("admin URL")?.0)
    };

    let (sim_port, api_port) = (free_port()?, free_port()?);
    let sim_url = format!("http://127.0.0.1:{sim_port}/v1");
    let api = format!("http://127.0.0.1:{api_port}");
    let env = vec![
        ("DATABASE_URL", database_url.clone()),
        ("FASTNPC_DATA_DIR", data_dir.display().to_string()),
        ("FASTNPC_NAMESPACE", format!("chatbench-{}", std::process::id())),
        ("FASTNPC_HTTP_ADDR", format!("127.0.0.1:{api_port}")),
        ("FASTNPC_LLM_BASE_URL", sim_url.clone()),
        ("FASTNPC_LLM_API_KEY", "bench".into()),
        ("FASTNPC_WORKER_CONCURRENCY", args.worker_concurrency.to_string()),
        ("FASTNPC_DB_POOL_SIZE", "24".into()),
        ("FASTNPC_QUEUE_EXPIRES_SECS", "600".into()),
        // Back-to-back group rounds: the pause is the user's window, not work to measure.
        ("FASTNPC_GROUP_TURN_PAUSE_MS", "0".into()),
        // One benchmark user drives thousands of conversations.
        ("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000000".into()),
        ("FASTNPC_LIMIT_ACTIVE_JOBS", "1000000".into()),
        ("FASTNPC_LIMIT_CHARACTERS", "1000000".into()),
        ("FASTNPC_LIMIT_GROUPS", "1000000".into()),
    ];
    let mut processes = Processes(Vec::new());
    let sim_args = [
        "--addr".to_owned(),
        format!("127.0.0.1:{sim_port}"),
        "--ttft-ms".to_owned(),
        args.ttft_ms.to_string(),
        "--inter-token-ms".to_owned(),
        args.itl_ms.to_string(),
        "--reply-tokens".to_owned(),
        args.tokens.to_string(),
    ];
    let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
    processes.0.push(("llm-sim".into(), spawn(&bin, "llm-sim", &sim_args, &[])?));
    if args.embedded {
        processes.0.push(("api".into(), spawn(&bin, "fastnpc", &["serve"], &env)?));
    } else {
        processes.0.push(("api".into(), spawn(&bin, "fastnpc-api", &[], &env)?));
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(2048).build()?;
    wait_healthy(&http, &format!("{api}/healthz")).await?;
    wait_healthy(&http, &format!("{sim_url}/models")).await?;
    for index in 0..if args.embedded { 0 } else { args.workers } {
        processes.0.push((format!("worker-{index}"), spawn(&bin, "fastnpc-worker", &[], &env)?));
    }

    // One user; one generated character, cloned in the database for the other conversations
    // (generation is not what this benchmark measures).
    let credentials = json!({"username": "bench", "password": "load test secret"});
    http.post(format!("{api}/v1/auth/register")).json(&credentials).send().await?.error_for_status()?;
    let login: Value = http.post(format!("{api}/v1/auth/login")).json(&credentials).send().await?.json().await?;
    let token = login["token"].as_str().context("token")?.to_owned();
    let source = json!({"kind": "text", "text": fastnpc_tests::harness::sample_source("诸葛亮")});
    let created: Value = http
        .post(format!("{api}/v1/characters"))
        .bearer_auth(&token)
        .json(&json!({"name": "诸葛亮", "source": source}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let template = created["character"]["id"].as_str().context("character id")?.to_owned();
    loop {
        let character: Value =
            http.get(format!("{api}/v1/characters/{template}")).bearer_auth(&token).send().await?.json().await?;
        match character["character"]["status"].as_str() {
            Some("ready") => break,
            Some("failed") => bail!("the template character failed"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let needed =
        args.levels.iter().copied().max().unwrap_or(1).max(3 * args.group_levels.iter().copied().max().unwrap_or(0));
    // Valid in both databases; SQLite's columns have no defaults, so every one is copied.
    let clone = "insert into characters (character_id, user_id, name, status, source, profile, brief, created_at,
                                         updated_at)
                 select $1, user_id, name, status, source, profile, brief, created_at, updated_at
                 from characters where character_id = $2";
    let template_id = uuid::Uuid::parse_str(&template)?;
    let mut characters = vec![template.clone()];
    if args.embedded {
        let db = fastnpc_store_sqlite::connect(&data_dir.join(fastnpc::DATABASE_FILE), 1).await?;
        for _ in 1..needed {
            let id = uuid::Uuid::now_v7();
            sqlx::query(clone).bind(id).bind(template_id).execute(&db).await?;
            characters.push(id.to_string());
        }
    } else {
        let mut db = PgConnection::connect(&database_url).await?;
        for _ in 1..needed {
            let id = uuid::Uuid::now_v7();
            sqlx::query(clone).bind(id).bind(template_id).execute(&mut db).await?;
            characters.push(id.to_string());
        }
    }

    let (sim_first, sim_total) = simulator_baseline(&http, &sim_url).await?;
    println!(
        "Simulator alone: first token after {}, whole reply ({} tokens, {} ms apart) after {}.\n",
        ms(sim_first),
        args.tokens,
        args.itl_ms,
        ms(sim_total)
    );
    println!(
        "| conversations | replies | throughput | latency added p50 | p99 | first token added p50 | p99 | API peak RSS | worker peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &level in &args.levels {
        let started = Instant::now();
        let tasks: Vec<_> = characters[..level]
            .iter()
            .map(|character| {
                tokio::spawn(converse(http.clone(), api.clone(), token.clone(), character.clone(), args.messages))
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.extend(task.await??);
        }
        let wall = started.elapsed();
        let added: Vec<Duration> = replies.iter().map(|r| r.total.saturating_sub(sim_total)).collect();
        let first: Vec<Duration> = replies.iter().map(|r| r.first_token.saturating_sub(sim_first)).collect();
        let rss = |prefix: &str| {
            processes
                .0
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .filter_map(|(_, c)| peak_rss_mib(c.id()))
                .fold(0.0, f64::max)
        };
        println!(
            "| {level} | {} | {:.1} replies/s | {} | {} | {} | {} | {:.0} MiB | {} |",
            replies.len(),
            replies.len() as f64 / wall.as_secs_f64(),
            ms(percentile(added.clone(), 0.5)),
            ms(percentile(added, 0.99)),
            ms(percentile(first.clone(), 0.5)),
            ms(percentile(first, 0.99)),
            rss("api"),
            if args.embedded { "(same process)".to_owned() } else { format!("{:.0} MiB", rss("worker")) },
        );
    }
    if !args.group_levels.is_empty() {
        group_rounds(&http, &api, &sim_url, &token, &characters, &args).await?;
    }
    drop(processes);
    if args.embedded {
        let _ = tokio::fs::remove_dir_all(&data_dir).await;
    } else {
        let admin_url = database_url.rsplit_once('/').context("database URL")?.0.to_owned() + "/postgres";
        let mut admin = PgConnection::connect(&admin_url).await?;
        admin.execute("drop database if exists fastnpc_chatbench with (force)").await?;
    }
    Ok(())
}
