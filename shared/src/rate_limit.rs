//! Login attempt limiting with lock-out back-off, kept in Redis so every API replica sees the
//! same counts; `embedded::limits::LocalLoginLimiter` is its in-memory twin, built on the same
//! policy functions here so the two cannot drift.
//!
//! A failed password check (login, `POST /v1/auth/password`, `DELETE /v1/me`) counts three
//! times, each within a [`WINDOW`] after the latest failure:
//!
//! - per **username and client address** (the pair): the first [`FREE_FAILURES`] cost nothing;
//!   each further one locks the pair for twice as long as the last (1 s, 2 s, 4 s, … up to
//!   15 min). A correct password from the same address clears the pair;
//! - per **address**, whatever the username: past [`ADDRESS_FREE_FAILURES`] the address backs
//!   off the same way for every username (one address spraying many accounts);
//! - per **username**, whatever the address: past [`USERNAME_CEILING`] the username backs off
//!   the same way, but that lock applies only to addresses that have failed on the username
//!   themselves (within the window). Guessing through many addresses is thus slowed to about
//!   one guess per address, while an address that has not been failing is never refused: the
//!   owner, from their own address, can always log in with the right password.
//!
//! Attempts during a lock that applies are refused with `Retry-After` without checking the
//! password. A success clears only its pair: the address and username counts run out with the
//! window (a success must not launder an attacker's address count through an account of their
//! own, nor reopen a username that is being guessed).
//!
//! Addresses are bucketed: an IPv4 address (or an IPv4-mapped IPv6 one) is itself, an IPv6
//! address is its /64, the block one subscriber usually holds (see [`address_bucket`]).

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use redis::{AsyncCommands, aio::ConnectionManager};

/// Failures per (username, address) before that pair backs off.
pub const FREE_FAILURES: u32 = 5;
/// Failures per address, all usernames together, before the address backs off.
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// Failures per username, all addresses together, past which the addresses that have failed on
/// it back off (never the others).
pub const USERNAME_CEILING: u32 = 10;
/// The longest lock.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after the last one.
pub(crate) const WINDOW: Duration = Duration::from_secs(60 * 60);

/// The lock that the `failures`-th failure in a window causes when `free` are allowed: 1 s for
/// the first one past them, doubling up to [`MAX_LOCK`].
pub(crate) fn lock_after(failures: u32, free: u32) -> Option<Duration> {
    (failures > free).then(|| Duration::from_secs(1u64 << (failures - free - 1).min(20)).min(MAX_LOCK))
}

/// The bucket an address is counted in: IPv4 addresses (also IPv4-mapped IPv6 ones) alone, IPv6
/// addresses by their /64 prefix, since one subscriber commonly holds a whole /64 and could
/// otherwise step to a fresh address for every guess.
pub fn address_bucket(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{}/64", Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
    }
}

/// Failures in the window, after the latest one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FailureCounts {
    /// Of this username from this address.
    pub pair: u32,
    /// From this address, any username.
    pub address: u32,
    /// Of this username, any address.
    pub username: u32,
}

/// The locks one failure sets (each replaces the live lock of its kind; `None` leaves it alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Locks {
    pub pair: Option<Duration>,
    pub address: Option<Duration>,
    pub username: Option<Duration>,
}

impl FailureCounts {
    /// The locks these counts call for.
    pub(crate) fn locks(self) -> Locks {
        Locks {
            pair: lock_after(self.pair, FREE_FAILURES),
            address: lock_after(self.address, ADDRESS_FREE_FAILURES),
            username: lock_after(self.username, USERNAME_CEILING),
        }
    }
}

impl Locks {
    /// The longest of them: what the failing pair (which the username lock applies to) waits.
    pub(crate) fn longest(self) -> Option<Duration> {
        [self.pair, self.address, self.username].into_iter().flatten().max()
    }
}

/// What an attempt waits, given the live locks (their remaining time) of its pair, its address
/// and its username, and whether its pair has failed within the window: the username's lock
/// applies only to a pair that has.
pub(crate) fn wait(live: Locks, pair_has_failed: bool) -> Option<Duration> {
    Locks { username: live.username.filter(|_| pair_has_failed), ..live }.longest()
}

/// Login back-off per (username, address), per address and per username (see the module doc).
#[derive(Clone)]
pub struct LoginLimiter {
    connection: ConnectionManager,
    namespace: String,
}

/// The Redis keys of one attempt: a failure count and a lock for each of its three scopes.
struct LoginKeys {
    pair_failures: String,
    pair_lock: String,
    address_failures: String,
    address_lock: String,
    username_failures: String,
    username_lock: String,
}

