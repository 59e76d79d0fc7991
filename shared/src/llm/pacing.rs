//! A process-wide cap on LLM requests per second (`FASTNPC_LLM_RATE_PER_SEC`), for providers
//! that bill or throttle by rate rather than by concurrency. Requests are paced, not refused:
//! each takes the next free slot, `1/rate` after the previous one.

use std::time::Duration;

use tokio::{sync::Mutex, time::Instant};

/// Spaces requests at least `interval` apart.
pub struct Pacer {
    interval: Duration,
    next_slot: Mutex<Instant>,
}

impl Pacer {
    /// `None` for no limit.
    pub fn per_second(rate: Option<f64>) -> Option<Self> {
        let rate = rate.filter(|r| r.is_finite() && *r > 0.0)?;
        Some(Self { interval: Duration::from_secs_f64(1.0 / rate), next_slot: Mutex::new(Instant::now()) })
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate() {
        let pacer = Pacer::per_second(Some(4.0)).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        // Virtual time: the fifth request waits for four intervals of 250 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        assert!(Pacer::per_second(None).is_none());
        assert!(Pacer::per_second(Some(0.0)).is_none());
    }
}
