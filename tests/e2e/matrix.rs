//! The isolation matrix: every resource route, called as another user, anonymously, as a
//! disabled user (session and API key), with a revoked token and with an expired token, answers
//! 404 or 401 — and changes nothing; called as its owner, it does its job.

use fastnpc_tests::harness::{PASSWORD, TestApp, TestUser};
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
        counts.push(app.db.count(query).await);
    }
    counts
}

#[tokio::test]
async fn every_route_refuses_other_users_and_bad_credentials() {
    let app = TestApp::builder()
        .setting("FASTNPC_ADMIN_USERNAME", "root")
        .setting("FASTNPC_ADMIN_PASSWORD", "s3cret admin pw")
        .spawn()
        .await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let character = app.ready_character(&owner, "诸葛亮").await;
    let second_character = app.ready_character(&owner, "刘备").await;
    let owner_id = app.get("/v1/me", &owner).await.json::<Value>().await.unwrap()["user"]["id"].clone();
    let owner_id = owner_id.as_str().unwrap().to_owned();
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
    app.ready_character(&other, "曹操").await;

    // A revoked and an expired session of the owner.
    let revoked = app.login("owner", PASSWORD).await;
    assert_eq!(app.request(Method::POST, "/v1/auth/logout", Some(&revoked)).send().await.unwrap().status(), 204);
    let expired = app.login("owner", PASSWORD).await;
    // The newest session (just issued) expires now.
    app.db.expire_newest_session().await;
    assert_eq!(app.get("/v1/me", &expired).await.status(), 401);
    assert_eq!(app.get("/v1/me", &owner).await.status(), 200, "only that session expired");

    // A disabled user, with a session and an API key, who owned something before.
    let banned = app.user("banned").await;
    let banned_character = app.ready_character(&banned, "张飞").await;
    let created: Value = app.post_json("/v1/api-keys", &banned, &json!({"name": "k"})).await.json().await.unwrap();
    let banned_key = TestUser { username: "banned".into(), token: created["key"].as_str().unwrap().to_owned() };
    let banned_id = app.get("/v1/me", &banned).await.json::<Value>().await.unwrap()["user"]["id"].clone();
    let admin = app.login("root", "s3cret admin pw").await;
    let disabled = app
        .request(Method::POST, &format!("/v1/admin/users/{}/disable", banned_id.as_str().unwrap()), Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);

    // In an order the owner can walk: reads and writes first, deletions last. The last column is
    // what the owner gets.
    let routes: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, format!("/v1/characters/{character}"), None, 200),
        (Method::GET, format!("/v1/characters/{character}/messages"), None, 200),
        (Method::POST, format!("/v1/characters/{character}/messages"), Some(json!({"content": "hi"})), 202),
        (Method::GET, format!("/v1/characters/{character}/memories"), None, 200),
        (
            Method::PUT,
            format!("/v1/characters/{character}/memories"),
            Some(json!({"short_term": ["x"], "long_term": []})),
            200,
        ),
        (Method::GET, format!("/v1/groups/{group}"), None, 200),
        (Method::PATCH, format!("/v1/groups/{group}"), Some(json!({"name": "mine now"})), 200),
        (Method::POST, format!("/v1/groups/{group}/members"), Some(json!({"character_id": second_character})), 200),
        (Method::GET, format!("/v1/groups/{group}/messages"), None, 200),
        (Method::POST, format!("/v1/groups/{group}/messages"), Some(json!({"content": "hi"})), 202),
        (Method::DELETE, format!("/v1/groups/{group}/members/{character}"), None, 204),
        (Method::GET, format!("/v1/jobs/{job}"), None, 200),
        (Method::GET, format!("/v1/jobs/{job}/events"), None, 200),
        (Method::POST, format!("/v1/jobs/{job}/cancel"), None, 200),
        // Refused for the owner too, but as a conflict: the job succeeded.
        (Method::POST, format!("/v1/jobs/{job}/retry"), None, 409),
        (Method::POST, format!("/v1/jobs/{job}/stream-token"), None, 200),
        (Method::DELETE, format!("/v1/api-keys/{key}"), None, 204),
        (Method::DELETE, format!("/v1/groups/{group}"), None, 204),
        (Method::DELETE, format!("/v1/characters/{character}"), None, 204),
        // The admin routes are invisible to everyone but the admin.
        (Method::GET, "/v1/admin/users".to_owned(), None, 404),
        (Method::GET, "/v1/admin/stats".to_owned(), None, 404),
        (Method::POST, format!("/v1/admin/users/{owner_id}/disable"), None, 404),
        (Method::POST, format!("/v1/admin/users/{owner_id}/enable"), None, 404),
    ];
    let before = snapshot(&app).await;
    let callers = [
        (Some(&other), 404),
        (None, 401),
        (Some(&banned), 401),
        (Some(&banned_key), 401),
        (Some(&revoked), 401),
        (Some(&expired), 401),
    ];
    for (caller, expected) in callers {
        for (method, path, body, _) in &routes {
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
        for caller in [None, Some(&banned), Some(&banned_key), Some(&revoked), Some(&expired)] {
            assert_eq!(
                app.request(method.clone(), path, caller).send().await.unwrap().status(),
                401,
                "{method} {path}"
            );
        }
    }
    // A disabled user cannot reach what they own either.
    let theirs_now = format!("/v1/characters/{banned_character}");
    for caller in [&banned, &banned_key] {
        assert_eq!(app.get(&theirs_now, caller).await.status(), 401);
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed");
    let listed: Value = app.get("/v1/characters", &other).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the other user sees only their own");

    // The owner column.
    for (method, path, body, expected) in &routes {
        let mut request = app.request(method.clone(), path, Some(&owner));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), *expected, "{method} {path} as the owner");
    }
    app.stop().await;
}
