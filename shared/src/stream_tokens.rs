//! Short-lived tokens that let a browser's `EventSource` (which cannot send headers) read one
//! job's event stream: `?stream_token=…` instead of a long-lived bearer token in a URL. Stored
//! (hashed) with a TTL, bound to one user and one job: in Redis ([`StreamTokens`]) so every API
//! replica accepts a token another one issued, or in memory for the embedded mode
//! (`embedded::stream_tokens::LocalStreamTokens`).

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager};

use crate::{
    ids::{JobId, UserId},
    rate_limit::LimiterError,
};

/// How long a stream token works (long enough for `EventSource` reconnects during one job).
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// Single-job stream tokens for `EventSource`: Redis ([`StreamTokens`]) or in memory.
#[async_trait::async_trait]
pub trait StreamTokenStore: Send + Sync + 'static {
    /// Stores a token (by its hash) for `user_id` reading `job_id`.
    async fn issue(&self, token_hash: &str, user_id: UserId, job_id: JobId) -> Result<(), LimiterError>;
    /// The user a live token was issued to, if it was issued for `job_id`.
    async fn user_for(&self, token_hash: &str, job_id: JobId) -> Result<Option<UserId>, LimiterError>;
}

/// Stream tokens in Redis, shared by every API replica.
#[derive(Clone)]
pub struct StreamTokens {
    connection: ConnectionManager,
    namespace: String,
}

impl StreamTokens {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn key(&self, token_hash: &str) -> String {
        format!("{}:stream-token:{token_hash}", self.namespace)
    }

    /// Stores a token (by its hash) for `user_id` reading `job_id`.
    pub async fn issue(&self, token_hash: &str, user_id: UserId, job_id: JobId) -> Result<(), redis::RedisError> {
        let mut connection = self.connection.clone();
        let _: () =
            connection.set_ex(self.key(token_hash), format!("{user_id}:{job_id}"), STREAM_TOKEN_TTL.as_secs()).await?;
        Ok(())
    }

    /// The user a live token was issued to, if it was issued for `job_id`.
    pub async fn user_for(&self, token_hash: &str, job_id: JobId) -> Result<Option<UserId>, redis::RedisError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = connection.get(self.key(token_hash)).await?;
        Ok(value.and_then(|v| {
            let (user, job) = v.split_once(':')?;
            (job.parse::<JobId>().ok()? == job_id).then(|| user.parse().ok()).flatten()
        }))
    }
}

#[async_trait::async_trait]
impl StreamTokenStore for StreamTokens {
    async fn issue(&self, token_hash: &str, user_id: UserId, job_id: JobId) -> Result<(), LimiterError> {
        Ok(StreamTokens::issue(self, token_hash, user_id, job_id).await?)
    }
    async fn user_for(&self, token_hash: &str, job_id: JobId) -> Result<Option<UserId>, LimiterError> {
        Ok(StreamTokens::user_for(self, token_hash, job_id).await?)
    }
}

#[async_trait::async_trait]
impl StreamTokenStore for crate::embedded::stream_tokens::LocalStreamTokens {
    async fn issue(&self, token_hash: &str, user_id: UserId, job_id: JobId) -> Result<(), LimiterError> {
        Ok(Self::issue(self, token_hash, user_id, job_id).await?)
    }
    async fn user_for(&self, token_hash: &str, job_id: JobId) -> Result<Option<UserId>, LimiterError> {
        Ok(Self::user_for(self, token_hash, job_id).await?)
    }
}
