//! The event bus on Redis: a durable-for-a-while log per job plus live fan-out.
//!
//! Appending an event is one Lua script, atomic on the server: `INCR` the job's sequence
//! counter, `XADD` the event to the job's capped stream under id `0-<seq>`, and `PUBLISH` it on
//! the job's channel. So `seq` is gap-free and totally ordered whoever appends (the API's
//! `queued`, any worker's progress), and the stream and the live feed never disagree.
//!
//! An append whose answer is lost (a response timeout, a connection cut after the script ran)
//! may have happened or not; retrying it blindly could store a `token` twice. So every append
//! carries an [`AppendKey`] that its retries share, the script records each key it has stored
//! with its `seq` (a per-job hash that lives as long as the stream), and a repeat answers that
//! `seq` without storing anything.
//!
//! Readers ([`EventHub`]) follow ARCHITECTURE.md's recipe: *subscribe first, then backfill from
//! the stream, then de-duplicate by `seq`*. Each API process holds **one** pattern subscription
//! for all jobs and fans events out in-process, so SSE clients never cost a Redis connection.
//! Pub/sub is at-most-once and `aio::PubSub` does not reconnect, so the hub reconnects itself and
//! bumps a generation counter; listeners then backfill from the stream, which closes any gap.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex as StdMutex},
    time::Duration,
};

use futures::StreamExt;
use redis::{AsyncCommands, Client, aio::ConnectionManager, aio::ConnectionManagerConfig};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    events::{EventPayload, JobEvent},
    ids::JobId,
    settings::Secret,
};

/// Entries kept per job stream (approximate trim). A character job writes about a dozen; chat
/// jobs write coalesced tokens, so this bounds memory per job while keeping whole replies.
const STREAM_MAX_LEN: u32 = 10_000;
/// A job's log lives this long after its first event while it runs (no job runs or waits
/// nearly that long; a log that expired anyway starts again, with its expiry, at `seq` 1)…
const LIVE_TTL: Duration = Duration::from_secs(24 * 3600);
/// …and this long after its terminal event (clients resuming late fall back to polling).
/// The expiry is set only by these two appends: refreshing it at every `token` took three of
/// the script's eight commands.
const FINISHED_TTL: Duration = Duration::from_secs(3600);

const APPEND_SCRIPT: &str = r#"
local stored = redis.call('HGET', KEYS[3], ARGV[7])
if stored then
  return tonumber(stored)
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '0-' .. seq, 'type', ARGV[2], 'data', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[7], seq)
if seq == 1 or ARGV[8] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], '{"job_id":"' .. ARGV[6] .. '","seq":' .. seq .. ',"type":"' .. ARGV[2] .. '","data":' .. ARGV[3] .. '}')
return seq
"#;

/// Key and channel names of one namespace.
#[derive(Clone, Debug)]
struct Keys {
    namespace: String,
}

impl Keys {
    fn sequence(&self, job_id: JobId) -> String {
        format!("{}:job:{job_id}:seq", self.namespace)
    }
    fn stream(&self, job_id: JobId) -> String {
        format!("{}:job:{job_id}:events", self.namespace)
    }
    /// Append key → seq of every event stored (see [`AppendKey`]).
    fn appended(&self, job_id: JobId) -> String {
        format!("{}:job:{job_id}:appended", self.namespace)
    }
    fn channel(&self, job_id: JobId) -> String {
        format!("{}:events:{job_id}", self.namespace)
    }
    fn channel_pattern(&self) -> String {
        format!("{}:events:*", self.namespace)
    }
}

/// Errors talking to Redis or reading what is there.
#[derive(Debug, thiserror::Error)]
pub enum EventBusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("malformed event in the log: {0}")]
    Malformed(String),
    /// The embedded mode keeps the log in its database.
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    /// The embedded log's writer could not store a batch (the cause is in the message: one
    /// failed transaction fails every append in it), or has stopped.
    #[error("event store: {0}")]
    Unavailable(String),
}

/// Names one logical append, shared by its retries, so a retry of an append that did happen
/// (its answer was lost) stores nothing and answers the first one's `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendKey(uuid::Uuid);

impl AppendKey {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for AppendKey {
    fn default() -> Self {
        Self::new()
    }
}

/// The job event log port: append (which also reaches live listeners) and read back. Redis in
/// the distributed mode ([`RedisEventLog`]); the embedded mode's database otherwise.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event once per `key` and returns its `seq` (1, 2, … per job): a repeat of a
    /// key already stored returns that event's `seq` and stores nothing.
    async fn append_once(&self, job_id: JobId, payload: &EventPayload, key: AppendKey) -> Result<u64, EventBusError>;

    /// Appends an event (one attempt) and returns its `seq`.
    async fn append(&self, job_id: JobId, payload: &EventPayload) -> Result<u64, EventBusError> {
        self.append_once(job_id, payload, AppendKey::new()).await
    }

    /// Every event of the job with `seq > after`, in order.
    async fn read_after(&self, job_id: JobId, after: u64) -> Result<Vec<JobEvent>, EventBusError>;

    /// Liveness probe for readiness checks.
    async fn ping(&self) -> Result<(), EventBusError>;

