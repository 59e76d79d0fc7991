//! State shared between the [`LlmSimulator`](super::LlmSimulator) handle and the server:
//! configuration, the fault queue and rules, recorded requests and counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Fault, RecordedRequest, Rule, SimConfig, SimStats};

/// Recorded requests kept; the oldest are dropped beyond this so a long benchmark run cannot
/// grow memory without bound.
const RECORD_CAP: usize = 10_000;

pub(crate) struct SimState {
    config: Mutex<SimConfig>,
    faults: Mutex<VecDeque<Fault>>,
    rules: Mutex<Vec<Rule>>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    received: AtomicU64,
    served: AtomicU64,
    faulted: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    streamed: AtomicU64,
    json_mode: AtomicU64,
    prompt_tokens_reported: AtomicU64,
    completion_tokens_reported: AtomicU64,
    /// Cancelled when the simulator is dropped; ends the server and cuts pending sleeps short.
    pub(crate) shutdown: CancellationToken,
}

/// A poisoned lock only means a test panicked while holding it; the data is still usable and
/// other tests sharing the simulator should not cascade-fail.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    pub(crate) fn new(config: SimConfig) -> Self {
        Self {
            config: Mutex::new(config),
            faults: Mutex::default(),
            rules: Mutex::default(),
            recorded: Mutex::default(),
            received: AtomicU64::new(0),
            served: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
            json_mode: AtomicU64::new(0),
            prompt_tokens_reported: AtomicU64::new(0),
            completion_tokens_reported: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        }
    }

    pub(crate) fn config(&self) -> SimConfig {
        lock(&self.config).clone()
    }

    pub(crate) fn set_config(&self, config: SimConfig) {
        *lock(&self.config) = config;
    }

    pub(crate) fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.faults).extend(faults);
    }

    pub(crate) fn add_rule(&self, rule: Rule) {
        if rule.times != Some(0) {
            lock(&self.rules).push(rule);
        }
    }

    /// The fault for a request with this prompt: the first matching rule wins, otherwise the
    /// head of the FIFO queue.
    pub(crate) fn next_fault(&self, prompt_text: &str) -> Option<Fault> {
        {
            let mut rules = lock(&self.rules);
            if let Some(position) = rules.iter().position(|rule| prompt_text.contains(&rule.when_contains)) {
                let rule = &mut rules[position];
                let fault = rule.fault.clone();
                if let Some(times) = &mut rule.times {
                    *times -= 1;
                    if *times == 0 {
                        rules.remove(position);
                    }
                }
                return Some(fault);
            }
        }
        lock(&self.faults).pop_front()
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut recorded = lock(&self.recorded);
        if recorded.len() == RECORD_CAP {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recorded).iter().cloned().collect()
    }

    /// Counts a new chat request and returns its 0-based index since the last reset, which
    /// seeds its content.
    pub(crate) fn count_received(&self, stream: bool, json_mode: bool) -> u64 {
        if stream {
            self.streamed.fetch_add(1, Ordering::Relaxed);
        }
        if json_mode {
            self.json_mode.fetch_add(1, Ordering::Relaxed);
        }
        self.received.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn count_served(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the `usage` a served answer carried.
    pub(crate) fn count_reported_usage(&self, prompt_tokens: u64, completion_tokens: u64) {
        self.prompt_tokens_reported.fetch_add(prompt_tokens, Ordering::Relaxed);
        self.completion_tokens_reported.fetch_add(completion_tokens, Ordering::Relaxed);
    }

    pub(crate) fn count_faulted(&self) {
        self.faulted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> SimStats {
        SimStats {
            requests_received: self.received.load(Ordering::Relaxed),
            requests_served: self.served.load(Ordering::Relaxed),
            requests_faulted: self.faulted.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            streamed: self.streamed.load(Ordering::Relaxed),
            json_mode: self.json_mode.load(Ordering::Relaxed),
            prompt_tokens_reported: self.prompt_tokens_reported.load(Ordering::Relaxed),
            completion_tokens_reported: self.completion_tokens_reported.load(Ordering::Relaxed),
        }
    }

    /// Clears counters, recordings, faults and rules. `in_flight` is left alone because the
    /// requests still running will decrement it; the peak restarts from it.
    pub(crate) fn reset(&self) {
        lock(&self.faults).clear();
        lock(&self.rules).clear();
        lock(&self.recorded).clear();
        for counter in [
            &self.received,
            &self.served,
            &self.faulted,
            &self.streamed,
            &self.json_mode,
            &self.prompt_tokens_reported,
            &self.completion_tokens_reported,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        self.peak_in_flight.store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Sleeps unless the simulator shuts down first; returns whether the full time elapsed.
    pub(crate) async fn sleep(&self, duration: Duration) -> bool {
        self.sleep_until(Instant::now() + duration).await
    }

    /// Like [`sleep`](Self::sleep), to a deadline.
    pub(crate) async fn sleep_until(&self, deadline: Instant) -> bool {
        if deadline <= Instant::now() {
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// Marks a chat request as in flight for as long as it lives. Streaming responses move it
/// into the body stream, so it is released when the body finishes or the client goes away.
pub(crate) struct InFlight(Arc<SimState>);

impl InFlight {
    pub(crate) fn enter(state: &Arc<SimState>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
