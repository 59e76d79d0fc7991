//! `chatbench`: the chat benchmark. Not a test: it measures and prints.
//!
//! Unlike `loadgen`, it runs the system as it is deployed: the `fastnpc-api`, `fastnpc-worker`
//! and `llm-sim` release binaries as separate processes (so their peak memory can be read from
//! `/proc`), over the real PostgreSQL, RabbitMQ and Redis. For each concurrency level it runs
//! that many conversations at once (one character each), each sending `--messages` messages one
//! after another and following every reply over SSE:
//!
//! Before each level it streams the same number of replies from the simulator directly, all at
//! once, so the baseline is the simulator's own time *at that concurrency on this machine in this
//! run* (its CPU share included); then:
//!
//! - *time to first token added*: client-observed first `token` event − the simulator's own p50
//!   time to first token at the level's concurrency;
//! - *latency added*: client-observed `succeeded` − the simulator's own p50 full-stream time;
//! - *ratio*: the replies' p50 over the simulator's p50 (1.00 = FastNPC costs nothing visible);
//! - *throughput*: replies completed per second of the level's wall time;
//! - *commits per reply* (distributed mode): PostgreSQL transactions committed in the benchmark's
//!   database and WAL flushes of the server during the level, divided by its replies, then the
//!   deadlocks the database broke during the level (it should be 0);
//! - *peak memory*: `VmHWM` of the API and of the largest worker after the level.
//! - *CPU per reply*: each process's CPU time during the level (`/proc/<pid>/stat`) over its
//!   replies: the API, the workers, the simulator, this client and the services. It moves less
//!   with the machine's speed than the latencies do, so it shows a change in cost directly.
//!
//! First, unless `--character-burst 0`, a burst of character generations: that many
//! `POST /v1/characters` at once, each followed to `succeeded`; the accept time, the end-to-end
//! time and its ratio to one LLM call as the simulator serves it with the burst's ten calls per
//! character at once.
//!
//! The default stream is what a hosted model does: 1 s to the first token, then 50 tokens 20 ms
//! apart, one token per chunk.
//!
//! ```text
//! cargo build --release -p fastnpc -p fastnpc-api -p fastnpc-worker -p fastnpc-tests -p fastnpc-llm-sim --bins
//! target/release/chatbench [--levels 1,10,100,1000] [--messages 3] [--ttft-ms 1000] [--itl-ms 20]
//!     [--tokens 50] [--workers 2] [--worker-concurrency 512] [--embedded true] [--commits true]
//!     [--character-burst 100] [--group-levels 1,10] [--group-rounds 5] [--users 1]
//!     [--stream-in-post true]
//! ```
//!
//! Each reply is followed in its `POST`'s own answer (`Accept: text/event-stream`), one request
//! per message as a chat client that wants speed sends it; `--stream-in-post false` follows it
//! the older way, a `202` and then `GET /v1/jobs/{id}/events` (a second request, session check,
//! job read and log read per reply).
//!
//! `--users N` spreads the conversations over N users (conversation i is user i mod N's): one
//! user's simultaneous submissions take turns at that user's quota lock, which keeps the per-user
//! caps exact; many users' do not wait for each other.
//!
//! `--embedded true` runs the embedded mode instead: one `fastnpc serve` process over SQLite (API
//! and workers together, so there is one peak memory), no services. That process gets the job
//! and LLM-call budgets of the `--workers` it stands in for (2 × 512 jobs, 2 × 640 calls by
//! default), so both modes meet the same limits at 1,000 conversations.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fastnpc_tests::deployment::{
    Deployment, Memory, Options, PgCounters, follow_events, follow_job, ms, percentile, simulator_stream,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

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
    commits: bool,
    character_burst: usize,
    users: usize,
    stream_in_post: bool,
}

/// The parts of [`Deployment::cpu_seconds`], in the order printed (the embedded mode has no
/// `worker`: its one process is `api`).
const CPU_PARTS: [&str; 7] = ["api", "worker", "llm-sim", "client", "postgres", "redis", "rabbitmq"];

