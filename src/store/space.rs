//! Room on the store's filesystem, and the state in which the store
//! refuses writes for lack of it ("disk full").
//!
//! What a write needs: its log record goes into a segment preallocated
//! ahead of need (`wal`), and sled's copy of it into files sled grows on
//! its own — synchronously for big values, in the background and at a
//! checkpoint for the rest, and a snapshot at every open. sled 0.34 does
//! not survive running out of room: the first failed write sets an error
//! it keeps until it is reopened (reads go on, every later write and flush
//! fails), and it cannot even open on a filesystem with no byte free (the
//! snapshot). So parlor stops *before* the disk is full: a group commit is
//! refused, nothing written, unless its record fits in a segment that
//! exists (or a spare can be made) and `statvfs` shows, after it and
//! sled's copy of it, [`Space::reserve`] bytes still free. That reserve is
//! what sled's own writes, a checkpoint and the next open use.
//!
//! The state is entered by the writer when it refuses a group, or by the
//! checkpoint thread when free space falls under the reserve; it is left
//! by the checkpoint thread once a spare segment and the ballast are ready
//! and there is room for a segment's worth of writes above the reserve.
//! Each change is logged once. If sled failed to write anyway (something
//! else filled the disk past the reserve), writes stay refused until
//! parlor is restarted: sled must be reopened, and the log holds
//! everything it lost.
//!
//! Something else may fill the disk to the last byte while parlor is
//! stopped, too. So that it can still open (sled's snapshot, the replay,
//! the checkpoint after it), it keeps a *ballast*: a file of the reserve's
//! size beside the log (`DIR/wal/ballast`), made by the checkpoint thread
//! when there is room and removed at every open before sled opens.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The least kept free, whatever the segment size: sled writes its log in
/// 512 KiB segments, a snapshot at open, and big values to files of
/// their own.
const MIN_RESERVE: u64 = 8 << 20;
const BALLAST: &str = "ballast";

/// Removes the ballast (at open, before sled opens: its room is what sled
/// may need on a full disk). It is made again when there is room.
pub fn release_ballast(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(BALLAST)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub struct Space {
    /// A directory on the filesystem measured (the log's).
    dir: PathBuf,
    segment: u64,
    reserve: u64,
    /// The ballast is set aside (`keep_ballast`); no write goes ahead
    /// without it.
    ballast: AtomicBool,
    refusing: AtomicBool,
    /// Writes stay refused until a restart (sled failed to write).
    until_restart: AtomicBool,
    /// Free bytes the refused write wanted above the reserve: writes
    /// resume only once at least that much (and a segment) is free.
    wanted: AtomicU64,
    why: Mutex<String>,
    /// Tests: a free figure instead of `statvfs`'s (`u64::MAX`: none).
    #[cfg(test)]
    pretend: AtomicU64,
}

/// Whether an error is the filesystem's "no space left" (or "quota
/// exceeded"): directly, or wrapped by sled (which sometimes rebuilds the
/// error with the original's kind and only its text).
pub fn is_no_space(e: &io::Error) -> bool {
    if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return true;
    }
    if let Some(inner) = e.get_ref() {
        if let Some(e) = inner.downcast_ref::<io::Error>() {
            return is_no_space(e);
        }
        if let Some(sled::Error::Io(e)) = inner.downcast_ref::<sled::Error>() {
            return is_no_space(e);
        }
    }
    // `ErrorKind::StorageFull` and `QuotaExceeded` by name: they are newer
    // than this crate's minimum Rust.
    matches!(
        format!("{:?}", e.kind()).as_str(),
        "StorageFull" | "QuotaExceeded" | "FilesystemQuotaExceeded"
    )
}

/// [`is_no_space`] for sled's own error type.
pub fn sled_no_space(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(e) if is_no_space(e))
}

