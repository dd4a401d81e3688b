//! Pacing a long write so that the log's `fdatasync` never queues behind
//! it: see [`Pace`].

use std::io;
use std::time::{Duration, Instant};

/// A paced writer's bytes between two flushes ([`Pace`]).
const PACE_BYTES: usize = 1 << 20;
/// The longest pause after a flush.
const PACE_MAX_PAUSE: Duration = Duration::from_millis(100);

/// How a long write (a compaction's base and new index, a spare log
/// segment) shares the disk with the log: every step written
/// ([`PACE_BYTES`], or the writer's own), what was written is flushed to
/// the disk, then the writer pauses as long as that took. Dirty pages
/// never pile up in front of the log's `fdatasync` (the filesystem or the
/// disk's cache flush may have to write them first), and the disk is
/// chat's half the time.
pub(super) struct Pace {
    every: usize,
    written: usize,
}

impl Pace {
    /// Flushes every [`PACE_BYTES`], pausing after each.
    pub(super) fn shared() -> Pace {
        Pace::every(PACE_BYTES)
    }

    /// Flushes every `step` bytes, pausing after each.
    pub(super) fn every(step: usize) -> Pace {
        Pace {
            every: step,
            written: 0,
        }
    }

    /// Never flushes nor pauses: nothing else needs the disk (open).
    pub(super) fn unpaced() -> Pace {
        Pace::every(usize::MAX)
    }

    /// `n` more bytes written; `flush` makes what was written reach the
    /// disk.
    pub(super) fn wrote(
        &mut self,
        n: usize,
        flush: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        self.written += n;
        if self.written >= self.every {
            self.written = 0;
            let t = Instant::now();
            flush()?;
            std::thread::sleep(t.elapsed().min(PACE_MAX_PAUSE));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced writer flushes once per `PACE_BYTES` written (not before,
    /// not per write), pauses about as long as the flush took, and passes
    /// a failed flush on; an unpaced one never flushes.
    #[test]
    fn a_pace_flushes_once_per_step_and_pauses_as_long() {
        let mut flushes = 0;
        let count = |n: &mut i32| {
            *n += 1;
            Ok(())
        };
        let mut pace = Pace::shared();
        let step = PACE_BYTES / 4 + 1;
        for _ in 0..4 {
            pace.wrote(step - 2, || count(&mut flushes)).unwrap();
        }
        assert_eq!(flushes, 0, "flushed before a step was written");
        let t = Instant::now();
        pace.wrote(8, || {
            flushes += 1;
            std::thread::sleep(Duration::from_millis(30));
            Ok(())
        })
        .unwrap();
        assert_eq!(flushes, 1);
        assert!(t.elapsed() >= Duration::from_millis(60), "no pause");
        for _ in 0..3 {
            pace.wrote(step, || count(&mut flushes)).unwrap();
        }
        assert_eq!(flushes, 1, "the count starts again after a flush");
        let failed = pace.wrote(step, || Err(io::Error::other("disk gone")));
        assert_eq!(failed.unwrap_err().to_string(), "disk gone");

        let mut open = Pace::unpaced();
        for _ in 0..64 {
            open.wrote(PACE_BYTES, || count(&mut flushes)).unwrap();
        }
        assert_eq!(flushes, 1);
    }
}
