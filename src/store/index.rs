//! The index: sled's files, and where they are.
//!
//! sled is parlor's index behind the write-ahead log (see `wal`). Its
//! files lie either at the top of the store's directory (`conf`, `db`,
//! `blobs/`, `snap.*`: the layout of every store until its first
//! compaction) or in a directory of their own, `DIR/index-<seq>/`, named
//! by `DIR/INDEX` (the *pointer*, replaced atomically). A compaction
//! (`compact`) builds a fresh index beside the current one and switches
//! the pointer to it; the old index's files are then deleted, at once or
//! at the next open ([`remove_stale`]).
//!
//! The store reads the index through [`Store::db`](super::Store::db): an
//! `Arc` of the current one, so that a compaction can swap it while the
//! daemon runs.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::open::Options;
use super::wal::sync_dir;
use super::{OpenError, StoreError};

/// The pointer file: the name of the directory that holds the current
/// index. Absent: the index lies at the top of the store's directory.
const POINTER: &str = "INDEX";
/// Where an earlier parlor's compaction built a scratch index (it may
/// hold purged data); removed whole at open and by every compaction.
pub(super) const BUILDING: &str = "compacting";
/// What a damaged index is moved to (`rebuild`), kept for inspection.
pub(super) const DAMAGED_PREFIX: &str = "index-damaged-";

/// An open index: sled, and what a checkpoint syncs by hand.
pub(super) struct Index {
    pub db: sled::Db,
    /// The directory sled's files are in.
    pub dir: PathBuf,
    /// sled's data file; `sync` fsyncs it after sled's own flush.
    data_file: File,
    /// Blob files already fsynced (sled writes values too big for a log
    /// segment to files of their own, and never fsyncs them).
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl std::ops::Deref for Index {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        &self.db
    }
}

impl Index {
    /// Opens (or creates) sled's files in `dir`. sled 0.34 may refuse
    /// files that a power cut left with unsynced writes persisted out of
    /// order ("corrupted data"), or panic on them (caught by
    /// `Store::open_with`).
    pub fn open(dir: &Path, opts: &Options) -> Result<Index, OpenError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            // Durability is the write-ahead log's; sled is flushed only by
            // checkpoints, never by a timer of its own.
            .flush_every_ms(None);
        let db = match config.open() {
            Ok(db) => db,
            Err(e) if e.to_string().contains("lock") => return Err(OpenError::Locked),
            Err(e) => return Err(OpenError::Other(StoreError::from(e).0)),
        };
        let data_file = File::open(dir.join("db"))
            .map_err(|e| OpenError::Other(format!("opening the data file: {e}")))?;
        Ok(Index {
            db,
            dir: dir.to_path_buf(),
            data_file,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// Makes sled's copy durable: sled's flush (which ends in
    /// `sync_file_range`, not a full fsync), then `fsync` of the data file
    /// and of any new blob files.
    pub fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.data_file.sync_all()?;
        self.sync_blobs()
    }

    /// Starts writing out what sled wrote to its data file since the last
    /// call, without waiting for it (`sync_file_range(SYNC_FILE_RANGE_
    /// WRITE)`): called every tick between checkpoints, so sled's writes
    /// reach the disk a little at a time, and the checkpoint's `fsync`
    /// — which the log's `fdatasync` would queue behind — finds little
    /// left. Durability is unchanged (that is the checkpoint's fsync).
    /// Elsewhere than Linux, nothing.
    pub fn start_writeback(&self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file this index holds
            // open; offset 0 and length 0 mean the whole file.
            let r = unsafe {
                libc::sync_file_range(
                    self.data_file.as_raw_fd(),
                    0,
                    0,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// sled writes its `conf` file and creates its files without ever
    /// fsyncing them or the directory: after a power cut `conf` may be
    /// empty (sled then warns and writes its defaults again).
    pub fn sync_files(&self) -> io::Result<()> {
        match File::open(self.dir.join("conf")) {
            Ok(f) => f.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&self.dir)
    }

    fn sync_blobs(&self) -> io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match fs::read_dir(&dir) {
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
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

/// The name of the directory a compaction at log record `seq` makes.
pub(super) fn dir_name(seq: u64) -> String {
    format!("index-{seq:020}")
}

fn is_index_dir_name(name: &str) -> bool {
    name.strip_prefix("index-")
        .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a name at the top of the store's directory is one of sled's
/// own files (the layout before the pointer).
fn is_sled_file(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// The directory that holds the current index: the one the pointer
/// names, or `dir` itself if there is no pointer.
pub(super) fn current(dir: &Path) -> io::Result<PathBuf> {
    let name = match fs::read_to_string(dir.join(POINTER)) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(dir.to_path_buf()),
        Err(e) => return Err(e),
    };
    let name = name.trim_end_matches('\n');
    if !is_index_dir_name(name) {
        return Err(io::Error::other(format!(
            "{} names no index directory: {name:?}",
            dir.join(POINTER).display()
        )));
    }
    Ok(dir.join(name))
}

/// Makes `DIR/<name>` the current index, atomically: the pointer written
/// to a temporary file, synced, renamed over the old one, and the
/// directory synced.
pub(super) fn point_to(dir: &Path, name: &str) -> io::Result<()> {
    let tmp = dir.join(format!("{POINTER}.tmp"));
    fs::write(&tmp, format!("{name}\n"))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join(POINTER))?;
    sync_dir(dir)
}

/// Removes the pointer: the index lies at the top of `dir` again (where
/// a rebuild makes it).
pub(super) fn point_to_top(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(POINTER)) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `name`, at the top of a store's directory, belongs to the
/// index that lies there (when there is no pointer): what a rebuild moves
/// aside. Not the log, the pointer, or other indexes' directories.
pub(super) fn is_top_index_file(name: &str) -> bool {
    name != "wal"
        && name != POINTER
        && name != format!("{POINTER}.tmp")
        && name != BUILDING
        && !name.starts_with("index-")
}

fn remove_path(path: &Path) -> io::Result<()> {
    let r = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Deletes every index but `current` (the one in use): an unfinished
/// compaction's work (`DIR/compacting`), the pointer's temporary file,
/// index directories that are not current, and, if the current index has
/// a directory of its own, sled's files at the top (the index before the
/// first compaction). Never the log, never damaged indexes kept for
/// inspection, never files it does not know. Returns what it removed.
pub(super) fn remove_stale(dir: &Path, current: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let stale = name == BUILDING
            || name == format!("{POINTER}.tmp")
            || (is_index_dir_name(&name) && path != current)
            || (current != dir && is_sled_file(&name));
        if stale {
            remove_path(&path)?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Deletes the damaged indexes a rebuild moved aside (`index-damaged-*`):
/// they hold whatever the index held, purged data included. Returns them.
pub(super) fn remove_damaged(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DAMAGED_PREFIX))
        {
            remove_path(&entry.path())?;
            removed.push(entry.path());
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Bytes in the files under `path` (recursively).
pub(super) fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
