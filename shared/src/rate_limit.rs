//! Login attempt limiting with lockout backoff, kept in Redis so every API replica sees the
//! same counts.
//!
//! Per username (case-insensitive): the first [`FREE_FAILURES`] failures in a window cost
//! nothing; each further failure locks the name for twice as long as the last (1 s, 2 s, 4 s,
//! … up to 15 min), and attempts during a lock are refused with `Retry-After` without checking
//! the password. A successful login clears the count. Counting by name, not by address, protects
//! an account from password guessing through many addresses; the lock is short at first so an
//! attacker cannot lock a user out for long.

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};

/// Failures allowed before the backoff starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest lock.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten this long after the last one.
pub(crate) const WINDOW: Duration = Duration::from_secs(60 * 60);

/// The lock that the `failures`-th failure in a window causes. Shared with the in-process
/// limiter so both backoffs are the same by construction.
pub(crate) fn lock_after(failures: u32) -> Option<Duration> {
    (failures > FREE_FAILURES)
        .then(|| Duration::from_secs(1u64 << (failures - FREE_FAILURES - 1).min(20)).min(MAX_LOCK))
}

/// Login backoff per username.
#[derive(Clone)]
pub struct LoginLimiter {
    connection: ConnectionManager,
    namespace: String,
}

impl LoginLimiter {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn keys(&self, username: &str) -> (String, String) {
        let name = username.to_lowercase();
        (format!("{}:login:failures:{name}", self.namespace), format!("{}:login:lock:{name}", self.namespace))
    }

    /// `Some(wait)` while the name is locked.
    pub async fn locked_for(&self, username: &str) -> Result<Option<Duration>, redis::RedisError> {
        let (_, lock) = self.keys(username);
        let mut connection = self.connection.clone();
        let ttl_ms: i64 = connection.pttl(&lock).await?;
        Ok((ttl_ms > 0).then(|| Duration::from_millis(ttl_ms as u64)))
    }

    /// Records a failed attempt; returns the lock it caused, if any.
    pub async fn failed(&self, username: &str) -> Result<Option<Duration>, redis::RedisError> {
        let (failures_key, lock_key) = self.keys(username);
        let mut connection = self.connection.clone();
        let failures: u32 = connection.incr(&failures_key, 1).await?;
        let _: bool = connection.expire(&failures_key, WINDOW.as_secs() as i64).await?;
        let Some(lock) = lock_after(failures) else {
            return Ok(None);
        };
        let _: () = connection.pset_ex(&lock_key, 1, lock.as_millis() as u64).await?;
        Ok(Some(lock))
    }

    /// A successful login forgets the failures.
    pub async fn succeeded(&self, username: &str) -> Result<(), redis::RedisError> {
        let (failures_key, lock_key) = self.keys(username);
        let mut connection = self.connection.clone();
        let _: i64 = connection.del(&[failures_key, lock_key]).await?;
        Ok(())
    }
}

/// Short-lived tokens that let a browser's `EventSource` (which cannot send headers) read one
/// job's event stream: `?stream_token=…` instead of a long-lived bearer token in a URL. Stored in
/// Redis (hashed) with a TTL, bound to one user and one job.
#[derive(Clone)]
pub struct StreamTokens {
    connection: ConnectionManager,
    namespace: String,
}

/// How long a stream token works (long enough for `EventSource` reconnects during one job).
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

impl StreamTokens {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn key(&self, token_hash: &str) -> String {
        format!("{}:stream-token:{token_hash}", self.namespace)
    }

    /// Stores a token (by its hash) for `user_id` reading `job_id`.
    pub async fn issue(
        &self,
        token_hash: &str,
        user_id: crate::ids::UserId,
        job_id: crate::ids::JobId,
    ) -> Result<(), redis::RedisError> {
        let mut connection = self.connection.clone();
        let _: () =
            connection.set_ex(self.key(token_hash), format!("{user_id}:{job_id}"), STREAM_TOKEN_TTL.as_secs()).await?;
        Ok(())
    }

    /// The user a live token was issued to, if it was issued for `job_id`.
    pub async fn user_for(
        &self,
        token_hash: &str,
        job_id: crate::ids::JobId,
    ) -> Result<Option<crate::ids::UserId>, redis::RedisError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = connection.get(self.key(token_hash)).await?;
        Ok(value.and_then(|v| {
            let (user, job) = v.split_once(':')?;
            (job.parse::<crate::ids::JobId>().ok()? == job_id).then(|| user.parse().ok()).flatten()
        }))
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

/// Failed-login backoff per username: Redis ([`LoginLimiter`]) or in memory
/// (`embedded::limits::LocalLoginLimiter`).
#[async_trait::async_trait]
pub trait LoginAttempts: Send + Sync + 'static {
    /// `Some(wait)` while the name is locked.
    async fn locked_for(&self, username: &str) -> Result<Option<Duration>, LimiterError>;
    /// Records a failed attempt; returns the lock it caused, if any.
    async fn failed(&self, username: &str) -> Result<Option<Duration>, LimiterError>;
    /// A successful login forgets the failures.
    async fn succeeded(&self, username: &str) -> Result<(), LimiterError>;
}

/// Single-job stream tokens for `EventSource`: Redis ([`StreamTokens`]) or in memory.
#[async_trait::async_trait]
pub trait StreamTokenStore: Send + Sync + 'static {
    async fn issue(
        &self,
        token_hash: &str,
        user_id: crate::ids::UserId,
        job_id: crate::ids::JobId,
    ) -> Result<(), LimiterError>;
    async fn user_for(
        &self,
        token_hash: &str,
        job_id: crate::ids::JobId,
    ) -> Result<Option<crate::ids::UserId>, LimiterError>;
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
            async fn locked_for(&self, username: &str) -> Result<Option<Duration>, LimiterError> {
                Ok(<$ty>::locked_for(self, username).await?)
            }
            async fn failed(&self, username: &str) -> Result<Option<Duration>, LimiterError> {
                Ok(<$ty>::failed(self, username).await?)
            }
            async fn succeeded(&self, username: &str) -> Result<(), LimiterError> {
                Ok(<$ty>::succeeded(self, username).await?)
            }
        }
    };
    ($ty:ty: StreamTokenStore) => {
        #[async_trait::async_trait]
        impl StreamTokenStore for $ty {
            async fn issue(
                &self,
                token_hash: &str,
                user_id: crate::ids::UserId,
                job_id: crate::ids::JobId,
            ) -> Result<(), LimiterError> {
                Ok(<$ty>::issue(self, token_hash, user_id, job_id).await?)
            }
            async fn user_for(
                &self,
                token_hash: &str,
                job_id: crate::ids::JobId,
            ) -> Result<Option<crate::ids::UserId>, LimiterError> {
                Ok(<$ty>::user_for(self, token_hash, job_id).await?)
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
limiter_port!(StreamTokens: StreamTokenStore);
limiter_port!(crate::embedded::limits::LocalStreamTokens: StreamTokenStore);
limiter_port!(SubmissionLimiter: SubmissionRate);
limiter_port!(crate::embedded::limits::LocalSubmissionLimiter: SubmissionRate);
