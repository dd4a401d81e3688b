//! parlor: one chat daemon, one store, several chat APIs ("dialects").
//!
//! The map, from the wire inwards:
//!
//! - [`app`]: the route table, each request's context, and the
//!   operator's endpoints (health, readiness, metrics).
//! - [`net`]: transport only — the hyper 1 server, the hand-rolled
//!   WebSocket upgrade (RFC 6455) and the WebSocket session loop.
//! - [`dialects`]: one module per wire protocol. Each parses frames into
//!   core operations and renders replies, events and errors back. No
//!   dialect touches the store or another dialect.
//! - [`core`]: every rule. The sequencer (`core::commit`) is the only
//!   writer: it assigns ids, applies, makes the group one durable
//!   write-ahead log record, and only then publishes to the
//!   hub (`core::hub`) and answers — so ids become visible in order and
//!   nothing is acknowledged before it is on disk. sled, which every
//!   reader outside the writer reads, gets a group's writes only after
//!   its record is synced, so no read sees what a crash could take back.
//! - [`store`]: the only code that imports sled: key layouts, value codec,
//!   the write-ahead log (`store::wal`, the history and what makes a
//!   commit durable) and the background checkpoint of sled, its index.
//! - [`control`]: the operator's Unix socket, so the CLI works while the
//!   daemon holds the store; [`cli`]: the subcommands; [`config`]: flags
//!   and `PARLOR_*` variables; [`bench`]: `parlor bench`, the bundled load
//!   generator (a client of the daemon, plus a no-storage baseline server).
//! - [`webhooks`]: the background worker that sends the core's webhook
//!   outbox — signed, retried with backoff, in order per patient, set
//!   aside as dead after `--webhook-give-up-hours`.
//! - [`web`]: the built-in web client (`web/` at the repository's top:
//!   HTML, CSS, plain JavaScript modules) compiled in and served at `/`
//!   with ETags and strict security headers. It is a client of the public
//!   API like any other.
//! - [`systemd`]: `Type=notify` readiness, watchdog keep-alives, stopping.

pub(crate) mod app;
// Public: what `main.rs` runs (bench, cli, config, daemon), what `fuzz/`
// calls (fuzzing), and the store, which tests/version.rs and
// tests/audit.rs open directly, as a tamperer or an old binary would.
pub mod bench;
pub mod cli;
pub mod config;
pub(crate) mod control;
pub(crate) mod core;
pub mod daemon;
pub(crate) mod dialects;
pub(crate) mod error;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod model;
pub(crate) mod net;
#[doc(hidden)]
pub mod store;
pub(crate) mod systemd;
pub(crate) mod web;
pub(crate) mod webhooks;
