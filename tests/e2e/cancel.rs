//! Cancellation: a running job stops and drops its LLM calls, a queued one never starts, and
//! cancelling twice is harmless.

use std::time::Duration;

use fastnpc_tests::{
    harness::{Backend, HANG_GUARD, TestApp},
    sim::SimConfig,
};
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn cancel(app: &TestApp, user: &fastnpc_tests::harness::TestUser, job: &str) -> (u16, Value) {
    let response = app.request(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(user)).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// An app whose model takes ten minutes to say anything, and whose LLM client would wait that
/// long: the only way one of its LLM requests ends within the hang guard is its client dropping
/// it.
async fn app_with_a_model_that_never_answers() -> TestApp {
    TestApp::builder()
        .setting("FASTNPC_LLM_TIMEOUT_SECS", "900")
        .sim(SimConfig { time_to_first_token: Duration::from_secs(600), ..SimConfig::default() })
        .spawn()
        .await
}

/// Reads a job's stream until it says the job is running.
async fn until_running(
    stream: &mut (impl futures::Stream<Item = anyhow::Result<fastnpc_tests::sse_client::SseEvent>> + Unpin),
) {
    let running = async {
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            if event.event == "status" && event.data["status"] == "running" {
                return;
            }
        }
        panic!("the stream ended before the job ran");
    };
    tokio::time::timeout(HANG_GUARD, running).await.expect("the job starts");
}

#[tokio::test]
async fn a_running_generation_is_cancelled_and_its_character_never_left_half_made() {
    let app = app_with_a_model_that_never_answers().await;
    let user = app.user("ada").await;
    let created = app.create_character(&user, "诸葛亮").await;
    let job = created["job"]["id"].as_str().unwrap();

    let mut stream = app.open_events(&user, job, None).await;
    until_running(&mut stream).await;
    // The nine category calls are out, waiting for a model that will not answer in time.
    app.wait_for_llm_in_flight(9).await;
    let (status, body) = cancel(&app, &user, job).await;
    assert_eq!(status, 202, "{body}");
    let rest: Vec<_> = stream.map(|e| e.unwrap()).collect().await;
    assert_eq!(rest.last().unwrap().event, "cancelled");
    assert!(rest.iter().all(|e| e.event != "succeeded" && e.event != "failed"));

    let job = app.wait_for_job(&user, job).await;
    assert_eq!(job["status"], "cancelled");
    let character_id = created["character"]["id"].as_str().unwrap();
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &user).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "failed");
    assert!(character["character"]["profile"].is_null());
    // The calls were dropped, not left to run on: the simulator sees every connection closed.
    app.wait_until_llm_idle().await;
    assert_eq!(app.sim.stats().requests_served, 0, "no call completed");

    // Cancelling again changes nothing.
    let (status, again) = cancel(&app, &user, job["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(again["job"]["status"], "cancelled");
    assert_eq!(again["job"]["finished_at"], job["finished_at"]);
    let events = app.collect_events(&user, job["id"].as_str().unwrap(), None).await;
    assert_eq!(events.iter().filter(|e| e.event == "cancelled").count(), 1, "one terminal event");
    app.stop().await;
}

#[tokio::test]
async fn a_queued_job_that_is_cancelled_never_starts() {
    // About a broker message outliving its job's cancellation: the distributed mode's concern.
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("grace").await;
    let created = app.create_character(&user, "李白").await;
    let job = created["job"]["id"].as_str().unwrap();
    // Its message is in the queue, waiting for a worker.
    app.wait_for_job_published(job).await;
    let (status, body) = cancel(&app, &user, job).await;
    assert_eq!(status, 200);
    assert_eq!(body["job"]["status"], "cancelled");
    let events = app.collect_events(&user, job, None).await;
    assert_eq!(events.last().unwrap().event, "cancelled");

    // A worker comes up and consumes the job's message: it must not run it.
    let stop = CancellationToken::new();
    let worker = tokio::spawn(fastnpc_worker::run(app.settings.clone(), stop.clone()));
    app.wait_for_empty_queue().await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(app.sim.stats().requests_received, 0, "the cancelled job never started");
    assert_eq!(app.wait_for_job(&user, job).await["status"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn a_streaming_reply_is_cancelled_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let user = app.user("hedy").await;
    let character = app.ready_character(&user, "杜甫").await;
    // Now a slow, long reply: two minutes of tokens, longer than the hang guard.
    app.sim.set_config(SimConfig {
        inter_token_delay: Duration::from_millis(200),
        reply_tokens: 600,
        ..SimConfig::default()
    });
    let sent: Value = app.send_message(&user, &character, "讲个长故事", None).await.json().await.unwrap();
    let job = sent["job"]["id"].as_str().unwrap();

    let mut stream = app.open_events(&user, job, None).await;
    while let Some(event) = stream.next().await {
        if event.unwrap().event == "token" {
            break;
        }
    }
    let served = app.sim.stats().requests_served;
    assert_eq!(app.sim.stats().in_flight, 1, "the reply is streaming");
    assert_eq!(cancel(&app, &user, job).await.0, 202);
    let rest: Vec<_> = stream.map(|e| e.unwrap()).collect().await;
    assert_eq!(rest.last().unwrap().event, "cancelled");
    // The reply's stream was dropped, not read to its end.
    app.wait_until_llm_idle().await;
    assert_eq!(app.sim.stats().requests_served, served);
    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the user's message stays; no partial reply is stored");
    assert_eq!(items[0]["author"], "user");
    app.stop().await;
}

#[tokio::test]
async fn another_users_job_cannot_be_cancelled() {
    let app = TestApp::builder().workers(0).spawn().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let created = app.create_character(&owner, "王维").await;
    let job = created["job"]["id"].as_str().unwrap();
    let response = app.request(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(&other)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let job: Value = app.get(&format!("/v1/jobs/{job}"), &owner).await.json().await.unwrap();
    assert_eq!(job["job"]["status"], "queued", "unchanged");
    app.stop().await;
}

#[tokio::test]
async fn a_cancellation_whose_signal_was_lost_is_relayed_by_the_heartbeat() {
    // Heartbeats every second: the relay is what ends this job, so it should not take ten.
    let app = TestApp::builder()
        .setting("FASTNPC_JOB_LEASE_SECS", "3")
        .setting("FASTNPC_LLM_TIMEOUT_SECS", "900")
        .sim(SimConfig { time_to_first_token: Duration::from_secs(600), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("lin").await;
    let created = app.create_character(&user, "韩愈").await;
    let job = created["job"]["id"].as_str().unwrap();
    let mut stream = app.open_events(&user, job, None).await;
    until_running(&mut stream).await;
    app.wait_for_llm_in_flight(9).await;

    // The cancellation is recorded in the job's row, as the API records it, but its signal never
    // reaches the worker (none is sent): only the worker's heartbeat can learn of it.
    app.db.flag_cancel_requested(job).await;
    let rest =
        tokio::time::timeout(HANG_GUARD, stream.map(|e| e.unwrap()).collect::<Vec<_>>()).await.expect("the job ends");
    assert_eq!(rest.last().unwrap().event, "cancelled", "{rest:?}");
    assert!(rest.iter().all(|e| e.event != "succeeded" && e.event != "failed"));
    let job = app.wait_for_job(&user, job).await;
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["attempts"], 1);
    let character_id = created["character"]["id"].as_str().unwrap();
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &user).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "failed", "never left generating");
    app.wait_until_llm_idle().await;
    assert_eq!(app.sim.stats().requests_served, 0);
    app.stop().await;
}
