//! Every resource belongs to its user: another user's ids answer exactly like missing ones and
//! change nothing; no request grants the admin role; a disabled account's stream tokens die with
//! it; and the secrets that open an account are stored only as hashes.

use fastnpc_tests::harness::{Answer, Backend, PASSWORD, TestApp, TestUser, assert_same_contents};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "root";
const ADMIN_PASSWORD: &str = "s3cret admin pw";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the API stores in place of a token or key: its SHA-256.
fn stored_hash(secret: &str) -> String {
    hex(&fastnpc_api::extract::token_hash(secret))
}

async fn me(app: &TestApp, user: &TestUser) -> Value {
    app.get("/v1/me", user).await.json::<Value>().await.unwrap()["user"].clone()
}

#[tokio::test]
async fn another_user_sees_neither_the_character_nor_its_job_nor_its_events() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let intruder = app.user("intruder").await;
    let created = app.create_character(&owner, "诸葛亮").await;
    let character_id = created["character"]["id"].as_str().unwrap();
    let job_id = created["job"]["id"].as_str().unwrap();
    app.wait_for_job(&owner, job_id).await;
    // A reply, whose prompt (with the owner's memories in it) only the owner may see.
    assert_eq!(app.send_message(&owner, character_id, "先生安好", Some(20)).await.status(), 200);
    let history: Value =
        app.get(&format!("/v1/characters/{character_id}/messages?include=prompt"), &owner).await.json().await.unwrap();
    assert!(history["items"][0]["prompt"].is_string(), "the owner sees the prompt: {history}");

    // Each answer is the one a random id nobody has gets, byte for byte (status, headers but
    // `date`, body): the intruder cannot even learn that the id exists. Problem documents carry
    // no `instance`, so the ids need no masking.
    let (missing_character, missing_job) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let missing = |path: &str| path.replace(character_id, &missing_character).replace(job_id, &missing_job);
    for (method, path) in [
        (Method::GET, format!("/v1/characters/{character_id}")),
        (Method::GET, format!("/v1/characters/{character_id}/messages")),
        (Method::GET, format!("/v1/characters/{character_id}/messages?include=prompt")),
        (Method::GET, format!("/v1/jobs/{job_id}")),
        (Method::GET, format!("/v1/jobs/{job_id}/events")),
        (Method::DELETE, format!("/v1/characters/{character_id}")),
    ] {
        let answer = app.answer(method.clone(), &path, Some(&intruder), None).await;
        assert_eq!(answer.status, 404, "{method} {path}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some(&b"application/problem+json"[..]));
        assert_eq!(answer, app.answer(method.clone(), &missing(&path), Some(&intruder), None).await, "{method} {path}");
    }
    let listed: Value = app.get("/v1/characters", &intruder).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    // Nothing changed for the owner.
    let character: Value = app.get(&format!("/v1/characters/{character_id}"), &owner).await.json().await.unwrap();
    assert_eq!(character["character"]["status"], "ready");

    // Without credentials: 401, not 404.
    for path in
        [format!("/v1/characters/{character_id}"), format!("/v1/jobs/{job_id}"), format!("/v1/jobs/{job_id}/events")]
    {
        let response = app.request(Method::GET, &path, None).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    app.stop().await;
}

/// Under a burst the API reads sessions and jobs in rounds, one statement for many requests;
/// each request still gets only its own answer: its user's job, another user's as a 404, a
/// session revoked just before as a 401.
#[tokio::test]
async fn a_burst_of_reads_from_several_users_answers_each_request_for_itself() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let bobs_old_session = app.login("bob", PASSWORD).await;
    let logout = app.request(Method::POST, "/v1/auth/logout", Some(&bobs_old_session)).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    let job_of = |created: Value| created["job"]["id"].as_str().unwrap().to_owned();
    let alices_job = job_of(app.create_character(&alice, "诸葛亮").await);
    let bobs_job = job_of(app.create_character(&bob, "Ada Lovelace").await);

    let asks = (0..250).map(|ask| {
        let (user, job, expected) = match ask % 5 {
            0 => (&alice, &alices_job, 200),
            1 => (&alice, &bobs_job, 404),
            2 => (&bob, &bobs_job, 200),
            3 => (&bob, &alices_job, 404),
            _ => (&bobs_old_session, &bobs_job, 401),
        };
        let app = &app;
        async move { (ask, job, expected, app.answer(Method::GET, &format!("/v1/jobs/{job}"), Some(user), None).await) }
    });
    for (ask, job, expected, answer) in futures::future::join_all(asks).await {
        assert_eq!(answer.status, expected, "ask {ask}: {answer:?}");
        if expected == 200 {
            let body: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(body["job"]["id"].as_str(), Some(job.as_str()), "ask {ask}: {body}");
        }
    }
}

