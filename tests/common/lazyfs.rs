//! A FUSE filesystem that loses writes not yet fsynced: a simulated disk
//! for power-cut tests (the idea of LazyFS, small).
//!
//! * It passes through to a backing directory ("the disk").
//! * File DATA is not written through: `write` keeps the bytes in memory,
//!   per inode, as an overlay of dirty ranges plus the file's pending size
//!   (a truncate is data too), and also as a log of the writes and
//!   truncates in the order they came (one sequence over all files). Reads
//!   merge the backing file and the overlay. `fsync` or `fdatasync` through
//!   any handle of the inode writes that inode's overlay to the backing
//!   file (truncate, pwrite, set_len) and clears it and its log.
//! * Metadata — chmod, chown — is applied to the backing directory at once.
//!   Directory operations — create, mknod (regular files and sockets),
//!   mkdir, unlink, rmdir, rename — are applied to the backing directory at
//!   once too, so lookups, reads and readdir see them; whether a cut can
//!   take them back depends on the mode (below).
//! * [`LazyFs::freeze`] is the power cut: under the same lock every
//!   operation takes, it sets a flag and does to the unsynced state what
//!   the [`CutMode`] says (by default: discards every overlay); from then
//!   on every operation, fsync included, fails with EIO, so nothing more
//!   reaches the disk and nothing can be acknowledged that is not on it.
//!   Kill the program, unmount, and mount a fresh instance on the same
//!   backing directory: it sees what the cut left.
//! * A lying disk (`mount(.., lying = true)`, or [`LazyFs::set_lying`]
//!   later) answers fsync (and directory fsync) with success and keeps the
//!   overlay (and the directory journal) in memory only: the negative
//!   control.
//! * [`LazyFs::arm`] makes the filesystem cut its own power at the n-th
//!   file write (accepted, then lost) or file fsync (refused): a cut that
//!   lands mid-commit for sure, which a cut from outside often misses.
//!   Directory fsyncs are not counted.
//! * [`LazyFs::set_fsync_delay`] makes each file fsync take that long
//!   first, as a real disk's does (this one's takes microseconds), which
//!   widens the written-but-not-yet-synced window a cut can land in. The
//!   delay is spent outside the lock: a cut during it fails the fsync.
//!
//! # Cut modes
//!
//! [`LazyFs::set_cut_mode`] (or [`mount_with`]) chooses what a cut does;
//! the default [`CutMode`] is exactly the behaviour described above and
//! the one every earlier test was written against. Its fields:
//!
//! * `keep` — which unsynced writes (and truncates: "writes" below means
//!   both) reach the disk anyway, as a disk's volatile cache may have
//!   written some of them out before the power went:
//!   [`KeepPolicy::None`] (default): none; [`KeepPolicy::All`]: all (a
//!   process crash rather than a power cut, unless `tear` is set);
//!   [`KeepPolicy::Random`]`{ fraction }`: each one with that probability,
//!   drawn from `seed` in the order the writes came.
//! * `reorder` — `false` (default): the kept writes are a prefix in time
//!   order (over all files): with `Random`, as many as were drawn, but the
//!   oldest ones. `true`: exactly the drawn ones, so a later write can
//!   survive an earlier one that is lost (a disk that persists out of
//!   order).
//! * `tear` — [`Tear::None`] (default), or the newest kept write (not a
//!   truncate) is torn: only a strict prefix of its bytes reaches the disk.
//!   [`Tear::Sector`]: the prefix ends at a 512-byte boundary of the file
//!   (a write within one sector is atomic and is not torn);
//!   [`Tear::Byte`]: at any byte (a 1-byte write is not torn). The point
//!   is drawn from `seed`.
//! * `dir_ops` — [`DirDurability::Immediate`] (default): directory
//!   operations are durable at once, as a journaling filesystem would make
//!   them soon after. [`DirDurability::OnDirFsync`]: directory operations
//!   done while this mode is set go into a journal, in order; a directory
//!   fsync (`fsyncdir`, i.e. `File::open(dir)?.sync_all()`) commits the
//!   journal up to and including the last operation that changed that
//!   directory — every operation before it, in any directory, too, as a
//!   journaling filesystem's commit does. A rename changes both of its
//!   directories, so a fsync of either commits it. A file's own fsync
//!   commits nothing (stricter than ext4, whose file fsync commits its
//!   journal, creation included: this is what POSIX promises, and a
//!   program that fsyncs the directory is right on both). A cut undoes the
//!   uncommitted operations, newest first, except a prefix of them that
//!   survives as the data does: none with `KeepPolicy::None`, all with
//!   `All`, with `Random` as many of the oldest as were drawn (a journal
//!   commit that happened on its own). Because what survives is always a
//!   prefix of the journal, each undo restores exactly the state before
//!   its operation. Undo keeps what it needs in the backing directory: an
//!   unlinked or rmdir'ed entry, or one a rename replaced, is moved into a
//!   hidden `.lazyfs-graveyard` directory at the backing root instead of
//!   being deleted, and moved back by the undo (with whatever data of it
//!   reached the disk); a created file or directory is removed. The
//!   graveyard's entries are deleted when their operation is committed,
//!   and the graveyard itself at the cut, at unmount and at mount; its name
//!   is invisible through the mount and cannot be created there. Setting
//!   the mode back to `Immediate` commits the journal. Operations done
//!   before `OnDirFsync` was set are durable.
//!
//! At the cut, the kept writes are applied to the backing files (in time
//! order, per file) first, then the directory journal is undone: a kept
//! write to a file whose creation is undone is lost with the file.
//! `seed` drives every random choice, in the order writes and directory
//! operations came: the same program doing the same operations, cut at
//! the same point with the same mode, leaves the same disk. A cut in any
//! mode but the default prints the seed and what it kept on stderr, and
//! [`LazyFs::freeze_report`] returns it all ([`CutReport`]).
//!
//! Files are opened with `FOPEN_DIRECT_IO` and every entry and attribute is
//! given a zero TTL, so the kernel caches neither data nor sizes: every
//! read and write of the program reaches this code. fuser without default
//! features mounts with mount(2) (root, CAP_SYS_ADMIN), no libfuse and no
//! fusermount. No hard links, symlinks, FIFOs, xattrs or timestamp
//! changes (sled and parlor use none of them); chmod and chown are always
//! durable at once.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// The kernel caches nothing: every lookup and getattr comes here.
const TTL: Duration = Duration::ZERO;
// Linux open(2) flags and st_mode types (no libc in the dev-dependencies).
const O_EXCL: i32 = 0o200;
const O_TRUNC: i32 = 0o1000;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFSOCK: u32 = 0o140000;
/// Where undoable directory operations keep what they removed, at the
/// backing root; invisible through the mount.
const GRAVEYARD: &str = ".lazyfs-graveyard";
/// What [`Tear::Sector`] tears at.
const SECTOR: u64 = 512;

