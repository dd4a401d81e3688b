//! A FUSE filesystem that loses every write not yet fsynced: a simulated
//! disk for power-cut tests (the idea of LazyFS, small).
//!
//! * It passes through to a backing directory ("the disk"). Metadata —
//!   create, mkdir, mknod (regular files and sockets), unlink, rmdir,
//!   rename, chmod, chown — is applied to the backing directory at once,
//!   as a journaling filesystem would make it durable soon after.
//! * File DATA is not: `write` keeps the bytes in memory, per inode, as an
//!   overlay of dirty ranges plus the file's pending size (a truncate is
//!   data too). Reads merge the backing file and the overlay. `fsync` or
//!   `fdatasync` through any handle of the inode writes that inode's
//!   overlay to the backing file (truncate, pwrite, set_len) and clears it.
//!   Directory fsync is a no-op: metadata is already on the disk.
//! * [`LazyFs::freeze`] is the power cut: under the same lock every
//!   operation takes, it sets a flag and discards every overlay; from then
//!   on every operation, fsync included, fails with EIO, so nothing more
//!   reaches the disk and nothing can be acknowledged that is not on it.
//!   Kill the program, unmount, and mount a fresh instance on the same
//!   backing directory: it sees exactly what was fsynced (plus metadata).
//! * A lying disk (`mount(.., lying = true)`, or [`LazyFs::set_lying`]
//!   later) answers fsync with success and keeps the overlay in memory
//!   only: the negative control.
//! * [`LazyFs::arm`] makes the filesystem cut its own power at the n-th
//!   file write (accepted, then lost) or fsync (refused): a cut that lands
//!   mid-commit for sure, which a cut from outside often misses.
//! * [`LazyFs::set_fsync_delay`] makes each file fsync take that long
//!   first, as a real disk's does (this one's takes microseconds), which
//!   widens the written-but-not-yet-synced window a cut can land in. The
//!   delay is spent outside the lock: a cut during it fails the fsync.
//!
//! Files are opened with `FOPEN_DIRECT_IO` and every entry and attribute is
//! given a zero TTL, so the kernel caches neither data nor sizes: every
//! read and write of the program reaches this code. fuser without default
//! features mounts with mount(2) (root, CAP_SYS_ADMIN), no libfuse and no
//! fusermount. No hard links, symlinks, FIFOs, xattrs or timestamp
//! changes (sled and parlor use none of them). Torn writes (part of an
//! unsynced write surviving) are not simulated: a cut keeps exactly the
//! state of the last fsync of each file.

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

