//! Durable, signed webhook delivery (API.md §5, "Webhook").
//!
//! The outbox belongs to the core: a pending delivery is written in the
//! same commit as the staff message that causes it, and removed
//! (`Core::delivered`) once the receiver answered 2xx. This module owns
//! only the sending: a background [`Worker`] that reads the outbox, posts,
//! retries with backoff, and keeps each patient's deliveries in order. It
//! never touches the store, and no dialect reaches into it except for the
//! operator's listing ([`pending`]) and the [`Monitor`]'s doorbell.
//!
//! - `wire`: the body, signature and headers a receiver gets (pure)
//! - `backoff`: the retry schedule (pure)
//! - `client`: one `POST` with timeouts, over `http://` or `https://`
//!
//! Order and durability, as enforced here:
//!
//! - Each patient is a *lane*: its deliveries in message-id order, one in
//!   flight at a time; a later one waits until the earlier one was
//!   accepted. Lanes don't wait for each other; at most
//!   `Settings::concurrency` attempts run at once.
//! - Nothing is sent before its message is durable: the outbox can be read
//!   before the sequencer has synced the batch that wrote it, so after
//!   reading new deliveries the worker waits for a no-op commit to come
//!   back (it is queued behind them, so it returns only once they are on
//!   disk).
//! - Backoff state (attempt counts, last errors) lives in memory only:
//!   after a restart every pending delivery is tried again at once, in
//!   order. Delivery is at least once: an attempt cut off by a crash, or
//!   accepted just before one, is sent again; receivers de-duplicate by
//!   `X-Webhook-Id`.

pub mod backoff;
pub mod client;
pub mod wire;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::core::error::Result;
use crate::core::model::{external_id, MsgId, UserId};
use crate::core::Core;
use client::Client;

/// How often the worker checks whether anything was committed (a counter
/// read; the outbox is scanned only when it moved).
const POLL: Duration = Duration::from_millis(50);
/// Outbox entries read per scan.
const LOAD_BATCH: usize = 1024;
/// Pending deliveries held in the worker's queues (a few bytes each; the
/// text is read again at send time). Beyond this, newer ones wait in the
/// outbox until older ones are delivered.
const MAX_TRACKED: usize = 1_000_000;
/// Longest listing of pending deliveries in one answer.
pub const MAX_LIST: usize = 1000;

/// How the worker sends.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--public-url`: the base of each body's `patientUrl`.
    pub public_url: String,
    /// The cap of the retry backoff (`--webhook-max-backoff-secs`).
    pub max_backoff: Duration,
    /// Attempts in flight at once, across all lanes.
    pub concurrency: usize,
    /// Name resolution, TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// Sending the request and reading the answer.
    pub response_timeout: Duration,
    /// On shutdown, how long attempts in flight may still finish.
    pub stop_grace: Duration,
}

impl Settings {
    pub fn new(public_url: impl Into<String>) -> Settings {
        Settings {
            public_url: public_url.into(),
            max_backoff: backoff::DEFAULT_MAX,
            concurrency: 32,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
        }
    }
}

/// What the running daemon knows about pending deliveries beyond the
/// outbox itself — shared by the worker (which writes it) and the
/// operator's listings (which read it) — and the worker's doorbell.
#[derive(Default)]
pub struct Monitor {
    attempts: Mutex<HashMap<MsgId, Attempts>>,
    wake: Notify,
    retry_now: AtomicBool,
    /// Failed attempts since start, for `/metrics`.
    failures: std::sync::atomic::AtomicU64,
}

/// The worker's record of one delivery it has tried.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    /// Attempts that failed so far.
    pub failed: u32,
    pub last_error: Option<String>,
    /// When the next attempt is due (`None` while one is in flight).
    pub next_at: Option<Instant>,
    pub sending: bool,
}

impl Monitor {
    pub fn new() -> Arc<Monitor> {
        Arc::new(Monitor::default())
    }

    /// Asks the worker to look at the outbox now rather than at its next
    /// poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A webhook was (re)configured: deliveries waiting out a backoff are
    /// tried again now, with the new settings.
    pub fn retry_now(&self) {
        self.retry_now.store(true, Ordering::Release);
        self.wake();
    }

    /// `/metrics` lines: deliveries the worker holds, and failed attempts.
    pub fn prometheus(&self) -> String {
        format!(
            "# HELP parlor_webhook_queue_depth Webhook deliveries pending in the worker.\n\
             # TYPE parlor_webhook_queue_depth gauge\nparlor_webhook_queue_depth {}\n\
             # HELP parlor_webhook_failures_total Failed webhook attempts since start.\n\
             # TYPE parlor_webhook_failures_total counter\nparlor_webhook_failures_total {}\n",
            self.lock().len(),
            self.failures.load(Ordering::Relaxed)
        )
    }

