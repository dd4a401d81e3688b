//! The log's history into an index: a base snapshot (`wal::base`), then
//! records, each applied with its seq as the index's marker. What open
//! replays, what a rebuild starts from, and what a compaction builds its
//! new index with.

use std::io;
use std::path::{Path, PathBuf};

use super::batch::decode_ops;
use super::keys::*;
use super::open::FORMAT_VERSION;
use super::wal;

/// Base entries applied to sled at a time, in bytes.
const BATCH_BYTES: usize = 1 << 20;

/// Loads the base at `path` into `db` (an empty index): its entries, the
/// format stamp, and its seq as the marker (last, so that a load cut
/// short leaves no marker). Returns the seq.
pub(super) fn load_base(db: &sled::Db, path: &Path) -> io::Result<u64> {
    let mut batch = sled::Batch::default();
    let mut bytes = 0;
    let flush = |b: &mut sled::Batch| db.apply_batch(std::mem::take(b)).map_err(io::Error::other);
    batch.insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION));
    let (seq, _) = wal::read_base(path, &mut |k, v| {
        batch.insert(k, v);
        bytes += k.len() + v.len();
        if bytes >= BATCH_BYTES {
            flush(&mut batch)?;
            bytes = 0;
        }
        Ok(())
    })?;
    batch.insert(WAL_SEQ_KEY, &u64_value(seq));
    flush(&mut batch)?;
    Ok(seq)
}

/// Writes the base of record `seq` into the log's directory from `db`,
/// which holds the state as of that record: every key but the meta keys
/// [`load_base`] writes. Returns its path.
pub(super) fn write_base(db: &sled::Db, wal_dir: &Path, seq: u64) -> io::Result<PathBuf> {
    let mut w = wal::BaseWriter::create(wal_dir, seq)?;
    for kv in db.iter() {
        let (k, v) = kv.map_err(io::Error::other)?;
        if k == FORMAT_VERSION_KEY || k == WAL_SEQ_KEY {
            continue;
        }
        w.put(&k, &v)?;
    }
    w.finish()
}

/// Applies one log record to `db`: its writes and its seq as the marker,
/// atomically.
pub(super) fn apply_record(db: &sled::Db, seq: u64, payload: &[u8]) -> Result<(), ApplyError> {
    let mut batch = decode_ops(payload).map_err(ApplyError::Record)?;
    batch.insert(WAL_SEQ_KEY, &u64_value(seq));
    db.apply_batch(batch).map_err(ApplyError::Index)
}

/// Why a record could not be applied.
#[derive(Debug)]
pub(super) enum ApplyError {
    /// The record's payload does not decode.
    Record(String),
    /// sled failed to write it.
    Index(sled::Error),
}

impl From<ApplyError> for io::Error {
    fn from(e: ApplyError) -> io::Error {
        match e {
            ApplyError::Record(why) => io::Error::other(why),
            ApplyError::Index(e) => io::Error::other(e),
        }
    }
}
