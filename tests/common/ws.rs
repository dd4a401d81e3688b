//! WebSocket clients: [`Ws`] for `/chat/connect` (and the typed and
//! actions dialects' paths), every send and receive bounded by a timeout.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::rooms::check_message;

/// Default wait for one WebSocket frame that must arrive.
pub const WS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is observed for.
pub const SILENCE: Duration = Duration::from_millis(300);

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next WebSocket event was.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The stream ended (or errored) without a close frame.
    Ended,
}

/// A client connection to `ws://ADDR/chat/connect`.
pub struct Ws {
    pub stream: WsStream,
}

impl Ws {
    /// Opens the WebSocket (no auth frame yet).
    pub async fn open(addr: &str) -> Ws {
        Ws::open_path(addr, "/chat/connect").await
    }

    /// `/ws` (the typed dialect), authenticated on upgrade with
    /// `Authorization: Bearer`.
    pub async fn typed(addr: &str, token: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("WebSocket handshake to /ws timed out")
            .expect("WebSocket handshake to /ws failed");
        Ws { stream }
    }

    /// `ws://ADDR{path}` with no authentication yet (the actions dialect's
    /// paths: `/actions`, `/dev`, …; the conformance echo).
    pub async fn open_path(addr: &str, path: &str) -> Ws {
        let url = format!("ws://{addr}{path}");
        let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake to {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake to {url} failed: {e}"));
        Ws { stream }
    }

    /// `/actions` after `ready` with `token`, its reply asserted.
    pub async fn actions_ready(addr: &str, token: &str) -> Ws {
        let mut ws = Ws::open_path(addr, "/actions").await;
        ws.send_json(&json!({"action": "ready", "authToken": token}))
            .await;
        assert_eq!(
            ws.recv_json(WS_TIMEOUT).await,
            json!({"message": "Connection ready"})
        );
        ws
    }

    /// Opens, sends `{"auth_token": token}` and asserts `{"status":"CONNECTED"}`.
    pub async fn auth(addr: &str, token: &str) -> Ws {
        let mut ws = Ws::open(addr).await;
        ws.send_json(&json!({"auth_token": token})).await;
        let v = ws.recv_json(WS_TIMEOUT).await;
        assert_eq!(v, json!({"status": "CONNECTED"}), "auth reply");
        ws
    }

    pub async fn send(&mut self, m: Message) {
        timeout(WS_TIMEOUT, self.stream.send(m))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send failed");
    }

    pub async fn send_text(&mut self, s: impl Into<String>) {
        self.send(Message::text(s.into())).await;
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.send(Message::binary(b)).await;
    }

    /// Sends `{"room": room, "messages": text}`.
    pub async fn send_msg(&mut self, room: &str, text: &str) {
        self.send_json(&json!({"room": room, "messages": text}))
            .await;
    }

    /// The next data/close event within `t` (pings/pongs skipped); panics on
    /// timeout.
    pub async fn next_frame(&mut self, t: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket frame within {t:?}"));
            return match next {
                None | Some(Err(_)) => Frame::Ended,
                Some(Ok(Message::Text(s))) => Frame::Text(s.to_string()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => Frame::Close(c.map(|f| u16::from(f.code))),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
        }
    }

    /// The next Text frame parsed as JSON; fails on timeout, close or
    /// anything that is not a JSON text frame.
    pub async fn recv_json(&mut self, t: Duration) -> Value {
        match self.next_frame(t).await {
            Frame::Text(s) => serde_json::from_str(&s)
                .unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {s:?}")),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// The next frame must be a message push `{"message":{…}}`; returns the
    /// inner message object (shape-checked).
    pub async fn recv_message(&mut self, t: Duration) -> Value {
        let v = self.recv_json(t).await;
        let m = v
            .get("message")
            .filter(|m| m.is_object())
            .unwrap_or_else(|| panic!("expected a message push, got {v}"))
            .clone();
        check_message(&m);
        m
    }

    /// Asserts that no data frame (and no close) arrives during `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Waits (bounded by `t`) for the server to close the connection; returns
    /// the close code if a close frame came. Panics if a data frame arrives.
    pub async fn expect_closed(&mut self, t: Duration) -> Option<u16> {
        match self.next_frame(t).await {
            Frame::Close(code) => code,
            Frame::Ended => None,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}
