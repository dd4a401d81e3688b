//! One client connection of the [`Engine`](super::Engine): its socket, its
//! sending timer (open loop: staggered over the interval; closed loop: a
//! window of messages in flight), and its receive accounting — each
//! delivery timed against its stamp and checked per sender for loss and
//! duplicates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::{Plan, Shared};
use crate::bench::client::{self, Ws};
use crate::bench::stats::{Seen, Stamp, Tracker};

/// One client: its socket, its sending timer, its receive accounting.
pub(super) struct ClientTask {
    pub(super) me: u32,
    pub(super) index: usize,
    pub(super) room: Arc<str>,
    /// Every member of the room (the senders this connection hears).
    pub(super) mates: Arc<[u32]>,
    pub(super) fanout: u64,
    pub(super) payload: usize,
    pub(super) senders: usize,
    pub(super) user_gap: Duration,
    pub(super) shared: Arc<Shared>,
}

impl ClientTask {
    /// When this client's first open-loop send of a plan is due: the
    /// clients are spread evenly over one interval.
    fn first_send(&self, plan: &Plan) -> Option<Instant> {
        if plan.rate <= 0.0 || plan.closed || plan.stop {
            return None;
        }
        let interval = self.senders as f64 / plan.rate;
        Some(
            plan.start
                + Duration::from_secs_f64(interval * self.index as f64 / self.senders as f64),
        )
    }

    pub(super) async fn run(self, mut ws: Ws, mut plans: watch::Receiver<Plan>) {
        let sh = self.shared.clone();
        let mut tracker = Tracker::default();
        let mut seq = 0u64;
        let mut plan = plans.borrow_and_update().clone();
        let mut next_at = self.first_send(&plan);
        let mut in_flight = 0usize;
        let mut last_send: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(400 * 86_400);
        let sleep = tokio::time::sleep_until(far.into());
        tokio::pin!(sleep);
        let mut armed = far;
        let why = loop {
            let want = if plan.rate <= 0.0 || plan.stop {
                None
            } else if !plan.closed {
                next_at
            } else if in_flight < plan.window {
                Some(last_send.map_or(plan.start, |t| (t + self.user_gap).max(plan.start)))
            } else {
                None
            };
            let target = want.unwrap_or(far);
            if target != armed {
                sleep.as_mut().reset(target.into());
                armed = target;
            }
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        if let Some(st) = Stamp::find(t.as_bytes()) {
                            let lat = sh.clock.now_us().saturating_sub(st.sent_us);
                            let seen = tracker.seen(st.sender, st.seq);
                            let own = st.sender == self.me;
                            if own && seen != Seen::Duplicate {
                                in_flight = in_flight.saturating_sub(1);
                            }
                            sh.rec().delivered(&st, seen, lat, own);
                        }
                    }
                    Some(Ok(Message::Close(c))) => {
                        break Some(format!("closed by the server: {}", c.map_or_else(
                            || "no reason".to_string(),
                            |f| format!("{} {}", u16::from(f.code), f.reason),
                        )));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("socket error: {e}")),
                    None => break Some("socket ended".into()),
                },
                changed = plans.changed() => {
                    if changed.is_err() {
                        break None;
                    }
                    plan = plans.borrow_and_update().clone();
                    if plan.stop {
                        break None;
                    }
                    next_at = self.first_send(&plan);
                    sh.acted[self.index].store(plan.gen, Ordering::Release);
                }
                () = &mut sleep, if want.is_some() => {
                    // The stamp is the moment of the write: the timer's
                    // 1 ms granularity is the generator's, not the
                    // server's. Lateness against the schedule is kept
                    // apart (`send_lag`), and a step whose generator sent
                    // under 95 % of its rate does not count as held.
                    let sched = if plan.closed { Instant::now() } else { armed };
                    let st = Stamp {
                        phase: plan.phase,
                        sender: self.me,
                        seq,
                        sent_us: sh.clock.now_us(),
                    };
                    let frame = format!(
                        "{{\"room\":\"{}\",\"messages\":\"{}\"}}",
                        self.room,
                        st.text(self.payload)
                    );
                    match timeout(sh.net_timeout, ws.send(Message::text(frame))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Some(format!("send failed: {e}")),
                        Err(_) => break Some("send timed out: the server stopped reading".into()),
                    }
                    let now = Instant::now();
                    seq += 1;
                    sh.sent[self.me as usize].store(seq, Ordering::Relaxed);
                    let lag = now.saturating_duration_since(sched).as_micros() as u64;
                    sh.rec().sent(plan.phase, self.fanout, lag);
                    if plan.closed {
                        in_flight += 1;
                        last_send = Some(now);
                    } else {
                        let interval = Duration::from_secs_f64(self.senders as f64 / plan.rate);
                        next_at = next_at.map(|t| t + interval);
                    }
                    // The sleep has fired: re-arm it on the next turn.
                    armed = far - Duration::from_secs(1);
                }
            }
        };
        let mut ws = Some(ws);
        sh.acted[self.index].store(u64::MAX, Ordering::Release);
        if let Some(why) = why {
            sh.dropped(why);
            ws = None;
            // Count what this connection missed once the senders are done.
            while plans.changed().await.is_ok() && !plans.borrow().stop {}
        }
        let missing: u64 = self
            .mates
            .iter()
            .map(|&s| tracker.missing(s, sh.sent[s as usize].load(Ordering::Relaxed)))
            .sum();
        sh.missing.fetch_add(missing, Ordering::Relaxed);
        if let Some(ws) = ws {
            client::ws_close(ws).await;
        }
    }
}
