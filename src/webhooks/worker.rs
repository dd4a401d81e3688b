//! The background sender: a [`Worker`] task that reads the outbox, keeps
//! each patient's deliveries in a lane (in message-id order, one in flight
//! at a time), posts them with at most `Settings::concurrency` attempts at
//! once, retries with backoff, and sets aside as dead what has failed for
//! `Settings::give_up`. It records attempts in the [`Monitor`] and wakes on
//! its doorbell; what it promises is described in the module above.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use super::client::Client;
use super::monitor::Monitor;
use super::{backoff, wire, Settings};
use crate::core::Core;
use crate::model::{external_id, Delivery, MsgId, UserId};

/// How often the worker checks whether anything was committed (a counter
/// read; the outbox is scanned only when it moved).
const POLL: Duration = Duration::from_millis(50);
/// Outbox entries read per scan.
const LOAD_BATCH: usize = 1024;
/// Pending deliveries held in the worker's queues (a few bytes each; the
/// text is read again at send time). Beyond this, newer ones wait in the
/// outbox until older ones are delivered.
const MAX_TRACKED: usize = 1_000_000;
/// The background sender. Start it once the core is open; stop it before
/// the core shuts down.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

impl Worker {
    pub fn start(core: Arc<Core>, settings: Settings, monitor: Arc<Monitor>) -> Worker {
        let (stop, stopped) = watch::channel(false);
        let grace = settings.stop_grace;
        let run = Run::new(core, settings, monitor);
        Worker {
            stop,
            task: tokio::spawn(run.run(stopped)),
            grace,
        }
    }

