//! Login backoff, stream tokens and submission limits in memory, for the embedded mode: with one
//! process there is no replica to share counts with, so Redis is not needed to agree on them.
//!
//! Each type behaves like its twin in `crate::rate_limit` (same constants, same lock formula,
//! same windows), with Redis's key expiry done lazily: an expired entry is dropped when it is
//! touched, and the whole map is swept of expired entries whenever it has doubled since the last
//! sweep, so memory follows the live entries without a background task.
//!
//! Time is `tokio::time::Instant`, which is the monotonic clock in production and the paused,
//! advanceable clock in tests. Locks are `std` mutexes held for a few map operations, never
//! across an `.await`. The `Infallible` errors keep the `Result` shape of the Redis versions.

use std::{
    borrow::Borrow,
    collections::HashMap,
    convert::Infallible,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use crate::{
    ids::{JobId, UserId},
    rate_limit::{STREAM_TOKEN_TTL, WINDOW, lock_after, submission_window},
};

/// Below this many entries a map is never swept.
const SWEEP_FLOOR: usize = 1024;

/// Entries that stop existing at a deadline, like Redis keys with a TTL.
#[derive(Debug)]
struct ExpiringMap<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Sweeping when the map outgrows twice its live size keeps each insert O(1) amortised.
    sweep_above: usize,
}

impl<K: Eq + Hash, V> ExpiringMap<K, V> {
    fn new() -> Self {
        Self { entries: HashMap::new(), sweep_above: SWEEP_FLOOR }
    }

    /// The live entry for `key`; an expired one is dropped.
    fn get<Q: Eq + Hash + ?Sized>(&mut self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        if self.entries.get(key).is_some_and(|(_, expires_at)| *expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get(key).map(|(value, _)| value)
    }

    fn insert(&mut self, key: K, value: V, expires_at: Instant, now: Instant) {
        self.entries.insert(key, (value, expires_at));
        if self.entries.len() > self.sweep_above {
            self.entries.retain(|_, (_, expires_at)| *expires_at > now);
            self.sweep_above = (self.entries.len() * 2).max(SWEEP_FLOOR);
        }
    }

    fn remove<Q: Eq + Hash + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.entries.remove(key);
    }

    /// Entries held, expired or not.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.entries.len()
    }
}

/// Locks an `ExpiringMap`; every critical section leaves it consistent, so a poisoned lock is
/// still usable and one panicking request does not take the limiter down.
fn guard<K, V>(map: &Mutex<ExpiringMap<K, V>>) -> MutexGuard<'_, ExpiringMap<K, V>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One username's recent failures.
#[derive(Clone, Copy, Debug)]
struct LoginFailures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Login backoff per username, in memory (see `rate_limit::LoginLimiter`).
#[derive(Clone, Debug)]
pub struct LocalLoginLimiter {
    /// By lower-cased username; an entry lives [`WINDOW`] after its last failure, which outlasts
    /// any lock it holds.
    failures: Arc<Mutex<ExpiringMap<String, LoginFailures>>>,
}

impl Default for LocalLoginLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLoginLimiter {
    pub fn new() -> Self {
        Self { failures: Arc::new(Mutex::new(ExpiringMap::new())) }
    }

    /// `Some(wait)` while the name is locked.
    pub async fn locked_for(&self, username: &str) -> Result<Option<Duration>, Infallible> {
        let now = Instant::now();
        let mut failures = guard(&self.failures);
        let locked_until = failures.get(username.to_lowercase().as_str(), now).and_then(|record| record.locked_until);
        Ok(locked_until.filter(|until| *until > now).map(|until| until - now))
    }

    /// Records a failed attempt; returns the lock it caused, if any.
    pub async fn failed(&self, username: &str) -> Result<Option<Duration>, Infallible> {
        let now = Instant::now();
        let name = username.to_lowercase();
        let mut failures = guard(&self.failures);
        let previous = failures.get(name.as_str(), now).copied();
        let count = previous.map_or(0, |record| record.count) + 1;
        let new_lock = lock_after(count);
        // A failure without a lock of its own leaves the current lock alone, as in Redis.
        let locked_until = new_lock.map(|lock| now + lock).or(previous.and_then(|record| record.locked_until));
        failures.insert(name, LoginFailures { count, locked_until }, now + WINDOW, now);
        Ok(new_lock)
    }