/// One mounted instance. Dropping it unmounts.
pub struct LazyFs {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mounts a fresh instance at `mountpoint` over `backing` (which holds
/// what was fsynced before). `lying`: fsync succeeds and persists nothing.
pub fn mount(backing: &Path, mountpoint: &Path, lying: bool) -> io::Result<LazyFs> {
    let backing = backing.canonicalize()?;
    let root_ino = fs::metadata(&backing)?.ino();
    let shared = Arc::new(Shared {
        frozen: AtomicBool::new(false),
        lying: AtomicBool::new(lying),
        fsync_delay_us: AtomicU64::new(0),
        refused_fsyncs: AtomicU64::new(0),
        state: Mutex::new(State::new(backing, root_ino)),
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
    /// unsynced data is gone. Returns the dropped dirty bytes by file
    /// (backing path) — those of the earlier cut if an armed [`Trigger`]
    /// cut the power already.
    pub fn freeze(&self) -> Vec<(PathBuf, u64)> {
        let mut st = self.shared.lock();
        self.shared.cut(&mut st);
        st.dropped.clone()
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
    /// its unsynced data).
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
        match session.umount_and_join() {
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
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("lazyfs: could not unmount {:?}: {e}", self.mountpoint);
        }
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
        st.dropped = st
            .overlays
            .iter()
            .map(|(ino, o)| {
                let path = st.nodes.get(ino).map(|n| n.path.clone());
                (path.unwrap_or_default(), o.dirty_bytes())
            })
            .collect();
        st.overlays.clear();
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

struct State {
    /// Counts down to a cut.
    armed: Option<Trigger>,
    /// What the cut dropped: dirty bytes by backing path.
    dropped: Vec<(PathBuf, u64)>,
    nodes: HashMap<u64, Node>,
    /// Backing inode → our inode, for live (linked) files only.
    by_backing: HashMap<u64, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Unsynced data, per inode.
    overlays: HashMap<u64, Overlay>,
}

impl State {
    fn new(root: PathBuf, root_backing: u64) -> State {
        let mut st = State {
            armed: None,
            dropped: Vec::new(),
            nodes: HashMap::new(),
            by_backing: HashMap::new(),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            overlays: HashMap::new(),
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

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
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
}

/// One inode's unsynced data.
struct Overlay {
    /// The size the program sees.
    size: u64,
    /// Bytes of the backing file still valid: its size when the overlay
    /// began, lowered by every truncate since.
    keep: u64,
    /// Dirty bytes by offset; the ranges never overlap.
    ranges: BTreeMap<u64, Vec<u8>>,
}

impl Overlay {
    fn new(backing_len: u64) -> Overlay {
        Overlay {
            size: backing_len,
            keep: backing_len,
            ranges: BTreeMap::new(),
        }
    }

    fn dirty_bytes(&self) -> u64 {
        self.ranges.values().map(|r| r.len() as u64).sum()
    }

    /// Removes every byte in `[from, to)` from the ranges, keeping the
    /// parts of cut ranges outside it.
    fn cut(&mut self, from: u64, to: u64) {
        let hit: Vec<u64> = self
            .ranges
            .range(..to)
            .rev()
            .take_while(|(s, r)| **s + r.len() as u64 > from)
            .map(|(s, _)| *s)
            .collect();
        for s in hit {
            let r = self.ranges.remove(&s).expect("range just seen");
            let end = s + r.len() as u64;
            if s < from {
                self.ranges.insert(s, r[..(from - s) as usize].to_vec());
            }
            if end > to {
                self.ranges.insert(to, r[(to - s) as usize..].to_vec());
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.cut(offset, end);
        self.ranges.insert(offset, data.to_vec());
        self.size = self.size.max(end);
    }

    fn truncate(&mut self, size: u64) {
        self.cut(size, u64::MAX);
        self.size = size;
        self.keep = self.keep.min(size);
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
        for (s, r) in self.ranges.range(..end).rev() {
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
        for (s, r) in &self.ranges {
            file.write_all_at(r, *s)?;
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
            st.overlays
                .entry(ino.0)
                .or_insert_with(|| Overlay::new(len))
                .truncate(size);
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
        try_!(fs::remove_file(&path), reply);
        st.retire(m.ino());
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = begin!(self, reply);
        let path = try_!(st.child(parent, name), reply);
        let m = try_!(fs::symlink_metadata(&path), reply);
        try_!(fs::remove_dir(&path), reply);
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
        let moved = try_!(fs::symlink_metadata(&from), reply).ino();
        let replaced = fs::symlink_metadata(&to).ok().map(|m| m.ino());
        try_!(fs::rename(&from, &to), reply);
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
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let file = try_!(opts.open(&path), reply);
        let m = try_!(file.metadata(), reply);
        let ino = st.register(path, m.ino());
        if flags & O_TRUNC != 0 && m.len() > 0 {
            st.overlays
                .entry(ino)
                .or_insert_with(|| Overlay::new(m.len()))
                .truncate(0);
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
        st.overlays
            .entry(ino.0)
            .or_insert_with(|| Overlay::new(len))
            .write(offset, data);
        // An armed cut right after this write: it was accepted, and is lost.
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
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is on the disk already.
        let _st = begin!(self, reply);
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _st = begin!(self, reply);
        reply.ok();
    }
}
