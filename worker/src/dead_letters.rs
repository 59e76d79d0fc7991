//! Operator tools for the dead-letter queue (`fastnpc-worker dead-letters list|requeue`).
//!
//! Messages land in `{ns}.jobs.dead` when a job failed for good, when they could not be decoded,
//! or when the broker's delivery limit ran out.
//!
//! Both commands read the queue the same way: on one channel they take every letter with
//! `basic.get` and hold it unacknowledged, so each letter is seen once and stays the broker's
//! until it is settled. Nothing is ever re-published into the dead-letter queue. Every letter is
//! taken before any is settled, so the letters handed back keep their order whether the broker
//! returns them to the head of the queue or to its back.
//!
//! - **list** settles nothing: when it has read the queue it hands every letter back (`basic.nack`
//!   with `requeue`, then the channel is closed), so the letters keep their order, body, headers
//!   and `x-death`. A lister that dies instead hands them back all the same: the broker returns
//!   a closed channel's unacknowledged messages.
//! - **requeue** gives the selected letters' jobs another chance, one letter at a time: the job
//!   is reopened in the store (a failed job goes back to `queued`, its character back to
//!   `generating`), a fresh `run_job.v1` message is published to the jobs queue and confirmed by
//!   the broker, and **only then** is the letter acked. A failure or a crash anywhere before the
//!   ack leaves the letter in the dead-letter queue (a reopened job whose message was not
//!   confirmed is also sent by the API's re-publisher). Running the command again finishes the
//!   work: a letter whose job is already `queued` or `running` (reopened by the interrupted run)
//!   is published and acked like a reopened one. A letter whose job cannot be reopened (it
//!   succeeded or was cancelled since, or this database does not know it) is left in place and
//!   reported.
//!
//! A letter another `list` or `requeue` holds at that moment is invisible to this one.