    /// A successful login forgets the failures.
    pub async fn succeeded(&self, username: &str) -> Result<(), Infallible> {
        guard(&self.failures).remove(username.to_lowercase().as_str());
        Ok(())
    }
}

/// Stream tokens in memory (see `rate_limit::StreamTokens`): stored by hash for
/// [`STREAM_TOKEN_TTL`], bound to one user and one job.
#[derive(Clone, Debug)]
pub struct LocalStreamTokens {
    tokens: Arc<Mutex<ExpiringMap<String, (UserId, JobId)>>>,
}

impl Default for LocalStreamTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalStreamTokens {
    pub fn new() -> Self {
        Self { tokens: Arc::new(Mutex::new(ExpiringMap::new())) }
    }

    /// Stores a token (by its hash) for `user_id` reading `job_id`; reissuing a hash replaces it.
    pub async fn issue(&self, token_hash: &str, user_id: UserId, job_id: JobId) -> Result<(), Infallible> {
        let now = Instant::now();
        guard(&self.tokens).insert(token_hash.to_owned(), (user_id, job_id), now + STREAM_TOKEN_TTL, now);
        Ok(())
    }

    /// The user a live token was issued to, if it was issued for `job_id`.
    pub async fn user_for(&self, token_hash: &str, job_id: JobId) -> Result<Option<UserId>, Infallible> {
        let mut tokens = guard(&self.tokens);
        let binding = tokens.get(token_hash, Instant::now());
        Ok(binding.filter(|(_, bound_job)| *bound_job == job_id).map(|(user, _)| *user))
    }
}

/// Wall-clock time read through the monotonic clock from a starting point: windows line up with
/// wall-clock minutes as in Redis, a clock step cannot reopen a window early, and tests can move
/// time with tokio's paused clock.
#[derive(Clone, Copy, Debug)]
struct MonotonicWallClock {
    since_epoch_at_start: Duration,
    start: Instant,
}

impl MonotonicWallClock {
    fn new() -> Self {
        let since_epoch_at_start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { since_epoch_at_start, start: Instant::now() }
    }

    fn since_epoch(&self, now: Instant) -> Duration {
        self.since_epoch_at_start + now.duration_since(self.start)
    }
}

/// Submissions counted in the user's current window.
#[derive(Clone, Copy, Debug)]
struct WindowCount {
    minute: u64,
    count: u32,
}

/// Job submissions per user per minute, in memory (see `rate_limit::SubmissionLimiter`): the
/// same fixed one-minute windows.
#[derive(Clone, Debug)]
pub struct LocalSubmissionLimiter {
    per_minute: u32,
    clock: MonotonicWallClock,
    counts: Arc<Mutex<ExpiringMap<UserId, WindowCount>>>,
}

impl LocalSubmissionLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, clock: MonotonicWallClock::new(), counts: Arc::new(Mutex::new(ExpiringMap::new())) }
    }

    /// Counts one submission; `Some(wait)` when the user is over the limit this minute.
    pub async fn admit(&self, user_id: UserId) -> Result<Option<Duration>, Infallible> {
        let now = Instant::now();
        let (minute, wait) = submission_window(self.clock.since_epoch(now));
        let mut counts = guard(&self.counts);
        let earlier = counts.get(&user_id, now).filter(|window| window.minute == minute).map_or(0, |w| w.count);
        // Over-limit attempts count too, as Redis's INCR does.
        let count = earlier.saturating_add(1);
        counts.insert(user_id, WindowCount { minute, count }, now + wait, now);
        Ok((count > self.per_minute).then_some(wait))
    }
}

#[cfg(test)]
mod tests {
    use crate::rate_limit::FREE_FAILURES;

    use super::*;

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[tokio::test(start_paused = true)]
    async fn login_locks_after_the_free_failures_and_doubles() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..FREE_FAILURES {
            assert_eq!(limiter.failed("ada").await.unwrap(), None);
            assert_eq!(limiter.locked_for("ada").await.unwrap(), None);
        }

