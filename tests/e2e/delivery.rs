//! The queue's delivery guarantees on the happy path's edges: a job whose publish never happened
//! is sent by the re-publisher, and a message delivered twice runs the job once.

use fastnpc_shared::{
    ids::JobId,
    jobs::QueueMessage,
    queue::{JobPublisher, Topology},
};
use fastnpc_tests::harness::{Backend, TestApp, sample_source};
use serde_json::json;

#[tokio::test]
async fn a_job_committed_but_never_published_is_sent_by_the_republisher() {
    let app = TestApp::builder().backend(Backend::Distributed).spawn().await;
    let user = app.user("ada").await;
    let (user_id,): (uuid::Uuid,) =
        sqlx::query_as("select user_id from users where username = 'ada'").fetch_one(app.db.postgres()).await.unwrap();
    // What the API leaves behind when it crashes between its commit and its publish.
    let (character_id, job_id) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    sqlx::query("insert into characters (character_id, user_id, name, source) values ($1, $2, '王维', $3)")
        .bind(character_id)
        .bind(user_id)
        .bind(json!({"kind": "text", "text": sample_source("王维")}))
        .execute(app.db.postgres())
        .await
        .unwrap();
    sqlx::query(
        "insert into jobs (job_id, user_id, kind, character_id, progress_total) values ($1, $2, 'generate_character', $3, 9)",
    )
    .bind(job_id)
    .bind(user_id)
    .bind(character_id)
    .execute(app.db.postgres())
    .await
    .unwrap();

    let job = app.wait_for_job(&user, &job_id.to_string()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (published,): (bool,) = sqlx::query_as("select published_at is not null from jobs where job_id = $1")
        .bind(job_id)
        .fetch_one(app.db.postgres())
        .await
        .unwrap();
    assert!(published, "the re-publisher recorded its confirmed publish");
    app.stop().await;
}

#[tokio::test]
async fn a_message_delivered_twice_runs_the_job_once() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(2).spawn().await;
    let user = app.user("grace").await;
    let created = app.create_character(&user, "李白").await;
    let job_id: JobId = created["job"]["id"].as_str().unwrap().parse().unwrap();
    // Duplicates of the API's message, as a re-publisher racing the API would send: one while
    // the job runs (its claim finds a live lease), one after it finished (its claim finds it done).
    let publisher = JobPublisher::new(app.settings.amqp_url.clone(), Topology::from_settings(&app.settings));
    let duplicate = QueueMessage::RunJobV1 { job_id };
    publisher.publish(&duplicate).await.unwrap();
    let job = app.wait_for_job(&user, &job_id.to_string()).await;
    assert_eq!(job["status"], "succeeded");
    publisher.publish(&duplicate).await.unwrap();
    app.wait_for_empty_queue().await;

    let events = app.collect_events(&user, &job_id.to_string(), None).await;
    assert_eq!(events.iter().filter(|e| e.event == "succeeded").count(), 1);
    let job = app.wait_for_job(&user, &job_id.to_string()).await;
    assert_eq!(job["attempts"], 1, "claimed once");
    // Stopping drains the workers, so every delivery has been handled when we count.
    let sim = app.stop().await;
    assert_eq!(sim.stats().requests_received, 10, "the LLM work ran once");
}