use fastnpc_shared::{
    ids::JobId,
    jobs::{JobStatus, QueueMessage},
    queue::{self, JobQueue, Topology},
    settings::Settings,
    store::{self, Store},
};
use lapin::{
    Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
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

impl Selection {
    /// Letters that name no job are never selected: there is no job to run again.
    fn selects(&self, job_id: Option<JobId>) -> bool {
        match (self, job_id) {
            (Self::All, Some(_)) => true,
            (Self::Jobs(ids), Some(id)) => ids.contains(&id),
            (_, None) => false,
        }
    }
}

/// What a requeue did.
#[derive(Debug, Default)]
pub struct Requeued {
    /// Jobs running again: reopened (or found already queued or running), their message
    /// confirmed in the jobs queue, their letter acked. Each job once.
    pub requeued: Vec<JobId>,
    /// Selected letters left in the dead-letter queue because their job is not failed, with the
    /// job's status (`None`: the store does not know the job). Each job once.
    pub left: Vec<(JobId, Option<JobStatus>)>,
}

/// Lists the dead letters, oldest first, leaving them in place: nothing is acked or published.
pub async fn list(settings: &Settings) -> anyhow::Result<Vec<DeadLetter>> {
    let held = Held::open(settings).await?;
    let mut letters = Vec::new();
    let read = async {
        while let Some(delivery) = held.take().await? {
            letters.push(describe(&delivery.data, delivery.properties.headers().as_ref()));
        }
        anyhow::Ok(())
    }
    .await;
    held.hand_back().await;
    read.map(|()| letters)
}

/// Requeues the selected dead letters (see the module's documentation for the order of steps
/// that makes it safe to interrupt).
pub async fn requeue(settings: &Settings, selection: &Selection) -> anyhow::Result<Requeued> {
    // The store first: when it cannot be reached, no letter has been touched.
    let db = store::PgStore::connect(settings.database_url.expose(), 2).await?;
    let publisher = queue::JobPublisher::new(settings.amqp_url.clone(), Topology::from_settings(settings));
    requeue_with(settings, selection, &db, &publisher).await
}

/// [`requeue`] over a given store and jobs queue (the publisher is a seam for tests: a publish
/// that fails must leave the letter in place).
pub async fn requeue_with(
    settings: &Settings,
    selection: &Selection,
    store: &dyn Store,
    jobs: &dyn JobQueue,
) -> anyhow::Result<Requeued> {
    let held = Held::open(settings).await?;
    let mut outcome = Requeued::default();
    let walked = async {
        // Every letter is taken before any is settled, so those handed back keep their order
        // whether the broker returns them to the head or to the back of the queue.
        let mut deliveries = Vec::new();
        while let Some(delivery) = held.take().await? {
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            let letter = describe(&delivery.data, delivery.properties.headers().as_ref());
            let Some(job_id) = letter.job_id.filter(|&id| selection.selects(Some(id))) else {
                continue; // not selected: held, handed back at the end
            };
            let revived = revive(store, jobs, job_id).await.map_err(|error| {
                error.context(format!("requeueing job {job_id} (its letter stays in the dead-letter queue)"))
            })?;
            match revived {
                Revival::Running => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    if !outcome.requeued.contains(&job_id) {
                        outcome.requeued.push(job_id);
                    }
                }
                Revival::NotFailed(status) => {
                    if !outcome.left.iter().any(|(id, _)| *id == job_id) {
                        outcome.left.push((job_id, status));
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    // Every letter not acked goes back: the unselected ones, those left, and on an error the
    // one being requeued.
    held.hand_back().await;
    match walked {
        Ok(()) => Ok(outcome),
        Err(error) if outcome.requeued.is_empty() => Err(error),
        Err(error) => Err(error.context(format!(
            "stopped after requeueing {}",
            outcome.requeued.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Where a selected letter's job stands once [`revive`] is done with it.
enum Revival {
    /// Queued or running, with a confirmed message in the jobs queue: the letter can go.
    Running,
    /// Not failed, so not reopened, and not live either: nothing to run.
    NotFailed(Option<JobStatus>),
}

/// Reopens the job, then publishes its message and waits for the broker's confirm. Reopening
/// comes first: a message published while the job is still `failed` would be claimed, refused
/// and acked.
async fn revive(store: &dyn Store, jobs: &dyn JobQueue, job_id: JobId) -> anyhow::Result<Revival> {
    if !store.reopen_job(job_id).await? {
        match store.job_status(job_id).await? {
            // Reopened by a requeue that stopped before acking this letter (or live again some
            // other way): make sure it has a message, as a reopened job gets. A duplicate message
            // is harmless: the claim skips it.
            Some(JobStatus::Queued | JobStatus::Running) => {}
            status => return Ok(Revival::NotFailed(status)),
        }
    }
    jobs.publish(&QueueMessage::RunJobV1 { job_id }).await?;
    if let Err(error) = store.mark_published(job_id).await {
        // Harmless: the re-publisher sends it again and the claim skips the duplicate.
        tracing::warn!(job.id = %job_id, %error, "cannot record the publish");
    }
    Ok(Revival::Running)
}

/// A channel on the dead-letter queue holding the letters it took, unsettled.
struct Held {
    connection: Connection,
    channel: Channel,
    queue: String,
}

impl Held {
    async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let topology = Topology::from_settings(settings);
        let connection = queue::connect(&settings.amqp_url).await?;
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        Ok(Self { connection, channel, queue: topology.dead_queue })
    }

    /// The next letter not taken yet, held until it is acked or handed back; `None` once every
    /// letter in the queue is held (or settled) by this channel.
    async fn take(&self) -> anyhow::Result<Option<Delivery>> {
        let got = self.channel.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false }).await?;
        Ok(got.map(|message| message.delivery))
    }

    /// Hands every letter not acked back to the queue, in order, and closes the connection. A
    /// failure here loses nothing: the broker returns a closed channel's unacked messages.
    async fn hand_back(self) {
        // Delivery tag 0 with `multiple`: every outstanding delivery of the channel.
        let everything = BasicNackOptions { multiple: true, requeue: true };
        if let Err(error) = self.channel.basic_nack(0, everything).await {
            tracing::warn!(%error, "cannot hand the dead letters back; closing the channel returns them");
        }
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn describe(body: &[u8], headers: Option<&FieldTable>) -> DeadLetter {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_letter_names_its_job_and_the_first_death_reason() {
        let job_id = JobId::new();
        let body = serde_json::to_vec(&QueueMessage::RunJobV1 { job_id }).unwrap();
        let mut headers = FieldTable::default();
        headers.insert("x-first-death-reason".into(), AMQPValue::LongString("delivery_limit".into()));

        let letter = describe(&body, Some(&headers));

        assert_eq!((letter.job_id, letter.reason.as_str()), (Some(job_id), "delivery_limit"));
        assert_eq!(letter.body.as_bytes(), body);
    }

    #[test]
    fn a_letter_without_a_job_or_headers_is_still_described() {
        let letter = describe(b"\xffnot json", None);

        assert_eq!((letter.job_id, letter.reason.as_str()), (None, "unknown"));
        assert_eq!(letter.body, "\u{fffd}not json");
    }

    #[test]
    fn only_letters_that_name_a_selected_job_are_selected() {
        let (chosen, other) = (JobId::new(), JobId::new());
        let some = Selection::Jobs(vec![chosen]);

        assert!(some.selects(Some(chosen)));
        assert!(!some.selects(Some(other)));
        assert!(!some.selects(None));
        assert!(Selection::All.selects(Some(other)));
        assert!(!Selection::All.selects(None));
    }
}
