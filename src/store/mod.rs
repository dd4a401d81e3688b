//! The store: the only code that imports sled. Typed reads, typed write
//! batches, the write-ahead log that makes them durable (`wal`), and the
//! checkpoint that makes sled's copy durable so the replay at open stays
//! short.
//! It knows nothing of ordering or fan-out; `core::commit` is its only
//! writer.
//!
//! A commit: each job's batch is applied to sled (visible to readers, not
//! durable), then the group's batches are one record of the log,
//! appended and `fdatasync`ed by the calling thread ([`Store::commit`]),
//! then the record's seq is written to sled as its marker. sled is never
//! flushed on that path. [`Store::checkpoint`] (a background thread, see
//! `checkpoint`) flushes and fsyncs sled. Opening replays every record
//! above sled's marker, or, if sled's files cannot be opened, rebuilds
//! the index from the whole log.
//!
//! Key layouts: `keys`. Value encoding: `codec`. Log format: `wal`.
//! Room on the disk, and refusing writes without it: `space`.

mod api_clients;
mod audit;
pub mod checkpoint;
mod codec;
mod export;
pub mod keys;
pub mod space;
pub mod wal;
mod webhooks;

pub use audit::{Sealed, StoredAudit};
pub use export::Record;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{de::DeserializeOwned, Serialize};

use crate::model::{Message, MsgId, Participant, Room, RoomId, User, UserId, Workspace};
use keys::*;

/// Bumped when the layout in `keys` (or how the store's files fit
/// together) changes incompatibly; checked at open. 1: sled alone, synced
/// per commit. 2: sled as the index behind parlor's write-ahead log
/// (`DIR/wal`); a format-1 store is migrated on first open.
pub const FORMAT_VERSION: u64 = 2;

/// How the store uses memory and disk (`parlor serve` flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// sled's page cache bound, bytes.
    pub cache_bytes: u64,
    /// Size of each write-ahead log segment, preallocated.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 64 << 20,
            segment_bytes: 16 << 20,
        }
    }
}

/// A stored token: only the SHA-256 of the token string is the key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub user: UserId,
    pub created_ms: u64,
}

#[derive(Debug)]
pub enum OpenError {
    /// Another process (a running daemon) holds the store.
    Locked,
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked => write!(f, "the store is locked by another process"),
            OpenError::Other(s) => f.write_str(s),
        }
    }
}

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

/// What `open` found, for the startup log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub recovered: bool,
    /// Write-ahead log records replayed into the index.
    pub replayed: u64,
    /// The format this store had, if it was migrated at this open.
    pub migrated_from: Option<u64>,
    /// Where sled's unreadable files were moved, if the index was rebuilt
    /// from the log at this open.
    pub rebuilt_from: Option<PathBuf>,
    pub last_user: u64,
    pub last_room: u64,
    pub last_msg: u64,
    /// Commit time of the newest message (Unix ms), 0 if none.
    pub last_msg_ms: u64,
    /// The newest audit record, where the trail's chain resumes.
    pub last_audit: Option<(u64, StoredAudit)>,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    /// sled's data file; `sync` fsyncs it after sled's own flush.
    data_file: File,
    /// Blob files already fsynced (sled writes values too big for a log
    /// segment to files of their own, and never fsyncs them).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Items read by range scans; lets tests prove a scan's cost.
    scanned: AtomicU64,
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
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// The writes of the group commit being built, seen only by the
    /// sequencer's thread (its jobs read their predecessors' writes):
    /// sled gets them only once the group's log record is durable.
    pending: Mutex<Pending>,
    wal_dir: PathBuf,
}

/// sled writes its `conf` file and creates its files without ever fsyncing
/// them or the directory: after a power cut `conf` may be empty (sled then
/// warns and writes its defaults again). Synced once, at open.
fn sync_sled_files(dir: &Path) -> io::Result<()> {
    match File::open(dir.join("conf")) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::open(dir)?.sync_all()
}

/// The write-ahead log's directory inside a store's directory.
pub fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

/// Opens sled's files in `dir`. sled 0.34 may refuse files that a power
/// cut left with unsynced writes persisted out of order ("corrupted
/// data"), or panic on them (caught by `Store::open_with`).
fn open_sled(dir: &Path, opts: &Options) -> std::result::Result<sled::Db, OpenError> {
    let config = sled::Config::new()
        .path(dir)
        .cache_capacity(opts.cache_bytes)
        // Durability is the write-ahead log's; sled is flushed only by
        // checkpoints, never by a timer of its own.
        .flush_every_ms(None);
    match config.open() {
        Ok(db) => Ok(db),
        Err(e) if e.to_string().contains("lock") => Err(OpenError::Locked),
        Err(e) => Err(OpenError::Other(StoreError::from(e).0)),
    }
}

