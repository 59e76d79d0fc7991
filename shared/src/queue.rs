//! The job queue on RabbitMQ (lapin).
//!
//! Topology, declared idempotently by every process that touches it:
//!
//! - `{ns}.jobs`: a durable **quorum** queue (replicated, survives broker restarts) holding job
//!   ids. Messages that are rejected, or redelivered more than [`DELIVERY_LIMIT`] times (a job
//!   that keeps crashing its workers), are dead-lettered at-least-once to
//! - `{ns}.dead` (fanout exchange) → `{ns}.jobs.dead` (quorum queue), where operators inspect
//!   and requeue them.
//!
//! Publishing waits for the broker's confirm, so "published" means "on disk on a quorum of
//! nodes"; a publish that fails leaves the job row unconfirmed for the re-publisher.
//!
//! We do not rely on lapin's automatic recovery (young, and it does not restore prefetch): the
//! publisher reconnects lazily on its next publish and the worker's consumer loop rebuilds
//! connection, topology, prefetch and consumer itself.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tokio::sync::Mutex;

use crate::{jobs::QueueMessage, settings::Secret};

/// Deliveries of one message before the broker dead-letters it. A message only comes back when
/// its worker died or handed it back, so this many returns means it is poison.
pub const DELIVERY_LIMIT: i32 = 10;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Names of the queues and exchanges of one namespace.
#[derive(Clone, Debug)]
pub struct Topology {
    pub jobs_queue: String,
    pub dead_exchange: String,
    pub dead_queue: String,
    /// Queue TTL for throwaway namespaces (see `Settings::queue_expires`).
    pub expires: Option<Duration>,
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self {
            jobs_queue: format!("{namespace}.jobs"),
            dead_exchange: format!("{namespace}.dead"),
            dead_queue: format!("{namespace}.jobs.dead"),
            expires: None,
        }
    }

    /// The topology the settings describe.
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        Self { expires: settings.queue_expires, ..Self::new(&settings.namespace) }
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(expires) = self.expires {
            let millis = i32::try_from(expires.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-expires".into(), AMQPValue::LongInt(millis));
        }
        arguments
    }

    /// Declares everything (idempotent: redeclaring with the same arguments is a no-op).
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        channel
            .exchange_declare(self.dead_exchange.as_str().into(), ExchangeKind::Fanout, durable, FieldTable::default())
            .await?;
        channel
            .queue_declare(self.dead_queue.as_str().into(), QueueDeclareOptions::durable(), self.queue_arguments())
            .await?;
        channel
            .queue_bind(
                self.dead_queue.as_str().into(),
                self.dead_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut jobs_arguments = self.queue_arguments();
        jobs_arguments
            .insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_exchange.as_str().into()))
            .insert("x-delivery-limit".into(), AMQPValue::LongInt(DELIVERY_LIMIT))
            // At-least-once dead-lettering needs reject-publish overflow; without it RabbitMQ
            // silently falls back to at-most-once and a dead letter can vanish.
            .insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()))
            .insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        channel.queue_declare(self.jobs_queue.as_str().into(), QueueDeclareOptions::durable(), jobs_arguments).await?;
        Ok(())
    }
}

/// Opens a connection (bounded in time: an unreachable broker fails fast).
pub async fn connect(url: &Secret) -> Result<Connection, QueueError> {
    let connecting = Connection::connect(url.expose(), ConnectionProperties::default());
    tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.map_err(|_| QueueError::Timeout)?.map_err(QueueError::Amqp)
}

/// Opens a channel for consuming: topology declared, prefetch set. Prefetch is per consumer (quorum
/// queues refuse global QoS) and equals the worker's in-flight budget.
pub async fn consumer_channel(
    connection: &Connection,
    topology: &Topology,
    prefetch: u16,
) -> Result<Channel, QueueError> {
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
    Ok(channel)
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker did not answer in time")]
    Timeout,
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the message could not be routed to the jobs queue")]
    Unroutable,
}

