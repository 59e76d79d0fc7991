//! Accounts and input validation.

use fastnpc_tests::harness::{TestApp, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status);
    assert!(problem["title"].is_string() && problem["type"].is_string());
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    problem
}

#[tokio::test]
async fn register_login_me_logout() {
    let app = TestApp::spawn().await;
    let user = app.user("Ada").await;
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!(me["user"]["username"], "Ada");
    assert_eq!(me["user"]["memory_budgets"]["session"], 3000);
    assert_eq!(me["user"]["memory_budgets"]["long_term"], 4000);

    let taken = app
        .http
        .post(app.url("/v1/auth/register"))
        .json(&json!({"username": "ada", "password": "another password"}))
        .send()
        .await
        .unwrap();
    assert_problem(taken, 409).await;
    let wrong = app
        .http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"username": "Ada", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_problem(wrong, 401).await;
    let nobody = app
        .http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"username": "nobody", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_problem(nobody, 401).await;
    let short = app
        .http
        .post(app.url("/v1/auth/register"))
        .json(&json!({"username": "bob", "password": "short"}))
        .send()
        .await
        .unwrap();
    assert_problem(short, 422).await;

    let logout = app.request(Method::POST, "/v1/auth/logout", Some(&user)).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    assert_problem(app.get("/v1/me", &user).await, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn the_language_setting_is_chinese_by_default_and_takes_zh_or_en_only() {
    let app = TestApp::spawn().await;
    let user = app.user("ada").await;
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!(me["user"]["language"], "zh", "{me}");

    let patch = |body: Value| app.request(Method::PATCH, "/v1/me", Some(&user)).json(&body).send();
    let changed = patch(json!({"language": "en"})).await.unwrap();
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["user"]["language"], "en", "the PATCH answer shows it: {changed}");
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!(me["user"]["language"], "en", "{me}");

    // Anything else is refused, naming the field, and changes nothing (not even the valid rest).
    for language in [json!("fr"), json!("EN"), json!(""), json!(1)] {
        let refused = patch(json!({"language": language, "bio": "polyglot"})).await.unwrap();
        let problem = assert_problem(refused, 422).await;
        assert!(problem["detail"].as_str().unwrap().contains("language"), "{problem}");
    }
    let after: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!(after, me, "nothing changed");
    // Other settings leave it alone.
    let bio = patch(json!({"bio": "polyglot"})).await.unwrap();
    assert_eq!(bio.status(), 200);
    let me: Value = app.get("/v1/me", &user).await.json().await.unwrap();
    assert_eq!((me["user"]["bio"].as_str(), me["user"]["language"].as_str()), (Some("polyglot"), Some("en")));
    app.stop().await;
}

#[tokio::test]
async fn invalid_character_submissions_get_problem_details_and_create_nothing() {
    let app = TestApp::spawn().await;
    let user = app.user("grace").await;
    let source = |text: &str| json!({"kind": "text", "text": text});
    let good_text = fastnpc_tests::harness::sample_source("李白");
    let cases = [
        (json!({"source": source(&good_text)}), 422, "name"),
        (json!({"name": "  ", "source": source(&good_text)}), 422, "name"),
        (json!({"name": "李白", "source": source("")}), 422, "empty"),
        (json!({"name": "李白", "source": source(&"字".repeat(100_001))}), 422, "limit"),
        (json!({"name": "李白", "source": {"kind": "book", "text": good_text}}), 422, "book"),
        (json!({"name": "李白", "source": {"kind": "baike", "text": good_text}}), 422, "text"),
        (json!({"name": "李白", "source": {"kind": "wikipedia", "lang": "zh/../x", "title": "李白"}}), 422, "lang"),
        (json!({"name": "李白", "source": {"kind": "wikipedia", "lang": "zh", "title": "李白|杜甫"}}), 422, "title"),
        (json!({"name": "李白", "source": {"kind": "url", "url": "gopher://example.org/"}}), 422, "source.url"),
        (json!({"name": "李白", "source": source(&good_text), "model": "gpt"}), 422, "model"),
        (json!({"name": "李".repeat(65), "source": source(&good_text)}), 422, "64"),
    ];
    for (body, status, mention) in cases {
        let problem = assert_problem(app.post_json("/v1/characters", &user, &body).await, status).await;
        assert!(
            problem["detail"].as_str().unwrap().contains(mention),
            "detail {:?} should mention {mention}",
            problem["detail"]
        );
    }
    let malformed = app
        .request(Method::POST, "/v1/characters", Some(&user))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400).await;
    let not_json = app.request(Method::POST, "/v1/characters", Some(&user)).body("name=x").send().await.unwrap();
    assert_problem(not_json, 415).await;
    let huge = app
        .request(Method::POST, "/v1/characters", Some(&user))
        .header("content-type", "application/json")
        .body(vec![b' '; fastnpc_api::MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    let bad_token = TestUser { username: "grace".into(), token: "not-a-token".into() };
    assert_problem(
        app.post_json("/v1/characters", &bad_token, &json!({"name": "李白", "source": source(&good_text)})).await,
        401,
    )
    .await;

    let characters = app.db.count("select count(*) from characters").await;
    let jobs = app.db.count("select count(*) from jobs").await;
    assert_eq!((characters, jobs), (0, 0), "nothing was created");
    assert_eq!(app.sim.stats().requests_received, 0, "no LLM call was made");
    app.stop().await;
}

#[tokio::test]
async fn names_are_normalised_and_weak_passwords_refused() {
    let app = TestApp::builder().workers(0).spawn().await;
    let user = app.user("ada").await;
    let register = |username: &str, password: &str| {
        app.http.post(app.url("/v1/auth/register")).json(&json!({"username": username, "password": password})).send()
    };
    // Full-width letters are the same username (NFKC), not a look-alike second account.
    assert_problem(register("ａｄａ", "another good password").await.unwrap(), 409).await;
    assert_problem(register("bob", "aaaaaaaaaaaa").await.unwrap(), 422).await;
    assert_problem(register("barbara", "barbara-is-me").await.unwrap(), 422).await;
    assert_eq!(register("barbara", "lovelace engine").await.unwrap().status(), 201);
    // Login normalises the same way.
    let login = app
        .http
        .post(app.url("/v1/auth/login"))
        .json(&json!({"username": "ＡＤＡ", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    // Display names are NFC: a combining accent and the precomposed letter are one name.
    let text = fastnpc_tests::harness::sample_source("Zoé");
    let created = app
        .post_json("/v1/characters", &user, &json!({"name": "Zoe\u{301}", "source": {"kind": "text", "text": text}}))
        .await;
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["character"]["name"], "Zo\u{e9}");
    app.stop().await;
}
