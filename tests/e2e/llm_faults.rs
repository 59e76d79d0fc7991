//! A misbehaving model provider: jobs succeed when retries can save them, fail cleanly when they
//! cannot, and no client sees a duplicated token.

use std::time::Duration;

use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::{Fault, Rule, SimConfig},
    sse_client::SseEvent,
};
use serde_json::Value;

/// The streamed reply as a client assembles it: the tokens after the last `reset`.
fn assembled(events: &[SseEvent]) -> String {
    let start = events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1);
    events[start..].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect()
}

async fn chat(app: &TestApp, user: &TestUser, character: &str, content: &str) -> Vec<SseEvent> {
    let sent: Value = app.send_message(user, character, content, None).await.json().await.unwrap();
    app.collect_events(user, sent["job"]["id"].as_str().unwrap(), None).await
}

fn assert_clean_success(events: &[SseEvent]) {
    let last = events.last().unwrap();
    assert_eq!(last.event, "succeeded", "{last:?}");
    assert_eq!(assembled(events), last.data["result"]["message"]["content"].as_str().unwrap(), "no duplicated token");
}

#[tokio::test]
async fn retries_save_replies_from_429_storms_500s_stalls_and_broken_streams() {
    let app = TestApp::builder().setting("FASTNPC_LLM_TIMEOUT_SECS", "1").spawn().await;
    let user = app.user("ada").await;
    let character = app.ready_character(&user, "诸葛亮").await;

    // A 429 storm with Retry-After, then success.
    app.sim.add_rule(Rule {
        when_contains: "限流".into(),
        fault: Fault::RateLimited { retry_after: Duration::from_millis(100) },
        times: Some(4),
    });
    assert_clean_success(&chat(&app, &user, &character, "限流").await);
    // Server errors.
    app.sim.add_rule(Rule { when_contains: "五百".into(), fault: Fault::ServerError, times: Some(3) });
    assert_clean_success(&chat(&app, &user, &character, "五百").await);
    // A call that stalls past the 1 s timeout is abandoned and retried.
    app.sim.add_rule(Rule {
        when_contains: "卡住".into(),
        fault: Fault::Stall(Duration::from_secs(5)),
        times: Some(1),
    });
    assert_clean_success(&chat(&app, &user, &character, "卡住").await);
    // Streams that break midway, three ways: dropped, an error event on a 200, a garbled chunk.
    for (trigger, fault) in
        [("断开", Fault::DropConnection), ("中途出错", Fault::MidStreamError), ("乱码", Fault::MalformedChunk)]
    {
        app.sim.add_rule(Rule { when_contains: trigger.into(), fault, times: Some(1) });
        let events = chat(&app, &user, &character, trigger).await;
        assert_clean_success(&events);
        assert!(events.iter().any(|e| e.event == "reset"), "{trigger}: the broken text was voided");
    }
    app.stop().await;
}

#[tokio::test]
async fn faults_beyond_the_retries_fail_cleanly() {
    let app = TestApp::builder().setting("FASTNPC_LLM_MAX_RETRIES", "2").spawn().await;
    let user = app.user("grace").await;
    let character = app.ready_character(&user, "李白").await;
    let quiet = SimConfig { time_to_first_token: Duration::from_millis(10), ..SimConfig::default() };
    app.sim.set_config(quiet);

    app.sim.add_rule(Rule {
        when_contains: "一直限流".into(),
        fault: Fault::RateLimited { retry_after: Duration::from_millis(50) },
        times: None,
    });
    let events = chat(&app, &user, &character, "一直限流").await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "failed");
    assert_eq!(last.data["code"], "llm_rate_limited");
    assert!(events.iter().all(|e| e.event != "token"));

    // A broken stream every time: the text shown is voided, then the job fails.
    app.sim.add_rule(Rule { when_contains: "总是断开".into(), fault: Fault::DropConnection, times: None });
    let events = chat(&app, &user, &character, "总是断开").await;
    assert_eq!(events.last().unwrap().event, "failed");
    assert!(events.iter().any(|e| e.event == "reset"));

    let history: Value = app.get(&format!("/v1/characters/{character}/messages"), &user).await.json().await.unwrap();
    assert!(history["items"].as_array().unwrap().iter().all(|m| m["author"] == "user"), "no reply was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_clearly() {
    let app = TestApp::builder().setting("FASTNPC_JOB_DEADLINE_SECS", "1").spawn().await;
    let user = app.user("linus").await;
    // Generation calls that take far longer than the deadline.
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(30), ..SimConfig::default() });
    let created = app.create_character(&user, "王勃").await;
    let job = app.wait_for_job(&user, created["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "deadline_exceeded");
    let character: Value = app
        .get(&format!("/v1/characters/{}", created["character"]["id"].as_str().unwrap()), &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(character["character"]["status"], "failed");
    app.stop().await;
}
