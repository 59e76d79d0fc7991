//! Serial keys at the store level: the claim's guard against running two jobs of one key.

use std::time::Duration;

use fastnpc_shared::{
    ids::{JobId, UserId},
    jobs::JobKind,
    store::{self, jobs::NewJob},
};
use fastnpc_tests::harness::TestApp;

fn job(job_id: JobId, user_id: UserId, key: &str) -> NewJob<'_> {
    NewJob {
        job_id,
        user_id,
        kind: JobKind::CompressMemory,
        character_id: None,
        message_id: None,
        group_id: None,
        serial_key: Some(key.to_owned()),
        progress_total: 0,
        idempotency: None,
    }
}

#[tokio::test]
async fn a_job_waits_while_another_of_its_key_runs_whatever_their_ids() {
    // No workers: the test claims by hand.
    let app = TestApp::builder().workers(0).spawn().await;
    let ada = app.user("ada").await;
    let user_id = user_id(&app, &ada).await;
    let lease = Duration::from_secs(30);
    let key = "memory:test";

    // `earlier` gets the smaller id but commits after `later` was already claimed, as happens
    // when two requests race: id order is not commit order.
    let earlier = JobId::new();
    let later = JobId::new();
    app.store.insert_job(job(later, user_id, key)).await.unwrap();
    let running = app.store.claim_job(later, lease).await.unwrap().expect("the only job of its key runs");
    app.store.insert_job(job(earlier, user_id, key)).await.unwrap();
    assert!(app.store.claim_job(earlier, lease).await.unwrap().is_none(), "one job of a key at a time");
    assert_eq!(app.store.next_in_series(key).await.unwrap(), Some(earlier));

    app.store.succeed_job(&running, &serde_json::json!({})).await.unwrap();
    assert!(app.store.claim_job(earlier, lease).await.unwrap().is_some(), "its turn came");

    // Queued jobs wait for earlier queued ones too.
    let (first, second) = (JobId::new(), JobId::new());
    let other_key = "memory:other";
    app.store.insert_job(job(first, user_id, other_key)).await.unwrap();
    app.store.insert_job(job(second, user_id, other_key)).await.unwrap();
    assert!(app.store.claim_job(second, lease).await.unwrap().is_none());
    assert!(app.store.claim_job(first, lease).await.unwrap().is_some());
    app.stop().await;
}

#[tokio::test]
async fn a_stalled_claim_is_taken_over_and_its_late_writes_are_refused() {
    let app = TestApp::builder().workers(0).spawn().await;
    let grace = app.user("grace").await;
    let user_id = user_id(&app, &grace).await;
    let job_id = JobId::new();
    app.store.insert_job(job(job_id, user_id, "memory:stall")).await.unwrap();
    let lease = Duration::from_secs(30);
    let stalled = app.store.claim_job(job_id, lease).await.unwrap().unwrap();
    assert!(app.store.claim_job(job_id, lease).await.unwrap().is_none(), "a live lease is respected");

    // The first worker stalls past its lease (its heartbeat stopped): another takes over.
    // (Expiring every running lease is what the store offers for exactly this situation.)
    app.store.reset_deliveries().await.unwrap();
    let successor = app.store.claim_job(job_id, lease).await.unwrap().expect("taken over");
    assert_eq!(successor.attempt, stalled.attempt + 1);

    // The stalled worker wakes up: none of its writes land.
    assert_eq!(app.store.renew_lease(&stalled, lease).await.unwrap(), store::jobs::Heartbeat::Lost);
    assert!(!app.store.set_progress(&stalled, 1).await.unwrap());
    assert!(!app.store.succeed_job(&stalled, &serde_json::json!({"by": "stalled"})).await.unwrap());
    assert!(app.store.succeed_job(&successor, &serde_json::json!({"by": "successor"})).await.unwrap());
    let finished = app.store.job(user_id, job_id).await.unwrap().expect("the job");
    assert_eq!(finished.result.unwrap()["by"], "successor", "only one of them finished it");
    app.stop().await;
}

async fn user_id(app: &TestApp, user: &fastnpc_tests::harness::TestUser) -> UserId {
    let me: serde_json::Value = app.get("/v1/me", user).await.json().await.unwrap();
    UserId(me["user"]["id"].as_str().unwrap().parse().unwrap())
}
