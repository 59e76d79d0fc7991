//! The isolation matrix: every resource route, called as another user, anonymously, with a
//! revoked token and with an expired token, answers 404 or 401 — and changes nothing.

use fastnpc_tests::harness::{PASSWORD, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

async fn snapshot(app: &TestApp) -> Vec<i64> {
    let mut counts = Vec::new();
    for query in [
        "select count(*) from characters",
        "select count(*) from characters where status = 'ready'",
        "select count(*) from messages",
        "select count(*) from memories",
        "select count(*) from groups",
        "select count(*) from group_members",
        "select count(*) from group_messages",
        "select count(*) from jobs",
        "select count(*) from jobs where status = 'cancelled'",
        "select count(*) from api_keys where revoked_at is null",
    ] {
        let (count,): (i64,) = sqlx::query_as(query).fetch_one(&app.db).await.unwrap();
        counts.push(count);
    }
    counts
}

#[tokio::test]
async fn every_route_refuses_other_users_and_bad_credentials() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let character = app.ready_character(&owner, "诸葛亮").await;
    let sent: Value = app.send_message(&owner, &character, "你好", Some(20)).await.json().await.unwrap();
    let job = sent["job"]["id"].as_str().unwrap().to_owned();
    let group: Value = app
        .post_json("/v1/groups", &owner, &json!({"name": "g", "character_ids": [character]}))
        .await
        .json()
        .await
        .unwrap();
    let group = group["group"]["id"].as_str().unwrap().to_owned();
    let key: Value = app.post_json("/v1/api-keys", &owner, &json!({"name": "k"})).await.json().await.unwrap();
    let key = key["api_key"]["id"].as_str().unwrap().to_owned();
    let theirs = app.ready_character(&other, "曹操").await;

    // A revoked and an expired session of the owner.
    let revoked = app.login("owner", PASSWORD).await;
    assert_eq!(app.request(Method::POST, "/v1/auth/logout", Some(&revoked)).send().await.unwrap().status(), 204);
    let expired = app.login("owner", PASSWORD).await;
    // The newest session (just issued) expires now.
    sqlx::query(
        "update sessions set expires_at = now() - interval '1 second' where created_at = (select max(created_at) from sessions)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(app.get("/v1/me", &expired).await.status(), 401);
    assert_eq!(app.get("/v1/me", &owner).await.status(), 200, "only that session expired");

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/characters/{character}"), None),
        (Method::DELETE, format!("/v1/characters/{character}"), None),
        (Method::GET, format!("/v1/characters/{character}/messages"), None),
        (Method::POST, format!("/v1/characters/{character}/messages"), Some(json!({"content": "hi"}))),
        (Method::GET, format!("/v1/characters/{character}/memories"), None),
        (
            Method::PUT,
            format!("/v1/characters/{character}/memories"),
            Some(json!({"short_term": ["x"], "long_term": []})),
        ),
        (Method::GET, format!("/v1/groups/{group}"), None),
        (Method::PATCH, format!("/v1/groups/{group}"), Some(json!({"name": "mine now"}))),
        (Method::DELETE, format!("/v1/groups/{group}"), None),
        (Method::POST, format!("/v1/groups/{group}/members"), Some(json!({"character_id": theirs}))),
        (Method::DELETE, format!("/v1/groups/{group}/members/{character}"), None),
        (Method::GET, format!("/v1/groups/{group}/messages"), None),
        (Method::POST, format!("/v1/groups/{group}/messages"), Some(json!({"content": "hi"}))),
        (Method::GET, format!("/v1/jobs/{job}"), None),
        (Method::GET, format!("/v1/jobs/{job}/events"), None),
        (Method::POST, format!("/v1/jobs/{job}/cancel"), None),
        (Method::POST, format!("/v1/jobs/{job}/retry"), None),
        (Method::POST, format!("/v1/jobs/{job}/stream-token"), None),
        (Method::DELETE, format!("/v1/api-keys/{key}"), None),
    ];
    let before = snapshot(&app).await;
    for (caller, expected) in [(Some(&other), 404), (None, 401), (Some(&revoked), 401), (Some(&expired), 401)] {
        for (method, path, body) in &routes {
            let mut request = app.request(method.clone(), path, caller);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), expected, "{method} {path} as {:?}", caller.map(|u| &u.token[..6]));
            assert_eq!(response.headers()["content-type"], "application/problem+json", "{method} {path}");
        }
    }
    // Account-level routes refuse bad credentials too.
    for (method, path) in [
        (Method::GET, "/v1/me"),
        (Method::GET, "/v1/characters"),
        (Method::GET, "/v1/groups"),
        (Method::GET, "/v1/api-keys"),
    ] {
        for caller in [None, Some(&revoked), Some(&expired)] {
            assert_eq!(
                app.request(method.clone(), path, caller).send().await.unwrap().status(),
                401,
                "{method} {path}"
            );
        }
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    let listed: Value = app.get("/v1/characters", &other).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the other user sees only their own");
    app.stop().await;
}
