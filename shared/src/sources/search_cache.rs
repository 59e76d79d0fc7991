//! Candidates found for a name, kept briefly: a user typing, searching again and then creating
//! the character asks the encyclopedia once. In Redis ([`RedisSearchCache`]) so every API replica
//! shares it, or in memory for the embedded mode ([`LocalSearchCache`]).
//!
//! It is a cache: when Redis is away a lookup is a miss (logged), and the answer comes from the
//! encyclopedia itself, unchanged.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{AsyncCommands, aio::ConnectionManager};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::embedded::limits::{ExpiringMap, guard};

/// Text values by key, each for a time.
#[async_trait::async_trait]
pub trait SearchCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<String>;
    async fn put(&self, key: &str, value: &str, ttl: Duration);
}

/// The cache in Redis; keys are hashed (a query can be long and any text).
#[derive(Clone)]
pub struct RedisSearchCache {
    connection: ConnectionManager,
    namespace: String,
}

impl RedisSearchCache {
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, namespace: namespace.to_owned() }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:source-search:{:x}", self.namespace, Sha256::digest(key.as_bytes()))
    }
}

#[async_trait::async_trait]
impl SearchCache for RedisSearchCache {
    async fn get(&self, key: &str) -> Option<String> {
        let mut connection = self.connection.clone();
        connection
            .get(self.key(key))
            .await
            .inspect_err(|error| tracing::warn!(%error, "source search cache unavailable; asking the source"))
            .ok()
            .flatten()
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) {
        let mut connection = self.connection.clone();
        let stored: Result<(), _> = connection.set_ex(self.key(key), value, ttl.as_secs().max(1)).await;
        if let Err(error) = stored {
            tracing::warn!(%error, "source search cache unavailable; result not kept");
        }
    }
}

/// The cache in memory, for the embedded mode.
#[derive(Clone)]
pub struct LocalSearchCache {
    entries: Arc<Mutex<ExpiringMap<String, String>>>,
}

impl Default for LocalSearchCache {
    fn default() -> Self {
        Self { entries: Arc::new(Mutex::new(ExpiringMap::new())) }
    }
}

#[async_trait::async_trait]
impl SearchCache for LocalSearchCache {
    async fn get(&self, key: &str) -> Option<String> {
        guard(&self.entries).get(key, Instant::now()).cloned()
    }

    async fn put(&self, key: &str, value: &str, ttl: Duration) {
        let now = Instant::now();
        guard(&self.entries).insert(key.to_owned(), value.to_owned(), now + ttl, now);
    }
}
