//! Opening the store: the format check (and the migration of a format-1
//! store into the log), the replay of the write-ahead log above sled's
//! marker, the check of the message log's tail, and the summary for the
//! startup log line. When sled's own files fail, open starts over once
//! with the index rebuilt from the log (`rebuild`). Open also finishes
//! what a compaction a crash cut short left (`compact`): every index but
//! the current one goes, and the segments a base holds.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use super::history::{self, ApplyError};
use super::index::{self, Index};
use super::keys::*;
use super::pending::Pending;
use super::rebuild::move_index_aside;
use super::{
    space, wal, wal_dir, Result, Store, StoreError, StoredAudit, WriteBatch, INDEX_ERROR, NO_SPACE,
};

/// Opens the current index (`index`). An empty one (new, or made afresh
/// by a rebuild) gets the log's base first, if there is one: the history
/// before it is not in the log any more.
fn open_index(
    dir: &Path,
    opts: &Options,
    base: Option<&(u64, PathBuf)>,
) -> std::result::Result<Index, OpenError> {
    let at = index::current(dir)
        .map_err(|e| OpenError::Other(format!("finding the store's index: {e}")))?;
    let db = Index::open(&at, opts)?;
    if let (true, Some((_, path))) = (db.is_empty(), base) {
        history::load_base(&db, path, &mut super::pace::Pace::unpaced()).map_err(|e| {
            OpenError::Other(format!("loading {} into the index: {e}", path.display()))
        })?;
    }
    Ok(db)
}

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
            .and_then(|()| wal::remove_partial_bases(&wal_dir))
            .and_then(|()| space::release_ballast(&wal_dir))
            .map_err(|e| OpenError::Other(format!("{}: {e}", wal_dir.display())))?;
        // What a compaction cut short, or finished but for the deleting,
        // left: every index but the current one goes.
        let removed = index::current(dir)
            .and_then(|current| index::remove_stale(dir, &current))
            .map_err(|e| OpenError::Other(format!("{}: {e}", dir.display())))?;
        if !removed.is_empty() {
            tracing::info!(?removed, "removed the files of indexes no longer in use");
        }
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
        let io = |what: &str, e: io::Error| OpenError::Other(format!("{what}: {e}"));
        let base = wal::latest_base(&wal_dir).map_err(|e| io("reading the log's bases", e))?;
        let mut db = open_index(dir, opts, base.as_ref())?;
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
                db = open_index(dir, opts, base.as_ref())?;
            }
        }
        let other = |e: StoreError| OpenError::Other(e.0);
        let migrated_from = check_format(&db).map_err(other)?;
        let marker = wal_marker(&db).map_err(other)?;
        let base_seq = base.as_ref().map_or(0, |b| b.0);
        if marker < base_seq {
            // Older than the base: the records that bring it forward may
            // be gone (a compaction deleted them).
            let segs = wal::segments(&wal_dir).map_err(|e| io("listing the log", e))?;
            if segs.first().map_or(true, |(first, _)| *first > marker + 1) {
                return Err(OpenError::Other(format!(
                    "{INDEX_ERROR}the index is as of log record {marker}, but the log's history \
                     starts at its base of record {base_seq}"
                )));
            }
        }
        let mut replayed_to = marker;
        // A replayed write sled has no room for is no damage of the log.
        let mut no_space = None;
        let scan = wal::scan(&wal_dir, marker, &mut |seq, payload| {
            history::apply_record(&db, seq, payload).map_err(|e| match e {
                ApplyError::Record(why) => why,
                ApplyError::Index(e) => {
                    let e = StoreError::from(e).0;
                    if e.starts_with(NO_SPACE) {
                        no_space = Some(e.clone());
                    }
                    e
                }
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
        // Never appended to a segment named at or below the base: those
        // hold only the records the base holds, and are deleted whole.
        let end = scan.end.filter(|(first, _, _)| *first > base_seq);
        let writer = wal::Writer::open(&wal_dir, opts.segment_bytes, space.clone(), end, next_seq)
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
            index: RwLock::new(Arc::new(db)),
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            scanned: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            page_key: std::sync::OnceLock::new(),
            wal_shared: writer.shared(),
            wal: Mutex::new(writer),
            space,
            _lock: lock,
            applied_seq: AtomicU64::new(replayed_to),
            checkpointed: AtomicU64::new(marker),
            wal_dir: wal_dir.clone(),
            checkpointing: Mutex::new(()),
            compacting: Mutex::new(()),
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
                .db()
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
            .and_then(|_| store.db().sync_files())
            .and_then(|()| wal::sync_dir(dir))
            .map_err(|e| match space::is_no_space(&e) {
                true => OpenError::Other(format!("{NO_SPACE} ({e})")),
                false => OpenError::Other(format!("syncing the store: {e}")),
            })?;
        // The index now durably holds the base's record and more: the
        // segments and older bases a compaction cut short left can go.
        if let Some((seq, _)) = base {
            wal::trim(&wal_dir, seq).map_err(|e| io("removing log segments the base holds", e))?;
        }
        Ok((store, summary))
    }

    /// The newest log entry must have its room-index entry (unless it
    /// marks a deleted message): both are written by one atomic batch, so
    /// anything else means the files were damaged.
    fn check_log_tail(&self, last_msg: u64) -> Result<()> {
        if last_msg == 0 {
            return Ok(());
        }
        let Some((room, _)) = self.log_entry(last_msg)? else {
            return Err(StoreError(format!("log entry {last_msg} is unreadable")));
        };
        let deleted = self
            .raw_get(one(LOG, last_msg))?
            .is_some_and(|v| super::messages::log_deleted(&v));
        if !deleted && self.raw_get(two(ROOM_MSG, room, last_msg))?.is_none() {
            return Err(StoreError(format!(
                "message {last_msg} is in the log but not in room {room}"
            )));
        }
        Ok(())
    }

    fn last_id(&self, tag: u8) -> Result<u64> {
        Ok(self
            .db()
            .scan_prefix([tag])
            .next_back()
            .transpose()?
            .map(|(k, _)| tail_u64(&k))
            .unwrap_or(0))
    }

    pub fn summary(&self) -> Result<Summary> {
        let last_msg = self.last_id(LOG)?;
        Ok(Summary {
            recovered: self.db().was_recovered(),
            last_user: self.last_id(USER)?,
            last_room: self.last_id(ROOM)?,
            last_msg,
            last_msg_ms: self.log_entry(last_msg)?.map_or(0, |(_, ms)| ms),
            last_audit: self.audit_last()?,
            ..Summary::default()
        })
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
        for kv in self.db().iter() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MsgId, Room, RoomId, RoomKind, Workspace};
    use crate::store::testing::{format_1_store, fresh, msg, reopen, try_reopen};
    use crate::store::WriteBatch;

    #[test]
    fn page_token_key_is_made_once() {
        let (_dir, s) = fresh();
        assert_eq!(s.page_token_key().unwrap(), s.page_token_key().unwrap());
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

    #[test]
    fn a_format_1_store_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        format_1_store(dir.path(), &[1]);
        let (s, sum) = reopen(dir.path());
        assert_eq!(sum.migrated_from, Some(1));
        assert_eq!(s.message(MsgId(1)).unwrap().unwrap().text, "m1");
        s.db()
            .insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION + 1))
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

    #[test]
    fn second_open_of_a_locked_store_says_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(OpenError::Locked)));
    }
}
