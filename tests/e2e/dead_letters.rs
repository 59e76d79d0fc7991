//! Dead letters: failed and poison messages land in the dead-letter queue, with their jobs marked
//! failed, and an operator can list and requeue them. Listing takes nothing out of the queue, and
//! requeueing acks a letter only once its job is reopened and its message confirmed, so neither
//! loses a letter when it fails or dies half-way.

use fastnpc_shared::{
    ids::JobId,
    jobs::{JobError, JobStatus},
    queue::{self, JobPublisher, Topology},
    settings::Secret,
};
use fastnpc_tests::{
    harness::{Backend, HANG_GUARD, TestApp, TestUser},
    sim::{Fault, Rule},
};
use fastnpc_worker::dead_letters::{self, Selection};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
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
    let letters = wait_for_letters(&app, 1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id.map(|id| id.to_string()).as_deref(), Some(job_id));
    assert_eq!(letters[0].reason, "rejected");
    assert_eq!(dead_letters::list(&app.settings).await.unwrap().len(), 1, "listing leaves them in place");

    // The operator fixed the cause (here: the model behaves again) and requeues.
    app.sim.reset();
    let outcome = dead_letters::requeue(&app.settings, &Selection::All).await.unwrap();
    assert_eq!(outcome.requeued.len(), 1);
    assert!(outcome.left.is_empty());
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
    let letters = wait_for_letters(&app, 1).await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].body.contains("run_job.v9"));
    assert_eq!(app.sim.stats().requests_received, 0);
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn listing_reads_the_letters_without_taking_or_rewriting_them() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let (first, second) = (JobId::new(), JobId::new());
    let bodies = [run_job(first), b"not json at all".to_vec(), run_job(second)];
    for (n, body) in bodies.iter().enumerate() {
        put_letter(&app, body, &format!("letter-{n}")).await;
    }

    for _ in 0..2 {
        let letters = dead_letters::list(&app.settings).await.unwrap();
        assert_eq!(letters.iter().map(|l| l.job_id).collect::<Vec<_>>(), [Some(first), None, Some(second)]);
        assert_eq!(letters.iter().map(|l| l.body.as_bytes()).collect::<Vec<_>>(), bodies.each_ref().map(|b| &b[..]));
        assert!(letters.iter().all(|l| l.reason == "rejected"));
    }

    // The queue holds the very messages that were put there, in their order: each was delivered
    // to the lister and handed back (a re-published copy would be a fresh message, never
    // delivered), with its properties and headers as they were.
    let connection = queue::connect(&app.settings.amqp_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead_queue = Topology::from_settings(&app.settings).dead_queue;
    for (n, body) in bodies.iter().enumerate() {
        let got = channel
            .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("letter {n} is still in the queue"));
        let delivery = got.delivery;
        assert_eq!(&delivery.data, body, "letter {n} in its place");
        assert_eq!(
            delivery.properties.message_id().as_ref().map(|id| id.as_str()),
            Some(format!("letter-{n}").as_str())
        );
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        assert_eq!(
            headers.inner().get("x-first-death-reason"),
            Some(&AMQPValue::LongString("rejected".into())),
            "letter {n} keeps its headers"
        );
        assert!(delivery.redelivered, "letter {n} is the original message, not a copy");
    }
    assert!(channel.basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap().is_none());
    channel.basic_nack(0, BasicNackOptions { multiple: true, requeue: true }).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn requeueing_leaves_the_letters_of_jobs_it_cannot_reopen() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("hopper").await;
    let failed = failed_job(&app, &user, "杜甫").await;
    let unknown = JobId::new();
    put_letter(&app, &run_job(failed), "failed").await;
    put_letter(&app, &run_job(unknown), "unknown").await;
    put_letter(&app, b"not json", "junk").await;

    let outcome = dead_letters::requeue(&app.settings, &Selection::All).await.unwrap();

    assert_eq!(outcome.requeued, [failed]);
    assert_eq!(outcome.left, [(unknown, None)]);
    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.job_id).collect::<Vec<_>>(),
        [Some(unknown), None],
        "only the requeued letter left"
    );
    assert_eq!(app.store.job_status(failed).await.unwrap(), Some(JobStatus::Queued));
    app.stop().await;
}

