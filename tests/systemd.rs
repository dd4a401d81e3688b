//! systemd integration (issue 7): the notify protocol as systemd speaks it
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`), played here by a
//! Unix datagram socket, and the unit file's hardening score.

mod common;

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A stand-in for systemd's notification socket.
struct Notify {
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        Notify {
            sock,
            _dir: dir,
            path,
        }
    }

    /// The next datagram within `t`, or `None`.
    fn recv(&self, t: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(t)).expect("read timeout");
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits (bounded by `t`) for a datagram with the line `want`; returns
    /// every datagram seen up to and including it.
    fn wait_for(&self, want: &str, t: Duration) -> Vec<String> {
        let deadline = Instant::now() + t;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(d) => {
                    let hit = d.lines().any(|l| l == want);
                    seen.push(d);
                    if hit {
                        return seen;
                    }
                }
                None => break,
            }
        }
        panic!("no {want:?} within {t:?}; got {seen:?}");
    }
}

fn start(server: &mut Server, notify: &Notify, watchdog: &[(&str, &str)]) {
    let mut envs: Vec<(&str, &OsStr)> = vec![("NOTIFY_SOCKET", notify.path.as_os_str())];
    envs.extend(watchdog.iter().map(|(k, v)| (*k, OsStr::new(*v))));
    server.start_with_env(&[], &envs);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_after_bind_watchdog_keepalives_and_stopping_on_sigterm() {
    let notify = Notify::new();
    let mut server = Server::new();
    // 400 ms: keep-alives every 200 ms.
    start(&mut server, &notify, &[("WATCHDOG_USEC", "400000")]);
    let first = notify.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(
        first.len(),
        1,
        "READY=1 must be the first message: {first:?}"
    );
    assert!(
        first[0].contains("STATUS=serving on 127.0.0.1:"),
        "{first:?}"
    );
    // Ready means serving.
    let addr = server.addr();
    assert_eq!(get(&addr, "/readyz").await.expect(200)["status"], "ready");

    // Keep-alives keep coming while the daemon is healthy.
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(5));
    }

    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    let rest = notify.wait_for("STOPPING=1", Duration::from_secs(1));
    assert!(
        rest.iter().all(|d| !d.contains("READY=1")),
        "READY=1 sent twice: {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watchdog_meant_for_another_process_is_not_fed() {
    let notify = Notify::new();
    let mut server = Server::new();
    // systemd names the main process in WATCHDOG_PID; pid 1 is not us.
    start(
        &mut server,
        &notify,
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    notify.wait_for("READY=1", Duration::from_secs(10));
    // Ten intervals' worth of silence.
    if let Some(d) = notify.recv(Duration::from_secs(1)) {
        panic!("unexpected notification {d:?}");
    }
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
    notify.wait_for("STOPPING=1", Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_notify_socket_nothing_changes() {
    // Plain `parlor serve` (no systemd): starts and stops as before.
    let mut server = Server::started();
    assert_eq!(get(&server.addr(), "/healthz").await.status, 200);
    assert_eq!(server.terminate(Duration::from_secs(10)), Some(0));
}

/// The shipped unit keeps its `systemd-analyze security` exposure at or
/// below the figure the README quotes. Skips where systemd-analyze (or its
/// `--offline` mode, systemd ≥ 250) is missing.
#[test]
fn unit_file_hardening_score() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/parlor.service");
    let text = std::fs::read_to_string(&unit).expect("read unit");
    // The last two: packaging/build-deb rewrites that ExecStart path, and
    // the .deb's /etc/default/parlor is read through that line.
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "NotifyAccess=main",
        "ExecStart=/usr/local/bin/parlor ",
        "EnvironmentFile=-/etc/default/parlor",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
    let out = match std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped: systemd-analyze not runnable ({e})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    else {
        eprintln!(
            "skipped: systemd-analyze security --offline gave no score: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    };
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 1.1, "exposure {score} > 1.1:\n{stdout}");
}
