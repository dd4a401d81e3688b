//! The conformance echo (issue 7): `GET /conformance/echo`, a WebSocket
//! that sends every message back as it came — text as the same text,
//! binary as the same bytes — so a protocol test suite (Autobahn's
//! fuzzing client, `.ci/autobahn`) can drive parlor's WebSocket stack.
//!
//! It is not a chat API: no users, no store, no hub. What it tests is
//! everything else, unchanged: the same hand-rolled upgrade, the same
//! tungstenite limits (128 KiB messages and frames, over → 1009) and the
//! same session loop (`net::ws::run`: close codes, pings, the
//! per-connection rate limit) as every real dialect. Off unless the daemon
//! runs with the hidden `--conformance-echo` flag; otherwise the path is
//! an unknown one (404).

use hyper::body::Incoming;
use hyper::Request;

use super::Ctx;
use crate::core::hub::Event;
use crate::net::http::Resp;
use crate::net::ws::{self, Dialect, Out};

/// The route.
pub const PATH: &str = "/conformance/echo";

/// `GET /conformance/echo` — WebSocket; no authentication.
pub fn connect(ctx: Ctx, req: Request<Incoming>) -> Resp {
    super::upgrade(ctx.conn.guard.clone(), req, move |socket| {
        ws::run("echo", ctx.core, socket, Echo, None, ctx.conn.shutdown)
    })
}

/// Every message back, unchanged.
struct Echo;

impl Dialect for Echo {
    /// Nobody to authenticate: never closed for not doing so.
    const NEEDS_AUTH: bool = false;
    const SLOT: usize = super::slot::ECHO;

    async fn on_text(&mut self, text: &str) -> Vec<Out> {
        vec![Out::Text(text.to_owned())]
    }

    fn on_binary(&mut self, data: &[u8]) -> Vec<Out> {
        vec![Out::Binary(data.to_vec())]
    }

    fn render(_ev: &Event) -> Option<String> {
        None
    }
}
