//! The one writer thread of the server, and group commit for `--sync`.
//!
//! HTTP handlers run on the async runtime and must not block it on sled, so every tracking op
//! goes through a channel to one writer thread, which applies ops in arrival order and answers
//! each request: alone, an op is one plain `Store::apply`; when requests queue up (load), all
//! those waiting go into one `Store::apply_batch`, one sled batch instead of a write per op.
//!
//! With `sync`, an applied op is not answered yet: the writer hands its reply to the flusher
//! thread, which takes every reply waiting, calls one `flush`, and then answers them all. While
//! it flushes, the writer goes on applying the next requests, so many requests share one flush
//! (group commit) and a request is acknowledged only once its data is on disk.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{mpsc, oneshot};

use super::Metrics;
use super::erase::StoreSlot;
use crate::error::Error;
use crate::op::{AliasOutcome, Op, Outcome};
use crate::store::Store;

/// What a request gets back: the outcome and the op's cost in bytes (what it wrote, see
/// [`Store::apply_batch_costed`]), or the error that kept the op out of the store.
pub(crate) type Reply = oneshot::Sender<Result<(Outcome, u64), Failed>>;

/// Why an op was not applied.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The server is stopping and takes no more ops.
    ShuttingDown,
    /// The store failed (the message says how); nothing of the op is acknowledged.
    Store(String),
    /// Writing failed at the storage layer, partway: the op may or may not be on disk (a redo
    /// record that reached it is finished at the next open). Such a request is never answered
    /// with an error, which would be a lie if it is applied later: it is not answered at all.
    Unknown,
}

enum Msg {
    Apply(Op, Reply),
    /// Compact the store now (`erase.rs`); the answer says whether it worked.
    Erase(oneshot::Sender<bool>),
    Stop,
}

/// Most ops the writer takes from the channel at once (one sled batch; larger sled batches get
/// slower per key and use more memory while they run).
const GROUP: usize = 256;

#[derive(Default)]
struct Pending {
    replies: Vec<(Reply, (Outcome, u64))>,
    stop: bool,
}

/// Sends ops to the writer thread; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

/// The writer (and, with `sync`, the flusher) thread, to stop at shutdown.
pub(crate) struct Threads {
    tx: mpsc::Sender<Msg>,
    threads: Vec<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(
        slot: Arc<StoreSlot>,
        metrics: Arc<Metrics>,
        sync: bool,
    ) -> (Writer, Threads) {
        let (tx, mut rx) = mpsc::channel::<Msg>(65_536);
        let pending = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let mut threads = Vec::new();
        if sync {
            let (store, pending, metrics) = (slot.clone(), pending.clone(), metrics.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("idgraph-flush".into())
                    .spawn(move || flusher(&store, &pending, &metrics))
                    .expect("spawn the flusher thread"),
            );
        }
        threads.push(
            std::thread::Builder::new()
                .name("idgraph-writer".into())
                .spawn(move || {
                    let mut group = Vec::with_capacity(GROUP);
                    let mut stop = false;
                    while !stop {
                        let Some(first) = rx.blocking_recv() else {
                            break;
                        };
                        let mut msgs = vec![first];
                        while msgs.len() < GROUP {
                            match rx.try_recv() {
                                Ok(m) => msgs.push(m),
                                Err(_) => break,
                            }
                        }
                        let mut ops = Vec::with_capacity(msgs.len());
                        let mut replies = Vec::with_capacity(msgs.len());
                        let mut erases = Vec::new();
                        for m in msgs {
                            match m {
                                Msg::Stop => stop = true,
                                Msg::Apply(op, reply) => {
                                    ops.push(op);
                                    replies.push(reply);
                                }
                                Msg::Erase(done) => erases.push(done),
                            }
                        }
                        let results = match slot.get() {
                            Ok(store) => apply_group(&store, ops),
                            Err(e) => ops
                                .iter()
                                .map(|_| Err(Error::Internal(e.to_string())))
                                .collect(),
                        };
                        for (reply, result) in replies.into_iter().zip(results) {
                            match result {
                                Ok(outcome) => {
                                    metrics.applied(&outcome.0);
                                    if sync {
                                        group.push((reply, outcome));
                                    } else {
                                        let _ = reply.send(Ok(outcome));
                                    }
                                }
                                Err(e) if metrics.store_failed(&e) => {
                                    let _ = reply.send(Err(Failed::Unknown));
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(Failed::Store(e.to_string())));
                                }
                            }
                        }
                        if !group.is_empty() {
                            let (lock, cv) = &*pending;
                            lock.lock().replies.append(&mut group);
                            cv.notify_one();
                        }
                        if !erases.is_empty() {
                            let ok = erase_now(&slot, &metrics);
                            for done in erases {
                                let _ = done.send(ok);
                            }
                        }
                    }
                    let (lock, cv) = &*pending;
                    lock.lock().stop = true;
                    cv.notify_one();
                })
                .expect("spawn the writer thread"),
        );
        (Writer { tx: tx.clone() }, Threads { tx, threads })
    }

    /// Asks the writer to compact the store now (`erase.rs`); whether it worked.
    pub(crate) async fn erase(&self) -> Result<bool, Failed> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Msg::Erase(done))
            .await
            .map_err(|_| Failed::ShuttingDown)?;
        answer.await.map_err(|_| Failed::ShuttingDown)
    }

    /// Queues `op`; the answer comes once it is applied (and, with `sync`, flushed).
    pub(crate) async fn apply(&self, op: Op) -> Result<(Outcome, u64), Failed> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Apply(op, reply))
            .await
            .map_err(|_| Failed::ShuttingDown)?;
        answer.await.map_err(|_| Failed::ShuttingDown)?
    }
}