impl LoginLimiter {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn keys(&self, username: &str, address: IpAddr) -> LoginKeys {
        let (namespace, name, address) = (&self.namespace, username.to_lowercase(), address_bucket(address));
        // An address bucket never holds `|`, so the first one ends it, whatever the name holds.
        LoginKeys {
            pair_failures: format!("{namespace}:login:failures:pair:{address}|{name}"),
            pair_lock: format!("{namespace}:login:lock:pair:{address}|{name}"),
            address_failures: format!("{namespace}:login:failures:address:{address}"),
            address_lock: format!("{namespace}:login:lock:address:{address}"),
            username_failures: format!("{namespace}:login:failures:username:{name}"),
            username_lock: format!("{namespace}:login:lock:username:{name}"),
        }
    }

    /// `Some(wait)` while a lock applies to `username` from `address`.
    pub async fn locked_for(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, redis::RedisError> {
        let keys = self.keys(username, address);
        let mut connection = self.connection.clone();
        let (pair, address, username, pair_has_failed): (i64, i64, i64, bool) = redis::pipe()
            .pttl(&keys.pair_lock)
            .pttl(&keys.address_lock)
            .pttl(&keys.username_lock)
            .exists(&keys.pair_failures)
            .query_async(&mut connection)
            .await?;
        let remaining = |ttl_ms: i64| (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms as u64));
        let live = Locks { pair: remaining(pair), address: remaining(address), username: remaining(username) };
        Ok(wait(live, pair_has_failed))
    }

    /// Records a failed attempt; returns the longest lock it caused, if any.
    pub async fn failed(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, redis::RedisError> {
        let keys = self.keys(username, address);
        let mut connection = self.connection.clone();
        let window = WINDOW.as_secs() as i64;
        let (pair, address, username): (u32, u32, u32) = redis::pipe()
            .atomic()
            .incr(&keys.pair_failures, 1)
            .expire(&keys.pair_failures, window)
            .ignore()
            .incr(&keys.address_failures, 1)
            .expire(&keys.address_failures, window)
            .ignore()
            .incr(&keys.username_failures, 1)
            .expire(&keys.username_failures, window)
            .ignore()
            .query_async(&mut connection)
            .await?;
        let locks = FailureCounts { pair, address, username }.locks();
        let mut set = redis::pipe();
        for (key, lock) in
            [(&keys.pair_lock, locks.pair), (&keys.address_lock, locks.address), (&keys.username_lock, locks.username)]
        {
            if let Some(lock) = lock {
                set.pset_ex(key, 1, lock.as_millis() as u64).ignore();
            }
        }
        if locks.longest().is_some() {
            let _: () = set.query_async(&mut connection).await?;
        }
        Ok(locks.longest())
    }

    /// A correct password forgets the pair's failures (not the address's nor the username's).
    pub async fn succeeded(&self, username: &str, address: IpAddr) -> Result<(), redis::RedisError> {
        let keys = self.keys(username, address);
        let mut connection = self.connection.clone();
        let _: i64 = connection.del(&[keys.pair_failures, keys.pair_lock]).await?;
        Ok(())
    }
}

/// Job submissions per user per minute, counted in Redis so every replica shares the count
/// (a fixed one-minute window: simple, and at most twice the rate across a window boundary).
#[derive(Clone)]
pub struct SubmissionLimiter {
    connection: ConnectionManager,
    namespace: String,
    per_minute: u32,
}

impl SubmissionLimiter {
    pub fn new(connection: ConnectionManager, namespace: &str, per_minute: u32) -> Self {
        Self { connection, namespace: namespace.to_owned(), per_minute }
    }

    /// Counts one submission; `Some(wait)` when the user is over the limit this minute.
    pub async fn admit(&self, user_id: crate::ids::UserId) -> Result<Option<Duration>, redis::RedisError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let (minute, wait) = submission_window(now);
        let key = format!("{}:submissions:{user_id}:{minute}", self.namespace);
        let mut connection = self.connection.clone();
        let count: u32 = connection.incr(&key, 1).await?;
        let _: bool = connection.expire(&key, 120).await?;
        if count <= self.per_minute {
            return Ok(None);
        }
        Ok(Some(wait))
    }
}