#[tokio::test]
async fn patching_me_cannot_grant_the_admin_role() {
    let app = TestApp::builder()
        .setting("FASTNPC_ADMIN_USERNAME", ADMIN)
        .setting("FASTNPC_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .spawn()
        .await;
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await;
    let mallory = app.user("mallory").await;
    assert_eq!(me(&app, &admin).await["admin"], true, "there is an admin role to grant");
    let before = app.db.contents().await;

    let mut answers = Vec::new();
    for patch in [
        json!({"admin": true}),
        json!({"is_admin": true}),
        json!({"bio": "just a bio", "admin": true}),
        json!({"user": {"admin": true}}),
    ] {
        answers.push((patch.clone(), app.answer(Method::PATCH, "/v1/me", Some(&mallory), Some(&patch)).await));
    }

    // Nothing was granted: not in what the API says, not in what it lets her do, not in the row.
    assert_eq!(me(&app, &mallory).await["admin"], false);
    for path in ["/v1/admin/users", "/v1/admin/stats"] {
        let response = app.get(path, &mallory).await;
        assert_eq!(response.status(), 404, "{path}");
    }
    let id = me(&app, &mallory).await["id"].as_str().unwrap().to_owned();
    let disable = app.request(Method::POST, &format!("/v1/admin/users/{id}/disable"), Some(&mallory)).send().await;
    assert_eq!(disable.unwrap().status(), 404);
    assert_eq!(app.db.count_with("select count(*) from users where username = $1 and is_admin", "mallory").await, 0);
    assert_eq!(app.db.count_with("select count(*) from users where username = $1 and is_admin", ADMIN).await, 1);
    // And nothing else changed either (the bio beside `admin` was not applied).
    assert_same_contents(&before, &app.db.contents().await, "PATCH /v1/me with an admin flag");
    // Each patch was refused as naming an unknown field (not ignored).
    for (patch, answer) in answers {
        assert_eq!(answer.status, 422, "{patch}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some(&b"application/problem+json"[..]), "{patch}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_users_stream_token_no_longer_opens_the_stream() {
    let app = TestApp::builder()
        .setting("FASTNPC_ADMIN_USERNAME", ADMIN)
        .setting("FASTNPC_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .spawn()
        .await;
    let admin = app.login(ADMIN, ADMIN_PASSWORD).await;
    let user = app.user("ada").await;
    let created = app.create_character(&user, "李白").await;
    let job = created["job"]["id"].as_str().unwrap();
    app.wait_for_job(&user, job).await;
    let issued = app.request(Method::POST, &format!("/v1/jobs/{job}/stream-token"), Some(&user)).send().await.unwrap();
    assert_eq!(issued.status(), 200);
    let issued: Value = issued.json().await.unwrap();
    let url = issued["events_url"].as_str().unwrap().to_owned();

    // The token opens the stream (no header, as a browser's EventSource) while the account lives.
    let response = app.http.get(app.url(&url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events: Vec<_> = futures::StreamExt::collect::<Vec<_>>(fastnpc_tests::sse_client::events(response)).await;
    assert_eq!(events.last().unwrap().as_ref().unwrap().event, "succeeded");

    let id = me(&app, &user).await["id"].as_str().unwrap().to_owned();
    let disabled = app.request(Method::POST, &format!("/v1/admin/users/{id}/disable"), Some(&admin)).send().await;
    assert_eq!(disabled.unwrap().status(), 200);

    // Now it is as dead as a forged one, and says nothing more.
    let refused = Answer::read(app.http.get(app.url(&url)).send().await.unwrap()).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.header("content-type"), Some(&b"application/problem+json"[..]));
    let forged = app.http.get(app.url(&format!("/v1/jobs/{job}/events?stream_token=forged"))).send().await.unwrap();
    assert_eq!(refused, Answer::read(forged).await);
    app.stop().await;
}

#[tokio::test]
async fn sessions_api_keys_and_stream_tokens_are_stored_only_as_hashes() {
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let session = user.token.clone();
    let created = app.post_json("/v1/api-keys", &user, &json!({"name": "script"})).await;
    assert_eq!(created.status(), 201);
    let key = created.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let created = app.create_character(&user, "杜甫").await;
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    app.wait_for_job(&user, &job).await;
    let issued = app.request(Method::POST, &format!("/v1/jobs/{job}/stream-token"), Some(&user)).send().await.unwrap();
    assert_eq!(issued.status(), 200);
    let stream_token = issued.json::<Value>().await.unwrap()["stream_token"].as_str().unwrap().to_owned();
    // Each secret works, so each was stored somewhere.
    let key_user = TestUser { username: "ada".into(), token: key.clone() };
    assert_eq!(app.get("/v1/me", &key_user).await.status(), 200);
    let stream = app.http.get(app.url(&format!("/v1/jobs/{job}/events?stream_token={stream_token}"))).send().await;
    assert_eq!(stream.unwrap().status(), 200);

    // Every row of every table, as text, lower-cased so that hex reads the same whichever way a
    // backend prints bytes (Postgres `\x…`, SQLite `X'…'`).
    let contents = app.db.contents().await;
    let everything = |table: Option<&str>| -> Vec<String> {
        contents
            .iter()
            .filter(|(name, _)| table.is_none_or(|t| t == name.as_str()))
            .flat_map(|(_, rows)| rows.iter().map(|row| row.to_lowercase()))
            .collect()
    };
    let all = everything(None);
    for (what, secret) in [("session token", &session), ("API key", &key), ("stream token", &stream_token)] {
        assert!(secret.len() >= 32, "{what} {secret}");
        let (plain, plain_hex) = (secret.to_lowercase(), hex(secret.as_bytes()));
        assert!(
            all.iter().all(|row| !row.contains(&plain) && !row.contains(&plain_hex)),
            "the {what} is stored in the clear"
        );
    }
    // The session's and the key's rows hold their SHA-256, and nothing else holds them. (The
    // API's own hash function computes what to look for: first pinned to SHA-256 by a test vector.)
    assert_eq!(stored_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    for (what, table, secret) in [("session token", "sessions", &session), ("API key", "api_keys", &key)] {
        let hash = stored_hash(secret);
        let holding: Vec<&String> = all.iter().filter(|row| row.contains(&hash)).collect();
        assert_eq!(holding.len(), 1, "one row holds the {what}'s hash: {holding:?}");
        assert!(everything(Some(table)).contains(holding[0]), "the {what}'s hash is in {table}: {holding:?}");
    }
    assert_eq!(everything(Some("sessions")).len(), 1, "ada's one session");
    assert_eq!(everything(Some("api_keys")).len(), 1, "ada's one key");

    // Stream tokens are not database rows: Redis holds them in the distributed mode (checked
    // here: the key is the hash, the value the user and job), the process's memory in the
    // embedded one (out of a test's reach; the database check above covers that mode).
    if app.backend() == Backend::Distributed {
        let redis = app.redis_contents().await;
        for secret in [&session, &key, &stream_token] {
            for (name, value) in &redis {
                assert!(!name.contains(secret.as_str()) && !value.contains(secret.as_str()), "{name} holds a secret");
            }
        }
        let expected = format!("{}:stream-token:{}", app.settings.namespace, stored_hash(&stream_token));
        let names: Vec<&String> = redis.iter().map(|(name, _)| name).collect();
        let (_, value) =
            redis.iter().find(|(name, _)| *name == expected).unwrap_or_else(|| panic!("{expected} in {names:?}"));
        let user_id = me(&app, &user).await["id"].as_str().unwrap().to_owned();
        assert_eq!(value.trim(), format!("{user_id}:{job}"));
    }
    app.stop().await;
}
