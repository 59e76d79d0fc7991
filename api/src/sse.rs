//! The resumable event stream of one job.
//!
//! Protocol (ARCHITECTURE.md, "Events and streaming"): subscribe to live events first, then
//! backfill everything after the client's cursor from the job's Redis stream, then forward live
//! events, dropping any `seq` already sent. Whenever continuity is in doubt (a `seq` jumps, the
//! local channel lagged, the hub reconnected), backfill again from the cursor; the stream is
//! the record, pub/sub only makes it fast.
//!
//! The stream ends after the terminal event. If Redis lost the terminal event (it was down when
//! the worker finished, or the log expired), Postgres still knows how the job ended: the stream
//! checks the job row periodically and, once the row has been terminal for a grace period with no
//! terminal event in the log, sends the terminal event built from the row (without an `id`,
//! since it has no place in the log).

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    http::HeaderValue,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::Utc;
use fastnpc_shared::{
    event_bus::Subscription,
    events::{EventPayload, JobEvent},
    ids::{JobId, UserId},
    jobs::JobStatus,
    store::jobs::JobRecord,
};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::{SSE_KEEP_ALIVE, X_ACCEL_BUFFERING, state::AppState};

/// How often a quiet stream re-checks the job row (and the log) for a finish it missed.
const ROW_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a finished row may go without a terminal event in the log before the stream trusts
/// the row instead: the worker appends the event right after its commit.
const TERMINAL_GRACE: Duration = Duration::from_secs(5);

struct Cursor {
    state: AppState,
    job_id: JobId,
    user_id: UserId,
    subscription: Subscription,
    /// Highest `seq` sent.
    last_seq: u64,
    pending: VecDeque<JobEvent>,
    finished: bool,
    /// Counts the stream in `fastnpc_sse_streams` while it is open.
    _open: fastnpc_shared::metrics::GaugeGuard,
}

/// The SSE event stream for `job`, starting after `after`.
pub async fn job_events(state: AppState, job: JobRecord, after: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    let subscription = state.hub.subscribe(job.job_id);
    let mut cursor = Cursor::new(state, job.job_id, job.user_id, subscription, after);
    cursor.backfill().await;
    cursor.into_stream()
}

/// The SSE event stream of a job this request has just committed and not yet enqueued:
/// `subscription` was taken before the job's first event could be appended, so every event
/// reaches it live and there is no log to backfill yet (a hub reconnect still backfills, as on
/// any stream).
pub fn new_job_events(
    state: AppState,
    job_id: JobId,
    user_id: UserId,
    subscription: Subscription,
) -> impl Stream<Item = Result<Event, Infallible>> {
    Cursor::new(state, job_id, user_id, subscription, 0).into_stream()
}

/// The answer carrying a job's event stream: keep-alive comments while the job is quiet, and
/// no buffering by proxies.
pub fn response(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)).into_response();
    response.headers_mut().insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
    response
}

fn to_sse(seq: Option<u64>, payload: &EventPayload) -> Event {
    let event = Event::default().event(payload.event_type()).data(payload.data_json().to_string());
    match seq {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
}

impl Cursor {
    fn new(state: AppState, job_id: JobId, user_id: UserId, subscription: Subscription, after: u64) -> Self {
        Self {
            job_id,
            user_id,
            subscription,
            last_seq: after,
            pending: VecDeque::new(),
            finished: false,
            _open: fastnpc_shared::metrics::GaugeGuard::new(&state.metrics.sse_streams),
            state,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut cursor| async move {
            let (seq, payload) = cursor.next().await?;
            Some((Ok(to_sse(seq, &payload)), cursor))
        })
        .boxed()
    }

    /// The next event to send, or `None` when the stream should end.
    async fn next(&mut self) -> Option<(Option<u64>, EventPayload)> {
        let mut quiet_checks = 0u32;
        loop {
            if self.finished {
                return None;
            }
            while let Some(event) = self.pending.pop_front() {
                if event.seq <= self.last_seq {
                    continue;
                }
                self.last_seq = event.seq;
                self.finished = event.payload.is_terminal();
                return Some((Some(event.seq), event.payload));
            }
            tokio::select! {
                received = self.subscription.events.recv() => match received {
                    Ok(event) if event.seq == self.last_seq.saturating_add(1) => self.pending.push_back((*event).clone()),
                    Ok(event) if event.seq <= self.last_seq => {}
                    // A gap, or we lagged behind: the log has everything.
                    Ok(_) | Err(RecvError::Lagged(_)) => self.backfill().await,
                    Err(RecvError::Closed) => return None,
                },
                changed = self.subscription.generation.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    self.backfill().await;
                }
                () = tokio::time::sleep(ROW_CHECK_INTERVAL) => {
                    self.backfill().await;
                    if self.pending.is_empty() {
                        quiet_checks += 1;
                        match self.terminal_from_row(quiet_checks).await {
                            RowCheck::Running => {}
                            RowCheck::Gone => return None,
                            RowCheck::Ended(terminal) => {
                                self.finished = true;
                                return Some((None, terminal));
                            }
                        }
                    }
                }
                () = self.state.shutdown.cancelled() => return None,
            }
        }
    }

    async fn backfill(&mut self) {
        match self.state.events.read_after(self.job_id, self.last_seq).await {
            Ok(events) => self.pending.extend(events),
            // Live events still flow, and the next check retries.
            Err(error) => tracing::warn!(job.id = %self.job_id, %error, "cannot backfill job events"),
        }
    }

    /// The terminal event the row implies, once the row has been terminal long enough that the
    /// log's silence means the event is lost.
    async fn terminal_from_row(&self, quiet_checks: u32) -> RowCheck {
        let job = match self.state.store.job(self.user_id, self.job_id).await {
            Ok(Some(job)) => job,
            // Deleted with its subject: nothing more will happen.
            Ok(None) => return RowCheck::Gone,
            Err(_) => return RowCheck::Running,
        };
        if !job.status.is_terminal() {
            return RowCheck::Running;
        }
        let finished_for = job.finished_at.map(|at| Utc::now() - at).and_then(|d| d.to_std().ok()).unwrap_or_default();
        if finished_for < TERMINAL_GRACE && quiet_checks < 2 {
            return RowCheck::Running;
        }
        RowCheck::Ended(match job.status {
            JobStatus::Succeeded => EventPayload::Succeeded { result: job.result.unwrap_or_default() },
            JobStatus::Cancelled => EventPayload::Cancelled {},
            _ => {
                let error = job.error.unwrap_or_default();
                let text = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                EventPayload::Failed { code: text("code"), message: text("message") }
            }
        })
    }
}

/// What the job row says about a quiet stream.
enum RowCheck {
    /// Still going (or unreadable for now): keep waiting.
    Running,
    /// The job no longer exists.
    Gone,
    /// It ended, and this is how.
    Ended(EventPayload),
}
