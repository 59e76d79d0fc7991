//! Workers that die or are stopped mid-job: nothing accepted is lost, nothing is done twice.

use std::time::Duration;

use fastnpc_tests::{
    harness::{Backend, HANG_GUARD, TestApp, TestUser, succeeded_stream_text, user_turn},
    sim::SimConfig,
    sse_client::SseEvent,
};
use futures::StreamExt;
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

/// The text of the message sent to the `index`th character: what its reply's LLM requests carry
/// as their user turn, so they can be told apart.
fn question(index: usize) -> String {
    format!("问题{index}")
}

/// Sends [`question`] `i` to character `i`; returns the jobs, in order.
async fn send_all(app: &TestApp, user: &TestUser, characters: &[uuid::Uuid]) -> Vec<String> {
    let mut jobs = Vec::new();
    for (index, character) in characters.iter().enumerate() {
        let sent: Value =
            app.send_message(user, &character.to_string(), &question(index), None).await.json().await.unwrap();
        jobs.push(sent["job"]["id"].as_str().unwrap().to_owned());
    }
    jobs
}

/// How many LLM requests asked for each job's reply (`jobs[i]` answers [`question`] `i`), in
/// `requests`.
fn asked_per_job(requests: &[fastnpc_tests::sim::RecordedRequest], jobs: &[String]) -> Vec<usize> {
    (0..jobs.len())
        .map(|index| requests.iter().filter(|r| user_turn(r) == Some(question(index).as_str())).count())
        .collect()
}

/// Checks a finished reply job's whole stream ([`succeeded_stream_text`]) against the reply it
/// stored; returns the position of its last `reset` event, if any.
async fn check_reply_stream(app: &TestApp, job: &str, events: &[SseEvent]) -> Option<usize> {
    let shown = succeeded_stream_text(events);
    let stored = app.db.stored_reply(job).await.expect("the reply is stored");
    assert_eq!(shown, stored, "job {job}: the tokens after the last reset are the stored reply");
    assert_eq!(
        events.last().unwrap().data["result"]["message"]["content"].as_str(),
        Some(stored.as_str()),
        "job {job}: the terminal event carries the stored reply"
    );
    events.iter().rposition(|e| e.event == "reset")
}

#[tokio::test]
async fn killing_a_worker_during_50_replies_loses_and_duplicates_nothing() {
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .workers(0)
        .worker_concurrency(64)
        // Short enough for a quick takeover, long enough (a heartbeat every second) that the
        // survivor's own leases are not lost on a loaded machine.
        .setting("FASTNPC_JOB_LEASE_SECS", "3")
        .sim(SimConfig { time_to_first_token: Duration::from_secs(3), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("ada").await;
    let characters = characters(&app, 50).await;
    let doomed = app.spawn_worker_process(WORKER);
    let jobs = send_all(&app, &user, &characters).await;

    // Every reply is in flight in the doomed worker: kill it without warning.
    app.wait_for_llm_in_flight(50).await;
    let before_the_kill = app.sim.requests();
    doomed.signal("KILL");
    assert!(!doomed.wait().await, "killed, not exited");
    assert_eq!(asked_per_job(&before_the_kill, &jobs), vec![1; 50], "the doomed worker asked once for each reply");
    let _survivor = app.spawn_worker_process(WORKER);

    for job in &jobs {
        let job = app.wait_for_job(&user, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 2, "taken over once after the crash: {job}");
    }
    let (replies, answered): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct reply_to) from messages where author = 'character'")
            .fetch_one(app.db.postgres())
            .await
            .unwrap();
    assert_eq!((replies, answered), (50, 50), "each reply stored exactly once");
    // The LLM was asked for each reply twice: once by the killed worker, once by the one that
    // took the job over; not again by a duplicate delivery.
    assert_eq!(asked_per_job(&app.sim.requests(), &jobs), vec![2; 50], "two requests per reply");
    for job in &jobs {
        let events = app.collect_events(&user, job, None).await;
        let reset = check_reply_stream(&app, job, &events).await;
        assert!(reset.is_some(), "job {job}: the attempt that took over voided what came before");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_after_showing_tokens_is_replaced_by_a_reset_and_the_whole_reply() {
    let app = TestApp::builder()
        .backend(Backend::Distributed)
        .workers(0)
        .setting("FASTNPC_JOB_LEASE_SECS", "3")
        // Replies of about five seconds: tokens are on screen well before they end.
        .sim(SimConfig { inter_token_delay: Duration::from_millis(80), reply_tokens: 60, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("lin").await;
    let characters = characters(&app, 3).await;
    let doomed = app.spawn_worker_process(WORKER);
    let jobs = send_all(&app, &user, &characters).await;

    // Follow every job live until it has shown some of its reply.
    let mut streams = Vec::new();
    for job in &jobs {
        let mut stream = app.open_events(&user, job, None).await;
        let mut events = Vec::new();
        let shown = async {
            while let Some(event) = stream.next().await {
                let event = event.unwrap();
                let token = event.event == "token";
                events.push(event);
                if token {
                    return;
                }
            }
            panic!("job {job} ended before showing a token: {events:?}");
        };
        tokio::time::timeout(HANG_GUARD, shown).await.expect("the reply starts");
        streams.push((stream, events));
    }
    assert!(app.sim.stats().in_flight >= 3, "every reply is still streaming: {:?}", app.sim.stats());
    let before_the_kill = app.sim.requests();
    doomed.signal("KILL");
    assert!(!doomed.wait().await, "killed, not exited");
    assert_eq!(asked_per_job(&before_the_kill, &jobs), vec![1; 3]);
    let _survivor = app.spawn_worker_process(WORKER);

    for ((mut stream, mut events), job) in streams.into_iter().zip(&jobs) {
        let rest = async {
            while let Some(event) = stream.next().await {
                events.push(event.unwrap());
            }
            events
        };
        let events = tokio::time::timeout(HANG_GUARD, rest).await.expect("the stream ends");
        let reset = check_reply_stream(&app, job, &events).await.expect("a reset voided the dead worker's tokens");
        let voided: String =
            events[..reset].iter().filter(|e| e.event == "token").map(|e| e.data["text"].as_str().unwrap()).collect();
        assert!(!voided.is_empty(), "job {job}: tokens were shown before the reset");
        let job = app.wait_for_job(&user, job).await;
        assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{job}");
    }
    let replies = app.db.count("select count(*) from messages where author = 'character'").await;
    assert_eq!(replies, 3);
    assert_eq!(asked_per_job(&app.sim.requests(), &jobs), vec![2; 3], "once per worker");
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
    app.wait_for_llm_in_flight(3).await;

    worker.signal("TERM");
    assert!(worker.wait().await, "the worker drained and exited cleanly");
    for job in &jobs {
        let job = app.wait_for_job(&user, job).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "finished by the worker that was stopping");
    }
    let replies = app.db.count("select count(*) from messages where author = 'character'").await;
    assert_eq!(replies, 3);
    assert_eq!(asked_per_job(&app.sim.requests(), &jobs), vec![1; 3], "each reply asked for once");
    for job in &jobs {
        let events = app.collect_events(&user, job, None).await;
        assert_eq!(check_reply_stream(&app, job, &events).await, None, "job {job}: nothing to void");
    }
    app.stop().await;
}
