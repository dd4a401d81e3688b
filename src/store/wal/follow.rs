//! Following the log while it is appended to: committed records, read in
//! order from wherever the last read stopped (a compaction catching its
//! new index up with the records committed while it built, `compact`).
//!
//! Unlike [`scan`](super::scan), which reads a log no one writes (at
//! open), this reads only records the caller knows are committed, and
//! remembers its place, so that reading the few newest ones costs a few
//! small reads whatever the segment's size. A record it cannot find whole
//! is an error: it was committed, so it must be there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::scan::MAX_PAYLOAD;
use super::{align8, record_crc, segments, HEADER, MAGIC, REC_HEAD, VERSION};

/// Read ahead at a time.
const CHUNK: usize = 256 << 10;

pub struct Follower {
    dir: PathBuf,
    /// The segment being read, and its path.
    file: Option<(File, PathBuf)>,
    /// Offset of the next record in `file`.
    off: u64,
    /// The seq of the next record to visit.
    next: u64,
    /// Bytes of `file` from `buf_off`, read ahead.
    buf: Vec<u8>,
    buf_off: u64,
}

impl Follower {
    /// Follows the log in `dir` from record `after + 1`.
    pub fn new(dir: &Path, after: u64) -> Follower {
        Follower {
            dir: dir.to_path_buf(),
            file: None,
            off: HEADER,
            next: after + 1,
            buf: Vec::new(),
            buf_off: 0,
        }
    }

    /// The seq of the last record visited (or `after`).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Visits every record from the next one up to `upto` (all committed:
    /// durable and whole), in order.
    pub fn read_to(
        &mut self,
        upto: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        // The segment whose records ended before the next one: the next
        // one must be in a later segment.
        let mut left: Option<(PathBuf, u64)> = None;
        while self.next <= upto {
            if self.file.is_none() {
                self.open_segment()?;
                if let (Some((path, off)), Some((_, now))) = (&left, &self.file) {
                    if path == now {
                        return Err(io::Error::other(format!(
                            "committed record {} is not whole in {} at offset {off}",
                            self.next,
                            path.display(),
                        )));
                    }
                }
            }
            match self.record()? {
                Some((seq, payload, len)) if seq <= self.next => {
                    if seq == self.next {
                        visit(seq, &payload)?;
                        self.next += 1;
                    }
                    self.off += len;
                }
                // This segment's records end: a later one holds the next.
                _ => left = self.file.take().map(|(_, p)| (p, self.off)),
            }
        }
        Ok(())
    }

    /// Opens the segment that holds record `next`: the newest one named
    /// at or below it.
    fn open_segment(&mut self) -> io::Result<()> {
        let segs = segments(&self.dir)?;
        let Some((_, path)) = segs
            .into_iter()
            .rev()
            .find(|(first, _)| *first <= self.next)
        else {
            return Err(io::Error::other(format!(
                "committed record {} is in no segment of {}",
                self.next,
                self.dir.display()
            )));
        };
        let file = File::open(&path)?;
        let mut head = [0u8; 12];
        file.read_exact_at(&mut head, 0)?;
        if head[..8] != MAGIC
            || u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) != VERSION
        {
            return Err(io::Error::other(format!(
                "{} is not a write-ahead log segment this parlor reads",
                path.display()
            )));
        }
        self.file = Some((file, path));
        self.off = HEADER;
        self.buf.clear();
        Ok(())
    }

    /// `n` bytes at `off` of the segment: from what was read ahead, or
    /// read now (`fresh`: never from what was read ahead, which may
    /// predate an append). `None` if the file is shorter.
    fn bytes(&mut self, off: u64, n: usize, fresh: bool) -> io::Result<Option<&[u8]>> {
        let covered =
            !fresh && off >= self.buf_off && off + n as u64 <= self.buf_off + self.buf.len() as u64;
        if !covered {
            let (file, _) = self.file.as_ref().expect("a segment is open");
            self.buf.resize(n.max(CHUNK), 0);
            let mut got = 0;
            while got < self.buf.len() {
                match file.read_at(&mut self.buf[got..], off + got as u64)? {
                    0 => break,
                    k => got += k,
                }
            }
            self.buf.truncate(got);
            self.buf_off = off;
            if got < n {
                return Ok(None);
            }
        }
        let start = (off - self.buf_off) as usize;
        Ok(Some(&self.buf[start..start + n]))
    }

    /// The whole record at `off`, if there is one: (seq, payload, its
    /// length on disk). What was read ahead is tried first, then the file.
    fn record(&mut self) -> io::Result<Option<(u64, Vec<u8>, u64)>> {
        for fresh in [false, true] {
            if let Some(r) = self.record_from(fresh)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn record_from(&mut self, fresh: bool) -> io::Result<Option<(u64, Vec<u8>, u64)>> {
        let off = self.off;
        let Some(head) = self.bytes(off, REC_HEAD, fresh)? else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if len == 0 || len as u64 > MAX_PAYLOAD {
            return Ok(None);
        }
        let total = REC_HEAD + len as usize;
        let Some(whole) = self.bytes(off, total, false)? else {
            return Ok(None);
        };
        let payload = &whole[REC_HEAD..];
        if record_crc(len, seq, payload) != crc {
            return Ok(None);
        }
        Ok(Some((seq, payload.to_vec(), align8(total as u64))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::tests::writer;

    #[test]
    fn follows_records_across_segments_as_they_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 8192);
        let payload = |i: u64| vec![i as u8; 200 + (i as usize * 37) % 900];
        for i in 1..=10 {
            w.append(&payload(i)).unwrap();
        }
        let mut f = Follower::new(dir.path(), 3);
        let mut seen = Vec::new();
        f.read_to(7, &mut |s, p| {
            seen.push((s, p.to_vec()));
            Ok(())
        })
        .unwrap();
        // Appends after the follower read ahead are found too.
        for i in 11..=40 {
            w.append(&payload(i)).unwrap();
            f.read_to(i, &mut |s, p| {
                seen.push((s, p.to_vec()));
                Ok(())
            })
            .unwrap();
        }
        assert!(segments(dir.path()).unwrap().len() > 3);
        let want: Vec<(u64, Vec<u8>)> = (4..=40).map(|i| (i, payload(i))).collect();
        assert_eq!(seen, want);
        assert_eq!(f.last(), 40);
        // A record that was never appended is an error, not the end.
        let err = f.read_to(41, &mut |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("record 41"), "{err}");
    }

    #[test]
    fn a_rotated_segment_is_followed_into_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        for _ in 0..3 {
            w.append(b"before").unwrap();
        }
        assert_eq!(w.rotate(), 3);
        w.append(b"after").unwrap();
        let segs = segments(dir.path()).unwrap();
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 4]);
        let mut f = Follower::new(dir.path(), 0);
        let mut seen = Vec::new();
        f.read_to(4, &mut |s, p| {
            seen.push((s, p.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.last().unwrap(), &(4, b"after".to_vec()));
        assert_eq!(seen.len(), 4);
    }
}
