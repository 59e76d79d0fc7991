//! The guarded fetcher of web sources (`fastnpc_shared::sources::fetch`) against local servers:
//! an allowed fixture host (127.0.0.2, allow-listed as an operator would an internal wiki) and a
//! refused one (127.0.0.3) that must never see a request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::get,
};
use fastnpc_shared::sources::fetch::{FetchError, FetchPolicy, fetch};

/// Serves `router` on `ip`, port chosen by the system; returns the base URL.
async fn serve(ip: &str, router: Router) -> String {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("a loopback address to bind");
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

struct Fixtures {
    allowed: String,
    refused: String,
    refused_hits: Arc<AtomicUsize>,
    policy: FetchPolicy,
}

async fn fixtures() -> Fixtures {
    let refused_hits = Arc::new(AtomicUsize::new(0));
    let hits = refused_hits.clone();
    let refused = serve(
        "127.0.0.3",
        Router::new().fallback(move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async { "internal secrets" }
        }),
    )
    .await;
    let to_refused = format!("{refused}/admin");
    let allowed = serve(
        "127.0.0.2",
        Router::new()
            .route(
                "/article",
                get(|headers: HeaderMap| async move {
                    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    ([(header::CONTENT_TYPE, "text/html; charset=GBK")], format!("<p>李白 {agent}</p>"))
                }),
            )
            .route("/moved", get(|| async { Redirect::temporary("/article") }))
            .route("/to-internal", get(move || async move { Redirect::temporary(&to_refused) }))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route("/busy", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "7")], "later") }))
            .route("/image", get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 16]) }))
            .route("/huge", get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "x".repeat(64 * 1024)) }))
            .route(
                "/huge-streamed",
                get(|| async {
                    let chunks = futures::stream::iter(
                        (0..64).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'y'; 1024]))),
                    );
                    ([(header::CONTENT_TYPE, "text/plain")], axum::body::Body::from_stream(chunks)).into_response()
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    // The fixture stands for a server that never finishes answering.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            ),
    )
    .await;
    let policy = FetchPolicy {
        allowed: "127.0.0.2/32".parse().unwrap(),
        max_bytes: 16 * 1024,
        timeout: Duration::from_secs(2),
        ..FetchPolicy::default()
    };
    Fixtures { allowed, refused, refused_hits, policy }
}

#[tokio::test]
async fn an_allowed_page_is_fetched_through_redirects_with_its_charset_and_an_identifying_agent() {
    let f = fixtures().await;
    let page = fetch(&f.policy, &format!("{}/moved", f.allowed)).await.expect("fetched");
    assert_eq!(page.url.path(), "/article", "the redirect was followed");
    assert_eq!(page.media_type, "text/html");
    assert_eq!(page.charset.as_deref(), Some("GBK"));
    let text = String::from_utf8(page.body).unwrap();
    assert!(text.contains("李白 FastNPC/"), "the User-Agent names FastNPC: {text}");
}

#[tokio::test]
async fn refused_addresses_are_never_contacted_however_they_are_reached() {
    let f = fixtures().await;
    let blocked = |result: Result<_, FetchError>, what: &str| match result {
        Err(error @ FetchError::Blocked { .. }) => assert_eq!(error.code(), "source_blocked", "{what}"),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    };
    blocked(fetch(&f.policy, &format!("{}/anything", f.refused)).await, "a refused address");
    blocked(fetch(&f.policy, &format!("{}/to-internal", f.allowed)).await, "a redirect to a refused address");
    let port = f.refused.rsplit(':').next().unwrap();
    blocked(fetch(&f.policy, &format!("http://localhost:{port}/")).await, "a name resolving to loopback");
    // 127.0.0.3 spelled as one decimal number and in IPv4-mapped IPv6.
    blocked(fetch(&f.policy, &format!("http://2130706435:{port}/")).await, "decimal loopback");
    blocked(fetch(&f.policy, &format!("http://[::ffff:127.0.0.3]:{port}/")).await, "IPv4-mapped loopback");
    assert_eq!(f.refused_hits.load(Ordering::SeqCst), 0, "the refused server saw nothing");
    for url in ["ftp://127.0.0.2/", "file:///etc/passwd", "not a url"] {
        let error = fetch(&f.policy, url).await.expect_err(url);
        assert!(matches!(error, FetchError::InvalidUrl { .. }), "{url}: {error:?}");
    }
}

