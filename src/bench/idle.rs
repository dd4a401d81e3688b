//! `idle`: opens N sockets (N = `--clients`, `--sockets-per-user` each),
//! authenticates them all, and holds them for `--duration`; the server's
//! RSS before and after gives its memory per idle authenticated socket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::report::{self, opt, Table};
use super::setup::Env;
use super::stats::ProcSample;
use super::BenchArgs;

const MIB: f64 = (1 << 20) as f64;

pub async fn main(args: &BenchArgs) -> Result<()> {
    let env = Env::open(args, args.baseline_server).await?;
    let n = args.clients;
    let spu = args.sockets_per_user;
    let users = env.users("u", n.div_ceil(spu)).await?;
    if env.server_pid.is_none() {
        env.progress("no --server-pid: server memory is not measured");
    }
    // Let the server settle after the logins before the first reading.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_before = env.server_pid.and_then(|p| ProcSample::read(Some(p)));
    let bench_before = ProcSample::read(None);
    let tokens: Vec<&str> = (0..n).map(|s| users[s / spu].token.as_str()).collect();
    let connect_started = Instant::now();
    let sockets = env.sockets(&tokens).await?;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let dropped = Arc::new(AtomicU64::new(0));
    let holders: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let dropped = dropped.clone();
            tokio::spawn(async move {
                // Reading answers the server's pings; anything that ends
                // the socket counts as a drop.
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    }
                }
                dropped.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_after = env.server_pid.and_then(|p| ProcSample::read(Some(p)));
    let bench_after = ProcSample::read(None);
    let hold = args.duration();
    let held_from = Instant::now();
    let mut server_peak = server_after.map_or(0, |s| s.rss_bytes);
    while held_from.elapsed() < hold {
        tokio::time::sleep(Duration::from_secs(1).min(hold.saturating_sub(held_from.elapsed())))
            .await;
        let s = env.server_pid.and_then(|p| ProcSample::read(Some(p)));
        if let Some(s) = s {
            server_peak = server_peak.max(s.rss_bytes);
        }
        env.progress(&format!(
            "[{}] idle {:>5.1}s  {n} sockets held  dropped {}  server RSS {}",
            env.server,
            held_from.elapsed().as_secs_f64(),
            dropped.load(Ordering::Relaxed),
            opt(s.map(|s| s.rss_bytes as f64 / MIB), 1) + " MiB",
        ));
    }
    let server_end = env.server_pid.and_then(|p| ProcSample::read(Some(p)));
    let dropped = dropped.load(Ordering::Relaxed);
    for h in holders {
        h.abort();
    }
    let per = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some((b.rss_bytes as f64 - a.rss_bytes as f64) / n as f64 / 1024.0),
        _ => None,
    };
    let server_kib = per(server_before, server_after);
    let server_kib_end = per(server_before, server_end);
    let bench_kib = per(bench_before, bench_after);
    let mut t = Table::new(&["", "value"]);
    t.row(vec!["server".into(), env.server.into()]);
    t.row(vec!["sockets (authenticated)".into(), n.to_string()]);
    t.row(vec!["users".into(), users.len().to_string()]);
    t.row(vec!["connect time s".into(), format!("{connect_secs:.1}")]);
    t.row(vec![
        "server RSS before MiB".into(),
        opt(server_before.map(|s| s.rss_bytes as f64 / MIB), 1),
    ]);
    t.row(vec![
        "server RSS with sockets MiB".into(),
        opt(server_after.map(|s| s.rss_bytes as f64 / MIB), 1),
    ]);
    t.row(vec!["server KiB per socket".into(), opt(server_kib, 2)]);
    t.row(vec![
        format!("server KiB per socket after {:.0} s", hold.as_secs_f64()),
        opt(server_kib_end, 2),
    ]);
    t.row(vec!["bench KiB per socket".into(), opt(bench_kib, 2)]);
    t.row(vec![
        "sockets dropped while held".into(),
        dropped.to_string(),
    ]);
    let text = format!("\n{}", t.render());
    let value = json!({
        "mode": "idle",
        "server": env.server,
        "sockets": n,
        "users": users.len(),
        "connect_s": connect_secs,
        "server_rss_before_bytes": server_before.map(|s| s.rss_bytes),
        "server_rss_after_bytes": server_after.map(|s| s.rss_bytes),
        "server_rss_end_bytes": server_end.map(|s| s.rss_bytes),
        "server_rss_peak_bytes": env.server_pid.map(|_| server_peak),
        "server_kib_per_socket": server_kib,
        "server_kib_per_socket_end": server_kib_end,
        "bench_kib_per_socket": bench_kib,
        "dropped": dropped,
        "lost": 0,
        "duplicates": 0,
    });
    report::emit(args, &text, &value)
}
