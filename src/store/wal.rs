//! parlor's write-ahead log: what makes a group commit durable.
//!
//! The sequencer writes each group commit's writes as ONE record and
//! `fdatasync`s it, on its own thread; sled is only the index, applied
//! without flushing and made durable later by a checkpoint (`Store::
//! checkpoint`), which bounds the replay at the next open.
//!
//! The log is kept whole, from record 1, and is the store's history: sled
//! 0.34 cannot always reopen files that a power cut left with unsynced
//! writes persisted out of order (it refuses "corrupted data" or panics;
//! found with the power-cut filesystem's reordering mode, see
//! `tests/powercut.rs`), so when it cannot, the index is rebuilt from the
//! log (`Store::open_with`). Segments are therefore not deleted after a
//! checkpoint; an operator who removes old ones gives that up (a gap below
//! the index's checkpoint is not damage).
//!
//! On disk: `DIR/wal/<first seq, 20 digits>.wal`, each a *segment*:
//!
//! * a 4 KiB header page: `MAGIC`, the format version (u32 LE), zeros;
//! * records from offset 4096, each 8-byte aligned:
//!   `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload (len bytes) | pad`
//!   where the CRC covers `len`, `seq` and the payload. Records' `seq`s are
//!   consecutive across segments; a segment's name is its first record's.
//!
//! Segments are preallocated: written full of zeros and fsynced before use
//! (by the checkpoint thread, ahead of need: `spare.tmp`), so an append
//! changes no file metadata and `fdatasync` writes the record's pages
//! only. A zero header ends a segment's records.
//!
//! A full disk is an answer, not a failed commit: before a record is
//! written, [`Writer::append`] makes sure it fits, in the current segment
//! or in a spare that exists (or can be made without eating into the
//! reserve, `space`), and that `statvfs` leaves the reserve free after it
//! and sled's copy; if not, the record is refused with nothing written
//! and the store refuses writes until there is room again.
//!
//! Reading ([`scan`]) stops at the first record that is not whole. If no
//! valid record follows it anywhere, it is the torn end of the last write
//! (a power cut mid-append): open zeroes it and says so. If a valid record
//! follows, the log is damaged in the middle: open refuses, naming the
//! file and offset, and `parlor check` reports it without changing
//! anything.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::space::Space;
use super::CommitError;

pub const MAGIC: [u8; 8] = *b"PARLORWL";
/// The layout of segments and records described above.
pub const VERSION: u32 = 1;
/// The header page; records start after it.
pub const HEADER: u64 = 4096;
const REC_HEAD: usize = 16;
const SPARE: &str = "spare.tmp";
const SPARE_PARTIAL: &str = "spare.partial";
/// Payloads larger than this are damage, not records.
const MAX_PAYLOAD: u64 = 1 << 30;

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

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn header() -> Vec<u8> {
    let mut h = vec![0u8; HEADER as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segments in `dir`, oldest first: (first seq, path).
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Why the log cannot be read as it is.
#[derive(Debug)]
pub enum Damage {
    /// A segment's header is not parlor's, or of another version.
    Header {
        path: PathBuf,
        why: String,
    },
    /// A record fails its check (or the sequence breaks) and valid records
    /// follow it: not a torn end, so nothing may be dropped.
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Header { path, why } => {
                write!(f, "write-ahead log segment {}: {why}", path.display())
            }
            Damage::Corrupt { path, offset, why } => write!(
                f,
                "write-ahead log damaged in {} at offset {offset}: {why}; valid records follow, \
                 so this is not a torn last write (run `parlor check`; restore from a backup)",
                path.display()
            ),
            Damage::Io(path, e) => write!(f, "reading {}: {e}", path.display()),
        }
    }
}

/// The torn end of the last write, found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Torn {
    pub path: PathBuf,
    pub offset: u64,
    /// Bytes from `offset` to the last non-zero byte of the segment.
    pub len: u64,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub segments: usize,
    pub records: u64,
    /// Of the records, those `visit` was given (seq above `after`).
    pub replayed: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Where appending goes on: the last segment and the offset after its
    /// last whole record.
    pub end: Option<(u64, PathBuf, u64)>,
    pub torn: Option<Torn>,
}

