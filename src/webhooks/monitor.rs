//! What the running daemon knows of webhook deliveries beyond the store:
//! the worker's attempts (for the operator's listings and `/metrics`), and
//! the worker's doorbell. Written by the worker, read by everyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::model::{MsgId, UserId};

/// What the running daemon knows about pending deliveries beyond the
/// outbox itself — shared by the worker (which writes it) and the
/// operator's listings (which read it) — and the worker's doorbell.
#[derive(Default)]
pub struct Monitor {
    attempts: Mutex<HashMap<MsgId, Attempts>>,
    pub(super) wake: Notify,
    pub(super) retry_now: AtomicBool,
    /// Dead deliveries the operator moved back into the outbox, for the
    /// worker to put back in their lanes (its outbox cursor is past them).
    requeued: Mutex<Vec<(MsgId, UserId)>>,
    /// Failed attempts since start, for `/metrics`.
    pub(super) failures: AtomicU64,
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

    /// Dead deliveries were moved back into the outbox
    /// (`Core::retry_dead`): the worker takes them up again, each in its
    /// place in its patient's order, and tries them now.
    pub fn requeue(&self, moved: &[(MsgId, UserId)]) {
        if moved.is_empty() {
            return;
        }
        lock(&self.requeued).extend_from_slice(moved);
        self.retry_now();
    }

    pub(super) fn take_requeued(&self) -> Vec<(MsgId, UserId)> {
        std::mem::take(&mut *lock(&self.requeued))
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

    fn lock(&self) -> MutexGuard<'_, HashMap<MsgId, Attempts>> {
        lock(&self.attempts)
    }

    pub(super) fn update<T>(&self, id: MsgId, f: impl FnOnce(&mut Attempts) -> T) -> T {
        f(self.lock().entry(id).or_default())
    }

    pub(super) fn forget(&self, id: MsgId) {
        self.lock().remove(&id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
