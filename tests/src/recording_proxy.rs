//! A transparent recording proxy in front of a real LLM server.
//!
//! The simulator shows what the client sent because it is the server; a real server does not.
//! Tests against a real model put this proxy in between: every request is forwarded unchanged
//! (the response, streamed or not, is passed back chunk by chunk as it arrives), and the request
//! body and the response status are recorded, so a test can assert what FastNPC sent and what
//! the server answered — e.g. that the server refused `json_schema` and later calls went
//! straight to the working rung.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One request and the status it was answered with.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub path: String,
    pub body: Value,
    pub status: u16,
}

impl Exchange {
    /// The `response_format.type` the request asked for, if any.
    pub fn response_format(&self) -> Option<&str> {
        self.body.pointer("/response_format/type").and_then(Value::as_str)
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    exchanges: Mutex<Vec<Exchange>>,
}

/// A running proxy; dropping it stops it.
pub struct RecordingProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    stop: CancellationToken,
}

impl RecordingProxy {
    /// Proxies `http://127.0.0.1:<port>/v1/...` to `upstream` (a base URL ending in `/v1`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').trim_end_matches("/v1").to_owned(),
            http: reqwest::Client::new(),
            exchanges: Mutex::default(),
        });
        let router = Router::new().fallback(forward).with_state(Arc::clone(&state));
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
            }
        });
        Ok(Self { addr, state, stop })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.exchanges.lock().expect("the proxy's lock is never poisoned").clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let Ok(body) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body").into_response();
    };
    let mut upstream = state.http.request(parts.method, format!("{}{path}", state.upstream)).body(body.clone());
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let (status, response) = match upstream.send().await {
        Ok(response) => (response.status().as_u16(), Ok(response)),
        Err(error) => (502, Err(error)),
    };
    state.exchanges.lock().expect("the proxy's lock is never poisoned").push(Exchange {
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    });
    match response {
        Ok(response) => {
            let mut builder = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    builder = builder.header(name, value);
                }
            }
            let stream = response.bytes_stream().map_ok(Bytes::from).map_err(std::io::Error::other);
            builder.body(Body::from_stream(stream)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}