/// What a power cut does to the unsynced state; see the module doc. The
/// default is a cut that keeps nothing unsynced and metadata that is
/// durable at once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CutMode {
    /// Drives every random choice of the cut.
    pub seed: u64,
    pub keep: KeepPolicy,
    pub reorder: bool,
    pub tear: Tear,
    pub dir_ops: DirDurability,
}

impl CutMode {
    /// Everything a real disk may do at once: about half of the unsynced
    /// writes kept, out of order, the newest kept one torn at a sector
    /// boundary, directory operations durable only by a directory fsync.
    pub fn lossy(seed: u64) -> CutMode {
        CutMode {
            seed,
            keep: KeepPolicy::Random { fraction: 0.5 },
            reorder: true,
            tear: Tear::Sector,
            dir_ops: DirDurability::OnDirFsync,
        }
    }
}

/// Which unsynced writes (and uncommitted directory operations) survive.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum KeepPolicy {
    #[default]
    None,
    All,
    /// Each with probability `fraction` (0.0–1.0), drawn from the seed.
    Random {
        fraction: f64,
    },
}

/// Whether and where the newest kept write is torn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tear {
    #[default]
    None,
    /// At a 512-byte boundary of the file strictly inside the write.
    Sector,
    /// At any byte strictly inside the write.
    Byte,
}

/// When create, mknod, mkdir, unlink, rmdir and rename become durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DirDurability {
    /// At once.
    #[default]
    Immediate,
    /// At the journal commit a directory fsync makes.
    OnDirFsync,
}

/// What one power cut did.
#[derive(Clone, Debug, Default)]
pub struct CutReport {
    pub mode: CutMode,
    /// Every unsynced write and truncate, in the order they came.
    pub writes: Vec<CutWrite>,
    /// Every uncommitted directory operation, in the order they came.
    pub dir_ops: Vec<CutDirOp>,
    /// Dirty bytes that did not reach the disk, by file (backing path):
    /// bytes of the overlay whose newest write was dropped or torn off.
    pub dropped: Vec<(PathBuf, u64)>,
    /// Backing-directory errors while applying the cut (none expected).
    pub errors: Vec<String>,
}

impl CutReport {
    /// How many unsynced writes reached the disk, whole or torn.
    pub fn kept_writes(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| w.fate != Fate::Dropped)
            .count()
    }

    /// How many uncommitted directory operations the cut undid.
    pub fn undone_dir_ops(&self) -> usize {
        self.dir_ops.iter().filter(|d| d.undone).count()
    }
}

/// One unsynced write or truncate and what the cut did with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutWrite {
    /// Its place in time (one sequence over all files).
    pub seq: u64,
    /// The file's backing path (at the cut).
    pub path: PathBuf,
    pub op: WriteOp,
    pub fate: Fate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Write { offset: u64, len: u64 },
    Truncate { size: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Reached the disk whole.
    Kept,
    /// Only its first `kept` bytes reached the disk.
    Torn {
        kept: u64,
    },
    Dropped,
}

/// One uncommitted directory operation (backing paths at the time) and
/// whether the cut undid it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutDirOp {
    pub op: DirOp,
    pub undone: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirOp {
    /// create or mknod.
    Create(PathBuf),
    Mkdir(PathBuf),
    Unlink(PathBuf),
    Rmdir(PathBuf),
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
}

