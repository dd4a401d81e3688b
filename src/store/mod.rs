//! The store: the only code that imports sled. Typed reads, typed write
//! batches, the write-ahead log that makes them durable (`wal`), and the
//! checkpoint that makes sled's copy durable so the replay at open stays
//! short.
//! It knows nothing of ordering or fan-out; `core::commit` is its only
//! writer.
//!
//! A commit: each job's batch is staged ([`Store::stage`], `pending`),
//! where only the writer's thread reads it (its next jobs see it, nobody
//! else does); then the group's batches are one record of the log,
//! appended and `fdatasync`ed by the calling thread ([`Store::commit`]);
//! only then does sled get the group's writes, and the record's seq as
//! its marker. sled is never flushed on that path. [`Store::checkpoint`]
//! (a background thread, see `checkpoint`) flushes and fsyncs sled.
//! Opening (`open`) replays every record above sled's marker, or, if
//! sled's files cannot be opened, rebuilds the index from the log's
//! history (`rebuild`): every record from 1, or, once the store was
//! compacted, the base snapshot and the records after it. Compaction
//! ([`Store::compact_with`], `compact`) is what makes deleted data leave the
//! disk: a new base replaces the log's old segments, and a fresh index,
//! built from that base, replaces sled's files, swapped in while the
//! sequencer runs.
//!
//! Where things are: opening, replay, migration and the summary in
//! `open`; the group being built and reads that see it in `pending`;
//! making it durable in `commit`; write batches and their encoding in the
//! log in `batch`; where sled's files are, and the index in use, in
//! `index`; the log's history into an index in `history`; compaction in
//! `compact`. Each keyspace's reads and writes (`impl Store` and
//! `impl WriteBatch`) sit together: `users`, `rooms`, `messages`,
//! `postings`, `patients`, `webhooks`, `api_clients`, `audit`. Backup
//! and restore: `export`. Key layouts: `keys`. Value encoding: `codec`.
//! Log format: `wal`. Room on the disk, and refusing writes without it:
//! `space`.

mod api_clients;
mod audit;
mod batch;
pub mod checkpoint;
mod codec;
mod commit;
mod compact;
#[cfg(test)]
mod compact_powercut;
mod export;
mod history;
mod index;
pub mod keys;
mod messages;
mod open;
mod pace;
mod patients;
mod pending;
mod postings;
mod rebuild;
mod retention;
mod rooms;
pub mod space;
#[cfg(test)]
mod testing;
mod users;
pub mod wal;
mod webhooks;

pub use audit::{Sealed, StoredAudit};
pub use batch::WriteBatch;
pub use compact::{Compaction, Swap};
pub use export::Record;
pub use open::{OpenError, Options, Summary, FORMAT_VERSION};
pub use users::TokenRecord;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use index::Index;
use pending::Pending;

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

/// How an error from sled's files (not from parlor's log) begins: at
/// open, such an error means the index must be rebuilt from the log.
const INDEX_ERROR: &str = "sled: ";

impl From<sled::Error> for StoreError {
    /// A full disk is not damage: its message does not start with
    /// [`INDEX_ERROR`], so open does not rebuild the index over it.
    fn from(e: sled::Error) -> Self {
        if space::sled_no_space(&e) {
            StoreError(format!("{NO_SPACE} ({e})"))
        } else {
            StoreError(format!("{INDEX_ERROR}{e}"))
        }
    }
}

/// How open says that the disk is too full to open the store.
const NO_SPACE: &str = "no space left on the device to open the store: free some space on it \
                        (the store's data is intact)";

/// Why [`Store::commit`] did not commit.
#[derive(Debug)]
pub enum CommitError {
    /// Nothing was written: no room on the disk (see `space`). The store
    /// refuses writes until there is room again; retry later.
    Refused,
    /// Writing or syncing failed: whether the record is on disk is not
    /// known, and a retry is not safe. The caller stops.
    Failed(io::Error),
}

impl From<io::Error> for CommitError {
    fn from(e: io::Error) -> Self {
        CommitError::Failed(e)
    }
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Refused => f.write_str("refused: no room on the disk"),
            CommitError::Failed(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        crate::error::Error::internal(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    /// The index in use; a compaction replaces it whole (`compact`).
    /// Read through [`Store::db`].
    index: RwLock<Arc<Index>>,
    dir: PathBuf,
    /// As opened: a compaction opens its new index with them.
    opts: Options,
    /// Items read by range scans; lets tests prove a scan's cost.
    scanned: AtomicU64,
    /// Keys group commits have written into sled; lets tests prove what
    /// an operation costs the writer.
    applied: AtomicU64,
    /// The page-token key, made (and synced) at open.
    page_key: std::sync::OnceLock<[u8; 32]>,
    /// The log's appending end: the sequencer's alone (`commit`).
    wal: Mutex<wal::Writer>,
    wal_shared: Arc<wal::Shared>,
    /// Room on the disk; whether writes are refused for lack of it.
    space: Arc<space::Space>,
    /// The log directory's lock (`wal::lock`), held while the store is open.
    _lock: Arc<File>,
    /// The newest log record whose marker is in sled (its writes are).
    applied_seq: AtomicU64,
    /// The newest log record sled holds durably (the last checkpoint's).
    checkpointed: AtomicU64,
    /// One checkpoint at a time; held by a compaction from its last
    /// catch-up to the swap, so no checkpoint records the old index's
    /// position for the new one.
    checkpointing: Mutex<()>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    /// The writes of the group commit being built, seen only by the
    /// sequencer's thread (its jobs read their predecessors' writes):
    /// sled gets them only once the group's log record is durable.
    pending: Mutex<Pending>,
    wal_dir: PathBuf,
}

/// The write-ahead log's directory inside a store's directory.
pub fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

impl Store {
    /// How many items range scans have read since open.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    /// How many keys group commits have written into sled since open
    /// (each commit's marker included).
    pub fn applied_writes(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// The index in use (derefs to sled's `Db`): held for one read, not
    /// kept, so that a compaction can replace it.
    fn db(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
