//! The web app: plain JavaScript modules and a stylesheet in `api/web/`, compiled into the binary
//! (`build.rs`), served by the same process as the API. No Node.js, no build step.
//!
//! - `/assets/<version>/<path>`: the app's files. `<version>` is a hash of every file, so a new
//!   build gets new URLs and each file can be cached for a year (`immutable`). Modules import each
//!   other by relative path, so they stay under one version.
//! - Any other `GET` outside `/v1/` (the app's client-side routes: `/`, `/characters/…`): the entry
//!   page, with `__ASSETS__` replaced by `/assets/<version>`, revalidated on every load
//!   (`no-cache`, `ETag`) and under a strict `Content-Security-Policy`. A path whose last segment
//!   names a file (has a dot) is a plain 404 instead: a missing `favicon.ico` is not a page.
//! - Text files are gzipped once at start-up and sent compressed to clients that accept it.
//! - `FASTNPC_WEB_DIR=<folder>` serves the files from that folder instead, read on every request
//!   and never cached: edit a page, reload the browser, no rebuild.

use std::{collections::HashMap, io::Write, path::PathBuf, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::AppState};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// What the entry page may load and where it may connect: its own files and its own API only; no
/// inline scripts or styles, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// Where the app's files come from.
#[derive(Clone)]
pub enum WebFiles {
    /// Compiled in, prepared once.
    Embedded(Arc<WebApp>),
    /// Read from a folder on every request (`FASTNPC_WEB_DIR`).
    Folder(PathBuf),
}

impl WebFiles {
    /// The compiled-in files, or `folder`'s when given.
    pub fn new(folder: Option<PathBuf>) -> Self {
        match folder {
            Some(folder) => Self::Folder(folder),
            None => {
                let files = embedded::FILES.iter().map(|(path, bytes)| ((*path).to_owned(), bytes.to_vec()));
                Self::Embedded(Arc::new(WebApp::new(files.collect(), true)))
            }
        }
    }

    async fn app(&self) -> Result<Arc<WebApp>, ApiError> {
        match self {
            Self::Embedded(app) => Ok(app.clone()),
            Self::Folder(folder) => {
                let folder = folder.clone();
                let files = tokio::task::spawn_blocking(move || read_folder(&folder))
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading FASTNPC_WEB_DIR: {e}")))?;
                Ok(Arc::new(WebApp::new(files, false)))
            }
        }
    }
}

/// The app's files, ready to serve.
pub struct WebApp {
    version: String,
    files: HashMap<String, Asset>,
    entry: Asset,
    /// Compiled-in files are immutable under their version; a folder's change under our feet.
    cacheable: bool,
}

struct Asset {
    body: Bytes,
    gzip: Option<Bytes>,
    content_type: &'static str,
    /// Of the plain body; the gzipped one has its own (`…-gz`): two encodings of a file are two
    /// representations, and a cache must not answer one for the other.
    etag: HeaderValue,
    gzip_etag: HeaderValue,
}

impl Asset {
    fn new(path: &str, body: Vec<u8>, compress: bool) -> Self {
        let content_type = content_type(path);
        let digest = hex(&Sha256::digest(&body));
        let etag = HeaderValue::from_str(&format!("\"{}\"", &digest[..32])).expect("hex is a valid header value");
        let gzip_etag =
            HeaderValue::from_str(&format!("\"{}-gz\"", &digest[..32])).expect("hex is a valid header value");
        let textual =
            content_type.starts_with("text/") || content_type.contains("json") || content_type.contains("svg");
        let gzip = (compress && textual)
            .then(|| gzip(&body))
            .flatten()
            .filter(|compressed| compressed.len() < body.len())
            .map(Bytes::from);
        Self { body: body.into(), gzip, content_type, etag, gzip_etag }
    }
}

impl WebApp {
    /// Prepares `files` (path relative to the web folder, contents); `index.html` is the entry.
    pub fn new(files: Vec<(String, Vec<u8>)>, cacheable: bool) -> Self {
        let mut hasher = Sha256::new();
        for (path, bytes) in &files {
            hasher.update((path.len() as u64).to_le_bytes());
            hasher.update(path.as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        }
        let version = if cacheable { hex(&hasher.finalize())[..16].to_owned() } else { "dev".to_owned() };
        let entry_html = files
            .iter()
            .find(|(path, _)| path == "index.html")
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).replace("__ASSETS__", &format!("/assets/{version}")))
            .unwrap_or_else(|| "<!doctype html><title>FastNPC</title><p>The web app was not built in.".to_owned());
        let entry = Asset::new("index.html", entry_html.into_bytes(), cacheable);
        let files = files.into_iter().map(|(path, bytes)| {
            let asset = Asset::new(&path, bytes, cacheable);
            (path, asset)
        });
        Self { version, files: files.collect(), entry, cacheable }
    }

    /// The version in asset URLs.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// `GET /assets/{version}/{*path}`: one of the app's files.
