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
    app.user("ada").await;
    let (user_id,): (uuid::Uuid,) = sqlx::query_as("select user_id from users").fetch_one(&app.db).await.unwrap();
    let user_id = UserId(user_id);
    let lease = Duration::from_secs(30);
    let key = "memory:test";

    // `earlier` gets the smaller id but commits after `later` was already claimed, as happens
    // when two requests race: id order is not commit order.
    let earlier = JobId::new();
    let later = JobId::new();
    store::jobs::insert(&app.db, job(later, user_id, key)).await.unwrap();
    let running = store::jobs::claim(&app.db, later, lease).await.unwrap().expect("the only job of its key runs");
    store::jobs::insert(&app.db, job(earlier, user_id, key)).await.unwrap();
    assert!(store::jobs::claim(&app.db, earlier, lease).await.unwrap().is_none(), "one job of a key at a time");
    assert_eq!(store::jobs::next_in_series(&app.db, key).await.unwrap(), Some(earlier));

    store::jobs::succeed(&app.db, &running, &serde_json::json!({})).await.unwrap();
    assert!(store::jobs::claim(&app.db, earlier, lease).await.unwrap().is_some(), "its turn came");

    // Queued jobs wait for earlier queued ones too.
    let (first, second) = (JobId::new(), JobId::new());
    let other_key = "memory:other";
    store::jobs::insert(&app.db, job(first, user_id, other_key)).await.unwrap();
    store::jobs::insert(&app.db, job(second, user_id, other_key)).await.unwrap();
    assert!(store::jobs::claim(&app.db, second, lease).await.unwrap().is_none());
    assert!(store::jobs::claim(&app.db, first, lease).await.unwrap().is_some());
    app.stop().await;
}
