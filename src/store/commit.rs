//! Making writes durable: a group commit's log record, then sled
//! ([`Store::commit`]); a batch written outside the sequencer
//! (`write_through`); and sled's own copy made durable
//! ([`Store::checkpoint`], called by the `checkpoint` thread), which
//! bounds the replay at the next open.

use std::io;
use std::sync::atomic::Ordering;

use super::keys::*;
use super::{space, wal, CommitError, Result, Store, StoreError, WriteBatch};

impl Store {
    /// Makes a group commit durable: its writes (each job's batch,
    /// already staged, encoded by [`WriteBatch::encode_into`]) as one
    /// write-ahead log record, appended and synced on the calling thread;
    /// then into sled, and the record's seq as sled's marker. Returns the
    /// seq. [`CommitError::Refused`]: no room, nothing written, the staged
    /// writes dropped. [`CommitError::Failed`] cannot be retried safely:
    /// the caller stops.
    pub fn commit(&self, payload: &[u8]) -> std::result::Result<u64, CommitError> {
        let appended = self
            .wal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(payload);
        let seq = match appended {
            Ok(seq) => seq,
            Err(e) => {
                if let CommitError::Refused = e {
                    drop(self.take_pending());
                }
                return Err(e);
            }
        };
        // Now durable: into sled, one write at a time, in staging order
        // (sled's `apply_batch` would hand a buffer to its I/O threads
        // each time; the log already makes the group atomic across a
        // crash, readers of messages wait for `visible`, raised after
        // this, and a derived key lands after the record it derives from).
        // The index is taken after the append: a compaction swaps it only
        // while it holds the log and every appended record is applied.
        let db = self.db();
        let writes = self.take_pending();
        self.applied
            .fetch_add(writes.len() as u64 + 1, Ordering::Relaxed);
        for (k, w) in writes {
            match w {
                Some(v) => db.insert(k, v),
                None => db.remove(k),
            }
            .map_err(io::Error::other)?;
        }
        db.insert(WAL_SEQ_KEY, &u64_value(seq))
            .map_err(io::Error::other)?;
        self.applied_seq.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Makes sled's copy durable: sled's flush (which ends in
    /// `sync_file_range`, not a full fsync), then `fsync` of the data file
    /// and of any new blob files. Returns the log seq it covers. Never on
    /// the commit path. A checkpoint bounds the replay at open; it does
    /// not trim the log (a compaction does, `compact`).
    pub fn checkpoint(&self) -> io::Result<u64> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        // Loaded before the flush: the marker's insert came before this
        // store, so the flush holds it and everything written before it.
        let seq = self.applied_seq.load(Ordering::Acquire);
        self.db().sync()?;
        wal::write_checkpoint(&self.wal_dir, seq)?;
        self.checkpointed.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Starts writing sled's recent writes out between checkpoints
    /// (`Index::start_writeback`); the checkpoint thread's, every tick.
    pub fn start_writeback(&self) -> io::Result<()> {
        self.db().start_writeback()
    }

    /// The newest log seq committed, and the newest a checkpoint holds.
    pub fn log_position(&self) -> (u64, u64) {
        (
            self.applied_seq.load(Ordering::Acquire),
            self.checkpointed.load(Ordering::Acquire),
        )
    }

    /// The log's state shared with the checkpoint thread.
    pub fn wal(&self) -> &wal::Shared {
        &self.wal_shared
    }

    /// Room on the disk, and whether writes are refused for lack of it.
    pub fn space(&self) -> &space::Space {
        &self.space
    }

    /// Writes a batch outside the sequencer (open, restore): applied and
    /// made durable as a log record of its own. Only while no sequencer
    /// runs.
    pub(super) fn write_through(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut record = Vec::new();
        batch.encode_into(&mut record);
        self.stage(batch);
        self.commit(&record).map_err(|e| match e {
            CommitError::Refused => StoreError(format!(
                "no room on the disk to write: {}",
                self.space.refusing().unwrap_or_default()
            )),
            CommitError::Failed(e) => StoreError(format!("writing the write-ahead log: {e}")),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Delivery, MsgId, UserId, Workspace};
    use crate::store::testing::{commit, msg, reopen};
    use crate::store::{wal_dir, Options};
    use std::path::Path;

    /// What the disk holds at this moment, as a crash would leave it: the
    /// store's files copied while it is open (sled unflushed).
    fn crash_copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
                crash_copy(&entry.path(), &dest);
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }

    #[test]
    fn committed_groups_survive_a_crash_before_any_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let base = s.log_position().0;
        for g in 0..5u64 {
            let batches: Vec<WriteBatch> = (1..=3)
                .map(|j| {
                    let mut b = WriteBatch::default();
                    b.put_message(&msg(g * 3 + j, 1));
                    b
                })
                .collect();
            commit(&s, batches);
        }
        // A removal is replayed too.
        let mut b = WriteBatch::default();
        b.put_delivery(&Delivery {
            message: MsgId(15),
            patient: UserId(1),
            workspace: Workspace::default(),
            text: "m15".into(),
            at_ms: 15,
        });
        commit(&s, vec![b]);
        let mut b = WriteBatch::default();
        b.remove_delivery(MsgId(15));
        commit(&s, vec![b]);
        assert_eq!(s.log_position().0, base + 7);
        crash_copy(dir.path(), copy.path());
        let (c, sum) = Store::open(copy.path()).unwrap();
        assert_eq!(sum.last_msg, 15);
        assert!(sum.replayed >= 1, "replayed {}", sum.replayed);
        assert_eq!(c.message(MsgId(14)).unwrap().unwrap().text, "m14");
        assert!(c.outbox(MsgId(0), 10).unwrap().is_empty());
        // Open checkpointed what it replayed: nothing is replayed twice,
        // and the next record follows on.
        assert_eq!(c.log_position(), (base + 7, base + 7));
        drop(c);
        let (c, sum) = reopen(copy.path());
        assert_eq!((sum.replayed, sum.last_msg), (0, 15));
        let mut b = WriteBatch::default();
        b.put_message(&msg(16, 1));
        commit(&c, vec![b]);
        assert_eq!(c.log_position().0, base + 8);
    }

    #[test]
    fn reopen_replays_only_what_follows_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            cache_bytes: 8 << 20,
            segment_bytes: 8 * 1024,
        };
        let (s, _) = Store::open_with(dir.path(), &opts).unwrap();
        let base = s.log_position().0;
        let group = |s: &Store, id: u64| {
            let mut b = WriteBatch::default();
            b.put_message(&msg(id, 2));
            commit(s, vec![b]);
        };
        for id in 1..=100 {
            group(&s, id);
        }
        let segs = wal::segments(&wal_dir(dir.path())).unwrap().len();
        assert!(segs > 2, "{segs} segments");
        assert_eq!(s.checkpoint().unwrap(), base + 100);
        // A checkpoint does not trim the log: only a compaction does.
        assert_eq!(wal::segments(&wal_dir(dir.path())).unwrap().len(), segs);
        for id in 101..=110 {
            group(&s, id);
        }
        let copy = tempfile::tempdir().unwrap();
        crash_copy(dir.path(), copy.path());
        let (c, sum) = Store::open_with(copy.path(), &opts).unwrap();
        // sled may have written some of its unflushed pages on its own:
        // the log replays exactly what its marker does not cover.
        assert!((1..=10).contains(&sum.replayed), "{}", sum.replayed);
        assert_eq!(sum.last_msg, 110);
        assert_eq!(c.message(MsgId(105)).unwrap().unwrap().text, "m105");
    }
}