/// One mounted instance. Dropping it unmounts.
pub struct LazyFs {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mounts a fresh instance at `mountpoint` over `backing` (which holds
/// what was fsynced before). `lying`: fsync succeeds and persists nothing.
pub fn mount(backing: &Path, mountpoint: &Path, lying: bool) -> io::Result<LazyFs> {
    mount_with(backing, mountpoint, lying, CutMode::default())
}

/// [`mount`] with a [`CutMode`] in force from the first operation on.
pub fn mount_with(
    backing: &Path,
    mountpoint: &Path,
    lying: bool,
    mode: CutMode,
) -> io::Result<LazyFs> {
    let backing = backing.canonicalize()?;
    let root_ino = fs::metadata(&backing)?.ino();
    // A graveyard an earlier instance left (it did not get to unmount):
    // its operations were never undone, so they stand.
    remove_graveyard(&backing)?;
    let mut state = State::new(backing, root_ino);
    state.mode = mode;
    let shared = Arc::new(Shared {
        frozen: AtomicBool::new(false),
        lying: AtomicBool::new(lying),
        fsync_delay_us: AtomicU64::new(0),
        refused_fsyncs: AtomicU64::new(0),
        state: Mutex::new(state),
    });
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("lazyfs".into())];
    let session = fuser::spawn_mount(
        Fs {
            shared: shared.clone(),
        },
        mountpoint,
        &config,
    )?;
    Ok(LazyFs {
        shared,
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl LazyFs {
    /// The power cut: from now on every operation fails with EIO and the
    /// unsynced state is gone, or what the [`CutMode`] keeps of it is on
    /// the disk. Returns the dropped dirty bytes by file (backing path) —
    /// those of the earlier cut if an armed [`Trigger`] cut the power
    /// already.
    pub fn freeze(&self) -> Vec<(PathBuf, u64)> {
        self.freeze_report().dropped
    }

    /// [`LazyFs::freeze`], returning everything the cut did (that of the
    /// earlier cut if the power is cut already).
    pub fn freeze_report(&self) -> CutReport {
        let mut st = self.shared.lock();
        self.shared.cut(&mut st);
        st.report.clone()
    }

    /// What the next cut does. Switching `dir_ops` to `Immediate` commits
    /// the directory journal; switching it to `OnDirFsync` journals the
    /// directory operations from now on.
    pub fn set_cut_mode(&self, mode: CutMode) {
        let mut st = self.shared.lock();
        if mode.dir_ops == DirDurability::Immediate {
            let n = st.journal.len();
            st.commit(n);
        }
        st.mode = mode;
    }

    /// The mode the next cut will use.
    pub fn cut_mode(&self) -> CutMode {
        self.shared.lock().mode
    }

    /// Cuts the power from inside the filesystem at the `n`-th file write
    /// (accepted, then lost) or the `n`-th file fsync (refused) from now:
    /// a cut that surely lands in the middle of a commit.
    pub fn arm(&self, t: Trigger) {
        self.shared.lock().armed = Some(t);
    }

    /// Whether the power is cut (by [`LazyFs::freeze`] or a trigger).
    pub fn is_frozen(&self) -> bool {
        self.shared.frozen.load(Ordering::SeqCst)
    }

    /// How many file fsyncs failed because the power was cut.
    pub fn refused_fsyncs(&self) -> u64 {
        self.shared.refused_fsyncs.load(Ordering::SeqCst)
    }

    /// Every file fsync first waits this long (see the module doc).
    pub fn set_fsync_delay(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared.fsync_delay_us.store(us, Ordering::SeqCst);
    }

    /// From now on fsync succeeds without writing anything (or, with
    /// `false`, is honest again: the next fsync of a file writes all of
    /// its unsynced data, the next fsync of a directory commits the
    /// directory journal up to its last operation).
    pub fn set_lying(&self, lying: bool) {
        let _st = self.shared.lock();
        self.shared.lying.store(lying, Ordering::SeqCst);
    }

    /// Unmounts (the program using it must be gone) and waits for the
    /// session thread; falls back to a lazy `umount -l` if busy.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let res = match session.umount_and_join() {
            Ok(()) => Ok(()),
            Err(e) => {
                let lazy = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
                match lazy {
                    Ok(s) if s.success() => {
                        eprintln!(
                            "lazyfs: umount of {:?} failed ({e}); detached with umount -l",
                            self.mountpoint
                        );
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
        };
        // Unmounted (without a cut, the uncommitted directory operations
        // stand): the graveyard is not needed any more.
        if res.is_ok() {
            let st = self.shared.lock();
            if let Err(e) = remove_graveyard(&st.root) {
                eprintln!("lazyfs: could not remove the graveyard: {e}");
            }
        }
        res
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("lazyfs: could not unmount {:?}: {e}", self.mountpoint);
        }
    }
}

fn remove_graveyard(root: &Path) -> io::Result<()> {
    match fs::remove_dir_all(root.join(GRAVEYARD)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a file, socket or (empty) directory.
fn remove_any(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}

struct Shared {
    /// Set (under the state lock) by the cut; checked under it by every op.
    frozen: AtomicBool,
    /// fsync answers success and writes nothing.
    lying: AtomicBool,
    fsync_delay_us: AtomicU64,
    refused_fsyncs: AtomicU64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power cut itself (idempotent); the caller holds the lock.
    fn cut(&self, st: &mut State) {
        if self.frozen.swap(true, Ordering::SeqCst) {
            return;
        }
        st.report = st.power_cut();
        let r = &st.report;
        if r.mode != CutMode::default() {
            let torn: Vec<String> = r
                .writes
                .iter()
                .filter_map(|w| match w.fate {
                    Fate::Torn { kept } => Some(format!(
                        "; write #{} to {:?} torn after {kept} bytes",
                        w.seq, w.path
                    )),
                    _ => None,
                })
                .collect();
            eprintln!(
                "lazyfs: power cut with seed {}: kept {} of {} unsynced writes{}, undid {} of {} \
                 uncommitted directory operations ({:?})",
                r.mode.seed,
                r.kept_writes(),
                r.writes.len(),
                torn.concat(),
                r.undone_dir_ops(),
                r.dir_ops.len(),
                r.mode
            );
        }
        for e in &r.errors {
            eprintln!("lazyfs: at the power cut: {e}");
        }
    }

    /// Counts one file write (`fsync` false) or fsync down on the armed
    /// trigger, and cuts the power when it reaches zero.
    fn tick(&self, st: &mut State, fsync: bool) -> bool {
        let left = match &mut st.armed {
            Some(Trigger::Write(n)) if !fsync => n,
            Some(Trigger::Fsync(n)) if fsync => n,
            _ => return false,
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return false;
        }
        st.armed = None;
        self.cut(st);
        true
    }

    /// The state for one operation, or EIO after the power cut.
    fn begin(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = self.lock();
        if self.frozen.load(Ordering::SeqCst) {
            return Err(Errno::EIO);
        }
        Ok(st)
    }
}

/// What the kernel calls a node: our inode number → backing path.
struct Node {
    path: PathBuf,
    /// The backing file's inode; `None` once unlinked (or replaced).
    backing: Option<u64>,
}

struct Handle {
    ino: u64,
    /// The backing file, opened read-write whatever the program asked for
    /// (root), so an fsync through a read-only handle can apply the overlay.
    file: File,
}

/// When an armed filesystem cuts its own power; see [`LazyFs::arm`].
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    Write(u64),
    Fsync(u64),
}

/// One journaled directory operation.
struct Entry {
    op: DirOp,
    /// Our inodes of the directories it changed (twice the same one but
    /// for a rename between two).
    dirs: [u64; 2],
    /// What undoes it, in order.
    undo: Vec<Undo>,
    /// Graveyard entries to delete once it is committed.
    graves: Vec<PathBuf>,
}

enum Undo {
    Remove(PathBuf),
    Move { from: PathBuf, to: PathBuf },
}

impl Undo {
    fn run(&self) -> io::Result<()> {
        match self {
            Undo::Remove(p) => remove_any(p),
            Undo::Move { from, to } => fs::rename(from, to),
        }
    }
}

struct State {
    /// The backing directory.
    root: PathBuf,
    mode: CutMode,
    /// Counts down to a cut.
    armed: Option<Trigger>,
    /// What the cut did.
    report: CutReport,
    nodes: HashMap<u64, Node>,
    /// Backing inode → our inode, for live (linked) files only.
    by_backing: HashMap<u64, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Unsynced data, per inode.
    overlays: HashMap<u64, Overlay>,
    /// The time order of writes and truncates, over all files.
    next_seq: u64,
    /// Uncommitted directory operations, oldest first.
    journal: Vec<Entry>,
    next_grave: u64,
}

impl State {
    fn new(root: PathBuf, root_backing: u64) -> State {
        let mut st = State {
            root: root.clone(),
            mode: CutMode::default(),
            armed: None,
            report: CutReport::default(),
            nodes: HashMap::new(),
            by_backing: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            overlays: HashMap::new(),
            next_seq: 1,
            journal: Vec::new(),
            next_grave: 1,
        };
        st.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                path: root,
                backing: Some(root_backing),
            },
        );
        st.by_backing.insert(root_backing, INodeNo::ROOT.0);
        st
    }

    /// Our inode for the backing inode `backing`, now found at `path`.
    fn register(&mut self, path: PathBuf, backing: u64) -> u64 {
        if let Some(&ino) = self.by_backing.get(&backing) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.path = path;
            }
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                path,
                backing: Some(backing),
            },
        );
        self.by_backing.insert(backing, ino);
        ino
    }

