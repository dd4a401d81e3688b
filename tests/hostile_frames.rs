//! Bad input at scale (issue 7): 10,000 random and malformed frames across
//! the WebSocket dialects. Each is answered by the dialect's own error (or,
//! for the rooms dialect, by nothing), or the socket is closed with one of
//! 1002/1007/1008/1009 — never a crash — and a bystander keeps chatting.
//! Reproducible: the seed is printed (`PARLOR_FUZZ_SEED`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = WS_TIMEOUT;
const FRAMES: usize = 10_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const KEYS: &[&str] = &[
    "action",
    "authToken",
    "type",
    "data",
    "room",
    "messages",
    "message",
    "auth_token",
    "chat",
    "chatId",
    "chat_id",
    "text",
    "last",
    "date_from",
    "date_to",
    "recipient_ids",
    "is_read",
    "last_read_message",
    "after",
    "limit",
    "",
    "\u{0}",
    "🙂",
];
const WORDS: &[&str] = &[
    "ready",
    "create_chat",
    "get_messages",
    "send_message",
    "read_message",
    "getChats",
    "createEmptyChat",
    "joinChat",
    "getChatDetails",
    "newMessage",
    "getChatMessages",
    "1",
    "0",
    "-1",
    "18446744073709551616",
    "yesterday",
    "last_7_days",
    "2026-02-30",
    "",
    "\"",
    "\\",
    "null",
];

/// A random JSON value, biased towards the dialects' vocabulary.
fn value(r: &mut Rng, depth: usize) -> Value {
    match r.below(if depth > 3 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(r.below(2) == 0),
        2 => json!(r.next() as i64),
        3 => json!(r.next() as f64 / 7.0),
        4 | 5 => json!(r.pick(WORDS)),
        6 => Value::Array((0..r.below(4)).map(|_| value(r, depth + 1)).collect()),
        _ => {
            let mut o = serde_json::Map::new();
            for _ in 0..r.below(5) {
                o.insert(r.pick(KEYS).to_owned(), value(r, depth + 1));
            }
            Value::Object(o)
        }
    }
}

/// A hostile frame: random JSON, mangled JSON, random bytes as text, or a
/// binary frame.
fn frame(r: &mut Rng, valid: &str) -> Message {
    match r.below(6) {
        0 | 1 => Message::text(value(r, 0).to_string()),
        2 => {
            // A valid frame, truncated or with a byte changed.
            let mut b = valid.as_bytes().to_vec();
            if r.below(2) == 0 {
                b.truncate(r.below(b.len().max(1)));
            } else if !b.is_empty() {
                let i = r.below(b.len());
                b[i] = b"{}[]\":,x0"[r.below(9)];
            }
            Message::text(String::from_utf8_lossy(&b).into_owned())
        }
        3 => {
            let n = r.below(64);
            Message::text(
                (0..n)
                    .map(|_| char::from(32 + r.below(95) as u8))
                    .collect::<String>(),
            )
        }
        4 => Message::Binary(
            (0..r.below(64))
                .map(|_| r.next() as u8)
                .collect::<Vec<u8>>()
                .into(),
        ),
        _ => Message::text(
            json!({"type": r.pick(WORDS), "action": r.pick(WORDS), "data": value(r, 1)})
                .to_string(),
        ),
    }
}

/// The three dialects' sockets, authenticated, and a valid frame for each.
async fn sockets(w: &World, room: &str) -> Vec<(&'static str, Ws, String)> {
    let addr = w.addr();
    let rooms = Ws::auth(&addr, &w.alice.token).await;
    let mut actions = Ws::open_path(&addr, "/actions").await;
    actions
        .send_json(&json!({"action": "ready", "authToken": w.alice.token}))
        .await;
    assert_eq!(actions.recv_json(T).await["message"], "Connection ready");
    let typed = Ws::open_path(&addr, &format!("/ws?token={}", w.alice.token)).await;
    vec![
        ("rooms", rooms, json!({"room": room, "messages": "ok"}).to_string()),
        (
            "actions",
            actions,
            json!({"action": "send_message", "authToken": w.alice.token, "chat_id": room, "message": "ok"})
                .to_string(),
        ),
        (
            "typed",
            typed,
            json!({"type": "newMessage", "data": {"chat": room.parse::<u64>().unwrap(), "text": "ok"}}).to_string(),
        ),
    ]
}

