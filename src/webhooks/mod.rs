//! Durable, signed webhook delivery (API.md §5, "Webhook").
//!
//! The outbox belongs to the core (`core::outbox`, the life of a
//! delivery): a pending delivery is written in the same commit as the
//! staff message that causes it, and removed (`Core::delivered`) once the
//! receiver answered 2xx, or set aside as dead (`Core::give_up`) once it
//! has failed for `--webhook-give-up-hours`. This module owns only the
//! sending: a background [`Worker`] that reads the outbox, posts, retries
//! with backoff, gives up, and keeps each patient's deliveries in order.
//! It never touches the store, and no dialect reaches into it except for
//! the operator's listings (`listing`) and the [`Monitor`].
//!
//! - `worker`: the [`Worker`] task: lanes, attempts, retries, giving up
//! - `monitor`: what the worker knows of attempts, and its doorbell
//! - `wire`: the body, signature and headers a receiver gets (pure)
//! - `backoff`: the retry schedule (pure)
//! - `client`: one `POST` with timeouts, over `http://` or `https://`
//! - `listing`: the operator's listings of pending and dead deliveries
//!
//! Order and durability, as enforced here:
//!
//! - Each patient is a *lane*: its deliveries in message-id order, one in
//!   flight at a time; a later one waits until the earlier one was
//!   accepted — or set aside as dead: a dead delivery no longer holds
//!   back its lane, so the patient's later deliveries go on (in order)
//!   and the receiver may get them before the dead one, if it is ever
//!   retried. Lanes don't wait for each other; at most
//!   `Settings::concurrency` attempts run at once.
//! - Giving up: an attempt that fails when its message is older than
//!   `Settings::give_up` sets the delivery aside as dead. The age is the
//!   message's (stored: a restart does not reset it), so a delivery that
//!   waited behind a dead one still gets one attempt of its own, and a
//!   retried one that fails again is set aside again at once.
//! - A retried delivery (`Monitor::requeue`) takes its place in its lane
//!   again by message id: ahead of that patient's later deliveries, but
//!   never ahead of one being sent.
//! - Nothing is sent before its message is durable, and the worker needs
//!   no step of its own for that: it reads the outbox through
//!   `Core::pending_deliveries`, which lists only deliveries of messages
//!   at or below the visible id, and the sequencer makes an id visible
//!   only once the log record holding it is synced. The worker reads new
//!   deliveries whenever the sequencer's count of committed jobs has moved
//!   (checked every 50 ms; the count moves after the visible id, so a
//!   commit is never missed) or the [`Monitor`]'s doorbell rings.
//! - Backoff state (attempt counts, last errors) lives in memory only:
//!   after a restart every pending delivery is tried again at once, in
//!   order (dead ones stay dead). Delivery is at least once: an attempt
//!   cut off by a crash, or accepted just before one, is sent again;
//!   receivers de-duplicate by `X-Webhook-Id`.

pub mod backoff;
pub mod client;
pub mod listing;
pub mod monitor;
pub mod wire;
mod worker;

use std::time::Duration;

pub use listing::{dead, pending, MAX_LIST};
pub use monitor::Monitor;
pub use worker::Worker;

/// `--webhook-give-up-hours`' default.
pub const DEFAULT_GIVE_UP: Duration = Duration::from_secs(72 * 3600);

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
    /// A delivery whose message is older than this when an attempt fails
    /// is set aside as dead (`--webhook-give-up-hours`).
    pub give_up: Duration,
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
            give_up: DEFAULT_GIVE_UP,
        }
    }
}
