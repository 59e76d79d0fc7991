//! Outages of the real services: RabbitMQ stopped during a burst of submissions, Redis
//! connections dropped during streaming.
//!
//! These tests stop or disturb services that every test shares, so `scripts/test` runs them
//! apart, one at a time, after the rest of the suite (`cargo test … outages:: --test-threads=1`);
//! the main run skips them. Each restores what it disturbed, even when it fails.

use std::{process::Command, time::Duration};

use fastnpc_tests::{
    answer_losing_proxy::AnswerLosingProxy,
    harness::{Backend, HANG_GUARD, TestApp, TestUser, sample_source, succeeded_stream_text},
    sim::SimConfig,
};
use futures::StreamExt;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use serde_json::{Value, json};

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// Starts RabbitMQ's application again when dropped, so a failing test leaves the broker up.
struct BrokerDown;

impl BrokerDown {
    fn stop() -> Self {
        run("rabbitmqctl", &["-q", "stop_app"]);
        Self
    }
}

impl Drop for BrokerDown {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-q", "start_app"]).status();
        let _ = Command::new("rabbitmqctl").args(["-q", "await_startup"]).status();
    }
}

#[tokio::test]
async fn every_job_accepted_while_the_broker_is_down_finishes() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(2).spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;

    let outage = BrokerDown::stop();
    let mut jobs = Vec::new();
    for index in 0..10 {
        let response = app.send_message(&user, &character, &format!("停机时的第{index}条"), None).await;
        assert_eq!(response.status(), 202, "accepted while the broker is down");
        let body: Value = response.json().await.unwrap();
        jobs.push(body["job"]["id"].as_str().unwrap().to_owned());
    }
    let created = app.create_character(&user, "李白").await;
    jobs.push(created["job"]["id"].as_str().unwrap().to_owned());
    let ready: Value = app.get("/readyz", &user).await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "the API stays ready without the broker: {ready}");
    drop(outage);

    // Workers reconnect by themselves; the re-publisher sends what could not be published.
    for job in &jobs {
        let job = app.wait_for_job(&user, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let replies = app.db.count("select count(*) from messages where author = 'character'").await;
    assert_eq!(replies, 10, "each reply stored once");
    // Done once, not merely stored once: no worker died, so each reply was asked of the LLM
    // once, and each of its streams tells it once.
    for (index, job) in jobs[..10].iter().enumerate() {
        assert_eq!(app.llm_requests_for(&format!("停机时的第{index}条")), 1, "reply {index} asked for once");
        let events = app.collect_events(&user, job, None).await;
        let stored = app.db.stored_reply(job).await.expect("the reply is stored");
        assert_eq!(succeeded_stream_text(&events), stored, "reply {index}: the stream shows the stored reply");
        assert!(events.iter().all(|e| e.event != "reset"), "reply {index}: nothing to void");
    }
    let generation = &jobs[10];
    let events = app.collect_events(&user, generation, None).await;
    succeeded_stream_text(&events);
    let source = sample_source("李白");
    let asked = app.sim.requests().iter().filter(|r| r.prompt_text.contains(&source)).count();
    assert_eq!(asked, 10, "nine categories and one brief, each asked for once");
    app.stop().await;
}

#[tokio::test]
async fn streams_survive_dropped_redis_connections_without_gaps_or_duplicates() {
    let app = TestApp::builder().backend(Backend::Distributed).spawn().await;
    let user = app.user("grace").await;
    let character = app.ready_character(&user, "杜甫").await;
    // A reply of about three seconds of tokens.
    app.sim.set_config(SimConfig {
        inter_token_delay: Duration::from_millis(25),
        reply_tokens: 120,
        ..SimConfig::default()
    });
    let sent: Value = app.send_message(&user, &character, "讲讲你的诗", None).await.json().await.unwrap();
    let job = sent["job"]["id"].as_str().unwrap().to_owned();

    let mut stream = app.open_events(&user, &job, None).await;
    let mut events = Vec::new();
    let mut killed = false;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let tokens = events.iter().filter(|e: &&fastnpc_tests::sse_client::SseEvent| e.event == "token").count();
        events.push(event);
        if !killed && tokens >= 3 {
            // Every subscriber (the API's event hub, the worker's control channel) and every
            // plain connection (appends, backfills) is cut at once.
            run("redis-cli", &["CLIENT", "KILL", "TYPE", "pubsub"]);
            run("redis-cli", &["CLIENT", "KILL", "TYPE", "normal"]);
            killed = true;
        }
    }
    assert!(killed);
    let streamed = succeeded_stream_text(&events);
    let last = events.last().unwrap();
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap());
    assert_eq!(Some(streamed), app.db.stored_reply(&job).await);
    assert_eq!(app.llm_requests_for("讲讲你的诗"), 1, "the reply was asked for once: Redis blips cost no restart");
    app.stop().await;
}

