//! The log's history into an index: a base snapshot (`wal::base`), then
//! records, each applied with its seq as the index's marker. What open
//! replays, what a rebuild starts from, and what a compaction builds its
//! new index with.

use std::io;
use std::path::{Path, PathBuf};

use super::batch::decode_ops;
use super::keys::*;
use super::open::FORMAT_VERSION;
use super::pace::Pace;
use super::wal;

/// Loads the base at `path` into `db` (an empty index): its entries, the
/// format stamp, and its seq as the marker (last, so that a load cut
/// short leaves no marker), paced by `pace`. Returns the seq.
///
/// One key at a time, never `apply_batch`: sled's batches take a lock
/// shared by every index of the process for writing, so a compaction's
/// batch into its new index, on a thread at idle priority, would stall
/// the sequencer's inserts into the index in use behind it.
pub(super) fn load_base(db: &sled::Db, path: &Path, pace: &mut Pace) -> io::Result<u64> {
    db.insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION))
        .map_err(io::Error::other)?;
    let (seq, _) = wal::read_base(path, &mut |k, v| {
        db.insert(k, v).map_err(io::Error::other)?;
        pace.wrote(k.len() + v.len(), || {
            db.flush().map(drop).map_err(io::Error::other)
        })
    })?;
    db.insert(WAL_SEQ_KEY, &u64_value(seq))
        .map_err(io::Error::other)?;
    Ok(seq)
}

/// Writes the base of record `seq` into the log's directory from `db`,
/// which holds the state as of that record (or, see `compact`, as of a
/// later one, which the records after `seq` make exact): every key but
/// the meta keys [`load_base`] writes, paced by `pace`. Returns its path.
pub(super) fn write_base(
    db: &sled::Db,
    wal_dir: &Path,
    seq: u64,
    pace: &mut Pace,
) -> io::Result<PathBuf> {
    let mut w = wal::BaseWriter::create(wal_dir, seq)?;
    for kv in db.iter() {
        let (k, v) = kv.map_err(io::Error::other)?;
        if k == FORMAT_VERSION_KEY || k == WAL_SEQ_KEY {
            continue;
        }
        w.put(&k, &v)?;
        pace.wrote(k.len() + v.len() + 8, || w.sync())?;
    }
    w.finish()
}

/// Applies one log record to `db`: its writes, then its seq as the
/// marker, one key at a time (as `Store::commit` does, and for the reason
/// [`load_base`] gives). Not atomic, and need not be: a record's writes
/// are whole values and removals, so the record after the marker is
/// applied whole again after a crash, whatever part of it sled kept.
pub(super) fn apply_record(db: &sled::Db, seq: u64, payload: &[u8]) -> Result<(), ApplyError> {
    for (k, v) in decode_ops(payload).map_err(ApplyError::Record)? {
        match v {
            Some(v) => db.insert(k, v),
            None => db.remove(k),
        }
        .map_err(ApplyError::Index)?;
    }
    db.insert(WAL_SEQ_KEY, &u64_value(seq))
        .map_err(ApplyError::Index)?;
    Ok(())
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
