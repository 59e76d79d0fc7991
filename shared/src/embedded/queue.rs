//! The job queue without a broker, for the embedded mode where the publishers and the workers
//! share a process.
//!
//! It keeps the semantics the workers were written against (see `crate::queue`):
//!
//! - **At least once.** A delivery stays owned by its consumer until it is settled: acked
//!   (gone), requeued (back of the queue), or dead-lettered. A delivery dropped unsettled (its
//!   task panicked or was aborted) goes back like a message on a closed channel does.
//! - **Delivery limit.** Every return counts, like `x-delivery-count`; a message returned more
//!   than `delivery_limit` times (so delivered `delivery_limit + 1` times) is dead-lettered with
//!   reason `delivery_limit` instead of coming back: a job that keeps killing its attempts stops.
//! - **Dead letters** are kept in memory, the newest 10,000 (`MAX_DEAD_LETTERS`). The embedded
//!   mode has no command to list or requeue them (the distributed mode's `fastnpc-worker
//!   dead-letters` talks to RabbitMQ), and nothing in `fastnpc` reads them: a dead-lettered
//!   job is already `failed` in the store, and `POST /v1/jobs/{id}/retry` runs it again as a new
//!   job. [`InProcessQueue::dead_letters`] and [`InProcessQueue::requeue_dead_letters`] (all or
//!   by job id; a requeued letter is a fresh `run_job.v1` message with a fresh count) mirror that
//!   command for code that holds the queue; a caller that reopens the jobs first looks them up
//!   with [`InProcessQueue::selected_dead_letters`] and moves each letter with
//!   [`InProcessQueue::requeue_dead_letter`] once its job is reopened, so a failed reopen leaves
//!   the letter in place.
//! - **FIFO** for fresh messages; a returned message goes to the back.
//!
//! Publishing cannot fail and is "confirmed" at once: there is no broker to be down, and no
//! bound but memory (a job is a row in the store first, so the queue holds at most one small
//! message per live job, plus duplicates).
//!
//! # Durability
//!
//! None: the queue is memory, and a restart empties it, dead letters included. The store makes
//! up for it: the job row is its own outbox. The re-publisher alone would miss one case — a
//! queued job without a serial key whose publish the previous process confirmed (its message
//! died with that process, but the row says published) — so the embedded mode calls
//! `Store::reset_deliveries` when it starts and publishes every queued and running job again
//! (`fastnpc::Embedded::run_until`). Dead letters are lost on restart too; their jobs are
//! already `failed` in the store, where an operator still finds them.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::Notify;

use crate::{
    ids::JobId,
    jobs::QueueMessage,
    queue::{DELIVERY_LIMIT, QueueError},
};

/// An in-memory job queue with RabbitMQ's delivery semantics. Clones share one queue.
#[derive(Clone, Debug)]
pub struct InProcessQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    delivery_limit: u32,
    state: Mutex<State>,
    /// Signalled once per message made ready, so a waiting consumer wakes for each.
    message_ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Message>,
    /// Messages handed to consumers and not settled yet.
    unsettled: usize,
    dead: Vec<DeadLetter>,
}

#[derive(Debug)]
struct Message {
    body: Vec<u8>,
    /// Times the message came back unsettled or requeued (RabbitMQ's `x-delivery-count`).
    returns: u32,
}

/// A message dead-lettered by a consumer or by the delivery limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job the message names, when its body is JSON with a `job_id`.
    pub job_id: Option<JobId>,
    pub reason: DeadLetterReason,
    pub body: Vec<u8>,
}

/// Why a message was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A consumer dead-lettered it (the job failed for good, or the message was undecodable).
    Rejected,
    /// It came back more often than the delivery limit allows.
    DeliveryLimit,
}

impl DeadLetterReason {
    /// RabbitMQ's name for the reason (`x-first-death-reason`), as the dead-letter tools print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Which dead letters to requeue. Letters that name no job are never selected: there is no job
/// to run again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeadLetterSelection {
    All,
    Jobs(Vec<JobId>),
}

impl DeadLetterSelection {
    fn selects(&self, letter: &DeadLetter) -> bool {
        match (self, letter.job_id) {
            (Self::All, Some(_)) => true,
            (Self::Jobs(ids), Some(id)) => ids.contains(&id),
            (_, None) => false,
        }
    }
}

impl Default for InProcessQueue {
    /// A queue with the broker's delivery limit.
    fn default() -> Self {
        Self::new(DELIVERY_LIMIT.unsigned_abs())
    }
}