    /// The backing file `backing` was unlinked: its inode number may be
    /// reused by the backing filesystem, so forget the mapping. Its data
    /// lives on only while a handle is open.
    fn retire(&mut self, backing: u64) {
        if let Some(ino) = self.by_backing.remove(&backing) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.backing = None;
            }
            if !self.handles.values().any(|h| h.ino == ino) {
                self.overlays.remove(&ino);
            }
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        match self.nodes.get(&ino.0) {
            Some(n) if n.backing.is_some() => Ok(n.path.clone()),
            _ => Err(Errno::ENOENT),
        }
    }

    /// The backing path of `name` in `parent`; the graveyard is not there.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT && name == GRAVEYARD {
            return Err(Errno::ENOENT);
        }
        Ok(self.path(parent)?.join(name))
    }

    /// A handle's backing file, or any open handle of the inode.
    fn file(&self, ino: INodeNo, fh: Option<FileHandle>) -> Option<&File> {
        fh.and_then(|fh| self.handles.get(&fh.0))
            .or_else(|| self.handles.values().find(|h| h.ino == ino.0))
            .map(|h| &h.file)
    }

    /// The backing metadata: through an open handle if there is one (an
    /// unlinked file has no path), else by path.
    fn meta(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<Metadata, Errno> {
        if let Some(f) = self.file(ino, fh) {
            return f.metadata().map_err(Errno::from);
        }
        fs::symlink_metadata(self.path(ino)?).map_err(Errno::from)
    }

    /// Attributes as the program sees them: the pending size if dirty.
    fn attr(&self, ino: u64, m: &Metadata) -> FileAttr {
        let size = self.overlays.get(&ino).map_or(m.size(), |o| o.size);
        let t = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns as u32);
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
            crtime: t(m.ctime(), m.ctime_nsec()),
            kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Registers the backing node at `path` and gives its attributes.
    fn entry(&mut self, path: PathBuf) -> Result<FileAttr, Errno> {
        let m = fs::symlink_metadata(&path).map_err(Errno::from)?;
        let ino = self.register(path, m.ino());
        Ok(self.attr(ino, &m))
    }

    fn add_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, file });
        fh
    }

    /// The overlay of `ino` (begun over a backing file of `len` bytes)
    /// and the next write's place in time.
    fn overlay(&mut self, ino: u64, len: u64) -> (&mut Overlay, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let o = self
            .overlays
            .entry(ino)
            .or_insert_with(|| Overlay::new(len));
        (o, seq)
    }

    /// Whether directory operations go into the journal.
    fn journaling(&self) -> bool {
        self.mode.dir_ops == DirDurability::OnDirFsync
    }

    fn journal(&mut self, op: DirOp, dirs: [u64; 2], undo: Vec<Undo>, graves: Vec<PathBuf>) {
        self.journal.push(Entry {
            op,
            dirs,
            undo,
            graves,
        });
    }

    /// A fresh graveyard path (the graveyard made if need be).
    fn grave(&mut self) -> io::Result<PathBuf> {
        let dir = self.root.join(GRAVEYARD);
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        let n = self.next_grave;
        self.next_grave += 1;
        Ok(dir.join(n.to_string()))
    }

    /// Makes the oldest `n` journaled operations durable.
    fn commit(&mut self, n: usize) {
        for e in self.journal.drain(..n) {
            for g in e.graves {
                if let Err(err) = remove_any(&g) {
                    eprintln!("lazyfs: could not delete {g:?} from the graveyard: {err}");
                }
            }
        }
    }

    /// A directory fsync of `dir`: commits the journal up to its last
    /// operation on `dir`.
    fn commit_dir(&mut self, dir: u64) {
        if let Some(i) = self.journal.iter().rposition(|e| e.dirs.contains(&dir)) {
            self.commit(i + 1);
        }
    }

    /// What the power cut does to the unsynced state (see the module doc).
    fn power_cut(&mut self) -> CutReport {
        let mode = self.mode;
        let mut rng = SplitMix(mode.seed);
        let mut report = CutReport {
            mode,
            ..CutReport::default()
        };

        // Every unsynced write, in time order: (seq, ino, index in its log).
        let mut pending: Vec<(u64, u64, usize)> = self
            .overlays
            .iter()
            .flat_map(|(ino, o)| o.ops.iter().enumerate().map(|(i, op)| (op.seq, *ino, i)))
            .collect();
        pending.sort_unstable();
        let drawn = draw(&mut rng, mode.keep, pending.len());
        let kept: Vec<bool> = if mode.reorder {
            drawn
        } else {
            let k = drawn.iter().filter(|k| **k).count();
            (0..pending.len()).map(|i| i < k).collect()
        };
        let mut fates: Vec<Fate> = kept
            .iter()
            .map(|k| if *k { Fate::Kept } else { Fate::Dropped })
            .collect();
        let newest_kept_write = (0..pending.len())
            .rev()
            .find(|&i| kept[i] && matches!(self.pending_op(pending[i]).kind, OpKind::Write { .. }));
        if let Some(i) = newest_kept_write {
            if let OpKind::Write { offset, data } = &self.pending_op(pending[i]).kind {
                if let Some(t) = tear_at(&mut rng, mode.tear, *offset, data.len() as u64) {
                    fates[i] = Fate::Torn { kept: t };
                }
            }
        }
        let fate_of: HashMap<u64, Fate> =
            pending.iter().zip(&fates).map(|(p, f)| (p.0, *f)).collect();

        // The kept ones reach the disk, in time order per file.
        let mut by_ino: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (n, p) in pending.iter().enumerate() {
            if fates[n] != Fate::Dropped {
                by_ino.entry(p.1).or_default().push(n);
            }
        }
        for (ino, ns) in by_ino {
            if let Err(e) = self.persist(ino, ns.iter().map(|&n| (pending[n], fates[n]))) {
                let path = self.nodes.get(&ino).map(|n| n.path.clone());
                report
                    .errors
                    .push(format!("persisting kept writes to {path:?}: {e}"));
            }
        }
        report.writes = pending
            .iter()
            .zip(&fates)
            .map(|(p, f)| CutWrite {
                seq: p.0,
                path: self.path_of(p.1),
                op: match &self.pending_op(*p).kind {
                    OpKind::Write { offset, data } => WriteOp::Write {
                        offset: *offset,
                        len: data.len() as u64,
                    },
                    OpKind::Truncate { size } => WriteOp::Truncate { size: *size },
                },
                fate: *f,
            })
            .collect();
        report.dropped = self
            .overlays
            .iter()
            .map(|(ino, o)| (self.path_of(*ino), o.dropped_bytes(&fate_of)))
            .collect();
        self.overlays.clear();

        // Then the uncommitted directory operations: a prefix survives,
        // the rest is undone, newest first.
        let survive = draw(&mut rng, mode.keep, self.journal.len())
            .iter()
            .filter(|k| **k)
            .count();
        let journal = std::mem::take(&mut self.journal);
        let mut undone = vec![false; journal.len()];
        for (i, e) in journal.iter().enumerate().skip(survive).rev() {
            for u in &e.undo {
                if let Err(err) = u.run() {
                    report.errors.push(format!("undoing {:?}: {err}", e.op));
                }
            }
            undone[i] = true;
        }
        report.dir_ops = journal
            .into_iter()
            .zip(undone)
            .map(|(e, undone)| CutDirOp { op: e.op, undone })
            .collect();
        if let Err(e) = remove_graveyard(&self.root) {
            report.errors.push(format!("removing the graveyard: {e}"));
        }
        report
    }

    /// An unsynced write by its place in the overlays.
    fn pending_op(&self, (_, ino, i): (u64, u64, usize)) -> &Op {
        &self.overlays[&ino].ops[i]
    }

    /// Our inode's backing path (its last one if unlinked).
    fn path_of(&self, ino: u64) -> PathBuf {
        self.nodes
            .get(&ino)
            .map(|n| n.path.clone())
            .unwrap_or_default()
    }

    /// Writes the kept (or torn) writes of `ino` to its backing file.
    fn persist(
        &self,
        ino: u64,
        ops: impl Iterator<Item = ((u64, u64, usize), Fate)>,
    ) -> io::Result<()> {
        let opened;
        let file = match self.file(INodeNo(ino), None) {
            Some(f) => f,
            None => {
                let path = self.nodes.get(&ino).filter(|n| n.backing.is_some());
                let path = path.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                opened = open_rw(&path.path)?;
                &opened
            }
        };
        let o = &self.overlays[&ino];
        for ((_, _, i), fate) in ops {
            match (&o.ops[i].kind, fate) {
                (OpKind::Write { offset, data }, Fate::Torn { kept }) => {
                    file.write_all_at(&data[..kept as usize], *offset)?
                }
                (OpKind::Write { offset, data }, _) => file.write_all_at(data, *offset)?,
                (OpKind::Truncate { size }, _) => file.set_len(*size)?,
            }
        }
        Ok(())
    }
}

