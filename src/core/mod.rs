//! The core: one store, one sequencer, one hub, and every rule of who may
//! do what. Dialects call the operations here and only translate.
//!
//! - `model`: ids, users, rooms, messages (validated)
//! - `error`: the one error type, with a kind each dialect maps
//! - `commit`: the sequencer — ordering and durability are enforced there
//! - `hub`: live fan-out with bounded queues
//! - `auth`, `limits`: passwords, tokens, throttles
//! - `accounts`, `rooms`, `messages`, `patients`: the operations
//! - `overview`: a user's rooms with bounded unread counts (read-only)

pub mod accounts;
pub mod auth;
pub mod backup;
pub mod commit;
pub mod error;
pub mod hub;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod model;
pub mod overview;
pub mod patients;
pub mod rooms;

use std::path::Path;
use std::sync::Arc;

use crate::store::{OpenError, Store};
use commit::Committer;
use hub::Hub;
use limits::{Limits, LoginThrottle, UserBuckets};
use model::User;

pub struct Core {
    store: Arc<Store>,
    pub hub: Arc<Hub>,
    commit: Committer,
    passwords: auth::Passwords,
    login_throttle: LoginThrottle,
    send_buckets: UserBuckets,
    pub limits: Limits,
    pub metrics: Arc<metrics::Metrics>,
}

/// An authenticated caller: the user and the hash of the token used.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub token: [u8; 32],
}

impl Core {
    /// Opens the store in `dir` and starts the sequencer.
    pub fn open(dir: &Path, limits: Limits) -> Result<Arc<Core>, OpenError> {
        let (store, summary) = Store::open(dir)?;
        tracing::info!(
            recovered = summary.recovered,
            users = summary.last_user,
            rooms = summary.last_room,
            last_message = summary.last_msg,
            "store opened cleanly"
        );
        let store = Arc::new(store);
        let queue = limits.conn_queue.max(2 * commit::MAX_BATCH);
        let hub = Arc::new(Hub::new(queue, limits.conns_per_user));
        let metrics = Arc::new(metrics::Metrics::default());
        let commit = Committer::start(store.clone(), hub.clone(), metrics.clone())
            .map_err(|e| OpenError::Other(format!("starting the writer: {e}")))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Arc::new(Core {
            store,
            hub,
            commit,
            passwords: auth::Passwords::new(cpus),
            login_throttle: LoginThrottle::new(
                limits.login_fails_per_account,
                limits.login_fails_per_addr,
            ),
            send_buckets: UserBuckets::new(limits.msg_burst, limits.msg_rate),
            limits,
            metrics,
        }))
    }

    /// Finishes queued writes and syncs. Call once, at the end.
    pub fn shutdown(&self) {
        self.commit.shutdown();
        let s = self.commit.stats();
        if s.batches > 0 {
            tracing::info!(
                batches = s.batches,
                jobs = s.jobs,
                max_batch = s.max_batch,
                mean_sync_us = s.sync_micros_total / s.batches,
                max_sync_us = s.sync_micros_max,
                "group commit figures"
            );
        }
    }

    pub fn commit_stats(&self) -> commit::CommitStats {
        self.commit.stats()
    }

    /// `/metrics`: everything the core counts, in Prometheus text format.
    pub fn render_metrics(&self, extra: &str) -> String {
        self.metrics.render(self.commit.visible().0, extra)
    }

    /// `/readyz`: the store answers and the writer takes jobs.
    pub async fn ready(&self) -> bool {
        self.commit.run(|_| Ok(((), vec![]))).await.is_ok()
    }

    /// Items read by store range scans so far (for cost tests).
    pub fn items_scanned(&self) -> u64 {
        self.store.scanned()
    }
}
