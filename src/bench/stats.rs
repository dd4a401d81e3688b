//! The bench's accounting: the stamp each message carries, exact loss and
//! duplicate detection per (receiving connection, sender), latency
//! histograms (hdrhistogram), and `/proc` sampling of RSS and CPU.

use std::collections::HashMap;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Marks the start of a stamp inside a message text.
const MAGIC: &[u8] = b"~pb~";

/// What every bench message carries in its text: the phase it was sent in,
/// who sent it, its sequence number from that sender, and when it was
/// (meant to be) sent, in µs since the bench's clock started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub phase: u32,
    pub sender: u32,
    pub seq: u64,
    pub sent_us: u64,
}

impl Stamp {
    /// The message text: the stamp, padded with `x` to `payload` bytes
    /// (never shorter than the stamp itself). Plain ASCII without quotes
    /// or backslashes, so it appears verbatim inside the server's JSON.
    pub fn text(&self, payload: usize) -> String {
        let mut s = format!(
            "~pb~{}.{}.{}.{}~",
            self.phase, self.sender, self.seq, self.sent_us
        );
        if s.len() < payload {
            let pad = payload - s.len();
            s.push_str(&"x".repeat(pad));
        }
        s
    }

    /// Finds and parses the stamp in a frame (or a text), wherever the
    /// server put the text in its JSON.
    pub fn find(frame: &[u8]) -> Option<Stamp> {
        let mut from = 0;
        while let Some(i) = frame[from..].iter().position(|&b| b == b'~') {
            let at = from + i;
            if frame[at..].starts_with(MAGIC) {
                return Stamp::parse_fields(&frame[at + MAGIC.len()..]);
            }
            from = at + 1;
        }
        None
    }

    fn parse_fields(b: &[u8]) -> Option<Stamp> {
        let end = b.iter().position(|&c| c == b'~')?;
        let mut it = b[..end].split(|&c| c == b'.');
        let mut num = || -> Option<u64> {
            let f = it.next()?;
            if f.is_empty() || f.len() > 20 {
                return None;
            }
            f.iter().try_fold(0u64, |acc, &c| {
                if c.is_ascii_digit() {
                    acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
                } else {
                    None
                }
            })
        };
        let phase = u32::try_from(num()?).ok()?;
        let sender = u32::try_from(num()?).ok()?;
        let seq = num()?;
        let sent_us = num()?;
        if it.next().is_some() {
            return None;
        }
        Some(Stamp {
            phase,
            sender,
            seq,
            sent_us,
        })
    }
}

/// The `"id":N` of a rooms-dialect push, without parsing the whole frame.
pub fn message_id(frame: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"id\":";
    let at = frame.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: &[u8] = &frame[at..];
    let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 20 {
        return None;
    }
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

/// The set of sequence numbers seen from one sender: a growable bitset,
/// so a duplicate is detected exactly, whatever the order.
#[derive(Default, Debug, Clone)]
pub struct SeqSet {
    bits: Vec<u64>,
    count: u64,
    max: Option<u64>,
}

/// What one delivery was, for its receiving connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first delivery of this (sender, seq), in order.
    New,
    /// The first delivery, but after a higher seq from the same sender.
    Reordered,
    /// Delivered before: a duplicate.
    Duplicate,
}

impl SeqSet {
    pub fn insert(&mut self, seq: u64) -> Seen {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        if self.bits[word] & bit != 0 {
            return Seen::Duplicate;
        }
        self.bits[word] |= bit;
        self.count += 1;
        let reordered = self.max.is_some_and(|m| seq < m);
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        if reordered {
            Seen::Reordered
        } else {
            Seen::New
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Distinct sequence numbers seen.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many of `0..sent` were never seen.
    pub fn missing(&self, sent: u64) -> u64 {
        (0..sent).filter(|&s| !self.contains(s)).count() as u64
    }
}

/// Everything one receiving connection saw, per sender.
#[derive(Default, Debug)]
pub struct Tracker {
    from: HashMap<u32, SeqSet>,
}

impl Tracker {
    pub fn seen(&mut self, sender: u32, seq: u64) -> Seen {
        self.from.entry(sender).or_default().insert(seq)
    }

    /// Messages of `sender` (which sent `sent` of them) never seen here.
    pub fn missing(&self, sender: u32, sent: u64) -> u64 {
        self.from.get(&sender).map_or(sent, |s| s.missing(sent))
    }
}

/// A latency histogram in microseconds (1 µs to 10 minutes, 3 significant
/// digits): percentiles without keeping the samples.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0.len()
    }
    pub fn summary(&self) -> Summary {
        let h = &self.0;
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// Counters and histograms of the messages *sent* in one phase (a
/// delivery is accounted to the phase its stamp names).
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    /// Messages written to a socket.
    pub sent: u64,
    /// Deliveries those messages owe: each one times its room's size.
    pub expected: u64,
    /// First deliveries (duplicates not counted).
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Send → delivery, every delivery.
    pub latency: Hist,
    /// Send → delivery back to the sender's own connection: the
    /// acknowledgement (the server pushes only after the durable commit).
    pub ack: Hist,
    /// How late the generator wrote each message against its schedule.
    pub send_lag: Hist,
}

impl PhaseStats {
    /// Deliveries owed and never made (valid once the run has drained).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// The run's accounting, shared by every connection task.
#[derive(Debug, Default)]
pub struct Recorder {
    pub phases: Vec<PhaseStats>,
    /// Since the last progress line.
    pub tick: PhaseStats,
}

impl Recorder {
    fn phase(&mut self, p: u32) -> &mut PhaseStats {
        let p = p as usize;
        if self.phases.len() <= p {
            self.phases.resize_with(p + 1, PhaseStats::default);
        }
        &mut self.phases[p]
    }

