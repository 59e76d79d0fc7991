//! The request timeout: an ordinary request that takes longer than
//! `FASTNPC_HTTP_REQUEST_TIMEOUT_SECS` is answered with a problem document and its handler is
//! dropped, so one hung handler (a stuck query, a lost lock) neither holds its client forever
//! nor stalls a graceful shutdown, which waits for every request in flight.
//!
//! Two kinds of request are long by design and excluded from the ordinary bound:
//! - the SSE job stream (`GET /v1/jobs/{id}/events`), which lives as long as its job and ends
//!   on shutdown by itself (the API's stop token): the bound covers producing the response (its
//!   head), not sending its body, so a stream's checks before it starts are bounded and the
//!   stream itself is not;
//! - a request with `Prefer: wait=N`, which waits up to N seconds (capped at
//!   [`MAX_WAIT_SECS`](crate::routes::messages::MAX_WAIT_SECS)) for its job: it gets N seconds
//!   on top of the ordinary bound, so the wait is never cut but a hang still is.
//!
//! Dropping a handler mid-way is what already happens when a client disconnects, so handlers
//! are written for it (writes are transactions; an accepted job's publish runs in the
//! background tracker, not in the request).

use std::time::Duration;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, routes::messages::prefer_wait};

/// Middleware (`axum::middleware::from_fn_with_state(timeout, limit)`): answers
/// [`ApiError::TimedOut`] when the handler has not produced its response within `timeout` (see
/// the module doc for what is excluded). The bound covers the response head; bodies here are
/// buffered JSON, except SSE streams, which are thus left alone.
pub async fn limit(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let bound = timeout + prefer_wait(request.headers()).unwrap_or_default();
    match tokio::time::timeout(bound, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = bound.as_secs(), "request timed out; its handler was dropped");
            ApiError::TimedOut(bound).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        Router,
        body::Body,
        http::{Request, StatusCode, header},
        routing::get,
    };
    use tower::ServiceExt as _;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A tiny app: `/hang` never answers, `/slow/{secs}` answers after that many seconds, and
    /// `/stream` starts its answer at once and sends its body over 2 × the timeout (an SSE stream).
    fn app() -> Router {
        async fn slow(axum::extract::Path(secs): axum::extract::Path<u64>) -> &'static str {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            "done"
        }
        Router::new()
            .route("/hang", get(std::future::pending::<()>))
            .route("/slow/{secs}", get(slow))
            .route(
                "/stream",
                get(|| async {
                    let chunks = futures::stream::unfold(0, |sent| async move {
                        (sent < 2).then_some(())?;
                        tokio::time::sleep(TIMEOUT).await;
                        Some((Ok::<_, std::convert::Infallible>(format!("event {sent}\n")), sent + 1))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .layer(axum::middleware::from_fn_with_state(TIMEOUT, limit))
    }

    async fn call(uri: &str, prefer: Option<&str>) -> (StatusCode, Option<String>, serde_json::Value, Duration) {
        let mut request = Request::get(uri);
        if let Some(prefer) = prefer {
            request = request.header("prefer", prefer);
        }
        let started = tokio::time::Instant::now();
        let response = app().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let elapsed = started.elapsed();
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, content_type, body, elapsed)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_request_is_answered_with_a_503_problem_at_the_timeout() {
        let (status, content_type, body, elapsed) = call("/hang", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        assert_eq!(body["type"], "/problems/request-timeout", "{body}");
        assert_eq!(body["status"], 503);
        // Paused time advances only to the next timer: exactly the timeout.
        assert_eq!(elapsed, TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_within_the_timeout_is_untouched() {
        let (status, _, _, elapsed) = call("/slow/29", None).await;
        assert_eq!((status, elapsed), (StatusCode::OK, Duration::from_secs(29)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_is_not_bounded() {
        let started = tokio::time::Instant::now();
        let response = app().oneshot(Request::get("/stream").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], b"event 0\nevent 1\n", "the whole stream");
        assert_eq!(started.elapsed(), 2 * TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn prefer_wait_extends_the_bound_by_the_wait_and_no_more() {
        // Waits 50 s: past the 30 s timeout, within 30 + 60.
        let (status, _, _, _) = call("/slow/50", Some("wait=60")).await;
        assert_eq!(status, StatusCode::OK);
        // A hang is still cut, at the timeout plus the wait.
        let (status, _, body, elapsed) = call("/hang", Some("wait=10")).await;
        assert_eq!((status, &body["type"]), (StatusCode::SERVICE_UNAVAILABLE, &"/problems/request-timeout".into()));
        assert_eq!(elapsed, TIMEOUT + Duration::from_secs(10));
        // The wait honoured is capped, and so is the extension.
        let (status, _, _, elapsed) = call("/hang", Some("wait=100000")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(elapsed, TIMEOUT + Duration::from_secs(crate::routes::messages::MAX_WAIT_SECS));
    }
}