/// One level's row of the CPU table: each part's CPU time between the two snapshots per reply,
/// their total, and how many cores that kept busy over the level's wall time.
fn cpu_row(
    level: usize,
    before: &BTreeMap<&str, f64>,
    after: &BTreeMap<&str, f64>,
    replies: usize,
    wall: Duration,
) -> String {
    let spent = |part: &str| after.get(part).zip(before.get(part)).map(|(a, b)| (a - b).max(0.0));
    let per_reply = |seconds: f64| format!("{:.2}", seconds * 1000.0 / replies as f64);
    let cells: Vec<String> =
        CPU_PARTS.iter().map(|part| spent(part).map_or_else(|| "—".to_owned(), per_reply)).collect();
    let total: f64 = CPU_PARTS.iter().filter_map(|part| spent(part)).sum();
    format!("| {level} | {} | {} | {:.2} |", cells.join(" | "), per_reply(total), total / wall.as_secs_f64())
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        levels: vec![1, 10, 100, 1000],
        messages: 3,
        ttft_ms: 1000,
        itl_ms: 20,
        tokens: 50,
        workers: 2,
        worker_concurrency: 512,
        group_levels: vec![1, 10],
        group_rounds: 5,
        embedded: false,
        commits: true,
        character_burst: 100,
        users: 1,
        stream_in_post: true,
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
            "--group-levels" => {
                args.group_levels =
                    value.split(',').filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>()?
            }
            "--group-rounds" => args.group_rounds = value.parse()?,
            "--embedded" => args.embedded = value.parse()?,
            "--commits" => args.commits = value.parse()?,
            "--character-burst" => args.character_burst = value.parse()?,
            "--users" => args.users = value.parse()?,
            "--stream-in-post" => args.stream_in_post = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if args.users == 0 || (args.users > 1 && !args.group_levels.is_empty()) {
        bail!("--users must be at least 1, and group rounds (a group's members are one user's) need --users 1");
    }
    Ok(args)
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

/// A burst of character generations: `count` `POST /v1/characters` at once, each followed over
/// SSE to `succeeded`. The baseline is the simulator's own time for one structured call with
/// `count × 10` of them at once (what the burst asks of it: nine categories and the brief each).
async fn character_burst(
    http: &reqwest::Client,
    api: &str,
    sim_url: &str,
    token: &str,
    count: usize,
    database_url: Option<&str>,
) -> anyhow::Result<()> {
    let calls: Vec<_> = (0..count * 10)
        .map(|_| {
            let (http, sim_url) = (http.clone(), sim_url.to_owned());
            tokio::spawn(async move { simulator_json_baseline(&http, &sim_url).await })
        })
        .collect();
    let mut call_times = Vec::with_capacity(calls.len());
    for call in calls {
        call_times.push(call.await??);
    }
    let one_call = percentile(call_times, 0.5);
    let before = match database_url {
        Some(url) => Some(PgCounters::read(url).await?),
        None => None,
    };
    let tasks: Vec<_> = (0..count)
        .map(|index| {
            let (http, api, token) = (http.clone(), api.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let started = Instant::now();
                let name = format!("诸葛亮{index}");
                let source = json!({"kind": "text", "text": fastnpc_tests::harness::sample_source(&name)});
                let created: Value = http
                    .post(format!("{api}/v1/characters"))
                    .bearer_auth(&token)
                    .json(&json!({"name": name, "source": source}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let accepted = started.elapsed();
                let job = created["job"]["id"].as_str().context("job id")?;
                follow_job(&http, &api, &token, job, |_| {}).await?;
                anyhow::Ok((accepted, started.elapsed()))
            })
        })
        .collect();
    let (mut accepted, mut finished) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for task in tasks {
        let (accept, finish) = task.await??;
        accepted.push(accept);
        finished.push(finish);
    }
    let commits = match (database_url, before) {
        (Some(url), Some(before)) => PgCounters::read(url).await?.since(&before, count),
        _ => "—".to_owned(),
    };
    let end_to_end = percentile(finished.clone(), 0.5);
    println!(
        "| characters at once | simulator alone, one call p50 | accepted (202) p50 | p99 | end to end p50 | p99 | end to end p50 / one call | commits / WAL flushes per character; deadlocks |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {count} | {} | {} | {} | {} | {} | {:.2} | {commits} |\n",
        ms(one_call),
        ms(percentile(accepted.clone(), 0.5)),
        ms(percentile(accepted, 0.99)),
        ms(end_to_end),
        ms(percentile(finished, 0.99)),
        end_to_end.as_secs_f64() / one_call.as_secs_f64(),
    );
    Ok(())
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
    let mut rounds = Vec::new();
    follow_job(http, api, token, job, |event| {
        if event.event == "message" {
            rounds.push(last.elapsed());
            last = Instant::now();
        }
    })
    .await?;
    Ok(rounds)
}

async fn user_id(http: &reqwest::Client, api: &str, token: &str) -> anyhow::Result<uuid::Uuid> {
    let me: Value =
        http.get(format!("{api}/v1/me")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    Ok(me["user"]["id"].as_str().context("user id")?.parse()?)
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

/// The simulator's own timings with `level` streamed replies at once, called directly (no
/// FastNPC): the p50 of (first token, whole stream). This is the baseline at the level's
/// concurrency, the simulator's share of the machine included.
async fn simulator_level_baseline(
    http: &reqwest::Client,
    sim_url: &str,
    level: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let streams: Vec<_> = (0..level)
        .map(|_| {
            let (http, sim_url) = (http.clone(), sim_url.to_owned());
            tokio::spawn(async move { simulator_baseline(&http, &sim_url).await })
        })
        .collect();
    let (mut firsts, mut totals) = (Vec::with_capacity(level), Vec::with_capacity(level));
    for stream in streams {
        let (first, total) = stream.await??;
        firsts.push(first);
        totals.push(total);
    }
    Ok((percentile(firsts, 0.5), percentile(totals, 0.5)))
}

struct Reply {
    /// `POST …/messages` answered.
    accepted: Duration,
    /// The job's `running` status event: a worker claimed it.
    running: Duration,
    first_token: Duration,
    total: Duration,
}

/// One conversation of a level: one user's chat with one character.
struct Conversation {
    http: reqwest::Client,
    api: String,
    token: String,
    character: String,
    /// Follow each reply in its `POST`'s answer (`Accept: text/event-stream`), or with a second
    /// request (`GET /v1/jobs/{id}/events`) after the `202`.
    stream_in_post: bool,
}

impl Conversation {
    /// Sends `messages` messages one after another, each when the reply before it has ended.
    async fn run(self, messages: usize) -> anyhow::Result<Vec<Reply>> {
        let mut replies = Vec::with_capacity(messages);
        for index in 0..messages {
            let started = Instant::now();
            let (mut first_token, mut running) = (None, None);
            let on_event = |event: &fastnpc_tests::sse_client::SseEvent| match event.event.as_str() {
                "status" if running.is_none() && event.data["status"] == "running" => running = Some(started.elapsed()),
                "token" if first_token.is_none() => first_token = Some(started.elapsed()),
                _ => {}
            };
            let post = self
                .http
                .post(format!("{}/v1/characters/{}/messages", self.api, self.character))
                .bearer_auth(&self.token)
                .json(&json!({"content": format!("第{index}个问题：你怎么看？")}));
            let accepted = if self.stream_in_post {
                let response = post.header("accept", "text/event-stream").send().await?.error_for_status()?;
                let accepted = started.elapsed();
                let job = response.headers().get("location").context("Location")?.to_str()?.to_owned();
                follow_events(response, &job, on_event).await?;
                accepted
            } else {
                let sent: Value = post.send().await?.error_for_status()?.json().await?;
                let accepted = started.elapsed();
                let job = sent["job"]["id"].as_str().context("job id")?;
                follow_job(&self.http, &self.api, &self.token, job, on_event).await?;
                accepted
            };
            replies.push(Reply {
                accepted,
                running: running.context("no running status event")?,
                first_token: first_token.context("no token event")?,
                total: started.elapsed(),
            });
        }
        Ok(replies)
    }
}

/// Each worker's `FASTNPC_LLM_CONCURRENCY` when it is not set (the settings' default).
const FLEET_LLM_CONCURRENCY: usize = 640;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut env = vec![
        ("FASTNPC_DB_POOL_SIZE", "24".into()),
        // Back-to-back group rounds: the pause is the user's window, not work to measure.
        ("FASTNPC_GROUP_TURN_PAUSE_MS", "0".into()),
    ];
    // The embedded process gets the budgets of the whole distributed fleet it is compared with
    // (jobs in flight, LLM calls at once), so a level is held back by the same limits in both.
    let worker_concurrency = if args.embedded {
        let fleet = args.worker_concurrency * args.workers as u64;
        env.push(("FASTNPC_LLM_CONCURRENCY", (FLEET_LLM_CONCURRENCY * args.workers).to_string()));
        fleet
    } else {
        args.worker_concurrency
    };
    let deployment = Deployment::start(Options {
        embedded: args.embedded,
        workers: args.workers,
        worker_concurrency,
        simulator_args: simulator_stream(args.ttft_ms, args.itl_ms, args.tokens),
        name: "chatbench",
        env,
    })
    .await?;
    let (http, api, sim_url) = (&deployment.http, deployment.api.as_str(), deployment.simulator.as_str());

    // One user; one generated character, cloned in the database for the other conversations
    // (generation is not what this benchmark measures).
    let token = deployment.user("bench").await?;
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
    // Conversation i belongs to user i mod --users (each user has their own quota lock).
    let mut owners = vec![(token.clone(), user_id(http, api, &token).await?)];
    for index in 1..args.users {
        let token = deployment.user(&format!("bench{index}")).await?;
        owners.push((token.clone(), user_id(http, api, &token).await?));
    }
    // Valid in both databases; SQLite's columns have no defaults, so every one is copied.
    let clone = "insert into characters (character_id, user_id, name, status, source, profile, brief, created_at,
                                         updated_at)
                 select $1, $3, name, status, source, profile, brief, created_at, updated_at
                 from characters where character_id = $2";
    let template_id = uuid::Uuid::parse_str(&template)?;
    let mut characters = vec![template.clone()];
    let ids: Vec<(uuid::Uuid, uuid::Uuid)> =
        (1..needed).map(|index| (uuid::Uuid::now_v7(), owners[index % owners.len()].1)).collect();
    if let Some(database_url) = &deployment.database_url {
        let mut db = PgConnection::connect(database_url).await?;
        for (id, owner) in &ids {
            sqlx::query(clone).bind(id).bind(template_id).bind(owner).execute(&mut db).await?;
        }
    } else {
        let db = fastnpc_store_sqlite::connect(&deployment.data_dir.join(fastnpc::DATABASE_FILE), 1).await?;
        for (id, owner) in &ids {
            sqlx::query(clone).bind(id).bind(template_id).bind(owner).execute(&db).await?;
        }
    }
    characters.extend(ids.iter().map(|(id, _)| id.to_string()));

    if args.character_burst > 0 {
        println!(
            "Character generation, a burst (1 s to the first token, then {} tokens {} ms apart per call):\n",
            args.tokens, args.itl_ms
        );
        let database_url = deployment.database_url.as_deref().filter(|_| args.commits);
        character_burst(http, api, sim_url, &token, args.character_burst, database_url).await?;
    }
    let (sim_first, sim_total) = simulator_baseline(http, sim_url).await?;
    println!(
        "Simulator alone, one reply: first token after {}, whole reply ({} tokens, {} ms apart) after {}.\n",
        ms(sim_first),
        args.tokens,
        args.itl_ms,
        ms(sim_total)
    );
    let count_commits = deployment.database_url.as_ref().filter(|_| args.commits);
    println!(
        "| conversations | replies | simulator alone p50 (first token / whole) | reply p50 | ratio | throughput | latency added p50 | p99 | first token added p50 | p99 | commits / WAL flushes per reply; deadlocks | API peak RSS | worker peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut breakdown = Vec::new();
    let mut cpu_rows = Vec::new();
    for &level in &args.levels {
        let (sim_first, sim_total) = simulator_level_baseline(http, sim_url, level).await?;
        let before = match count_commits {
            Some(url) => Some((url, PgCounters::read(url).await?)),
            None => None,
        };
        let cpu_before = deployment.cpu_seconds();
        let started = Instant::now();
        let tasks: Vec<_> = characters[..level]
            .iter()
            .enumerate()
            .map(|(index, character)| {
                let token = owners[index % owners.len()].0.clone();
                let conversation = Conversation {
                    http: http.clone(),
                    api: api.to_owned(),
                    token,
                    character: character.clone(),
                    stream_in_post: args.stream_in_post,
                };
                tokio::spawn(conversation.run(args.messages))
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.extend(task.await??);
        }
        let wall = started.elapsed();
        cpu_rows.push(cpu_row(level, &cpu_before, &deployment.cpu_seconds(), replies.len(), wall));
        let commits = match before {
            Some((url, before)) => PgCounters::read(url).await?.since(&before, replies.len()),
            None => "—".to_owned(),
        };
        let totals: Vec<Duration> = replies.iter().map(|r| r.total).collect();
        let added: Vec<Duration> = totals.iter().map(|t| t.saturating_sub(sim_total)).collect();
        let first: Vec<Duration> = replies.iter().map(|r| r.first_token.saturating_sub(sim_first)).collect();
        let rss = |prefix: &str| deployment.memory_mib(prefix, Memory::Peak);
        let reply_p50 = percentile(totals, 0.5);
        let p = |pick: fn(&Reply) -> Duration, q: f64| ms(percentile(replies.iter().map(pick).collect(), q));
        breakdown.push(format!(
            "| {level} | {} / {} | {} / {} | {} / {} |",
            p(|r| r.accepted, 0.5),
            p(|r| r.accepted, 0.99),
            p(|r| r.running, 0.5),
            p(|r| r.running, 0.99),
            p(|r| r.first_token, 0.5),
            p(|r| r.first_token, 0.99),
        ));
        println!(
            "| {level} | {} | {} / {} | {} | {:.2} | {:.1} replies/s | {} | {} | {} | {} | {commits} | {:.0} MiB | {} |",
            replies.len(),
            ms(sim_first),
            ms(sim_total),
            ms(reply_p50),
            reply_p50.as_secs_f64() / sim_total.as_secs_f64(),
            replies.len() as f64 / wall.as_secs_f64(),
            ms(percentile(added.clone(), 0.5)),
            ms(percentile(added, 0.99)),
            ms(percentile(first.clone(), 0.5)),
            ms(percentile(first, 0.99)),
            rss("api"),
            if args.embedded { "(same process)".to_owned() } else { format!("{:.0} MiB", rss("worker")) },
        );
    }
    println!("\nWhere a reply's time goes, from its POST (p50 / p99):\n");
    println!("| conversations | answered (202) | claimed (`running` event) | first token |");
    println!("|---|---|---|---|");
    for row in breakdown {
        println!("{row}");
    }
    println!(
        "\nCPU time per reply, by part (ms of one core; the services count whatever else runs on this machine too):\n"
    );
    println!("| conversations | {} | total | cores busy |", CPU_PARTS.join(" | "));
    println!("|---|{}---|---|", "---|".repeat(CPU_PARTS.len()));
    for row in cpu_rows {
        println!("{row}");
    }
    if !args.group_levels.is_empty() {
        group_rounds(http, api, sim_url, &token, &characters, &args).await?;
    }
    deployment.stop().await?;
    Ok(())
}
