//! Black-box test harness for the `parlor` binary, one file per concern;
//! this file only re-exports them, so a test says `use common::*;`.
//!
//! * `daemon`: [`Server`] — a temporary data directory, the CLI against it,
//!   and `parlor serve` started / killed / restarted on a loopback port.
//! * `http`: [`http`], [`post_json`], [`login`], … — a tiny HTTP/1.1 client
//!   (one connection per request); `raw`: raw TCP exchanges.
//! * `ws`: [`Ws`] — WebSocket clients for `/chat/connect`, `/ws`, `/actions`.
//! * `rooms`: the rooms dialect's HTTP calls and message checks;
//!   `metrics`: reading `/metrics`.
//! * `load`: [`Pacer`] and bulk sending; `crash`: the crash harnesses' load.
//! * `world`: [`World`], a small populated daemon; `clinic`: [`Clinic`], the
//!   patient-care one, and `patient`: the patient dialect from a client's side.
//!
//! Every wait in here is bounded by a timeout, so a hung daemon fails a test
//! instead of hanging CI. The tests only ever talk to 127.0.0.1.
#![allow(dead_code)]

mod clinic;
mod crash;
mod daemon;
mod http;
mod load;
mod metrics;
mod patient;
mod raw;
mod rooms;
mod world;
mod ws;

// Each test file uses only some of these.
#[allow(unused_imports)]
pub use self::{
    clinic::*, crash::*, daemon::*, http::*, load::*, metrics::*, patient::*, raw::*, rooms::*,
    world::*, ws::*,
};