/// One whole record at `off` in `buf`, if there is one: (seq, payload, next offset).
fn record_at(buf: &[u8], off: u64) -> Option<(u64, &[u8], u64)> {
    let o = off as usize;
    let head = buf.get(o..o + REC_HEAD)?;
    let len = u32::from_le_bytes(head[0..4].try_into().ok()?);
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(head[8..16].try_into().ok()?);
    if len == 0 || len as u64 > MAX_PAYLOAD {
        return None;
    }
    let payload = buf.get(o + REC_HEAD..o + REC_HEAD + len as usize)?;
    (record_crc(len, seq, payload) == crc).then_some((
        seq,
        payload,
        off + align8(REC_HEAD as u64 + len as u64),
    ))
}

/// What [`scan`] calls with each record it replays: (seq, payload).
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), String> + 'a;

/// Reads every segment in `dir` in order, calling `visit` with each
/// record whose seq is above `after`, in seq order. Records at or below
/// `after` (already in the index) are checked but not visited, and a gap
/// in the sequence below `after + 1` is no damage (old segments an
/// operator removed). Changes nothing on disk.
pub fn scan(dir: &Path, after: u64, visit: &mut Visit<'_>) -> Result<Scan, Damage> {
    let segs = segments(dir).map_err(|e| Damage::Io(dir.to_path_buf(), e))?;
    let mut out = Scan {
        segments: segs.len(),
        ..Scan::default()
    };
    let mut expect: Option<u64> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let buf = fs::read(path).map_err(|e| Damage::Io(path.clone(), e))?;
        if buf.len() < HEADER as usize || buf[..8] != MAGIC {
            return Err(Damage::Header {
                path: path.clone(),
                why: "not a parlor write-ahead log segment (bad magic or short header)".into(),
            });
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(Damage::Header {
                path: path.clone(),
                why: format!("segment format {version}, this parlor reads {VERSION}"),
            });
        }
        // A segment's name is its first record's seq; the sequence may
        // jump between segments only where both sides are checkpointed.
        match expect {
            Some(e) if *first != e && *first > after + 1 => {
                return Err(Damage::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    why: format!(
                        "segment starts at record {first}, the one before ended at {}",
                        e - 1
                    ),
                })
            }
            _ => {}
        }
        let mut want = *first;
        let mut off = HEADER;
        let end = loop {
            match record_at(&buf, off) {
                Some((seq, payload, next)) if seq == want => {
                    out.records += 1;
                    out.first_seq.get_or_insert(seq);
                    out.last_seq = Some(seq);
                    if seq > after {
                        if seq != after + 1 + out.replayed {
                            return Err(Damage::Corrupt {
                                path: path.clone(),
                                offset: off,
                                why: format!(
                                    "record {seq} follows the index's checkpoint {after} with a gap"
                                ),
                            });
                        }
                        visit(seq, payload).map_err(|why| Damage::Corrupt {
                            path: path.clone(),
                            offset: off,
                            why,
                        })?;
                        out.replayed += 1;
                    }
                    want += 1;
                    off = next;
                }
                _ => break off,
            }
        };
        // `end` is where the whole records stop. What lies beyond must be
        // zeros, or a torn last write: checked against every later byte.
        let last_nonzero = buf
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |p| p as u64 + 1);
        if last_nonzero > end {
            let later = segs[i + 1..].iter().map(|(_, p)| p.as_path());
            if let Some(why) = valid_after(&buf, end, want, later)? {
                return Err(Damage::Corrupt {
                    path: path.clone(),
                    offset: end,
                    why,
                });
            }
            out.torn = Some(Torn {
                path: path.clone(),
                offset: end,
                len: last_nonzero - end,
            });
        }
        expect = Some(want);
        out.end = Some((*first, path.clone(), end));
        if out.torn.is_some() {
            // Nothing valid follows (checked above): later segments are
            // empty spares taken just before the cut.
            for (f, p) in &segs[i + 1..] {
                out.end = Some((*f, p.clone(), HEADER));
            }
            break;
        }
    }
    Ok(out)
}