#[tokio::test]
async fn a_token_append_whose_answer_is_lost_is_stored_once() {
    let redis = std::env::var("FASTNPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let upstream = tokio::net::lookup_host(redis.trim_start_matches("redis://").trim_end_matches('/'))
        .await
        .unwrap()
        .next()
        .unwrap();
    // The first append of a `token` event runs, and its answer never comes back.
    let triggers = vec![b"EVALSHA".to_vec(), b"$5\r\ntoken\r\n".to_vec()];
    let proxy = AnswerLosingProxy::start(upstream, triggers).await.unwrap();
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .setting("FASTNPC_REDIS_URL", format!("redis://{}", proxy.address()))
        .spawn()
        .await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "杜甫").await;
    let sent: Value = app.send_message(&user, &character, "讲讲你的诗", None).await.json().await.unwrap();
    let job = sent["job"]["id"].as_str().unwrap().to_owned();

    let events = app.collect_events(&user, &job, None).await;
    assert_eq!(proxy.losses(), 1, "an append's answer was lost");
    assert!(!events.iter().any(|e| e.event == "reset"), "the job kept its worker");
    let streamed = succeeded_stream_text(&events);
    let last = events.last().unwrap();
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap(), "no token twice");
    assert_eq!(Some(streamed), app.db.stored_reply(&job).await);
    assert_eq!(app.llm_requests_for("讲讲你的诗"), 1, "the reply was asked for once");
    app.stop().await;
}

/// Starts PostgreSQL again when dropped.
struct DatabaseDown;

impl DatabaseDown {
    fn stop() -> Self {
        run(
            "bash",
            &[
                "-c",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -1) main stop -m fast",
            ],
        );
        Self
    }
}

impl Drop for DatabaseDown {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args([
                "-c",
                "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -1) main start",
            ])
            .status();
        let _ = Command::new("bash")
            .args(["-c", "for i in $(seq 60); do pg_isready -q -h 127.0.0.1 && exit 0; sleep 0.5; done; exit 1"])
            .status();
    }
}

/// Asserts `response` is the clean answer to a request made while the database is unreachable:
/// a `503` problem document with `Retry-After`.
async fn assert_unavailable(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "{what}");
    assert!(response.headers().contains_key("retry-after"), "{what}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{what}: {problem}");
}

/// The rows a submission writes, counted: characters, jobs, messages.
async fn submitted_rows(app: &TestApp) -> (i64, i64, i64) {
    (
        app.db.count("select count(*) from characters").await,
        app.db.count("select count(*) from jobs").await,
        app.db.count("select count(*) from messages").await,
    )
}

/// A submission of a character, as a request still to be sent.
fn submit_character(app: &TestApp, user: &TestUser, name: &str) -> reqwest::RequestBuilder {
    app.request(reqwest::Method::POST, "/v1/characters", Some(user))
        .json(&json!({"name": name, "source": {"kind": "text", "text": sample_source(name)}}))
}

#[tokio::test]
async fn with_postgres_down_the_api_answers_503_and_recovers() {
    let app = TestApp::builder().backend(Backend::Distributed).spawn().await;
    let user = app.user("hedy").await;
    let character = app.ready_character(&user, "诸葛亮").await;
    let before = submitted_rows(&app).await;

    let outage = DatabaseDown::stop();
    assert_unavailable(app.get("/v1/me", &user).await, "a read").await;
    // Writes, too: a new character (a character and its job) and a chat message (a message and
    // its job).
    assert_unavailable(submit_character(&app, &user, "李白").send().await.unwrap(), "a new character").await;
    assert_unavailable(app.send_message(&user, &character, "停机时的问题", None).await, "a message").await;
    let ready = app.request(reqwest::Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "down");
    assert_eq!(app.request(reqwest::Method::GET, "/healthz", None).send().await.unwrap().status(), 200, "still alive");
    drop(outage);

    // Back: the pool reconnects and work resumes; the refused submissions left nothing behind.
    assert_eq!(submitted_rows(&app).await, before, "nothing of the refused submissions was written");
    let me = app.get("/v1/me", &user).await;
    assert_eq!(me.status(), 200);
    let ready = app.request(reqwest::Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let second = app.ready_character(&user, "李白").await;
    assert_ne!(second, character);
    app.stop().await;
}

#[tokio::test]
async fn a_submission_cut_off_by_a_database_outage_leaves_nothing_half_written() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("ada").await;
    let before = submitted_rows(&app).await;
    // The submission's transaction writes the character, then the job. A trigger holds the job's
    // insert on a lock the test holds, so the database goes down between the two writes.
    let pool = app.db.postgres();
    sqlx::raw_sql(
        "create function hold_job_inserts() returns trigger language plpgsql as $$
         begin perform pg_advisory_xact_lock(1414); return new; end $$;
         create trigger hold_job_inserts before insert on jobs for each row execute function hold_job_inserts();",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock(1414)").execute(&mut *holder).await.unwrap();

    let submission = tokio::spawn(submit_character(&app, &user, "李白").send());
    let held = async {
        let waiting = "select count(*) from pg_locks
                       where locktype = 'advisory' and objid = 1414 and not granted
                         and database = (select oid from pg_database where datname = current_database())";
        while sqlx::query_scalar::<_, i64>(waiting).fetch_one(pool).await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, held).await.expect("the submission reaches the job's insert");
    let outage = DatabaseDown::stop();
    let response = tokio::time::timeout(HANG_GUARD, submission).await.expect("the submission is answered").unwrap();
    // The shutdown terminates the request's connection (SQLSTATE 57P01, admin_shutdown): a 503
    // like any unreachable database, not a 500.
    assert_unavailable(response.unwrap(), "a submission cut off mid-transaction").await;
    drop(outage);
    drop(holder);

    sqlx::raw_sql("drop trigger hold_job_inserts on jobs; drop function hold_job_inserts();")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(submitted_rows(&app).await, before, "no character without its job, nor anything else");
    app.stop().await;
}

