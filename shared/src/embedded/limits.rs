//! Login back-off and submission limits in memory, for the embedded mode: with one process there
//! is no replica to share counts with, so Redis is not needed to agree on them.
//!
//! Each type behaves like its twin in `crate::rate_limit` (same constants, same policy
//! functions, same windows), with Redis's key expiry done lazily: an expired entry is dropped
//! when it is touched, and the whole map is swept of expired entries whenever it has doubled
//! since the last sweep, so memory follows the live entries without a background task.
//!
//! Time is `tokio::time::Instant`, which is the monotonic clock in production and the paused,
//! advanceable clock in tests. Locks are `std` mutexes held for a few map operations, never
//! across an `.await`. The `Infallible` errors keep the `Result` shape of the Redis versions.

use std::{
    borrow::Borrow,
    collections::HashMap,
    convert::Infallible,
    hash::Hash,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;

use crate::{
    ids::UserId,
    rate_limit::{FailureCounts, Locks, WINDOW, address_bucket, submission_window, wait},
};

/// Below this many entries a map is never swept.
const SWEEP_FLOOR: usize = 1024;

/// Entries that stop existing at a deadline, like Redis keys with a TTL.
#[derive(Debug)]
pub(crate) struct ExpiringMap<K, V> {
    entries: HashMap<K, (V, Instant)>,
    /// Sweeping when the map outgrows twice its live size keeps each insert O(1) amortised.
    sweep_above: usize,
}

impl<K: Eq + Hash, V> ExpiringMap<K, V> {
    pub(crate) fn new() -> Self {
        Self { entries: HashMap::new(), sweep_above: SWEEP_FLOOR }
    }

    /// The live entry for `key`; an expired one is dropped.
    pub(crate) fn get<Q: Eq + Hash + ?Sized>(&mut self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        if self.entries.get(key).is_some_and(|(_, expires_at)| *expires_at <= now) {
            self.entries.remove(key);
        }
        self.entries.get(key).map(|(value, _)| value)
    }

    pub(crate) fn insert(&mut self, key: K, value: V, expires_at: Instant, now: Instant) {
        self.entries.insert(key, (value, expires_at));
        if self.entries.len() > self.sweep_above {
            self.entries.retain(|_, (_, expires_at)| *expires_at > now);
            self.sweep_above = (self.entries.len() * 2).max(SWEEP_FLOOR);
        }
    }

    pub(crate) fn remove<Q: Eq + Hash + ?Sized>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.entries.remove(key);
    }

    /// Entries held, expired or not.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.entries.len()
    }
}

/// Locks an `ExpiringMap`; every critical section leaves it consistent, so a poisoned lock is
/// still usable and one panicking request does not take the limiter down.
pub(crate) fn guard<K, V>(map: &Mutex<ExpiringMap<K, V>>) -> MutexGuard<'_, ExpiringMap<K, V>> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What failures are counted against (see `rate_limit`'s module doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    /// A lower-cased username from an address bucket.
    Pair { address: String, username: String },
    /// An address bucket, any username.
    Address(String),
    /// A lower-cased username, any address.
    Username(String),
}

/// The three scopes of an attempt: its pair, its address, its username.
fn scopes(username: &str, address: IpAddr) -> [Scope; 3] {
    let (username, address) = (username.to_lowercase(), address_bucket(address));
    [
        Scope::Pair { address: address.clone(), username: username.clone() },
        Scope::Address(address),
        Scope::Username(username),
    ]
}