/// Whether a valid record with seq `want` or later lies after `from` in
/// `buf`, or any valid record in a later segment: the sign that a bad
/// record is damage in the middle, not a torn end.
fn valid_after<'a>(
    buf: &[u8],
    from: u64,
    want: u64,
    later: impl Iterator<Item = &'a Path>,
) -> Result<Option<String>, Damage> {
    let mut off = from + 8;
    while (off as usize) + REC_HEAD <= buf.len() {
        if let Some((seq, _, _)) = record_at(buf, off) {
            if seq >= want {
                return Ok(Some(format!(
                    "record {want} is damaged, record {seq} at offset {off} is whole"
                )));
            }
        }
        off += 8;
    }
    for path in later {
        let later = fs::read(path).map_err(|e| Damage::Io(path.to_path_buf(), e))?;
        if record_at(&later, HEADER).is_some() {
            return Ok(Some(format!(
                "record {want} is damaged and {} holds whole records",
                path.display()
            )));
        }
    }
    Ok(None)
}

/// Zeroes a torn end found by [`scan`] and syncs it, so appending can go
/// on after the last whole record.
pub fn cut_torn(t: &Torn) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(&t.path)?;
    let zeros = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < t.len {
        let n = (t.len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], t.offset + done)?;
        done += n as u64;
    }
    f.sync_data()
}

/// The file that records the last completed checkpoint's seq, beside the
/// segments: `seq: u64 LE | crc32c(seq): u32 LE`. An index whose marker is
/// below it has lost what it once held durably (sled can reopen damaged
/// files as if they were older or empty), so it is rebuilt.
const CHECKPOINT: &str = "checkpoint";

