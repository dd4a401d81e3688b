//! Compaction: after deletions, no file under the store's directory
//! still holds the deleted bytes (API.md §8: purged and erased text is
//! gone from the data directory, not only hidden).
//!
//! A deleted value stays on disk in the log (every record that wrote it)
//! and in sled's files (a removed key's bytes stay in sled's segments
//! until its own GC happens to rewrite them). So [`Store::compact`], at
//! the log's last record S when it is called:
//!
//! 1. rotates the log, so that records after S start a new segment;
//! 2. replays the history up to S (the newest base and the records after
//!    it) into a scratch index in `DIR/compacting/`, off the sequencer's
//!    thread, and writes the state it holds as the base of S
//!    (`wal/base-S.snap`); the scratch index, which saw every deleted
//!    value, is then deleted;
//! 3. loads that base into a fresh index, `DIR/index-S/` — it never sees
//!    a deleted value — catches it up with the records committed since
//!    (read from the log), makes it durable, and points `DIR/INDEX` at it;
//! 4. pauses the sequencer for the swap only: holding the log's appending
//!    end, waits for the last appended record to be applied, replays the
//!    few records since the catch-up into the new index, and makes it the
//!    one the store reads and writes;
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::history;
use super::index::{self, Index};
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
    /// How long the sequencer was held (its next commit waited at most
    /// this long).
    pub pause: Duration,
}

/// How far a compaction goes: all the way, or (tests) stopped after a
/// step, as a crash there would stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    /// The scratch index holds the history up to the base's record.
    Replayed,
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
    /// Compacts the store (see the module header): when it returns, no
    /// file under the store's directory holds a key or value deleted or
    /// overwritten by a record committed before it was called, and the
    /// store holds the same data. Called from a background thread while
    /// the sequencer commits: the sequencer waits only for the swap
    /// ([`Compaction::pause`]), whatever the store's size. One at a time.
    ///
    /// sled 0.34 panics on some I/O errors (a failing disk): such a panic
    /// is this compaction's error, not its thread's end. Whatever step it
    /// stopped at, the store opens whole (see the module header).
    pub fn compact(&self) -> io::Result<Compaction> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compact_until(Step::Done)
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

    pub(super) fn compact_until(&self, stop: Step) -> io::Result<Compaction> {
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
            match self.build_and_swap(seq, &target, stop, &mut out)? {
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
            pause_us = out.pause.as_micros() as u64,
            "compacted the store"
        );
        Ok(out)
    }

    /// Steps 2 to 4: the base of `seq`, the new index in `target`, the
    /// swap. Returns the old index, or `None` if stopped before the swap.
    fn build_and_swap(
        &self,
        seq: u64,
        target: &Path,
        stop: Step,
        out: &mut Compaction,
    ) -> io::Result<Option<Arc<Index>>> {
        let current = self.db().dir.clone();
        // What an earlier compaction that failed left.
        index::remove_stale(&self.dir, &current)?;
        let building = self.dir.join(index::BUILDING);
        std::fs::create_dir(&building)?;
        let prior = wal::latest_base(&self.wal_dir)?;
        let (mut follower, base) = {
            let scratch = Index::open(&building.join("scratch"), &self.opts).map_err(open_err)?;
            if let Some((_, path)) = &prior {
                history::load_base(&scratch, path)?;
            }
            let mut follower = wal::Follower::new(&self.wal_dir, prior.map_or(0, |b| b.0));
            follower.read_to(seq, &mut |s, p| Ok(history::apply_record(&scratch, s, p)?))?;
            if stop == Step::Replayed {
                return Ok(None);
            }
            let base = history::write_base(&scratch, &self.wal_dir, seq)?;
            (follower, base)
        };
        std::fs::remove_dir_all(&building)?;
        index::sync_dir(&self.dir)?;
        if stop == Step::BaseWritten {
            return Ok(None);
        }
        let fresh = Index::open(target, &self.opts).map_err(open_err)?;
        history::load_base(&fresh, &base)?;
        let catch_up = |f: &mut wal::Follower| {
            let upto = self.applied_seq.load(Ordering::Acquire);
            f.read_to(upto, &mut |s, p| Ok(history::apply_record(&fresh, s, p)?))
        };
        catch_up(&mut follower)?;
        // Most of it made durable first, while checkpoints go on…
        fresh.sync()?;
        fresh.sync_files()?;
        index::sync_dir(&self.dir)?;
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
        // are replayed now, not in the pause (they need not be durable in
        // the new index: the log holds them).
        let caught = catch_up(&mut follower);
        // The pause: the sequencer blocks at its next append (from the
        // moment the lock is taken: before, it may be appending).
        let w = self.wal.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let swapped = caught.and_then(|()| {
            let last = w.next_seq() - 1;
            let deadline = started + APPLY_WAIT;
            while self.applied_seq.load(Ordering::Acquire) < last && Instant::now() < deadline {
                std::thread::yield_now();
            }
            let applied = self.applied_seq.load(Ordering::Acquire);
            if applied < last {
                Err(io::Error::other(format!(
                    "log record {last} was not applied to the index within {APPLY_WAIT:?}"
                )))
            } else {
                follower
                    .read_to(last, &mut |s, p| Ok(history::apply_record(&fresh, s, p)?))
                    .map(|()| {
                        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
                        std::mem::replace(&mut *index, Arc::new(fresh))
                    })
            }
        });
        drop(w);
        out.pause = started.elapsed();
        let old = match swapped {
            Ok(old) => old,
            Err(e) => {
                // The old index stays current, on disk too.
                let back = match current.strip_prefix(&self.dir) {
                    Ok(rel) if !rel.as_os_str().is_empty() => {
                        index::point_to(&self.dir, &rel.to_string_lossy())
                    }
                    _ => index::point_to_top(&self.dir),
                };
                back?;
                return Err(e);
            }
        };
        out.caught_up = follower.last() - seq;
        wal::write_checkpoint(&self.wal_dir, durable)?;
        self.checkpointed.store(durable, Ordering::Release);
        Ok(Some(old))
    }

    /// Whether the disk has room for a compaction: the scratch index and
    /// the base side by side, then the base and the new index (each at
    /// most the current index's size), above the reserve.
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
mod tests {
    use super::*;
    use crate::model::{MsgId, RoomId};
    use crate::store::keys::{one, postings, two, with_id, LOG, ROOM_MSG, WAL_SEQ_KEY};
    use crate::store::testing::{commit, msg};
    use crate::store::{wal_dir, Options, WriteBatch};
    use std::path::PathBuf;