/// One scope's recent failures.
#[derive(Clone, Copy, Debug)]
struct LoginFailures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Login back-off per (username, address), per address and per username, in memory (see
/// `rate_limit::LoginLimiter`).
#[derive(Clone, Debug)]
pub struct LocalLoginLimiter {
    /// An entry lives [`WINDOW`] after its scope's last failure, which outlasts any lock it holds.
    failures: Arc<Mutex<ExpiringMap<Scope, LoginFailures>>>,
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

    /// `Some(wait)` while a lock applies to `username` from `address`.
    pub async fn locked_for(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, Infallible> {
        let now = Instant::now();
        let [pair, address, username] = scopes(username, address);
        let mut failures = guard(&self.failures);
        let pair_has_failed = failures.get(&pair, now).is_some();
        let mut remaining = |scope: &Scope| {
            let locked_until = failures.get(scope, now).and_then(|record| record.locked_until);
            locked_until.filter(|until| *until > now).map(|until| until - now)
        };
        let live = Locks { pair: remaining(&pair), address: remaining(&address), username: remaining(&username) };
        Ok(wait(live, pair_has_failed))
    }

    /// Records a failed attempt; returns the longest lock it caused, if any.
    pub async fn failed(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, Infallible> {
        let now = Instant::now();
        let mut failures = guard(&self.failures);
        let [pair, address, username] = scopes(username, address).map(|scope| {
            let previous = failures.get(&scope, now).copied();
            (scope, previous, previous.map_or(0, |record| record.count) + 1)
        });
        let locks = FailureCounts { pair: pair.2, address: address.2, username: username.2 }.locks();
        for ((scope, previous, count), lock) in
            [(pair, locks.pair), (address, locks.address), (username, locks.username)]
        {
            // A failure without a lock of its own leaves the scope's current lock alone, as in Redis.
            let locked_until = lock.map(|lock| now + lock).or(previous.and_then(|record| record.locked_until));
            failures.insert(scope, LoginFailures { count, locked_until }, now + WINDOW, now);
        }
        Ok(locks.longest())
    }

    /// A correct password forgets the pair's failures (not the address's nor the username's).
    pub async fn succeeded(&self, username: &str, address: IpAddr) -> Result<(), Infallible> {
        let [pair, ..] = scopes(username, address);
        guard(&self.failures).remove(&pair);
        Ok(())
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
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::rate_limit::{ADDRESS_FREE_FAILURES, FREE_FAILURES, USERNAME_CEILING};

    use super::*;

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// `10.0.0.n`.
    fn address(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_locks_after_the_free_failures_and_doubles() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..FREE_FAILURES {
            assert_eq!(limiter.failed("ada", address(1)).await.unwrap(), None);
            assert_eq!(limiter.locked_for("ada", address(1)).await.unwrap(), None);
        }

        for expected in [1, 2, 4, 8] {
            assert_eq!(limiter.failed("ada", address(1)).await.unwrap(), Some(secs(expected)));
            assert_eq!(limiter.locked_for("ada", address(1)).await.unwrap(), Some(secs(expected)));
            tokio::time::advance(secs(expected) - Duration::from_millis(1)).await;
            assert_eq!(limiter.locked_for("ada", address(1)).await.unwrap(), Some(Duration::from_millis(1)));
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(limiter.locked_for("ada", address(1)).await.unwrap(), None, "the lock ends on time");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_lock_is_capped_at_fifteen_minutes() {
        let limiter = LocalLoginLimiter::new();
        let mut last = None;
        for _ in 0..FREE_FAILURES + 30 {
            last = limiter.failed("ada", address(1)).await.unwrap();
        }
        assert_eq!(last, Some(secs(15 * 60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pair_lock_holds_neither_other_addresses_nor_other_names() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..=FREE_FAILURES {
            limiter.failed("Ada", address(1)).await.unwrap();
        }
        assert_eq!(limiter.locked_for("ADA", address(1)).await.unwrap(), Some(secs(1)), "names ignore case");
        assert_eq!(limiter.locked_for("ada", address(2)).await.unwrap(), None, "the owner's address is not locked");
        assert_eq!(limiter.locked_for("grace", address(1)).await.unwrap(), None);
        assert_eq!(limiter.failed("grace", address(1)).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn success_clears_the_pair_only() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..=FREE_FAILURES {
            limiter.failed("ada", address(1)).await.unwrap();
        }
        assert!(limiter.locked_for("ada", address(1)).await.unwrap().is_some());

        limiter.succeeded("ada", address(1)).await.unwrap();

        assert_eq!(limiter.locked_for("ada", address(1)).await.unwrap(), None);
        assert_eq!(2 * FREE_FAILURES, USERNAME_CEILING, "the arithmetic below");
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(limiter.failed("ada", address(1)).await.unwrap(), None, "the pair's free failures are back");
        }
        // The username kept counting: this is its eleventh failure, past its ceiling.
        assert_eq!(limiter.failed("ada", address(1)).await.unwrap(), Some(secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_failing_on_many_names_is_locked_for_every_name() {
        let limiter = LocalLoginLimiter::new();
        for n in 0..ADDRESS_FREE_FAILURES {
            assert_eq!(limiter.failed(&format!("user{n}"), address(1)).await.unwrap(), None);
        }
        assert_eq!(limiter.failed("one-more", address(1)).await.unwrap(), Some(secs(1)));
        assert_eq!(limiter.locked_for("never-tried", address(1)).await.unwrap(), Some(secs(1)));
        assert_eq!(limiter.locked_for("never-tried", address(2)).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_username_over_its_ceiling_slows_failing_addresses_and_never_clean_ones() {
        let limiter = LocalLoginLimiter::new();
        // Many addresses, two guesses each: no pair or address reaches its own limit.
        let mut last = None;
        for n in 0..USERNAME_CEILING / 2 + 5 {
            for _ in 0..2 {
                last = limiter.failed("ada", address(n)).await.unwrap();
            }
        }
        let lock = last.expect("the username is over its ceiling");
        assert!(lock >= secs(512), "{lock:?}: the lock doubles with every failure past the ceiling");
        assert_eq!(limiter.locked_for("ada", address(0)).await.unwrap(), Some(lock), "a guessing address waits");
        assert_eq!(limiter.locked_for("ada", address(100)).await.unwrap(), None, "an address that has not failed");
        assert_eq!(limiter.locked_for("grace", address(0)).await.unwrap(), None, "only that username");

        // A fresh address gets one guess, then waits like the others.
        assert!(limiter.failed("ada", address(101)).await.unwrap().is_some());
        assert!(limiter.locked_for("ada", address(101)).await.unwrap().is_some());
        // Its owner, from an address that has not been failing, still gets the password checked.
        limiter.succeeded("ada", address(100)).await.unwrap();
        assert_eq!(limiter.locked_for("ada", address(100)).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_addresses_count_by_their_64() {
        let limiter = LocalLoginLimiter::new();
        let host = |n: u128| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000 + n));
        for n in 0..=FREE_FAILURES as u128 {
            limiter.failed("ada", host(n)).await.unwrap();
        }
        assert_eq!(limiter.locked_for("ada", host(1000)).await.unwrap(), Some(secs(1)), "the same /64");
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        for _ in 0..=FREE_FAILURES {
            limiter.failed("grace", address(1)).await.unwrap();
        }
        assert_eq!(limiter.locked_for("grace", mapped).await.unwrap(), Some(secs(1)), "v4-mapped is v4");
    }

    #[tokio::test(start_paused = true)]
    async fn login_failures_are_forgotten_a_window_after_the_last_one() {
        let limiter = LocalLoginLimiter::new();
        for _ in 0..FREE_FAILURES {
            limiter.failed("ada", address(1)).await.unwrap();
        }
        tokio::time::advance(WINDOW - secs(1)).await;
        let still = limiter.failed("ada", address(1)).await.unwrap();
        assert_eq!(still, Some(secs(1)), "still counted just inside the window");

        tokio::time::advance(WINDOW).await;
        let forgotten = limiter.failed("ada", address(1)).await.unwrap();
        assert_eq!(forgotten, None, "the window restarts after the last failure");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_as_the_map_grows() {
        let limiter = LocalLoginLimiter::new();
        for n in 0..SWEEP_FLOOR as u32 {
            limiter.failed(&format!("old-{n}"), address(1)).await.unwrap();
        }
        tokio::time::advance(WINDOW).await;
        for n in 0..=SWEEP_FLOOR as u32 {
            limiter.failed("new", address(n)).await.unwrap();
        }

        let held = guard(&limiter.failures).held();
        // Live now: `new` from each address (pair and address scopes) and the one username.
        let live = 2 * (SWEEP_FLOOR + 1) + 1;
        assert!(held <= live, "{held} entries held; only the {live} live ones should be");
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
