//! Smoke runs of every `parlor bench` mode against a spawned daemon, with
//! tiny numbers: they check that the tool works and that it reports no
//! loss and no duplicates — not speed.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, BIN};
use serde_json::Value;

/// A whole bench run may take this long (it bounds itself far below).
const RUN_TIMEOUT: Duration = Duration::from_secs(45);
const ADMIN_PW: &str = "bench-admin-secret";
/// The fleet of the fanout-driven runs: ten users in rooms of five, 100
/// messages a second in all.
const SMALL_FLEET: [&str; 6] = ["--clients", "10", "--room-size", "5", "--rate", "100"];

fn server() -> Server {
    server_with(&[])
}

/// A daemon with extra `serve` flags.
fn server_with(flags: &[&str]) -> Server {
    let mut s = Server::new();
    s.user_add("admin", "admin", ADMIN_PW);
    s.start_with(flags);
    s
}

/// Runs `parlor bench MODE ARGS… --json` against `srv`; asserts exit 0 and
/// returns the JSON it printed.
fn bench(srv: &Server, mode: &str, args: &[&str]) -> Value {
    let (ok, out, err) = run_bench(srv, mode, args);
    assert!(ok, "parlor bench {mode} failed\n--- stderr ---\n{err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("bench output is not JSON ({e}): {out:?}\n{err}"))
}

/// Runs `parlor bench MODE ARGS… --json` against `srv`, within
/// [`RUN_TIMEOUT`]: whether it exited 0, its stdout and its stderr.
fn run_bench(srv: &Server, mode: &str, args: &[&str]) -> (bool, String, String) {
    let url = format!("ws://{}", srv.addr());
    let mut cmd = Command::new(BIN);
    cmd.args(["bench", mode, "--url", &url, "--admin-user", "admin"])
        .args(["--admin-password", ADMIN_PW, "--json", "--timeout", "20"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn parlor bench");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let out = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "parlor bench {mode} did not finish within {RUN_TIMEOUT:?}\n{}",
                err_reader.join().unwrap_or_default()
            );
        }
    };
    let status = child.wait().expect("wait for parlor bench");
    let err = err_reader.join().unwrap_or_default();
    (status.success(), out, err)
}

/// `GET /admin/audit?QUERY` as the admin (one page).
fn audit_page(srv: &Server, query: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (token, _) = common::login(&srv.addr(), "admin", ADMIN_PW).await;
        common::get_as(&srv.addr(), &format!("/admin/audit?{query}"), &token)
            .await
            .expect(200)
    })
}