    const DELETED: &str = "purged-7f3a9c-secret";
    /// A search word: it is in a key (a posting), not a value.
    const DELETED_WORD: &str = "zqxmarkerword";
    const OVERWRITTEN: &str = "overwritten-2b81e4-secret";

    fn opts() -> Options {
        Options {
            cache_bytes: 8 << 20,
            segment_bytes: 64 * 1024,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open_with(dir, &opts()).unwrap().0
    }

    /// Opens a store this process just dropped (see `testing::reopen`).
    fn reopen(dir: &Path) -> (Store, crate::store::Summary) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open_with(dir, &opts()) {
                Err(OpenError::Locked) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                r => return r.unwrap_or_else(|e| panic!("reopen: {e}")),
            }
        }
    }

    fn put(s: &Store, id: u64, text: &str) {
        let mut m = msg(id, 1);
        m.text = text.to_owned();
        let mut b = WriteBatch::default();
        b.put_message(&m);
        b.put_postings(RoomId(1), &[format!("w{id}")], MsgId(id));
        commit(s, vec![b]);
    }

    fn filler(s: &Store, ids: std::ops::RangeInclusive<u64>) {
        for id in ids {
            put(s, id, &format!("filler message {id} {}", "x".repeat(300)));
        }
    }

    /// Message 1001 holding `DELETED` (and a posting of `DELETED_WORD`),
    /// then deleted; message 1002 holding `OVERWRITTEN`, then replaced.
    fn write_and_delete(s: &Store) {
        let mut m = msg(1001, 1);
        m.text = format!("the text {DELETED} to purge");
        let mut b = WriteBatch::default();
        b.put_message(&m);
        b.put_postings(RoomId(1), &[DELETED_WORD.into()], MsgId(1001));
        commit(s, vec![b]);
        put(s, 1002, &format!("first {OVERWRITTEN}"));
        filler(s, 1003..=1010);
        // sled's files hold them too, not only the log.
        s.checkpoint().unwrap();
        let mut b = WriteBatch::default();
        b.remove(&one(LOG, 1001));
        b.remove(&two(ROOM_MSG, 1, 1001));
        b.remove_postings(RoomId(1), &[DELETED_WORD.into()], MsgId(1001));
        commit(s, vec![b]);
        put(s, 1002, "the replacement text");
    }

    fn secrets() -> [&'static str; 3] {
        [DELETED, DELETED_WORD, OVERWRITTEN]
    }

    /// Every file under `dir` (recursively) whose raw bytes hold `needle`.
    fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                out.extend(files_holding(&path, needle));
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(path);
                }
            }
        }
        out
    }

    fn assert_gone(dir: &Path) {
        for s in secrets() {
            let found = files_holding(dir, s);
            assert!(found.is_empty(), "{s} is still in {found:?}");
        }
    }

    /// Everything the index holds but its marker, in key order.
    fn data(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.db()
            .iter()
            .map(|kv| kv.unwrap())
            .filter(|(k, _)| k != WAL_SEQ_KEY)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// The entries at the top of the store's directory, sorted.
    fn top(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn deleted_and_overwritten_bytes_leave_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        filler(&s, 1..=300);
        write_and_delete(&s);
        filler(&s, 1011..=1020);
        for secret in secrets() {
            assert!(
                !files_holding(dir.path(), secret).is_empty(),
                "{secret} was never on disk: the test would prove nothing"
            );
        }
        let before = data(&s);
        let segments = wal::segments(&wal_dir(dir.path())).unwrap().len();
        assert!(segments > 2, "{segments} segments");
        let c = s.compact().unwrap();
        println!("compaction: {c:?}");
        assert_eq!(c.base_seq, s.log_position().0);
        assert!(c.segments_removed >= segments - 1, "{c:?}");
        assert!(c.bytes_after < c.bytes_before, "{c:?}");
        assert_gone(dir.path());
        assert_eq!(data(&s), before);
        assert!(!files_holding(dir.path(), "the replacement text").is_empty());
        assert_eq!(
            top(dir.path()),
            ["INDEX", &index::dir_name(c.base_seq), "wal"]
        );
        // Nothing committed since: a second one has nothing to do.
        let again = s.compact().unwrap();
        assert_eq!((again.base_seq, again.segments_removed), (c.base_seq, 0));
        // The store goes on: commits, checkpoints, reopens.
        filler(&s, 1021..=1030);
        s.checkpoint().unwrap();
        let before = data(&s);
        drop(s);
        let (s, sum) = reopen(dir.path());
        assert_eq!(sum.last_msg, 1030);
        assert_eq!(data(&s), before);
        assert_eq!(
            s.message(MsgId(1002)).unwrap().unwrap().text,
            "the replacement text"
        );
        assert!(s.message(MsgId(1001)).unwrap().is_none());
        assert_gone(dir.path());
    }

    /// sled's data file scribbled over (see `rebuild`'s tests).
    fn damage(dir: &Path) {
        let db = index::current(dir).unwrap().join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::write(&db, vec![0x5au8; len as usize]).unwrap();
    }

    #[test]
    fn after_a_compaction_the_index_is_rebuilt_from_the_base_and_the_records_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        filler(&s, 1..=100);
        write_and_delete(&s);
        s.compact().unwrap();
        filler(&s, 1011..=1050);
        s.checkpoint().unwrap();
        let before = data(&s);
        drop(s);
        damage(dir.path());
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some());
        assert_eq!(data(&s), before);
        assert!(!top(dir.path()).contains(&"INDEX".to_owned()));
        // The next compaction deletes the damaged index it kept aside.
        let c = s.compact().unwrap();
        assert_eq!(c.damaged_removed, 1);
        assert_eq!(data(&s), before);
        assert_gone(dir.path());
        assert_eq!(wal::bases(&wal_dir(dir.path())).unwrap().len(), 1);
        drop(s);
        let (s, _) = reopen(dir.path());
        assert_eq!(data(&s), before);
    }

    /// An index older than the base, whose records the compaction deleted
    /// (an old copy put back): rebuilt from the base, not refused.
    #[test]
    fn an_index_older_than_the_base_is_rebuilt_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let old = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        filler(&s, 1..=100);
        s.checkpoint().unwrap();
        for name in ["conf", "db"] {
            std::fs::copy(dir.path().join(name), old.path().join(name)).unwrap();
        }
        write_and_delete(&s);
        let c = s.compact().unwrap();
        let before = data(&s);
        drop(s);
        std::fs::remove_file(dir.path().join("INDEX")).unwrap();
        std::fs::remove_dir_all(dir.path().join(index::dir_name(c.base_seq))).unwrap();
        for name in ["conf", "db"] {
            std::fs::copy(old.path().join(name), dir.path().join(name)).unwrap();
        }
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some());
        assert_eq!(data(&s), before);
    }

    #[test]
    fn commits_go_on_while_compactions_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path()));
        filler(&s, 1..=200);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::spawn({
            let (s, stop) = (s.clone(), stop.clone());
            move || {
                let mut seqs = Vec::new();
                let mut id = 200;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    id += 1;
                    let mut m = msg(id, 1);
                    m.text = format!("live {id}");
                    let mut b = WriteBatch::default();
                    b.put_message(&m);
                    let mut record = Vec::new();
                    b.encode_into(&mut record);
                    s.stage(b);
                    seqs.push(s.commit(&record).unwrap());
                    // Readers on other threads meanwhile.
                    assert!(s.message(MsgId(id)).unwrap().is_some());
                }
                (id, seqs)
            }
        });
        let (mut pauses, mut caught_up) = (Vec::new(), 0);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            let c = s.compact().unwrap();
            pauses.push(c.pause);
            caught_up += c.caught_up;
        }
        // Commits did land while they ran.
        assert!(caught_up > 0, "no commit while compacting");
        std::thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::Relaxed);
        let (last, seqs) = writer.join().unwrap();
        println!(
            "pauses while committing: {pauses:?}; {} commits",
            seqs.len()
        );
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "seqs not continuous"
        );
        assert!(last > 210, "only {last} committed");
        for id in 1..=last {
            assert!(s.message(MsgId(id)).unwrap().is_some(), "message {id} lost");
        }
        let before = data(&s);
        let s = Arc::try_unwrap(s).ok().unwrap();
        drop(s);
        let (s, sum) = reopen(dir.path());
        assert_eq!(sum.last_msg, last);
        assert_eq!(data(&s), before);
        drop(s);
        damage(dir.path());
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some());
        assert_eq!(data(&s), before);
    }

    /// Stopped after each step, as a crash would stop it: the reopened
    /// store holds the same data and none of the compaction's leftovers;
    /// once the deleted data's compaction went through the switch (there
    /// or, after reopening, by a compaction run anew), it is gone.
    #[test]
    fn a_compaction_stopped_at_any_step_leaves_a_store_that_opens_whole() {
        for step in [
            Step::Replayed,
            Step::BaseWritten,
            Step::Built,
            Step::Switched,
            Step::OldIndexRemoved,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path());
            filler(&s, 1..=100);
            write_and_delete(&s);
            let before = data(&s);
            s.compact_until(step).unwrap();
            drop(s);
            let (s, _) = reopen(dir.path());
            assert_eq!(data(&s), before, "{step:?}");
            let names = top(dir.path());
            let indexes = names.iter().filter(|n| n.starts_with("index-")).count();
            assert!(indexes <= 1, "{step:?}: {names:?}");
            assert!(!names.contains(&index::BUILDING.to_owned()), "{step:?}");
            let has_pointer = names.contains(&"INDEX".to_owned());
            assert_eq!(indexes == 1, has_pointer, "{step:?}: {names:?}");
            if has_pointer {
                assert!(!names.contains(&"db".to_owned()), "{step:?}: {names:?}");
            }
            if step >= Step::Switched {
                assert_gone(dir.path());
            } else {
                s.compact().unwrap();
                assert_gone(dir.path());
                assert_eq!(data(&s), before, "{step:?}");
            }
            filler(&s, 2000..=2010);
            let before = data(&s);
            drop(s);
            let (s, _) = reopen(dir.path());
            assert_eq!(data(&s), before, "{step:?}");
            drop(s);
            damage(dir.path());
            let (s, sum) = reopen(dir.path());
            assert!(sum.rebuilt_from.is_some(), "{step:?}");
            assert_eq!(data(&s), before, "{step:?}");
        }
    }

    #[test]
    fn postings_and_the_page_key_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let key = s.page_token_key().unwrap();
        filler(&s, 1..=20);
        s.compact().unwrap();
        let hits = s
            .search(RoomId(1), &["w7".into()], (MsgId(0), MsgId(100)), 10, true)
            .unwrap();
        assert_eq!(hits, [MsgId(7)]);
        assert!(s
            .db()
            .get(with_id(&postings(1, "w7"), 7))
            .unwrap()
            .is_some());
        drop(s);
        let (s, _) = reopen(dir.path());
        assert_eq!(s.page_token_key().unwrap(), key);
    }

    /// `parlor check` reads the history as open does: the base, then the
    /// records after it (from record 1 it would find them missing).
    #[test]
    fn parlor_check_reads_a_compacted_log() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("store");
        let s = open(&dir);
        filler(&s, 1..=300);
        s.compact().unwrap();
        filler(&s, 301..=310);
        drop(s);
        crate::cli::check(data.path()).unwrap();
    }
}