/// Records a completed checkpoint (written in place and synced; the 12
/// bytes lie in one sector).
pub fn write_checkpoint(dir: &Path, seq: u64) -> io::Result<()> {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..].copy_from_slice(&crc32c(&seq.to_le_bytes()).to_le_bytes());
    let path = dir.join(CHECKPOINT);
    let new = !path.exists();
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    f.write_all_at(&b, 0)?;
    f.sync_all()?;
    if new {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The last completed checkpoint's seq, if one was recorded and reads
/// whole.
pub fn read_checkpoint(dir: &Path) -> io::Result<Option<u64>> {
    let b = match fs::read(dir.join(CHECKPOINT)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if b.len() < 12 {
        return Ok(None);
    }
    let seq = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    Ok((crc32c(&seq.to_le_bytes()) == crc).then_some(seq))
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

/// Removes the spare segment a last run left (with [`lock`] held). Done
/// first at open: a spare may be half made or of another segment size,
/// and on a full disk its room is what lets sled open (it writes a
/// snapshot) and the log be replayed. A new one is made when there is
/// room.
pub fn remove_spare(dir: &Path) -> io::Result<()> {
    for name in [SPARE, SPARE_PARTIAL] {
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// State shared by the writer and the checkpoint thread.
pub struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    /// Free space, and whether writes are refused for lack of it.
    space: Arc<Space>,
    /// Held while a spare is made or taken.
    spare: Mutex<()>,
    /// Bytes appended since open, for the checkpoint's size trigger.
    pub appended: AtomicU64,
}

impl Shared {
    /// Makes the next segment ahead of need, if there is none and there
    /// is room for it above the reserve: written full of zeros with its
    /// header, fsynced, then renamed into place (so a half-made spare is
    /// never taken). Whether a spare is ready.
    pub fn prepare_spare(&self) -> io::Result<bool> {
        let _g = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        self.prepare_spare_locked()
    }

    fn prepare_spare_locked(&self) -> io::Result<bool> {
        let spare = self.dir.join(SPARE);
        if spare.exists() {
            return Ok(true);
        }
        if !self.space.room_for_segment() {
            return Ok(false);
        }
        let partial = self.dir.join(SPARE_PARTIAL);
        let made = (|| {
            let f = File::create(&partial)?;
            f.write_all_at(&header(), 0)?;
            let zeros = vec![0u8; 256 * 1024];
            let mut off = HEADER;
            while off < self.segment_bytes {
                let n = (self.segment_bytes - off).min(zeros.len() as u64) as usize;
                f.write_all_at(&zeros[..n], off)?;
                off += n as u64;
            }
            f.sync_all()?;
            fs::rename(&partial, &spare)?;
            sync_dir(&self.dir)
        })();
        if made.is_err() {
            let _ = fs::remove_file(&partial);
        }
        made.map(|()| true)
    }
}

/// The appending end, owned by the sequencer.
pub struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// Next write offset in `file`.
    pos: u64,
    /// Bytes `file` is known to hold (appends past it change its size).
    len: u64,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Writer {
    /// Opens the log in `dir` for appending after a [`scan`] (whose torn
    /// end, if any, was cut) and [`remove_spare`]. `next_seq` is the seq
    /// the next record gets; `space` is measured before each append.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        space: Arc<Space>,
        end: Option<(u64, PathBuf, u64)>,
        next_seq: u64,
    ) -> io::Result<Writer> {
        fs::create_dir_all(dir)?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(2 * HEADER),
            space,
            spare: Mutex::new(()),
            appended: AtomicU64::new(0),
        });
        let mut w = match end {
            Some((_, path, pos)) => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                let len = file.metadata()?.len();
                Writer {
                    shared,
                    file,
                    pos,
                    len,
                    next_seq,
                    buf: Vec::new(),
                }
            }
            None => {
                let file = Self::take_spare(&shared, next_seq)?.ok_or_else(|| {
                    io::Error::other("no room on the disk for the first log segment")
                })?;
                Writer {
                    len: shared.segment_bytes,
                    shared,
                    file,
                    pos: HEADER,
                    next_seq,
                    buf: Vec::new(),
                }
            }
        };
        w.buf.reserve(64 * 1024);
        Ok(w)
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The seq the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Renames the spare (made now if the checkpoint thread has not and
    /// there is room) to the segment starting at `first_seq`, and syncs the
    /// directory before anything is written to it, so no record lands in a
    /// file whose name a crash could take back. `None`: no room for one.
    fn take_spare(shared: &Shared, first_seq: u64) -> io::Result<Option<File>> {
        let _g = shared.spare.lock().unwrap_or_else(|p| p.into_inner());
        if !shared.prepare_spare_locked()? {
            return Ok(None);
        }
        let path = shared.dir.join(segment_name(first_seq));
        fs::rename(shared.dir.join(SPARE), &path)?;
        sync_dir(&shared.dir)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map(Some)
    }

    /// Appends one record and makes it durable (`fdatasync`; a full
    /// `fsync` only when the record made the file grow). Returns its seq.
    ///
    /// [`CommitError::Refused`] before anything is written if there is no
    /// room (see the module header): the seq is not used, and the store
    /// refuses writes until there is room. [`CommitError::Failed`] if the
    /// write or its sync failed: that cannot be retried safely, the caller
    /// stops.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, CommitError> {
        let seq = self.next_seq;
        let total = align8(REC_HEAD as u64 + payload.len() as u64);
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::other("a commit record over 4 GiB"))?;
        // New room it needs: sled's copy, and the segment's growth should
        // the record be bigger than a segment.
        if !self.shared.space.room_for(2 * total) {
            return Err(CommitError::Refused);
        }
        if self.pos > HEADER && self.pos + total > self.shared.segment_bytes {
            match Self::take_spare(&self.shared, seq) {
                Ok(Some(file)) => self.file = file,
                Ok(None) => {
                    self.shared.space.refuse_for_segment(total);
                    return Err(CommitError::Refused);
                }
                Err(e) => {
                    self.shared.space.refuse(
                        format!("the next write-ahead log segment cannot be made: {e}"),
                        total,
                    );
                    return Err(CommitError::Refused);
                }
            }
            self.pos = HEADER;
            self.len = self.shared.segment_bytes;
        }
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&record_crc(len, seq, payload).to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(total as usize, 0);
        self.file.write_all_at(&self.buf, self.pos)?;
        if self.pos + total > self.len {
            self.file.sync_all()?;
            self.len = self.pos + total;
        } else {
            self.file.sync_data()?;
        }
        self.pos += total;
        self.next_seq += 1;
        self.shared.appended.fetch_add(total, Ordering::Relaxed);
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(dir: &Path, after: u64) -> (Scan, Vec<(u64, Vec<u8>)>) {
        let mut seen = Vec::new();
        let scan = scan(dir, after, &mut |s, p| {
            seen.push((s, p.to_vec()));
            Ok(())
        })
        .unwrap();
        (scan, seen)
    }

    fn writer(dir: &Path, seg: u64) -> Writer {
        let space = Arc::new(Space::new(dir, seg));
        assert!(space.keep_ballast().unwrap());
        writer_with(dir, seg, space)
    }

    /// A writer measuring `space`, opened as the store opens it.
    fn writer_with(dir: &Path, seg: u64, space: Arc<Space>) -> Writer {
        let (s, _) = records(dir, 0);
        let next = s.last_seq.map_or(1, |l| l + 1);
        if let Some(t) = &s.torn {
            cut_torn(t).unwrap();
        }
        remove_spare(dir).unwrap();
        Writer::open(dir, seg, space, s.end, next).unwrap()
    }

    /// No spare can be made (no room above the reserve): the record that
    /// needs one is refused with nothing written and its seq unused; once
    /// there is room the next record takes that seq.
    #[test]
    fn a_record_with_no_segment_to_go_to_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 8192;
        let space = Arc::new(Space::new(dir.path(), seg));
        assert!(space.keep_ballast().unwrap());
        let mut w = writer_with(dir.path(), seg, space.clone());
        let roomy = space.reserve() + 4 * seg;
        // Room for the records, not for another segment.
        space.pretend_free(Some(space.reserve() + seg - 1));
        assert!(
            !w.shared().prepare_spare().unwrap(),
            "a spare into the reserve"
        );
        let mut n = 0u64;
        let refused = loop {
            match w.append(&[3u8; 1000]) {
                Ok(seq) => {
                    n += 1;
                    assert_eq!(seq, n);
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(refused, CommitError::Refused), "{refused:?}");
        assert!(n >= 3, "{n} records before the segment was full");
        let why = space.refusing().expect("the store refuses writes");
        assert!(why.contains("disk is full"), "{why}");
        assert!(why.contains("next write-ahead log segment"), "{why}");
        assert!(!dir.path().join(SPARE).exists());
        let (s, seen) = records(dir.path(), 0);
        assert_eq!((seen.len() as u64, s.segments, s.torn), (n, 1, None));
        // Still refused while refusing, whatever the room.
        space.pretend_free(Some(roomy));
        assert!(matches!(w.append(b"x"), Err(CommitError::Refused)));
        // The checkpoint thread's work: a spare, then writes resume.
        assert!(w.shared().prepare_spare().unwrap());
        space.check(true);
        assert!(space.refusing().is_none());
        assert_eq!(w.append(&[4u8; 1000]).unwrap(), n + 1);
        drop(w);
        let (s, seen) = records(dir.path(), 0);
        assert_eq!((s.segments, seen.len() as u64), (2, n + 1));
        assert_eq!(seen.last().unwrap(), &(n + 1, vec![4u8; 1000]));
    }

    /// Under the reserve, even a record that fits its segment is refused:
    /// sled's copy of it needs room too.
    #[test]
    fn a_record_that_would_eat_into_the_reserve_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let space = Arc::new(Space::new(dir.path(), 1 << 20));
        assert!(space.keep_ballast().unwrap());
        let mut w = writer_with(dir.path(), 1 << 20, space.clone());
        assert_eq!(w.append(b"one").unwrap(), 1);
        space.pretend_free(Some(space.reserve() + 100));
        assert!(matches!(w.append(&[0u8; 200]), Err(CommitError::Refused)));
        assert!(space.refusing().unwrap().contains("disk is full"));
        let (_, seen) = records(dir.path(), 0);
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn appends_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 8192);
        for i in 1..=40u64 {
            assert_eq!(w.append(&vec![i as u8; 300 + i as usize]).unwrap(), i);
        }
        drop(w);
        let (s, seen) = records(dir.path(), 0);
        assert!(s.segments > 3, "{} segments", s.segments);
        assert_eq!(seen.len(), 40);
        for (i, (seq, p)) in seen.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1);
            assert_eq!(p.len(), 301 + i);
        }
        assert_eq!(s.torn, None);
        // Only the records above the checkpoint are visited.
        let (s, seen) = records(dir.path(), 25);
        assert_eq!((s.replayed, seen[0].0), (15, 26));
        // Reopened, appending goes on with the next seq.
        let mut w = writer(dir.path(), 8192);
        assert_eq!(w.append(b"more").unwrap(), 41);
    }

    #[test]
    fn a_torn_last_record_is_cut_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        for _ in 0..5 {
            w.append(&[7u8; 100]).unwrap();
        }
        let end = w.pos;
        w.append(&[9u8; 1000]).unwrap();
        drop(w);
        let seg = segments(dir.path()).unwrap()[0].1.clone();
        // The last record half written: its tail pages never made it.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0u8; 600], end + 500).unwrap();
        let (s, seen) = records(dir.path(), 0);
        assert_eq!(seen.len(), 5);
        let torn = s.torn.clone().unwrap();
        assert_eq!(torn.offset, end);
        let mut w = writer(dir.path(), 1 << 20);
        assert_eq!(w.append(b"after").unwrap(), 6);
        drop(w);
        let (s, seen) = records(dir.path(), 0);
        assert_eq!(s.torn, None);
        assert_eq!(seen.last().unwrap(), &(6, b"after".to_vec()));
    }

    #[test]
    fn a_damaged_middle_record_is_refused_naming_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        let mut offsets = Vec::new();
        for i in 0..5u8 {
            offsets.push(w.pos);
            w.append(&[i; 64]).unwrap();
        }
        drop(w);
        let seg = segments(dir.path()).unwrap()[0].1.clone();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0xff], offsets[2] + 20).unwrap();
        let err = scan(dir.path(), 0, &mut |_, _| Ok(())).unwrap_err();
        match &err {
            Damage::Corrupt { path, offset, .. } => {
                assert_eq!((path, *offset), (&seg, offsets[2]));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&seg.display().to_string()));
    }

    #[test]
    fn damage_followed_by_a_later_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 8192);
        for _ in 0..12 {
            w.append(&[1u8; 1500]).unwrap();
        }
        drop(w);
        let segs = segments(dir.path()).unwrap();
        assert!(segs.len() >= 3);
        // The whole last record of the first segment zeroed: alone, that
        // would look like a torn end; the later segments prove otherwise.
        let f = OpenOptions::new().write(true).open(&segs[0].1).unwrap();
        f.write_all_at(&[0u8; 8192 - HEADER as usize], HEADER)
            .unwrap();
        assert!(matches!(
            scan(dir.path(), 0, &mut |_, _| Ok(())),
            Err(Damage::Corrupt { .. })
        ));
    }

    #[test]
    fn bad_magic_or_version_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 16);
        w.append(b"x").unwrap();
        drop(w);
        let seg = segments(dir.path()).unwrap()[0].1.clone();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&99u32.to_le_bytes(), 8).unwrap();
        let err = scan(dir.path(), 0, &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("segment format 99"), "{err}");
        assert!(err.to_string().contains(&seg.display().to_string()));
    }

    #[test]
    fn a_gap_above_the_checkpoint_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 8192);
        for _ in 0..12 {
            w.append(&[5u8; 1500]).unwrap();
        }
        drop(w);
        let segs = segments(dir.path()).unwrap();
        fs::remove_file(&segs[1].1).unwrap();
        // With the index at 0 the missing segment's records are lost…
        assert!(matches!(
            scan(dir.path(), 0, &mut |_, _| Ok(())),
            Err(Damage::Corrupt { .. })
        ));
        // …with the index past them, the gap does not matter.
        let (_, seen) = records(dir.path(), segs[2].0 - 1);
        assert_eq!(seen.first().unwrap().0, segs[2].0);
    }
}
