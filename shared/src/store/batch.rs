//! Group commit for one small write that many tasks make at once.
//!
//! Every job's publish confirmation is an `UPDATE` of its own row; under a burst of accepted jobs
//! those arrive together, and each would be a commit (a WAL flush) queueing behind the others.
//! A [`Batch`] turns them into one write per round: the first submission is written at once, and
//! the ones that arrive while it runs are written together by the next round. Alone, a
//! submission costs what it did; under load, a round's commit serves all of it. Each submitter
//! still waits for its own write and learns whether it failed.
//!
//! [`Keyed`] does the same per key, each item with its own outcome: one user's submissions,
//! which all take that user's quota lock and so would otherwise commit one after another, and a
//! worker's reply finishes.
//! [`Keyed::ask`] uses the same rounds for point reads that every request makes (its session,
//! its job) and for a worker's claims and its replies' contexts: under a burst, one statement
//! answers a round of them instead of one each.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
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

/// Group commit per key, each item answered with its own outcome.
///
/// A key's first item is written at once, by a round task spawned for the key; the items for
/// that key submitted while a round runs make up its next round (at most [`MAX_ROUND`]), until
/// none are left and the task ends. Keys never wait for each other. Cheap to clone.
pub struct Keyed<K, T, R> {
    queues: Arc<Queues<K, T, R>>,
}

type Waiting<T, R> = (T, oneshot::Sender<StoreResult<R>>);
/// Each key with a round task, and its items waiting for that task's next round.
type Queues<K, T, R> = Mutex<HashMap<K, Vec<Waiting<T, R>>>>;

impl<K, T, R> Clone for Keyed<K, T, R> {
    fn clone(&self) -> Self {
        Self { queues: self.queues.clone() }
    }
}

impl<K, T, R> Default for Keyed<K, T, R> {
    fn default() -> Self {
        Self { queues: Arc::default() }
    }
}

impl<K, T, R> std::fmt::Debug for Keyed<K, T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.queues.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Keyed").field("keys_with_rounds", &keys).finish()
    }
}

impl<K, T, R> Keyed<K, T, R>
where
    K: Eq + Hash + Clone + Send + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    /// Writes `item` in a round of `key`'s, and answers its own outcome. `write` writes one
    /// round (the key and its items in submission order) and answers one outcome per item, in
    /// that order; it is used only if this submission starts the key's round task.
    pub async fn submit<W, F>(&self, key: K, item: T, write: W) -> StoreResult<R>
    where
        W: Fn(K, Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<StoreResult<R>>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let starts_rounds = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            match queues.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(mut waiting) => {
                    waiting.get_mut().push((item, answer));
                    false
                }
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    vacant.insert(vec![(item, answer)]);
                    true
                }
            }
        };
        if starts_rounds {
            tokio::spawn(self.clone().rounds(key, write));
        }
        answered.await.unwrap_or_else(|_| Err(sqlx::Error::Protocol("the round writing it stopped".into())))
    }

    /// Asks for `item` in a round of `key`'s, where one statement answers the whole round (one
    /// answer per item, in order) or fails it as a whole: point reads that every request makes,
    /// and claims. A round starts after each of its items was asked for, so every answer sees
    /// all that was committed before its ask: batching this way saves round-trips and never
    /// serves a stale answer (a session revoked a moment ago is refused).
    pub async fn ask<W, F>(&self, key: K, item: T, answer: W) -> StoreResult<R>
    where
        W: Fn(K, Vec<T>) -> F + Send + 'static,
        F: Future<Output = StoreResult<Vec<R>>> + Send + 'static,
    {
        self.submit(key, item, move |key, items| {
            let count = items.len();
            let answered = answer(key, items);
            async move {
                match answered.await {
                    Ok(answers) if answers.len() == count => answers.into_iter().map(Ok).collect(),
                    Ok(answers) => failed_round(
                        sqlx::Error::Protocol(format!("a round of {count} asks gave {} answers", answers.len())),
                        count,
                    ),
                    Err(error) => failed_round(error, count),
                }
            }
        })
        .await
    }

    /// Writes `key`'s rounds until its queue is empty. The key's entry is removed under the same
    /// lock that finds it empty, so a later submission starts a new task. If a round panics, the
    /// entry goes too rather than block the key: its submitters, and those queued behind it,
    /// learn that the round writing theirs stopped (nothing of the queued ones was written).
    async fn rounds<W, F>(self, key: K, write: W)
    where
        W: Fn(K, Vec<T>) -> F,
        F: Future<Output = Vec<StoreResult<R>>>,
    {
        struct Unblock<'a, K: Eq + Hash, T, R> {
            queues: &'a Queues<K, T, R>,
            key: Option<K>,
        }
        impl<K: Eq + Hash, T, R> Drop for Unblock<'_, K, T, R> {
            fn drop(&mut self) {
                if let Some(key) = self.key.take() {
                    self.queues.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                }
            }
        }
        let mut unblock = Unblock { queues: &self.queues, key: Some(key.clone()) };
        loop {
            let round: Vec<Waiting<T, R>> = {
                let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                let waiting = queues.get_mut(&key).expect("a key's entry lives as long as its round task");
                if waiting.is_empty() {
                    queues.remove(&key);
                    unblock.key = None;
                    return;
                }
                let take = waiting.len().min(MAX_ROUND);
                waiting.drain(..take).collect()
            };
            let (items, answers): (Vec<T>, Vec<_>) = round.into_iter().unzip();
            let expected = answers.len();
            let outcomes = write(key.clone(), items).await;
            debug_assert_eq!(outcomes.len(), expected, "one outcome per item");
            let mut outcomes = outcomes.into_iter();
            for answer in answers {
                let outcome = outcomes
                    .next()
                    .unwrap_or_else(|| Err(sqlx::Error::Protocol("the round gave no outcome for this item".into())));
                // A submitter that stopped waiting (its request was dropped) needs no answer.
                let _ = answer.send(outcome);
            }
        }
    }
}

