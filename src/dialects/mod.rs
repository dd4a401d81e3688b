//! One module per wire protocol. Each parses its frames into core
//! operations and renders replies, events and errors in its own shape.
//! None touches the store or another dialect.
//!
//! - `accounts`: API.md §1 — login, logout, admin users and rooms, healthz
//! - `api_clients`: API.md §6 — API clients and Welkin's token exchange
//! - `audit`: API.md §7 — `GET /admin/audit`, the audit trail paged
//! - `retention`: API.md §8 — retention, legal holds, erasing a user
//! - `rooms`: API.md §2 — `/chat/connect`, create_dm, room_info, retrieve
//! - `actions`: API.md §3 — the `{"action"}` WebSocket at `/actions`
//! - `typed`: API.md §4 — the `{"type","data"}` WebSocket at `/ws`
//! - `patient`: API.md §5 — REST under `/{tenant}/{instance}/patient/{id}/chat`
//! - `web_api`: `GET /chat/rooms`, the room overview the web client needs
//! - `echo`: the conformance echo at `/conformance/echo` (off unless
//!   `--conformance-echo`): every message back, for protocol test suites
//! - `wire_error`: the `WireError` trait each dialect implements once, the
//!   one place it turns a core error kind into its wire error, and API.md
//!   §1's REST error (`Rest`) every HTTP endpoint answers with

pub mod accounts;
pub mod actions;
pub mod api_clients;
pub mod audit;
pub mod echo;
pub mod patient;
pub mod retention;
pub mod rooms;
pub mod typed;
pub mod web_api;
pub(crate) mod wire_error;

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;

use crate::core::{Caller, Core};
use crate::error::{Error, Result};
use crate::net::http::{self, Resp};
use crate::net::upgrade::{self as handshake, Socket};
use crate::net::Conn;
use wire_error::{Rest, WireError};

/// Each WebSocket dialect's slot among a hub event's shared renderings
/// (`net::ws::Dialect::SLOT`), below `core::hub::FRAME_SLOTS`.
pub(crate) mod slot {
    pub const ROOMS: usize = 0;
    pub const ACTIONS: usize = 1;
    pub const TYPED: usize = 2;
    pub const ECHO: usize = 3;
}

/// The caller of an HTTP request, by its bearer token.
pub fn caller(core: &Core, req: &Request<Incoming>) -> Result<Caller> {
    core.authenticate(http::bearer(req).ok_or_else(Error::unauthenticated)?)
}

/// Answers a WebSocket handshake and runs `session` on the socket,
/// holding `guard` until it ends; a refused handshake gets API.md §1's
/// error.
pub(crate) fn upgrade<B, F, Fut>(
    guard: Arc<dyn std::any::Any + Send + Sync>,
    req: Request<B>,
    session: F,
) -> Resp
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    handshake::upgrade(guard, req, session).unwrap_or_else(|r| r.response(Rest::wire))
}

/// What every handler gets (built by `app` for each request).
#[derive(Clone)]
pub struct Ctx {
    pub core: Arc<Core>,
    /// The connection the request came on (its peer, the daemon's
    /// shutdown signal, the guard an upgraded session holds).
    pub conn: Conn,
    /// The webhook worker's view of pending deliveries, and its doorbell.
    pub webhooks: Arc<crate::webhooks::Monitor>,
}

impl Ctx {
    /// The client's address: the peer's, or what trusted proxies say.
    pub fn client_ip<B>(&self, req: &Request<B>) -> std::net::IpAddr {
        self.conn.client_ip(req.headers())
    }
}
