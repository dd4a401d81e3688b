//! parlor: one chat daemon, one store, several chat APIs ("dialects").
//!
//! The map, top layer first; a module uses only layers below its own
//! (`tests/layers.rs` checks it):
//!
//! - [`cli`], [`daemon`], [`config`]: the subcommands, `parlor serve`, the
//!   flags and `PARLOR_*` variables; `control`: the operator's Unix
//!   socket, so the CLI works while the daemon holds the store.
//! - `app`: the route table (`app::routes`), each request's context
//!   (`dialects::Ctx`, built per request), and the operator's endpoints
//!   (health, readiness, metrics).
//! - `dialects`: one module per wire protocol. Each parses frames into
//!   core operations and renders replies, events and errors back (its
//!   one table of wire errors: `dialects::wire_error`). No dialect
//!   touches the store or another dialect, and none checks a role.
//! - `net`: transport only — the accept loop, HTTP/1.1 (hyper 1), the
//!   hand-rolled WebSocket upgrade (RFC 6455), the WebSocket session loop
//!   and its `Dialect` trait. It knows no dialect and no route.
//!   `webhooks`: the worker that sends the core's webhook outbox.
//! - `core`: every rule. `core::actor`: who asks, and the one admin check;
//!   `core::commit`: the sequencer, the only writer; `core::derived`: the
//!   records that follow from others (postings, care teams, the patient
//!   index, the outbox), for live writes and restore alike; `core::hub`:
//!   live fan-out; `core::retention` and `core::erasure`: retention,
//!   legal holds, the purge, erasing a person.
//! - [`store`]: the only code that imports sled: a file per keyspace, the
//!   write-ahead log (`store::wal`) that makes a commit durable, and the
//!   background checkpoint of sled, its index.
//! - `model` and `error`: the vocabulary (ids, users, rooms, messages,
//!   times) and the one error type, below everything.
//!
//! Also: [`bench`](mod@bench), the bundled load generator; `web`, the built-in web
//! client served at `/`; `systemd`, readiness and the watchdog.
//!
//! One message, from a frame to every push: a rooms-dialect client sends
//! `{"room","messages"}` on its socket; `net::ws::run` hands the text to
//! the session's `Dialect::on_text` (`dialects::rooms`), which parses it
//! and calls `Core::post_queued` (`core::messages`). That checks the
//! text, the sender's rate and the room, then submits a job to the
//! sequencer (`core::commit`): on its one thread the job checks
//! membership, takes the next id, writes the message and what follows from
//! it (`core::derived::new_message`; the audit record of a patient chat)
//! into a batch staged in the store (`store::pending`). The group of jobs
//! that arrived meanwhile becomes one write-ahead log record, appended and
//! `fdatasync`ed (`store::commit`), then written into sled; only then is
//! the visible id raised and the job's `Event` published to the hub
//! (`core::hub`), which queues it, bounded, for every connection of the
//! room's members. Each connection's `net::ws::run` takes what is queued;
//! for each event the dialect's `Dialect::render` runs once per dialect
//! (`Event::frame`, shared by every socket of that dialect), `shows`
//! filters it per connection, and the frames go out with one flush.

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