/// Writes `round` with one call of `write` (one statement, one answer per item in order). If
/// that call fails and `each_alone_after` says so, it wrote nothing, and each item is written
/// again alone, in order, so that the failure is answered to the item it concerns; any other
/// failure fails the round as a whole. A round of one is written alone at once.
pub async fn write_or_each_alone<'a, T, R, F, Fut>(
    round: &'a [T],
    write: F,
    each_alone_after: impl Fn(&sqlx::Error) -> bool,
) -> Vec<StoreResult<R>>
where
    F: Fn(&'a [T]) -> Fut,
    Fut: Future<Output = StoreResult<Vec<R>>>,
{
    let alone = async |item: &'a T| {
        write(std::slice::from_ref(item))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| sqlx::Error::Protocol("an item's statement answered nothing".into()))
    };
    if let [item] = round {
        return vec![alone(item).await];
    }
    match write(round).await {
        Ok(outcomes) if outcomes.len() == round.len() => outcomes.into_iter().map(Ok).collect(),
        Ok(outcomes) => {
            let error = format!("a round of {} items gave {} answers", round.len(), outcomes.len());
            failed_round(sqlx::Error::Protocol(error), round.len())
        }
        Err(error) if each_alone_after(&error) => {
            tracing::warn!(%error, items = round.len(), "a round's statement was refused; writing each item alone");
            let mut outcomes = Vec::with_capacity(round.len());
            for item in round {
                outcomes.push(alone(item).await);
            }
            outcomes
        }
        Err(error) => failed_round(error, round.len()),
    }
}

/// A round's answers in the order of its asks: each answer comes with its ask's position (counted
/// from 1, as `with ordinality` counts); an ask the statement gave no row gets `None`.
pub fn by_position<R>(asks: usize, answers: impl IntoIterator<Item = (i64, R)>) -> Result<Vec<Option<R>>, sqlx::Error> {
    let mut ordered: Vec<Option<R>> = std::iter::repeat_with(|| None).take(asks).collect();
    for (position, answer) in answers {
        let slot = usize::try_from(position - 1).ok().and_then(|index| ordered.get_mut(index));
        let Some(slot) = slot else {
            return Err(sqlx::Error::Protocol(format!("a round of {asks} asks was answered at position {position}")));
        };
        *slot = Some(answer);
    }
    Ok(ordered)
}