    pub fn attempts(&self, id: MsgId) -> Option<Attempts> {
        self.lock().get(&id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MsgId, Attempts>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update<T>(&self, id: MsgId, f: impl FnOnce(&mut Attempts) -> T) -> T {
        f(self.lock().entry(id).or_default())
    }

    fn forget(&self, id: MsgId) {
        self.lock().remove(&id);
    }
}

/// One pending delivery as the operator sees it (`parlor webhook pending`,
/// `GET /admin/webhooks/pending`). The message text is left out: operating
/// the server does not open patients' conversations.
#[derive(Debug, Serialize)]
pub struct PendingView {
    /// The message's `externalId`, also the delivery's `X-Webhook-Id`.
    pub external_id: String,
    pub patient_id: String,
    pub tenant: String,
    pub instance: String,
    /// The message's commit time, Unix ms.
    pub created_ms: u64,
    /// `queued` (not tried yet: new, or behind an earlier delivery of the
    /// same patient), `sending`, or `retrying` (failed, waiting out its
    /// backoff). `None` when no daemon runs.
    pub state: Option<&'static str>,
    /// Failed attempts so far (`None` when no daemon runs).
    pub failed_attempts: Option<u32>,
    pub last_error: Option<String>,
    pub next_attempt_in_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct PendingList {
    pub pending: Vec<PendingView>,
    /// More pending deliveries follow the last one listed (page on with
    /// `after` = its `external_id`).
    pub more: bool,
}

/// Pending deliveries in message order, after `after` (exclusive), at most
/// `limit` (1..=`MAX_LIST`), with what the daemon knows of their attempts
/// when `monitor` is the running daemon's.
pub fn pending(
    core: &Core,
    monitor: Option<&Monitor>,
    after: Option<MsgId>,
    limit: usize,
) -> Result<PendingList> {
    let limit = limit.clamp(1, MAX_LIST);
    let from = MsgId(after.map_or(0, |a| a.0.saturating_add(1)));
    let mut found = core.pending_deliveries(from, limit + 1)?;
    let more = found.len() > limit;
    found.truncate(limit);
    let now = Instant::now();
    let pending = found
        .into_iter()
        .map(|d| {
            let known = monitor.map(|m| m.attempts(d.message).unwrap_or_default());
            let state = known.as_ref().map(|a| match a {
                a if a.sending => "sending",
                a if a.failed > 0 => "retrying",
                _ => "queued",
            });
            PendingView {
                external_id: external_id(d.message),
                patient_id: d.patient.to_string(),
                tenant: d.workspace.tenant,
                instance: d.workspace.instance,
                created_ms: d.at_ms,
                state,
                failed_attempts: known.as_ref().map(|a| a.failed),
                last_error: known.as_ref().and_then(|a| a.last_error.clone()),
                next_attempt_in_ms: known
                    .and_then(|a| a.next_at)
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64),
            }
        })
        .collect();
    Ok(PendingList { pending, more })
}

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
        let client = Client::new(settings.connect_timeout, settings.response_timeout);
        let run = Run {
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
        };
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
    /// The entry was no longer in the outbox.
    Gone,
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
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut look = true;
        let mut seen_jobs = None;
        loop {
            if *stop.borrow() {
                break;
            }
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
            self.monitor.update(id, |a| {
                a.sending = true;
                a.next_at = None;
            });
            let handle = self.tasks.spawn(attempt(
                self.core.clone(),
                self.client.clone(),
                self.settings.clone(),
                id,
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
        let Some(lane) = self.lanes.get_mut(&patient) else {
            return;
        };
        lane.busy = false;
        let now = Instant::now();
        match outcome {
            Outcome::Delivered | Outcome::Gone => {
                lane.queue.pop_front();
                self.tracked -= 1;
                if let Some(a) = self.monitor.attempts(id).filter(|a| a.failed > 0) {
                    tracing::info!(
                        message = %external_id(id),
                        attempts = a.failed + 1,
                        "webhook delivered after retries"
                    );
                }
                self.monitor.forget(id);
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
/// configured now.
async fn attempt(core: Arc<Core>, client: Client, settings: Arc<Settings>, id: MsgId) -> Outcome {
    let d = match core.pending_deliveries(id, 1) {
        Ok(v) => v.into_iter().next().filter(|d| d.message == id),
        Err(e) => return Outcome::Failed(format!("reading the outbox failed: {e}")),
    };
    let Some(d) = d else {
        return Outcome::Gone;
    };
    let hook = match core.webhook(&d.workspace) {
        Ok(Some(h)) => h,
        Ok(None) => return Outcome::Failed("the workspace has no webhook configured".into()),
        Err(e) => return Outcome::Failed(format!("reading the webhook failed: {e}")),
    };
    let body = wire::body(&settings.public_url, &d);
    let headers = wire::headers(&hook, &d, &body);
    match client.post(&hook.url, &headers, body).await {
        Ok(status) if status.is_success() => match core.delivered(id).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => Outcome::Failed(format!("accepted, but recording that failed: {e}")),
        },
        Ok(status) => Outcome::Failed(format!("the receiver answered {status}")),
        Err(e) => Outcome::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::accounts::NewUser;
    use crate::core::limits::Limits;
    use crate::core::model::{Role, User, Webhook, Workspace};
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;

    type Seen = Arc<Mutex<Vec<(String, u16)>>>;

    /// A loopback receiver: answers each POST with `answer(text)` and
    /// records `(message text, status)` in arrival order.
    async fn receiver(answer: Arc<dyn Fn(&str) -> u16 + Send + Sync>) -> (String, Seen) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (answer, log) = (answer.clone(), log.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (answer, log) = (answer.clone(), log.clone());
                            async move {
                                let body = req.into_body().collect().await?.to_bytes();
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                let text = v["message"].as_str().unwrap().to_owned();
                                let status = answer(&text);
                                log.lock().unwrap().push((text, status));
                                let mut r = Response::new(Full::new(bytes::Bytes::new()));
                                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                                Ok::<_, hyper::Error>(r)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (url, seen)
    }

    async fn user(core: &Core, name: &str, role: Role) -> User {
        let id = core
            .create_user(
                None,
                NewUser {
                    username: name.into(),
                    password: "pw".into(),
                    role,
                    workspace: Workspace::new("a", "main").unwrap(),
                    display_name: None,
                },
            )
            .await
            .unwrap();
        core.user(id).unwrap().unwrap()
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_patients_later_delivery_waits_for_the_earlier_one_and_other_patients_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            msg_burst: 1000,
            msg_rate: 1000,
            ..Limits::default()
        };
        let core = Core::open(dir.path(), limits).unwrap();
        let staff = user(&core, "nurse", Role::Staff).await;
        let (pa, pb) = (
            user(&core, "pa", Role::Patient).await,
            user(&core, "pb", Role::Patient).await,
        );
        let release = Arc::new(AtomicBool::new(false));
        let gate = release.clone();
        let answer = Arc::new(move |text: &str| {
            if text == "a1" && !gate.load(Ordering::Acquire) {
                500
            } else {
                204
            }
        });
        let (url, seen) = receiver(answer).await;
        let hook = Webhook {
            url,
            api_key: "k".into(),
            api_secret: "s".into(),
        };
        core.set_webhook(None, staff.workspace.clone(), hook)
            .await
            .unwrap();
        let monitor = Monitor::new();
        let settings = Settings {
            max_backoff: Duration::from_secs(1),
            ..Settings::new("http://parlor.test")
        };
        let worker = Worker::start(core.clone(), settings, monitor.clone());
        let chat = |p: &User| {
            let id = p.id.to_string();
            let core = core.clone();
            let staff = staff.clone();
            async move { core.patient_chat(&staff, "a", "main", &id).await.unwrap() }
        };
        let (ca, cb) = (chat(&pa).await, chat(&pb).await);
        for (c, t) in [(&ca, "a1"), (&ca, "a2"), (&cb, "b1")] {
            core.outbound(&staff, c, t.into()).await.unwrap();
        }
        let accepted = |t: &str| seen.lock().unwrap().iter().any(|(x, s)| x == t && *s < 300);
        // b1 goes through while a1 keeps failing; a2 is not tried meanwhile.
        until("b1 accepted and a1 failed twice", || {
            accepted("b1")
                && seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(x, _)| x == "a1")
                    .count()
                    >= 2
        })
        .await;
        assert!(!seen.lock().unwrap().iter().any(|(x, _)| x == "a2"));
        let list = pending(&core, Some(&monitor), None, 10).unwrap();
        let states: Vec<_> = list.pending.iter().map(|p| p.state.unwrap()).collect();
        assert!(
            matches!(states[..], ["retrying" | "sending", "queued"]),
            "{states:?}"
        );
        let a1 = &list.pending[0];
        assert!(a1.failed_attempts.unwrap() >= 1);
        assert!(
            a1.last_error.as_deref().unwrap_or("").contains("500"),
            "{a1:?}"
        );
        // Released: a1 then a2, in that order, and the outbox empties.
        release.store(true, Ordering::Release);
        until("a1 and a2 accepted", || accepted("a1") && accepted("a2")).await;
        let order: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s < 300)
            .map(|(x, _)| x.clone())
            .collect();
        let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
        assert!(pos("a1") < pos("a2"), "{order:?}");
        until("an empty outbox", || {
            core.pending_deliveries(MsgId(0), 10).unwrap().is_empty()
        })
        .await;
        assert!(pending(&core, Some(&monitor), None, 10)
            .unwrap()
            .pending
            .is_empty());
        worker.stop().await;
        core.shutdown();
    }
}
