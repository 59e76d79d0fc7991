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
        allowed: vec!["127.0.0.2/32".parse().unwrap()],
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
