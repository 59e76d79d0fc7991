//! Serial keys: the claim's guard against running two jobs of one key, and the re-publisher that
//! sends the next job of a series when the worker that should have sent it died.

use std::time::Duration;

use fastnpc_shared::{
    ids::{CharacterId, JobId, UserId},
    jobs::{JobKind, JobStatus},
    store::{self, jobs::NewJob},
};
use fastnpc_tests::harness::{TestApp, TestDb};

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
        params: None,
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

    // The stalled worker wakes up: none of its writes land, nor the progress its heartbeat carries.
    stalled.progress.advance(1);
    assert_eq!(app.store.renew_lease(&stalled, lease).await.unwrap(), store::jobs::Heartbeat::Lost);
    assert_eq!(app.store.job(user_id, job_id).await.unwrap().unwrap().progress_done, 0);
    assert!(!app.store.succeed_job(&stalled, &serde_json::json!({"by": "stalled"})).await.unwrap());
    assert!(app.store.succeed_job(&successor, &serde_json::json!({"by": "successor"})).await.unwrap());
    let finished = app.store.job(user_id, job_id).await.unwrap().expect("the job");
    assert_eq!(finished.result.unwrap()["by"], "successor", "only one of them finished it");
    app.stop().await;
}

/// A worker claims what is delivered together in one statement (the Postgres store's claim
/// rounds). Within such a round a series still runs one job at a time, its earliest first, and
/// a job delivered twice is claimed once.
#[tokio::test]
async fn claims_asked_together_keep_a_series_in_order_and_claim_a_duplicate_once() {
    let app = TestApp::builder().workers(0).spawn().await;
    let ada = app.user("ada").await;
    let user_id = user_id(&app, &ada).await;
    let lease = Duration::from_secs(30);
    let series: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for &job_id in &series {
        app.store.insert_job(job(job_id, user_id, "memory:round")).await.unwrap();
    }
    let keys: Vec<String> = (0..3).map(|n| format!("memory:alone-{n}")).collect();
    let alone: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for (&job_id, key) in alone.iter().zip(&keys) {
        app.store.insert_job(job(job_id, user_id, key)).await.unwrap();
    }

    // Not in id order, and `alone[1]` twice.
    let asks = [series[2], alone[0], series[0], alone[1], alone[1], series[1], alone[2]];
    let claims = futures::future::join_all(asks.iter().map(|&job_id| app.store.claim_job(job_id, lease))).await;
    let claimed: Vec<Option<JobId>> =
        claims.into_iter().map(|claim| claim.unwrap().map(|claim| claim.job_id)).collect();
    assert_eq!(claimed[0], None, "the series' last job waits");
    assert_eq!(claimed[2], Some(series[0]), "the series' first job runs");
    assert_eq!(claimed[5], None, "the series' second job waits");
    assert_eq!((claimed[1], claimed[6]), (Some(alone[0]), Some(alone[2])), "jobs of their own series run");
    let duplicate: Vec<_> = claimed[3..5].iter().flatten().collect();
    assert_eq!(duplicate, vec![&alone[1]], "a job asked for twice is claimed once");
    assert_eq!(job_record(&app, user_id, alone[1]).await.attempts, 1);
    app.stop().await;
}

async fn user_id(app: &TestApp, user: &fastnpc_tests::harness::TestUser) -> UserId {
    let me: serde_json::Value = app.get("/v1/me", user).await.json().await.unwrap();
    UserId(me["user"]["id"].as_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn the_next_job_of_a_dead_workers_series_is_sent_by_the_republisher() {
    let app = TestApp::spawn().await;
    let lin = app.user("lin").await;
    let user_id = user_id(&app, &lin).await;
    let character: CharacterId = app.ready_character(&lin, "诸葛亮").await.parse().unwrap();

    // Two messages to one character: `first` is answered by a worker (the test stands in for it,
    // claiming the job through the store as a worker does), `second` waits for it. Its message
    // has been dropped, as a worker drops the message of a job that must wait its turn: nothing
    // in the queue will run it; the worker that ends `first` is meant to publish it.
    let first = app.store_message(user_id, character, "第一问").await;
    let claim = app.store.claim_job(first, Duration::from_secs(30)).await.unwrap().expect("the first job runs");
    let second = app.store_message(user_id, character, "第二问").await;
    assert_eq!(app.store.next_in_series(&store::jobs::serial::chat(character)).await.unwrap(), Some(second));
    assert!(app.store.claim_job(second, Duration::from_secs(30)).await.unwrap().is_none(), "it waits its turn");

    // The worker ends `first` and dies before publishing `second`.
    assert!(app.store.succeed_job(&claim, &serde_json::json!({"by": "the worker that died"})).await.unwrap());

    let job = app.wait_for_job(&lin, &second.to_string()).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{job}");
    assert!(published(&app.db, second).await, "the re-publisher recorded its confirmed publish");
    let reply = app.db.stored_reply(&second.to_string()).await.expect("the second message is answered");
    assert!(!reply.is_empty());
    assert_eq!(app.llm_requests_for("第二问"), 1, "answered once");
    assert_eq!(app.llm_requests_for("第一问"), 0, "the first job was not run again");
    let (first, second) = (job_record(&app, user_id, first).await, job_record(&app, user_id, second).await);
    assert_eq!(first.status, JobStatus::Succeeded);
    assert!(
        second.started_at.unwrap() >= first.finished_at.unwrap(),
        "the series kept its order: {first:?} {second:?}"
    );
    app.stop().await;
}

/// A chat message and the job that answers it, committed as the API commits them, and never
/// published.
async fn job_record(app: &TestApp, user_id: UserId, job_id: JobId) -> store::jobs::JobRecord {
    app.store.job(user_id, job_id).await.unwrap().expect("the job exists")
}

/// Whether the broker's confirm of the job's message was recorded.
async fn published(db: &TestDb, job_id: JobId) -> bool {
    let sql = "select published_at is not null from jobs where job_id = $1";
    match db {
        TestDb::Postgres(pool) => sqlx::query_scalar(sql).bind(job_id.0).fetch_one(pool).await,
        TestDb::Sqlite(pool) => sqlx::query_scalar(sql).bind(job_id.0).fetch_one(pool).await,
    }
    .expect("read the job")
}
