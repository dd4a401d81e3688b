//! systemd's notify protocol (`Type=notify`): `READY=1` once the listener is
//! bound, `WATCHDOG=1` keep-alives while the writer still commits, and
//! `STOPPING=1` when shutdown begins. Without `NOTIFY_SOCKET` (not run by
//! systemd) every call does nothing.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::core::Core;

/// Tells systemd the daemon is serving on `addr`.
pub fn ready(addr: std::net::SocketAddr) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving on {addr}")),
    ]);
}

/// Tells systemd the daemon is shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if any.
///
/// Read as `sd_watchdog_enabled(3)` does: `WATCHDOG_USEC` set and positive,
/// and `WATCHDOG_PID`, when set, naming this process.
pub fn watchdog_interval() -> Option<Duration> {
    interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// Sends `WATCHDOG=1` every half interval, but only after a no-op job went
/// through the writer thread: a daemon whose event loop or disk is stuck
/// stops the keep-alives, and systemd restarts it. A full disk does not:
/// the daemon answers it (writes refused, reads served), and a restart
/// would not make room.
pub async fn watchdog(core: Arc<Core>, interval: Duration) {
    let half = interval / 2;
    let mut tick = tokio::time::interval(half);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(half, core.writer_alive()).await {
            Ok(true) => send(&[NotifyState::Watchdog]),
            Ok(false) => tracing::warn!("watchdog: the writer refuses work; no keep-alive"),
            Err(_) => tracing::warn!(?half, "watchdog: the writer did not answer; no keep-alive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_follows_sd_watchdog_enabled() {
        let s = Duration::from_secs;
        assert_eq!(interval_from(Some("30000000"), None, 7), Some(s(30)));
        assert_eq!(interval_from(Some("30000000"), Some("7"), 7), Some(s(30)));
        // Meant for another process (e.g. inherited by a child).
        assert_eq!(interval_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("30000000"), Some("x"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("-5"), None, 7), None);
        assert_eq!(interval_from(None, Some("7"), 7), None);
    }
}
