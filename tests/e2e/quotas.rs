//! Per-user caps under concurrency: a burst of simultaneous submissions from one user creates
//! exactly as many rows as the cap allows, never more (each request, checked alone, would pass).

use fastnpc_tests::harness::{TestApp, TestUser, sample_source};
use futures::future::join_all;
use reqwest::StatusCode;
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
    let app = TestApp::builder()
        .workers(0)
        .setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000")
        .setting("FASTNPC_LIMIT_ACTIVE_JOBS", "1000")
        .setting("FASTNPC_LIMIT_CHARACTERS", CAP.to_string())
        .spawn()
        .await;
    let user = app.user("ada").await;

    let answers = burst(&app, &user, "/v1/characters", character).await;
    assert_eq!(successes(&answers, "characters per user"), CAP);
    assert_eq!(owned(&app, "characters", &user).await, CAP);
    assert_eq!(owned(&app, "jobs", &user).await, CAP, "a refused submission leaves no job behind");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_job_submissions_stops_at_the_active_jobs_cap() {
    let app = TestApp::builder()
        .workers(0)
        .setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000")
        .setting("FASTNPC_LIMIT_ACTIVE_JOBS", CAP.to_string())
        .setting("FASTNPC_LIMIT_CHARACTERS", "1000")
        .spawn()
        .await;
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
    let app = TestApp::builder()
        .workers(0)
        .setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "1000")
        .setting("FASTNPC_LIMIT_GROUPS", CAP.to_string())
        .spawn()
        .await;
    let user = app.user("ada").await;
    let created = app.create_character(&user, "诸葛亮").await;
    let member = created["character"]["id"].as_str().unwrap().to_owned();

    let answers =
        burst(&app, &user, "/v1/groups", |i| json!({"name": format!("group {i}"), "character_ids": [member]})).await;
    assert_eq!(successes(&answers, "groups per user"), CAP);
    assert_eq!(owned(&app, "groups", &user).await, CAP);
    app.stop().await;
}
