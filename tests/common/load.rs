//! Sending many messages as one user: [`Pacer`] keeps a user's send rate
//! inside what API.md §1 guarantees to pass the rate limiter (burst ≥ 100,
//! steady ≥ 20/s); [`send_until_echoed`] sends and waits for every
//! acknowledgement; [`collect_pushes`] gathers pushes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::rooms::{check_message, msg_text};
use super::ws::{Ws, WS_TIMEOUT};

/// A client-side token bucket strictly inside API.md §1's guaranteed send
/// rates (burst ≥ 100, steady ≥ 20/s), so a test that sends many messages
/// as one user is never legitimately rate-limited. Use one per user.
pub struct Pacer {
    tokens: f64,
    cap: f64,
    per_sec: f64,
    last: Instant,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            tokens: 90.0,
            cap: 90.0,
            per_sec: 18.0,
            last: Instant::now(),
        }
    }

    /// Waits until one more send is inside the guaranteed envelope.
    pub async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let dt = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.per_sec;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// Sends every text of `texts` to `room` over `ws` (each send paced by
/// `pacer`, using the seed's `messages` field) while reading this
/// connection's pushes, until every text has been pushed back to this very
/// connection with `poster == me` (= acknowledged). Returns every push this
/// connection received meanwhile, in arrival order. Panics if a text is
/// pushed back twice, if the socket closes, or if `within` passes.
pub async fn send_until_echoed(
    ws: &mut Ws,
    me: &str,
    room: &str,
    texts: &[String],
    pacer: &mut Pacer,
    within: Duration,
) -> Vec<Value> {
    let mut pending: HashSet<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(pending.len(), texts.len(), "texts must be unique");
    let mut acked: HashSet<String> = HashSet::new();
    let mut pushes = Vec::new();
    let mut next = 0usize;
    let deadline = tokio::time::Instant::now() + within;
    while !pending.is_empty() {
        tokio::select! {
            _ = pacer.take(), if next < texts.len() => {
                let frame = json!({"room": room, "messages": texts[next]}).to_string();
                timeout(WS_TIMEOUT, ws.stream.send(Message::text(frame)))
                    .await
                    .expect("WebSocket send timed out")
                    .unwrap_or_else(|e| panic!("send #{next} failed (after {} acks): {e}", acked.len()));
                next += 1;
            }
            frame = ws.stream.next() => {
                let v: Value = match frame {
                    Some(Ok(Message::Text(s))) => serde_json::from_str(s.as_str())
                        .unwrap_or_else(|e| panic!("push is not JSON ({e}): {s:?}")),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!(
                        "socket of {me} ended while sending: {other:?} (sent {next}, {} of {} echoed)",
                        acked.len(),
                        texts.len()
                    ),
                };
                let m = v.get("message").cloned().unwrap_or_else(|| panic!("unexpected frame {v}"));
                check_message(&m);
                if m["poster"] == json!(me) {
                    let t = msg_text(&m);
                    if pending.remove(t) {
                        acked.insert(t.to_string());
                    } else if acked.contains(t) {
                        panic!("message pushed twice to one connection: {m}");
                    }
                }
                pushes.push(m);
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!(
                    "{me}: only {} of {} messages echoed within {within:?} (sent {next})",
                    acked.len(),
                    texts.len()
                );
            }
        }
    }
    pushes
}

/// Reads message pushes from `ws` until `n` have arrived (bounded by `within`).
pub async fn collect_pushes(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            panic!("only {} of {n} pushes within {within:?}", out.len());
        }
        out.push(ws.recv_message(left).await);
    }
    out
}