impl Threads {
    /// Applies (and, with `sync`, flushes) everything queued before, then stops the threads.
    /// Ops queued later are answered [`Failed::ShuttingDown`].
    pub(crate) async fn stop(self) {
        let _ = self.tx.send(Msg::Stop).await;
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Applies the ops queued together: one op with a plain `apply` (one sled key for the common
/// ops), several as one `apply_batch` (one sled batch instead of one write, or read-and-batch,
/// per op). A batch is all or nothing, so when it fails the ops are retried one by one and only
/// the failing ones fail.
fn apply_group(store: &Store, ops: Vec<Op>) -> Vec<crate::Result<(Outcome, u64)>> {
    if ops.len() > 1
        && let Ok(outcomes) = store.apply_batch_costed(&ops)
    {
        return outcomes.into_iter().map(Ok).collect();
    }
    ops.iter()
        .map(|op| {
            let mut v = store.apply_batch_costed(std::slice::from_ref(op))?;
            Ok(v.pop().expect("one outcome per op"))
        })
        .collect()
}

/// One erasure by the writer thread, counted; a failure leaves the erasure due.
fn erase_now(slot: &StoreSlot, metrics: &Metrics) -> bool {
    let due = metrics.erase_due.lock().take();
    let started = std::time::Instant::now();
    match super::erase::erase(slot) {
        Ok(_) => {
            metrics
                .erasures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *metrics.last_erasure_ms.lock() = started.elapsed().as_millis() as u64;
            true
        }
        Err(e) => {
            eprintln!("idgraph: erasure (compaction) failed: {e}");
            if slot.get().is_err() {
                // The store could not be reopened: failing, as after a write error.
                metrics
                    .failed
                    .lock()
                    .get_or_insert_with(|| format!("reopening after an erasure: {e}"));
            }
            if let Some(t) = due {
                metrics.erase_due.lock().get_or_insert(t);
            }
            false
        }
    }
}

fn flusher(slot: &StoreSlot, pending: &(Mutex<Pending>, Condvar), metrics: &Metrics) {
    let (lock, cv) = pending;
    loop {
        let replies = {
            let mut p = lock.lock();
            while p.replies.is_empty() && !p.stop {
                cv.wait(&mut p);
            }
            if p.replies.is_empty() {
                return;
            }
            std::mem::take(&mut p.replies)
        };
        let flushed = slot.get().and_then(|s| s.flush());
        metrics
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match flushed {
            Ok(_) => {
                for (reply, outcome) in replies {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                // Applied, not known to be durable: not acknowledged, and not refused either.
                metrics.store_failed(&e);
                for (reply, _) in replies {
                    let _ = reply.send(Err(Failed::Unknown));
                }
            }
        }
    }
}

impl Metrics {
    fn applied(&self, outcome: &Outcome) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ops_applied.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Alias(AliasOutcome::Refused(crate::op::RefusalReason::Suppressed))
            | Outcome::Suppressed => {
                self.suppressed.fetch_add(1, Relaxed);
            }
            Outcome::Alias(AliasOutcome::Refused(_)) => {
                self.merges_refused.fetch_add(1, Relaxed);
            }
            Outcome::Alias(AliasOutcome::Joined { .. }) => {
                self.merges.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }
}

impl Metrics {
    /// Records a write error of the storage layer (not a refused input): from now on the
    /// server says it is failing (`/healthz` 503) and refuses writes at once. Returns whether
    /// `e` was one.
    pub(crate) fn store_failed(&self, e: &crate::Error) -> bool {
        use crate::Error as E;
        if !matches!(
            e,
            E::Storage(_) | E::Interrupted(_) | E::Io { .. } | E::Corrupt(_) | E::Full(_)
        ) {
            return false;
        }
        self.write_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.failed.lock().get_or_insert_with(|| e.to_string());
        true
    }
}
