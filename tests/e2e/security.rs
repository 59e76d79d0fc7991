//! Sessions, API keys, account deletion and login limits.

use fastnpc_tests::harness::{PASSWORD, TestApp, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

async fn login(app: &TestApp, username: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn changing_the_password_revokes_every_other_session() {
    let app = TestApp::builder().workers(0).spawn().await;
    let laptop = app.user("ada").await;
    let phone = app.login("ada", PASSWORD).await;

    let wrong = json!({"current_password": "not it at all", "new_password": "a brand new secret"});
    let response = app.request(Method::POST, "/v1/auth/password", Some(&laptop)).json(&wrong).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let change = json!({"current_password": PASSWORD, "new_password": "a brand new secret"});
    let response = app.request(Method::POST, "/v1/auth/password", Some(&laptop)).json(&change).send().await.unwrap();
    assert_eq!(response.status(), 204);

    assert_eq!(app.get("/v1/me", &laptop).await.status(), 200, "the session that changed it stays");
    assert_eq!(app.get("/v1/me", &phone).await.status(), 401, "every other session is revoked");
    assert_eq!(login(&app, "ada", PASSWORD).await.status(), 401);
    assert_eq!(login(&app, "ada", "a brand new secret").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn deleting_an_account_deletes_all_its_data_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let leaving = app.user("leaving").await;
    let staying = app.user("staying").await;
    for user in [&leaving, &staying] {
        let character = app.ready_character(user, "诸葛亮").await;
        assert_eq!(app.send_message(user, &character, "你好", Some(20)).await.status(), 200);
        let group = json!({"name": "g", "character_ids": [character]});
        assert_eq!(app.post_json("/v1/groups", user, &group).await.status(), 201);
        let key = json!({"name": "script"});
        assert_eq!(app.post_json("/v1/api-keys", user, &key).await.status(), 201);
    }
    let counts = async |username: &str| -> Vec<i64> {
        let mut counts = Vec::new();
        for table in ["characters", "messages", "jobs", "groups", "sessions", "api_keys"] {
            let query = format!("select count(*) from {table} t join users u using (user_id) where u.username = $1");
            counts.push(app.db.count_with(&query, username).await);
        }
        counts
    };
    let before = counts("staying").await;
    assert!(before.iter().all(|&c| c > 0), "{before:?}");

    let wrong = app
        .request(Method::DELETE, "/v1/me", Some(&leaving))
        .json(&json!({"password": "nope nope nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    let deleted = app
        .request(Method::DELETE, "/v1/me", Some(&leaving))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    assert_eq!(app.get("/v1/me", &leaving).await.status(), 401);
    let users = app.db.count("select count(*) from users where username = 'leaving'").await;
    assert_eq!(users, 0);
    for table in ["characters", "messages", "jobs", "groups", "sessions", "api_keys", "group_messages", "memories"] {
        let orphaned = format!(
            "select count(*) from {table} where {}",
            match table {
                "memories" => "character_id not in (select character_id from characters)".to_owned(),
                _ => "user_id not in (select user_id from users)".to_owned(),
            }
        );
        let count = app.db.count(&orphaned).await;
        assert_eq!(count, 0, "{table} keeps nothing of the deleted user");
    }
    assert_eq!(counts("staying").await, before, "nobody else's data was touched");
    app.stop().await;
}

#[tokio::test]
async fn api_keys_are_shown_once_work_as_bearer_tokens_and_can_be_revoked() {
    let app = TestApp::builder().workers(0).spawn().await;
    let user = app.user("grace").await;
    let other = app.user("other").await;
    let created = app.post_json("/v1/api-keys", &user, &json!({"name": "nightly script"})).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("fnpk_"));
    let key_id = created["api_key"]["id"].as_str().unwrap().to_owned();

    let listed: Value = app.get("/v1/api-keys", &user).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&key), "the key is never shown again");
    assert!(key.starts_with(listed["items"][0]["prefix"].as_str().unwrap()));

    let script = TestUser { username: "grace".into(), token: key.clone() };
    let me: Value = app.get("/v1/me", &script).await.json().await.unwrap();
    assert_eq!(me["user"]["username"], "grace");

    let foreign = app.request(Method::DELETE, &format!("/v1/api-keys/{key_id}"), Some(&other)).send().await.unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(app.get("/v1/me", &script).await.status(), 200, "someone else cannot revoke it");
    let revoked = app.request(Method::DELETE, &format!("/v1/api-keys/{key_id}"), Some(&user)).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(app.get("/v1/me", &script).await.status(), 401);
    let listed: Value = app.get("/v1/api-keys", &user).await.json().await.unwrap();
    assert!(listed["items"][0]["revoked_at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_records_its_use_at_most_once_a_minute() {
    let app = TestApp::builder().workers(0).spawn().await;
    let user = app.user("frances").await;
    let created: Value = app.post_json("/v1/api-keys", &user, &json!({"name": "script"})).await.json().await.unwrap();
    let script = TestUser { username: "frances".into(), token: created["key"].as_str().unwrap().to_owned() };
    let last_used = || async {
        let listed: Value = app.get("/v1/api-keys", &user).await.json().await.unwrap();
        listed["items"][0]["last_used_at"].clone()
    };
    assert_eq!(last_used().await, Value::Null);

    assert_eq!(app.get("/v1/me", &script).await.status(), 200);
    let first = last_used().await;
    assert!(first.is_string(), "the first use is recorded: {first}");
    // Reads within the minute are reads: the recorded use does not move.
    for _ in 0..3 {
        assert_eq!(app.get("/v1/me", &script).await.status(), 200);
    }
    assert_eq!(last_used().await, first);
    app.stop().await;
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_username_with_backoff() {
    let app = TestApp::builder().workers(0).spawn().await;
    app.user("hedy").await;
    app.user("katherine").await;
    for _ in 0..6 {
        assert_eq!(login(&app, "hedy", "guess guess guess").await.status(), 401);
    }
    // Locked now: even the right password waits, and the answer says for how long.
    let locked = login(&app, "hedy", PASSWORD).await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(locked.headers()["content-type"], "application/problem+json");
    // Another account is not affected.
    assert_eq!(login(&app, "katherine", PASSWORD).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_stolen_session_guesses_the_password_no_faster_than_a_login() {
    let app = TestApp::builder().workers(0).spawn().await;
    let user = app.user("radia").await;
    let other = app.user("barbara").await;
    let change = |current: &str| {
        let body = json!({"current_password": current, "new_password": "a brand new secret"});
        app.request(Method::POST, "/v1/auth/password", Some(&user)).json(&body).send()
    };
    for _ in 0..6 {
        assert_eq!(change("guess guess guess").await.unwrap().status(), 403);
    }
    // Locked now: even the right current password waits, and the password stays as it was.
    let locked = change(PASSWORD).await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(locked.headers()["content-type"], "application/problem+json");
    // The same back-off as login, on the same username.
    assert_eq!(login(&app, "radia", PASSWORD).await.status(), 429);
    assert_eq!(login(&app, "radia", "a brand new secret").await.status(), 429);

    let delete = |who: &TestUser, password: &str| {
        app.request(Method::DELETE, "/v1/me", Some(who)).json(&json!({"password": password})).send()
    };
    for _ in 0..6 {
        assert_eq!(delete(&other, "guess guess guess").await.unwrap().status(), 403);
    }
    let locked = delete(&other, PASSWORD).await.unwrap();
    assert_eq!(locked.status(), 429);
    assert!(locked.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(app.get("/v1/me", &other).await.status(), 200, "the account still exists");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_token_opens_one_jobs_stream_without_a_bearer_header() {
    let app = TestApp::spawn().await;
    let user = app.user("linus").await;
    let other = app.user("other").await;
    let first = app.create_character(&user, "李白").await;
    let second = app.create_character(&user, "杜甫").await;
    let job = first["job"]["id"].as_str().unwrap();
    app.wait_for_job(&user, job).await;

    let issued = app.request(Method::POST, &format!("/v1/jobs/{job}/stream-token"), Some(&user)).send().await.unwrap();
    assert_eq!(issued.status(), 200);
    let issued: Value = issued.json().await.unwrap();
    let url = issued["events_url"].as_str().unwrap();
    // What a browser's EventSource does: a plain GET, no headers.
    let response = app.http.get(app.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events: Vec<_> = futures::StreamExt::collect::<Vec<_>>(fastnpc_tests::sse_client::events(response)).await;
    assert_eq!(events.last().unwrap().as_ref().unwrap().event, "succeeded");

    // Bound to that job, and only issued to its owner.
    let token = issued["stream_token"].as_str().unwrap();
    let second_job = second["job"]["id"].as_str().unwrap();
    let wrong_job =
        app.http.get(app.url(&format!("/v1/jobs/{second_job}/events?stream_token={token}"))).send().await.unwrap();
    assert_eq!(wrong_job.status(), 401);
    let forged = app.http.get(app.url(&format!("/v1/jobs/{job}/events?stream_token=forged"))).send().await.unwrap();
    assert_eq!(forged.status(), 401);
    let foreign =
        app.request(Method::POST, &format!("/v1/jobs/{job}/stream-token"), Some(&other)).send().await.unwrap();
    assert_eq!(foreign.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn per_user_limits_answer_429_and_create_nothing() {
    let app = TestApp::builder()
        .workers(0)
        // Four: the refused fourth character counts as a submission too.
        .setting("FASTNPC_LIMIT_SUBMISSIONS_PER_MINUTE", "4")
        .setting("FASTNPC_LIMIT_ACTIVE_JOBS", "1000")
        .setting("FASTNPC_LIMIT_CHARACTERS", "3")
        .setting("FASTNPC_LIMIT_GROUPS", "1")
        .spawn()
        .await;
    let user = app.user("barbara").await;
    let other = app.user("margaret").await;
    let body = |name: &str| json!({"name": name, "source": {"kind": "text", "text": fastnpc_tests::harness::sample_source(name)}});
    let jobs = async || -> i64 { app.db.count("select count(*) from jobs").await };
    // The submission window is a calendar minute: start well inside one.
    let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }

    let mut ids = Vec::new();
    for name in ["甲", "乙", "丙"] {
        let created = app.post_json("/v1/characters", &user, &body(name)).await;
        assert_eq!(created.status(), 202);
        let created: Value = created.json().await.unwrap();
        ids.push(created["character"]["id"].as_str().unwrap().to_owned());
    }
    let capped = app.post_json("/v1/characters", &user, &body("丁")).await;
    assert_eq!(capped.status(), 429, "the character cap");
    assert!(capped.headers().contains_key("retry-after"));
    let problem: Value = capped.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("characters"), "{problem}");

    // Under the cap again, but over four submissions this minute.
    let deleted = app.request(Method::DELETE, &format!("/v1/characters/{}", ids[0]), Some(&user)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let before = jobs().await;
    let rate = app.post_json("/v1/characters", &user, &body("戊")).await;
    assert_eq!(rate.status(), 429, "the submission rate");
    let problem: Value = rate.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("per minute"), "{problem}");
    assert_eq!(jobs().await, before, "nothing was created");

    let group = json!({"name": "g", "character_ids": [ids[1], ids[2]]});
    assert_eq!(app.post_json("/v1/groups", &user, &group).await.status(), 201);
    assert_eq!(app.post_json("/v1/groups", &user, &group).await.status(), 429, "the group cap");
    // Limits are per user.
    assert_eq!(app.post_json("/v1/characters", &other, &body("甲")).await.status(), 202);
    app.stop().await;
}