/// The fixed one-minute window `since_epoch` falls in, and the wait until the next one in whole
/// seconds (what `Retry-After` carries). Shared with the in-process limiter.
pub(crate) fn submission_window(since_epoch: Duration) -> (u64, Duration) {
    (since_epoch.as_secs() / 60, Duration::from_secs(60 - since_epoch.as_secs() % 60))
}

/// Why a limiter could not answer (its store is unreachable); callers fail open or 503.
pub type LimiterError = Box<dyn std::error::Error + Send + Sync>;

/// Failed-password back-off (see the module doc): Redis ([`LoginLimiter`]) or in memory
/// (`embedded::limits::LocalLoginLimiter`).
#[async_trait::async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// `Some(wait)` while a lock applies to `username` from `address`.
    async fn locked_for(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, LimiterError>;
    /// Records a failed attempt; returns the longest lock it caused, if any.
    async fn failed(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, LimiterError>;
    /// A correct password forgets the pair's failures.
    async fn succeeded(&self, username: &str, address: IpAddr) -> Result<(), LimiterError>;
}

/// Job submissions per user per minute: Redis ([`SubmissionLimiter`]) or in memory.
#[async_trait::async_trait]
pub trait SubmissionRate: Send + Sync + 'static {
    /// Counts one submission; `Some(wait)` when the user is over the limit this minute.
    async fn admit(&self, user_id: crate::ids::UserId) -> Result<Option<Duration>, LimiterError>;
}

/// Implements a limiter port for a type whose inherent methods have the port's signatures.
macro_rules! limiter_port {
    ($ty:ty: LoginAttempts) => {
        #[async_trait::async_trait]
        impl LoginAttempts for $ty {
            async fn locked_for(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, LimiterError> {
                Ok(<$ty>::locked_for(self, username, address).await?)
            }
            async fn failed(&self, username: &str, address: IpAddr) -> Result<Option<Duration>, LimiterError> {
                Ok(<$ty>::failed(self, username, address).await?)
            }
            async fn succeeded(&self, username: &str, address: IpAddr) -> Result<(), LimiterError> {
                Ok(<$ty>::succeeded(self, username, address).await?)
            }
        }
    };
    ($ty:ty: SubmissionRate) => {
        #[async_trait::async_trait]
        impl SubmissionRate for $ty {
            async fn admit(&self, user_id: crate::ids::UserId) -> Result<Option<Duration>, LimiterError> {
                Ok(<$ty>::admit(self, user_id).await?)
            }
        }
    };
}

limiter_port!(LoginLimiter: LoginAttempts);
limiter_port!(crate::embedded::limits::LocalLoginLimiter: LoginAttempts);
limiter_port!(SubmissionLimiter: SubmissionRate);
limiter_port!(crate::embedded::limits::LocalSubmissionLimiter: SubmissionRate);

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(secs: u64) -> Option<Duration> {
        Some(Duration::from_secs(secs))
    }

    #[test]
    fn each_scope_backs_off_past_its_own_allowance() {
        let counts = |pair, address, username| FailureCounts { pair, address, username }.locks();
        assert_eq!(counts(FREE_FAILURES, ADDRESS_FREE_FAILURES, USERNAME_CEILING), Locks::default());
        assert_eq!(counts(FREE_FAILURES + 1, 1, 1), Locks { pair: secs(1), ..Locks::default() });
        assert_eq!(counts(1, ADDRESS_FREE_FAILURES + 2, 1), Locks { address: secs(2), ..Locks::default() });
        assert_eq!(counts(1, 1, USERNAME_CEILING + 3), Locks { username: secs(4), ..Locks::default() });
        assert_eq!(counts(FREE_FAILURES + 40, 1, 1).pair, secs(15 * 60), "capped");
        assert_eq!(counts(FREE_FAILURES + 2, 1, USERNAME_CEILING + 4).longest(), secs(8));
    }

    #[test]
    fn the_username_lock_holds_only_pairs_that_have_failed() {
        let live = Locks { pair: None, address: None, username: secs(60) };
        assert_eq!(wait(live, true), secs(60));
        assert_eq!(wait(live, false), None, "an address that has not been failing is never held");
        let address_locked = Locks { address: secs(5), ..live };
        assert_eq!(wait(address_locked, false), secs(5), "its own address's lock still holds");
    }

    #[test]
    fn addresses_are_bucketed_ipv4_alone_and_ipv6_by_64() {
        let bucket = |text: &str| address_bucket(text.parse().unwrap());
        assert_eq!(bucket("203.0.113.9"), "203.0.113.9");
        assert_eq!(bucket("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:bbbb::7"), bucket("2001:db8:1:2::1"));
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
    }
}