        for expected in [1, 2, 4, 8] {
            assert_eq!(limiter.failed("ada").await.unwrap(), Some(secs(expected)));
            assert_eq!(limiter.locked_for("ada").await.unwrap(), Some(secs(expected)));
            tokio::time::advance(secs(expected) - Duration::from_millis(1)).await;
            assert_eq!(limiter.locked_for("ada").await.unwrap(), Some(Duration::from_millis(1)));
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(limiter.locked_for("ada").await.unwrap(), None, "the lock ends on time");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn login_lock_is_capped_at_fifteen_minutes() {
        let limiter = LocalLoginLimiter::new();
        let mut last = None;
        for _ in 0..FREE_FAILURES + 30 {
            last = limiter.failed("ada").await.unwrap();
        }
        assert_eq!(last, Some(secs(15 * 60)));
    }

    #[tokio::test(start_paused = true)]
    async fn login_names_are_case_insensitive_and_independent() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..=FREE_FAILURES {
            limiter.failed("Ada").await.unwrap();
        }
        assert_eq!(limiter.locked_for("ADA").await.unwrap(), Some(secs(1)));
        assert_eq!(limiter.locked_for("grace").await.unwrap(), None);
        assert_eq!(limiter.failed("grace").await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn login_success_clears_failures_and_lock() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..FREE_FAILURES + 2 {
            limiter.failed("ada").await.unwrap();
        }
        assert!(limiter.locked_for("ada").await.unwrap().is_some());

        limiter.succeeded("ada").await.unwrap();

        assert_eq!(limiter.locked_for("ada").await.unwrap(), None);
        for _ in 0..FREE_FAILURES {
            assert_eq!(limiter.failed("ada").await.unwrap(), None, "the free failures are back");
        }
        assert_eq!(limiter.failed("ada").await.unwrap(), Some(secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn login_failures_are_forgotten_a_window_after_the_last_one() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..FREE_FAILURES {
            limiter.failed("ada").await.unwrap();
        }
        tokio::time::advance(WINDOW - secs(1)).await;
        assert_eq!(limiter.failed("ada").await.unwrap(), Some(secs(1)), "still counted just inside the window");

        tokio::time::advance(WINDOW).await;
        assert_eq!(limiter.failed("ada").await.unwrap(), None, "the window restarts after the last failure");
    }

    #[tokio::test(start_paused = true)]
    async fn stream_tokens_bind_to_one_job() {
        let tokens = LocalStreamTokens::new();
        let (user, job) = (UserId::new(), JobId::new());
        tokens.issue("hash", user, job).await.unwrap();

        assert_eq!(tokens.user_for("hash", job).await.unwrap(), Some(user));
        assert_eq!(tokens.user_for("hash", JobId::new()).await.unwrap(), None);
        assert_eq!(tokens.user_for("other-hash", job).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_tokens_expire_after_their_ttl() {
        let tokens = LocalStreamTokens::new();
        let (user, job) = (UserId::new(), JobId::new());
        tokens.issue("hash", user, job).await.unwrap();

        tokio::time::advance(STREAM_TOKEN_TTL - Duration::from_millis(1)).await;
        assert_eq!(tokens.user_for("hash", job).await.unwrap(), Some(user));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(tokens.user_for("hash", job).await.unwrap(), None);
        assert_eq!(guard(&tokens.tokens).held(), 0, "the expired token is dropped when read");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_as_the_map_grows() {
        let tokens = LocalStreamTokens::new();
        let job = JobId::new();
        for n in 0..SWEEP_FLOOR {
            tokens.issue(&format!("old-{n}"), UserId::new(), job).await.unwrap();
        }
        tokio::time::advance(STREAM_TOKEN_TTL).await;
        for n in 0..=SWEEP_FLOOR {
            tokens.issue(&format!("new-{n}"), UserId::new(), job).await.unwrap();
        }

        let held = guard(&tokens.tokens).held();
        assert!(held <= SWEEP_FLOOR + 1, "{held} entries held; only the {} live ones should be", SWEEP_FLOOR + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn submissions_are_admitted_per_minute_then_told_to_wait() {
        let limiter = LocalSubmissionLimiter::new(3);
        let (user, other_user) = (UserId::new(), UserId::new());
        for _ in 0..3 {
            assert_eq!(limiter.admit(user).await.unwrap(), None);
        }

        let wait = limiter.admit(user).await.unwrap().expect("the fourth submission waits");
        assert!(wait > Duration::ZERO && wait <= secs(60), "{wait:?}");
        assert_eq!(limiter.admit(user).await.unwrap(), Some(wait), "still over the limit");
        assert_eq!(limiter.admit(other_user).await.unwrap(), None, "each user has their own count");

        tokio::time::advance(wait).await;
        for _ in 0..3 {
            assert_eq!(limiter.admit(user).await.unwrap(), None, "a new minute, a new count");
        }
        assert!(limiter.admit(user).await.unwrap().is_some());
    }
}