/// Which of `n` things survive a cut under `keep` (before `reorder`).
fn draw(rng: &mut SplitMix, keep: KeepPolicy, n: usize) -> Vec<bool> {
    match keep {
        KeepPolicy::None => vec![false; n],
        KeepPolicy::All => vec![true; n],
        KeepPolicy::Random { fraction } => (0..n).map(|_| rng.chance(fraction)).collect(),
    }
}

/// How many bytes of a write of `len` bytes at `offset` a tear keeps, if
/// it tears it.
fn tear_at(rng: &mut SplitMix, tear: Tear, offset: u64, len: u64) -> Option<u64> {
    match tear {
        Tear::None => None,
        Tear::Byte if len >= 2 => Some(1 + rng.below(len - 1)),
        Tear::Byte => None,
        Tear::Sector => {
            // Sector boundaries strictly inside (offset, offset + len).
            let first = (offset / SECTOR + 1) * SECTOR;
            let end = offset + len;
            if first >= end {
                return None;
            }
            let count = (end - 1 - first) / SECTOR + 1;
            Some(first + SECTOR * rng.below(count) - offset)
        }
    }
}

/// splitmix64: small, seedable, good enough to pick writes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
}

/// One inode's unsynced data.
struct Overlay {
    /// The size the program sees.
    size: u64,
    /// Bytes of the backing file still valid: its size when the overlay
    /// began, lowered by every truncate since.
    keep: u64,
    /// Dirty bytes by offset; the ranges never overlap.
    ranges: BTreeMap<u64, Chunk>,
    /// Every write and truncate since the overlay began, oldest first.
    ops: Vec<Op>,
}

