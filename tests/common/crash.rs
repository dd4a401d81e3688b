//! The crash and power-cut harnesses' helpers (durability.rs,
//! powercut.rs): unthrottled flags, a seeded generator, and [`SendLoad`],
//! senders built to be cut off.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::rooms::{check_message, msg_id};
use super::ws::{Ws, WS_TIMEOUT};

/// `serve` flags for the crash harnesses: rate limits high enough that the
/// senders are limited by the daemon's commit speed, not by policy.
pub const UNTHROTTLED: [&str; 4] = ["--msg-burst", "1000000", "--msg-rate", "1000000"];

/// A small xorshift generator: crash moments are random but reproducible
/// from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Records a push as acknowledged (any live delivery acknowledges); the same
/// id pushed twice must be the same message.
pub fn ack(acked: &mut BTreeMap<u64, Value>, m: Value) {
    let id = msg_id(&m);
    if let Some(prev) = acked.get(&id) {
        assert_eq!(prev, &m, "two different messages pushed with id {id}");
    } else {
        acked.insert(id, m);
    }
}

/// A seed for a harness's random choices: `$var` if set (to replay a run),
/// else the clock (odd, as xorshift needs a non-zero state).
pub fn seed_from_env(var: &str) -> u64 {
    env_u64(var).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    })
}

/// Senders posting to one room as fast as the daemon commits, one
/// `/chat/connect` socket each, never waiting for answers; every push a
/// socket receives is checked and recorded as acknowledged. Built to be
/// cut off: the tasks end when the daemon dies.
pub struct SendLoad {
    acked: Arc<Mutex<BTreeMap<u64, Value>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SendLoad {
    /// `texts[i]` is sent by `tokens[i]`.
    pub async fn start(
        addr: &str,
        tokens: &[String],
        room: &str,
        texts: Vec<Vec<String>>,
    ) -> SendLoad {
        let acked = Arc::<Mutex<_>>::default();
        let mut tasks = Vec::new();
        for (tok, texts) in tokens.iter().zip(texts) {
            let (mut sink, mut stream) = Ws::auth(addr, tok).await.stream.split();
            let acked_r = Arc::clone(&acked);
            // Reader: ends when the daemon dies (or stays silent for 30 s).
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(Ok(frame))) =
                    timeout(Duration::from_secs(30), stream.next()).await
                {
                    if let Message::Text(s) = frame {
                        let v: Value = serde_json::from_str(s.as_str()).expect("push is JSON");
                        let m = v["message"].clone();
                        check_message(&m);
                        ack(&mut acked_r.lock().unwrap(), m);
                    }
                }
            }));
            // Writer: stops at the first failed send.
            let room = room.to_string();
            tasks.push(tokio::spawn(async move {
                for t in texts {
                    let f = json!({"room": room, "messages": t}).to_string();
                    if !matches!(
                        timeout(WS_TIMEOUT, sink.send(Message::text(f))).await,
                        Ok(Ok(()))
                    ) {
                        break;
                    }
                }
            }));
        }
        SendLoad { acked, tasks }
    }

    /// Pushes seen so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Once the daemon is gone: waits for every task and returns what was
    /// acknowledged.
    pub async fn finish(self) -> BTreeMap<u64, Value> {
        for t in self.tasks {
            timeout(Duration::from_secs(40), t)
                .await
                .expect("client task did not end after the daemon died")
                .expect("client task panicked");
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}
