//! Workers that die or are stopped mid-job: nothing accepted is lost, nothing is done twice.

use std::time::Duration;

use fastnpc_tests::{
    harness::{Backend, HANG_GUARD, TestApp, TestUser},
    sim::SimConfig,
};
use serde_json::{Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_fastnpc-test-worker");

/// `count` ready characters of the user's, written directly (generation is not under test).
async fn characters(app: &TestApp, count: usize) -> Vec<uuid::Uuid> {
    let (user_id,): (uuid::Uuid,) =
        sqlx::query_as("select user_id from users").fetch_one(app.db.postgres()).await.unwrap();
    let mut ids = Vec::new();
    for index in 0..count {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "insert into characters (character_id, user_id, name, status, source, profile, brief)
             values ($1, $2, $3, 'ready', $4, '{}', '一位诗人。')",
        )
        .bind(id)
        .bind(user_id)
        .bind(format!("角色{index}"))
        .bind(json!({"kind": "text", "text": "一位诗人，生于唐代，以诗闻名，游历四方。"}))
        .execute(app.db.postgres())
        .await
        .unwrap();
        ids.push(id);
    }
    ids
}

async fn until(condition: impl AsyncFn() -> bool) {
    let poll = async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the condition is met");
}

async fn send_all(app: &TestApp, user: &TestUser, characters: &[uuid::Uuid]) -> Vec<String> {
    let mut jobs = Vec::new();
    for (index, character) in characters.iter().enumerate() {
        let sent: Value =
            app.send_message(user, &character.to_string(), &format!("问题{index}"), None).await.json().await.unwrap();
        jobs.push(sent["job"]["id"].as_str().unwrap().to_owned());
    }
    jobs
}

#[tokio::test]
async fn killing_a_worker_during_50_replies_loses_and_duplicates_nothing() {
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .workers(0)
        .worker_concurrency(64)
        .setting("FASTNPC_JOB_LEASE_SECS", "2")
        .sim(SimConfig { time_to_first_token: Duration::from_secs(3), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("ada").await;
    let characters = characters(&app, 50).await;
    let doomed = app.spawn_worker_process(WORKER);
    let jobs = send_all(&app, &user, &characters).await;

    // Every reply is in flight in the doomed worker: kill it without warning.
    until(async || app.sim.stats().in_flight >= 50).await;
    doomed.signal("KILL");
    assert!(!doomed.wait().await, "killed, not exited");
    let _survivor = app.spawn_worker_process(WORKER);

    for job in &jobs {
        let job = app.wait_for_job(&user, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(job["attempts"].as_i64().unwrap() >= 2, "taken over after the crash");
    }
    let (replies, answered): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct reply_to) from messages where author = 'character'")
            .fetch_one(app.db.postgres())
            .await
            .unwrap();
    assert_eq!((replies, answered), (50, 50), "each reply stored exactly once");
    let events = app.collect_events(&user, &jobs[0], None).await;
    assert_eq!(events.iter().filter(|e| e.event == "succeeded").count(), 1);
    let tokens_after_reset: String = events
        .iter()
        .skip(events.iter().rposition(|e| e.event == "reset").map_or(0, |i| i + 1))
        .filter(|e| e.event == "token")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(tokens_after_reset, events.last().unwrap().data["result"]["message"]["content"].as_str().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_worker_stopped_with_sigterm_finishes_what_it_holds() {
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .workers(0)
        .sim(SimConfig { time_to_first_token: Duration::from_secs(2), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("grace").await;
    let characters = characters(&app, 3).await;
    let worker = app.spawn_worker_process(WORKER);
    let jobs = send_all(&app, &user, &characters).await;
    until(async || app.sim.stats().in_flight >= 3).await;

    worker.signal("TERM");
    assert!(worker.wait().await, "the worker drained and exited cleanly");
    for job in &jobs {
        let job = app.wait_for_job(&user, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "finished by the worker that was stopping");
    }
    let replies = app.db.count("select count(*) from messages where author = 'character'").await;
    assert_eq!(replies, 3);
    app.stop().await;
}