/// Dirty bytes, and the write (by sequence) they came from.
struct Chunk {
    seq: u64,
    data: Vec<u8>,
}

struct Op {
    seq: u64,
    kind: OpKind,
}

enum OpKind {
    Write { offset: u64, data: Vec<u8> },
    Truncate { size: u64 },
}

impl Overlay {
    fn new(backing_len: u64) -> Overlay {
        Overlay {
            size: backing_len,
            keep: backing_len,
            ranges: BTreeMap::new(),
            ops: Vec::new(),
        }
    }

    /// Dirty bytes that will not be on the disk after the cut: those of
    /// dropped writes, and the torn-off part of a torn one.
    fn dropped_bytes(&self, fate_of: &HashMap<u64, Fate>) -> u64 {
        let write_offset = |seq: u64| {
            self.ops.iter().find_map(|op| match op.kind {
                OpKind::Write { offset, .. } if op.seq == seq => Some(offset),
                _ => None,
            })
        };
        self.ranges
            .iter()
            .map(|(s, c)| {
                let len = c.data.len() as u64;
                match fate_of.get(&c.seq) {
                    Some(Fate::Kept) => 0,
                    Some(Fate::Torn { kept }) => {
                        let persisted_end = write_offset(c.seq).unwrap_or(*s) + kept;
                        (s + len).saturating_sub(persisted_end.max(*s)).min(len)
                    }
                    _ => len,
                }
            })
            .sum()
    }

    /// Removes every byte in `[from, to)` from the ranges, keeping the
    /// parts of cut ranges outside it.
    fn cut(&mut self, from: u64, to: u64) {
        let hit: Vec<u64> = self
            .ranges
            .range(..to)
            .rev()
            .take_while(|(s, c)| **s + c.data.len() as u64 > from)
            .map(|(s, _)| *s)
            .collect();
        for s in hit {
            let c = self.ranges.remove(&s).expect("range just seen");
            let end = s + c.data.len() as u64;
            if s < from {
                let data = c.data[..(from - s) as usize].to_vec();
                self.ranges.insert(s, Chunk { seq: c.seq, data });
            }
            if end > to {
                let data = c.data[(to - s) as usize..].to_vec();
                self.ranges.insert(to, Chunk { seq: c.seq, data });
            }
        }
    }

    fn write(&mut self, seq: u64, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.cut(offset, end);
        self.ranges.insert(
            offset,
            Chunk {
                seq,
                data: data.to_vec(),
            },
        );
        self.size = self.size.max(end);
        self.ops.push(Op {
            seq,
            kind: OpKind::Write {
                offset,
                data: data.to_vec(),
            },
        });
    }

    fn truncate(&mut self, seq: u64, size: u64) {
        self.cut(size, u64::MAX);
        self.size = size;
        self.keep = self.keep.min(size);
        self.ops.push(Op {
            seq,
            kind: OpKind::Truncate { size },
        });
    }

