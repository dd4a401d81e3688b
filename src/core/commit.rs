//! The sequencer: the store's one writer, and where the ordering and
//! durability invariants are enforced.
//!
//! Every write is a *job* run on one dedicated thread, in arrival order:
//!
//! 1. the job reads what it needs, checks its rules, assigns ids from the
//!    counters owned here, and fills a batch, durable with its group or
//!    not at all (one log record; sled gets it a key at a time after);
//! 2. jobs arriving while the previous flush ran are taken together
//!    (group commit), up to `MAX_BATCH`;
//! 3. the group's writes become one record of the write-ahead log,
//!    written and `fdatasync`ed by this thread (`Store::commit`): no other
//!    thread is involved, and sled is not flushed (a background
//!    checkpoint does that, off this path);
//! 4. only then is `visible` raised to the newest message id, `durable`
//!    to the number of jobs begun, the jobs' events are published to the
//!    hub and their callers answered — in id order.
//!
//! The audit trail's `seq` and last hash are counters here too
//! (`Tx::audit`): a job's records join its group's, which the group's
//! log record carries as one block (one sled write for the group), and a
//! job that fails gives back the seqs it took and its records, so the
//! trail has no gaps.
//!
//! Consequences: ids are assigned in commit order and never reused (the
//! counters resume from the log's last key after the write-ahead log is
//! replayed, and no id is seen before it is on disk); readers bound every scan by `visible`, so no reader can see id
//! N+1 and later discover N; nothing is acknowledged before its batch is
//! durable. Reads of anything else (rooms, users, markers) see only what
//! is durable too: a job's writes are staged where only this thread reads
//! them, and reach sled, which everyone else reads, after the group's
//! record is synced (`store::Store::stage`, `Store::commit`). A failed
//! fsync cannot be retried safely, so it stops the process (systemd
//! restarts it; what was acknowledged is on disk).
//!
//! A full disk is not a failure: the store refuses a group's record before
//! writing any of it (`store::space`). Then the whole group is undone —
//! its staged writes dropped, the id counters put back, so ids stay
//! gapless — and every job in it is answered `UNAVAILABLE` (its answer may
//! rest on an earlier job of the group), nothing published.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::audit::{Entry, Head};
use super::hub::{Event, Hub};
use super::metrics::Metrics;
use crate::error::{Error, Kind, Result};
use crate::model::{MsgId, RoomId, UserId};
use crate::store::{CommitError, Sealed, Store, WriteBatch};

/// Jobs taken into one commit at most. One batch is published at once, so
/// a connection's queue must hold several (see `Core::open`).
pub const MAX_BATCH: usize = 1024;
const QUEUE: usize = 4096;

/// Finishes a job once its group is durable: publishes and answers — or,
/// given the error its group was refused with, answers that instead.
type Done = Box<dyn FnOnce(&Hub, Option<&Error>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx) -> Done + Send>;

/// What a job sees: the store to read, a batch to fill, and id allocation.
pub struct Tx<'a> {
    pub store: &'a Store,
    pub batch: WriteBatch,
    ids: &'a mut Counters,
    /// The group's audit records so far (`Tx::audit`).
    sealed: &'a mut Vec<(u64, Sealed)>,
    /// The commit time of this job, Unix ms; never decreases.
    pub now_ms: u64,
}

impl Tx<'_> {
    pub fn next_user_id(&mut self) -> UserId {
        self.ids.user += 1;
        UserId(self.ids.user)
    }
    pub fn next_room_id(&mut self) -> RoomId {
        self.ids.room += 1;
        RoomId(self.ids.room)
    }
    pub fn next_msg_id(&mut self) -> MsgId {
        self.ids.msg += 1;
        MsgId(self.ids.msg)
    }

    /// Appends an audit record at this job's time, to the group's: it is
    /// durable with the job's writes (the group's log record holds both),
    /// or not at all.
    pub fn audit(&mut self, entry: Entry) -> Result<()> {
        let actor = entry.actor().resolve(self.store)?;
        let (head, record) = self.ids.audit.seal(self.now_ms, actor, entry);
        self.sealed.push((head.seq, record));
        self.ids.audit = head;
        Ok(())
    }
}

#[derive(Clone)]
struct Counters {
    user: u64,
    room: u64,
    msg: u64,
    last_ms: u64,
    /// The audit trail's newest record.
    audit: Head,
}

/// A snapshot of the group-commit figures (from `Metrics`).
#[derive(Default, Debug, Clone)]
pub struct CommitStats {
    pub batches: u64,
    pub jobs: u64,
    pub max_batch: u64,
    pub sync_micros_total: u64,
    pub sync_micros_max: u64,
}

