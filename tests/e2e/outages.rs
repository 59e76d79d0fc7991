//! Outages of the real services: RabbitMQ stopped during a burst of submissions, Redis
//! connections dropped during streaming.
//!
//! These tests stop or disturb services that every test shares, so `scripts/test` runs them
//! apart, one at a time, after the rest of the suite (`cargo test … outages:: --test-threads=1`);
//! the main run skips them. Each restores what it disturbed, even when it fails.

use std::{process::Command, time::Duration};

use fastnpc_tests::{
    answer_losing_proxy::AnswerLosingProxy,
    harness::{Backend, TestApp},
    sim::SimConfig,
};
use futures::StreamExt;
use serde_json::Value;

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
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("logged events have ids")).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");
    let after_reset = events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1);
    let streamed: String =
        events[after_reset..].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap());
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
    let ids: Vec<u64> = events.iter().map(|e| e.id.expect("logged events have ids")).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded");
    assert!(!events.iter().any(|e| e.event == "reset"), "the job kept its worker");
    let streamed: String =
        events.iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(streamed, last.data["result"]["message"]["content"].as_str().unwrap(), "no token twice");
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

#[tokio::test]
async fn with_postgres_down_the_api_answers_503_and_recovers() {
    let app = TestApp::builder().backend(Backend::Distributed).spawn().await;
    let user = app.user("hedy").await;

    let outage = DatabaseDown::stop();
    let response = app.get("/v1/me", &user).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(response.headers().contains_key("retry-after"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 503);
    let ready = app.request(reqwest::Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"], "down");
    assert_eq!(app.request(reqwest::Method::GET, "/healthz", None).send().await.unwrap().status(), 200, "still alive");
    drop(outage);

    // Back: the pool reconnects and work resumes; nothing was half-written.
    let character = app.ready_character(&user, "诸葛亮").await;
    let me = app.get("/v1/me", &user).await;
    assert_eq!(me.status(), 200);
    let ready = app.request(reqwest::Method::GET, "/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(!character.is_empty());
    app.stop().await;
}