/// Whether a reply is the dialect's error shape.
fn is_error(dialect: &str, v: &Value) -> bool {
    match dialect {
        "actions" => v["action"] == "error" && v["error_code"].is_string(),
        "typed" => v["type"] == "error" && v["data"]["code"].is_string(),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_hostile_frames_get_errors_or_clean_closes_and_hurt_no_one() {
    let seed = std::env::var("PARLOR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("hostile frames: PARLOR_FUZZ_SEED={seed}");
    let mut r = Rng(seed);
    let mut w = World::new().await;
    // Rate limits out of the way: this is about parsing, not pacing.
    w.srv.kill9();
    w.srv
        .start_with(&["--msg-burst", "1000000", "--msg-rate", "1000000"]);
    let addr = w.addr();
    let room = create_dm(&addr, &w.alice.token, &w.bob.id).await;
    let mut bystander = Ws::auth(&addr, &w.bob.token).await;

    let mut socks = sockets(&w, &room).await;
    let (mut sent, mut errors, mut closes, mut stored) = (0, 0, 0, 0);
    while sent < FRAMES {
        let i = r.below(socks.len());
        let f = frame(&mut r, &socks[i].2);
        let (dialect, ws, _) = &mut socks[i];
        ws.send(f.clone()).await;
        sent += 1;
        // What may come back: the dialect's error, an event caused by a
        // frame that happened to be valid, or nothing (rooms dialect).
        loop {
            let wait = if *dialect == "rooms" {
                Duration::from_millis(2)
            } else {
                T
            };
            match tokio::time::timeout(wait, ws.stream.next_frame_or_end()).await {
                // Silence: only the rooms dialect may answer nothing.
                Err(_) if *dialect == "rooms" => break,
                Err(_) => panic!("{dialect}: no answer within {T:?} to {f:?}"),
                Ok(Frame::Text(s)) => {
                    let v: Value = serde_json::from_str(&s)
                        .unwrap_or_else(|_| panic!("{dialect}: reply is not JSON: {s}"));
                    if is_error(dialect, &v) {
                        errors += 1;
                        break;
                    }
                    // A valid request slipped through: its reply or event.
                    stored += 1;
                    if *dialect == "rooms" {
                        continue;
                    }
                    break;
                }
                Ok(Frame::Close(code)) => {
                    let code = code.unwrap_or(0);
                    assert!(
                        [1002, 1007, 1008, 1009].contains(&code),
                        "{dialect}: closed with {code} after {f:?}"
                    );
                    closes += 1;
                    let fresh = sockets(&w, &room).await;
                    let j = fresh.into_iter().find(|s| s.0 == *dialect).unwrap();
                    socks[i] = j;
                    break;
                }
                Ok(other) => panic!("{dialect}: unexpected {other:?} after {f:?}"),
            }
        }
    }
    eprintln!(
        "hostile frames: {sent} sent, {errors} errors, {stored} valid by chance, {closes} closes"
    );
    assert!(
        errors > FRAMES / 3,
        "most frames to actions/typed are errors"
    );

    // Invalid UTF-8 in a text frame and an oversized frame: clean closes.
    let (_, mut ws, _) = sockets(&w, &room).await.into_iter().next().unwrap();
    let bad = RawFrame::message(vec![0x22, 0xff, 0xfe, 0x22], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await;
    assert_eq!(ws.expect_closed(T).await, Some(1007));
    let (_, mut ws, _) = sockets(&w, &room).await.into_iter().nth(2).unwrap();
    ws.send(Message::text("x".repeat(200 * 1024))).await;
    assert_eq!(ws.expect_closed(T).await, Some(1009));

    // The bystander was unaffected: the daemon still serves it, in order.
    let mut alice = Ws::auth(&addr, &w.alice.token).await;
    alice.send_msg(&room, "still here").await;
    let mut last = 0;
    loop {
        let m = bystander.recv_message(T).await;
        assert!(msg_id(&m) > last, "bystander saw ids out of order");
        last = msg_id(&m);
        if msg_text(&m) == "still here" {
            break;
        }
    }
    assert_eq!(get(&addr, "/healthz").await.status, 200);
}

/// The next data or close frame, without a deadline of its own (the caller
/// decides whether silence is an answer).
trait NextFrame {
    fn next_frame_or_end(&mut self) -> impl std::future::Future<Output = Frame> + Send;
}

impl NextFrame for WsStream {
    async fn next_frame_or_end(&mut self) -> Frame {
        use futures_util::StreamExt;
        loop {
            return match self.next().await {
                None | Some(Err(_)) => Frame::Ended,
                Some(Ok(Message::Text(s))) => Frame::Text(s.to_string()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => Frame::Close(c.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
            };
        }
    }
}