impl InProcessQueue {
    /// An empty queue that dead-letters a message returned more than `delivery_limit` times
    /// (the meaning of `x-delivery-limit`).
    pub fn new(delivery_limit: u32) -> Self {
        Self { shared: Arc::new(Shared { delivery_limit, state: Mutex::default(), message_ready: Notify::new() }) }
    }

    /// Enqueues a job message. Never fails; the `Result` matches `JobPublisher::publish`.
    pub async fn publish(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let body = serde_json::to_vec(message).expect("queue messages serialise");
        self.shared.make_ready(Message { body, returns: 0 });
        Ok(())
    }

    /// Always true: there is no connection to lose.
    pub fn is_connected(&self) -> bool {
        true
    }

    /// Waits for the next message and hands it over until it is settled.
    pub async fn next(&self) -> InProcessDelivery {
        let mut message_ready = std::pin::pin!(self.shared.message_ready.notified());
        loop {
            // Registered before looking, so a message published between the look and the wait
            // still wakes this consumer.
            message_ready.as_mut().enable();
            if let Some(delivery) = self.try_next() {
                return delivery;
            }
            message_ready.as_mut().await;
            // Another consumer may have taken the message this signal was for: wait afresh.
            message_ready.set(self.shared.message_ready.notified());
        }
    }

    /// The next message if one is ready, without waiting.
    pub fn try_next(&self) -> Option<InProcessDelivery> {
        let message = {
            let mut state = self.shared.state();
            let message = state.ready.pop_front()?;
            state.unsettled += 1;
            message
        };
        Some(InProcessDelivery { queue: self.shared.clone(), message: Some(message) })
    }

    /// Messages waiting for a consumer.
    pub fn ready_count(&self) -> usize {
        self.shared.state().ready.len()
    }

    /// Messages held by consumers and not settled yet.
    pub fn unsettled_count(&self) -> usize {
        self.shared.state().unsettled
    }

    /// Every dead letter, oldest first, left in place.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared.state().dead.clone()
    }

    /// The jobs the selected dead letters name, oldest first, leaving the letters in place. For a
    /// caller that must reopen the jobs in the store before it publishes them again (a message
    /// published first could be claimed, and skipped, while its job is still `failed`): it
    /// reopens each job, then calls [`requeue_dead_letter`](Self::requeue_dead_letter). A letter
    /// leaves only then, so one whose job could not be reopened is still here.
    pub fn selected_dead_letters(&self, selection: &DeadLetterSelection) -> Vec<JobId> {
        let state = self.shared.state();
        state.dead.iter().filter(|letter| selection.selects(letter)).filter_map(|letter| letter.job_id).collect()
    }

    /// Moves the oldest dead letter naming `job_id` back to the queue as a fresh `run_job.v1`
    /// message, in one step. False when no letter names the job (any more).
    pub fn requeue_dead_letter(&self, job_id: JobId) -> bool {
        let mut state = self.shared.state();
        let Some(position) = state.dead.iter().position(|letter| letter.job_id == Some(job_id)) else {
            return false;
        };
        state.dead.remove(position);
        state.ready.push_back(Message { body: run_job_body(job_id), returns: 0 });
        drop(state);
        self.shared.message_ready.notify_one();
        true
    }

    /// Moves the selected dead letters back to the queue as fresh `run_job.v1` messages (whatever
    /// their body was, as the worker's `dead-letters requeue` does) and returns their jobs. It
    /// does not reopen the jobs: see [`selected_dead_letters`](Self::selected_dead_letters).
    pub fn requeue_dead_letters(&self, selection: &DeadLetterSelection) -> Vec<JobId> {
        let mut state = self.shared.state();
        let (taken, kept): (Vec<_>, Vec<_>) = state.dead.drain(..).partition(|letter| selection.selects(letter));
        state.dead = kept;
        let jobs: Vec<JobId> = taken.into_iter().filter_map(|letter| letter.job_id).collect();
        state.ready.extend(jobs.iter().map(|&job_id| Message { body: run_job_body(job_id), returns: 0 }));
        drop(state);
        for _ in &jobs {
            self.shared.message_ready.notify_one();
        }
        jobs
    }
}