/// One outcome per item for a round that failed as a whole: the error itself for the first,
/// its text (`sqlx::Error::Protocol`, which callers treat as transient) for the rest.
pub fn failed_round<R>(error: sqlx::Error, items: usize) -> Vec<StoreResult<R>> {
    let text = error.to_string();
    std::iter::once(Err(error))
        .chain(std::iter::repeat_with(|| Err(sqlx::Error::Protocol(text.clone()))))
        .take(items)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

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

    /// The rounds a keyed writer saw: each key and its items.
    type KeyedRounds = Arc<Mutex<Vec<(char, Vec<u32>)>>>;
    type KeyedRound = Pin<Box<dyn Future<Output = Vec<StoreResult<u32>>> + Send>>;

    /// A keyed writer that records its rounds (key, items), answers each item with ten times
    /// its value, and panics on a round that holds `poison`.
    fn keyed_recording(rounds: KeyedRounds, poison: u32) -> impl Fn(char, Vec<u32>) -> KeyedRound + Send + 'static {
        move |key, items| {
            let rounds = rounds.clone();
            Box::pin(async move {
                tokio::task::yield_now().await;
                assert!(!items.contains(&poison), "poisoned round");
                rounds.lock().unwrap().push((key, items.clone()));
                items.into_iter().map(|item| Ok(item * 10)).collect()
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keyed_rounds_hold_one_key_each_and_answer_every_item_its_own_outcome() {
        let keyed = Keyed::default();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let submissions = (0..300u32).map(|item| {
            let (keyed, rounds) = (keyed.clone(), rounds.clone());
            let key = if item % 3 == 0 { 'a' } else { 'b' };
            tokio::spawn(async move { (key, item, keyed.submit(key, item, keyed_recording(rounds, u32::MAX)).await) })
        });
        for submitted in futures::future::join_all(submissions).await {
            let (_, item, outcome) = submitted.unwrap();
            assert_eq!(outcome.expect("written"), item * 10, "each submitter gets its own item's outcome");
        }
        let rounds = rounds.lock().unwrap();
        for (key, items) in rounds.iter() {
            assert!(items.iter().all(|item| (item % 3 == 0) == (*key == 'a')), "a round holds one key's items");
            assert!(items.len() <= MAX_ROUND);
        }
        let mut written: Vec<u32> = rounds.iter().flat_map(|(_, items)| items.iter().copied()).collect();
        written.sort_unstable();
        assert_eq!(written, (0..300).collect::<Vec<_>>(), "each item once");
        assert!(rounds.len() < 300, "rounds were shared: {} for 300 items", rounds.len());
        assert!(keyed.queues.lock().unwrap().is_empty(), "no key is left behind once its rounds end");
    }

    #[tokio::test]
    async fn a_round_that_panics_fails_its_submitters_and_frees_its_key() {
        let keyed = Keyed::default();
        let rounds = Arc::new(Mutex::new(Vec::new()));
        let error = keyed.submit('a', 7, keyed_recording(rounds.clone(), 7)).await.expect_err("the round stopped");
        assert!(error.to_string().contains("stopped"), "{error}");
        assert_eq!(keyed.submit('a', 8, keyed_recording(rounds.clone(), 7)).await.unwrap(), 80);
        assert_eq!(*rounds.lock().unwrap(), vec![('a', vec![8])]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn asks_are_answered_by_round_and_a_round_that_fails_or_miscounts_fails_each_ask() {
        let keyed: Keyed<(), u32, u32> = Keyed::default();
        let rounds = Arc::new(AtomicUsize::new(0));
        // Doubles each item; a round holding 0 fails whole, one holding 1 answers one too few.
        let answer = move |rounds: Arc<AtomicUsize>| {
            move |(), items: Vec<u32>| {
                let rounds = rounds.clone();
                async move {
                    tokio::task::yield_now().await;
                    rounds.fetch_add(1, Ordering::Relaxed);
                    if items.contains(&0) {
                        return Err(sqlx::Error::PoolTimedOut);
                    }
                    let skip = usize::from(items.contains(&1));
                    Ok(items.iter().skip(skip).map(|item| item * 2).collect())
                }
            }
        };
        let asks = (2..202u32).map(|item| {
            let (keyed, answer) = (keyed.clone(), answer(rounds.clone()));
            tokio::spawn(async move { (item, keyed.ask((), item, answer).await) })
        });
        for asked in futures::future::join_all(asks).await {
            let (item, answered) = asked.unwrap();
            assert_eq!(answered.expect("answered"), item * 2, "each ask gets its own item's answer");
        }
        let shared = rounds.load(Ordering::Relaxed);
        assert!(shared < 200, "rounds were shared: {shared} for 200 asks");

        let failed = keyed.ask((), 0, answer(rounds.clone())).await.expect_err("the round failed");
        assert!(matches!(failed, sqlx::Error::PoolTimedOut), "{failed}");
        let miscounted = keyed.ask((), 1, answer(rounds.clone())).await.expect_err("no answer for this ask");
        assert!(crate::store::is_transient(&miscounted), "{miscounted}");
        assert_eq!(keyed.ask((), 3, answer(rounds)).await.unwrap(), 6, "later rounds go on");
    }

    #[test]
    fn a_failed_round_fails_every_item_as_transient_beyond_the_first() {
        let outcomes = failed_round::<()>(sqlx::Error::PoolTimedOut, 3);
        assert_eq!(outcomes.len(), 3);
        assert!(matches!(outcomes[0], Err(sqlx::Error::PoolTimedOut)));
        assert!(outcomes[1..].iter().all(|outcome| matches!(outcome, Err(error) if crate::store::is_transient(error))));
    }
}
