//! When and how long to wait before trying an LLM call again.

use std::time::Duration;

use crate::backoff::Backoff;

/// Exponential backoff with jitter, honouring the provider's `Retry-After`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self { max_retries, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(10) }
    }

    /// The wait before retry number `retry` (0-based). "Equal jitter": half the exponential
    /// step plus a random half, so a fleet that failed together does not retry together, yet
    /// nobody retries immediately. A server-given `Retry-After` is a floor.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let delay = Backoff::new(self.base_delay, self.max_delay).with_equal_jitter().delay(retry);
        match retry_after {
            // Cap what a provider may ask for, so one header cannot park a job for an hour.
            Some(after) => delay.max(after.min(Duration::from_secs(60))),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_a_floor_with_a_ceiling() {
        let policy = RetryPolicy::new(5);
        assert!(policy.delay(0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert!(policy.delay(0, Some(Duration::from_secs(3600))) <= Duration::from_secs(60));
    }
}
