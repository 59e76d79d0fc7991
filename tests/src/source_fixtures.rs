//! A stand-in for the web the `wikipedia`, `baike` and `url` sources fetch from: recorded and
//! written fixtures (`tests/fixtures/sources/`, each folder's README says where they come from)
//! served on loopback, so no test touches the internet.
//!
//! Two listeners: the fixture host on 127.0.0.2, which the apps the tests start allow-list
//! (`FASTNPC_FETCH_ALLOW`, as an operator would an internal wiki), and a refused host on
//! 127.0.0.3, which counts every request that reaches it — the SSRF tests assert it stays at 0.
//!
//! Routes of the fixture host:
//! - `/wiki/{lang}/api.php?…` — the MediaWiki Action API: `wikipedia/<lang>/<file>.json`, the
//!   file named by the request (`article-<titles>`, `search-<gsrsearch>`, `links-<titles>`);
//!   `/wiki-lenient/{lang}/api.php` the same, except that a search without a file finds nothing
//!   (for the schema fuzzer, which searches at random);
//! - `/baike/item/{title}[/{id}]` — Baidu Baike's lemma pages (`baike/*.html`); a lemma it does
//!   not have redirects to `/baike/error.html`, as Baike does;
//! - `/pages/{file}` — ordinary pages (`pages/*`), `text/html` without a charset;
//!   `/pages-gbk-header/{file}` the same with `charset=GBK` in `Content-Type`;
//! - `/slow` never answers; `/huge` streams more than any test's size cap; `/busy-once` answers
//!   `503` with `Retry-After: 1` to its first request and the article page after;
//!   `/to-refused` redirects to the refused host.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::harness::TestAppBuilder;

/// The fixture host's address; allow-listed by [`SourceFixtures::configure`].
pub const FIXTURE_HOST: &str = "127.0.0.2";
/// The refused host's address: nothing allows it.
pub const REFUSED_HOST: &str = "127.0.0.3";

#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn count(&self, key: String) -> usize {
        let mut hits = self.0.lock().unwrap();
        let count = hits.entry(key).or_default();
        *count += 1;
        *count
    }
}

/// The running fixture servers.
pub struct SourceFixtures {
    /// `http://127.0.0.2:<port>`.
    pub base: String,
    /// `http://127.0.0.3:<port>`.
    pub refused: String,
    hits: Hits,
    refused_hits: Hits,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sources")
}

/// A fixture file's bytes; `None` for a name that is not one (or tries to leave the folder).
fn fixture(folder: &str, name: &str) -> Option<Vec<u8>> {
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return None;
    }
    std::fs::read(fixtures_dir().join(folder).join(name)).ok()
}

fn html(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/html")], body).into_response()
}

async fn wikipedia(Path(lang): Path<String>, Query(query): Query<HashMap<String, String>>) -> Response {
    mediawiki(&lang, &query, false)
}

/// The same API for a client that searches at random (the schema fuzzer): a search without a
/// file finds nothing, as MediaWiki answers it, in any edition.
async fn lenient_wikipedia(Path(lang): Path<String>, Query(query): Query<HashMap<String, String>>) -> Response {
    mediawiki(&lang, &query, true)
}

