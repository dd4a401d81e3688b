//! `history`: fills one room (a reader and `--writers` writers) up to each
//! size of `--messages`, and at each size times, over one keep-alive
//! connection, `retrieve` with `after` 50 messages before the end (50
//! messages back) and a 20-message page (`after` in the middle, `limit`
//! 20). Both must cost the same at 10k and at 1M messages.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Http, Ws};
use super::report::{self, ms, Table};
use super::setup::Env;
use super::stats::{message_id, Hist, Stamp, Summary};
use super::BenchArgs;

/// Messages each writer keeps in flight while filling.
const FILL_WINDOW: usize = 64;
/// The two reads timed at each size.
const TAIL: usize = 50;
const PAGE: usize = 20;

struct Writer {
    me: u32,
    ws: Ws,
    seq: u64,
}

/// What one fill round gave.
struct Fill {
    ids: Vec<u64>,
    ack: Hist,
}

pub async fn main(args: &BenchArgs) -> Result<()> {
    let env = Env::open(args, args.baseline_server).await?;
    let users = env.users("h", args.writers + 1).await?;
    let rooms = env.rooms(&users, users.len()).await?;
    let room = rooms[0].id.clone();
    let reader = users[0].token.clone();
    let tokens: Vec<&str> = users[1..].iter().map(|u| u.token.as_str()).collect();
    let sockets = env.sockets(&tokens).await?;
    let mut writers: Vec<Writer> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| Writer {
            me: i as u32,
            ws,
            seq: 0,
        })
        .collect();
    let total_rate = args.user_rate * args.writers as f64;
    let last = *args.messages.last().expect("checked non-empty");
    env.progress(&format!(
        "filling to {last} messages at up to {total_rate:.0} msg/s ({} writers × --user-rate {}): at least {:.0} s",
        args.writers,
        args.user_rate,
        last as f64 / total_rate
    ));
    let mut ids: Vec<u64> = Vec::new();
    let mut rows = Vec::new();
    let mut http = Http::new(&env.target);
    for &size in &args.messages {
        let need = size.saturating_sub(ids.len() as u64);
        let started = Instant::now();
        let fill = fill(&env, &mut writers, &room, need).await?;
        let fill_secs = started.elapsed().as_secs_f64();
        ids.extend(fill.ids);
        ids.sort_unstable();
        let n = ids.len();
        // `after` 50 before the end: exactly the room's last 50 messages.
        let tail_after = ids[n.saturating_sub(TAIL + 1)];
        let want_tail = (n - 1).min(TAIL);
        let tail = time_retrieve(
            &env,
            &mut http,
            &reader,
            json!({"after": tail_after}),
            want_tail,
        )
        .await?;
        // A page from the middle of the history.
        let mid = ids[n / 2];
        let want_page = (n - n / 2 - 1).min(PAGE);
        let page = time_retrieve(
            &env,
            &mut http,
            &reader,
            json!({"after": mid, "limit": PAGE}),
            want_page,
        )
        .await?;
        env.progress(&format!(
            "[{}] {size} messages: retrieve-50 p50 {} ms, page-20 p50 {} ms",
            env.server,
            ms(tail.p50_ms),
            ms(page.p50_ms)
        ));
        rows.push(json!({
            "messages": n,
            "fill_s": fill_secs,
            "fill_rate": need as f64 / fill_secs.max(1e-9),
            "fill_ack": fill.ack.summary(),
            "retrieve_after_50": tail,
            "page_20": page,
        }));
    }
    for w in writers {
        super::client::ws_close(w.ws).await;
    }
    let ratio = |key: &str| -> Option<f64> {
        let first = rows.first()?[key]["p50_ms"].as_f64()?;
        let last = rows.last()?[key]["p50_ms"].as_f64()?;
        (first > 0.0).then(|| last / first)
    };
    let (r_tail, r_page) = (ratio("retrieve_after_50"), ratio("page_20"));
    let mut t = Table::new(&[
        "messages",
        "fill msg/s",
        "ack p50",
        "ack p99",
        "after-50 p50",
        "after-50 p99",
        "page-20 p50",
        "page-20 p99",
    ]);
    for r in &rows {
        let f = |k: &str, p: &str| ms(r[k][p].as_f64().unwrap_or(0.0));
        t.row(vec![
            r["messages"].to_string(),
            format!("{:.0}", r["fill_rate"].as_f64().unwrap_or(0.0)),
            f("fill_ack", "p50_ms"),
            f("fill_ack", "p99_ms"),
            f("retrieve_after_50", "p50_ms"),
            f("retrieve_after_50", "p99_ms"),
            f("page_20", "p50_ms"),
            f("page_20", "p99_ms"),
        ]);
    }
    let pct = |r: Option<f64>| r.map_or("-".into(), |r| format!("{:+.0} %", 100.0 * (r - 1.0)));
    let text = format!(
        "\n{} — one room, {} writers, {} timed requests of each kind per size (ms)\n{}\
         p50 at the largest size vs the smallest: after-50 {}, page-20 {}\n",
        env.server,
        args.writers,
        args.samples,
        t.render(),
        pct(r_tail),
        pct(r_page),
    );
    let value = json!({
        "mode": "history",
        "server": env.server,
        "writers": args.writers,
        "samples": args.samples,
        "sizes": rows,
        "after_50_p50_ratio": r_tail,
        "page_20_p50_ratio": r_page,
        "lost": 0,
        "duplicates": 0,
    });
    report::emit(args, &text, &value)
}