pub async fn asset(
    State(state): State<AppState>,
    Path((version, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app = state.web.app().await?;
    let asset = app.files.get(&path).filter(|_| path != "index.html").ok_or(ApiError::NotFound)?;
    // A page of an older build asking for its files gets today's, revalidated, not a 404.
    let cache =
        if app.cacheable && version == app.version { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut response = serve(asset, &headers, cache);
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// Every request no route matched: the entry page for the app's own paths, a problem document
/// for everything else (`/v1/...` above all).
pub async fn fallback(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let is_api = path == "/v1" || path.starts_with("/v1/");
    let names_a_file = path.rsplit('/').next().is_some_and(|last| last.contains('.'));
    if !(method == Method::GET || method == Method::HEAD) || is_api || names_a_file || path.starts_with("/assets/") {
        return ApiError::NotFound.into_response();
    }
    match state.web.app().await {
        Ok(app) => {
            let mut response = serve(&app.entry, &headers, "no-cache");
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
            response
        }
        Err(error) => error.into_response(),
    }
}

/// `asset` with `cache_control`: `304` when the client's copy is current, gzipped when accepted.
fn serve(asset: &Asset, request: &HeaderMap, cache_control: &'static str) -> Response {
    let gzipped = asset.gzip.as_ref().filter(|_| accepts_gzip(request));
    let etag = if gzipped.is_some() { &asset.gzip_etag } else { &asset.etag };
    let fresh = client_copy_is_current(request, etag);
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if let Some(compressed) = gzipped {
        let mut response = Response::new(Body::from(compressed.clone()));
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        Response::new(Body::from(asset.body.clone()))
    };
    let headers = response.headers_mut();
    if !fresh {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if asset.gzip.is_some() {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// Whether `Accept-Encoding` takes gzip: named (or `*`) with a non-zero `q`.
/// True when the request's `If-None-Match` names `etag` (weakly compared) or is `*`: the
/// client's copy is current and a `304` answers it.
pub(crate) fn client_copy_is_current(request: &HeaderMap, etag: &HeaderValue) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

fn accepts_gzip(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next()?;
            let quality = parts
                .find_map(|parameter| parameter.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
                .unwrap_or(1.0);
            Some((name, quality))
        })
        .any(|(name, quality)| (name.eq_ignore_ascii_case("gzip") || name == "*") && quality > 0.0)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, extension)| extension.to_ascii_lowercase()).as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// Lower-case hexadecimal, for tags made from digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The files of a development folder: the set the build script compiles in.
fn read_folder(root: &std::path::Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    crate::web_files::servable_files(root)?
        .into_iter()
        .map(|(relative, path)| Ok((relative, std::fs::read(path)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> WebApp {
        WebApp::new(
            vec![
                ("index.html".into(), b"<script type=module src=\"__ASSETS__/app.js\"></script>".to_vec()),
                ("app.js".into(), "import './pages/a.js';\n".repeat(50).into_bytes()),
            ],
            true,
        )
    }

    #[test]
    fn the_entry_page_names_its_assets_by_a_version_that_changes_with_any_file() {
        let first = app();
        let entry = String::from_utf8(first.entry.body.to_vec()).unwrap();
        assert_eq!(entry, format!("<script type=module src=\"/assets/{}/app.js\"></script>", first.version()));
        let changed = WebApp::new(
            vec![("index.html".into(), b"x".to_vec()), ("app.js".into(), b"import './pages/b.js';".to_vec())],
            true,
        );
        assert_ne!(first.version(), changed.version());
        assert_eq!(first.version(), app().version(), "the same files, the same version");
    }

    #[test]
    fn text_is_gzipped_for_clients_that_accept_it_and_revalidated_by_etag() {
        let app = app();
        let script = &app.files["app.js"];
        assert!(script.gzip.as_ref().is_some_and(|g| g.len() < script.body.len()));
        let mut accepts = HeaderMap::new();
        accepts.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br;q=1.0, gzip;q=0.8"));
        let response = serve(script, &accepts, "no-cache");
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        let plain = serve(script, &HeaderMap::new(), "no-cache");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_ne!(response.headers()[header::ETAG], plain.headers()[header::ETAG], "two representations");
        let mut revalidate = HeaderMap::new();
        revalidate.insert(header::IF_NONE_MATCH, script.etag.clone());
        assert_eq!(serve(script, &revalidate, "no-cache").status(), StatusCode::NOT_MODIFIED);
        revalidate.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            serve(script, &revalidate, "no-cache").status(),
            StatusCode::OK,
            "the plain tag is not the gzip one"
        );
        let mut refuses = HeaderMap::new();
        refuses.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, identity"));
        assert!(serve(script, &refuses, "no-cache").headers().get(header::CONTENT_ENCODING).is_none(), "q=0 is a no");
    }
}
