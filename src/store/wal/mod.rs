//! parlor's write-ahead log: what makes a group commit durable.
//!
//! The sequencer writes each group commit's writes as ONE record and
//! `fdatasync`s it, on its own thread; sled is only the index, applied
//! without flushing and made durable later by a checkpoint (`Store::
//! checkpoint`), which bounds the replay at the next open.
//!
//! The log is the store's history: sled 0.34 cannot always reopen files
//! that a power cut left with unsynced writes persisted out of order (it
//! refuses "corrupted data" or panics; found with the power-cut
//! filesystem's reordering mode, see `tests/powercut.rs`), so when it
//! cannot, the index is rebuilt from the log (`Store::open_with`). A
//! checkpoint therefore deletes nothing. The history starts at record 1,
//! or at a *base* (`base`): a compaction (`Store::compact_with`) writes the
//! state as of a record, then deletes the segments holding only records
//! up to it, so that deleted data leaves the log. The history is then the
//! newest base plus the records after it.
//!
//! On disk: `DIR/wal/<first seq, 20 digits>.wal`, each a *segment*:
//!
//! * a 4 KiB header page: `MAGIC`, the format version (u32 LE), zeros;
//! * records from offset 4096, each 8-byte aligned:
//!   `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload (len bytes) | pad`
//!   where the CRC covers `len`, `seq` and the payload. Records' `seq`s are
//!   consecutive across segments; a segment's name is its first record's.
//!
//! and, after a compaction, `DIR/wal/base-<seq, 20 digits>.snap` (see
//! `base`).
//!
//! Where things are: segments, the spare and appending in `segments`
//! (with what a full disk does to an append); reading the log back, and
//! telling a torn end from damage, in `scan`; reading committed records
//! while the log is appended to in `follow`; base snapshots, and
//! removing what one makes redundant, in `base`; the record of the last
//! checkpoint in `checkpoint`. The record format and the directory's
//! lock are here.

mod base;
mod checkpoint;
mod follow;
mod scan;
mod segments;

pub use base::{bases, latest_base, read_base, remove_partial_bases, trim, BaseWriter, Trimmed};
pub use checkpoint::{read_checkpoint, write_checkpoint};
pub use follow::Follower;
pub use scan::{cut_torn, scan, Damage, Scan, Torn, Visit};
pub use segments::{remove_spare, segments, Shared, Writer};

use std::fs::{self, File};
use std::io;
use std::path::Path;

pub const MAGIC: [u8; 8] = *b"PARLORWL";
/// The layout of segments and records described above.
pub const VERSION: u32 = 1;
/// The header page; records start after it.
pub const HEADER: u64 = 4096;
const REC_HEAD: usize = 16;

/// CRC-32C (Castagnoli), reflected, as iSCSI and ext4 use it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_update(!0, data) ^ !0
}

fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

fn record_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut c = crc32c_update(!0, &len.to_le_bytes());
    c = crc32c_update(c, &seq.to_le_bytes());
    crc32c_update(c, payload) ^ !0
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Makes a directory's entries durable (files created, renamed or
/// removed in it): the log's and the index's.
pub(in crate::store) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Locks the log's directory for this process (`flock`, released when
/// the file is dropped): taken before anything in it is changed, so that
/// an open that finds the store in use leaves a running daemon's files
/// alone. Creates the directory. `WouldBlock` if another process holds it.
pub fn lock(dir: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(dir)?;
    let f = File::open(dir)?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::space::Space;
    use std::sync::Arc;

    /// Every record in `dir` above `after`: the scan, and each (seq, payload).
    pub(super) fn records(dir: &Path, after: u64) -> (Scan, Vec<(u64, Vec<u8>)>) {
        let mut seen = Vec::new();
        let scan = scan(dir, after, &mut |s, p| {
            seen.push((s, p.to_vec()));
            Ok(())
        })
        .unwrap();
        (scan, seen)
    }

    /// A writer on a fresh ballast, opened as the store opens it.
    pub(super) fn writer(dir: &Path, seg: u64) -> Writer {
        let space = Arc::new(Space::new(dir, seg));
        assert!(space.keep_ballast().unwrap());
        writer_with(dir, seg, space)
    }

    /// A writer measuring `space`, opened as the store opens it.
    pub(super) fn writer_with(dir: &Path, seg: u64, space: Arc<Space>) -> Writer {
        let (s, _) = records(dir, 0);
        let next = s.last_seq.map_or(1, |l| l + 1);
        if let Some(t) = &s.torn {
            cut_torn(t).unwrap();
        }
        remove_spare(dir).unwrap();
        Writer::open(dir, seg, space, s.end, next).unwrap()
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}
