//! The consumer supervisor: keeps one connection to RabbitMQ, rebuilds it when it drops, and
//! hands deliveries to the runner under a fixed in-flight budget.
//!
//! Prefetch equals the budget, so the broker never pushes this worker more jobs than it can run;
//! several workers on one queue then share the load by construction. After a reconnect the budget
//! still counts jobs started on the old channel (the semaphore outlives channels), so a broker
//! blip cannot make a worker run twice its budget.

use std::{sync::Arc, time::Duration};

use fastnpc_shared::{
    backoff::Backoff,
    queue::{self, Topology},
    settings::Secret,
};
use futures::StreamExt;
use lapin::{
    Channel, Connection, Consumer,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions},
    types::FieldTable,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{Deps, runner};

/// Consumes until `shutdown`, then drains (see [`crate::run`]).
pub async fn run(deps: Deps, amqp_url: Secret, topology: Topology, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(usize::from(deps.config.concurrency)));
    let in_flight = TaskTracker::new();
    // Cancelled when the shutdown grace runs out: jobs still running are handed back.
    let abandon = CancellationToken::new();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    while !shutdown.is_cancelled() {
        let (connection, channel, mut consumer) = match open(&amqp_url, &topology, deps.config.concurrency).await {
            Ok(link) => link,
            Err(error) => {
                tracing::warn!(%error, failures = backoff.failures() + 1, "cannot reach RabbitMQ");
                if !backoff.wait(&shutdown).await {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        tracing::info!(queue = %topology.jobs_queue, prefetch = deps.config.concurrency, "consuming jobs");

        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer failed, reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("consumer was cancelled by the broker, reconnecting");
                    break;
                }
            };
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
                () = shutdown.cancelled() => {
                    // Not started: give it straight back so another worker takes it now.
                    let _ = delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
                    break;
                }
            };
            start(&in_flight, &deps, delivery, &abandon, slot);
        }

        if shutdown.is_cancelled() {
            // Stop deliveries first; what the broker already pushed but we never started is
            // requeued when the channel closes.
            let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
            drain(&in_flight, &abandon, deps.config.shutdown_grace).await;
            let _ = channel.close(200, "worker shutting down".into()).await;
            let _ = connection.close(200, "worker shutting down".into()).await;
            return;
        }
    }
    drain(&in_flight, &abandon, deps.config.shutdown_grace).await;
}

/// The embedded mode's consumer: the same budget and drain, over the in-process queue (which
/// cannot disconnect, so there is nothing to supervise).
pub async fn run_in_process(
    deps: Deps,
    queue: fastnpc_shared::embedded::queue::InProcessQueue,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(usize::from(deps.config.concurrency)));
    let in_flight = TaskTracker::new();
    let abandon = CancellationToken::new();
    tracing::info!(concurrency = deps.config.concurrency, "consuming jobs in process");
    loop {
        // A slot first, then a message: a message taken without a slot would wait unsettled.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the slot semaphore is never closed"),
        };
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            delivery = queue.next() => delivery,
        };
        start(&in_flight, &deps, delivery, &abandon, slot);
    }
    drain(&in_flight, &abandon, deps.config.shutdown_grace).await;
}

/// Runs one delivery in the background; its slot is freed when it is settled.
fn start(
    in_flight: &TaskTracker,
    deps: &Deps,
    delivery: impl runner::Delivery,
    abandon: &CancellationToken,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let (deps, abandon) = (deps.clone(), abandon.clone());
    in_flight.spawn(async move {
        runner::handle(&deps, delivery, &abandon).await;
        drop(slot);
    });
}

async fn drain(in_flight: &TaskTracker, abandon: &CancellationToken, grace: Duration) {
    in_flight.close();
    if !in_flight.is_empty() {
        tracing::info!(jobs = in_flight.len(), grace_secs = grace.as_secs(), "waiting for in-flight jobs");
    }
    if tokio::time::timeout(grace, in_flight.wait()).await.is_err() {
        tracing::warn!(jobs = in_flight.len(), "shutdown grace over, handing jobs back");
        abandon.cancel();
        in_flight.wait().await;
    }
}

async fn open(
    url: &Secret,
    topology: &Topology,
    prefetch: u16,
) -> Result<(Connection, Channel, Consumer), queue::QueueError> {
    let connection = queue::connect(url).await?;
    let channel = queue::consumer_channel(&connection, topology, prefetch).await?;
    let consumer = channel
        .basic_consume(
            topology.jobs_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: false, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}