/// sled's files cannot be opened: if the log holds the whole history (it
/// starts at record 1 and reads cleanly), moves sled's files to
/// `DIR/index-damaged-<unix ms>/` (kept for inspection, never deleted)
/// so that a fresh index is rebuilt by replaying the log. Otherwise
/// refuses, saying why.
fn move_index_aside(dir: &Path, why: &str) -> std::result::Result<PathBuf, OpenError> {
    let wal = wal_dir(dir);
    let refuse = |more: String| {
        OpenError::Other(format!(
            "the store's index in {} cannot be opened ({why}), and {more}; restore from a \
             backup (`parlor restore`)",
            dir.display()
        ))
    };
    let scan = wal::scan(&wal, 0, &mut |_, _| Ok(()))
        .map_err(|e| refuse(format!("it cannot be rebuilt: {e}")))?;
    if scan.first_seq != Some(1) {
        return Err(refuse(format!(
            "the write-ahead log in {} does not hold the whole history to rebuild it from",
            wal.display()
        )));
    }
    let aside = dir.join(format!("index-damaged-{}", unix_ms_now()));
    let io = |e: io::Error| OpenError::Other(format!("moving the damaged index aside: {e}"));
    std::fs::create_dir(&aside).map_err(io)?;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let keep = name == "wal" || name.to_string_lossy().starts_with("index-damaged-");
        if !keep {
            std::fs::rename(entry.path(), aside.join(&name)).map_err(io)?;
        }
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    tracing::error!(
        cause = why,
        moved_to = %aside.display(),
        records = scan.records,
        "the store's index could not be opened; rebuilding it from the write-ahead log"
    );
    Ok(aside)
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Opens (or creates) the store in `dir` with the default options.
    pub fn open(dir: &Path) -> std::result::Result<(Store, Summary), OpenError> {
        Store::open_with(dir, &Options::default())
    }

    /// Opens (or creates) the store in `dir`: checks the format version
    /// (migrating a format-1 store), replays the write-ahead log above
    /// sled's marker (cutting a torn last record, refusing damage in the
    /// middle), checks that the message log's tail is consistent with its
    /// index, and checkpoints, so everything it will show is durable.
    pub fn open_with(
        dir: &Path,
        opts: &Options,
    ) -> std::result::Result<(Store, Summary), OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Other(format!("{dir:?}: {e}")))?;
        let wal_dir = wal_dir(dir);
        let lock = match wal::lock(&wal_dir) {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(OpenError::Locked),
            Err(e) => return Err(OpenError::Other(format!("{}: {e}", wal_dir.display()))),
        };
        wal::remove_spare(&wal_dir)
            .and_then(|()| space::release_ballast(&wal_dir))
            .map_err(|e| OpenError::Other(format!("{}: {e}", wal_dir.display())))?;
        // sled's files may fail at any step of the open (refused, a
        // panic, an error on a read or a replayed write): then, once, the
        // index is moved aside and rebuilt from the log.
        let once = |rebuilt: Option<PathBuf>| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                Store::open_once(dir, opts, rebuilt, lock.clone())
            }))
            .unwrap_or_else(|p| {
                let what = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(OpenError::Other(format!("{INDEX_ERROR}panicked: {what}")))
            })
        };
        match once(None) {
            Err(OpenError::Other(why)) if why.contains(INDEX_ERROR) => {
                let aside = move_index_aside(dir, &why)?;
                once(Some(aside))
            }
            r => r,
        }
    }

    fn open_once(
        dir: &Path,
        opts: &Options,
        mut rebuilt_from: Option<PathBuf>,
        lock: Arc<File>,
    ) -> std::result::Result<(Store, Summary), OpenError> {
        let wal_dir = wal_dir(dir);
        let mut db = open_sled(dir, opts)?;
        let checkpointed = wal::read_checkpoint(&wal_dir)
            .map_err(|e| OpenError::Other(format!("reading {}: {e}", wal_dir.display())))?;
        let marker = wal_marker(&db).map_err(|e| OpenError::Other(e.0))?;
        if let (None, Some(ck)) = (&rebuilt_from, checkpointed) {
            if marker < ck {
                drop(db);
                let why = format!(
                    "sled reopened as of log record {marker}, but it had been checkpointed \
                     through record {ck}: it lost writes it held durably"
                );
                rebuilt_from = Some(move_index_aside(dir, &why)?);
                db = open_sled(dir, opts)?;
            }
        }
        let data_file = File::open(dir.join("db"))
            .map_err(|e| OpenError::Other(format!("opening the data file: {e}")))?;
        let other = |e: StoreError| OpenError::Other(e.0);
        let migrated_from = check_format(&db).map_err(other)?;
        let marker = wal_marker(&db).map_err(other)?;
        let mut replayed_to = marker;
        // A replayed write sled has no room for is no damage of the log.
        let mut no_space = None;
        let scan = wal::scan(&wal_dir, marker, &mut |seq, payload| {
            let mut batch = decode_ops(payload)?;
            batch.insert(WAL_SEQ_KEY, &u64_value(seq));
            db.apply_batch(batch).map_err(|e| {
                let e = StoreError::from(e).0;
                if e.starts_with(NO_SPACE) {
                    no_space = Some(e.clone());
                }
                e
            })?;
            replayed_to = seq;
            Ok(())
        });
        if let Some(e) = no_space {
            return Err(OpenError::Other(e));
        }
        let scan = scan.map_err(|e| OpenError::Other(e.to_string()))?;
        if let Some(t) = &scan.torn {
            tracing::warn!(
                file = %t.path.display(),
                offset = t.offset,
                bytes = t.len,
                "the write-ahead log ends in a torn write (a crash mid-append, never acknowledged); cutting it"
            );
            wal::cut_torn(t).map_err(|e| {
                OpenError::Other(format!("cutting the torn end of {}: {e}", t.path.display()))
            })?;
        }
        let next_seq = scan.last_seq.unwrap_or(0).max(replayed_to) + 1;
        let space = Arc::new(space::Space::new(&wal_dir, opts.segment_bytes));
        let writer = wal::Writer::open(
            &wal_dir,
            opts.segment_bytes,
            space.clone(),
            scan.end,
            next_seq,
        )
        .map_err(|e| OpenError::Other(format!("opening the write-ahead log: {e}")))?;
        // Set aside again (it was released above for sled), if there is
        // room: no write goes ahead without it.
        if let Err(e) = space.keep_ballast() {
            tracing::warn!(error = %e, "cannot set the ballast aside");
        }
        // Refusing from the start on a full disk, not from the checkpoint
        // thread's first look (no spare yet: nothing to resume).
        space.check(false);
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            data_file,
            synced_blobs: Mutex::new(HashSet::new()),
            scanned: AtomicU64::new(0),
            page_key: std::sync::OnceLock::new(),
            wal_shared: writer.shared(),
            wal: Mutex::new(writer),
            space,
            _lock: lock,
            applied_seq: AtomicU64::new(replayed_to),
            checkpointed: AtomicU64::new(marker),
            wal_dir: wal_dir.clone(),
            checkpointing: Mutex::new(()),
            pending: Mutex::new(Pending::default()),
        };
        if let Some(from) = migrated_from {
            // The log must hold the whole history (so that the index can
            // be rebuilt from it): a format-1 store's data goes in first.
            // The new format is stamped only once that is durable; a crash
            // before makes the next open do it again, harmlessly.
            let n = store.write_base().map_err(other)?;
            store
                .checkpoint()
                .map_err(|e| OpenError::Other(format!("syncing the store: {e}")))?;
            store
                .db
                .insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION))
                .map_err(|e| other(e.into()))?;
            tracing::info!(
                from,
                to = FORMAT_VERSION,
                records = n,
                "migrated the store's format (sled is now the index behind a write-ahead log)"
            );
        }
        let mut summary = store.summary().map_err(other)?;
        summary.replayed = scan.replayed;
        summary.migrated_from = migrated_from;
        summary.rebuilt_from = rebuilt_from;
        store.check_log_tail(summary.last_msg).map_err(other)?;
        // Made here, before the checkpoint below, so tokens signed with it
        // survive any crash after open.
        store.page_token_key().map_err(other)?;
        // Everything open found is made durable before anything is shown:
        // sled may hold writes of a group whose log record a crash took.
        store
            .checkpoint()
            .and_then(|_| sync_sled_files(dir))
            .map_err(|e| match space::is_no_space(&e) {
                true => OpenError::Other(format!("{NO_SPACE} ({e})")),
                false => OpenError::Other(format!("syncing the store: {e}")),
            })?;
        Ok((store, summary))
    }

    /// The newest log entry must have its room-index entry: both are written
    /// by one atomic batch, so anything else means the files were damaged.
    fn check_log_tail(&self, last_msg: u64) -> Result<()> {
        if last_msg == 0 {
            return Ok(());
        }
        let Some((room, _)) = self.log_entry(last_msg)? else {
            return Err(StoreError(format!("log entry {last_msg} is unreadable")));
        };
        if self.raw_get(two(ROOM_MSG, room, last_msg))?.is_none() {
            return Err(StoreError(format!(
                "message {last_msg} is in the log but not in room {room}"
            )));
        }
        Ok(())
    }

    fn last_id(&self, tag: u8) -> Result<u64> {
        Ok(self
            .db
            .scan_prefix([tag])
            .next_back()
            .transpose()?
            .map(|(k, _)| tail_u64(&k))
            .unwrap_or(0))
    }

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
                    self.pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .writes
                        .clear();
                }
                return Err(e);
            }
        };
        // Now durable: into sled, one write at a time (sled's
        // `apply_batch` would hand a buffer to its I/O threads each time;
        // the log already makes the group atomic across a crash, and
        // readers of messages wait for `visible`, raised after this).
        let writes = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .writes,
        );
        for (k, w) in writes {
            match w {
                Some(v) => self.db.insert(k, v),
                None => self.db.remove(k),
            }
            .map_err(io::Error::other)?;
        }
        self.db
            .insert(WAL_SEQ_KEY, &u64_value(seq))
            .map_err(io::Error::other)?;
        self.applied_seq.store(seq, Ordering::Release);
        Ok(seq)
    }

    /// Makes sled's copy durable: sled's flush (which ends in
    /// `sync_file_range`, not a full fsync), then `fsync` of the data file
    /// and of any new blob files. Returns the log seq it covers. Never on
    /// the commit path. The log is kept whole (see `wal`): a checkpoint
    /// bounds the replay at open, it does not trim.
    pub fn checkpoint(&self) -> io::Result<u64> {
        let _one = self.checkpointing.lock().unwrap_or_else(|p| p.into_inner());
        // Loaded before the flush: the marker's insert came before this
        // store, so the flush holds it and everything written before it.
        let seq = self.applied_seq.load(Ordering::Acquire);
        self.db.flush().map_err(io::Error::other)?;
        self.data_file.sync_all()?;
        self.sync_blobs()?;
        wal::write_checkpoint(&self.wal_dir, seq)?;
        self.checkpointed.store(seq, Ordering::Release);
        Ok(seq)
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

    fn sync_blobs(&self) -> io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            if synced.contains(&entry.file_name()) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_all()?,
                // sled removes blobs it has rewritten; nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced.insert(entry.file_name());
            new = true;
        }
        if new {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Stages a job's batch in the group commit being built: from now on
    /// the calling thread's reads see it (and the next jobs'), nobody
    /// else's. [`Store::commit`] writes the group to the log, then to
    /// sled. Called by one thread at a time (the sequencer, or open and
    /// restore while no sequencer runs).
    pub fn stage(&self, batch: WriteBatch) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.thread = Some(std::thread::current().id());
        for op in batch.0 {
            match op {
                Op::Put(k, v) => p.writes.insert(k, Some(v)),
                Op::Remove(k) => p.writes.insert(k, None),
            };
        }
    }

    /// The calling thread's pending writes, if it is building a group.
    fn pending_here(&self) -> Option<std::sync::MutexGuard<'_, Pending>> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (p.thread == Some(std::thread::current().id()) && !p.writes.is_empty()).then_some(p)
    }

    /// One key: the caller's pending write, else sled's.
    fn raw_get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>> {
        let key = key.as_ref();
        if let Some(p) = self.pending_here() {
            if let Some(w) = p.writes.get(key) {
                return Ok(w.as_deref().map(sled::IVec::from));
            }
        }
        Ok(self.db.get(key)?)
    }

    /// Every key under `prefix`, ascending, with the caller's pending
    /// writes merged in. For the small keyspaces jobs read whole (a
    /// room's participants, a care team).
    fn prefix(&self, prefix: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            out.push(kv?);
        }
        let Some(p) = self.pending_here() else {
            return Ok(out);
        };
        let mut pending = p
            .writes
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        if pending.peek().is_none() {
            return Ok(out);
        }
        // Both ascending: one merge, a pending write replacing (or
        // removing) sled's value of the same key.
        let mut merged = Vec::with_capacity(out.len() + 1);
        let mut durable = out.into_iter().peekable();
        loop {
            let order = match (durable.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((k, _)), Some((pk, _))) => k.as_ref().cmp(pk.as_slice()),
            };
            if order == std::cmp::Ordering::Equal {
                durable.next();
            }
            if order == std::cmp::Ordering::Less {
                merged.extend(durable.next());
            } else if let Some((k, Some(v))) = pending.next() {
                merged.push((
                    sled::IVec::from(k.as_slice()),
                    sled::IVec::from(v.as_slice()),
                ));
            }
        }
        Ok(merged)
    }

    /// How many items range scans have read since open.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.raw_get(key)? {
            Some(v) => codec::decode(&v).map(Some).map_err(StoreError),
            None => Ok(None),
        }
    }

    pub fn summary(&self) -> Result<Summary> {
        let last_msg = self.last_id(LOG)?;
        Ok(Summary {
            recovered: self.db.was_recovered(),
            last_user: self.last_id(USER)?,
            last_room: self.last_id(ROOM)?,
            last_msg,
            last_msg_ms: self.log_entry(last_msg)?.map_or(0, |(_, ms)| ms),
            last_audit: self.audit_last()?,
            ..Summary::default()
        })
    }

    /// The log's entry for a message id: (room, at_ms).
    fn log_entry(&self, id: u64) -> Result<Option<(u64, u64)>> {
        Ok(self.raw_get(one(LOG, id))?.and_then(|v| log_value(&v)))
    }

    // ---- users and tokens ----

    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get(&one(USER, id.0))
    }

    pub fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>> {
        Ok(self
            .raw_get(bytes(USERNAME, username.as_bytes()))?
            .and_then(|v| read_u64(&v))
            .map(UserId))
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        self.get(&bytes(TOKEN, hash))
    }

    // ---- rooms and membership ----

    pub fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.get(&one(ROOM, id.0))
    }

    pub fn participant(&self, room: RoomId, user: UserId) -> Result<Option<Participant>> {
        self.get(&two(PARTICIPANT, room.0, user.0))
    }

    /// A room's participants, by user id.
    pub fn participants(&self, room: RoomId) -> Result<Vec<(UserId, Participant)>> {
        let mut out = Vec::new();
        for (k, v) in self.prefix(&one(PARTICIPANT, room.0))? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push((UserId(tail_u64(&k)), codec::decode(&v).map_err(StoreError)?));
        }
        Ok(out)
    }

    /// The rooms a user is in, ascending by id.
    pub fn rooms_of(&self, user: UserId) -> Result<Vec<RoomId>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&one(MEMBERSHIP, user.0))? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(RoomId(tail_u64(&k)));
        }
        Ok(out)
    }

    pub fn dm(&self, a: UserId, b: UserId) -> Result<Option<RoomId>> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Ok(self
            .raw_get(two(DM, lo.0, hi.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }

    // ---- messages ----

    pub fn message(&self, id: MsgId) -> Result<Option<Message>> {
        let Some((room, _)) = self.log_entry(id.0)? else {
            return Ok(None);
        };
        self.get(&two(ROOM_MSG, room, id.0))
    }

    /// The smallest message id in `1..=upto` committed at or after `ms`;
    /// `upto + 1` if none. A binary search over the log (commit times never
    /// decrease as ids grow): O(log n) seeks, whatever the history's size.
    pub fn first_id_at(&self, ms: u64, upto: MsgId) -> Result<MsgId> {
        let (mut lo, mut hi) = (1u64, upto.0.saturating_add(1));
        let mut found = hi;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first existing id at or after `mid` (ids may have gaps).
            let next = self
                .db
                .range(one(LOG, mid)..one(LOG, hi))
                .next()
                .transpose()?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            match next.and_then(|(k, v)| Some((tail_u64(&k), log_value(&v)?.1))) {
                Some((id, at)) if at >= ms => {
                    found = id;
                    hi = mid;
                }
                Some((id, _)) => lo = id + 1,
                None => hi = mid,
            }
        }
        Ok(MsgId(found))
    }

    /// A room's messages with `after < id <= upto`, oldest first, read
    /// lazily: the cost is the messages taken, never the room's history.
    pub fn room_messages(
        &self,
        room: RoomId,
        after: MsgId,
        upto: MsgId,
    ) -> impl DoubleEndedIterator<Item = Result<Message>> + '_ {
        let lo = two(ROOM_MSG, room.0, after.0.saturating_add(1));
        let hi = two(ROOM_MSG, room.0, upto.0);
        use std::ops::Bound::{Excluded, Included};
        let range = if after >= upto {
            (Included(lo), Excluded(lo))
        } else {
            (Included(lo), Included(hi))
        };
        self.db.range::<[u8; 17], _>(range).map(move |kv| {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let (_, v) = kv?;
            codec::decode(&v).map_err(StoreError)
        })
    }

    /// A room's newest `n` messages after `after`, oldest first, with the
    /// calling thread's pending writes merged in: what the writer adds to
    /// a chat's snapshot read before its job. Cost: at most `n` plus the
    /// room's pending writes.
    pub fn newest_messages(&self, room: RoomId, after: MsgId, n: usize) -> Result<Vec<Message>> {
        let lo = two(ROOM_MSG, room.0, after.0.saturating_add(1));
        let hi = two(ROOM_MSG, room.0, u64::MAX);
        let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = Default::default();
        if let Some(p) = self.pending_here() {
            for (k, w) in p.writes.range(lo.to_vec()..=hi.to_vec()) {
                merged.insert(k.clone(), w.clone());
            }
        }
        // Enough of sled's newest that `n` survive the pending removals.
        let want = n + merged.values().filter(|w| w.is_none()).count();
        for kv in self.db.range(lo..=hi).rev().take(want) {
            let (k, v) = kv?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            merged.entry(k.to_vec()).or_insert_with(|| Some(v.to_vec()));
        }
        let newest: Vec<Vec<u8>> = merged.into_values().rev().flatten().take(n).collect();
        newest
            .iter()
            .rev()
            .map(|v| codec::decode(v).map_err(StoreError))
            .collect()
    }

    // ---- patients, search (webhooks: `webhooks`) ----

    pub fn patient_chat(&self, patient: UserId) -> Result<Option<RoomId>> {
        Ok(self
            .raw_get(one(PATIENT_CHAT, patient.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }

    fn ids_under(&self, prefix: Vec<u8>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&prefix)? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(tail_u64(&k));
        }
        Ok(out)
    }

    /// Staff and admins of a workspace: a patient chat's care team.
    pub fn care_team(&self, ws: &Workspace) -> Result<Vec<UserId>> {
        Ok(self
            .ids_under(workspace(WS_STAFF, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(UserId)
            .collect())
    }

    /// The patient chats of a workspace.
    pub fn patient_chats(&self, ws: &Workspace) -> Result<Vec<RoomId>> {
        Ok(self
            .ids_under(workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(RoomId)
            .collect())
    }

    /// Messages of `room` with `after < id < below` containing every one
    /// of `words`, at most `limit`, newest first (or, with `ascending`,
    /// oldest first): a leapfrog intersection of the words' postings, one
    /// seek per step, so the cost follows the rarest word's postings in
    /// range and the hits, not the room's size.
    pub fn search(
        &self,
        room: RoomId,
        words: &[String],
        (after, below): (MsgId, MsgId),
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<MsgId>> {
        let prefixes: Vec<Vec<u8>> = words.iter().map(|w| postings(room.0, w)).collect();
        let n = prefixes.len();
        let mut hits = Vec::new();
        if n == 0 || below.0 <= after.0.saturating_add(1) {
            return Ok(hits);
        }
        let (first, last) = (after.0 + 1, below.0 - 1);
        let mut cur = if ascending { first } else { last };
        let (mut agreed, mut i) = (0, 0);
        while hits.len() < limit {
            let p = &prefixes[i];
            // The posting nearest to `cur` in the walking direction.
            let next = if ascending {
                self.db.range(with_id(p, cur)..=with_id(p, last)).next()
            } else {
                self.db
                    .range(with_id(p, first)..=with_id(p, cur))
                    .next_back()
            };
            let Some((k, _)) = next.transpose()? else {
                break;
            };
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let id = tail_u64(&k);
            if id != cur {
                cur = id;
                agreed = 0;
            }
            agreed += 1;
            if agreed == n {
                hits.push(MsgId(cur));
                match (ascending, cur) {
                    (true, c) if c >= last => break,
                    (false, c) if c <= first => break,
                    (true, c) => cur = c + 1,
                    (false, c) => cur = c - 1,
                }
                agreed = 0;
            }
            i = (i + 1) % n;
        }
        Ok(hits)
    }

    /// The key that authenticates page tokens; made once, at open, and
    /// written through the log like every other write.
    pub fn page_token_key(&self) -> Result<[u8; 32]> {
        if let Some(k) = self.page_key.get() {
            return Ok(*k);
        }
        let key = match self.raw_get(PAGE_KEY_KEY)? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError("page token key is damaged".into()))?,
            None => {
                use rand::RngCore;
                let mut fresh = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut fresh);
                let mut b = WriteBatch::default();
                b.insert(PAGE_KEY_KEY, &fresh);
                self.write_through(b)?;
                fresh
            }
        };
        Ok(*self.page_key.get_or_init(|| key))
    }

    /// Writes everything sled holds (but its own meta) into the log, in
    /// records of about 1 MiB: the base of a migrated store's history.
    fn write_base(&self) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let (mut n, mut bytes) = (0u64, 0usize);
        for kv in self.db.iter() {
            let (k, v) = kv?;
            if k == FORMAT_VERSION_KEY || k == WAL_SEQ_KEY {
                continue;
            }
            bytes += k.len() + v.len();
            batch.insert(&k, &v);
            n += 1;
            if bytes >= 1 << 20 {
                self.write_through(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        self.write_through(batch)?;
        Ok(n)
    }

    /// Writes a batch outside the sequencer (open, restore): applied and
    /// made durable as a log record of its own. Only while no sequencer
    /// runs.
    fn write_through(&self, batch: WriteBatch) -> Result<()> {
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

    /// The id of a room's newest message, if any.
    pub fn last_message_in(&self, room: RoomId) -> Result<Option<MsgId>> {
        Ok(self
            .db
            .scan_prefix(one(ROOM_MSG, room.0))
            .next_back()
            .transpose()?
            .map(|(k, _)| MsgId(tail_u64(&k))))
    }
}

fn log_value(v: &[u8]) -> Option<(u64, u64)> {
    Some((read_u64(v.get(..8)?)?, read_u64(v.get(8..16)?)?))
}

/// The format a store's sled holds: `None` if it is this parlor's (a new
/// store is stamped with it), `Some(old)` if it must be migrated. A newer
/// format is refused.
fn check_format(db: &sled::Db) -> Result<Option<u64>> {
    match db.get(FORMAT_VERSION_KEY)? {
        Some(v) => match read_u64(&v) {
            Some(FORMAT_VERSION) => Ok(None),
            Some(1) => Ok(Some(1)),
            other => Err(StoreError(format!(
                "the store is in format {}, but this parlor ({}) reads and writes only format \
                 {FORMAT_VERSION} (and migrates format 1); nothing was changed. Run the parlor \
                 that wrote it, or restore a backup taken with `parlor backup FILE` before the \
                 upgrade (see README, \"Installing offline\")",
                other.map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
                env!("CARGO_PKG_VERSION"),
            ))),
        },
        None if db.is_empty() => {
            db.insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION))?;
            Ok(None)
        }
        None => Err(StoreError("store has data but no format version".into())),
    }
}

/// sled's marker: the seq of the last log record whose writes it holds.
fn wal_marker(db: &sled::Db) -> Result<u64> {
    match db.get(WAL_SEQ_KEY)? {
        None => Ok(0),
        Some(v) => {
            read_u64(&v).ok_or_else(|| StoreError("the write-ahead log marker is damaged".into()))
        }
    }
}

/// The group commit being built (see `Store::pending`).
#[derive(Default)]
struct Pending {
    thread: Option<std::thread::ThreadId>,
    /// Last write per key: `None` removes.
    writes: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// One write of a batch.
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// A log record's payload back into a sled batch.
fn decode_ops(mut p: &[u8]) -> std::result::Result<sled::Batch, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if p.len() < n {
            return Err("a log record's writes end early".into());
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    fn len(p: &mut &[u8]) -> std::result::Result<usize, String> {
        Ok(u32::from_le_bytes(take(p, 4)?.try_into().expect("4 bytes")) as usize)
    }
    let mut b = sled::Batch::default();
    while !p.is_empty() {
        let kind = take(&mut p, 1)?[0];
        let n = len(&mut p)?;
        let key = take(&mut p, n)?;
        match kind {
            OP_PUT => {
                let n = len(&mut p)?;
                b.insert(key, take(&mut p, n)?);
            }
            OP_REMOVE => b.remove(key),
            k => return Err(format!("a log record holds an unknown write kind {k}")),
        }
    }
    Ok(b)
}

/// Writes to apply atomically. Built by `core::commit` jobs only.
#[derive(Default)]
pub struct WriteBatch(Vec<Op>);

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends this batch's writes to a log record's payload:
    /// per write `kind: u8 | key len: u32 LE | key [| value len | value]`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        for op in &self.0 {
            let (kind, key, value) = match op {
                Op::Put(k, v) => (OP_PUT, k, Some(v)),
                Op::Remove(k) => (OP_REMOVE, k, None),
            };
            out.push(kind);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            if let Some(v) = value {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.0.push(Op::Put(key.to_vec(), value.to_vec()));
    }

    fn remove(&mut self, key: &[u8]) {
        self.0.push(Op::Remove(key.to_vec()));
    }
    pub fn put_care_team_member(&mut self, ws: &Workspace, user: UserId) {
        self.insert(
            &with_id(&workspace(WS_STAFF, &ws.tenant, &ws.instance), user.0),
            &[],
        );
    }

    pub fn put_patient_chat(&mut self, patient: UserId, ws: &Workspace, room: RoomId) {
        self.insert(&one(PATIENT_CHAT, patient.0), &u64_value(room.0));
        self.insert(
            &with_id(
                &workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance),
                room.0,
            ),
            &[],
        );
    }

    pub fn put_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.insert(&with_id(&postings(room.0, w), id.0), &[]);
        }
    }

    pub fn remove_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.remove(&with_id(&postings(room.0, w), id.0));
        }
    }

    fn put<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.0.push(Op::Put(key.to_vec(), codec::encode(value)));
    }

    pub fn put_user(&mut self, user: &User) {
        self.put(&one(USER, user.id.0), user);
        self.insert(
            &bytes(USERNAME, user.username.as_bytes()),
            &u64_value(user.id.0),
        );
    }

    pub fn put_token(&mut self, hash: &[u8; 32], rec: &TokenRecord) {
        self.put(&bytes(TOKEN, hash), rec);
    }

    pub fn remove_token(&mut self, hash: &[u8; 32]) {
        self.remove(&bytes(TOKEN, hash));
    }

    pub fn put_room(&mut self, room: &Room) {
        self.put(&one(ROOM, room.id.0), room);
    }

    /// Adds or updates a participant, and the user→room membership index.
    pub fn put_participant(&mut self, room: RoomId, user: UserId, p: &Participant) {
        self.put(&two(PARTICIPANT, room.0, user.0), p);
        self.insert(&two(MEMBERSHIP, user.0, room.0), &[]);
    }

    pub fn put_dm(&mut self, a: UserId, b: UserId, room: RoomId) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.insert(&two(DM, lo.0, hi.0), &u64_value(room.0));
    }

    /// Appends a message to the global log and its room's index.
    pub fn put_message(&mut self, m: &Message) {
        let mut log = [0u8; 16];
        log[..8].copy_from_slice(&m.room.0.to_be_bytes());
        log[8..].copy_from_slice(&m.at_ms.to_be_bytes());
        self.insert(&one(LOG, m.id.0), &log);
        self.put(&two(ROOM_MSG, m.room.0, m.id.0), m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Delivery, RoomKind, Workspace};

    fn msg(id: u64, room: u64) -> Message {
        Message {
            id: MsgId(id),
            room: RoomId(room),
            sender: UserId(1),
            text: format!("m{id}"),
            at_ms: id,
            author: None,
            is_read: false,
            archived: false,
        }
    }

    /// Opens a store this process just dropped. sled lets go of its file
    /// lock when its last background task ends, a moment after the drop,
    /// so a reopen in the same process may briefly see `Locked` (a new
    /// process, e.g. a restarted daemon, never does: exit drops the lock).
    fn reopen(dir: &Path) -> (Store, Summary) {
        try_reopen(dir).unwrap_or_else(|e| panic!("reopen: {e}"))
    }

    /// [`reopen`] that may be refused: the refusal's message.
    fn try_reopen(dir: &Path) -> std::result::Result<(Store, Summary), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Err(OpenError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r.map_err(|e| e.to_string()),
            }
        }
    }

    #[test]
    fn reopen_resumes_ids_from_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, sum) = Store::open(dir.path()).unwrap();
            assert_eq!(sum.last_msg, 0);
            let mut b = WriteBatch::default();
            b.put_room(&Room {
                id: RoomId(4),
                kind: RoomKind::Group,
                name: None,
                workspace: Workspace::default(),
                created_ms: 0,
                patient: None,
            });
            for id in [1, 2, 300] {
                b.put_message(&msg(id, 4));
            }
            s.write_through(b).unwrap();
            s.checkpoint().unwrap();
        }
        let (s, sum) = reopen(dir.path());
        assert_eq!((sum.last_msg, sum.last_room), (300, 4));
        assert_eq!(s.message(MsgId(2)).unwrap().unwrap().text, "m2");
        assert!(s.message(MsgId(3)).unwrap().is_none());
    }

    /// A job reads a small keyspace whole with the group's pending writes
    /// merged in order: added, replaced and removed keys.
    #[test]
    fn prefix_reads_merge_pending_puts_and_removes_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let p = |ms: u64| Participant {
            joined_ms: ms,
            ..Participant::default()
        };
        let mut b = WriteBatch::default();
        for u in [1, 3, 5, 7] {
            b.put_participant(RoomId(9), UserId(u), &p(u));
        }
        b.put_participant(RoomId(10), UserId(2), &p(2));
        s.write_through(b).unwrap();
        let mut b = WriteBatch::default();
        b.put_participant(RoomId(9), UserId(2), &p(20));
        b.put_participant(RoomId(9), UserId(3), &p(30));
        b.remove(&two(PARTICIPANT, 9, 5));
        b.put_participant(RoomId(9), UserId(8), &p(80));
        s.stage(b);
        let got: Vec<(u64, u64)> = s
            .participants(RoomId(9))
            .unwrap()
            .into_iter()
            .map(|(u, p)| (u.0, p.joined_ms))
            .collect();
        assert_eq!(got, [(1, 1), (2, 20), (3, 30), (7, 7), (8, 80)]);
        assert_eq!(s.participants(RoomId(10)).unwrap().len(), 1);
    }

    /// The writer's chat snapshot: the room's newest, with the group's
    /// pending messages merged in for the staging thread only.
    #[test]
    fn newest_messages_merge_the_callers_pending_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for (id, room) in [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 5)] {
            b.put_message(&msg(id, room));
        }
        s.write_through(b).unwrap();
        let mut b = WriteBatch::default();
        b.put_message(&msg(7, 4));
        s.stage(b);
        let ids = |v: Vec<Message>| v.iter().map(|m| m.id.0).collect::<Vec<_>>();
        let newest =
            |room, after, n| ids(s.newest_messages(RoomId(room), MsgId(after), n).unwrap());
        assert_eq!(newest(4, 0, 3), [4, 5, 7]);
        assert_eq!(newest(4, 4, 9), [5, 7]);
        assert_eq!(newest(4, 7, 3), Vec::<u64>::new());
        assert_eq!(newest(5, 0, 3), [6]);
        assert_eq!(newest(4, 0, 0), Vec::<u64>::new());
        let elsewhere = std::thread::scope(|t| {
            t.spawn(|| ids(s.newest_messages(RoomId(4), MsgId(0), 3).unwrap()))
                .join()
                .unwrap()
        });
        assert_eq!(elsewhere, [3, 4, 5]);
    }

    #[test]
    fn room_messages_respect_both_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for id in 1..=10 {
            b.put_message(&msg(id, 1 + id % 2));
        }
        s.write_through(b).unwrap();
        let ids = |after, upto| -> Vec<u64> {
            s.room_messages(RoomId(1), MsgId(after), MsgId(upto))
                .map(|m| m.unwrap().id.0)
                .collect()
        };
        assert_eq!(ids(0, 10), vec![2, 4, 6, 8, 10]);
        assert_eq!(ids(4, 8), vec![6, 8]);
        assert_eq!(ids(8, 8), Vec::<u64>::new());
        assert_eq!(ids(9, 3), Vec::<u64>::new());
        assert_eq!(s.last_message_in(RoomId(2)).unwrap(), Some(MsgId(9)));
    }

    #[test]
    fn first_id_at_finds_the_time_bound_across_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        // ids 1..=40 with gaps at multiples of 7; times 10, 20, 20, 40, …
        for id in (1..=40u64).filter(|i| i % 7 != 0) {
            let mut m = msg(id, 1);
            m.at_ms = (id / 2) * 10;
            b.put_message(&m);
        }
        s.write_through(b).unwrap();
        let upto = MsgId(40);
        let brute = |ms: u64| {
            (1..=40u64)
                .filter(|i| i % 7 != 0 && (i / 2) * 10 >= ms)
                .min()
                .unwrap_or(41)
        };
        for ms in [0, 1, 10, 15, 20, 30, 35, 70, 195, 200, 201, 10_000] {
            assert_eq!(
                s.first_id_at(ms, upto).unwrap(),
                MsgId(brute(ms)),
                "ms {ms}"
            );
        }
        // Bounded by `upto`: later ids are not considered.
        assert_eq!(s.first_id_at(150, MsgId(20)).unwrap(), MsgId(21));
    }

    #[test]
    fn search_intersects_postings_newest_first_below_a_border() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let w = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut b = WriteBatch::default();
        // "a" in every id, "b" in multiples of 3, "c" in multiples of 5.
        for id in 1..=60u64 {
            let mut ws = vec!["a"];
            if id % 3 == 0 {
                ws.push("b");
            }
            if id % 5 == 0 {
                ws.push("c");
            }
            b.put_postings(RoomId(1), &w(&ws), MsgId(id));
        }
        b.put_postings(RoomId(2), &w(&["b", "c"]), MsgId(61));
        s.write_through(b).unwrap();
        let ids = |words: &[&str], below: u64, limit| -> Vec<u64> {
            s.search(RoomId(1), &w(words), (MsgId(0), MsgId(below)), limit, false)
                .unwrap()
                .into_iter()
                .map(|m| m.0)
                .collect()
        };
        let up = |words: &[&str], after: u64, limit| -> Vec<u64> {
            s.search(
                RoomId(1),
                &w(words),
                (MsgId(after), MsgId(u64::MAX)),
                limit,
                true,
            )
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect()
        };
        assert_eq!(up(&["b", "c"], 0, 10), [15, 30, 45, 60]);
        assert_eq!(up(&["c", "b"], 15, 2), [30, 45]);
        assert_eq!(up(&["a"], 59, 10), [60]);
        assert_eq!(ids(&["b", "c"], u64::MAX, 10), [60, 45, 30, 15]);
        assert_eq!(ids(&["c", "b", "a"], 45, 10), [30, 15]);
        assert_eq!(ids(&["b"], 10, 2), [9, 6]);
        assert_eq!(ids(&["b", "zzz"], u64::MAX, 10), Vec::<u64>::new());
        assert_eq!(ids(&[], u64::MAX, 10), Vec::<u64>::new());
        // Cost follows the rarer word ("c": 12 postings, two seeks each at
        // most), not the room's 60 messages.
        let before = s.scanned();
        ids(&["b", "c"], u64::MAX, 10);
        assert!(
            s.scanned() - before <= 2 * 12 + 2,
            "scanned {}",
            s.scanned() - before
        );
    }

    #[test]
    fn page_token_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        assert_eq!(s.page_token_key().unwrap(), s.page_token_key().unwrap());
    }

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

    fn commit(s: &Store, batches: Vec<WriteBatch>) {
        let mut record = Vec::new();
        for b in batches {
            b.encode_into(&mut record);
            s.stage(b);
        }
        s.commit(&record).unwrap();
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
        // The log is kept whole: it is the history the index is rebuilt from.
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

    #[test]
    fn a_format_1_store_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put_message(&msg(1, 1));
            s.write_through(b).unwrap();
            // What a format-1 parlor left: no log, no marker.
            s.db.insert(FORMAT_VERSION_KEY, &u64_value(1)).unwrap();
            s.db.remove(WAL_SEQ_KEY).unwrap();
            s.checkpoint().unwrap();
        }
        std::fs::remove_dir_all(wal_dir(dir.path())).unwrap();
        let (s, sum) = reopen(dir.path());
        assert_eq!(sum.migrated_from, Some(1));
        assert_eq!(s.message(MsgId(1)).unwrap().unwrap().text, "m1");
        s.db.insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION + 1))
            .unwrap();
        s.checkpoint().unwrap();
        drop(s);
        let Err(err) = try_reopen(dir.path()) else {
            panic!("a newer format was opened");
        };
        assert!(
            err.contains(&format!("format {}", FORMAT_VERSION + 1)),
            "{err}"
        );
        assert!(err.contains(&format!("format {FORMAT_VERSION}")), "{err}");
        assert!(err.contains("parlor backup"), "{err}");
    }

    /// sled's data file scribbled over, as a power cut that reordered its
    /// unsynced writes leaves it (sled then refuses or panics).
    fn damage_index(dir: &Path) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .unwrap();
        let len = f.metadata().unwrap().len();
        use std::os::unix::fs::FileExt;
        let mut x = 0x9e37_79b9u32;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        f.write_all_at(&junk, 0).unwrap();
        f.sync_all().unwrap();
    }

    #[test]
    fn an_index_sled_cannot_open_is_rebuilt_from_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let key;
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            key = s.page_token_key().unwrap();
            for id in 1..=50 {
                let mut b = WriteBatch::default();
                b.put_message(&msg(id, 3));
                commit(&s, vec![b]);
            }
            s.checkpoint().unwrap();
        }
        damage_index(dir.path());
        let (s, sum) = reopen(dir.path());
        let aside = sum.rebuilt_from.expect("rebuilt");
        assert!(aside.join("db").exists(), "the damaged files are kept");
        assert_eq!(sum.last_msg, 50);
        assert_eq!(s.message(MsgId(50)).unwrap().unwrap().text, "m50");
        assert_eq!(s.page_token_key().unwrap(), key);
    }

    #[test]
    fn a_migrated_store_can_be_rebuilt_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            b.put_message(&msg(1, 1));
            b.put_message(&msg(2, 1));
            s.write_through(b).unwrap();
            s.db.insert(FORMAT_VERSION_KEY, &u64_value(1)).unwrap();
            s.db.remove(WAL_SEQ_KEY).unwrap();
            s.checkpoint().unwrap();
        }
        std::fs::remove_dir_all(wal_dir(dir.path())).unwrap();
        drop(reopen(dir.path()));
        damage_index(dir.path());
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some());
        assert_eq!(s.message(MsgId(2)).unwrap().unwrap().text, "m2");
    }

    #[test]
    fn a_damaged_index_without_the_whole_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            s.checkpoint().unwrap();
        }
        // The segments gone, the checkpoint record kept.
        for (_, seg) in wal::segments(&wal_dir(dir.path())).unwrap() {
            std::fs::remove_file(seg).unwrap();
        }
        damage_index(dir.path());
        let Err(err) = try_reopen(dir.path()) else {
            panic!("opened a damaged index with no log to rebuild it");
        };
        assert!(err.contains("parlor restore"), "{err}");
    }

    #[test]
    fn second_open_of_a_locked_store_says_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(OpenError::Locked)));
    }
}
