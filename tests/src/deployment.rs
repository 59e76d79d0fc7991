//! FastNPC as it is deployed, for the benchmarks that measure it from outside: the release
//! binaries (`fastnpc-api`, `fastnpc-worker`, `llm-sim`, or `fastnpc serve` for the embedded
//! mode) started as separate processes over the real services, with the benchmark as a client in
//! its own process. Separate processes so that each one's memory can be read from `/proc` and
//! the client's CPU is not the server's.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

/// How to start the system.
pub struct Options {
    /// `fastnpc serve` over SQLite instead of the API, the workers and the services.
    pub embedded: bool,
    /// Worker processes (distributed mode).
    pub workers: usize,
    /// `FASTNPC_WORKER_CONCURRENCY` of each worker.
    pub worker_concurrency: u64,
    /// The simulator's flags (`--ttft-ms`, …), after its address.
    pub simulator_args: Vec<String>,
    /// A name for the database, the data folder and the namespace.
    pub name: &'static str,
    /// More environment for the API and the workers.
    pub env: Vec<(&'static str, String)>,
}

/// The simulator's flags for a stream of `tokens` tokens, the first after `ttft_ms`, then one
/// every `itl_ms` (one token per chunk, its default).
pub fn simulator_stream(ttft_ms: u64, itl_ms: u64, tokens: u64) -> Vec<String> {
    ["--ttft-ms", &ttft_ms.to_string(), "--inter-token-ms", &itl_ms.to_string(), "--reply-tokens", &tokens.to_string()]
        .map(str::to_owned)
        .to_vec()
}

/// The running system; its processes are stopped (SIGTERM, then kill) and its database dropped
/// when it is [`stop`](Deployment::stop)ped or dropped.
pub struct Deployment {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:<port>`.
    pub api: String,
    /// The simulator's OpenAI base URL (`…/v1`).
    pub simulator: String,
    /// The benchmark's own PostgreSQL database (distributed mode).
    pub database_url: Option<String>,
    /// The embedded mode's data folder.
    pub data_dir: PathBuf,
    pub namespace: String,
    processes: Vec<(String, Child)>,
}

impl Deployment {
    /// Starts the simulator, then the API (or `fastnpc serve`), then the workers; returns once
    /// the API and the simulator answer.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let bin: PathBuf = std::env::current_exe()?.parent().context("binary folder")?.to_owned();
        let pid = std::process::id();
        let data_dir = std::env::temp_dir().join(format!("fastnpc-{}-{pid}", options.name));
        let database_url = if options.embedded { None } else { Some(fresh_database(options.name).await?) };
        let (sim_port, api_port) = (free_port()?, free_port()?);
        let simulator = format!("http://127.0.0.1:{sim_port}/v1");
        let api = format!("http://127.0.0.1:{api_port}");
        let namespace = format!("{}-{pid}", options.name);
        let mut env = vec![
            ("DATABASE_URL", database_url.clone().unwrap_or_else(|| "postgres://unused@127.0.0.1:9/none".into())),
            ("FASTNPC_DATA_DIR", data_dir.display().to_string()),
            ("FASTNPC_NAMESPACE", namespace.clone()),
            ("FASTNPC_HTTP_ADDR", format!("127.0.0.1:{api_port}")),
            ("FASTNPC_LLM_BASE_URL", simulator.clone()),
            ("FASTNPC_LLM_API_KEY", "bench".into()),
            ("FASTNPC_WORKER_CONCURRENCY", options.worker_concurrency.to_string()),
            ("FASTNPC_QUEUE_EXPIRES_SECS", "600".into()),
            // One benchmark user drives thousands of jobs.
            ("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000000".into()),
            ("FASTNPC_LIMIT_ACTIVE_JOBS", "1000000".into()),
            ("FASTNPC_LIMIT_CHARACTERS", "1000000".into()),
            ("FASTNPC_LIMIT_GROUPS", "1000000".into()),
        ];
        env.extend(options.env);
        let mut deployment = Self {
            http: reqwest::Client::builder().pool_max_idle_per_host(4096).build()?,
            api,
            simulator,
            database_url,
            data_dir,
            namespace,
            processes: Vec::new(),
        };
        let mut sim_args = vec!["--addr".to_owned(), format!("127.0.0.1:{sim_port}")];
        sim_args.extend(options.simulator_args);
        let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
        deployment.processes.push(("llm-sim".into(), spawn(&bin, "llm-sim", &sim_args, &[])?));
        let api_process = if options.embedded {
            spawn(&bin, "fastnpc", &["serve"], &env)?
        } else {
            spawn(&bin, "fastnpc-api", &[], &env)?
        };
        deployment.processes.push(("api".into(), api_process));
        deployment.wait_healthy(&format!("{}/healthz", deployment.api)).await?;
        deployment.wait_healthy(&format!("{}/models", deployment.simulator)).await?;
        for index in 0..if options.embedded { 0 } else { options.workers } {
            deployment.processes.push((format!("worker-{index}"), spawn(&bin, "fastnpc-worker", &[], &env)?));
        }
        Ok(deployment)
    }

    async fn wait_healthy(&self, url: &str) -> anyhow::Result<()> {
        for _ in 0..300 {
            if self.http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{url} did not come up")
    }

    /// Registers a user and logs in; returns the session token.
    pub async fn user(&self, username: &str) -> anyhow::Result<String> {
        let credentials = json!({"username": username, "password": "load test secret"});
        self.http.post(format!("{}/v1/auth/register", self.api)).json(&credentials).send().await?.error_for_status()?;
        let login: Value =
            self.http.post(format!("{}/v1/auth/login", self.api)).json(&credentials).send().await?.json().await?;
        Ok(login["token"].as_str().context("token")?.to_owned())
    }

    /// The largest of a memory figure of the processes whose name starts with `prefix` (`api`,
    /// `worker`), in MiB: `VmRSS` (now) or `VmHWM` (peak).
    pub fn memory_mib(&self, prefix: &str, figure: Memory) -> f64 {
        self.processes
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .filter_map(|(_, child)| status_mib(child.id(), figure.field()))
            .fold(0.0, f64::max)
    }

    /// CPU time used so far, in seconds, by each part of the running system: the deployment's
    /// own processes (`llm-sim`, `api`, `worker`: the workers summed), this client process
    /// (`client`) and the services on this machine (`postgres`, `redis`, `rabbitmq`: every
    /// process of each, whoever else uses them). The difference of two snapshots is where a
    /// measured stretch spent the machine's cores, which stays comparable when the machine's
    /// speed does not.
    pub fn cpu_seconds(&self) -> BTreeMap<&'static str, f64> {
        let mut spent = BTreeMap::new();
        for (name, child) in &self.processes {
            let part = match name.as_str() {
                "llm-sim" => "llm-sim",
                "api" => "api",
                _ => "worker",
            };
            *spent.entry(part).or_default() += process_cpu_seconds(&child.id().to_string()).unwrap_or(0.0);
        }
        spent.insert("client", process_cpu_seconds("self").unwrap_or(0.0));
        for service in ["postgres", "redis", "rabbitmq"] {
            spent.insert(service, 0.0);
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else { continue };
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
            let service = match comm.trim_end() {
                "postgres" => "postgres",
                "redis-server" => "redis",
                "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => "rabbitmq",
                _ => continue,
            };
            *spent.entry(service).or_default() += process_cpu_seconds(pid).unwrap_or(0.0);
        }
        spent
    }

    /// Stops the processes and drops the database or the data folder.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.processes);
        if let Some(url) = self.database_url.take() {
            drop_database(&url).await?;
        } else {
            let _ = tokio::fs::remove_dir_all(&self.data_dir).await;
        }
        Ok(())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        terminate(&mut self.processes);
    }
}

/// A `/proc/<pid>/status` memory figure.
#[derive(Clone, Copy, Debug)]
pub enum Memory {
    Resident,
    Peak,
}

impl Memory {
    fn field(self) -> &'static str {
        match self {
            Self::Resident => "VmRSS:",
            Self::Peak => "VmHWM:",
        }
    }
}

/// Linux reports CPU times in `/proc` in units of `USER_HZ`, which is 100 on every
/// architecture this runs on (it is part of the kernel's ABI, unlike `HZ`).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of process `pid` (all its threads), in seconds.
fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn terminate(processes: &mut Vec<(String, Child)>) {
    for (_, child) in processes.iter_mut() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    for (_, child) in processes.iter_mut() {
        for _ in 0..50 {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    processes.clear();
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
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

fn admin_url() -> String {
    std::env::var("FASTNPC_TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A new, empty database named after the benchmark; returns its URL.
async fn fresh_database(name: &str) -> anyhow::Result<String> {
    let admin_url = admin_url();
    let database = format!("fastnpc_{name}");
    let mut admin = PgConnection::connect(&admin_url).await?;
    admin.execute(format!("drop database if exists {database} with (force)").as_str()).await?;
    admin.execute(format!("create database {database}").as_str()).await?;
    Ok(format!("{}/{database}", admin_url.rsplit_once('/').context("admin URL")?.0))
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    let (server, database) = url.rsplit_once('/').context("database URL")?;
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    admin.execute(format!("drop database if exists {database} with (force)").as_str()).await?;
    Ok(())
}

/// PostgreSQL's counters a benchmark reads before and after a level: the commits and
/// deadlocks in the benchmark's database, and the server's WAL flushes.
#[derive(Clone, Copy, Debug)]
pub struct PgCounters {
    commits: i64,
    wal_flushes: i64,
    deadlocks: i64,
}

impl PgCounters {
    /// The counters of `database_url`'s database now. Backends report their counts when idle, at
    /// most every 10 s (`PGSTAT_IDLE_INTERVAL`): the wait lets every count in.
    pub async fn read(database_url: &str) -> anyhow::Result<Self> {
        tokio::time::sleep(Duration::from_secs(11)).await;
        let mut db = PgConnection::connect(database_url).await?;
        let (commits, wal_flushes, deadlocks) = sqlx::query_as(
            "select xact_commit, (select wal_sync from pg_stat_wal), deadlocks
             from pg_stat_database where datname = current_database()",
        )
        .fetch_one(&mut db)
        .await?;
        Ok(Self { commits, wal_flushes, deadlocks })
    }

    /// What happened since `before`: commits and WAL flushes per unit (a character, a reply),
    /// then the deadlocks (any is a bug: each stalls its statements for `deadlock_timeout`).
    pub fn since(&self, before: &Self, units: usize) -> String {
        let per_unit = |n: i64| n as f64 / units as f64;
        format!(
            "{:.1} / {:.1}; {}",
            per_unit(self.commits - before.commits),
            per_unit(self.wal_flushes - before.wal_flushes),
            self.deadlocks - before.deadlocks
        )
    }
}

/// The `q` quantile of `values` (nearest rank).
pub fn percentile(mut values: Vec<Duration>, q: f64) -> Duration {
    values.sort_unstable();
    values[(((values.len() - 1) as f64) * q).round() as usize]
}

/// A duration as whole milliseconds.
pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Follows job `job`'s SSE stream to its terminal event, showing `on_event` every event on the
/// way; the `succeeded` event's data, or an error naming how the job ended otherwise.
pub async fn follow_job(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    job: &str,
    on_event: impl FnMut(&crate::sse_client::SseEvent),
) -> anyhow::Result<Value> {
    let response =
        http.get(format!("{api}/v1/jobs/{job}/events")).bearer_auth(token).send().await?.error_for_status()?;
    follow_events(response, job, on_event).await
}

/// Reads a job's event stream (a `GET …/events` answer, or a `POST` that asked for the stream)
/// until the job ends; returns the `succeeded` event's data, and fails on any other ending.
pub async fn follow_events(
    response: reqwest::Response,
    job: &str,
    mut on_event: impl FnMut(&crate::sse_client::SseEvent),
) -> anyhow::Result<Value> {
    use futures::StreamExt as _;
    let mut events = crate::sse_client::events(response);
    while let Some(event) = events.next().await {
        let event = event?;
        on_event(&event);
        match event.event.as_str() {
            "succeeded" => return Ok(event.data),
            "failed" | "cancelled" => bail!("job {job} ended {}: {}", event.event, event.data),
            _ => {}
        }
    }
    bail!("the stream of job {job} ended before the job did")
}