#[test]
fn fanout_and_the_baseline_deliver_everything_once() {
    let srv = server();
    let v = bench(
        &srv,
        "fanout",
        &[
            &SMALL_FLEET[..],
            &["--duration", "1.5", "--warmup", "0.5", "--compare-baseline"],
        ]
        .concat(),
    );
    assert_eq!(v["mode"], "fanout");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    for (run, server) in runs.iter().zip(["parlor", "baseline"]) {
        assert_eq!(run["server"], server);
        assert_eq!(run["lost_total"], 0, "{run}");
        assert_eq!(run["duplicates_total"], 0, "{run}");
        assert_eq!(run["dropped_connections"], 0, "{run}");
        let step = &run["steps"][0];
        // ~150 messages × 5 deliveries each.
        let deliveries = step["deliveries"].as_u64().unwrap();
        assert!(deliveries > 300, "{step}");
        assert_eq!(
            step["deliveries"].as_u64(),
            Some(step["sent"].as_u64().unwrap() * 5)
        );
        assert!(step["latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{step}");
        assert!(step["ack"]["count"].as_u64().unwrap() > 0, "{step}");
    }
}

#[test]
fn patient_chats_deliver_everything_once_and_say_so() {
    let srv = server();
    let v = bench(
        &srv,
        "fanout",
        &[
            &SMALL_FLEET[..],
            &["--duration", "1.5", "--warmup", "0", "--patient-chats"],
        ]
        .concat(),
    );
    let run = &v["runs"][0];
    assert_eq!(run["server"], "parlor");
    assert_eq!(run["room_kind"], "patient_chat", "{run}");
    assert_eq!(run["lost_total"], 0, "{run}");
    assert_eq!(run["duplicates_total"], 0, "{run}");
    assert_eq!(run["dropped_connections"], 0, "{run}");
    let step = &run["steps"][0];
    let sent = step["sent"].as_u64().unwrap();
    assert!(sent > 60, "{step}");
    // Each message reaches its chat's 5 members: the patient and 4 staff.
    assert_eq!(step["deliveries"].as_u64(), Some(sent * 5), "{step}");
    // Every message was a patient-chat post, with its audit record (no
    // warm-up: the step's messages are all there were).
    let page = audit_page(&srv, "kind=chat.post&pageSize=1000");
    assert_eq!(page["nextPageToken"], Value::Null, "{page}");
    let posts = page["records"].as_array().unwrap();
    assert_eq!(posts.len() as u64, sent, "chat.post records");
    // In two workspaces of their own, one patient chat each.
    let chats: std::collections::BTreeSet<(&str, &str)> = posts
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap(),
                r["detail"]["room"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(chats.len(), 2, "{chats:?}");
    assert!(
        chats.iter().all(|(t, _)| t.starts_with("bench-")),
        "{chats:?}"
    );
}

#[test]
fn erase_during_runs_each_step_twice_and_deletes_the_whole_chat() {
    let srv = server_with(&["--msg-rate", "100000", "--msg-burst", "100000"]);
    let v = bench(
        &srv,
        "fanout",
        &[
            &SMALL_FLEET[..],
            &["--duration", "1", "--warmup", "0.3"],
            &["--erase-during", "300", "--compare-baseline"],
        ]
        .concat(),
    );
    // The baseline has no erase API: its steps run once, and it says so.
    let base = &v["runs"][1];
    assert_eq!(base["server"], "baseline", "{v}");
    assert_eq!(base["erase_during"], serde_json::json!([]), "{base}");
    assert!(base["erase_skipped"].as_str().is_some(), "{base}");
    assert_eq!(base["lost_total"], 0, "{base}");
    let run = &v["runs"][0];
    assert_eq!(run["erase_skipped"], Value::Null, "{run}");
    assert_eq!(run["room_kind"], "group", "{run}");
    assert_eq!(run["lost_total"], 0, "{run}");
    assert_eq!(run["duplicates_total"], 0, "{run}");
    assert_eq!(run["steps"].as_array().unwrap().len(), 1, "{run}");
    let pairs = run["erase_during"].as_array().expect("erase_during");
    assert_eq!(pairs.len(), 1, "{run}");
    let p = &pairs[0];
    assert_eq!(p["messages"], 300, "{p}");
    assert_eq!(p["messages_deleted"], 300, "{p}");
    assert!(p["erase_ms"].as_f64().unwrap() > 0.0, "{p}");
    for k in ["p50_ms", "p99_ms", "max_ms"] {
        assert!(p["plain"][k].as_f64().unwrap() > 0.0, "plain {k}: {p}");
        assert!(
            p["during"]["latency"][k].as_f64().unwrap() > 0.0,
            "during {k}: {p}"
        );
    }
    let delta =
        p["during"]["latency"]["p99_ms"].as_f64().unwrap() - p["plain"]["p99_ms"].as_f64().unwrap();
    assert!(
        (p["p99_delta_ms"].as_f64().unwrap() - delta).abs() < 1e-9,
        "{p}"
    );
    assert!(p["during"]["deliveries"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["during"]["lost"], 0, "{p}");
}

#[test]
fn erase_during_names_the_rate_limit_when_the_fill_is_refused() {
    // The default --msg-burst (200) refuses a 300-message fill.
    let srv = server();
    let args = [
        &SMALL_FLEET[..],
        &[
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--erase-during",
            "300",
        ],
    ]
    .concat();
    let (ok, _, err) = run_bench(&srv, "fanout", &args);
    assert!(!ok, "{err}");
    assert!(
        err.contains("(429)") && err.contains("--msg-burst"),
        "{err}"
    );
}

#[test]
fn idle_holds_every_socket() {
    let srv = server();
    let v = bench(
        &srv,
        "idle",
        &[
            "--clients",
            "20",
            "--sockets-per-user",
            "10",
            "--duration",
            "1",
        ],
    );
    assert_eq!(v["mode"], "idle");
    assert_eq!(v["sockets"], 20);
    assert_eq!(v["users"], 2);
    assert_eq!(v["dropped"], 0, "{v}");
}

#[test]
fn history_times_both_reads_at_each_size() {
    let srv = server();
    let v = bench(
        &srv,
        "history",
        &["--messages", "60,120", "--writers", "2", "--samples", "5"],
    );
    assert_eq!(v["mode"], "history");
    let sizes = v["sizes"].as_array().expect("sizes");
    assert_eq!(sizes.len(), 2);
    assert_eq!(sizes[0]["messages"], 60);
    assert_eq!(sizes[1]["messages"], 120);
    for s in sizes {
        assert_eq!(s["retrieve_after_50"]["count"], 5, "{s}");
        assert_eq!(s["page_20"]["count"], 5, "{s}");
    }
    assert!(v["after_50_p50_ratio"].as_f64().is_some(), "{v}");
}

#[test]
fn login_bursts_during_fanout_lose_nothing_and_report_rss() {
    let srv = server();
    let v = bench(
        &srv,
        "login",
        &[
            &SMALL_FLEET[..],
            &["--duration", "2", "--warmup", "0.5", "--logins", "3"],
            &[
                "--login-bursts",
                "2",
                "--server-pid",
                &srv.pid().to_string(),
            ],
        ]
        .concat(),
    );
    assert_eq!(v["mode"], "login");
    assert_eq!(v["logins_ok"], 6, "{v}");
    assert_eq!(v["login_failures"], serde_json::json!([]), "{v}");
    for k in ["before", "peak", "after"] {
        let rss = &v[format!("server_rss_{k}_bytes")];
        assert!(rss.as_u64().is_some_and(|b| b > 0), "RSS {k}: {v}");
    }
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert!(v["steady"]["deliveries"].as_u64().unwrap() > 0, "{v}");
    assert!(v["burst"]["deliveries"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn a_remote_target_is_refused_without_allow_remote() {
    let out = Command::new(BIN)
        .args([
            "bench",
            "fanout",
            "--url",
            "ws://192.0.2.1:8080",
            "--admin-token",
            "x",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run parlor bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-remote"), "{err}");
}