#[tokio::test]
async fn limits_and_failures_are_clear_errors() {
    let f = fixtures().await;
    let get = |path: &str| {
        let url = format!("{}{path}", f.allowed);
        let policy = f.policy.clone();
        async move { fetch(&policy, &url).await }
    };
    assert!(matches!(get("/huge").await, Err(FetchError::TooLarge { limit: 16384, .. })), "declared size");
    assert!(matches!(get("/huge-streamed").await, Err(FetchError::TooLarge { .. })), "streamed, cut");
    assert!(matches!(get("/image").await, Err(FetchError::UnsupportedType { .. })));
    assert!(matches!(get("/loop").await, Err(FetchError::TooManyRedirects { limit: 5, .. })));
    let missing = get("/missing").await.expect_err("404");
    assert_eq!(missing.code(), "source_not_found");
    assert_eq!(missing.retry(), None, "a missing page is not retried");
    let busy = get("/busy").await.expect_err("503");
    assert_eq!(busy.code(), "source_unavailable");
    assert_eq!(busy.retry(), Some(Some(Duration::from_secs(7))), "retried after the server's Retry-After");
    let slow = get("/slow").await.expect_err("past the time cap");
    assert!(matches!(slow, FetchError::TimedOut { seconds: 2, .. }), "{slow:?}");
    assert_eq!(slow.retry(), Some(None));
}

// --- The source kinds end to end: an app whose encyclopedias are the fixture server. ---

mod kinds {
    use fastnpc_tests::{
        harness::{TestApp, TestUser},
        source_fixtures::SourceFixtures,
    };
    use reqwest::{Response, StatusCode};
    use serde_json::{Value, json};

    async fn app(fixtures: &SourceFixtures) -> TestApp {
        fixtures.configure(TestApp::builder()).spawn().await
    }

    async fn create(app: &TestApp, user: &TestUser, name: &str, source: Value) -> Response {
        app.post_json("/v1/characters", user, &json!({"name": name, "source": source})).await
    }