/// Bytes in MiB with one decimal (KiB under one MiB), for messages.
fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{} KiB", bytes.div_ceil(1024))
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// Gives `f` `len` bytes of blocks (`posix_fallocate`, which the C library
/// does by writing where the filesystem cannot).
fn allocate(f: &std::fs::File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a file descriptor `f` owns, and a length that fits off_t.
    match unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`;
/// `u64::MAX` if it reports no size at all (some FUSE filesystems).
fn statvfs_free(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a path with a NUL byte"))?;
    // SAFETY: `path` is a valid C string and `st` a properly sized,
    // writable statvfs that the call fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.f_blocks == 0 {
        return Ok(u64::MAX);
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

impl Space {
    /// The room of the filesystem holding `dir`, for a log of segments of
    /// `segment` bytes. The ballast is not held until [`Space::keep_ballast`].
    pub fn new(dir: &Path, segment: u64) -> Space {
        Space {
            dir: dir.to_path_buf(),
            segment,
            reserve: segment.max(MIN_RESERVE),
            ballast: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            until_restart: AtomicBool::new(false),
            wanted: AtomicU64::new(0),
            why: Mutex::new(String::new()),
            #[cfg(test)]
            pretend: AtomicU64::new(u64::MAX),
        }
    }

    /// Bytes kept free beyond the spare segment (and the ballast's size).
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Free bytes now. A filesystem that cannot say (statvfs failing on
    /// a directory the store holds open, or reporting no size) counts as
    /// roomy, `u64::MAX`: running out then shows as a spare segment that
    /// cannot be made.
    pub fn free(&self) -> u64 {
        #[cfg(test)]
        {
            let p = self.pretend.load(Ordering::Relaxed);
            if p != u64::MAX {
                return p;
            }
        }
        statvfs_free(&self.dir).unwrap_or(u64::MAX)
    }

    /// Whether a write that needs `bytes` of new room may go ahead: not
    /// while refusing, not without the ballast set aside, and only if the
    /// reserve stays free after it. Refusing starts here otherwise.
    pub fn room_for(&self, bytes: u64) -> bool {
        if self.refusing.load(Ordering::Acquire) {
            return false;
        }
        let free = self.free();
        if !self.ballast.load(Ordering::Acquire) {
            self.refuse(self.full(free, "no room to set the ballast aside"), bytes);
            return false;
        }
        if free >= self.reserve.saturating_add(bytes) {
            return true;
        }
        self.refuse(
            self.full(free, &format!("a write needs {}", mib(bytes))),
            bytes,
        );
        false
    }

    /// Whether a spare segment may be made now without eating into the
    /// reserve.
    pub fn room_for_segment(&self) -> bool {
        self.free() >= self.reserve.saturating_add(self.segment)
    }

    /// Makes the ballast if it is missing and there is room for it above
    /// the reserve (allocated, not written: it is only room). Whether it
    /// is set aside.
    pub fn keep_ballast(&self) -> io::Result<bool> {
        let path = self.dir.join(BALLAST);
        let free = self.free();
        // A filesystem that cannot be measured is never found full:
        // nothing to set aside against.
        let held = if free == u64::MAX || path.metadata().is_ok_and(|m| m.len() == self.reserve) {
            true
        } else if free < self.reserve.saturating_mul(2) {
            false
        } else {
            let made = std::fs::File::create(&path).and_then(|f| allocate(&f, self.reserve));
            if made.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            made?;
            true
        };
        self.ballast.store(held, Ordering::Release);
        Ok(held)
    }

    /// Starts refusing writes: a record needs the next segment (wanting
    /// `wanted` bytes) and there is no room to make it.
    pub fn refuse_for_segment(&self, wanted: u64) {
        let why = format!(
            "the next write-ahead log segment needs {}",
            mib(self.segment)
        );
        self.refuse(self.full(self.free(), &why), wanted);
    }

    /// "The disk is full", with the figures and `what` did not fit.
    fn full(&self, free: u64, what: &str) -> String {
        format!(
            "the disk is full: {} free ({what}); parlor keeps {} free, and as much set aside, \
             for its index and log",
            mib(free),
            mib(self.reserve),
        )
    }

    /// Starts refusing writes (logged if it was not already), saying why.
    pub fn refuse(&self, why: String, wanted: u64) {
        self.wanted.fetch_max(wanted, Ordering::Relaxed);
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.clone();
        if !self.refusing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                reason = %why,
                "writes are refused until there is room again (reads go on)"
            );
        }
    }

    /// sled could not write (no space): refused until a restart reopens it.
    pub fn refuse_until_restart(&self, cause: &dyn std::fmt::Display) {
        let why = "the store's index could not be written (no space left on the device): writes \
                   are refused until parlor is restarted with room on its disk; nothing \
                   acknowledged is lost (the write-ahead log holds it)"
            .to_owned();
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = why.clone();
        self.refusing.store(true, Ordering::Release);
        if !self.until_restart.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %cause, reason = %why, "the index could not be written");
        }
    }

    /// The checkpoint thread's look, each tick, after it prepared what it
    /// could: refuses once free space is under the reserve (or the ballast
    /// is not set aside), and resumes once `spare_ready`, the ballast is
    /// set aside and a segment's worth (or what the refused write wanted)
    /// is free above the reserve.
    pub fn check(&self, spare_ready: bool) {
        let free = self.free();
        let ballast = self.ballast.load(Ordering::Acquire);
        if !self.refusing.load(Ordering::Acquire) {
            if !ballast {
                self.refuse(self.full(free, "no room to set the ballast aside"), 0);
            } else if free < self.reserve {
                self.refuse(self.full(free, "less than the reserve"), 0);
            }
            return;
        }
        let above = self.segment.max(self.wanted.load(Ordering::Relaxed));
        if self.until_restart.load(Ordering::Acquire)
            || !spare_ready
            || !ballast
            || free < self.reserve.saturating_add(above)
        {
            return;
        }
        self.wanted.store(0, Ordering::Relaxed);
        self.refusing.store(false, Ordering::Release);
        tracing::info!(free = %mib(free), "there is room on the disk again: writes resume");
    }

    /// Why writes are refused, while they are.
    pub fn refusing(&self) -> Option<String> {
        self.refusing
            .load(Ordering::Acquire)
            .then(|| self.why.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Whether writes are refused until a restart.
    pub fn until_restart(&self) -> bool {
        self.until_restart.load(Ordering::Acquire)
    }

    /// Tests: free space is `bytes` (`None`: what statvfs says).
    #[cfg(test)]
    pub fn pretend_free(&self, bytes: Option<u64>) {
        self.pretend
            .store(bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_recognised_raw_and_as_sled_wraps_it() {
        let raw = io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_no_space(&raw));
        assert!(is_no_space(&io::Error::from_raw_os_error(libc::EDQUOT)));
        // sled rebuilds the error from its kind and its Debug text.
        let rebuilt = io::Error::new(raw.kind(), format!("{raw:?}"));
        assert!(is_no_space(&rebuilt));
        // The store wraps sled's error in an io::Error.
        let sled = sled::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(sled_no_space(&sled));
        assert!(is_no_space(&io::Error::other(sled)));
        assert!(!is_no_space(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_no_space(&io::Error::other(sled::Error::Io(
            io::Error::from_raw_os_error(libc::EIO)
        ))));
        assert!(!sled_no_space(&sled::Error::Unsupported("x".into())));
    }

    #[test]
    fn statvfs_measures_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = Space::new(dir.path(), 1 << 20);
        let free = s.free();
        assert!(free > 0 && free < u64::MAX, "{free}");
        assert_eq!(s.reserve(), MIN_RESERVE);
        assert_eq!(Space::new(dir.path(), 64 << 20).reserve(), 64 << 20);
    }

    /// Refusing starts under the reserve, is said once, and ends only with
    /// a spare ready and a segment's worth (or what was wanted) above it.
    #[test]
    fn refusing_starts_under_the_reserve_and_ends_with_room_to_spare() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1 << 20;
        let s = Space::new(dir.path(), seg);
        assert!(s.keep_ballast().unwrap());
        let r = s.reserve();
        s.pretend_free(Some(r + 100));
        assert!(s.room_for(100));
        assert!(s.refusing().is_none());
        assert!(!s.room_for(101));
        let why = s.refusing().expect("refusing");
        assert!(why.contains("disk is full"), "{why}");
        // Refused now even for a write that would fit.
        assert!(!s.room_for(1));
        s.pretend_free(Some(r + seg));
        s.check(false);
        assert!(s.refusing().is_some(), "no spare yet");
        s.pretend_free(Some(r + seg - 1));
        s.check(true);
        assert!(
            s.refusing().is_some(),
            "not a segment's worth above the reserve"
        );
        s.pretend_free(Some(r + seg));
        s.check(true);
        assert!(s.refusing().is_none());
        assert!(s.room_for(1));
        // The checkpoint thread notices a disk filled by someone else.
        s.pretend_free(Some(r - 1));
        s.check(true);
        assert!(s.refusing().is_some());
        // A big write refused is waited for: a segment is not enough.
        s.pretend_free(Some(r + 4 * seg));
        s.check(true);
        assert!(!s.room_for(5 * seg));
        s.check(true);
        assert!(s.refusing().is_some());
        s.pretend_free(Some(r + 5 * seg));
        s.check(true);
        assert!(s.room_for(5 * seg));
    }

    /// No write goes ahead before the ballast is set aside, and it is set
    /// aside only with room for it above the reserve.
    #[test]
    fn the_ballast_is_made_only_with_room_and_writes_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Space::new(dir.path(), 1 << 20);
        let path = dir.path().join(BALLAST);
        s.pretend_free(Some(2 * s.reserve() - 1));
        assert!(!s.keep_ballast().unwrap());
        assert!(!path.exists());
        assert!(!s.room_for(1));
        assert!(s.refusing().unwrap().contains("ballast"));
        s.check(true);
        assert!(s.refusing().is_some());
        s.pretend_free(None);
        assert!(s.keep_ballast().unwrap());
        assert_eq!(path.metadata().unwrap().len(), s.reserve());
        s.check(true);
        assert!(s.refusing().is_none());
        assert!(s.room_for(1));
        // There already: nothing to make, whatever the room.
        s.pretend_free(Some(0));
        assert!(s.keep_ballast().unwrap());
        release_ballast(dir.path()).unwrap();
        assert!(!path.exists());
        release_ballast(dir.path()).unwrap();
    }

    #[test]
    fn after_the_index_failed_only_a_restart_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Space::new(dir.path(), 1 << 20);
        s.refuse_until_restart(&"sled: no space");
        assert!(s.until_restart());
        s.pretend_free(Some(u64::MAX - 1));
        s.check(true);
        let why = s.refusing().expect("still refusing");
        assert!(why.contains("restarted"), "{why}");
    }
}