    /// Appends with a few retries: an event lost to a blip would leave SSE clients without it,
    /// so it is worth a short wait.
    /// Every attempt carries the same [`AppendKey`], so an attempt that succeeded unseen is not
    /// stored again.
    async fn append_with_retry(&self, job_id: JobId, payload: &EventPayload) -> Result<u64, EventBusError> {
        let key = AppendKey::new();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match self.append_once(job_id, payload, key).await {
                Ok(seq) => return Ok(seq),
                Err(error) if backoff.failures() < 5 => {
                    tracing::warn!(job.id = %job_id, %error, attempt = backoff.failures(), "event append failed, retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The process's one multiplexed, self-reconnecting Redis connection for commands (pub/sub
/// subscriptions need connections of their own). Shared by the event log, control signals and
/// rate limits.
pub async fn connect(redis_url: &Secret) -> Result<ConnectionManager, EventBusError> {
    let client = client(redis_url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        // The default 500 ms is tight for a loaded server; commands here are tiny, so a slow
        // answer means trouble, and callers retry.
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(3);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// A Redis client whose connections send each command at once. redis-rs leaves Nagle's
/// algorithm on, so on the multiplexed connection a command written while an earlier one is
/// unanswered waited for that answer's ACK.
pub fn client(redis_url: &Secret) -> redis::RedisResult<Client> {
    use redis::IntoConnectionInfo as _;
    let info = redis_url.expose().into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Client::open(info.set_tcp_settings(tcp))
}

/// Job event logs in Redis: a capped stream per job, appended and published by one script.
#[derive(Clone)]
pub struct RedisEventLog {
    connection: ConnectionManager,
    keys: Keys,
    append: Arc<redis::Script>,
}

impl RedisEventLog {
    /// Over the process's shared connection (see [`connect`]).
    pub fn new(connection: ConnectionManager, namespace: &str) -> Self {
        Self {
            connection,
            keys: Keys { namespace: namespace.to_owned() },
            append: Arc::new(redis::Script::new(APPEND_SCRIPT)),
        }
    }

    /// The connection this log uses, to share with the process's other Redis users.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

#[async_trait::async_trait]
impl EventLog for RedisEventLog {
    /// The first event sets the log's lifetime, and a terminal event shortens it.
    async fn append_once(&self, job_id: JobId, payload: &EventPayload, key: AppendKey) -> Result<u64, EventBusError> {
        let terminal = payload.is_terminal();
        let ttl = if terminal { FINISHED_TTL } else { LIVE_TTL };
        let mut connection = self.connection.clone();
        let seq: u64 = self
            .append
            .key(self.keys.sequence(job_id))
            .key(self.keys.stream(job_id))
            .key(self.keys.appended(job_id))
            .arg(self.keys.channel(job_id))
            .arg(payload.event_type())
            .arg(payload.data_json().to_string())
            .arg(STREAM_MAX_LEN)
            .arg(ttl.as_secs())
            .arg(job_id.to_string())
            .arg(key.0.to_string())
            .arg(if terminal { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await?;
        Ok(seq)
    }

    async fn read_after(&self, job_id: JobId, after: u64) -> Result<Vec<JobEvent>, EventBusError> {
        let mut connection = self.connection.clone();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(self.keys.stream(job_id))
            .arg(format!("(0-{after}"))
            .arg("+")
            .query_async(&mut connection)
            .await?;
        entries.into_iter().map(|(id, fields)| parse_entry(job_id, &id, fields)).collect()
    }

    async fn ping(&self) -> Result<(), EventBusError> {
        let mut connection = self.connection.clone();
        let _: String = connection.ping().await?;
        Ok(())
    }
}

fn parse_entry(job_id: JobId, id: &str, fields: Vec<(String, String)>) -> Result<JobEvent, EventBusError> {
    let seq = id
        .strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| EventBusError::Malformed(format!("stream id {id}")))?;
    let mut event_type = None;
    let mut data = None;
    for (name, value) in fields {
        match name.as_str() {
            "type" => event_type = Some(value),
            "data" => data = Some(value),
            _ => {}
        }
    }
    let (Some(event_type), Some(data)) = (event_type, data) else {
        return Err(EventBusError::Malformed(format!("entry {id} lacks type or data")));
    };
    let data = serde_json::from_str(&data).map_err(|e| EventBusError::Malformed(e.to_string()))?;
    let payload = EventPayload::from_parts(&event_type, data).map_err(|e| EventBusError::Malformed(e.to_string()))?;
    Ok(JobEvent { job_id, seq, payload })
}

/// The message the append script publishes.
#[derive(serde::Deserialize)]
struct Published {
    job_id: JobId,
    seq: u64,
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
}

impl Published {
    fn into_event(self) -> Result<JobEvent, serde_json::Error> {
        let payload = EventPayload::from_parts(&self.event_type, self.data)?;
        Ok(JobEvent { job_id: self.job_id, seq: self.seq, payload })
    }
}

/// Capacity of one job's in-process channel. A listener that falls this far behind is told it
/// lagged and backfills from the stream.
const LISTENER_CAPACITY: usize = 1024;

/// The API process's one live subscription, fanned out to every SSE client in the process.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    listeners: StdMutex<HashMap<JobId, broadcast::Sender<Arc<JobEvent>>>>,
    /// Incremented each time the subscription is (re)established; listeners compare it to know
    /// that live events may have been missed while it was down.
    generation: watch::Sender<u64>,
    connected: watch::Sender<bool>,
}

/// One SSE client's view of one job's live events.
pub struct Subscription {
    job_id: JobId,
    hub: Arc<HubInner>,
    /// Live events of this job.
    pub events: broadcast::Receiver<Arc<JobEvent>>,
    /// Changes when the hub reconnected: backfill from the log to close the gap.
    pub generation: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut listeners = self.hub.listeners.lock().expect("listener map poisoned");
        // Our receiver goes while the lock is held: counted after the fields' own drop, two
        // subscriptions of one job ending at once could each still see the other and both
        // leave the entry behind.
        drop(std::mem::replace(&mut self.events, broadcast::channel(1).1));
        if listeners.get(&self.job_id).is_some_and(|sender| sender.receiver_count() == 0) {
            listeners.remove(&self.job_id);
        }
    }
}

impl EventHub {
    /// Starts the hub's subscriber task; it runs until `shutdown` and reconnects on its own.
    /// Returns once the first subscription is live (or after a short wait if Redis is down, so
    /// the API can still start; listeners then rely on backfill until it connects).
    pub async fn start(
        redis_url: &Secret,
        namespace: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, EventBusError> {
        let client = client(redis_url)?;
        let inner = Arc::new(HubInner {
            listeners: StdMutex::new(HashMap::new()),
            generation: watch::channel(0).0,
            connected: watch::channel(false).0,
        });
        let hub = Self { inner };
        let mut connected = hub.inner.connected.subscribe();
        let keys = Keys { namespace: namespace.to_owned() };
        tokio::spawn(run_subscriber(client, keys.channel_pattern(), hub.inner.clone(), shutdown));
        let _ = tokio::time::timeout(Duration::from_secs(3), connected.wait_for(|up| *up)).await;
        Ok(hub)
    }

    /// A hub fed by [`publish_local`](Self::publish_local) instead of Redis, for the embedded
    /// mode where the events' producers share the process: always connected, and its generation
    /// never changes because there is no subscription to lose.
    pub fn in_process() -> Self {
        let inner = Arc::new(HubInner {
            listeners: StdMutex::new(HashMap::new()),
            generation: watch::channel(0).0,
            connected: watch::channel(true).0,
        });
        Self { inner }
    }

    /// Hands an event to this process's listeners of its job (the in-process hub's feed).
    pub fn publish_local(&self, event: JobEvent) {
        dispatch(&self.inner, event);
    }

    /// Registers interest in a job's live events. Call this *before* backfilling from the log.
    pub fn subscribe(&self, job_id: JobId) -> Subscription {
        let events = {
            let mut listeners = self.inner.listeners.lock().expect("listener map poisoned");
            listeners.entry(job_id).or_insert_with(|| broadcast::channel(LISTENER_CAPACITY).0).subscribe()
        };
        Subscription { job_id, hub: self.inner.clone(), events, generation: self.inner.generation.subscribe() }
    }

    /// True while the live subscription is up.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Jobs with at least one local listener (for metrics and tests).
    pub fn listened_jobs(&self) -> usize {
        self.inner.listeners.lock().expect("listener map poisoned").len()
    }
}

async fn run_subscriber(client: Client, pattern: String, hub: Arc<HubInner>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.cancelled() => return,
            result = subscribed => result,
        };
        match pubsub {
            Ok(pubsub) => {
                backoff.reset();
                hub.connected.send_replace(true);
                hub.generation.send_modify(|g| *g += 1);
                tracing::info!("event hub subscribed");
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        () = shutdown.cancelled() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    match serde_json::from_slice::<Published>(message.get_payload_bytes()).map(Published::into_event) {
                        Ok(Ok(event)) => dispatch(&hub, event),
                        Ok(Err(error)) | Err(error) => tracing::warn!(%error, "ignoring malformed live event"),
                    }
                }
                hub.connected.send_replace(false);
                tracing::warn!("event hub lost its subscription, reconnecting");
            }
            Err(error) => {
                hub.connected.send_replace(false);
                tracing::warn!(%error, "event hub cannot subscribe, retrying");
            }
        }
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

fn dispatch(hub: &HubInner, event: JobEvent) {
    let listeners = hub.listeners.lock().expect("listener map poisoned");
    if let Some(sender) = listeners.get(&event.job_id) {
        // No receivers left is fine: the last one is being dropped right now.
        let _ = sender.send(Arc::new(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_listener_entry_goes_with_its_last_subscription_even_when_two_end_at_once() {
        let hub = EventHub::in_process();
        for _ in 0..2_000 {
            let job_id = JobId::new();
            let both = [hub.subscribe(job_id), hub.subscribe(job_id)];
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                for subscription in both {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        drop(subscription);
                    });
                }
            });
        }
        assert_eq!(hub.listened_jobs(), 0, "entries left behind without a listener");
    }
}
