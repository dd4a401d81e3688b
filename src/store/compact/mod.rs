//! Compaction: after deletions, no file under the store's directory
//! still holds the deleted bytes (API.md §8: purged and erased text is
//! gone from the data directory, not only hidden).
//!
//! A deleted value stays on disk in the log (every record that wrote it)
//! and in sled's files (a removed key's bytes stay in sled's segments
//! until its own GC happens to rewrite them). So [`Store::compact_with`], at
//! the log's last record S when it is called:
//!
//! 1. rotates the log, so that records after S start a new segment;
//! 2. once the index in use has applied record S, writes what it holds as
//!    the base of S (`wal/base-S.snap`), reading it while the sequencer
//!    goes on committing: a key's value read there is its value at S or
//!    one a later record wrote, and every later record is replayed on top
//!    of the base (a record's writes are whole values and removals, so
//!    applying one again gives the same state), so the base and the
//!    records after S hold exactly the history. It never holds a value
//!    deleted by S: the index in use no longer has it;
//! 3. loads that base into a fresh index, `DIR/index-S/` — it never sees
//!    a deleted value — catches it up with the records committed since
//!    (read from the log), makes it durable, and points `DIR/INDEX` at it;
//! 4. pauses the sequencer for the swap only ([`Swap`]): where no record
//!    is being appended — a job of the sequencer's (the daemon's,
//!    `compact_with`), or, in tests, holding the log's appending end
//!    (`Store::compact`) — waits for the last appended record to be applied, replays the few records since
//!    the catch-up into the new index, and makes it the one the store
//!    reads and writes;
//! 5. deletes the old index's files, the damaged indexes kept for
//!    inspection (they may hold purged data), and the segments and bases
//!    the new base makes redundant.
//!
//! A crash at any point leaves a store that opens with every committed
//! write: open deletes what a compaction cut short left (`index`), and
//! finishes deleting the segments below a base once its index durably
//! holds it. Files are deleted, not overwritten: what a filesystem does
//! with freed blocks is below the store.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::history;
use super::index::{self, Index};
use super::pace::Pace;
use super::{wal, OpenError, Store};

/// What a compaction did.
#[derive(Debug, Clone, Default)]
pub struct Compaction {
    /// The log record whose state the new base holds: every key and value
    /// deleted or overwritten by it or an earlier record is gone.
    pub base_seq: u64,
    /// Records committed while it ran, replayed into the new index.
    pub caught_up: u64,
    /// Log segments deleted (their records are in the base).
    pub segments_removed: usize,
    /// Damaged indexes (`index-damaged-*`) deleted.
    pub damaged_removed: usize,
    /// Bytes of the files under the store's directory, before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long writing the base took, and building the new index (up to
    /// the swap).
    pub base_took: Duration,
    pub build_took: Duration,
    /// How long the sequencer was held (its next commit waited at most
    /// this long).
    pub pause: Duration,
}

/// How far a compaction goes: all the way, or (tests) stopped after a
/// step, as a crash there would stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    /// The base is written.
    BaseWritten,
    /// The new index is built, caught up and durable; not yet current.
    Built,
    /// The pointer names the new index, and the store uses it.
    Switched,
    /// The old index's files are deleted; the log is not trimmed yet.
    OldIndexRemoved,
    Done,
}

/// A compaction's last step, ready: the new index, durable and caught up
/// with the log but for the last few records. [`Swap::run`] replays those
/// and makes it current.
pub struct Swap {
    fresh: Index,
    follower: wal::Follower,
    done: Arc<Mutex<Option<Swapped>>>,
}

/// What a swap that ran leaves the compaction: the old index (its files
/// are deleted once no read holds it), the last record the new one
/// holds, and how long the swap took.
struct Swapped {
    old: Arc<Index>,
    last: u64,
    pause: Duration,
}

impl Swap {
    /// Runs the swap on `store` (the store being compacted). Only where
    /// no record is being appended meanwhile: a job of the sequencer (no
    /// group is being written while a job runs; the writes staged by the
    /// jobs before it in the group go to the new index when the group
    /// commits). A panic of the index (a failing disk) is its error.
    pub fn run(self, store: &Store) -> io::Result<()> {
        let last = store
            .wal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_seq()
            - 1;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.swap_in(self, last)))
            .unwrap_or_else(|_| Err(io::Error::other("the index panicked during the swap")))
    }
}

/// Records left for the swap to replay, at most, when it is handed over
/// (unless the log runs ahead for [`CATCH_UP_ROUNDS`] catch-ups).
const SWAP_LAG: u64 = 16;
const CATCH_UP_ROUNDS: usize = 8;
/// Longest wait for the last appended record to be applied (the
/// sequencer applies it right after its append): past it, the sequencer
/// has stopped, and the compaction gives up.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for reads still holding the old index to end before its
/// files are deleted.
const READERS_WAIT: Duration = Duration::from_secs(1);

