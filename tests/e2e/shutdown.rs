//! Graceful shutdown: what SIGTERM does to a worker and to the API.
//!
//! A worker stops taking jobs, lets the ones it holds run for its grace period (20 s, fixed:
//! `WorkerConfig::shutdown_grace`, no setting), hands back the ones still running under fresh
//! messages, and exits. The API stops accepting connections, ends its SSE streams, and finishes
//! the requests it holds.

use std::time::Duration;

use fastnpc_tests::{
    harness::{Backend, HANG_GUARD, TestApp, TestDb, succeeded_stream_text},
    sim::{Fault, Rule},
};
use futures::StreamExt;
use serde_json::{Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_fastnpc-test-worker");

async fn until(condition: impl AsyncFn() -> bool) {
    let poll = async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the condition is met");
}

/// Matches the prompt of one profile category's call (and no other call of a generation).
const ONE_CATEGORY: &str = "「背景故事」类别";

#[tokio::test]
async fn a_worker_given_sigterm_hands_back_what_outlives_its_grace_and_exits() {
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .workers(0)
        // The stalled call must outlast the grace, not end in a client timeout and a retry.
        .setting("FASTNPC_LLM_TIMEOUT_SECS", "600")
        .spawn()
        .await;
    // One category of the first generation attempt gets no answer for an hour.
    app.sim.add_rule(Rule {
        when_contains: ONE_CATEGORY.into(),
        fault: Fault::Stall(Duration::from_secs(3600)),
        times: Some(1),
    });
    let user = app.user("ada").await;
    let stopping = app.spawn_worker_process(WORKER);
    let created = app.create_character(&user, "诸葛亮").await;
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();
    // All ten calls made; nine answered, one hanging.
    until(async || {
        let stats = app.sim.stats();
        stats.requests_received == 10 && stats.requests_served == 9
    })
    .await;

    stopping.signal("TERM");
    assert!(stopping.wait().await, "the worker exited cleanly after its grace");
    // Handed back: queued again, held by no one, under a fresh message the worker published (and
    // saw confirmed) before it exited. (The API's re-publisher may add a duplicate if it sweeps
    // in the instant between the release and the recorded confirm: a claim makes that harmless.)
    let job: Value = app.get(&format!("/v1/jobs/{job_id}"), &user).await.json().await.unwrap();
    assert_eq!((job["job"]["status"].as_str(), job["job"]["attempts"].as_i64()), (Some("queued"), Some(1)), "{job}");
    let (ready, consumers, dead) = app.queue_counts().await;
    assert!(ready >= 1 && consumers == 0 && dead == 0, "ready {ready}, consumers {consumers}, dead {dead}");
    assert_eq!(prompts_with(&app, ONE_CATEGORY), 1);

    // Another worker finishes it.
    let _successor = app.spawn_worker_process(WORKER);
    let job = app.wait_for_job(&user, &job_id).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{job}");
    assert_eq!(prompts_with(&app, ONE_CATEGORY), 2, "asked again by the second attempt");
    let character: Value = app
        .get(&format!("/v1/characters/{}", created["character"]["id"].as_str().unwrap()), &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(character["character"]["status"], "ready");
    succeeded_stream_text(&app.collect_events(&user, &job_id, None).await);
    app.stop().await;
}

#[tokio::test]
async fn a_stopping_api_refuses_new_connections_and_finishes_the_requests_it_holds() {
    let backend = Backend::from_env();
    let app = TestApp::builder()
        // In the distributed mode the worker is its own process and goes on working while the API
        // stops, as in a rolling restart; the embedded mode stops its workers after its API.
        .workers(usize::from(backend == Backend::Embedded))
        .setting("FASTNPC_LLM_TIMEOUT_SECS", "600")
        // A heartbeat a second: a cancellation flagged in the row is seen promptly.
        .setting("FASTNPC_JOB_LEASE_SECS", "3")
        .spawn()
        .await;
    let _worker = (backend == Backend::Distributed).then(|| app.spawn_worker_process(WORKER));
    let user = app.user("grace").await;
    let character = app.ready_character(&user, "李白").await;

    // The first message's reply hangs at the model until its job is cancelled; the second waits
    // for it (a conversation is answered in order). So the request for the second cannot finish
    // until the test lets it.
    app.sim.add_rule(Rule {
        when_contains: "第一问".into(),
        fault: Fault::Stall(Duration::from_secs(3600)),
        times: Some(1),
    });
    let first: Value = app.send_message(&user, &character, "第一问", None).await.json().await.unwrap();
    let first = first["job"]["id"].as_str().unwrap().to_owned();
    until(async || app.llm_requests_for("第一问") == 1).await;
    let mut first_events = app.open_events(&user, &first, None).await;
    let in_flight = tokio::spawn(
        reqwest::Client::new()
            .post(app.url(&format!("/v1/characters/{character}/messages")))
            .bearer_auth(&user.token)
            .header("Prefer", "wait=60")
            .json(&json!({"content": "第二问"}))
            .send(),
    );
    // The request is being handled: its job is committed, and it waits for the reply.
    until(async || app.db.count("select count(*) from jobs where kind = 'chat_reply'").await == 2).await;

    let address = app.api_url.trim_start_matches("http://").to_owned();
    let db = match &app.db {
        TestDb::Postgres(pool) => TestDb::Postgres(pool.clone()),
        TestDb::Sqlite(pool) => TestDb::Sqlite(pool.clone()),
    };
    let stopping = tokio::spawn(app.stop());

    // New connections are refused...
    until(async || tokio::net::TcpStream::connect(&address).await.is_err()).await;
    let refused = reqwest::Client::new().get(format!("http://{address}/healthz")).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused}");
    // ...while the request it holds is still waiting (nothing lets it end yet)...
    assert!(!in_flight.is_finished(), "the request in flight was not cut short");
    // ...and SSE streams are ended, not waited for: their clients resume from another replica.
    let ended = async {
        let mut events = Vec::new();
        while let Some(event) = first_events.next().await {
            events.push(event.expect("a well-formed event"));
        }
        events
    };
    let events = tokio::time::timeout(HANG_GUARD, ended).await.expect("the stream is ended by the stop");
    assert!(
        events.iter().all(|e| !matches!(e.event.as_str(), "succeeded" | "failed" | "cancelled")),
        "ended while its job still runs: {events:?}"
    );
    assert!(!stopping.is_finished(), "the API does not stop before the requests it holds are answered");

    // The first job ends (its user cancels it; the flag reaches its worker through the heartbeat)
    // and the second runs: the request held through the stop gets its answer.
    db.flag_cancel_requested(&first).await;
    let answer = tokio::time::timeout(HANG_GUARD, in_flight).await.expect("the request is answered").unwrap();
    let answer = answer.expect("answered on the connection it came on");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["job"]["status"], "succeeded", "{body}");
    assert!(!body["reply"]["content"].as_str().unwrap_or_default().is_empty(), "{body}");
    let sim = tokio::time::timeout(HANG_GUARD, stopping).await.expect("the stop completes").unwrap();
    assert_eq!(sim.requests().iter().filter(|r| fastnpc_tests::harness::user_turn(r) == Some("第二问")).count(), 1);
}

/// LLM requests whose prompt contains `text`.
fn prompts_with(app: &TestApp, text: &str) -> usize {
    app.sim.requests().iter().filter(|request| request.prompt_text.contains(text)).count()
}
