//! Stream tokens in memory, for the embedded mode (see `crate::stream_tokens::StreamTokens`):
//! stored by hash for [`STREAM_TOKEN_TTL`], bound to one user and one job, dropped lazily when
//! they expire (the map is the limiters' [`ExpiringMap`]).

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

use super::limits::{ExpiringMap, guard};
use crate::{
    ids::{JobId, UserId},
    stream_tokens::STREAM_TOKEN_TTL,
};

/// Stream tokens in memory, with the same TTL and binding as the Redis ones.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
