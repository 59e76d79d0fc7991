//! Exponential backoff, the one used by every retry loop: claiming a job while the database is
//! away, reconnecting to RabbitMQ, to Redis's pub/sub (the event hub, the control channel),
//! retrying an event append, and retrying an LLM call.
//!
//! Each loop keeps its own [`Backoff`] (start, ceiling, jitter) because what it waits for
//! differs: an LLM provider under load wants jitter so a fleet does not retry in step; a
//! reconnect loop wants a short first wait and a ceiling that keeps recovery prompt.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    ceiling: Duration,
    equal_jitter: bool,
    failures: u32,
}

impl Backoff {
    /// Waits `first`, then twice as long each time, never more than `ceiling`.
    pub const fn new(first: Duration, ceiling: Duration) -> Self {
        Self { first, ceiling, equal_jitter: false, failures: 0 }
    }

    /// "Equal jitter": each wait is half its exponential step plus a random part of the other
    /// half, so clients that failed together do not retry together, yet none retries at once.
    pub const fn with_equal_jitter(mut self) -> Self {
        self.equal_jitter = true;
        self
    }

    /// The wait after failure number `failure` (0-based), without changing the state.
    pub fn delay(&self, failure: u32) -> Duration {
        let step = self.first.saturating_mul(2u32.saturating_pow(failure)).min(self.ceiling);
        if self.equal_jitter {
            let half = step / 2;
            half + rand::rng().random_range(Duration::ZERO..=half)
        } else {
            step
        }
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures since the start or the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records a failure and sleeps its delay; `false` (at once) when `stop` fires first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(backoff.failures(), 5);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn equal_jitter_stays_within_the_upper_half_of_each_step() {
        let backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10)).with_equal_jitter();
        for failure in 0..12 {
            let step =
                Duration::from_millis(250).saturating_mul(2u32.saturating_pow(failure)).min(Duration::from_secs(10));
            let delay = backoff.delay(failure);
            assert!(
                delay >= step / 2 && delay <= step,
                "failure {failure}: {delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let stop = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        stop.cancel();
        assert!(!backoff.wait(&stop).await);
        assert!(backoff.wait(&CancellationToken::new()).await, "an unstopped wait sleeps its delay");
    }
}
