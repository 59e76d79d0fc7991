//! Bounds on concurrency: what one worker and one process run at once. Each test offers more
//! work than its bound allows and checks that the most ever running at once is the bound:
//! never more, and no less (so the bound, not something else, is what held the work back).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fastnpc_shared::ids::{JobId, UserId};
use fastnpc_tests::{
    harness::{TestApp, TestUser},
    sim::SimConfig,
};
use serde_json::Value;

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_of_jobs_at_once() {
    const CONCURRENCY: usize = 3;
    let app = TestApp::builder().worker_concurrency(CONCURRENCY as u16).spawn().await;
    let user = app.user("ada").await;
    let characters = ready_characters(&app, &user, 7).await;

    // Replies that take seconds: seven of them at once want seven slots.
    app.sim.set_config(SimConfig { time_to_first_token: Duration::from_secs(2), ..SimConfig::default() });
    let mut jobs = Vec::new();
    for (index, character) in characters.iter().enumerate() {
        let sent: Value = app.send_message(&user, character, &format!("问题{index}"), None).await.json().await.unwrap();
        jobs.push(sent["job"]["id"].as_str().unwrap().to_owned());
    }
    let runs = finished_runs(&app, &user, &jobs).await;
    assert_eq!(most_at_once(&runs), CONCURRENCY, "jobs running at once, from their rows: {runs:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_process_has_at_most_its_llm_concurrency_of_calls_in_flight() {
    const LLM_CONCURRENCY: u64 = 4;
    let app = TestApp::builder()
        .worker_concurrency(16)
        .setting("FASTNPC_LLM_CONCURRENCY", LLM_CONCURRENCY.to_string())
        // Each call takes about half a second; a generation makes its ten calls at once.
        .sim(SimConfig { time_to_first_token: Duration::from_millis(500), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.user("grace").await;

    // Three generations, thirty calls that all want to be in flight together.
    let mut jobs = Vec::new();
    for name in ["诸葛亮", "李白", "王维"] {
        let created = app.create_character(&user, name).await;
        jobs.push(created["job"]["id"].as_str().unwrap().to_owned());
    }
    let runs = finished_runs(&app, &user, &jobs).await;
    let stats = app.sim.stats();
    // Non-streamed calls: the simulator counts a call in flight from its arrival until its answer
    // is ready, inside the window the client holds its permit.
    assert_eq!(stats.peak_in_flight, LLM_CONCURRENCY, "{stats:?}");
    assert_eq!((stats.requests_received, stats.requests_faulted), (30, 0), "each call made once: {stats:?}");
    assert_eq!(most_at_once(&runs), 3, "the three jobs ran together, so the calls were held back by the LLM bound");
    app.stop().await;
}

/// `count` characters, generated and ready; their ids.
async fn ready_characters(app: &TestApp, user: &TestUser, count: usize) -> Vec<String> {
    let mut created = Vec::new();
    for index in 0..count {
        created.push(app.create_character(user, &format!("角色{index}")).await);
    }
    let mut ids = Vec::new();
    for created in created {
        let job = app.wait_for_job(user, created["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        ids.push(created["character"]["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Waits until every job succeeded (each in one attempt) and returns when each ran: from its
/// claim to the commit of its result, as its row records them.
async fn finished_runs(app: &TestApp, user: &TestUser, jobs: &[String]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let me: Value = app.get("/v1/me", user).await.json().await.unwrap();
    let user_id = UserId(me["user"]["id"].as_str().unwrap().parse().unwrap());
    let mut runs = Vec::new();
    for job in jobs {
        let polled = app.wait_for_job(user, job).await;
        assert_eq!((polled["status"].as_str(), polled["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{polled}");
        let job: JobId = job.parse().unwrap();
        let record = app.store.job(user_id, job).await.unwrap().expect("the job");
        runs.push((record.started_at.expect("started"), record.finished_at.expect("finished")));
    }
    runs
}

/// The most runs in progress at one instant. A run that ends at the instant another starts does
/// not overlap it: a slot is freed after its job's result is committed, and only then is the
/// next job claimed.
fn most_at_once(runs: &[(DateTime<Utc>, DateTime<Utc>)]) -> usize {
    // Ends sort before starts at the same instant (false < true).
    let mut edges: Vec<(DateTime<Utc>, bool)> =
        runs.iter().flat_map(|&(start, end)| [(start, true), (end, false)]).collect();
    edges.sort();
    let (mut now, mut most) = (0usize, 0usize);
    for (_, starts) in edges {
        if starts {
            now += 1;
            most = most.max(now);
        } else {
            now -= 1;
        }
    }
    most
}
