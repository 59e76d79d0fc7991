//! Per-user caps under concurrency: a burst of simultaneous submissions from one user creates
//! exactly as many rows as the cap allows, never more (each request, checked alone, would pass).
//! One user's simultaneous messages are written in shared rounds (group commit), so these
//! bursts also check that a round answers each message for itself.

use fastnpc_tests::harness::{TestApp, TestAppBuilder, TestUser, sample_source};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BURST: usize = 50;
const CAP: i64 = 5;

/// Fires `BURST` simultaneous POSTs of `body(i)` to `path`; returns each answer's status and the
/// problem detail of the refused ones.
async fn burst(app: &TestApp, user: &TestUser, path: &str, body: impl Fn(usize) -> Value) -> Vec<(StatusCode, String)> {
    let requests = (0..BURST).map(|i| {
        let body = body(i);
        async move {
            let response = app.post_json(path, user, &body).await;
            let status = response.status();
            let detail = if status.is_success() {
                String::new()
            } else {
                assert!(response.headers().contains_key("retry-after"), "{status} without Retry-After");
                let problem: Value = response.json().await.unwrap();
                problem["detail"].as_str().unwrap_or_default().to_owned()
            };
            (status, detail)
        }
    });
    join_all(requests).await
}

/// Every answer is a success or a 429 naming `cap`; returns how many succeeded.
fn successes(answers: &[(StatusCode, String)], cap: &str) -> i64 {
    for (status, detail) in answers {
        assert!(
            status.is_success() || (*status == StatusCode::TOO_MANY_REQUESTS && detail.contains(cap)),
            "{status}: {detail}"
        );
    }
    answers.iter().filter(|(status, _)| status.is_success()).count() as i64
}

/// An app whose `cap` is [`CAP`], without workers (so submitted jobs stay active) and with room
/// for every burst's submissions in the per-minute limit.
fn capped(cap: &str) -> TestAppBuilder {
    TestApp::builder().workers(0).setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000").setting(cap, CAP.to_string())
}

fn character(i: usize) -> Value {
    let name = format!("角色{i}");
    json!({"name": name, "source": {"kind": "text", "text": sample_source(&name)}})
}

async fn owned(app: &TestApp, table: &str, user: &TestUser) -> i64 {
    let sql = format!("select count(*) from {table} where user_id = (select user_id from users where username = $1)");
    app.db.count_with(&sql, &user.username).await
}

