//! The web app over HTTP: how its files are served, browser sessions in cookies, the CSRF check,
//! and `GET /v1/system`. What the pages do is tested in a real browser (`browser::`).

use std::collections::BTreeSet;

use fastnpc_tests::harness::{PASSWORD, TestApp};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

/// The asset prefix (`/assets/<version>`) the entry page names.
fn asset_prefix(entry: &str) -> String {
    let start = entry.find("/assets/").expect("the entry page names its assets");
    let version: String = entry[start + "/assets/".len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    format!("/assets/{version}")
}

/// Relative module imports (`from './x.js'`, `import('./x.js')`, `import './x.js'`) of a script.
fn relative_imports(script: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['\'', '"'] {
        for piece in script.split(&format!("{quote}./")).skip(1) {
            if let Some(end) = piece.find(quote) {
                let target = &piece[..end];
                if target.ends_with(".js") {
                    found.push(target.to_owned());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_web_app_is_served_from_the_binary_with_caching_and_a_strict_policy() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();

    let entry = http.get(app.url("/")).send().await.unwrap();
    assert_eq!(entry.status(), 200);
    let headers = entry.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "object-src 'none'"] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "no inline scripts or styles: {policy}");
    let entry = entry.text().await.unwrap();
    assert!(!entry.contains("__ASSETS__"), "the placeholder is replaced");
    let prefix = asset_prefix(&entry);

    // Client-side routes answer the same entry page; the API and files keep their 404s.
    for route in ["/characters/0190c8a8-0000-7000-8000-000000000000", "/groups", "/settings/api-keys"] {
        let page = http.get(app.url(route)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{route}");
        assert_eq!(page.text().await.unwrap(), entry, "{route} is the app's entry page");
    }
    for missing in ["/v1/nothing-here", "/favicon.ico", &format!("{prefix}/no-such-module.js")] {
        let answer = http.get(app.url(missing)).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{missing}");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/problem+json", "{missing}");
    }
    let posted = http.post(app.url("/characters")).send().await.unwrap();
    assert_eq!(posted.status(), 404, "only GET reaches the entry page");

    // Every module the app imports, transitively, is compiled in and immutable under its version.
    let mut pending = vec!["app.js".to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(module) = pending.pop() {
        if !seen.insert(module.clone()) {
            continue;
        }
        let response = http.get(app.url(&format!("{prefix}/{module}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{module}");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8", "{module}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable", "{module}");
        let script = response.text().await.unwrap();
        let folder = module.rsplit_once('/').map_or(String::new(), |(folder, _)| format!("{folder}/"));
        for import in relative_imports(&script) {
            let mut path = format!("{folder}{import}");
            while let Some((up, rest)) = path.split_once("/../") {
                path = format!("{}{rest}", up.rsplit_once('/').map_or(String::new(), |(p, _)| format!("{p}/")));
            }
            pending.push(path);
        }
    }
    assert!(seen.len() > 3, "the app is split into modules: {seen:?}");

    // Compressed for clients that accept it, and revalidated by ETag.
    let compressed =
        http.get(app.url(&format!("{prefix}/app.js"))).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
    assert_eq!(compressed.headers()[header::CONTENT_ENCODING], "gzip");
    let etag = compressed.headers()[header::ETAG].clone();
    let again = http
        .get(app.url(&format!("{prefix}/app.js")))
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let plain =
        http.get(app.url(&format!("{prefix}/app.js"))).header(header::IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(plain.status(), 200, "the gzip body's tag does not validate the plain one");
    let head = http.head(app.url("/characters")).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD of a page answers like GET");
    app.stop().await;
}

/// A cookie login as the web app makes it, from `origin`.
async fn cookie_login(app: &TestApp, username: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/auth/login"))
        .header(header::ORIGIN, origin)
        .json(&json!({"username": username, "password": PASSWORD, "cookie": true}))
        .send()
        .await
        .unwrap()
}

/// The `name=value` pair of a `Set-Cookie` answer, and its attributes.
fn session_cookie(response: &reqwest::Response) -> (String, String) {
    let set = response.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let (pair, attributes) = set.split_once(';').unwrap();
    (pair.to_owned(), attributes.to_owned())
}

#[tokio::test]
async fn a_browser_session_lives_in_an_http_only_cookie_and_changes_state_only_from_the_same_origin() {
    let app = TestApp::spawn().await;
    let user = app.user("cookie-ada").await;
    let origin = app.url("");
    let http = reqwest::Client::new();

    let login = cookie_login(&app, &user.username, &origin).await;
    assert_eq!(login.status(), 200);
    let (cookie, attributes) = session_cookie(&login);
    assert!(cookie.starts_with("fastnpc_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(attributes.contains(attribute), "{attribute} in {attributes}");
    }
    assert!(!attributes.contains("Secure"), "plain HTTP gets no Secure cookie: {attributes}");
    let body: Value = login.json().await.unwrap();
    assert!(body.get("token").is_none(), "page scripts never see the session: {body}");
    assert_eq!(body["user"]["username"], "cookie-ada");

    let with_cookie = |method: Method, path: &str| http.request(method, app.url(path)).header(header::COOKIE, &cookie);
    let me = with_cookie(Method::GET, "/v1/me").send().await.unwrap();
    assert_eq!(me.status(), 200, "reads need no origin evidence");

    // State changes with the cookie: only from this site's own pages.
    let character =
        json!({"name": "Ada", "source": {"kind": "text", "text": fastnpc_tests::harness::sample_source("Ada")}});
    let forged = [
        ("cross-site fetch metadata", vec![("sec-fetch-site", "cross-site".to_owned())]),
        ("same-site is not same-origin", vec![("sec-fetch-site", "same-site".to_owned())]),
        ("another origin", vec![("origin", "http://evil.example".to_owned())]),
        ("no evidence at all", vec![]),
    ];
    for (what, headers) in forged {
        let mut request = with_cookie(Method::POST, "/v1/characters").json(&character);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 403, "{what}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/cross-site-request", "{what}: {problem}");
    }
    let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "no refused request created anything");

    let same_origin =
        with_cookie(Method::POST, "/v1/characters").header("sec-fetch-site", "same-origin").json(&character);
    assert_eq!(same_origin.send().await.unwrap().status(), 202);
    let by_origin = with_cookie(Method::POST, "/v1/characters").header(header::ORIGIN, &origin).json(&character);
    let created: Value = by_origin.send().await.unwrap().json().await.unwrap();
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    // Any page can find the generation to follow, not only the one that started it.
    let character_id = created["character"]["id"].as_str().unwrap();
    let read: Value =
        with_cookie(Method::GET, &format!("/v1/characters/{character_id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(read["job"]["id"], job.as_str(), "{read}");
    assert_eq!(read["job"]["events_url"], format!("/v1/jobs/{job}/events"));
    assert_eq!(read["job"]["status_url"], format!("/v1/jobs/{job}"));
    assert!(["queued", "running", "succeeded"].contains(&read["job"]["status"].as_str().unwrap()), "{read}");

    // The job stream follows the cookie too (an EventSource or fetch from the page).
    let events = with_cookie(Method::GET, &format!("/v1/jobs/{job}/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");
    drop(events);

    // Bearer clients are scripts: no origin rules for them, whatever headers they send.
    let scripted =
        app.request(Method::POST, "/v1/characters", Some(&user)).header(header::ORIGIN, "http://evil.example");
    assert_eq!(scripted.json(&character).send().await.unwrap().status(), 202);

    // A forged cookie login is refused (it would sign the victim into another account).
    let forged_login = cookie_login(&app, &user.username, "http://evil.example").await;
    assert_eq!(forged_login.status(), 403);
    assert!(forged_login.headers().get(header::SET_COOKIE).is_none());

    // Logging out revokes the session and deletes the cookie.
    let logout = with_cookie(Method::POST, "/v1/auth/logout").header(header::ORIGIN, &origin).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    let cleared: Vec<&str> =
        logout.headers().get_all(header::SET_COOKIE).iter().map(|value| value.to_str().unwrap()).collect();
    assert!(cleared.iter().any(|c| c.starts_with("fastnpc_session=;") && c.contains("Max-Age=0")), "{cleared:?}");
    assert_eq!(with_cookie(Method::GET, "/v1/me").send().await.unwrap().status(), 401);
    assert_eq!(app.get("/v1/me", &user).await.status(), 200, "the bearer session is another session");
    app.stop().await;
}

#[tokio::test]
async fn over_https_the_session_cookie_is_secure_and_host_prefixed() {
    let app = TestApp::spawn().await;
    let user = app.user("secure-ada").await;
    // As behind a TLS-terminating proxy: the page's origin is https.
    let login = cookie_login(&app, &user.username, "https://fastnpc.example").await;
    // The page's origin is not this listener's own, so only fetch metadata can vouch for it.
    assert_eq!(login.status(), 403, "an Origin that is not the request's own is refused");
    let login = reqwest::Client::new()
        .post(app.url("/v1/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-proto", "https")
        .json(&json!({"username": user.username, "password": PASSWORD, "cookie": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let (cookie, attributes) = session_cookie(&login);
    assert!(cookie.starts_with("__Host-fastnpc_session="), "{cookie}");
    assert!(attributes.contains("Secure") && attributes.contains("Path=/"), "{attributes}");
    let me = reqwest::Client::new().get(app.url("/v1/me")).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(me.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn logging_out_everywhere_ends_every_session_and_keeps_api_keys() {
    let app = TestApp::spawn().await;
    let first = app.user("everywhere").await;
    let second = app.login("everywhere", PASSWORD).await;
    let login = cookie_login(&app, "everywhere", &app.url("")).await;
    let (cookie, _) = session_cookie(&login);
    let key: Value = app.post_json("/v1/api-keys", &first, &json!({"name": "script"})).await.json().await.unwrap();
    let key = fastnpc_tests::harness::TestUser {
        username: "everywhere".into(),
        token: key["key"].as_str().expect("the key, shown once").to_owned(),
    };

    let out = app.request(Method::POST, "/v1/auth/logout-everywhere", Some(&second)).send().await.unwrap();
    assert_eq!(out.status(), 204);
    assert_eq!(app.get("/v1/me", &first).await.status(), 401);
    assert_eq!(app.get("/v1/me", &second).await.status(), 401);
    let browser = reqwest::Client::new().get(app.url("/v1/me")).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(browser.status(), 401);
    assert_eq!(app.get("/v1/me", &key).await.status(), 200, "API keys are revoked one by one");
    app.stop().await;
}

#[tokio::test]
async fn the_system_answer_tells_the_page_about_the_model_and_the_limits() {
    let app = TestApp::spawn().await;
    let system: Value = reqwest::get(app.url("/v1/system")).await.unwrap().json().await.unwrap();
    assert_eq!(system["llm"], json!({"simulated": false, "model": "sim-model"}));
    assert_eq!(system["limits"]["name_chars"], 64);
    assert_eq!(system["limits"]["message_chars"], 8000);
    assert_eq!(system["limits"]["source_chars"], 100_000);
    app.stop().await;

    let simulated = TestApp::builder().setting("FASTNPC_LLM_SIMULATED", "true").spawn().await;
    let system: Value = reqwest::get(simulated.url("/v1/system")).await.unwrap().json().await.unwrap();
    assert_eq!(system["llm"]["simulated"], true);
    simulated.stop().await;
}