    /// Starts no new attempts; those in flight get the grace period to
    /// finish (so an accepted delivery is recorded, not sent again after
    /// the restart), then are cut off.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let limit = self.grace + Duration::from_secs(1);
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

/// One patient's pending deliveries, oldest first; the head is the one
/// being tried.
#[derive(Default)]
struct Lane {
    queue: VecDeque<MsgId>,
    busy: bool,
}

enum Outcome {
    /// The receiver answered 2xx and the outbox entry is gone.
    Delivered,
    /// The entry was no longer in the outbox (or was dropped: its
    /// workspace has no webhook).
    Gone,
    /// Failed, and set aside as dead: out of the outbox.
    Dead(String),
    Failed(String),
}

struct Run {
    core: Arc<Core>,
    settings: Arc<Settings>,
    monitor: Arc<Monitor>,
    client: Client,
    /// Invariant: a lane is in the map while its queue is non-empty; a
    /// lane that is not busy has exactly one entry in `due`.
    lanes: HashMap<UserId, Lane>,
    /// Idle lanes by when their head may be tried.
    due: BinaryHeap<Reverse<(Instant, UserId)>>,
    /// The next outbox id to read: everything below is in a lane or done.
    cursor: MsgId,
    tracked: usize,
    full_warned: bool,
    tasks: JoinSet<Outcome>,
    running: HashMap<tokio::task::Id, (UserId, MsgId)>,
}

impl Run {
    fn new(core: Arc<Core>, settings: Settings, monitor: Arc<Monitor>) -> Run {
        let client = Client::new(settings.connect_timeout, settings.response_timeout);
        Run {
            core,
            settings: Arc::new(settings),
            monitor,
            client,
            lanes: HashMap::new(),
            due: BinaryHeap::new(),
            cursor: MsgId(1),
            tracked: 0,
            full_warned: false,
            tasks: JoinSet::new(),
            running: HashMap::new(),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut look = true;
        let mut seen_jobs = None;
        loop {
            if *stop.borrow() {
                break;
            }
            self.requeue(self.monitor.take_requeued());
            if self.monitor.retry_now.swap(false, Ordering::AcqRel) {
                self.all_due_now();
            }
            // Anything committed since the last look may have queued a
            // delivery; the counter is read before the outbox, so a commit
            // landing in between is looked at next time round.
            let jobs = self.core.commit_stats().jobs;
            if look || seen_jobs != Some(jobs) {
                seen_jobs = Some(jobs);
                look = false;
                self.load().await;
            }
            self.dispatch();
            let mut wake_at = Instant::now() + POLL;
            if self.tasks.len() < self.settings.concurrency {
                if let Some(Reverse((t, _))) = self.due.peek() {
                    wake_at = wake_at.min(*t);
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.monitor.wake.notified() => look = true,
                Some(r) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(r);
                }
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        let grace = self.settings.stop_grace;
        let drain = async {
            while let Some(r) = self.tasks.join_next_with_id().await {
                self.finished(r);
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::info!(
                in_flight = self.tasks.len(),
                "webhook attempts cut off by shutdown; they are retried after the restart"
            );
        }
        self.tasks.abort_all();
    }

    /// Reads deliveries committed since the last look into their lanes,
    /// once they are durable.
    async fn load(&mut self) {
        let mut found = Vec::new();
        loop {
            let room = MAX_TRACKED.saturating_sub(self.tracked + found.len());
            if room == 0 {
                if !self.full_warned {
                    self.full_warned = true;
                    tracing::warn!(
                        tracked = self.tracked,
                        "webhook backlog is full; newer deliveries wait in the outbox"
                    );
                }
                break;
            }
            let want = LOAD_BATCH.min(room);
            let batch = match self.core.pending_deliveries(self.cursor, want) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading the webhook outbox failed");
                    break;
                }
            };
            let more = batch.len() == want;
            for d in batch {
                self.cursor = MsgId(d.message.0 + 1);
                found.push((d.message, d.patient));
            }
            if !more {
                break;
            }
            tokio::task::yield_now().await;
        }
        // `pending_deliveries` lists only durable messages (it is bounded by
        // the visible id), so nothing here is sent before it is on disk.
        let now = Instant::now();
        for (id, patient) in found {
            let lane = self.lanes.entry(patient).or_default();
            if lane.queue.is_empty() {
                self.due.push(Reverse((now, patient)));
            }
            lane.queue.push_back(id);
            self.tracked += 1;
        }
    }

    /// Starts the due heads of idle lanes, within the concurrency bound.
    fn dispatch(&mut self) {
        let now = Instant::now();
        while self.tasks.len() < self.settings.concurrency {
            match self.due.peek() {
                Some(Reverse((t, _))) if *t <= now => {}
                _ => break,
            }
            let Some(Reverse((_, patient))) = self.due.pop() else {
                break;
            };
            let Some(lane) = self.lanes.get_mut(&patient) else {
                continue;
            };
            let Some(&id) = lane.queue.front() else {
                continue;
            };
            if lane.busy {
                continue;
            }
            lane.busy = true;
            let failed_before = self.monitor.update(id, |a| {
                a.sending = true;
                a.next_at = None;
                a.failed
            });
            let handle = self.tasks.spawn(attempt(
                self.core.clone(),
                self.client.clone(),
                self.settings.clone(),
                id,
                failed_before,
            ));
            self.running.insert(handle.id(), (patient, id));
        }
    }

    fn finished(&mut self, r: std::result::Result<(tokio::task::Id, Outcome), JoinError>) {
        let (task, outcome) = match r {
            Ok(x) => x,
            Err(e) => {
                let why = if e.is_panic() {
                    "the attempt panicked"
                } else {
                    "the attempt was cancelled"
                };
                (e.id(), Outcome::Failed(why.into()))
            }
        };
        let Some((patient, id)) = self.running.remove(&task) else {
            return;
        };
        // Set aside, and already retried by the operator before this was
        // seen: it stays at the head (`requeue` skipped it while it was in
        // its lane).
        let retried = matches!(outcome, Outcome::Dead(_)) && self.back_in_outbox(id);
        let Some(lane) = self.lanes.get_mut(&patient) else {
            return;
        };
        lane.busy = false;
        let now = Instant::now();
        match outcome {
            Outcome::Delivered | Outcome::Gone | Outcome::Dead(_) => {
                lane.queue.pop_front();
                self.tracked -= 1;
                let tried = self.monitor.attempts(id).map_or(0, |a| a.failed);
                match outcome {
                    Outcome::Dead(error) => {
                        self.monitor.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            message = %external_id(id),
                            failed_attempts = tried + 1,
                            %error,
                            "webhook delivery set aside as dead (parlor webhook retry sends it again)"
                        );
                    }
                    _ if tried > 0 => tracing::info!(
                        message = %external_id(id),
                        attempts = tried + 1,
                        "webhook delivered after retries"
                    ),
                    _ => {}
                }
                self.monitor.forget(id);
                if retried {
                    lane.queue.push_front(id);
                    self.tracked += 1;
                }
                if lane.queue.is_empty() {
                    self.lanes.remove(&patient);
                } else {
                    self.due.push(Reverse((now, patient)));
                }
            }
            Outcome::Failed(error) => {
                self.monitor.failures.fetch_add(1, Ordering::Relaxed);
                let n = self.monitor.update(id, |a| {
                    a.failed += 1;
                    a.failed
                });
                let wait = backoff::delay(n, self.settings.max_backoff, &mut rand::thread_rng());
                tracing::warn!(
                    message = %external_id(id),
                    failed_attempts = n,
                    retry_in_ms = wait.as_millis() as u64,
                    %error,
                    "webhook delivery failed"
                );
                self.monitor.update(id, |a| {
                    a.sending = false;
                    a.last_error = Some(error);
                    a.next_at = Some(now + wait);
                });
                self.due.push(Reverse((now + wait, patient)));
            }
        }
    }

    /// Whether `id` is in the outbox (read after it left its lane as dead).
    fn back_in_outbox(&self, id: MsgId) -> bool {
        match self.core.pending_deliveries(id, 1) {
            Ok(v) => v.first().is_some_and(|d| d.message == id),
            Err(e) => {
                tracing::error!(error = %e, "reading the webhook outbox failed");
                false
            }
        }
    }

    /// Puts deliveries the operator moved back from the dead into their
    /// lanes, by message id (never ahead of one being sent). Those at or
    /// past the cursor are left to `load`, and those still in their lane
    /// (set aside but not yet seen so: see `finished`) stay where they are.
    fn requeue(&mut self, moved: Vec<(MsgId, UserId)>) {
        if moved.is_empty() {
            return;
        }
        let now = Instant::now();
        for (id, patient) in moved {
            if id >= self.cursor {
                continue;
            }
            let lane = self.lanes.entry(patient).or_default();
            if lane.queue.contains(&id) {
                continue;
            }
            if lane.queue.is_empty() {
                self.due.push(Reverse((now, patient)));
            }
            let first = usize::from(lane.busy);
            let at = lane
                .queue
                .iter()
                .skip(first)
                .position(|&q| q > id)
                .map_or(lane.queue.len(), |i| i + first);
            lane.queue.insert(at, id);
            self.tracked += 1;
        }
    }

    /// Every idle lane is due now (a webhook was reconfigured).
    fn all_due_now(&mut self) {
        let now = Instant::now();
        let lanes: Vec<UserId> = self.due.drain().map(|Reverse((_, p))| p).collect();
        for p in lanes {
            if let Some(&id) = self.lanes.get(&p).and_then(|l| l.queue.front()) {
                self.monitor.update(id, |a| {
                    if !a.sending {
                        a.next_at = Some(now);
                    }
                });
            }
            self.due.push(Reverse((now, p)));
        }
    }
}

/// One attempt at one delivery, with the workspace's webhook as it is
/// configured now; `failed_before` attempts at it failed already.
async fn attempt(
    core: Arc<Core>,
    client: Client,
    settings: Arc<Settings>,
    id: MsgId,
    failed_before: u32,
) -> Outcome {
    let d = match core.pending_deliveries(id, 1) {
        Ok(v) => v.into_iter().next().filter(|d| d.message == id),
        Err(e) => return Outcome::Failed(format!("reading the outbox failed: {e}")),
    };
    let Some(d) = d else {
        return Outcome::Gone;
    };
    let error = match core.webhook(&d.workspace) {
        // Deleted: its deliveries are dropped (the delete does; this one
        // was left by a delete cut short, or is being dropped right now).
        Ok(None) => match core.drop_orphan(id).await {
            Ok(true) => return Outcome::Gone,
            Ok(false) => "the webhook was set again while this attempt began".to_owned(),
            Err(e) => format!("dropping it (its webhook was deleted) failed: {e}"),
        },
        Err(e) => format!("reading the webhook failed: {e}"),
        Ok(Some(hook)) => {
            let body = wire::body(&settings.public_url, &d);
            let headers = wire::headers(&hook, &d, &body);
            match client.post(&hook.url, &headers, body).await {
                Ok(status) if status.is_success() => match core.delivered(id).await {
                    Ok(()) => return Outcome::Delivered,
                    Err(e) => format!("accepted, but recording that failed: {e}"),
                },
                Ok(status) => format!("the receiver answered {status}"),
                Err(e) => e,
            }
        }
    };
    failed(&core, &settings, &d, failed_before + 1, error).await
}

/// An attempt failed (the `failed`th): set the delivery aside as dead if
/// its message is older than `Settings::give_up`, else retry later.
async fn failed(
    core: &Core,
    settings: &Settings,
    d: &Delivery,
    failed: u32,
    error: String,
) -> Outcome {
    let age = crate::core::commit::unix_ms().saturating_sub(d.at_ms);
    if u128::from(age) < settings.give_up.as_millis() {
        return Outcome::Failed(error);
    }
    match core.give_up(d.message, failed, error.clone()).await {
        Ok(true) => Outcome::Dead(error),
        Ok(false) => Outcome::Gone,
        Err(e) => Outcome::Failed(format!("{error}; setting it aside as dead failed: {e}")),
    }
}

#[cfg(test)]
mod tests;