#[tokio::test]
async fn a_job_delivered_while_the_database_is_down_waits_and_runs_once_it_is_back() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("grace").await;
    let character = ready_character_row(&app, "杜甫").await;
    let sent: Value = app.send_message(&user, &character, "停机时送到的问题", None).await.json().await.unwrap();
    let job = sent["job"]["id"].as_str().unwrap().to_owned();
    app.wait_for_job_published(&job).await;

    // The test takes the job's message off the queue and hands it back until one more return
    // would exceed the queue's delivery limit: so if the worker returned it for want of a
    // database (instead of waiting for one), it would be dead-lettered, and the job never run.
    let connection = fastnpc_shared::queue::connect(&app.settings.amqp_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = fastnpc_shared::queue::Topology::from_settings(&app.settings).jobs_queue;
    let take = async || {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("the job's message is in the queue")
            .delivery
    };
    let give_back =
        async |tag| channel.basic_nack(tag, BasicNackOptions { multiple: false, requeue: true }).await.unwrap();
    let limit = fastnpc_shared::queue::DELIVERY_LIMIT;
    for _ in 0..limit - 1 {
        let delivery = take().await;
        give_back(delivery.delivery_tag).await;
    }
    let held = take().await;
    let returns = held.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert_eq!(
        returns.and_then(|count| count.as_long_long_int()),
        Some(i64::from(limit - 1)),
        "returned {} times",
        limit - 1
    );

    // A worker starts (it needs the database to start), and then the database goes down.
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(fastnpc_worker::run(app.settings.clone(), stop.clone()));
    let consuming = async {
        while app.queue_counts().await.1 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, consuming).await.expect("the worker consumes");
    let outage = DatabaseDown::stop();
    // The message arrives now, with its last return to spare.
    give_back(held.delivery_tag).await;
    let delivered = async {
        while app.queue_counts().await.0 > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, delivered).await.expect("the worker takes the message");
    // A request made now is refused only after the database pool gave up waiting for a
    // connection: by then the worker's claim, begun earlier, has failed at least once too.
    assert_unavailable(app.get("/v1/me", &user).await, "a read during the outage").await;
    assert_eq!(app.sim.stats().requests_received, 0, "the job has not run");
    drop(outage);

    let finished = app.wait_for_job(&user, &job).await;
    assert_eq!(
        (finished["status"].as_str(), finished["attempts"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{finished}"
    );
    assert_eq!(app.llm_requests_for("停机时送到的问题"), 1);
    let events = app.collect_events(&user, &job, None).await;
    assert_eq!(Some(succeeded_stream_text(&events)), app.db.stored_reply(&job).await);
    let (ready, _, dead) = app.queue_counts().await;
    assert_eq!((ready, dead), (0, 0), "no message left over, none dead-lettered");
    let _ = connection.close(200, "done".into()).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    app.stop().await;
}

/// A ready character of the app's one user, written directly (its generation is not under test).
async fn ready_character_row(app: &TestApp, name: &str) -> String {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into characters (character_id, user_id, name, status, source, profile, brief)
         select $1, user_id, $2, 'ready', $3, '{}', '一位诗人。' from users",
    )
    .bind(id)
    .bind(name)
    .bind(json!({"kind": "text", "text": sample_source(name)}))
    .execute(app.db.postgres())
    .await
    .unwrap();
    id.to_string()
}