pub struct Committer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    visible: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Committer {
    pub fn start(
        store: Arc<Store>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Committer> {
        let s = store.summary().map_err(|e| std::io::Error::other(e.0))?;
        let visible = Arc::new(AtomicU64::new(s.last_msg));
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit = Head::resume(s.last_audit);
        let counters = Counters {
            user: s.last_user,
            room: s.last_room,
            msg: s.last_msg,
            // Resumed so commit times never go back, even if the clock did.
            last_ms: s.last_msg_ms.max(audit.at_ms),
            audit,
        };
        let thread = std::thread::Builder::new()
            .name("parlor-commit".into())
            .spawn({
                let visible = visible.clone();
                let metrics = metrics.clone();
                move || writer_loop(rx, store, hub, counters, visible, metrics)
            })?;
        Ok(Committer {
            tx: Mutex::new(Some(tx)),
            visible,
            metrics,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The newest message id that is durable and published. Every read of
    /// messages is bounded by it.
    pub fn visible(&self) -> MsgId {
        MsgId(self.visible.load(Ordering::Acquire))
    }

    pub fn stats(&self) -> CommitStats {
        let m = &self.metrics;
        CommitStats {
            batches: m.commit_sync_us.count(),
            jobs: m.commit_batch.sum(),
            max_batch: m.commit_batch.max(),
            sync_micros_total: m.commit_sync_us.sum(),
            sync_micros_max: m.commit_sync_us.max(),
        }
    }

    /// Queues a job; the returned receiver answers once it is durable.
    /// Jobs run in the order this is called, so a connection that submits
    /// without awaiting the answer still has its writes ordered.
    pub async fn submit<T, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx) -> Result<(T, Vec<Event>)> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.sender()?
            .send(job)
            .await
            .map_err(|_| shutting_down())?;
        Ok(rx)
    }

    /// Runs a job and waits until it is durable, from a thread that may
    /// block (never the async executor's).
    pub fn run_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx) -> Result<(T, Vec<Event>)> + Send + 'static,
    {
        let (job, rx) = job(f);
        self.sender()?
            .blocking_send(job)
            .map_err(|_| shutting_down())?;
        rx.blocking_recv().map_err(|_| shutting_down())?
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(shutting_down)
    }

    /// Runs a job and waits until it is durable.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx) -> Result<(T, Vec<Event>)> + Send + 'static,
    {
        self.submit(f).await?.await.map_err(|_| shutting_down())?
    }

    /// Stops taking jobs, finishes the queued ones, and waits for the writer.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// A job for the writer, and the receiver of its answer. A job that fails
/// leaves nothing behind: its batch is dropped, its audit seqs given back
/// (a refused group puts back every counter, the audit trail's too).
fn job<T, F>(f: F) -> (Job, oneshot::Receiver<Result<T>>)
where
    T: Send + 'static,
    F: FnOnce(&mut Tx) -> Result<(T, Vec<Event>)> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job: Job = Box::new(move |tx: &mut Tx| {
        let (audit, sealed) = (tx.ids.audit.clone(), tx.sealed.len());
        match f(tx) {
            Ok((value, events)) => Box::new(move |hub: &Hub, refused: Option<&Error>| {
                if let Some(e) = refused {
                    let _ = reply.send(Err(e.clone()));
                    return;
                }
                for ev in events {
                    hub.publish(Arc::new(ev));
                }
                let _ = reply.send(Ok(value));
            }),
            Err(e) => {
                tx.batch = WriteBatch::default();
                tx.ids.audit = audit;
                tx.sealed.truncate(sealed);
                Box::new(move |_: &Hub, refused: Option<&Error>| {
                    let _ = reply.send(Err(refused.cloned().unwrap_or(e)));
                })
            }
        }
    });
    (job, rx)
}

fn shutting_down() -> Error {
    Error::new(Kind::Internal, "the server is shutting down")
}

fn writer_loop(
    mut rx: mpsc::Receiver<Job>,
    store: Arc<Store>,
    hub: Arc<Hub>,
    mut ids: Counters,
    visible: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let mut done: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    let mut published = ids.msg;
    // The group's writes, as one write-ahead log record.
    let mut record: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut sealed: Vec<(u64, Sealed)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        // Put back if the group is refused.
        let counters_before = ids.clone();
        let mut next = Some(first);
        while let Some(job) = next {
            ids.last_ms = ids.last_ms.max(unix_ms());
            let now_ms = ids.last_ms;
            let mut tx = Tx {
                store: &store,
                batch: WriteBatch::default(),
                ids: &mut ids,
                sealed: &mut sealed,
                now_ms,
            };
            let d = job(&mut tx);
            let batch = std::mem::take(&mut tx.batch);
            if !batch.is_empty() {
                batch.encode_into(&mut record);
                store.stage(batch);
            }
            done.push(d);
            next = if done.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !sealed.is_empty() {
            let mut block = WriteBatch::default();
            block.put_audit_blocks(&sealed);
            sealed.clear();
            block.encode_into(&mut record);
            store.stage(block);
        }
        let t0 = Instant::now();
        // A group that wrote nothing has nothing to make durable: every
        // earlier group already is.
        let mut refused = None;
        if !record.is_empty() {
            match store.commit(&record) {
                Ok(_) => {}
                Err(CommitError::Refused) => {
                    ids = counters_before;
                    metrics
                        .writes_refused
                        .fetch_add(done.len() as u64, Ordering::Relaxed);
                    refused = Some(Error::unavailable());
                }
                Err(CommitError::Failed(e)) => fail_stop(&e),
            }
            record.clear();
        }
        let micros = t0.elapsed().as_micros() as u64;
        // Durable: now, and only now, may anyone see these ids.
        visible.store(ids.msg, Ordering::Release);
        metrics
            .messages
            .fetch_add(ids.msg - published, Ordering::Relaxed);
        published = ids.msg;
        if refused.is_none() {
            metrics.commit_batch.observe(done.len() as u64);
            metrics.commit_sync_us.observe(micros);
        }
        for d in done.drain(..) {
            d(&hub, refused.as_ref());
        }
    }
}

fn fail_stop(e: &dyn std::fmt::Display) -> ! {
    tracing::error!(error = %e, "the store could not be written or synced; stopping so nothing unsynced is acknowledged");
    std::process::abort();
}
