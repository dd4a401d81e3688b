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
//! by the checkpoint thread once a spare segment is ready and there is
//! room for a segment's worth of writes above the reserve. Each change is
//! logged once. If sled failed to write anyway (something else filled the
//! disk past the reserve), writes stay refused until parlor is restarted:
//! sled must be reopened, and the log holds everything it lost.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The least kept free, whatever the segment size: sled writes its log in
/// 512 KiB segments, a snapshot at open, and big values to files of
/// their own.
const MIN_RESERVE: u64 = 8 << 20;

pub struct Space {
    /// A directory on the filesystem measured (the log's).
    dir: PathBuf,
    segment: u64,
    reserve: u64,
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

/// Bytes in MiB with one decimal, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
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
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

impl Space {
    /// The room of the filesystem holding `dir`, for a log of segments of
    /// `segment` bytes.
    pub fn new(dir: &Path, segment: u64) -> Space {
        Space {
            dir: dir.to_path_buf(),
            segment,
            reserve: segment.max(MIN_RESERVE),
            refusing: AtomicBool::new(false),
            until_restart: AtomicBool::new(false),
            wanted: AtomicU64::new(0),
            why: Mutex::new(String::new()),
            #[cfg(test)]
            pretend: AtomicU64::new(u64::MAX),
        }
    }

    /// Bytes kept free beyond the spare segment.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Free bytes now. A filesystem that cannot say (statvfs failing on
    /// a directory the store holds open) counts as roomy: running out then
    /// shows as a spare segment that cannot be made.
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
    /// while refusing, and only if the reserve stays free after it.
    /// Refusing starts here otherwise.
    pub fn room_for(&self, bytes: u64) -> bool {
        if self.refusing.load(Ordering::Acquire) {
            return false;
        }
        let free = self.free();
        if free >= self.reserve.saturating_add(bytes) {
            return true;
        }
        self.refuse(
            format!(
                "the disk is full: {} free, a write needs {} and parlor keeps {} free for its \
                 index and log",
                mib(free),
                mib(bytes),
                mib(self.reserve)
            ),
            bytes,
        );
        false
    }

    /// Whether a spare segment may be made now without eating into the
    /// reserve.
    pub fn room_for_segment(&self) -> bool {
        self.free() >= self.reserve.saturating_add(self.segment)
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

    /// The checkpoint thread's look, each tick: refuses once free space is
    /// under the reserve, and resumes once `spare_ready` and a segment's
    /// worth (or what the refused write wanted) is free above it.
    pub fn check(&self, spare_ready: bool) {
        let free = self.free();
        if !self.refusing.load(Ordering::Acquire) {
            if free < self.reserve {
                self.refuse(
                    format!(
                        "the disk is full: {} free, under the {} parlor keeps free for its index \
                         and log",
                        mib(free),
                        mib(self.reserve)
                    ),
                    0,
                );
            }
            return;
        }
        let above = self.segment.max(self.wanted.load(Ordering::Relaxed));
        if self.until_restart.load(Ordering::Acquire)
            || !spare_ready
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
        assert!(s.refusing().is_some(), "not a segment's worth above the reserve");
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