    pub fn sent(&mut self, phase: u32, fanout: u64, lag_us: u64) {
        let ph = self.phase(phase);
        ph.sent += 1;
        ph.expected += fanout;
        ph.send_lag.record_us(lag_us);
        self.tick.sent += 1;
    }

    pub fn delivered(&mut self, stamp: &Stamp, seen: Seen, latency_us: u64, own: bool) {
        let ph = self.phase(stamp.phase);
        match seen {
            Seen::Duplicate => {
                ph.duplicates += 1;
                self.tick.duplicates += 1;
                return;
            }
            Seen::Reordered => ph.reordered += 1,
            Seen::New => {}
        }
        ph.delivered += 1;
        ph.latency.record_us(latency_us);
        if own {
            ph.ack.record_us(latency_us);
        }
        self.tick.delivered += 1;
        self.tick.latency.record_us(latency_us);
    }

    /// Owed deliveries not yet made, over every phase.
    pub fn outstanding(&self) -> u64 {
        self.phases.iter().map(PhaseStats::lost).sum()
    }

    /// Takes the counters since the last call (for the progress line).
    pub fn take_tick(&mut self) -> PhaseStats {
        std::mem::take(&mut self.tick)
    }
}

/// A microsecond clock shared by senders and receivers of one process.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }
    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// One reading of a process's resident memory and CPU time (`/proc`).
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_bytes: u64,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// Linux reports CPU time in USER_HZ, 100 on every architecture it runs.
const TICKS_PER_SEC: f64 = 100.0;

impl ProcSample {
    /// `pid` None: this process.
    pub fn read(pid: Option<u32>) -> Option<ProcSample> {
        let dir = match pid {
            Some(p) => format!("/proc/{p}"),
            None => "/proc/self".to_string(),
        };
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        Some(ProcSample {
            at: Instant::now(),
            rss_bytes: parse_rss(&status)?,
            cpu_ticks: parse_cpu_ticks(&stat)?,
        })
    }

