//! Dead letters: failed and poison messages land in the dead-letter queue, with their jobs marked
//! failed, and an operator can list and requeue them.

use fastnpc_shared::queue::{self, Topology};
use fastnpc_tests::{
    harness::{Backend, TestApp},
    sim::{Fault, Rule},
};
use fastnpc_worker::dead_letters::{self, Selection};
use lapin::{BasicProperties, options::BasicPublishOptions};
use serde_json::Value;

#[tokio::test]
async fn a_failed_job_is_dead_lettered_and_can_be_requeued() {
    let app = TestApp::builder().backend(Backend::Distributed).spawn().await;
    let user = app.user("ada").await;
    app.sim.add_rule(Rule { when_contains: "背景故事".into(), fault: Fault::InvalidJson, times: None });
    let created = app.create_character(&user, "诸葛亮").await;
    let job_id = created["job"]["id"].as_str().unwrap();
    assert_eq!(app.wait_for_job(&user, job_id).await["status"], "failed");
    app.wait_for_empty_queue().await;

    // The rejection reaches the dead-letter queue asynchronously; poll the listing.
    let letters = tokio::time::timeout(fastnpc_tests::harness::HANG_GUARD, async {
        loop {
            let letters = dead_letters::list(&app.settings).await.unwrap();
            if !letters.is_empty() {
                return letters;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id.map(|id| id.to_string()).as_deref(), Some(job_id));
    assert_eq!(letters[0].reason, "rejected");
    assert_eq!(dead_letters::list(&app.settings).await.unwrap().len(), 1, "listing leaves them in place");

    // The operator fixed the cause (here: the model behaves again) and requeues.
    app.sim.reset();
    let requeued = dead_letters::requeue(&app.settings, &Selection::All).await.unwrap();
    assert_eq!(requeued.len(), 1);
    let job = app.wait_for_job(&user, job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let character: Value = app
        .get(&format!("/v1/characters/{}", created["character"]["id"].as_str().unwrap()), &user)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(character["character"]["status"], "ready");
    assert!(dead_letters::list(&app.settings).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_poison_message_fails_its_job_and_is_dead_lettered() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("grace").await;
    let created = app.create_character(&user, "李白").await;
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();
    // Replace the job's message with one from a future version no worker understands.
    app.wait_for_job_published(&job_id).await;
    let topology = Topology::from_settings(&app.settings);
    let connection = queue::connect(&app.settings.amqp_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_purge(topology.jobs_queue.as_str().into(), Default::default()).await.unwrap();
    let poison = format!(r#"{{"type":"run_job.v9","job_id":"{job_id}","priority":"urgent"}}"#);
    channel
        .basic_publish(
            "".into(),
            topology.jobs_queue.as_str().into(),
            BasicPublishOptions::default(),
            poison.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(fastnpc_worker::run(app.settings.clone(), stop.clone()));

    let job = app.wait_for_job(&user, &job_id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "poison_message");
    stop.cancel();
    worker.await.unwrap().unwrap();
    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].body.contains("run_job.v9"));
    assert_eq!(app.sim.stats().requests_received, 0);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