fn run_job_body(job_id: JobId) -> Vec<u8> {
    serde_json::to_vec(&QueueMessage::RunJobV1 { job_id }).expect("queue messages serialise")
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few pushes and pops that cannot leave the state half
        // changed, and a returning delivery's `Drop` must not panic: a poisoned lock is fine.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn make_ready(&self, message: Message) {
        self.state().ready.push_back(message);
        self.message_ready.notify_one();
    }

    fn settle(&self, message: Message, settlement: Settlement) {
        let mut state = self.state();
        state.unsettled -= 1;
        match settlement {
            Settlement::Ack => {}
            Settlement::DeadLetter => {
                keep_dead_letter(&mut state.dead, DeadLetter::new(message.body, DeadLetterReason::Rejected))
            }
            Settlement::Return => {
                let returns = message.returns + 1;
                if returns > self.delivery_limit {
                    keep_dead_letter(&mut state.dead, DeadLetter::new(message.body, DeadLetterReason::DeliveryLimit));
                } else {
                    state.ready.push_back(Message { body: message.body, returns });
                    drop(state);
                    self.message_ready.notify_one();
                }
            }
        }
    }
}

impl DeadLetter {
    fn new(body: Vec<u8>, reason: DeadLetterReason) -> Self {
        let job_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("job_id").and_then(|id| id.as_str()).and_then(|id| id.parse().ok()));
        Self { job_id, reason, body }
    }
}

enum Settlement {
    Ack,
    Return,
    DeadLetter,
}

/// One message handed to a consumer. Settle it with [`ack`](Self::ack),
/// [`requeue`](Self::requeue) or [`dead_letter`](Self::dead_letter); dropping it unsettled
/// returns it to the queue, which counts against the delivery limit.
#[derive(Debug)]
pub struct InProcessDelivery {
    queue: Arc<Shared>,
    /// `None` once settled.
    message: Option<Message>,
}

impl InProcessDelivery {
    /// The message body (a `QueueMessage` as JSON, unless something else was published).
    pub fn data(&self) -> &[u8] {
        &self.message().body
    }

    /// How often this message came back before this delivery (RabbitMQ's `x-delivery-count`).
    pub fn delivery_count(&self) -> u32 {
        self.message().returns
    }

    /// Whether the message was delivered before.
    pub fn redelivered(&self) -> bool {
        self.delivery_count() > 0
    }

    /// Done with it: the message is gone.
    pub fn ack(mut self) {
        self.settle(Settlement::Ack);
    }

    /// Hands it back to the end of the queue for another attempt (a return: it counts).
    pub fn requeue(mut self) {
        self.settle(Settlement::Return);
    }

    /// Poison or failed for good: to the dead letters.
    pub fn dead_letter(mut self) {
        self.settle(Settlement::DeadLetter);
    }

    fn message(&self) -> &Message {
        self.message.as_ref().expect("only settling takes the message, and settling consumes the delivery")
    }

    fn settle(&mut self, settlement: Settlement) {
        if let Some(message) = self.message.take() {
            self.queue.settle(message, settlement);
        }
    }
}

impl Drop for InProcessDelivery {
    fn drop(&mut self) {
        self.settle(Settlement::Return);
    }
}

/// The most dead letters kept. Every job that fails for good leaves one, and a long-running
/// process has no operator draining them (their jobs are `failed` in the store anyway), so the
/// oldest go first.
const MAX_DEAD_LETTERS: usize = 10_000;