    /// CPU use between two samples, in percent of one core.
    pub fn cpu_percent(&self, later: &ProcSample) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let ticks = later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64;
        100.0 * ticks / TICKS_PER_SEC / secs
    }
}

/// `VmRSS:  1234 kB` from `/proc/PID/status`, in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime from `/proc/PID/stat` (fields 14 and 15; the command name
/// in parentheses may itself hold spaces).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The median of some values (the mean of the middle two for an even
/// count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_servers_json_and_is_padded_to_the_payload() {
        let s = Stamp {
            phase: 3,
            sender: 917,
            seq: 123_456,
            sent_us: 98_765_432_101,
        };
        let text = s.text(100);
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("~pb~3.917.123456.98765432101~xxx"));
        let frame = format!(
            r#"{{"message":{{"id":77,"message":"{text}","poster":"5","room":"2","timestamp":1}}}}"#
        );
        assert_eq!(Stamp::find(frame.as_bytes()), Some(s));
        assert_eq!(message_id(frame.as_bytes()), Some(77));
        // A payload smaller than the stamp: the stamp alone.
        assert_eq!(Stamp::find(s.text(1).as_bytes()), Some(s));
        // Field order does not matter; a stray `~` before the stamp neither.
        let other = format!(r#"{{"text":"a~b {text}","id":5}}"#);
        assert_eq!(Stamp::find(other.as_bytes()), Some(s));
    }

    #[test]
    fn malformed_stamps_are_rejected() {
        for bad in [
            "no stamp here",
            "~pb~1.2.3~",
            "~pb~1.2.3.4.5~",
            "~pb~1.2.x.4~",
            "~pb~1.2.3.4",
            "~pb~..3.4~",
            "~pb~99999999999.1.1.1~",
            "~pb~1.1.1.999999999999999999999~",
        ] {
            assert_eq!(Stamp::find(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn seqset_counts_duplicates_reorders_and_missing_exactly() {
        let mut s = SeqSet::default();
        assert_eq!(s.insert(0), Seen::New);
        assert_eq!(s.insert(1), Seen::New);
        assert_eq!(s.insert(5), Seen::New);
        assert_eq!(s.insert(3), Seen::Reordered);
        assert_eq!(s.insert(1), Seen::Duplicate);
        assert_eq!(s.insert(1000), Seen::New);
        assert_eq!(s.insert(1000), Seen::Duplicate);
        assert_eq!(s.count(), 5);
        // 0..=9 sent: 2, 4, 6, 7, 8, 9 never came.
        assert_eq!(s.missing(10), 6);
        assert!(s.contains(1000) && !s.contains(999) && !s.contains(1 << 40));
    }

    #[test]
    fn tracker_keeps_senders_apart() {
        let mut t = Tracker::default();
        assert_eq!(t.seen(1, 0), Seen::New);
        assert_eq!(t.seen(2, 0), Seen::New);
        assert_eq!(t.seen(1, 0), Seen::Duplicate);
        assert_eq!(t.seen(2, 1), Seen::New);
        assert_eq!(t.missing(1, 3), 2);
        assert_eq!(t.missing(2, 2), 0);
        assert_eq!(t.missing(9, 4), 4);
    }

    #[test]
    fn recorder_accounts_loss_and_duplicates_per_phase() {
        let mut r = Recorder::default();
        let mut t = Tracker::default();
        // Phase 1: two messages into a room of 3 → 6 deliveries owed.
        for _ in 0..2 {
            r.sent(1, 3, 10);
        }
        let st = |seq| Stamp {
            phase: 1,
            sender: 7,
            seq,
            sent_us: 0,
        };
        // Receiver A (the sender) sees both, receiver B one twice.
        for seq in 0..2 {
            r.delivered(&st(seq), t.seen(7, seq), 1000, true);
        }
        let mut b = Tracker::default();
        r.delivered(&st(0), b.seen(7, 0), 2000, false);
        r.delivered(&st(0), b.seen(7, 0), 2000, false);
        let p = &r.phases[1];
        assert_eq!((p.sent, p.expected, p.delivered), (2, 6, 3));
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.lost(), 3);
        assert_eq!(r.outstanding(), 3);
        assert_eq!(p.ack.count(), 2);
        assert_eq!(p.latency.count(), 3);
        assert_eq!(r.take_tick().delivered, 3);
        assert_eq!(r.tick.delivered, 0);
    }

    #[test]
    fn histogram_percentiles_are_within_its_precision() {
        let mut h = Hist::default();
        for us in 1..=100_000u64 {
            h.record_us(us);
        }
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_ms, 50.0), "{s:?}");
        assert!(close(s.p99_ms, 99.0), "{s:?}");
        assert!(close(s.p999_ms, 99.9), "{s:?}");
        assert!(close(s.max_ms, 100.0), "{s:?}");
        assert!(close(s.mean_ms, 50.0), "{s:?}");
        // A long tail is not averaged away.
        let mut t = Hist::default();
        for _ in 0..980 {
            t.record_us(500);
        }
        for _ in 0..20 {
            t.record_us(80_000);
        }
        let s = t.summary();
        assert!(close(s.p50_ms, 0.5) && close(s.p99_ms, 80.0), "{s:?}");
        // Out-of-range values saturate instead of being dropped.
        t.record_us(u64::MAX);
        assert_eq!(t.count(), 1001);
        let mut sum = Hist::default();
        sum.add(&h);
        sum.add(&t);
        assert_eq!(sum.count(), 101_001);
        assert_eq!(Hist::default().summary().count, 0);
    }

    #[test]
    fn proc_fields_parse() {
        let status = "Name:\tparlor\nVmPeak:\t  9999 kB\nVmRSS:\t   12345 kB\nThreads: 4\n";
        assert_eq!(parse_rss(status), Some(12345 * 1024));
        let stat = "4242 (par lor) S 1 4242 4242 0 -1 4194560 500 0 0 0 731 269 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        let me = ProcSample::read(None).expect("/proc/self readable");
        assert!(me.rss_bytes > 0);
    }

    #[test]
    fn median_of_runs() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