fn mediawiki(lang: &str, query: &HashMap<String, String>, lenient: bool) -> Response {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let name = match param("generator") {
        "search" => format!("search-{}.json", param("gsrsearch")),
        "links" => format!("links-{}.json", param("titles")),
        _ => format!("article-{}.json", param("titles")),
    };
    let json = |body: Vec<u8>| ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response();
    match fixture(&format!("wikipedia/{lang}"), &name) {
        Some(body) => json(body),
        None if lenient && param("generator") == "search" => json(br#"{"batchcomplete":true}"#.to_vec()),
        // A request no test prepared for is a test's mistake: say so loudly.
        None => (StatusCode::IM_A_TEAPOT, format!("no fixture wikipedia/{lang}/{name}")).into_response(),
    }
}

async fn baike_item(Path(path): Path<String>) -> Response {
    let file = match path.split('/').filter(|part| !part.is_empty()).collect::<Vec<_>>()[..] {
        ["李白"] | ["李白", "1043"] => Some("libai.html"),
        ["李白", "7179"] => Some("libai-song.html"),
        ["诸葛亮"] | ["诸葛亮", _] => Some("zhugeliang.html"),
        _ => None,
    };
    match file.and_then(|file| fixture("baike", file)) {
        Some(body) => html(body),
        None => Redirect::to("/baike/error.html").into_response(),
    }
}

async fn page(Path(file): Path<String>) -> Response {
    fixture("pages", &file).map_or_else(|| StatusCode::NOT_FOUND.into_response(), html)
}

async fn page_gbk_header(Path(file): Path<String>) -> Response {
    match fixture("pages", &file) {
        Some(body) => ([(header::CONTENT_TYPE, "text/html; charset=GBK")], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn huge() -> Response {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks = futures::stream::iter((0..256).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(chunks)).into_response()
}

async fn busy_once(State(hits): State<Hits>) -> Response {
    if hits.count("busy-once".into()) == 1 {
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "busy").into_response();
    }
    fixture("pages", "article.html").map_or_else(|| StatusCode::NOT_FOUND.into_response(), html)
}

async fn bind(ip: &str) -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("a loopback address to bind");
    let address = listener.local_addr().unwrap();
    (listener, format!("http://{address}"))
}

impl SourceFixtures {
    pub async fn start() -> Self {
        let refused_hits = Hits::default();
        let (refused_listener, refused) = bind(REFUSED_HOST).await;
        let counted = refused_hits.clone();
        let refused_app = Router::new().fallback(move |uri: Uri| async move {
            counted.count(uri.to_string());
            "internal secrets"
        });
        tokio::spawn(async move { axum::serve(refused_listener, refused_app).await });

        let hits = Hits::default();
        let (listener, base) = bind(FIXTURE_HOST).await;
        let to_refused = format!("{refused}/admin");
        let counted = hits.clone();
        let app = Router::new()
            .route("/wiki/{lang}/api.php", get(wikipedia))
            .route("/wiki-lenient/{lang}/api.php", get(lenient_wikipedia))
            .route("/baike/item/{*path}", get(baike_item))
            .route(
                "/baike/error.html",
                get(|| async {
                    fixture("baike", "not-found.html").map_or_else(|| StatusCode::NOT_FOUND.into_response(), html)
                }),
            )
            .route("/pages/{file}", get(page))
            .route("/pages-gbk-header/{file}", get(page_gbk_header))
            .route("/slow", get(std::future::pending::<&str>))
            .route("/huge", get(huge))
            .route("/busy-once", get(busy_once))
            .route("/to-refused", get(move || async move { Redirect::temporary(&to_refused) }))
            .with_state(hits.clone())
            .layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
                counted.count(request.uri().to_string());
                next.run(request)
            }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, refused, hits, refused_hits }
    }

    /// Points an app's encyclopedias at the fixture host and allow-lists it (only it) for `url`
    /// sources.
    pub fn configure(&self, builder: TestAppBuilder) -> TestAppBuilder {
        builder
            .setting("FASTNPC_WIKIPEDIA_API_URL", format!("{}/wiki/{{lang}}/api.php", self.base))
            .setting("FASTNPC_BAIKE_URL", format!("{}/baike", self.base))
            .setting("FASTNPC_FETCH_ALLOW", format!("{FIXTURE_HOST}/32"))
    }

    /// [`SourceFixtures::configure`] with the lenient MediaWiki API (any search answers).
    pub fn configure_lenient(&self, builder: TestAppBuilder) -> TestAppBuilder {
        self.configure(builder)
            .setting("FASTNPC_WIKIPEDIA_API_URL", format!("{}/wiki-lenient/{{lang}}/api.php", self.base))
    }

    /// Requests the fixture host saw whose path and query start with `prefix` (percent-encoded
    /// as sent).
    pub fn hits(&self, prefix: &str) -> usize {
        self.hits.0.lock().unwrap().iter().filter(|(uri, _)| uri.starts_with(prefix)).map(|(_, n)| n).sum()
    }

    /// Requests the fixture host saw whose path and query contain every one of `parts` (decoded).
    pub fn hits_matching(&self, parts: &[&str]) -> usize {
        let hits = self.hits.0.lock().unwrap();
        hits.iter()
            .filter(|(uri, _)| {
                let decoded = url_decode(uri);
                parts.iter().all(|part| decoded.contains(part))
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests that reached the refused host: must stay 0.
    pub fn refused_hits(&self) -> usize {
        self.refused_hits.0.lock().unwrap().values().sum()
    }
}

fn url_decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
