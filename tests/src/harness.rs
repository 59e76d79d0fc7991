//! The end-to-end harness: a whole FastNPC (API, workers, LLM simulator) in this process, in
//! either mode — a backend matrix. `FASTNPC_TEST_BACKEND=distributed` (the default) runs it over
//! the real Postgres, RabbitMQ and Redis; `FASTNPC_TEST_BACKEND=embedded` runs `fastnpc serve`'s
//! system over a SQLite file, with every service URL pointing at a closed port. Tests see one
//! API either way; [`TestDb`] lets them look into whichever database it is.
//!
//! Each [`TestApp`] isolates itself so tests run in parallel: its own database (created and
//! migrated per app, dropped on [`TestApp::stop`]), its own namespace for queue names and Redis
//! keys, and its own simulator on an ephemeral port. Queues of a test namespace expire when unused,
//! and databases of dead test processes are dropped at the next start, so crashed runs leave
//! nothing behind for long.

use std::{collections::HashMap, sync::Arc, time::Duration};

use fastnpc_shared::{queue::Topology, settings::Settings};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    sim::{LlmSimulator, SimConfig},
    sse_client::{self, SseEvent},
};

/// Where the real services are. Overridable so the suite can run against other hosts.
fn service_url(variable: &str, default: &str) -> String {
    std::env::var(variable).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

fn admin_url() -> String {
    service_url("FASTNPC_TEST_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
}

const DB_PREFIX: &str = "fastnpc_t_";

/// Which mode a [`TestApp`] runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// API and workers over Postgres, RabbitMQ and Redis.
    Distributed,
    /// `fastnpc serve`: SQLite and in-process queue and events; no services.
    Embedded,
}

impl Backend {
    /// From `FASTNPC_TEST_BACKEND` (`distributed` when unset).
    pub fn from_env() -> Self {
        match std::env::var("FASTNPC_TEST_BACKEND").as_deref() {
            Ok("embedded") => Self::Embedded,
            Ok("distributed") | Ok("") | Err(_) => Self::Distributed,
            Ok(other) => panic!("FASTNPC_TEST_BACKEND must be `distributed` or `embedded`, not `{other}`"),
        }
    }
}

/// A URL nothing listens on: the embedded backend is given these for every service, so a test
/// passing there proves the mode needs none.
const CLOSED: &str = "127.0.0.1:9";

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    backend: Backend,
    workers: usize,
    worker_concurrency: u16,
    sim: SimConfig,
    env: HashMap<String, String>,
}