#[tokio::test]
async fn a_burst_of_character_submissions_stops_at_the_character_cap() {
    let app = capped("FASTNPC_LIMIT_CHARACTERS").setting("FASTNPC_LIMIT_ACTIVE_JOBS", "1000").spawn().await;
    let user = app.user("ada").await;

    let answers = burst(&app, &user, "/v1/characters", character).await;
    assert_eq!(successes(&answers, "characters per user"), CAP);
    assert_eq!(owned(&app, "characters", &user).await, CAP);
    assert_eq!(owned(&app, "jobs", &user).await, CAP, "a refused submission leaves no job behind");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_job_submissions_stops_at_the_active_jobs_cap() {
    let app = capped("FASTNPC_LIMIT_ACTIVE_JOBS").setting("FASTNPC_LIMIT_CHARACTERS", "1000").spawn().await;
    let user = app.user("ada").await;
    let other = app.user("grace").await;

    let answers = burst(&app, &user, "/v1/characters", character).await;
    assert_eq!(successes(&answers, "jobs may be queued or running"), CAP);
    assert_eq!(owned(&app, "jobs", &user).await, CAP);
    assert_eq!(owned(&app, "characters", &user).await, CAP, "a refused submission leaves no character behind");
    // The cap is the user's own.
    assert_eq!(app.post_json("/v1/characters", &other, &character(0)).await.status(), StatusCode::ACCEPTED);
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_group_creations_stops_at_the_group_cap() {
    let app = capped("FASTNPC_LIMIT_GROUPS").spawn().await;
    let user = app.user("ada").await;
    let created = app.create_character(&user, "诸葛亮").await;
    let member = created["character"]["id"].as_str().unwrap().to_owned();

    let answers =
        burst(&app, &user, "/v1/groups", |i| json!({"name": format!("group {i}"), "character_ids": [member]})).await;
    assert_eq!(successes(&answers, "groups per user"), CAP);
    assert_eq!(owned(&app, "groups", &user).await, CAP);
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_messages_stops_at_the_active_jobs_cap_and_each_is_answered_for_itself() {
    let app = capped("FASTNPC_LIMIT_ACTIVE_JOBS").spawn().await;
    let user = app.user("ada").await;
    let other = app.user("grace").await;
    let mut mine = Vec::new();
    for name in ["李白", "杜甫", "王维"] {
        mine.push(app.imported_character(&user, name).await);
    }
    let theirs = app.imported_character(&other, "白居易").await;

    // Every fifth message goes to another user's character: refused as not found, whatever the
    // messages around it in the same round.
    let sends = (0..BURST).map(|i| {
        let character = if i % 5 == 4 { &theirs } else { &mine[i % 3] };
        let path = format!("/v1/characters/{character}/messages");
        let app = &app;
        let user = &user;
        async move {
            let response = app.post_json(&path, user, &json!({"content": format!("第{i}问")})).await;
            let status = response.status();
            (i, status, response.text().await.unwrap())
        }
    });
    let answers = join_all(sends).await;
    for (i, status, body) in &answers {
        if i % 5 == 4 {
            assert_eq!(*status, StatusCode::NOT_FOUND, "message {i} to another user's character: {body}");
        } else {
            assert!(
                *status == StatusCode::ACCEPTED
                    || (*status == StatusCode::TOO_MANY_REQUESTS && body.contains("jobs may be queued or running")),
                "message {i}: {status} {body}"
            );
        }
    }
    let accepted = answers.iter().filter(|(_, status, _)| *status == StatusCode::ACCEPTED).count() as i64;
    assert_eq!(accepted, CAP, "exactly the cap is accepted");
    assert_eq!(owned(&app, "messages", &user).await, CAP, "a refused message leaves nothing behind");
    assert_eq!(owned(&app, "jobs", &user).await, CAP);
    assert_eq!(owned(&app, "messages", &other).await, 0, "nothing lands on the other user's character");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_with_one_idempotency_key_repeated_stores_that_message_once_and_every_other_message() {
    let app = TestApp::builder().workers(0).setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000").spawn().await;
    let user = app.user("ada").await;
    let character = app.imported_character(&user, "孟浩然").await;
    let path = format!("/v1/characters/{character}/messages");

    // Five of the twenty are the same request with the same key; they may share a round.
    let sends = (0..20).map(|i| {
        let repeated = i % 4 == 0;
        let mut request = app.request(Method::POST, &path, Some(&user));
        request = if repeated {
            request.header("Idempotency-Key", "burst-1").json(&json!({"content": "春眠不觉晓"}))
        } else {
            request.json(&json!({"content": format!("第{i}问")}))
        };
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED, "message {i}");
            (repeated, response.json::<Value>().await.unwrap())
        }
    });
    let answers = join_all(sends).await;
    let repeated: Vec<&Value> = answers.iter().filter(|(repeated, _)| *repeated).map(|(_, body)| body).collect();
    assert!(repeated.iter().all(|body| body["job"]["id"] == repeated[0]["job"]["id"]), "one job for the key");
    assert!(repeated.iter().all(|body| body["message"]["id"] == repeated[0]["message"]["id"]), "one message");
    let mut jobs: Vec<&str> = answers.iter().map(|(_, body)| body["job"]["id"].as_str().unwrap()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), 16, "fifteen messages without the key and one with it");
    assert_eq!(owned(&app, "messages", &user).await, 16);
    assert_eq!(owned(&app, "jobs", &user).await, 16);
    app.stop().await;
}

#[tokio::test]
async fn a_round_of_several_users_messages_counts_each_users_active_jobs_apart() {
    use fastnpc_shared::{
        ids::{CharacterId, JobId, MessageId, UserId},
        store::{Capped, NewUserMessage, QueuedMessage, Quota, Submitted, jobs::NewJob, postgres::PgStore},
    };
    let app = TestApp::builder().backend(fastnpc_tests::harness::Backend::Distributed).workers(0).spawn().await;
    let (ada, grace) = (app.user("ada").await, app.user("grace").await);
    let user_id = |user: &TestUser| {
        let sql = "select user_id::text from users where username = $1".to_owned();
        let username = user.username.clone();
        let pool = app.db.postgres().clone();
        async move {
            let id: String = sqlx::query_scalar(&sql).bind(username).fetch_one(&pool).await.unwrap();
            UserId(id.parse().unwrap())
        }
    };
    let (ada_id, grace_id) = (user_id(&ada).await, user_id(&grace).await);
    let adas: CharacterId = app.imported_character(&ada, "李白").await.parse().unwrap();
    let graces: CharacterId = app.imported_character(&grace, "白居易").await.parse().unwrap();
    // Grace holds one active job already.
    app.store_message(grace_id, graces, "在吗？").await;

    let queued = |user_id: UserId, character_id: CharacterId, content: &str| {
        let (message_id, job_id) = (MessageId::new(), JobId::new());
        let message = NewUserMessage::new(message_id, user_id, character_id, content);
        QueuedMessage::new(&message, &NewJob::chat_reply(job_id, user_id, character_id, message_id))
    };
    let round = [
        queued(ada_id, adas, "一"),
        queued(grace_id, graces, "二"),
        queued(ada_id, adas, "三"),
        queued(grace_id, adas, "四"), // Ada's character: not Grace's to message.
        queued(ada_id, adas, "五"),
        queued(grace_id, graces, "六"),
    ];
    let quota = Quota { active_jobs: 2, characters: 100, groups: 100 };
    let store = PgStore::from_pool(app.db.postgres().clone());
    let outcomes = store.insert_messages(&round, &quota).await.unwrap();
    let over = Submitted::OverQuota(Capped::ActiveJobs);
    // Each user's count is its own: Ada's first two fit her cap, Grace's one more fits hers, and
    // a refusal of one user's message (not hers, or over her cap) admits nothing of it.
    assert_eq!(
        outcomes,
        [Submitted::Created, Submitted::Created, Submitted::Created, Submitted::GuardFailed, over, over]
    );
    let stored = |content: &'static str| {
        let pool = app.db.postgres().clone();
        async move {
            let sql = "select count(*) from messages m join jobs j using (message_id) where m.content = $1";
            sqlx::query_scalar::<_, i64>(sql).bind(content).fetch_one(&pool).await.unwrap()
        }
    };
    for (content, expected) in [("一", 1), ("二", 1), ("三", 1), ("四", 0), ("五", 0), ("六", 0)] {
        assert_eq!(stored(content).await, expected, "message {content} and its job");
    }
    assert_eq!(owned(&app, "jobs", &ada).await, 2);
    assert_eq!(owned(&app, "jobs", &grace).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn many_users_bursting_at_once_each_stop_at_their_own_active_jobs_cap() {
    let app = capped("FASTNPC_LIMIT_ACTIVE_JOBS").spawn().await;
    let mut users = Vec::new();
    for name in ["ada", "grace", "hedy", "joan", "mary", "kath", "emmy", "lise"] {
        let user = app.user(name).await;
        let character = app.imported_character(&user, "李白").await;
        users.push((user, character));
    }
    // Every user's burst at once: rounds hold several users' messages.
    let shared = &app;
    let sends = users.iter().flat_map(|(user, character)| {
        (0..12).map(move |i| {
            let path = format!("/v1/characters/{character}/messages");
            async move { shared.post_json(&path, user, &json!({"content": format!("第{i}问")})).await.status() }
        })
    });
    let statuses = join_all(sends).await;
    assert!(statuses.iter().all(|s| [StatusCode::ACCEPTED, StatusCode::TOO_MANY_REQUESTS].contains(s)), "{statuses:?}");
    for (user, _) in &users {
        assert_eq!(owned(&app, "messages", user).await, CAP, "{}'s messages", user.username);
        assert_eq!(owned(&app, "jobs", user).await, CAP, "{}'s jobs", user.username);
    }
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count() as i64;
    assert_eq!(accepted, CAP * users.len() as i64);
    app.stop().await;
}