fn open_err(e: OpenError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Store {
    /// [`Store::compact_with`] with the swap run on the calling thread
    /// (`swap_here`): the tests' form, where no sequencer runs or one is
    /// blocked at its next append.
    #[cfg(test)]
    pub fn compact(&self) -> io::Result<Compaction> {
        self.compact_with(&|s| self.swap_here(s))
    }

    /// Compacts the store (see the module header): when it returns, no
    /// file under the store's directory holds a key or value deleted or
    /// overwritten by a record committed before it was called, and the
    /// store holds the same data. Called from a background thread while
    /// the sequencer commits; the swap is run by `swap` — the daemon's
    /// gives it to the sequencer as a job of its own, which calls
    /// [`Swap::run`]: the sequencer waits only for the swap
    /// ([`Compaction::pause`]), at its own priority, whatever the store's
    /// size and whatever the compaction's thread runs at. One at a time.
    ///
    /// sled 0.34 panics on some I/O errors (a failing disk): such a panic
    /// is this compaction's error, not its thread's end. Whatever step it
    /// stopped at, the store opens whole (see the module header).
    pub fn compact_with(&self, swap: &dyn Fn(Swap) -> io::Result<()>) -> io::Result<Compaction> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compact_until(Step::Done, swap)
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(io::Error::other(format!("the index panicked: {what}")))
        })
    }

    pub(super) fn compact_until(
        &self,
        stop: Step,
        swap: &dyn Fn(Swap) -> io::Result<()>,
    ) -> io::Result<Compaction> {
        let _one = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Compaction {
            bytes_before: index::bytes_under(&self.dir),
            ..Compaction::default()
        };
        self.room_to_compact()?;
        // A spare ready: the rotation then costs the next commit what a
        // full segment does, a rename.
        self.wal_shared.prepare_spare()?;
        let seq = self.wal.lock().unwrap_or_else(|p| p.into_inner()).rotate();
        out.base_seq = seq;
        let name = index::dir_name(seq);
        let target = self.dir.join(&name);
        // The same record as the last compaction's: nothing was committed
        // since, only its deleting may be left to do.
        if self.db().dir != target {
            match self.build_and_swap(seq, &target, stop, swap, &mut out)? {
                Some(old) => {
                    if stop == Step::Switched {
                        return Ok(out);
                    }
                    let deadline = Instant::now() + READERS_WAIT;
                    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    drop(old);
                }
                None => return Ok(out),
            }
        }
        index::remove_stale(&self.dir, &target)?;
        if stop == Step::OldIndexRemoved {
            return Ok(out);
        }
        let damaged = index::remove_damaged(&self.dir)?;
        if !damaged.is_empty() {
            tracing::warn!(
                ?damaged,
                "deleted damaged indexes kept for inspection: they may hold purged data"
            );
        }
        out.damaged_removed = damaged.len();
        let trimmed = wal::trim(&self.wal_dir, seq)?;
        out.segments_removed = trimmed.segments;
        out.bytes_after = index::bytes_under(&self.dir);
        tracing::info!(
            base = seq,
            caught_up = out.caught_up,
            segments_removed = out.segments_removed,
            bytes_before = out.bytes_before,
            bytes_after = out.bytes_after,
            base_ms = out.base_took.as_millis() as u64,
            build_ms = out.build_took.as_millis() as u64,
            pause_us = out.pause.as_micros() as u64,
            "compacted the store"
        );
        Ok(out)
    }

    /// Steps 2 to 4: the base of `seq`, the new index in `target`, the
    /// swap (run by `swap`). Returns the old index, or `None` if stopped
    /// before the swap.
    fn build_and_swap(
        &self,
        seq: u64,
        target: &Path,
        stop: Step,
        swap: &dyn Fn(Swap) -> io::Result<()>,
        out: &mut Compaction,
    ) -> io::Result<Option<Arc<Index>>> {
        let current = self.db().dir.clone();
        // What an earlier compaction that failed left.
        index::remove_stale(&self.dir, &current)?;
        self.wait_applied(seq)?;
        let started = Instant::now();
        let base = history::write_base(&self.db(), &self.wal_dir, seq, &mut Pace::shared())?;
        out.base_took = started.elapsed();
        let started = Instant::now();
        wal::sync_dir(&self.dir)?;
        if stop == Step::BaseWritten {
            return Ok(None);
        }
        let mut follower = wal::Follower::new(&self.wal_dir, seq);
        let fresh = Index::open(target, &self.opts).map_err(open_err)?;
        history::load_base(&fresh, &base, &mut Pace::shared())?;
        let catch_up = |f: &mut wal::Follower| {
            let upto = self.applied_seq.load(Ordering::Acquire);
            f.read_to(upto, &mut |s, p| Ok(history::apply_record(&fresh, s, p)?))
        };
        catch_up(&mut follower)?;
        // Most of it made durable first, while checkpoints go on…
        fresh.sync()?;
        fresh.sync_files()?;
        wal::sync_dir(&self.dir)?;
        // …then no checkpoint from here to the swap (the checkpoint file
        // must not name a record the new index does not hold durably),
        // which waits only for the few records since.
        let _no_checkpoint = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        catch_up(&mut follower)?;
        fresh.sync()?;
        let durable = follower.last();
        if stop == Step::Built {
            return Ok(None);
        }
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .expect("an index directory's name");
        index::point_to(&self.dir, name)?;
        // The records committed during the sync and the pointer's fsyncs
        // are replayed now, until few are left, not in the pause (they
        // need not be durable in the new index: the log holds them).
        let mut caught = Ok(());
        for _ in 0..CATCH_UP_ROUNDS {
            let from = follower.last();
            caught = catch_up(&mut follower);
            if caught.is_err() || follower.last() - from <= SWAP_LAG {
                break;
            }
        }
        out.build_took = started.elapsed();
        let done = Arc::new(Mutex::new(None));
        let swapped = caught.and_then(|()| {
            swap(Swap {
                fresh,
                follower,
                done: done.clone(),
            })
        });
        let taken = done.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (old, last) = match (swapped, taken) {
            (Ok(()), Some(Swapped { old, last, pause })) => {
                out.pause = pause;
                (old, last)
            }
            (result, _) => {
                // The old index stays current, on disk too.
                let back = match current.strip_prefix(&self.dir) {
                    Ok(rel) if !rel.as_os_str().is_empty() => {
                        index::point_to(&self.dir, &rel.to_string_lossy())
                    }
                    _ => index::point_to_top(&self.dir),
                };
                back?;
                return Err(result
                    .err()
                    .unwrap_or_else(|| io::Error::other("the index swap did not run")));
            }
        };
        out.caught_up = last - seq;
        wal::write_checkpoint(&self.wal_dir, durable)?;
        self.checkpointed.store(durable, Ordering::Release);
        Ok(Some(old))
    }

    /// Runs a swap on the calling thread, holding the log's appending end:
    /// the sequencer blocks at its next append meanwhile (from the moment
    /// the lock is taken: before, it may be appending). Tests' only.
    #[cfg(test)]
    fn swap_here(&self, swap: Swap) -> io::Result<()> {
        let w = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        let last = w.next_seq() - 1;
        self.swap_in(swap, last)
    }

    /// The swap itself, with no record being appended: waits for record
    /// `last`, the newest appended, to be applied; replays the records the
    /// new index lacks; makes it the one the store reads and writes.
    fn swap_in(&self, swap: Swap, last: u64) -> io::Result<()> {
        let started = Instant::now();
        let Swap {
            fresh,
            mut follower,
            done,
        } = swap;
        self.wait_applied(last)?;
        follower.read_to(last, &mut |s, p| Ok(history::apply_record(&fresh, s, p)?))?;
        let old = {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *index, Arc::new(fresh))
        };
        *done.lock().unwrap_or_else(|p| p.into_inner()) = Some(Swapped {
            old,
            last,
            pause: started.elapsed(),
        });
        Ok(())
    }

    /// Waits until log record `seq` is applied to the index (the sequencer
    /// applies a record right after appending it); past [`APPLY_WAIT`],
    /// the sequencer has stopped, and the compaction gives up.
    fn wait_applied(&self, seq: u64) -> io::Result<()> {
        let deadline = Instant::now() + APPLY_WAIT;
        while self.applied_seq.load(Ordering::Acquire) < seq {
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "log record {seq} was not applied to the index within {APPLY_WAIT:?}"
                )));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Whether the disk has room for a compaction: the base and the new
    /// index side by side (each at most the current index's size), above
    /// the reserve.
    fn room_to_compact(&self) -> io::Result<()> {
        let current = self.db().dir.clone();
        let index_bytes = if current == self.dir {
            std::fs::read_dir(&self.dir)?
                .flatten()
                .filter(|e| index::is_top_index_file(&e.file_name().to_string_lossy()))
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => index::bytes_under(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        } else {
            index::bytes_under(&current)
        };
        let need = 2 * index_bytes;
        let free = self.space.free();
        if free < self.space.reserve().saturating_add(need) {
            return Err(io::Error::other(format!(
                "no room on the disk to compact the store: it needs {need} bytes above the \
                 reserve, {free} are free"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