    /// Backing bytes below `keep`, zeros above, dirty ranges on top.
    fn read(&self, file: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let from_backing = self.keep.min(end).saturating_sub(offset) as usize;
        read_full(file, offset, &mut buf[..from_backing])?;
        for (s, c) in self.ranges.range(..end).rev() {
            let r = &c.data;
            let r_end = s + r.len() as u64;
            if r_end <= offset {
                break;
            }
            let (lo, hi) = ((*s).max(offset), r_end.min(end));
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&r[(lo - s) as usize..(hi - s) as usize]);
        }
        Ok(buf)
    }

    /// Writes the overlay to the backing file: what fsync does.
    fn apply(&self, file: &File) -> io::Result<()> {
        if file.metadata()?.len() > self.keep {
            file.set_len(self.keep)?;
        }
        for (s, c) in &self.ranges {
            file.write_all_at(&c.data, *s)?;
        }
        file.set_len(self.size)
    }
}

/// pread until `buf` is full or EOF (the rest stays zero).
fn read_full(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// The filesystem the fuser session drives.
struct Fs {
    shared: Arc<Shared>,
}

/// `let st = begin!(self, reply);` — the state, or reply EIO after a cut.
macro_rules! begin {
    ($self:ident, $reply:ident) => {
        match $self.shared.begin() {
            Ok(st) => st,
            Err(e) => return $reply.error(e),
        }
    };
}

/// `try_!(expr, reply)` — `?` for FUSE replies.
macro_rules! try_ {
    ($e:expr, $reply:ident) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(Errno::from(e)),
        }
    };
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        let attr = try_!(st.entry(path), reply);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let st = begin!(self, reply);
        let m = try_!(st.meta(ino, fh), reply);
        reply.attr(&TTL, &st.attr(ino.0, &m));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = begin!(self, reply);
        // Metadata: at once. (Timestamps are not stored: nothing here
        // depends on them.)
        if mode.is_some() || uid.is_some() || gid.is_some() {
            let path = try_!(st.path(ino), reply);
            if let Some(m) = mode {
                try_!(
                    fs::set_permissions(&path, Permissions::from_mode(m & 0o7777)),
                    reply
                );
            }
            if uid.is_some() || gid.is_some() {
                try_!(std::os::unix::fs::chown(&path, uid, gid), reply);
            }
        }
        // The size is data: pending until fsync.
        if let Some(size) = size {
            let len = try_!(st.meta(ino, fh), reply).len();
            let (o, seq) = st.overlay(ino.0, len);
            o.truncate(seq, size);
        }
        let m = try_!(st.meta(ino, fh), reply);
        reply.attr(&TTL, &st.attr(ino.0, &m));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        match mode & S_IFMT {
            S_IFREG => {
                try_!(
                    OpenOptions::new().write(true).create_new(true).open(&path),
                    reply
                );
            }
            // A program binding a Unix socket here: make the socket node on
            // the disk (binding a listener there and dropping it leaves
            // one). The program's socket is bound to our inode, not to it.
            S_IFSOCK => drop(try_!(std::os::unix::net::UnixListener::bind(&path), reply)),
            _ => return reply.error(Errno::EPERM),
        }
        if st.journaling() {
            let undo = vec![Undo::Remove(path.clone())];
            st.journal(DirOp::Create(path.clone()), [parent.0; 2], undo, vec![]);
        }
        try_!(
            fs::set_permissions(&path, Permissions::from_mode(mode & !umask & 0o7777)),
            reply
        );
        let attr = try_!(st.entry(path), reply);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        try_!(fs::create_dir(&path), reply);
        if st.journaling() {
            let undo = vec![Undo::Remove(path.clone())];
            st.journal(DirOp::Mkdir(path.clone()), [parent.0; 2], undo, vec![]);
        }
        try_!(
            fs::set_permissions(&path, Permissions::from_mode(mode & !umask & 0o7777)),
            reply
        );
        let attr = try_!(st.entry(path), reply);
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        let m = try_!(fs::symlink_metadata(&path), reply);
        if st.journaling() {
            if m.is_dir() {
                return reply.error(Errno::EISDIR);
            }
            // Kept aside, for the undo.
            let grave = try_!(st.grave(), reply);
            try_!(fs::rename(&path, &grave), reply);
            let undo = vec![Undo::Move {
                from: grave.clone(),
                to: path.clone(),
            }];
            st.journal(DirOp::Unlink(path), [parent.0; 2], undo, vec![grave]);
        } else {
            try_!(fs::remove_file(&path), reply);
        }
        st.retire(m.ino());
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        let m = try_!(fs::symlink_metadata(&path), reply);
        if st.journaling() {
            if !m.is_dir() {
                return reply.error(Errno::ENOTDIR);
            }
            if try_!(fs::read_dir(&path), reply).next().is_some() {
                return reply.error(Errno::ENOTEMPTY);
            }
            let grave = try_!(st.grave(), reply);
            try_!(fs::rename(&path, &grave), reply);
            let undo = vec![Undo::Move {
                from: grave.clone(),
                to: path.clone(),
            }];
            st.journal(DirOp::Rmdir(path), [parent.0; 2], undo, vec![grave]);
        } else {
            try_!(fs::remove_dir(&path), reply);
        }
        st.retire(m.ino());
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let mut st = begin!(self, reply);
        let from = try_!(st.child(parent, name), reply);
        let to = try_!(st.child(newparent, newname), reply);
        let from_meta = try_!(fs::symlink_metadata(&from), reply);
        let moved = from_meta.ino();
        let to_meta = fs::symlink_metadata(&to).ok();
        let replaced = to_meta.as_ref().map(|m| m.ino());
        if st.journaling() && replaced != Some(moved) {
            // What rename(2) would refuse, refused before the replaced
            // entry is moved aside.
            if let Some(t) = &to_meta {
                match (from_meta.is_dir(), t.is_dir()) {
                    (true, false) => return reply.error(Errno::ENOTDIR),
                    (false, true) => return reply.error(Errno::EISDIR),
                    (true, true) if try_!(fs::read_dir(&to), reply).next().is_some() => {
                        return reply.error(Errno::ENOTEMPTY)
                    }
                    _ => {}
                }
            }
            let grave = if to_meta.is_some() {
                let g = try_!(st.grave(), reply);
                try_!(fs::rename(&to, &g), reply);
                Some(g)
            } else {
                None
            };
            if let Err(e) = fs::rename(&from, &to) {
                if let Some(g) = &grave {
                    if let Err(back) = fs::rename(g, &to) {
                        eprintln!("lazyfs: could not put {to:?} back from {g:?}: {back}");
                    }
                }
                return reply.error(Errno::from(e));
            }
            let mut undo = vec![Undo::Move {
                from: to.clone(),
                to: from.clone(),
            }];
            undo.extend(grave.iter().map(|g| Undo::Move {
                from: g.clone(),
                to: to.clone(),
            }));
            let op = DirOp::Rename {
                from: from.clone(),
                to: to.clone(),
            };
            st.journal(
                op,
                [parent.0, newparent.0],
                undo,
                grave.into_iter().collect(),
            );
        } else {
            try_!(fs::rename(&from, &to), reply);
        }
        if let Some(r) = replaced.filter(|r| *r != moved) {
            st.retire(r);
        }
        // The moved node and, for a directory, everything below it.
        for n in st.nodes.values_mut().filter(|n| n.backing.is_some()) {
            if let Ok(rest) = n.path.strip_prefix(&from) {
                n.path = if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                };
            }
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = begin!(self, reply);
        let path = try_!(st.path(ino), reply);
        let file = try_!(open_rw(&path), reply);
        let fh = st.add_handle(ino.0, file);
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        let existed = fs::symlink_metadata(&path).is_ok();
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let file = try_!(opts.open(&path), reply);
        if !existed && st.journaling() {
            let undo = vec![Undo::Remove(path.clone())];
            st.journal(DirOp::Create(path.clone()), [parent.0; 2], undo, vec![]);
        }
        let m = try_!(file.metadata(), reply);
        let ino = st.register(path, m.ino());
        if flags & O_TRUNC != 0 && m.len() > 0 {
            let (o, seq) = st.overlay(ino, m.len());
            o.truncate(seq, 0);
        }
        let attr = st.attr(ino, &m);
        let fh = st.add_handle(ino, file);
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let st = begin!(self, reply);
        let Some(file) = st.file(ino, Some(fh)) else {
            return reply.error(Errno::EBADF);
        };
        let data = match st.overlays.get(&ino.0) {
            Some(o) => try_!(o.read(file, offset, size), reply),
            None => {
                let mut buf = vec![0u8; size as usize];
                let len = try_!(file.metadata(), reply).len();
                let n = len.saturating_sub(offset).min(size as u64) as usize;
                buf.truncate(n);
                try_!(read_full(file, offset, &mut buf), reply);
                buf
            }
        };
        reply.data(&data);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = begin!(self, reply);
        let Some(file) = st.file(ino, Some(fh)) else {
            return reply.error(Errno::EBADF);
        };
        let len = try_!(file.metadata(), reply).len();
        let (o, seq) = st.overlay(ino.0, len);
        o.write(seq, offset, data);
        // An armed cut right after this write: it was accepted, and is lost
        // (or kept, as the cut mode says).
        self.shared.tick(&mut st, false);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): persists nothing.
        let _st = begin!(self, reply);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Bookkeeping only (closing a backing fd writes nothing), so it
        // runs even after the cut.
        let mut st = self.shared.lock();
        st.handles.remove(&fh.0);
        let unlinked = !matches!(st.nodes.get(&ino.0), Some(n) if n.backing.is_some());
        if unlinked && !st.handles.values().any(|h| h.ino == ino.0) {
            st.overlays.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let delay = self.shared.fsync_delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        let mut st = match self.shared.begin() {
            Ok(st) => st,
            Err(e) => {
                self.shared.refused_fsyncs.fetch_add(1, Ordering::SeqCst);
                return reply.error(e);
            }
        };
        if self.shared.tick(&mut st, true) {
            self.shared.refused_fsyncs.fetch_add(1, Ordering::SeqCst);
            return reply.error(Errno::EIO);
        }
        if self.shared.lying.load(Ordering::SeqCst) {
            return reply.ok();
        }
        let Some(overlay) = st.overlays.remove(&ino.0) else {
            return reply.ok();
        };
        let Some(file) = st.file(ino, Some(fh)) else {
            return reply.error(Errno::EBADF);
        };
        try_!(overlay.apply(file), reply);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _st = begin!(self, reply);
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = begin!(self, reply);
        let dir = try_!(st.path(ino), reply);
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for e in try_!(fs::read_dir(&dir), reply) {
            let e = try_!(e, reply);
            if ino == INodeNo::ROOT && e.file_name() == GRAVEYARD {
                continue;
            }
            let kind = try_!(e.file_type(), reply);
            let child = st.register(e.path(), e.ino());
            entries.push((
                child,
                FileType::from_std(kind).unwrap_or(FileType::RegularFile),
                e.file_name(),
            ));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Commits the directory journal up to this directory's last
        // operation (there is none unless dir_ops is OnDirFsync).
        let mut st = begin!(self, reply);
        if !self.shared.lying.load(Ordering::SeqCst) {
            st.commit_dir(ino.0);
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _st = begin!(self, reply);
        reply.ok();
    }
}