#[tokio::test]
async fn a_requeue_that_cannot_publish_leaves_the_letter_and_running_it_again_finishes() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("lovelace").await;
    let job = failed_job(&app, &user, "王维").await;
    let other = failed_job(&app, &user, "孟浩然").await;
    put_letter(&app, &run_job(job), "job").await;
    put_letter(&app, &run_job(other), "other").await;

    // The store can be reached but the jobs queue cannot (nothing listens on that port).
    let unreachable =
        JobPublisher::new(Secret::new(format!("amqp://guest:guest@{}/%2f", closed_port())), topology(&app));
    let error =
        dead_letters::requeue_with(&app.settings, &Selection::Jobs(vec![job]), app.store.as_ref(), &unreachable)
            .await
            .expect_err("the publish fails");
    assert!(format!("{error:#}").contains(&job.to_string()), "{error:#}");

    // The job was reopened (the API's re-publisher would send it), but the letter was not acked.
    assert_eq!(app.store.job_status(job).await.unwrap(), Some(JobStatus::Queued));
    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.job_id).collect::<Vec<_>>(), [Some(job), Some(other)]);

    // Running the command again finishes the work: the job is already queued, so it is only
    // published, and its letter goes.
    let outcome = dead_letters::requeue(&app.settings, &Selection::Jobs(vec![job])).await.unwrap();
    assert_eq!(outcome.requeued, [job]);
    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.job_id).collect::<Vec<_>>(), [Some(other)]);
    assert_eq!(app.store.job_status(other).await.unwrap(), Some(JobStatus::Failed));

    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(fastnpc_worker::run(app.settings.clone(), stop.clone()));
    let finished = app.wait_for_job(&user, &job.to_string()).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    stop.cancel();
    worker.await.unwrap().unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_requeue_killed_between_reopening_and_publishing_loses_no_letter() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("turing").await;
    let job = failed_job(&app, &user, "苏轼").await;
    put_letter(&app, &run_job(job), "job").await;

    // A "broker" that accepts the publisher's connection and never answers: the requeue is
    // stopped dead while its job is reopened and its message not confirmed.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let publisher = JobPublisher::new(
        Secret::new(format!("amqp://guest:guest@{}/%2f", silent.local_addr().unwrap())),
        topology(&app),
    );
    let requeue = {
        let (settings, store) = (app.settings.clone(), app.store.clone());
        tokio::spawn(
            async move { dead_letters::requeue_with(&settings, &Selection::All, store.as_ref(), &publisher).await },
        )
    };
    let (_socket, _) = tokio::time::timeout(HANG_GUARD, silent.accept()).await.expect("the requeue publishes").unwrap();
    assert_eq!(app.store.job_status(job).await.unwrap(), Some(JobStatus::Queued), "reopened before the publish");
    requeue.abort();
    assert!(requeue.await.unwrap_err().is_cancelled());

    // The dead requeue's connection closes and the broker hands its letter back.
    let letters = wait_for_letters(&app, 1).await;
    assert_eq!(letters.iter().map(|l| l.job_id).collect::<Vec<_>>(), [Some(job)]);
    let outcome = dead_letters::requeue(&app.settings, &Selection::All).await.unwrap();
    assert_eq!(outcome.requeued, [job]);
    assert!(dead_letters::list(&app.settings).await.unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_requeue_that_cannot_reach_the_database_touches_no_letter() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let job = JobId::new();
    put_letter(&app, &run_job(job), "job").await;
    let mut settings = app.settings.clone();
    // The server answers, the database does not exist: the connection is refused at once.
    settings.database_url = Secret::new(format!("{}_missing", app.settings.database_url.expose()));

    dead_letters::requeue(&settings, &Selection::All).await.expect_err("no database");

    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(letters.iter().map(|l| l.job_id).collect::<Vec<_>>(), [Some(job)]);
    app.stop().await;
}

fn topology(app: &TestApp) -> Topology {
    Topology::from_settings(&app.settings)
}

fn run_job(job_id: JobId) -> Vec<u8> {
    serde_json::to_vec(&fastnpc_shared::jobs::QueueMessage::RunJobV1 { job_id }).unwrap()
}

/// A local address nothing listens on (bound, then released).
fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A generation job that failed for good (its message gone from the jobs queue), as a worker
/// leaves one before it dead-letters the message.
async fn failed_job(app: &TestApp, user: &TestUser, name: &str) -> JobId {
    let created = app.create_character(user, name).await;
    let job_id = created["job"]["id"].as_str().unwrap();
    app.wait_for_job_published(job_id).await;
    let connection = queue::connect(&app.settings.amqp_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_purge(topology(app).jobs_queue.as_str().into(), Default::default()).await.unwrap();
    let _ = connection.close(200, "done".into()).await;
    let job_id: JobId = job_id.parse().unwrap();
    let error = JobError::new("llm_failed", "the model failed");
    assert!(app.store.fail_unclaimed_job(job_id, &error).await.unwrap());
    job_id
}

/// Puts a letter in the dead-letter queue the way the broker's dead-lettering would (persistent,
/// `x-first-death-reason: rejected`), tagged with `message_id`; confirmed.
async fn put_letter(app: &TestApp, body: &[u8], message_id: &str) {
    let topology = topology(app);
    let connection = queue::connect(&app.settings.amqp_url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare(&channel).await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("x-first-death-reason".into(), AMQPValue::LongString("rejected".into()));
    let properties =
        BasicProperties::default().with_delivery_mode(2).with_message_id(message_id.into()).with_headers(headers);
    let confirmation = channel
        .basic_publish("".into(), topology.dead_queue.as_str().into(), BasicPublishOptions::default(), body, properties)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());
    let _ = connection.close(200, "done".into()).await;
}

/// Polls the listing until it shows `count` letters (dead-lettering and a closed channel's
/// hand-back are asynchronous in the broker); hang-guarded.
async fn wait_for_letters(app: &TestApp, count: usize) -> Vec<dead_letters::DeadLetter> {
    let poll = async {
        loop {
            let letters = dead_letters::list(&app.settings).await.unwrap();
            if letters.len() >= count {
                return letters;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the letters arrive")
}