/// The job queue port, publishing side: RabbitMQ ([`JobPublisher`]) in the distributed mode,
/// `embedded::queue::InProcessQueue` in the embedded one. Either way the job row is the truth:
/// a message is only a wake-up call for a worker, and a lost one is re-sent by the re-publisher.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Hands the message to the queue; `Ok` once it is safely there (confirmed).
    async fn publish(&self, message: &QueueMessage) -> Result<(), QueueError>;
    /// Whether the queue is reachable right now (readiness reports it).
    fn is_connected(&self) -> bool;
    /// Messages waiting, per queue (`jobs`, `dead`), for the metrics; none where there is no
    /// broker to ask.
    async fn depths(&self) -> Result<Vec<(&'static str, u64)>, QueueError> {
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl JobQueue for JobPublisher {
    async fn publish(&self, message: &QueueMessage) -> Result<(), QueueError> {
        JobPublisher::publish(self, message).await
    }

    fn is_connected(&self) -> bool {
        JobPublisher::is_connected(self)
    }

    async fn depths(&self) -> Result<Vec<(&'static str, u64)>, QueueError> {
        JobPublisher::depths(self).await
    }
}

#[async_trait::async_trait]
impl JobQueue for crate::embedded::queue::InProcessQueue {
    async fn publish(&self, message: &QueueMessage) -> Result<(), QueueError> {
        crate::embedded::queue::InProcessQueue::publish(self, message).await
    }

    fn is_connected(&self) -> bool {
        crate::embedded::queue::InProcessQueue::is_connected(self)
    }
}

/// Publishes job messages with confirms over one connection per process.
///
/// Many requests publish concurrently on one confirm-mode channel (lapin matches confirms to
/// publishes); the mutex only guards (re)connecting, so a broker outage costs one connect attempt
/// per publish, not a thundering herd.
pub struct JobPublisher {
    url: Secret,
    topology: Topology,
    link: Mutex<Option<Link>>,
}

struct Link {
    // Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
}

impl JobPublisher {
    /// Creates a publisher; it connects on first use, so the API can start while the broker is
    /// down (jobs stay queued and the re-publisher sends them later).
    pub fn new(url: Secret, topology: Topology) -> Self {
        Self { url, topology, link: Mutex::new(None) }
    }

    /// Publishes and waits for the broker's confirm. One reconnect is attempted when the channel
    /// turns out to be dead.
    pub async fn publish(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(message).expect("queue messages serialise");
        let mut last_error = None;
        for _ in 0..2 {
            let channel = self.channel().await?;
            match self.publish_on(&channel, &payload).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if !channel.status().connected() {
                        *self.link.lock().await = None;
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(QueueError::Timeout))
    }

    async fn publish_on(&self, channel: &Channel, payload: &[u8]) -> Result<(), QueueError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_content_type("application/json".into());
        let confirm = channel
            .basic_publish(
                "".into(),
                self.topology.jobs_queue.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                payload,
                properties,
            )
            .await?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await.map_err(|_| QueueError::Timeout)??;
        if !confirmation.is_ack() {
            return Err(QueueError::Nacked);
        }
        if confirmation.take_message().is_some() {
            return Err(QueueError::Unroutable);
        }
        Ok(())
    }

    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut link = self.link.lock().await;
        if let Some(existing) = link.as_ref()
            && existing.channel.status().connected()
        {
            return Ok(existing.channel.clone());
        }
        let connection = connect(&self.url).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        self.topology.declare(&channel).await?;
        *link = Some(Link { _connection: connection, channel: channel.clone() });
        Ok(channel)
    }

    /// Messages ready in the jobs queue and in the dead-letter queue, as the broker counts them
    /// (a passive declare: it creates nothing).
    pub async fn depths(&self) -> Result<Vec<(&'static str, u64)>, QueueError> {
        let channel = self.channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut depths = Vec::with_capacity(2);
        for (label, name) in [("jobs", &self.topology.jobs_queue), ("dead", &self.topology.dead_queue)] {
            let queue = channel.queue_declare(name.as_str().into(), passive, FieldTable::default()).await?;
            depths.push((label, u64::from(queue.message_count())));
        }
        Ok(depths)
    }

    /// True when the publisher currently holds a live channel (for readiness). Never waits: a
    /// reconnect in progress (which holds the lock) reads as "not connected".
    pub fn is_connected(&self) -> bool {
        self.link.try_lock().is_ok_and(|link| link.as_ref().is_some_and(|l| l.channel.status().connected()))
    }
}
