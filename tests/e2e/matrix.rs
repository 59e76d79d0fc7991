//! The isolation matrix: every resource route, called as another user, anonymously, as a
//! disabled user (session and API key), with a revoked token and with an expired token, answers
//! 404 or 401 — byte for byte what the same call with a missing id gets — and changes nothing
//! (every row of every table is compared, not counted); called as its owner, it does its job.

use fastnpc_tests::{
    harness::{HANG_GUARD, PASSWORD, TestApp, TestUser, assert_same_contents},
    sim::{Fault, Rule},
};
use reqwest::Method;
use serde_json::{Value, json};

/// Waits until nothing in the background will write a row: no job queued or running (so no
/// worker writes results, usage or follow-up jobs) and every job's publish recorded (the API
/// stamps `published_at` when the broker confirms, which may come after a fast job finished).
/// What else writes on its own does not touch this test's rows: the re-publisher only looks at
/// queued jobs, the session purge only at sessions that ended a day ago.
async fn settle(app: &TestApp) {
    let poll = async {
        while app
            .db
            .count("select count(*) from jobs where status in ('queued', 'running') or published_at is null")
            .await
            > 0
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, poll).await.expect("the jobs finish and their publishes are recorded");
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
    // A memory of the owner's that the intruders' `PUT` (one entry) would overwrite with as many
    // rows: only the contents can tell.
    let memory = json!({"short_term": ["主人 | 住在 | 隆中"], "long_term": []});
    let put = app.request(Method::PUT, &format!("/v1/characters/{character}/memories"), Some(&owner)).json(&memory);
    assert_eq!(put.send().await.unwrap().status(), 200);
    let group: Value = app
        .post_json("/v1/groups", &owner, &json!({"name": "g", "character_ids": [character]}))
        .await
        .json()
        .await
        .unwrap();
    let group = group["group"]["id"].as_str().unwrap().to_owned();
    // A turn in the group, so that its history holds a reply with its prompt (the moderator, a
    // prompt only it gets, names the one member once).
    let moderator = json!({"next_speaker": "诸葛亮", "reason": "轮到他了", "confidence": 0.9}).to_string();
    app.sim.add_rule(Rule { when_contains: "群聊中控".into(), fault: Fault::Reply(moderator), times: Some(1) });
    let spoken = app.post_json(&format!("/v1/groups/{group}/messages"), &owner, &json!({"content": "诸位好"})).await;
    assert_eq!(spoken.status(), 202);
    let spoken: Value = spoken.json().await.unwrap();
    assert_eq!(app.wait_for_job(&owner, spoken["job"]["id"].as_str().unwrap()).await["status"], "succeeded");
    let key: Value = app.post_json("/v1/api-keys", &owner, &json!({"name": "k"})).await.json().await.unwrap();
    let key = key["api_key"]["id"].as_str().unwrap().to_owned();
    app.ready_character(&other, "曹操").await;
    // There are prompts to leak: `?include=prompt` shows the owner their replies' prompts.
    for path in [format!("/v1/characters/{character}/messages"), format!("/v1/groups/{group}/messages")] {
        let history: Value = app.get(&format!("{path}?include=prompt"), &owner).await.json().await.unwrap();
        let prompts = history["items"].as_array().unwrap().iter().filter(|m| m["prompt"].is_string()).count();
        assert!(prompts > 0, "{path} has replies with prompts: {history}");
    }

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
        (Method::GET, format!("/v1/characters/{character}/messages?include=prompt"), None, 200),
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
        (Method::GET, format!("/v1/groups/{group}/messages?include=prompt"), None, 200),
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
    // The same paths with ids nobody has: what an existing id must be indistinguishable from.
    // (Problem documents carry no `instance`, so nothing in them echoes the id.)
    let missing = |path: &str| {
        [&character, &job, &group, &key, &owner_id]
            .into_iter()
            .fold(path.to_owned(), |path, id| path.replace(id.as_str(), &uuid::Uuid::now_v7().to_string()))
    };
    // Every row of every table, compared whole. One column is written by reads:
    // `api_keys.last_used_at`, stamped (at most once a minute) when a live key authenticates. No
    // live key is used from here to the comparison — the disabled user's key is refused before
    // its use is recorded (the lookup only sees enabled accounts' keys) — so it is compared too,
    // and a refused key that left a trace would show. Sessions record no use.
    settle(&app).await;
    let before = app.db.contents().await;
    // The snapshot sees what the intruders aim at (the catalog listed the tables, rows were read).
    for table in ["characters", "memories", "groups", "group_members", "messages", "jobs", "api_keys", "sessions"] {
        assert!(before.get(table).is_some_and(|rows| !rows.is_empty()), "{table} in {:?}", before.keys());
    }
    let callers = [
        ("another user", Some(&other), 404),
        ("anonymous", None, 401),
        ("a disabled user's session", Some(&banned), 401),
        ("a disabled user's API key", Some(&banned_key), 401),
        ("a revoked session", Some(&revoked), 401),
        ("an expired session", Some(&expired), 401),
    ];
    for (who, caller, expected) in callers {
        for (method, path, body, _) in &routes {
            let answer = app.answer(method.clone(), path, caller, body.as_ref()).await;
            assert_eq!(answer.status, expected, "{method} {path} as {who}: {answer:?}");
            assert_eq!(answer.header("content-type"), Some(&b"application/problem+json"[..]), "{method} {path}");
            let unknown = missing(path);
            let for_missing = app.answer(method.clone(), &unknown, caller, body.as_ref()).await;
            assert_eq!(answer, for_missing, "{method} {path} as {who} answers exactly like {unknown}");
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
    assert_same_contents(&before, &app.db.contents().await, "refused calls");
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
