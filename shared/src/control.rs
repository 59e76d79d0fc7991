//! Control signals from the API to the workers, over Redis pub/sub: today, "cancel job X".
//!
//! The signal makes cancellation prompt (a running job stops within milliseconds, dropping its
//! in-flight LLM requests); it is not what makes it reliable. The API records the request in the
//! job row first, and every worker heartbeat reads it back, so a signal lost to a Redis blip or a
//! worker reconnecting only delays the stop to the next heartbeat.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio_util::sync::CancellationToken;

use crate::{backoff::Backoff, ids::JobId, settings::Secret};

fn channel(namespace: &str) -> String {
    format!("{namespace}:control")
}

/// Why a signal could not be sent.
pub type SignalError = Box<dyn std::error::Error + Send + Sync>;

/// The control port, API side: "stop job X now". Redis pub/sub ([`ControlSender`]) reaches every
/// worker process; in the embedded mode `embedded::control::LocalControl` reaches the jobs of
/// its own process.
#[async_trait::async_trait]
pub trait CancelSignal: Send + Sync + 'static {
    async fn cancel(&self, job_id: JobId) -> Result<(), SignalError>;
}

#[async_trait::async_trait]
impl CancelSignal for ControlSender {
    async fn cancel(&self, job_id: JobId) -> Result<(), SignalError> {
        Ok(ControlSender::cancel(self, job_id).await?)
    }
}

#[async_trait::async_trait]
impl CancelSignal for crate::embedded::control::LocalControl {
    async fn cancel(&self, job_id: JobId) -> Result<(), SignalError> {
        Ok(crate::embedded::control::LocalControl::cancel(self, job_id).await?)
    }
}

/// Sends control signals (API side).
#[derive(Clone)]
pub struct ControlSender {
    connection: ConnectionManager,
    channel: String,
}

impl ControlSender {
    /// Over the process's shared connection (`event_bus::connect`).
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self { connection, channel: channel(namespace) }
    }

    /// Asks whichever worker runs `job_id` to stop it now.
    pub async fn cancel(&self, job_id: JobId) -> Result<(), redis::RedisError> {
        let mut connection = self.connection.clone();
        let _: i64 = connection.publish(&self.channel, format!("cancel:{job_id}")).await?;
        Ok(())
    }
}

/// The jobs running in this worker process, by id, with the token that stops each (worker side).
#[derive(Clone, Default)]
pub struct CancelRegistry {
    running: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

/// Removes its job from the registry when dropped.
pub struct Registration {
    registry: CancelRegistry,
    job_id: JobId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.running.lock().expect("registry poisoned").remove(&self.job_id);
    }
}

impl CancelRegistry {
    /// Registers a running job; `token` is cancelled when a cancel signal for it arrives.
    pub fn register(&self, job_id: JobId, token: CancellationToken) -> Registration {
        self.running.lock().expect("registry poisoned").insert(job_id, token);
        Registration { registry: self.clone(), job_id }
    }

    pub(crate) fn cancel(&self, job_id: JobId) {
        if let Some(token) = self.running.lock().expect("registry poisoned").get(&job_id) {
            token.cancel();
        }
    }

    /// Listens for signals until `shutdown`, reconnecting by itself (redis-rs's `PubSub` does
    /// not). One connection per worker process.
    pub async fn listen(self, redis_url: Secret, namespace: String, shutdown: CancellationToken) {
        let channel = channel(&namespace);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            let subscribed = async {
                let client = crate::event_bus::client(&redis_url)?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::select! { () = shutdown.cancelled() => return, result = subscribed => result } {
                Ok(pubsub) => {
                    backoff.reset();
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            () = shutdown.cancelled() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else { break };
                        let payload: String = message.get_payload().unwrap_or_default();
                        if let Some(job_id) = payload.strip_prefix("cancel:").and_then(|id| id.parse().ok()) {
                            self.cancel(job_id);
                        }
                    }
                    tracing::warn!("control channel lost, reconnecting");
                }
                Err(error) => tracing::warn!(%error, "cannot subscribe to the control channel, retrying"),
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}