    /// Creates a character, waits for its job; returns the job and the character as `GET` shows it.
    async fn generate(app: &TestApp, user: &TestUser, name: &str, source: Value) -> (Value, Value) {
        let response = create(app, user, name, source).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap_or_default());
        let created: Value = response.json().await.unwrap();
        let job = app.wait_for_job(user, created["job"]["id"].as_str().unwrap()).await;
        let id = created["character"]["id"].as_str().unwrap();
        let character: Value = app.get(&format!("/v1/characters/{id}"), user).await.json().await.unwrap();
        (job, character["character"].clone())
    }

    async fn failure(app: &TestApp, user: &TestUser, source: Value) -> (String, String) {
        let (job, _) = generate(app, user, "某人", source).await;
        assert_eq!(job["status"], "failed", "{job}");
        (job["error"]["code"].as_str().unwrap().to_owned(), job["error"]["message"].as_str().unwrap().to_owned())
    }

    async fn search(app: &TestApp, user: &TestUser, query: &str) -> Response {
        app.get(&format!("/v1/sources/search?{query}"), user).await
    }

    fn titles(candidates: &Value) -> Vec<&str> {
        candidates.as_array().unwrap().iter().map(|c| c["title"].as_str().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_wikipedia_article_becomes_a_character_built_from_its_text_fetched_once() {
        let fixtures = SourceFixtures::start().await;
        let app = app(&fixtures).await;
        let user = app.user("wiki").await;

        let response = create(&app, &user, "李白", json!({"kind": "wikipedia", "lang": "zh", "title": "李太白"})).await;
        assert_eq!(response.status(), 202);
        let created: Value = response.json().await.unwrap();
        let job_id = created["job"]["id"].as_str().unwrap();
        let events = app.collect_events(&user, job_id, None).await;
        let steps: Vec<String> = events
            .iter()
            .filter(|e| e.event == "progress")
            .map(|e| e.data["step"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(steps.first().map(String::as_str), Some("fetching"), "fetching comes first: {steps:?}");
        assert_eq!(steps.len(), 10, "fetching, then the nine categories: {steps:?}");
        assert_eq!(events.last().unwrap().event, "succeeded");

        let id = created["character"]["id"].as_str().unwrap();
        let character: Value = app.get(&format!("/v1/characters/{id}"), &user).await.json().await.unwrap();
        let character = &character["character"];
        let snapshot = &character["source_snapshot"];
        let canonical = "https://zh.wikipedia.org/wiki/%E6%9D%8E%E7%99%BD";
        assert_eq!(snapshot["url"], canonical, "the redirect was followed to the article: {snapshot}");
        assert_eq!(snapshot["title"], "李白");
        assert_eq!(snapshot["revision"], "84512345");
        let markdown = snapshot["markdown"].as_str().unwrap();
        assert!(markdown.contains("## 生平") && markdown.contains("### 晚年"), "headings became Markdown: {markdown}");
        assert!(!markdown.contains("## 图集"), "an empty section is dropped");
        assert_eq!(snapshot["chars"].as_u64().unwrap() as usize, markdown.chars().count());
        assert_eq!(snapshot["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(character["profile"]["source"]["source_url"], canonical, "the profile states the real URL");
        assert_eq!(character["language"], "zh");
        let prompts = app.sim.requests();
        assert!(
            prompts.iter().filter(|r| r.prompt_text.contains("天宝元年，他奉诏入长安")).count() >= 10,
            "every category and the brief were written from the fetched text"
        );

        // Another character of the same article, within the cache's age: no second fetch.
        let (job, again) =
            generate(&app, &user, "李太白", json!({"kind": "wikipedia", "lang": "zh", "title": "李太白"})).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(again["source_snapshot"]["sha256"], snapshot["sha256"]);
        assert_eq!(fixtures.hits_matching(&["prop=extracts", "titles=李太白"]), 1, "the article was fetched once");
    }

    #[tokio::test]
    async fn missing_short_and_ambiguous_wikipedia_titles_are_told_apart_and_candidates_are_searchable() {
        let fixtures = SourceFixtures::start().await;
        let app = app(&fixtures).await;
        let user = app.user("wiki-errors").await;
        let wiki = |lang: &str, title: &str| json!({"kind": "wikipedia", "lang": lang, "title": title});

        let (code, message) = failure(&app, &user, wiki("zh", "无此人物")).await;
        assert_eq!(code, "source_not_found");
        assert!(message.contains("Wikipedia (zh): 无此人物"), "the message names the source: {message}");
        let (code, _) = failure(&app, &user, wiki("zh", "短")).await;
        assert_eq!(code, "source_too_short");

        let ambiguous = create(&app, &user, "李靖", wiki("zh", "李靖")).await;
        assert_eq!(ambiguous.status(), StatusCode::CONFLICT);
        let problem: Value = ambiguous.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/ambiguous-source");
        assert_eq!(titles(&problem["candidates"]), ["李靖 (唐朝)", "李靖 (神话人物)"]);
        assert_eq!(problem["candidates"][0]["description"], "唐朝初年军事家");
        let listed: Value = app.get("/v1/characters", &user).await.json().await.unwrap();
        assert!(
            listed["items"].as_array().unwrap().iter().all(|c| c["name"] != "李靖"),
            "no character was created from the ambiguous title"
        );

        let found: Value = search(&app, &user, "kind=wikipedia&lang=zh&q=李白").await.json().await.unwrap();
        assert_eq!(
            titles(&found["candidates"]),
            ["李白", "杜甫", "李白 (歌曲)"],
            "search results in rank order, the disambiguation page replaced by its entries"
        );
        assert_eq!(found["candidates"][0]["url"], "https://zh.wikipedia.org/wiki/李白");
        let again: Value = search(&app, &user, "kind=wikipedia&lang=zh&q=李白").await.json().await.unwrap();
        assert_eq!(again, found);
        assert_eq!(fixtures.hits_matching(&["generator=search", "gsrsearch=李白"]), 1, "the second search was cached");

        let (job, ada) = generate(&app, &user, "Ada Lovelace", wiki("en", "Ada Lovelace")).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(ada["language"], "en", "the English edition makes an English character");

        for (query, status) in [
            ("kind=wikipedia&lang=zh&q=", StatusCode::UNPROCESSABLE_ENTITY),
            ("kind=wikipedia&lang=ZH!&q=李白", StatusCode::UNPROCESSABLE_ENTITY),
            ("kind=book&q=李白", StatusCode::UNPROCESSABLE_ENTITY),
            ("kind=wikipedia", StatusCode::BAD_REQUEST),
        ] {
            let response = search(&app, &user, query).await;
            assert_eq!(response.status(), status, "{query}");
            assert_eq!(response.headers()["content-type"], "application/problem+json", "{query}");
        }
        let anonymous = app.http.get(app.url("/v1/sources/search?kind=baike&q=李白")).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn baike_lemmas_in_both_markups_with_polysemous_titles_resolved_by_id() {
        let fixtures = SourceFixtures::start().await;
        let app = app(&fixtures).await;
        let user = app.user("baike").await;

        let ambiguous = create(&app, &user, "李白", json!({"kind": "baike", "title": "李白"})).await;
        assert_eq!(ambiguous.status(), StatusCode::CONFLICT);
        let problem: Value = ambiguous.json().await.unwrap();
        let candidates = problem["candidates"].as_array().unwrap();
        assert!(candidates.len() >= 3, "{problem}");
        let ids: Vec<&str> = candidates.iter().filter_map(|c| c["id"].as_str()).collect();
        assert!(ids.contains(&"1043") && ids.contains(&"7179"), "{ids:?}");
        let searched: Value = search(&app, &user, "kind=baike&q=李白").await.json().await.unwrap();
        assert_eq!(searched["candidates"], problem["candidates"], "search lists the same polysemants");

        let (job, poet) = generate(&app, &user, "李白", json!({"kind": "baike", "title": "李白", "id": "1043"})).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let snapshot = &poet["source_snapshot"];
        assert!(snapshot["url"].as_str().unwrap().ends_with("/baike/item/%E6%9D%8E%E7%99%BD/1043"), "{snapshot}");
        let markdown = snapshot["markdown"].as_str().unwrap();
        assert!(markdown.starts_with("# 李白"), "{markdown}");
        assert!(markdown.contains("基本信息"), "the basic-info box is kept: {markdown}");

        let (job, classic) = generate(&app, &user, "诸葛亮", json!({"kind": "baike", "title": "诸葛亮"})).await;
        assert_eq!(job["status"], "succeeded", "the classic markup too: {job}");
        assert!(classic["source_snapshot"]["markdown"].as_str().unwrap().contains("# 诸葛亮"));

        let (code, message) = failure(&app, &user, json!({"kind": "baike", "title": "无此词条"})).await;
        assert_eq!(code, "source_not_found", "{message}");
        assert!(message.contains("Baidu Baike: 无此词条"), "{message}");
    }

    #[tokio::test]
    async fn web_pages_are_reduced_to_their_article_in_any_charset_and_retried_when_busy() {
        let fixtures = SourceFixtures::start().await;
        let app = app(&fixtures).await;
        let user = app.user("pages").await;
        let page = |path: &str| json!({"kind": "url", "url": format!("{}{path}", fixtures.base)});

        let (job, ada) = generate(&app, &user, "Ada Lovelace", page("/pages/article.html")).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let markdown = ada["source_snapshot"]["markdown"].as_str().unwrap();
        assert!(markdown.contains("Note G"), "the article is kept: {markdown}");
        assert!(!markdown.contains("Most popular"), "the page's furniture is not: {markdown}");

        for path in ["/pages/gbk.html", "/pages/gbk-undeclared.html", "/pages-gbk-header/gbk-undeclared.html"] {
            let (job, libai) = generate(&app, &user, "李白", page(path)).await;
            assert_eq!(job["status"], "succeeded", "{path}: {job}");
            let markdown = libai["source_snapshot"]["markdown"].as_str().unwrap();
            assert!(markdown.contains("号青莲居士"), "{path} decoded: {markdown}");
        }

        let (code, message) = failure(&app, &user, page("/pages/no-such-page.html")).await;
        assert_eq!(code, "source_not_found", "{message}");
        assert!(message.contains("/pages/no-such-page.html"), "the message names the page: {message}");

        let (job, _) = generate(&app, &user, "Ada Lovelace", page("/busy-once")).await;
        assert_eq!(job["status"], "succeeded", "a 503 with Retry-After is retried: {job}");
        assert_eq!(fixtures.hits("/busy-once"), 2);

        let (job, _) = generate(&app, &user, "Ada", page("/pages/article.html")).await;
        assert_eq!(job["status"], "succeeded");
        assert_eq!(fixtures.hits("/pages/article.html"), 1, "the second character used the fetch cache");
    }

    #[tokio::test]
    async fn limits_and_the_ssrf_guard_fail_jobs_clearly_without_touching_refused_addresses() {
        let fixtures = SourceFixtures::start().await;
        let app = fixtures
            .configure(TestApp::builder())
            .setting("FASTNPC_FETCH_TIMEOUT_SECS", "1")
            .setting("FASTNPC_FETCH_TRIES", "2")
            .setting("FASTNPC_FETCH_MAX_BYTES", "100000")
            .spawn()
            .await;
        let user = app.user("limits").await;
        let url = |url: String| json!({"kind": "url", "url": url});

        let (code, message) = failure(&app, &user, url(format!("{}/slow", fixtures.base))).await;
        assert_eq!(code, "source_unavailable", "{message}");
        assert!(message.contains("did not answer within 1 s"), "{message}");
        assert_eq!(fixtures.hits("/slow"), 2, "a timeout is retried, up to FASTNPC_FETCH_TRIES");
        let (code, message) = failure(&app, &user, url(format!("{}/huge", fixtures.base))).await;
        assert_eq!(code, "source_blocked", "{message}");
        assert!(message.contains("larger than 100000 bytes"), "{message}");

        let port = fixtures.refused.rsplit(':').next().unwrap();
        for refused in [
            format!("{}/admin", fixtures.refused),
            format!("{}/to-refused", fixtures.base),
            format!("http://localhost:{port}/"),
            format!("http://2130706435:{port}/"),
            format!("http://[::ffff:127.0.0.3]:{port}/"),
        ] {
            let (code, message) = failure(&app, &user, url(refused.clone())).await;
            assert_eq!(code, "source_blocked", "{refused}: {message}");
            assert!(message.contains("loopback"), "{refused}: {message}");
        }
        assert_eq!(fixtures.refused_hits(), 0, "no request reached a refused address");

        for (bad, why) in [("file:///etc/passwd", "http"), ("http://user:pw@example.org/", "password")] {
            let response = create(&app, &user, "x", url(bad.into())).await;
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            let problem: Value = response.json().await.unwrap();
            assert!(problem["detail"].as_str().unwrap().contains(why), "{problem}");
        }
    }
}