impl TestAppBuilder {
    /// Overrides `FASTNPC_TEST_BACKEND` (for tests about one mode).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Worker processes (each its own consumer) to run in-process.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn worker_concurrency(mut self, concurrency: u16) -> Self {
        self.worker_concurrency = concurrency;
        self
    }

    pub fn sim(mut self, config: SimConfig) -> Self {
        self.sim = config;
        self
    }

    /// Overrides one setting (an environment variable name, as operators would set it).
    pub fn setting(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_logging();
        let sim = LlmSimulator::start(self.sim.clone()).await.expect("the simulator starts");
        let unique = format!("{}_{}", std::process::id(), uuid::Uuid::now_v7().simple());
        match self.backend {
            Backend::Distributed => self.spawn_distributed(sim, unique).await,
            Backend::Embedded => self.spawn_embedded(sim, unique).await,
        }
    }

    /// The settings every test app starts from, whatever its mode.
    fn common_env(&self, sim: &LlmSimulator, unique: &str) -> HashMap<String, String> {
        [
            ("FASTNPC_NAMESPACE", format!("test-{unique}")),
            ("FASTNPC_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("FASTNPC_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("FASTNPC_LLM_BASE_URL", sim.base_url()),
            ("FASTNPC_LLM_API_KEY", "test-key".to_owned()),
            ("FASTNPC_LLM_MODEL", "sim-model".to_owned()),
            // No test reaches the internet: the encyclopedias are the source fixtures' server
            // (`source_fixtures`) for the tests that use them, and a closed port for the rest.
            ("FASTNPC_WIKIPEDIA_API_URL", format!("http://{CLOSED}/{{lang}}/w/api.php")),
            ("FASTNPC_BAIKE_URL", format!("http://{CLOSED}")),
            ("FASTNPC_LLM_TIMEOUT_SECS", "10".to_owned()),
            ("FASTNPC_WORKER_CONCURRENCY", self.worker_concurrency.to_string()),
            ("FASTNPC_DB_POOL_SIZE", "8".to_owned()),
            ("FASTNPC_QUEUE_EXPIRES_SECS", "600".to_owned()),
            // Tests drive many jobs quickly from one user; the limits have their own test.
            ("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "100000".to_owned()),
            ("FASTNPC_LIMIT_ACTIVE_JOBS", "10000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    async fn spawn_embedded(self, sim: LlmSimulator, unique: String) -> TestApp {
        let data_dir = std::env::temp_dir().join(format!("fastnpc-test-{unique}"));
        let mut env = self.common_env(&sim, &unique);
        env.extend([
            ("FASTNPC_DATA_DIR".to_owned(), data_dir.display().to_string()),
            ("DATABASE_URL".to_owned(), format!("postgres://nobody@{CLOSED}/none")),
            ("FASTNPC_AMQP_URL".to_owned(), format!("amqp://guest:guest@{CLOSED}/%2f")),
            ("FASTNPC_REDIS_URL".to_owned(), format!("redis://{CLOSED}")),
        ]);
        env.extend(self.env);
        let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("test settings are valid");
        let system = fastnpc::Embedded::build_with_workers(settings.clone(), self.workers)
            .await
            .expect("the embedded system starts");
        let api_url = format!("http://{}", system.local_addr());
        let metrics_urls =
            system.metrics_addr().map(|address| format!("http://{address}/metrics")).into_iter().collect();
        let stop = CancellationToken::new();
        let tasks = vec![tokio::spawn({
            let stop = stop.clone();
            async move {
                system.run_until(async move { stop.cancelled().await }).await.expect("the embedded system runs");
            }
        })];
        // The harness's own connections, as it has its own Postgres pool in the other mode.
        let database = data_dir.join(fastnpc::DATABASE_FILE);
        let store = fastnpc_store_sqlite::SqliteStore::open(&database, 2).await.expect("the test database opens");
        TestApp {
            api_url,
            http: reqwest::Client::new(),
            sim,
            db: TestDb::Sqlite(store.pool().clone()),
            store: Arc::new(store),
            settings,
            env,
            metrics_urls,
            stop,
            tasks,
            cleanup: Cleanup::Directory(data_dir),
        }
    }

    async fn spawn_distributed(self, sim: LlmSimulator, unique: String) -> TestApp {
        drop_stale_databases().await;
        let db_name = format!("{DB_PREFIX}{unique}");
        let mut admin = PgConnection::connect(&admin_url()).await.expect("Postgres is reachable");
        admin.execute(format!(r#"create database "{db_name}""#).as_str()).await.expect("create test database");
        admin.close().await.ok();
        let database_url = format!("{}/{db_name}", admin_url().rsplit_once('/').expect("admin URL has a database").0);

        let mut env = self.common_env(&sim, &unique);
        env.extend([
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("FASTNPC_AMQP_URL".to_owned(), service_url("FASTNPC_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")),
            ("FASTNPC_REDIS_URL".to_owned(), service_url("FASTNPC_REDIS_URL", "redis://127.0.0.1:6379")),
        ]);
        env.extend(self.env);
        let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("test settings are valid");
        let env_for_children = env.clone();

        let stop = CancellationToken::new();
        let api = fastnpc_api::Api::build(settings.clone()).await.expect("the API starts");
        let api_url = format!("http://{}", api.local_addr());
        let mut metrics_urls: Vec<String> =
            api.metrics_addr().map(|address| format!("http://{address}/metrics")).into_iter().collect();
        let mut tasks = vec![tokio::spawn({
            let stop = stop.clone();
            async move {
                api.run_until(async move { stop.cancelled().await }).await.expect("the API runs");
            }
        })];
        for _ in 0..self.workers {
            let worker = fastnpc_worker::Worker::build(settings.clone()).await.expect("the worker starts");
            metrics_urls.extend(worker.metrics_addr().map(|address| format!("http://{address}/metrics")));
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move { worker.run(stop).await }));
        }
        let db = PgPool::connect(&database_url).await.expect("test pool");
        TestApp {
            api_url,
            http: reqwest::Client::new(),
            sim,
            store: Arc::new(fastnpc_shared::store::PgStore::from_pool(db.clone())),
            db: TestDb::Postgres(db),
            settings,
            env: env_for_children,
            metrics_urls,
            stop,
            tasks,
            cleanup: Cleanup::Database(db_name),
        }
    }
}

/// A running FastNPC for one test.
pub struct TestApp {
    pub api_url: String,
    pub http: reqwest::Client,
    pub sim: LlmSimulator,
    /// A direct pool on the app's database, for assertions about what was (not) written.
    pub db: TestDb,
    /// The app's store, through the same port the API and workers use.
    pub store: Arc<dyn fastnpc_shared::store::Store>,
    pub settings: Settings,
    /// The environment the app's settings were read from: a child process given it joins the app.
    pub env: HashMap<String, String>,
    /// Every process part's `/metrics`: the API's first, then each worker's (the embedded mode
    /// has one for all).
    pub metrics_urls: Vec<String>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    cleanup: Cleanup,
}

/// What a [`TestApp`] leaves to remove when it stops.
enum Cleanup {
    /// Its Postgres database.
    Database(String),
    /// Its embedded data directory.
    Directory(std::path::PathBuf),
}

/// A test app's database, whichever it is. The SQL given to it must be valid in both
/// (PostgreSQL and SQLite agree on plain `select count(*) ... where ...`).
pub enum TestDb {
    Postgres(PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl TestDb {
    /// The value of a `select count(*) ...`.
    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// [`TestDb::count`] with one text parameter (`$1`).
    pub async fn count_with(&self, sql: &str, parameter: &str) -> i64 {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).bind(parameter).fetch_one(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).bind(parameter).fetch_one(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// The JSON column of every row of `sql`.
    pub async fn json_column(&self, sql: &str) -> Vec<Value> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// The id column of every row of `sql`.
    pub async fn id_column(&self, sql: &str) -> Vec<uuid::Uuid> {
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Makes the newest login session expired (for the isolation matrix).
    pub async fn expire_newest_session(&self) {
        match self {
            Self::Postgres(pool) => sqlx::query(
                "update sessions set expires_at = now() - interval '1 second'
                 where created_at = (select max(created_at) from sessions)",
            )
            .execute(pool)
            .await
            .map(|_| ()),
            Self::Sqlite(pool) => {
                let past = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
                sqlx::query(
                    "update sessions set expires_at = $1 where created_at = (select max(created_at) from sessions)",
                )
                .bind(past)
                .execute(pool)
                .await
                .map(|_| ())
            }
        }
        .expect("expire a session");
    }

    /// The Postgres pool, for tests of the distributed mode only.
    pub fn postgres(&self) -> &PgPool {
        match self {
            Self::Postgres(pool) => pool,
            Self::Sqlite(_) => panic!("this test needs the distributed backend"),
        }
    }
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub username: String,
    pub token: String,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            backend: Backend::from_env(),
            workers: 1,
            worker_concurrency: 16,
            sim: SimConfig::default(),
            env: HashMap::new(),
        }
    }

    /// API and one worker, default simulator.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    /// A request, authenticated as `user` when given.
    pub fn request(&self, method: Method, path: &str, user: Option<&TestUser>) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match user {
            Some(user) => request.bearer_auth(&user.token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, user: &TestUser) -> Response {
        self.request(Method::GET, path, Some(user)).send().await.expect("request sent")
    }

    pub async fn post_json(&self, path: &str, user: &TestUser, body: &Value) -> Response {
        self.request(Method::POST, path, Some(user)).json(body).send().await.expect("request sent")
    }

    /// Registers `username` (password [`PASSWORD`]) and logs in.
    pub async fn user(&self, username: &str) -> TestUser {
        let credentials = serde_json::json!({"username": username, "password": PASSWORD});
        let registered = self.http.post(self.url("/v1/auth/register")).json(&credentials).send().await.unwrap();
        assert_eq!(registered.status(), 201, "register {username}: {}", registered.text().await.unwrap_or_default());
        self.login(username, PASSWORD).await
    }

    /// A user with a session, written straight into the store: no password hashing, for apps
    /// whose request timeout is shorter than an argon2 hash takes in a loaded debug build. The
    /// account has no usable password.
    pub async fn seeded_user(&self, username: &str) -> TestUser {
        let user_id = fastnpc_shared::ids::UserId::new();
        assert!(self.store.insert_user(user_id, username, "!").await.expect("user inserted"), "{username} is free");
        let token = format!("seeded-{}", uuid::Uuid::now_v7().simple());
        let expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
        self.store
            .insert_session(&fastnpc_api::extract::token_hash(&token), user_id, expires_at)
            .await
            .expect("session inserted");
        TestUser { username: username.to_owned(), token }
    }

    /// Logs in (a new session) and returns it.
    pub async fn login(&self, username: &str, password: &str) -> TestUser {
        let credentials = serde_json::json!({"username": username, "password": password});
        let login = self.http.post(self.url("/v1/auth/login")).json(&credentials).send().await.unwrap();
        assert_eq!(login.status(), 200, "login {username}");
        let body: Value = login.json().await.unwrap();
        TestUser { username: username.to_owned(), token: body["token"].as_str().expect("a token").to_owned() }
    }

    /// Submits a character and returns the `202` body.
    pub async fn create_character(&self, user: &TestUser, name: &str) -> Value {
        let body = serde_json::json!({"name": name, "source": {"kind": "text", "text": sample_source(name)}});
        let response = self.post_json("/v1/characters", user, &body).await;
        assert_eq!(response.status(), 202, "create: {}", response.text().await.unwrap_or_default());
        response.json().await.unwrap()
    }

    /// Creates a character and waits until it is ready; returns its id.
    pub async fn ready_character(&self, user: &TestUser, name: &str) -> String {
        let created = self.create_character(user, name).await;
        let job = self.wait_for_job(user, created["job"]["id"].as_str().expect("job id")).await;
        assert_eq!(job["status"], "succeeded", "generation of {name}: {job}");
        created["character"]["id"].as_str().expect("character id").to_owned()
    }

    /// A character ready at once, without a worker: imported from a minimal card; its id.
    pub async fn imported_character(&self, user: &TestUser, name: &str) -> String {
        let card = serde_json::json!({"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": name, "description": format!("{name}，一位唐代诗人。")}});
        let response = self.post_json("/v1/characters/import", user, &card).await;
        assert_eq!(response.status(), 201, "import {name}: {}", response.text().await.unwrap_or_default());
        let imported: Value = response.json().await.unwrap();
        imported["character"]["id"].as_str().expect("character id").to_owned()
    }

    /// Sends a chat message, with `Prefer: wait=N` when `wait_secs` is given.
    pub async fn send_message(
        &self,
        user: &TestUser,
        character_id: &str,
        content: &str,
        wait_secs: Option<u64>,
    ) -> Response {
        let mut request = self
            .request(Method::POST, &format!("/v1/characters/{character_id}/messages"), Some(user))
            .json(&serde_json::json!({ "content": content }));
        if let Some(secs) = wait_secs {
            request = request.header("Prefer", format!("wait={secs}"));
        }
        request.send().await.expect("request sent")
    }

    /// Writes a chat message and its reply job through the store, as the API does but without
    /// publishing the job: for tests that claim and finish jobs by hand. Returns the job's id.
    pub async fn store_message(
        &self,
        user_id: fastnpc_shared::ids::UserId,
        character_id: fastnpc_shared::ids::CharacterId,
        content: &str,
    ) -> fastnpc_shared::ids::JobId {
        use fastnpc_shared::{
            ids::{JobId, MessageId},
            store::{NewUserMessage, Quota, Submitted, jobs::NewJob},
        };
        let (message_id, job_id) = (MessageId::new(), JobId::new());
        let message = NewUserMessage::new(message_id, user_id, character_id, content);
        let job = NewJob::chat_reply(job_id, user_id, character_id, message_id);
        let quota = Quota { active_jobs: 100, characters: 100, groups: 100 };
        let submitted = self.store.submit_message(message, job, &quota).await.expect("the store writes the message");
        assert!(matches!(submitted, Submitted::Created), "{submitted:?}");
        job_id
    }

    /// Polls until no job of `kind` is queued or running (hang-guarded).
    pub async fn wait_until_no_pending(&self, kind: &str) {
        let poll = async {
            loop {
                let pending = self
                    .db
                    .count_with("select count(*) from jobs where kind = $1 and status in ('queued', 'running')", kind)
                    .await;
                if pending == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll).await.expect("pending jobs finish");
    }

    /// Opens a job's event stream, resuming after `last_event_id` when given.
    pub async fn open_events(
        &self,
        user: &TestUser,
        job_id: &str,
        last_event_id: Option<u64>,
    ) -> impl futures::Stream<Item = anyhow::Result<SseEvent>> + Send + Unpin + use<> {
        let mut request = self.request(Method::GET, &format!("/v1/jobs/{job_id}/events"), Some(user));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("events request sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        sse_client::events(response)
    }

    /// Every event of a job from `after` to the terminal one (bounded by `deadline`, a hang guard).
    pub async fn collect_events(&self, user: &TestUser, job_id: &str, after: Option<u64>) -> Vec<SseEvent> {
        use futures::StreamExt;
        let mut stream = self.open_events(user, job_id, after).await;
        let collect = async {
            let mut events = Vec::new();
            while let Some(event) = stream.next().await {
                events.push(event.expect("a well-formed event"));
            }
            events
        };
        tokio::time::timeout(HANG_GUARD, collect).await.expect("the stream ends after the terminal event")
    }

    /// Polls until the API recorded the broker's confirm of the job's message (hang-guarded).
    pub async fn wait_for_job_published(&self, job_id: &str) {
        let job_id: uuid::Uuid = job_id.parse().expect("a job id");
        let poll = async {
            loop {
                let published = match &self.db {
                    TestDb::Postgres(pool) => {
                        sqlx::query_scalar("select published_at is not null from jobs where job_id = $1")
                            .bind(job_id)
                            .fetch_one(pool)
                            .await
                    }
                    TestDb::Sqlite(pool) => {
                        sqlx::query_scalar("select published_at is not null from jobs where job_id = $1")
                            .bind(job_id)
                            .fetch_one(pool)
                            .await
                    }
                }
                .expect("read the job");
                if published {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll).await.expect("the job is published");
    }

    /// Polls a job until it is terminal (hang-guarded) and returns it.
    pub async fn wait_for_job(&self, user: &TestUser, job_id: &str) -> Value {
        let poll = async {
            loop {
                let body: Value = self.get(&format!("/v1/jobs/{job_id}"), user).await.json().await.unwrap();
                if matches!(body["job"]["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                    return body["job"].clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll).await.expect("the job finishes")
    }

    /// Starts a worker as a child process of this test, joined to the app. Killed when dropped.
    pub fn spawn_worker_process(&self, binary: &str) -> ChildWorker {
        let mut command = std::process::Command::new(binary);
        command.envs(&self.env).stdin(std::process::Stdio::null());
        if std::env::var_os("TEST_LOG").is_none() {
            command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        }
        ChildWorker(command.spawn().expect("the test worker binary starts"))
    }

    /// Which mode this app runs in (its database tells).
    pub fn backend(&self) -> Backend {
        match self.db {
            TestDb::Postgres(_) => Backend::Distributed,
            TestDb::Sqlite(_) => Backend::Embedded,
        }
    }

    /// Starts a second API process of this app's mode with `settings` (same database), and stops
    /// it once it has started: what a restart with a changed configuration does at start-up.
    pub async fn start_another(&self, settings: Settings) -> anyhow::Result<()> {
        match self.backend() {
            Backend::Distributed => fastnpc_api::Api::build(settings).await?.run_until(std::future::ready(())).await,
            // A second `fastnpc::Embedded` over this app's data directory is refused (its lock is
            // held by the running app), so this runs the API's start-up, which is what the
            // restart would run, over the same database with the embedded mode's ports.
            Backend::Embedded => {
                use fastnpc_shared::{control::CancelRegistry, embedded, event_bus::EventHub};
                let store =
                    fastnpc_store_sqlite::SqliteStore::open(&settings.data_dir.join(fastnpc::DATABASE_FILE), 2).await?;
                let hub = EventHub::in_process();
                let backends = fastnpc_api::Backends {
                    store: Arc::new(store.clone()),
                    events: Arc::new(fastnpc_store_sqlite::SqliteEventLog::new(&store, hub.clone())),
                    hub,
                    publisher: Arc::new(embedded::queue::InProcessQueue::new(1)),
                    control: Arc::new(embedded::control::LocalControl::new(CancelRegistry::default())),
                    login_limiter: Arc::new(embedded::limits::LocalLoginLimiter::new()),
                    stream_tokens: Arc::new(embedded::stream_tokens::LocalStreamTokens::new()),
                    submissions: Arc::new(embedded::limits::LocalSubmissionLimiter::new(1)),
                    search_cache: Arc::new(fastnpc_shared::sources::search_cache::LocalSearchCache::default()),
                    metrics: Arc::new(fastnpc_shared::metrics::Metrics::new()),
                };
                let started = fastnpc_api::Api::with_backends(&settings, backends, CancellationToken::new()).await;
                store.close().await;
                started.map(drop)
            }
        }
    }

    /// Messages ready (not yet delivered) in the app's jobs queue.
    pub async fn queue_ready_count(&self) -> u32 {
        let connection = fastnpc_shared::queue::connect(&self.settings.amqp_url).await.expect("broker reachable");
        let channel = connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                Topology::from_settings(&self.settings).jobs_queue.as_str().into(),
                lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("the jobs queue exists");
        let _ = connection.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Waits until every message of the jobs queue has been delivered (hang-guarded).
    pub async fn wait_for_empty_queue(&self) {
        let poll = async {
            while self.queue_ready_count().await > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll).await.expect("the queue drains");
    }

    /// Stops API and workers gracefully (workers finish what they were delivered) and drops the
    /// test database. Returns the simulator, whose counters then cover everything that ran.
    pub async fn stop(self) -> LlmSimulator {
        self.stop_and(true).await
    }

    /// [`TestApp::stop`], keeping the database (an embedded app's data directory is left for the
    /// test to use, then remove).
    pub async fn stop_keeping_data(self) -> LlmSimulator {
        self.stop_and(false).await
    }

    async fn stop_and(self, clean_up: bool) -> LlmSimulator {
        self.stop.cancel();
        for task in self.tasks {
            // A system that fails to stop (or panics on the way) fails the test.
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the app stops within 30 s")
                .expect("the app's task ends without panicking");
        }
        match &self.db {
            TestDb::Postgres(pool) => pool.close().await,
            TestDb::Sqlite(pool) => pool.close().await,
        }
        match &self.cleanup {
            _ if !clean_up => {}
            Cleanup::Database(name) => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = admin.execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str()).await;
                }
            }
            Cleanup::Directory(directory) => {
                let _ = tokio::fs::remove_dir_all(directory).await;
            }
        }
        self.sim
    }
}

/// The password [`TestApp::user`] registers with.
pub const PASSWORD: &str = "correct horse battery";

/// Upper bound on any single wait in a test: a hang becomes a failure instead of a stuck CI run.
/// Not a performance assertion; benchmarks measure speed.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// A plausible encyclopedia-style source for `name`.
pub fn sample_source(name: &str) -> String {
    format!(
        "{name}，字孔明，琅琊阳都人，三国时期蜀汉丞相，杰出的政治家、军事家。\
         早年隐居隆中，躬耕陇亩，刘备三顾茅庐后出山辅佐，联吴抗曹，赤壁之战后取得荆州、益州。\
         刘备去世后受托孤之重，五次北伐中原，鞠躬尽瘁，死而后已，病逝于五丈原。"
    )
}

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Drops test databases left by test processes that no longer run (a crashed or killed run).
async fn drop_stale_databases() {
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CLEANED
        .get_or_init(|| async {
            let Ok(mut admin) = PgConnection::connect(&admin_url()).await else { return };
            let names: Vec<(String,)> = sqlx::query_as("select datname from pg_database where datname like $1")
                .bind(format!("{DB_PREFIX}%"))
                .fetch_all(&mut admin)
                .await
                .unwrap_or_default();
            for (name,) in names {
                let pid = name.trim_start_matches(DB_PREFIX).split('_').next().and_then(|p| p.parse::<u32>().ok());
                let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
                if !alive {
                    let _ = admin.execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str()).await;
                }
            }
        })
        .await;
}

/// A worker child process; killed (SIGKILL) if still running when dropped.
pub struct ChildWorker(pub std::process::Child);

impl ChildWorker {
    /// Sends a signal (`KILL`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.0.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} worked");
    }

    /// Waits for the process to exit (hang-guarded) and returns whether it exited cleanly.
    pub async fn wait(mut self) -> bool {
        let poll = async {
            loop {
                if let Some(status) = self.0.try_wait().expect("the child can be waited on") {
                    return status.success();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll).await.expect("the worker exits")
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a database holds, table by table: every row of every table the catalog lists, each
/// rendered as text (see [`TestDb::table_rows`]). Two equal snapshots mean no row was added,
/// removed or edited anywhere — counts alone miss an edit that keeps them.
pub type DbContents = std::collections::BTreeMap<String, Vec<String>>;

impl TestDb {
    /// The tables the database's own catalog lists, so a table added later is not missed: the
    /// current schema's base tables in Postgres, every table of `sqlite_master` in SQLite (both
    /// include `_sqlx_migrations`; SQLite's also `sqlite_sequence` when a table uses it).
    pub async fn tables(&self) -> Vec<String> {
        match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar(
                    "select table_name::text from information_schema.tables
                     where table_schema = current_schema() and table_type = 'BASE TABLE' order by 1",
                )
                .fetch_all(pool)
                .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar("select name from sqlite_master where type = 'table' order by 1")
                    .fetch_all(pool)
                    .await
            }
        }
        .expect("list the tables")
    }

    /// Every row of `table`, one line of text each, with every column, sorted. Postgres renders
    /// the row with its own text form (`t::text`: bytea as `\x…` hex, timestamps to the
    /// microsecond, JSON normalised); SQLite has no row-to-text cast, so each column is
    /// rendered by `quote()` (text quoted, blobs as `X'…'` hex) and the columns are joined.
    pub async fn table_rows(&self, table: &str) -> Vec<String> {
        let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        match self {
            Self::Postgres(pool) => {
                let sql = format!("select t::text from {} t order by 1", quoted(table));
                sqlx::query_scalar(sql.as_str()).fetch_all(pool).await
            }
            Self::Sqlite(pool) => {
                let columns: Vec<String> = sqlx::query_scalar("select name from pragma_table_info($1) order by cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await
                    .unwrap_or_else(|error| panic!("columns of {table}: {error}"));
                assert!(!columns.is_empty(), "{table} has columns");
                let row =
                    columns.iter().map(|c| format!("quote({})", quoted(c))).collect::<Vec<_>>().join(" || ',' || ");
                let sql = format!("select {row} from {} order by 1", quoted(table));
                sqlx::query_scalar(sql.as_str()).fetch_all(pool).await
            }
        }
        .unwrap_or_else(|error| panic!("rows of {table}: {error}"))
    }

    /// Every row of every table ([`DbContents`]).
    pub async fn contents(&self) -> DbContents {
        let mut contents = DbContents::new();
        for table in self.tables().await {
            let rows = self.table_rows(&table).await;
            contents.insert(table, rows);
        }
        contents
    }
}

/// Fails naming each table whose rows differ between two [`DbContents`], and the rows that
/// appeared or vanished (an edited row is one of each).
pub fn assert_same_contents(before: &DbContents, after: &DbContents, what: &str) {
    let tables: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut differences = Vec::new();
    for table in tables {
        let (old, new) = (before.get(table), after.get(table));
        if old == new {
            continue;
        }
        let (old, new) = (old.cloned().unwrap_or_default(), new.cloned().unwrap_or_default());
        let gone: Vec<&String> = old.iter().filter(|row| !new.contains(row)).collect();
        let appeared: Vec<&String> = new.iter().filter(|row| !old.contains(row)).collect();
        differences.push(format!("{table}: rows gone {gone:#?}, rows appeared {appeared:#?}"));
    }
    assert!(differences.is_empty(), "{what}: the database changed:\n{}", differences.join("\n"));
}

/// An HTTP answer in full, for comparing two answers byte for byte: the status, every header but
/// `date` (which only says when), and the body's bytes.
#[derive(PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Sorted by name, then value.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, std::borrow::Cow<'_, str>)> =
            self.headers.iter().map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value))).collect();
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

impl Answer {
    /// Reads a whole response.
    pub async fn read(response: Response) -> Self {
        let status = response.status().as_u16();
        let mut headers: Vec<(String, Vec<u8>)> = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != reqwest::header::DATE)
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        headers.sort();
        let body = response.bytes().await.expect("the body is read").to_vec();
        Self { status, headers, body }
    }

    /// A header's value, if present once or more (the first).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

impl TestApp {
    /// Sends a request (as `user`, with a JSON body when given) and reads the whole [`Answer`].
    pub async fn answer(&self, method: Method, path: &str, user: Option<&TestUser>, body: Option<&Value>) -> Answer {
        let mut request = self.request(method, path, user);
        if let Some(body) = body {
            request = request.json(body);
        }
        Answer::read(request.send().await.expect("request sent")).await
    }

    /// Every Redis key of this app's namespace with what it holds (strings, hashes, lists, sets,
    /// sorted sets and streams, rendered as `redis-cli` prints them): the distributed mode's
    /// rows outside the database. Read with `redis-cli`, which ships with the Redis server.
    pub async fn redis_contents(&self) -> Vec<(String, String)> {
        assert_eq!(self.backend(), Backend::Distributed, "only the distributed mode uses Redis");
        let url = self.settings.redis_url.expose().to_owned();
        let pattern = format!("{}:*", self.settings.namespace);
        tokio::task::spawn_blocking(move || {
            let cli = |args: &[&str]| -> String {
                let output = std::process::Command::new("redis-cli")
                    .arg("-u")
                    .arg(&url)
                    .args(args)
                    .output()
                    .expect("redis-cli runs (it comes with redis-server)");
                assert!(output.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
                String::from_utf8_lossy(&output.stdout).into_owned()
            };
            let mut keys: Vec<String> =
                cli(&["--scan", "--pattern", &pattern]).lines().map(str::to_owned).filter(|k| !k.is_empty()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .map(|key| {
                    let held = match cli(&["type", &key]).trim() {
                        "string" => cli(&["get", &key]),
                        "hash" => cli(&["hgetall", &key]),
                        "list" => cli(&["lrange", &key, "0", "-1"]),
                        "set" => cli(&["smembers", &key]),
                        "zset" => cli(&["zrange", &key, "0", "-1", "withscores"]),
                        "stream" => cli(&["xrange", &key, "-", "+"]),
                        "none" => String::new(), // expired between the scan and now
                        other => panic!("{key}: a Redis type this reader does not know: {other}"),
                    };
                    (key, held)
                })
                .collect()
        })
        .await
        .expect("Redis is read")
    }
}

// Helpers of the cancellation, crash and outage tests.

impl TestDb {
    /// Flags a running job's cancellation in its row, as the API's cancel does before it signals
    /// the job's worker, and sends no signal: what a worker sees when the signal was lost.
    pub async fn flag_cancel_requested(&self, job_id: &str) {
        let job_id: uuid::Uuid = job_id.parse().expect("a job id");
        let sql = "update jobs set cancel_requested_at = $2 where job_id = $1 and status = 'running'";
        let now = chrono::Utc::now();
        let flagged = match self {
            Self::Postgres(pool) => {
                sqlx::query(sql).bind(job_id).bind(now).execute(pool).await.map(|r| r.rows_affected())
            }
            Self::Sqlite(pool) => {
                sqlx::query(sql).bind(job_id).bind(now).execute(pool).await.map(|r| r.rows_affected())
            }
        }
        .expect("flag the cancellation");
        assert_eq!(flagged, 1, "the job is running");
    }

    /// The reply a chat job stored, if any.
    pub async fn stored_reply(&self, job_id: &str) -> Option<String> {
        let job_id: uuid::Uuid = job_id.parse().expect("a job id");
        let sql = "select content from messages where job_id = $1";
        match self {
            Self::Postgres(pool) => sqlx::query_scalar(sql).bind(job_id).fetch_optional(pool).await,
            Self::Sqlite(pool) => sqlx::query_scalar(sql).bind(job_id).fetch_optional(pool).await,
        }
        .expect("read the reply")
    }
}

impl TestApp {
    /// Waits until the simulator has no chat request in flight (hang-guarded): every response
    /// has ended or its client has gone away.
    pub async fn wait_until_llm_idle(&self) {
        let poll = async {
            while self.sim.stats().in_flight > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll)
            .await
            .unwrap_or_else(|_| panic!("LLM requests still in flight: {:?}", self.sim.stats()));
    }

    /// Waits until the simulator has at least `count` requests in flight (hang-guarded).
    pub async fn wait_for_llm_in_flight(&self, count: u64) {
        let poll = async {
            while self.sim.stats().in_flight < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, poll)
            .await
            .unwrap_or_else(|_| panic!("fewer than {count} LLM requests in flight: {:?}", self.sim.stats()));
    }

    /// LLM requests whose user turn (see [`user_turn`]) is exactly `text`.
    pub fn llm_requests_for(&self, text: &str) -> usize {
        self.sim.requests().iter().filter(|request| user_turn(request) == Some(text)).count()
    }

    /// `(ready messages, consumers)` of the app's jobs queue, and the messages in its dead-letter
    /// queue.
    pub async fn queue_counts(&self) -> (u32, u32, u32) {
        let connection = fastnpc_shared::queue::connect(&self.settings.amqp_url).await.expect("broker reachable");
        let channel = connection.create_channel().await.expect("channel");
        let topology = Topology::from_settings(&self.settings);
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let jobs = channel
            .queue_declare(topology.jobs_queue.as_str().into(), passive, lapin::types::FieldTable::default())
            .await
            .expect("the jobs queue exists");
        let dead = channel
            .queue_declare(topology.dead_queue.as_str().into(), passive, lapin::types::FieldTable::default())
            .await
            .expect("the dead-letter queue exists");
        let _ = connection.close(200, "done".into()).await;
        (jobs.message_count(), jobs.consumer_count(), dead.message_count())
    }
}

/// The user turn of a recorded LLM request: the content of its last message. A chat reply's is
/// the user message it answers, verbatim (earlier turns of the conversation are in the system
/// prompt), so it tells which job asked.
pub fn user_turn(request: &crate::sim::RecordedRequest) -> Option<&str> {
    request.body["messages"].as_array()?.last()?.get("content")?.as_str()
}

/// Checks the whole event stream of a job that succeeded — ids 1..N once each and in order, one
/// terminal event and it is the last, `succeeded` — and returns the text of its `token` events
/// after the last `reset` (all of them when there is none): what a client shows as the reply.
pub fn succeeded_stream_text(events: &[SseEvent]) -> String {
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("logged events have ids")).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let terminal: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_str())
        .filter(|e| matches!(*e, "succeeded" | "failed" | "cancelled"))
        .collect();
    assert_eq!(terminal, ["succeeded"], "one terminal event");
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("succeeded"), "the terminal event ends the stream");
    let after_reset = events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1);
    events[after_reset..]
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["text"].as_str().expect("a token has text"))
        .collect()
}