fn keep_dead_letter(dead: &mut Vec<DeadLetter>, letter: DeadLetter) {
    if dead.len() >= MAX_DEAD_LETTERS {
        dead.remove(0);
    }
    dead.push(letter);
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use super::*;

    /// Only a hang guard: every test below completes without waiting on time.
    const HANG_GUARD: Duration = Duration::from_secs(10);

    fn run(job_id: JobId) -> QueueMessage {
        QueueMessage::RunJobV1 { job_id }
    }

    fn job_of(delivery: &InProcessDelivery) -> JobId {
        match serde_json::from_slice(delivery.data()).expect("a queue message") {
            QueueMessage::RunJobV1 { job_id } => job_id,
        }
    }

    async fn next(queue: &InProcessQueue) -> InProcessDelivery {
        tokio::time::timeout(HANG_GUARD, queue.next()).await.expect("a message is ready")
    }

    #[tokio::test]
    async fn fresh_messages_come_out_in_publish_order() {
        let queue = InProcessQueue::default();
        let jobs: Vec<_> = (0..5).map(|_| JobId::new()).collect();
        for &job in &jobs {
            queue.publish(&run(job)).await.unwrap();
        }

        let mut received = Vec::new();
        for _ in &jobs {
            let delivery = next(&queue).await;
            assert!(!delivery.redelivered());
            received.push(job_of(&delivery));
            delivery.ack();
        }

        assert_eq!(received, jobs);
        assert!(queue.is_connected());
    }

    #[tokio::test]
    async fn the_body_is_the_publishers_json() {
        let queue = InProcessQueue::default();
        let job = JobId::new();
        queue.publish(&run(job)).await.unwrap();

        let delivery = next(&queue).await;

        assert_eq!(delivery.data(), serde_json::to_vec(&run(job)).unwrap());
    }

    #[tokio::test]
    async fn an_acked_message_is_gone() {
        let queue = InProcessQueue::default();
        queue.publish(&run(JobId::new())).await.unwrap();

        let delivery = next(&queue).await;
        assert_eq!((queue.ready_count(), queue.unsettled_count()), (0, 1));
        delivery.ack();

        assert_eq!((queue.ready_count(), queue.unsettled_count()), (0, 0));
        assert!(queue.try_next().is_none());
        assert!(queue.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_requeued_message_comes_back_behind_fresh_ones_with_its_count_rising() {
        let queue = InProcessQueue::default();
        let (first, second) = (JobId::new(), JobId::new());
        queue.publish(&run(first)).await.unwrap();
        queue.publish(&run(second)).await.unwrap();

        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (first, 0));
        delivery.requeue();

        let delivery = next(&queue).await;
        assert_eq!(job_of(&delivery), second);
        delivery.ack();

        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (first, 1));
        assert!(delivery.redelivered());
        delivery.requeue();

        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (first, 2));
        delivery.ack();
        assert_eq!((queue.ready_count(), queue.unsettled_count()), (0, 0));
    }

    #[tokio::test]
    async fn a_delivery_dropped_unsettled_is_redelivered() {
        let queue = InProcessQueue::default();
        let job = JobId::new();
        queue.publish(&run(job)).await.unwrap();

        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _delivery = queue.next().await;
                panic!("the job crashed its attempt");
            })
        };
        assert!(tokio::time::timeout(HANG_GUARD, consumer).await.unwrap().unwrap_err().is_panic());

        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (job, 1));
        assert_eq!(queue.unsettled_count(), 1);
    }

    #[tokio::test]
    async fn a_message_returned_more_often_than_the_limit_is_dead_lettered() {
        let limit = 3;
        let queue = InProcessQueue::new(limit);
        let job = JobId::new();
        queue.publish(&run(job)).await.unwrap();

        for expected_count in 0..limit {
            let delivery = next(&queue).await;
            assert_eq!(delivery.delivery_count(), expected_count);
            delivery.requeue();
        }
        // The last delivery the limit allows; dropping it counts as a return, like a crash.
        let delivery = next(&queue).await;
        assert_eq!(delivery.delivery_count(), limit);
        drop(delivery);

        assert!(queue.try_next().is_none());
        assert_eq!((queue.ready_count(), queue.unsettled_count()), (0, 0));
        let dead = queue.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].job_id, dead[0].reason), (Some(job), DeadLetterReason::DeliveryLimit));
        assert_eq!(dead[0].reason.as_str(), "delivery_limit");
        assert_eq!(dead[0].body, serde_json::to_vec(&run(job)).unwrap());
    }

    #[tokio::test]
    async fn a_zero_limit_dead_letters_on_the_first_return() {
        let queue = InProcessQueue::new(0);
        queue.publish(&run(JobId::new())).await.unwrap();

        next(&queue).await.requeue();

        assert!(queue.try_next().is_none());
        assert_eq!(queue.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn dead_letters_are_listed_in_place_and_requeued_by_job() {
        let queue = InProcessQueue::default();
        let (kept, revived) = (JobId::new(), JobId::new());
        for job in [kept, revived] {
            queue.publish(&run(job)).await.unwrap();
            next(&queue).await.dead_letter();
        }

        let dead = queue.dead_letters();
        assert_eq!(dead.iter().map(|letter| letter.job_id).collect::<Vec<_>>(), [Some(kept), Some(revived)]);
        assert!(dead.iter().all(|letter| letter.reason == DeadLetterReason::Rejected));
        assert_eq!(queue.dead_letters(), dead, "listing leaves them in place");
        assert!(queue.try_next().is_none());

        let requeued = queue.requeue_dead_letters(&DeadLetterSelection::Jobs(vec![revived, JobId::new()]));

        assert_eq!(requeued, [revived]);
        assert_eq!(queue.dead_letters().iter().map(|letter| letter.job_id).collect::<Vec<_>>(), [Some(kept)]);
        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (revived, 0));
        delivery.ack();
        assert!(queue.try_next().is_none());
    }

    #[tokio::test]
    async fn requeueing_all_dead_letters_skips_those_that_name_no_job() {
        let queue = InProcessQueue::new(0);
        let (rejected, poison) = (JobId::new(), JobId::new());
        queue.publish(&run(rejected)).await.unwrap();
        next(&queue).await.dead_letter();
        queue.publish(&run(poison)).await.unwrap();
        drop(next(&queue).await);
        queue.shared.make_ready(Message { body: b"not json".to_vec(), returns: 0 });
        next(&queue).await.dead_letter();

        let requeued = queue.requeue_dead_letters(&DeadLetterSelection::All);

        assert_eq!(requeued, [rejected, poison]);
        let left = queue.dead_letters();
        assert_eq!(left.len(), 1);
        assert_eq!((left[0].job_id, left[0].body.as_slice()), (None, b"not json".as_slice()));
        for job in [rejected, poison] {
            let delivery = next(&queue).await;
            assert_eq!((job_of(&delivery), delivery.delivery_count()), (job, 0));
            delivery.ack();
        }
    }

    #[tokio::test]
    async fn a_dead_letter_stays_until_its_job_is_requeued() {
        let queue = InProcessQueue::default();
        let (job, other) = (JobId::new(), JobId::new());
        for job in [job, other] {
            queue.publish(&run(job)).await.unwrap();
            next(&queue).await.dead_letter();
        }
        let before = queue.dead_letters();

        // The caller looks the letters up, then fails to reopen the job in its store: the
        // letters are all still there and nothing was published.
        assert_eq!(queue.selected_dead_letters(&DeadLetterSelection::Jobs(vec![job])), [job]);
        assert_eq!(queue.selected_dead_letters(&DeadLetterSelection::All), [job, other]);
        assert_eq!(queue.dead_letters(), before);
        assert!(queue.try_next().is_none());

        // Reopened this time: the letter leaves as the fresh message goes in.
        assert!(queue.requeue_dead_letter(job));
        assert_eq!(queue.dead_letters().iter().map(|letter| letter.job_id).collect::<Vec<_>>(), [Some(other)]);
        let delivery = next(&queue).await;
        assert_eq!((job_of(&delivery), delivery.delivery_count()), (job, 0));
        delivery.ack();
        assert!(!queue.requeue_dead_letter(job), "its one letter is gone");
        assert!(queue.try_next().is_none());
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_when_a_message_is_published() {
        let queue = InProcessQueue::default();
        let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
        let consumer = {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut next = std::pin::pin!(queue.next());
                // Poll once so the consumer is parked on an empty queue before anything is
                // published, then report that it is.
                assert!(futures::poll!(next.as_mut()).is_pending());
                waiting_tx.send(()).unwrap();
                let delivery = next.await;
                let job = job_of(&delivery);
                delivery.ack();
                job
            })
        };
        waiting_rx.await.unwrap();
        let job = JobId::new();
        queue.publish(&run(job)).await.unwrap();

        assert_eq!(tokio::time::timeout(HANG_GUARD, consumer).await.unwrap().unwrap(), job);
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_for_a_returned_message() {
        let queue = InProcessQueue::default();
        queue.publish(&run(JobId::new())).await.unwrap();
        let held = next(&queue).await;
        let mut waiting = std::pin::pin!(queue.next());
        assert!(futures::poll!(waiting.as_mut()).is_pending());

        held.requeue();

        let delivery = tokio::time::timeout(HANG_GUARD, waiting).await.unwrap();
        assert_eq!(delivery.delivery_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_consumers_each_get_distinct_messages() {
        const MESSAGES: usize = 200;
        const CONSUMERS: usize = 4;
        let queue = InProcessQueue::default();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut jobs = Vec::new();
                    loop {
                        let delivery = queue.next().await;
                        if delivery.data() == b"stop" {
                            delivery.ack();
                            return jobs;
                        }
                        jobs.push(job_of(&delivery));
                        delivery.ack();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let published: HashSet<_> = (0..MESSAGES).map(|_| JobId::new()).collect();
        for &job in &published {
            queue.publish(&run(job)).await.unwrap();
        }
        for _ in 0..CONSUMERS {
            queue.shared.make_ready(Message { body: b"stop".to_vec(), returns: 0 });
        }

        let mut received = Vec::new();
        for consumer in consumers {
            received.extend(tokio::time::timeout(HANG_GUARD, consumer).await.unwrap().unwrap());
        }

        assert_eq!(received.len(), MESSAGES, "each message delivered exactly once");
        assert_eq!(received.into_iter().collect::<HashSet<_>>(), published);
        assert_eq!((queue.ready_count(), queue.unsettled_count()), (0, 0));
    }
}
