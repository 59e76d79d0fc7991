//! Group commit for one small write that many tasks make at once.
//!
//! Every job's publish confirmation is an `UPDATE` of its own row; under a burst of accepted jobs
//! those arrive together, and each would be a commit (a WAL flush) queueing behind the others.
//! A [`Batch`] turns them into one write per round: the first submission is written at once, and
//! the ones that arrive while it runs are written together by the next round. Alone, a
//! submission costs what it did; under load, a round's commit serves all of it. Each submitter
//! still waits for its own write and learns whether it failed.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
};

use tokio::sync::{mpsc, oneshot};

use super::StoreResult;

/// Most items one round writes (the rest wait for the next round).
const MAX_ROUND: usize = 500;
/// Submissions waiting for a round; beyond this, submitters wait for room (each submitter holds
/// one, so this bounds nothing in practice but memory under a pathological burst).
const QUEUE: usize = 4096;

/// What a round writes: every item submitted since the previous round began.
pub type Write<T> = Box<dyn FnMut(Vec<T>) -> Pin<Box<dyn Future<Output = StoreResult<()>> + Send>> + Send>;

type Submission<T> = (T, oneshot::Sender<Result<(), String>>);

/// A write batched across concurrent submitters. Cheap to clone (clones share the batch). Its
/// writer task starts with the first submission (inside the runtime that uses it) and ends when
/// the last clone is dropped.
pub struct Batch<T> {
    queue: Arc<OnceLock<mpsc::Sender<Submission<T>>>>,
}

impl<T> Clone for Batch<T> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self { queue: Arc::new(OnceLock::new()) }
    }
}

impl<T> std::fmt::Debug for Batch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("started", &self.queue.get().is_some()).finish()
    }
}

impl<T: Send + 'static> Batch<T> {
    /// Writes `item` with whatever else is submitted meanwhile; `writer` makes the round's write
    /// (asked once, when the batch starts). A failed round fails each of its submitters with the
    /// round's error, as text (`sqlx::Error::Protocol`).
    pub async fn submit(&self, item: T, writer: impl FnOnce() -> Write<T>) -> StoreResult<()> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(run(receiver, writer()));
            sender
        });
        let (reply, written) = oneshot::channel();
        let stopped = || sqlx::Error::Protocol("the batch writer stopped".into());
        queue.send((item, reply)).await.map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?.map_err(sqlx::Error::Protocol)
    }
}

async fn run<T>(mut receiver: mpsc::Receiver<Submission<T>>, mut write: Write<T>) {
    let mut round = Vec::new();
    while receiver.recv_many(&mut round, MAX_ROUND).await > 0 {
        let (items, replies): (Vec<T>, Vec<_>) = round.drain(..).unzip();
        let result = write(items).await.map_err(|error| error.to_string());
        for reply in replies {
            // A submitter that stopped waiting (its request was dropped) needs no answer.
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A writer that records its rounds and holds each for a moment (a commit's duration), failing
    /// the rounds that hold `poison`.
    fn recording(rounds: Arc<Mutex<Vec<Vec<u32>>>>, poison: u32) -> impl FnOnce() -> Write<u32> {
        move || {
            Box::new(move |items: Vec<u32>| {
                let rounds = rounds.clone();
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    let failed = items.contains(&poison);
                    rounds.lock().unwrap().push(items);
                    if failed { Err(sqlx::Error::Protocol("poisoned round".into())) } else { Ok(()) }
                })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_written_once_each_in_fewer_rounds() {
        let batch = Batch::default();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let submissions = (0..200u32).map(|item| {
            let (batch, rounds) = (batch.clone(), rounds.clone());
            tokio::spawn(async move { batch.submit(item, recording(rounds, u32::MAX)).await })
        });
        for submitted in futures::future::join_all(submissions).await {
            submitted.unwrap().expect("every submission is written");
        }
        let rounds = rounds.lock().unwrap();
        let mut written: Vec<u32> = rounds.iter().flatten().copied().collect();
        written.sort_unstable();
        assert_eq!(written, (0..200).collect::<Vec<_>>(), "each item once");
        assert!(rounds.len() < 200, "rounds were shared: {} for 200 items", rounds.len());
        assert!(rounds.iter().all(|round| round.len() <= MAX_ROUND));
    }

    #[tokio::test]
    async fn a_failed_round_fails_each_of_its_submitters_and_the_next_round_goes_on() {
        let batch = Batch::default();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let error = batch.submit(7, recording(rounds.clone(), 7)).await.expect_err("the round failed");
        assert!(error.to_string().contains("poisoned round"), "{error}");
        batch.submit(8, recording(rounds.clone(), 7)).await.expect("a later round is written");
        assert_eq!(*rounds.lock().unwrap(), vec![vec![7], vec![8]]);
    }
}
