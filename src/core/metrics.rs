//! Counters and histograms for `/metrics`: plain atomics that the core and
//! the network layer bump, rendered in Prometheus' text format by
//! `render`. Nothing here allocates per event.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A histogram with fixed upper bounds (cumulative when rendered).
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn sum(&self) -> u64 {
        self.sum.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str, scale: f64) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            acc += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {acc}", *b as f64 / scale);
        }
        acc += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {acc}");
        let _ = writeln!(out, "{name}_sum {}", self.sum() as f64 / scale);
        let _ = writeln!(out, "{name}_count {acc}");
    }
}

/// The store's room on its disk, for `render`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk {
    /// Writes are refused for lack of room.
    pub full: bool,
    pub free: u64,
    pub reserve: u64,
}

pub struct Metrics {
    /// Jobs per group commit.
    pub commit_batch: Histogram,
    /// Flush + fsync time per group commit, in microseconds.
    pub commit_sync_us: Histogram,
    pub messages: AtomicU64,
    pub sends_rate_limited: AtomicU64,
    pub logins_rate_limited: AtomicU64,
    /// WebSockets closed for exceeding the per-connection frame rate.
    pub conns_rate_limited: AtomicU64,
    /// WebSockets closed because they could not keep up.
    pub conns_too_slow: AtomicU64,
    /// Hub events rendered for a dialect (once per event and dialect)…
    pub frames_rendered: AtomicU64,
    /// …and the pushes made of them (one per recipient connection).
    pub frames_pushed: AtomicU64,
    /// Jobs refused because the store had no room on its disk.
    pub writes_refused: AtomicU64,
    /// Webhook deliveries set aside as dead, in the store now (a gauge,
    /// counted at open and kept by `core::outbox`).
    pub webhook_dead: AtomicU64,
    connections: Mutex<BTreeMap<&'static str, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            commit_batch: Histogram::new(&[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]),
            commit_sync_us: Histogram::new(&[
                100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
                1_000_000,
            ]),
            messages: AtomicU64::new(0),
            sends_rate_limited: AtomicU64::new(0),
            logins_rate_limited: AtomicU64::new(0),
            conns_rate_limited: AtomicU64::new(0),
            conns_too_slow: AtomicU64::new(0),
            frames_rendered: AtomicU64::new(0),
            frames_pushed: AtomicU64::new(0),
            writes_refused: AtomicU64::new(0),
            webhook_dead: AtomicU64::new(0),
            connections: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Counts an open WebSocket of a dialect while it lives.
pub struct ConnGauge<'a> {
    metrics: &'a Metrics,
    dialect: &'static str,
}

impl Drop for ConnGauge<'_> {
    fn drop(&mut self) {
        self.metrics.add_connection(self.dialect, -1);
    }
}

impl Metrics {
    pub fn connection(&self, dialect: &'static str) -> ConnGauge<'_> {
        self.add_connection(dialect, 1);
        ConnGauge {
            metrics: self,
            dialect,
        }
    }

    fn add_connection(&self, dialect: &'static str, d: i64) {
        *self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dialect)
            .or_default() += d;
    }

    /// Everything, in Prometheus' text exposition format, with the
    /// gauges the store knows; `extra` lines (already formatted) are
    /// appended.
    pub fn render(&self, last_message: u64, disk: Disk, extra: &str) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP parlor_connections Open WebSocket connections by dialect.\n# TYPE parlor_connections gauge");
        for (d, n) in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "parlor_connections{{dialect=\"{d}\"}} {n}");
        }
        let counters = [
            (
                "parlor_messages_committed_total",
                "Messages committed since start.",
                &self.messages,
            ),
            (
                "parlor_sends_rate_limited_total",
                "Sends refused by a user's rate limit.",
                &self.sends_rate_limited,
            ),
            (
                "parlor_logins_rate_limited_total",
                "Logins refused by throttling or a full password queue.",
                &self.logins_rate_limited,
            ),
            (
                "parlor_connections_rate_limited_total",
                "WebSockets closed for their frame rate.",
                &self.conns_rate_limited,
            ),
            (
                "parlor_connections_too_slow_total",
                "WebSockets closed because they could not keep up.",
                &self.conns_too_slow,
            ),
            (
                "parlor_frames_rendered_total",
                "Live events rendered, once per event and dialect.",
                &self.frames_rendered,
            ),
            (
                "parlor_frames_pushed_total",
                "Live frames sent to WebSockets (one per recipient connection).",
                &self.frames_pushed,
            ),
            (
                "parlor_writes_refused_total",
                "Writes refused because the store's disk was full.",
                &self.writes_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP parlor_last_message_id The newest durable message id.\n# TYPE parlor_last_message_id gauge\nparlor_last_message_id {last_message}"
        );
        let _ = writeln!(
            out,
            "# HELP parlor_disk_full 1 while writes are refused for lack of room on the store's disk.\n# TYPE parlor_disk_full gauge\nparlor_disk_full {}",
            u8::from(disk.full)
        );
        let _ = writeln!(
            out,
            "# HELP parlor_disk_free_bytes Free bytes on the store's filesystem.\n# TYPE parlor_disk_free_bytes gauge\nparlor_disk_free_bytes {}\n# HELP parlor_disk_reserve_bytes Free bytes under which writes are refused.\n# TYPE parlor_disk_reserve_bytes gauge\nparlor_disk_reserve_bytes {}",
            disk.free, disk.reserve
        );
        let _ = writeln!(
            out,
            "# HELP parlor_webhook_dead_deliveries Webhook deliveries set aside as dead (parlor webhook pending --dead).\n# TYPE parlor_webhook_dead_deliveries gauge\nparlor_webhook_dead_deliveries {}",
            self.webhook_dead.load(Relaxed)
        );
        self.commit_batch.render(
            &mut out,
            "parlor_commit_batch_size",
            "Jobs per group commit.",
            1.0,
        );
        self.commit_sync_us.render(
            &mut out,
            "parlor_commit_sync_seconds",
            "Flush and fsync time per group commit.",
            1e6,
        );
        out.push_str(extra);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_scaled() {
        let m = Metrics::default();
        for v in [50, 300, 300, 2_000_000] {
            m.commit_sync_us.observe(v);
        }
        m.commit_batch.observe(3);
        let _c = m.connection("rooms");
        {
            let _d = m.connection("typed");
        }
        m.writes_refused.fetch_add(3, Relaxed);
        let disk = Disk {
            full: true,
            free: 5,
            reserve: 8,
        };
        let text = m.render(42, disk, "x_extra 1\n");
        assert!(
            text.contains("parlor_commit_sync_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("parlor_commit_sync_seconds_bucket{le=\"0.0005\"} 3\n"));
        assert!(text.contains("parlor_commit_sync_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("parlor_commit_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("parlor_connections{dialect=\"rooms\"} 1\n"));
        assert!(text.contains("parlor_connections{dialect=\"typed\"} 0\n"));
        assert!(text.contains("parlor_last_message_id 42\n"));
        assert!(text.contains("parlor_disk_full 1\n"));
        assert!(text.contains("parlor_disk_free_bytes 5\n"));
        assert!(text.contains("parlor_disk_reserve_bytes 8\n"));
        assert!(text.contains("parlor_writes_refused_total 3\n"));
        m.webhook_dead.store(3, Relaxed);
        assert!(m.render(42, disk, "").contains(
            "# TYPE parlor_webhook_dead_deliveries gauge\nparlor_webhook_dead_deliveries 3\n"
        ));
        assert!(text.ends_with("x_extra 1\n"));
        assert_eq!(m.commit_sync_us.max(), 2_000_000);
    }
}
