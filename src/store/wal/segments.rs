//! Segments and appending: naming and listing the segments, the spare
//! made ahead of need, and the appending end ([`Writer`]).
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

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{align8, record_crc, sync_dir, HEADER, MAGIC, REC_HEAD, VERSION};
use crate::store::pace::Pace;
use crate::store::space::Space;
use crate::store::CommitError;

const SPARE: &str = "spare.tmp";
const SPARE_PARTIAL: &str = "spare.partial";

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

/// Removes the spare segment a last run left (with [`lock`](super::lock) held). Done
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

/// A spare segment is made durable this much at a time.
const SPARE_STEP: usize = 256 * 1024;

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
            // Made durable a step at a time, with a pause after each
            // (`Pace`): 16 MiB written at once and left to one `fsync`,
            // or only pushed to the disk (`sync_file_range`), is a burst
            // the log's next `fdatasync` waits behind — its cache flush
            // then carries the zeros (measured: the second with a spare
            // made had a p99 of 10–35 ms at 5,000 msg/s, the others 2–3).
            let zeros = vec![0u8; SPARE_STEP];
            let mut pace = Pace::every(SPARE_STEP);
            let mut off = HEADER;
            while off < self.segment_bytes {
                let n = (self.segment_bytes - off).min(SPARE_STEP as u64);
                f.write_all_at(&zeros[..n as usize], off)?;
                pace.wrote(n as usize, || f.sync_data())?;
                off += n;
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
    pub(super) pos: u64,
    /// Bytes `file` is known to hold (appends past it change its size).
    len: u64,
    next_seq: u64,
    /// The next record starts a new segment (see [`Writer::rotate`]).
    rotate: bool,
    buf: Vec<u8>,
}

impl Writer {
    /// Opens the log in `dir` for appending after a [`scan`](super::scan) (whose torn
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
                    rotate: false,
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
                    rotate: false,
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

    /// Makes the next record start a new segment, and returns the seq of
    /// the last record appended: from now on, every segment named at or
    /// below it holds only records at or below it (what a compaction
    /// deletes once its base holds them). Nothing is written here: the
    /// next append takes the spare, as when a segment is full.
    pub fn rotate(&mut self) -> u64 {
        if self.pos > HEADER {
            self.rotate = true;
        }
        self.next_seq - 1
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
        if self.pos > HEADER && (self.rotate || self.pos + total > self.shared.segment_bytes) {
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
            self.rotate = false;
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
    use crate::store::wal::tests::{records, writer, writer_with};

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
}
