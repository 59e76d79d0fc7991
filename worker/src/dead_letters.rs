//! Operator tools for the dead-letter queue (`fastnpc-worker dead-letters list|requeue`).
//!
//! Messages land in `{ns}.jobs.dead` when a job failed for good, when they could not be decoded,
//! or when the broker's delivery limit ran out. Listing takes every message off the queue and puts
//! it back at the end (publish, confirm, then ack), so nothing is lost and no delivery counter
//! grows; requeueing gives a job another chance: a failed job goes back to `queued` (its character
//! back to `generating`) and its message goes back to the jobs queue.

use fastnpc_shared::{
    ids::JobId,
    queue::{self, Topology},
    settings::Settings,
    store,
};
use lapin::{
    Channel,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::AMQPValue,
};

/// One dead letter, as an operator sees it.
#[derive(Debug)]
pub struct DeadLetter {
    pub job_id: Option<JobId>,
    /// Why the broker dead-lettered it (`rejected`, `delivery_limit`, …).
    pub reason: String,
    pub body: String,
}

/// Which dead letters to requeue.
pub enum Selection {
    All,
    Jobs(Vec<JobId>),
}

/// Lists the dead letters, leaving them in place.
pub async fn list(settings: &Settings) -> anyhow::Result<Vec<DeadLetter>> {
    walk(settings, |_| false).await.map(|(kept, _)| kept)
}

/// Requeues the selected dead letters; returns the jobs requeued.
pub async fn requeue(settings: &Settings, selection: &Selection) -> anyhow::Result<Vec<JobId>> {
    let selected = |letter: &DeadLetter| match (selection, letter.job_id) {
        (Selection::All, Some(_)) => true,
        (Selection::Jobs(ids), Some(id)) => ids.contains(&id),
        _ => false,
    };
    let (_, taken) = walk(settings, selected).await?;
    let db = store::PgStore::connect(settings.database_url.expose(), 2).await?;
    let topology = Topology::from_settings(settings);
    let publisher = queue::JobPublisher::new(settings.amqp_url.clone(), topology);
    let mut requeued = Vec::new();
    for job_id in taken {
        store::Store::reopen_job(&db, job_id).await?;
        publisher.publish(&fastnpc_shared::jobs::QueueMessage::RunJobV1 { job_id }).await?;
        requeued.push(job_id);
    }
    Ok(requeued)
}

/// Takes every dead letter once: those `take` selects are removed (their job ids returned), the
/// rest are put back at the end of the queue.
async fn walk(
    settings: &Settings,
    take: impl Fn(&DeadLetter) -> bool,
) -> anyhow::Result<(Vec<DeadLetter>, Vec<JobId>)> {
    let topology = Topology::from_settings(settings);
    let connection = queue::connect(&settings.amqp_url).await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut remaining = passive_count(&channel, &topology.dead_queue).await?;
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    while remaining > 0 {
        let Some(message) =
            channel.basic_get(topology.dead_queue.as_str().into(), BasicGetOptions { no_ack: false }).await?
        else {
            break;
        };
        remaining -= 1;
        let delivery = message.delivery;
        let letter = describe(&delivery.data, delivery.properties.headers().as_ref());
        if take(&letter) {
            taken.extend(letter.job_id);
        } else {
            // Back to the end of the dead-letter queue, confirmed before the original goes.
            channel
                .basic_publish(
                    "".into(),
                    topology.dead_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    delivery.properties.clone(),
                )
                .await?
                .await?;
            kept.push(letter);
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok((kept, taken))
}

async fn passive_count(channel: &Channel, queue: &str) -> anyhow::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

fn describe(body: &[u8], headers: Option<&lapin::types::FieldTable>) -> DeadLetter {
    let text = String::from_utf8_lossy(body).into_owned();
    let job_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("job_id").and_then(|id| id.as_str()).and_then(|id| id.parse().ok()));
    let reason = headers
        .and_then(|h| h.inner().get("x-first-death-reason"))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown".into());
    DeadLetter { job_id, reason, body: text }
}
