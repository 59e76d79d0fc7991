//! The queue's delivery guarantees on the happy path's edges: a job whose publish never happened
//! is sent by the re-publisher, and a message delivered twice runs the job once; and on its
//! poison edges: a job started too often without ending is failed, and a message that keeps
//! coming back is dead-lettered by the broker.

use std::time::Duration;

use fastnpc_shared::{
    ids::{CharacterId, JobId, MessageId, UserId},
    jobs::{JobKind, QueueMessage},
    queue::{self, DELIVERY_LIMIT, JobPublisher, Topology},
    store::{
        NewCharacter, Quota, Submitted,
        jobs::{self, Claim, NewJob},
        messages::{self, Finish, NewReply},
        stamp,
    },
};
use fastnpc_tests::harness::{Backend, HANG_GUARD, TestApp, TestUser, sample_source};
use fastnpc_worker::dead_letters::{self, Selection};
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};

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

#[tokio::test]
async fn a_job_started_five_times_without_ending_fails_as_poison_and_is_dead_lettered() {
    let app = TestApp::spawn().await;
    let user = app.user("lin").await;
    let user_id = user_id(&app, &user).await;
    // A generation whose workers all died: committed as the API commits it, then claimed five
    // times, each claim's lease left to expire, as a worker killed mid-job leaves it. (The claims
    // are the store's own, so `attempts` counts them as it counts real ones.)
    let (character_id, job_id) = (CharacterId::new(), JobId::new());
    let source = json!({"kind": "text", "text": sample_source("杜甫")});
    let character = NewCharacter::new(character_id, user_id, "杜甫", &source, "zh");
    let job = NewJob {
        job_id,
        user_id,
        kind: JobKind::GenerateCharacter,
        character_id: Some(character_id),
        message_id: None,
        group_id: None,
        serial_key: None,
        progress_total: 9,
        idempotency: None,
        params: None,
    };
    let quota = Quota { active_jobs: 100, characters: 100, groups: 100 };
    assert!(matches!(app.store.submit_character(character, job, &quota).await.unwrap(), Submitted::Created));
    for attempt in 1..=5 {
        let claim = app.store.claim_job(job_id, Duration::from_secs(30)).await.unwrap().expect("claimable");
        assert_eq!(claim.attempt, attempt);
        // The worker dies: its lease runs out (and the broker's message with it is gone).
        app.store.reset_deliveries().await.unwrap();
    }

    // The re-publisher sends the abandoned job again; the worker's claim is its sixth start.
    let job_id = job_id.to_string();
    let job = app.wait_for_job(&user, &job_id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "too_many_attempts", "{job}");
    assert!(job["error"]["message"].as_str().unwrap().contains("started 5 times"), "{job}");
    assert_eq!(job["attempts"], 6, "failed on the claim after the fifth: {job}");
    assert_eq!(app.sim.stats().requests_received, 0, "the poison job was not run again");
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &user).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "failed", "not left generating: {character}");
    let events = app.collect_events(&user, &job_id, None).await;
    let last = events.last().expect("a terminal event");
    assert_eq!((last.event.as_str(), last.data["code"].as_str()), ("failed", Some("too_many_attempts")), "{events:?}");

    if app.backend() == Backend::Distributed {
        let letters = wait_for_letters(&app, 1).await;
        assert_eq!(letters.len(), 1, "{letters:?}");
        assert_eq!(letters[0].job_id.map(|id| id.to_string()), Some(job_id.clone()));
        assert_eq!(letters[0].reason, "rejected", "the worker dead-lettered it");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_message_that_keeps_coming_back_is_dead_lettered_at_the_delivery_limit() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("dufu").await;
    let created = app.create_character(&user, "杜甫").await;
    let job_id = created["job"]["id"].as_str().unwrap().to_owned();
    app.wait_for_job_published(&job_id).await;

    // Workers that take the message and die holding it, one after another: each channel closes
    // with the message unacked, which the broker counts as a failed delivery and returns. (A
    // worker dying is what the limit is for; an explicit `basic.nack` with requeue is not counted
    // by every RabbitMQ version.)
    let jobs_queue = Topology::from_settings(&app.settings).jobs_queue;
    let connection = queue::connect(&app.settings.amqp_url).await.unwrap();
    let limit = usize::try_from(DELIVERY_LIMIT).unwrap();
    let mut deliveries = 0;
    let returned_until_dead_lettered = async {
        loop {
            let channel = connection.create_channel().await.unwrap();
            let got = channel.basic_get(jobs_queue.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap();
            if let Some(message) = &got {
                deliveries += 1;
                let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
                assert_eq!(body["job_id"].as_str(), Some(job_id.as_str()), "the job's message: {body}");
                assert!(
                    deliveries <= limit + 1,
                    "delivered {deliveries} times: past the limit of {DELIVERY_LIMIT} returns"
                );
            }
            channel.close(200, "a worker that died".into()).await.unwrap();
            if got.is_none() {
                // Nothing ready: the message is on its way back, or it was dead-lettered.
                if app.queue_counts().await.2 == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(HANG_GUARD, returned_until_dead_lettered).await.expect("the message is dead-lettered");
    assert_eq!(deliveries, limit + 1, "the first delivery and {DELIVERY_LIMIT} returns");
    assert_eq!(app.queue_counts().await, (0, 0, 1), "gone from the jobs queue, in the dead-letter queue");
    let _ = connection.close(200, "done".into()).await;

    let letters = dead_letters::list(&app.settings).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].job_id.map(|id| id.to_string()), Some(job_id.clone()));
    assert_eq!(letters[0].reason, "delivery_limit", "the broker dead-lettered it, not a worker");
    // The job itself never ran: it waits, queued, for an operator.
    let job: Value = app.get(&format!("/v1/jobs/{job_id}"), &user).await.json().await.unwrap();
    assert_eq!((job["job"]["status"].as_str(), job["job"]["attempts"].as_i64()), (Some("queued"), Some(0)), "{job}");

    // The operator requeues it once the cause is gone; a worker runs it.
    let outcome = dead_letters::requeue(&app.settings, &Selection::Jobs(vec![job_id.parse().unwrap()])).await.unwrap();
    assert_eq!(outcome.requeued.iter().map(ToString::to_string).collect::<Vec<_>>(), [job_id.as_str()]);
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(fastnpc_worker::run(app.settings.clone(), stop.clone()));
    let job = app.wait_for_job(&user, &job_id).await;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{job}");
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert!(dead_letters::list(&app.settings).await.unwrap().is_empty());
    app.stop().await;
}

/// Rounds that write job rows (the publisher's confirms, a worker's claims, its reply finishes)
/// lock them in id order, whatever order the table holds them in. A job's confirm can arrive
/// after its delivery, so a round of confirms and a round of claims can hold the same jobs, and
/// while each locked in its own scan's order they deadlocked (seen under a burst of 1,000
/// conversations: both rounds stalled for the database's one-second deadlock timeout, and one
/// failed). Held up at one job, a round holds the jobs below it and none above.
#[tokio::test]
async fn a_round_of_confirms_claims_or_finishes_locks_its_jobs_in_id_order() {
    let app = TestApp::builder().backend(Backend::Distributed).workers(0).spawn().await;
    let user = app.user("ada").await;
    let user_id = user_id(&app, &user).await;
    let character_id: CharacterId = app.imported_character(&user, "王维").await.parse().unwrap();
    let pool = app.db.postgres().clone();
    for round in [Round::Confirms, Round::Claims, Round::Finishes] {
        let mut job_ids: Vec<JobId> = (0..6).map(|_| JobId::new()).collect();
        job_ids.sort();
        // Highest id first: a scan in the table's order meets them in descending id order.
        for job_id in job_ids.iter().rev() {
            let message_id = MessageId::new();
            sqlx::query(
                "insert into messages (message_id, user_id, character_id, author, content) values ($1, $2, $3, 'user', '你好')",
            )
            .bind(message_id.0)
            .bind(user_id.0)
            .bind(character_id.0)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "insert into jobs (job_id, user_id, kind, character_id, message_id) values ($1, $2, 'chat_reply', $3, $4)",
            )
            .bind(job_id.0)
            .bind(user_id.0)
            .bind(character_id.0)
            .bind(message_id.0)
            .execute(&pool)
            .await
            .unwrap();
        }
        // A round of finishes ends jobs its worker claimed.
        let claims = match round {
            Round::Finishes => jobs::claim(&pool, &job_ids, LEASE, 200).await.unwrap().into_iter().flatten().collect(),
            Round::Confirms | Round::Claims => Vec::new(),
        };
        let held = job_ids[2];
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("select 1 from jobs where job_id = $1 for update")
            .bind(held.0)
            .execute(&mut *holder)
            .await
            .unwrap();

        let asked: Vec<JobId> = job_ids.iter().rev().copied().collect();
        let written = tokio::spawn(round.write(pool.clone(), asked, claims));
        let blocked = async {
            while count_lock_waits(&pool).await == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, blocked).await.expect("the round waits for the held job");
        assert_eq!(lockable(&pool, &job_ids).await, job_ids[3..], "{round:?}: locked only the jobs below the held one");

        holder.rollback().await.unwrap();
        assert_eq!(written.await.unwrap(), job_ids.len(), "{round:?}: every job written once the lock is gone");
    }
    app.stop().await;
}

const LEASE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
enum Round {
    Confirms,
    Claims,
    Finishes,
}

impl Round {
    /// Writes the round (a round of finishes ends `claims`, in the order of `job_ids`); how many
    /// of its jobs it wrote.
    async fn write(self, pool: sqlx::PgPool, job_ids: Vec<JobId>, mut claims: Vec<Claim>) -> usize {
        match self {
            Self::Confirms => {
                jobs::mark_published(&pool, &job_ids).await.unwrap();
                let ids: Vec<uuid::Uuid> = job_ids.iter().map(|id| id.0).collect();
                let (published,): (i64,) =
                    sqlx::query_as("select count(*) from jobs where job_id = any($1) and published_at is not null")
                        .bind(ids)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                usize::try_from(published).unwrap()
            }
            Self::Claims => {
                let claims = jobs::claim(&pool, &job_ids, LEASE, 200).await.unwrap();
                claims.iter().flatten().count()
            }
            Self::Finishes => {
                claims.sort_by_key(|claim| std::cmp::Reverse(claim.job_id));
                let finishes: Vec<Finish> = claims
                    .iter()
                    .map(|claim| {
                        let reply = NewReply {
                            message_id: MessageId::new(),
                            user_id: claim.user_id,
                            character_id: claim.character_id.unwrap(),
                            reply_to: claim.message_id.unwrap(),
                            content: "幸会。",
                            job_id: claim.job_id,
                            prompt_snapshot: "",
                            truncated: false,
                            prompt_version: None,
                            created_at: stamp(),
                        };
                        Finish::new(claim, reply, &json!({}))
                    })
                    .collect();
                let stored = messages::finish_replies(&pool, &finishes).await.unwrap();
                stored.iter().flatten().count()
            }
        }
    }
}

/// Backends of this database waiting for a lock.
async fn count_lock_waits(pool: &sqlx::PgPool) -> i64 {
    let (waiting,): (i64,) = sqlx::query_as(
        "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    waiting
}

/// The jobs among `job_ids` that no transaction holds a lock on, in id order.
async fn lockable(pool: &sqlx::PgPool, job_ids: &[JobId]) -> Vec<JobId> {
    let ids: Vec<uuid::Uuid> = job_ids.iter().map(|id| id.0).collect();
    let free: Vec<(uuid::Uuid,)> =
        sqlx::query_as("select job_id from jobs where job_id = any($1) order by job_id for share skip locked")
            .bind(ids)
            .fetch_all(pool)
            .await
            .unwrap();
    free.into_iter().map(|(id,)| JobId(id)).collect()
}

async fn user_id(app: &TestApp, user: &TestUser) -> UserId {
    let me: Value = app.get("/v1/me", user).await.json().await.unwrap();
    UserId(me["user"]["id"].as_str().unwrap().parse().unwrap())
}

/// The dead letters, once there are `count` of them (the broker dead-letters asynchronously).
async fn wait_for_letters(app: &TestApp, count: usize) -> Vec<dead_letters::DeadLetter> {
    let poll = async {
        loop {
            let letters = dead_letters::list(&app.settings).await.unwrap();
            if letters.len() >= count {
                return letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the letters arrive")
}