/// Sends `need` more messages into the room, spread over the writers,
/// each paced by `--user-rate` and at most `FILL_WINDOW` in flight, until
/// every one has come back to its writer (whose ids are collected).
async fn fill(env: &Env, writers: &mut [Writer], room: &str, need: u64) -> Result<Fill> {
    let w = writers.len() as u64;
    let gap = Duration::from_secs_f64(1.0 / env.args.user_rate.max(0.001));
    let stall = env.args.net_timeout();
    let payload = env.args.payload;
    let clock = env.clock;
    let jobs = writers.iter_mut().enumerate().map(|(i, wr)| {
        let quota = need / w + u64::from((i as u64) < need % w);
        async move {
            let mut ids = Vec::with_capacity(quota as usize);
            let mut ack = Hist::default();
            let (mut sent, mut in_flight) = (0u64, 0usize);
            let mut next_at = Instant::now();
            let mut last_progress = Instant::now();
            while (ids.len() as u64) < quota {
                let can_send = sent < quota && in_flight < FILL_WINDOW;
                let wait = if can_send {
                    next_at.saturating_duration_since(Instant::now())
                } else {
                    stall
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait), if can_send => {
                        let st = Stamp { phase: 0, sender: wr.me, seq: wr.seq, sent_us: clock.now_us() };
                        let frame = format!("{{\"room\":\"{room}\",\"messages\":\"{}\"}}", st.text(payload));
                        timeout(stall, wr.ws.send(Message::text(frame)))
                            .await
                            .map_err(|_| anyhow!("writer {}: send timed out", wr.me))??;
                        wr.seq += 1;
                        sent += 1;
                        in_flight += 1;
                        next_at = (next_at + gap).max(Instant::now() - gap * 4);
                    }
                    frame = timeout(stall, wr.ws.next()) => {
                        let frame = frame.map_err(|_| anyhow!(
                            "writer {}: nothing came back for {stall:?} ({} of {quota} acknowledged): \
                             is the server's --msg-rate/--msg-burst above --user-rate?",
                            wr.me, ids.len()
                        ))?;
                        match frame {
                            Some(Ok(Message::Text(t))) => {
                                let b = t.as_bytes();
                                if let Some(st) = Stamp::find(b) {
                                    if st.sender == wr.me {
                                        let id = message_id(b).ok_or_else(|| anyhow!("a push without an id: {}", t.as_str()))?;
                                        ids.push(id);
                                        ack.record_us(clock.now_us().saturating_sub(st.sent_us));
                                        in_flight = in_flight.saturating_sub(1);
                                        if wr.me == 0 && last_progress.elapsed() >= Duration::from_secs(1) {
                                            last_progress = Instant::now();
                                            env.progress(&format!(
                                                "[{}] filling: writer 0 has {}/{quota} acknowledged",
                                                env.server, ids.len()
                                            ));
                                        }
                                    }
                                }
                            }
                            Some(Ok(Message::Close(c))) => bail!("writer {}: closed by the server: {c:?}", wr.me),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(e).context(format!("writer {}", wr.me)),
                            None => bail!("writer {}: the socket ended", wr.me),
                        }
                    }
                }
            }
            Ok::<_, anyhow::Error>((ids, ack))
        }
    });
    let mut out = Fill {
        ids: Vec::with_capacity(need as usize),
        ack: Hist::default(),
    };
    for r in futures_util::future::join_all(jobs).await {
        let (ids, ack) = r?;
        out.ids.extend(ids);
        out.ack.add(&ack);
    }
    Ok(out)
}

/// Times `--samples` sequential `retrieve` calls (first byte to last,
/// on one keep-alive connection; one untimed call first) and checks each
/// returns `want` messages.
async fn time_retrieve(
    env: &Env,
    http: &mut Http,
    token: &str,
    body: serde_json::Value,
    want: usize,
) -> Result<Summary> {
    let mut h = Hist::default();
    for k in 0..=env.args.samples {
        let t0 = Instant::now();
        let r = http.post("/chat/retrieve", Some(token), &body).await?;
        let us = t0.elapsed().as_micros() as u64;
        let v = r.expect(200, "retrieve")?;
        let got = v["messages"].as_array().map_or(0, Vec::len);
        if got != want {
            bail!("retrieve {body} returned {got} messages, expected {want}");
        }
        if k > 0 {
            h.record_us(us);
        }
    }
    Ok(h.summary())
}
