//! Reading the log back: every record in seq order, each checked.
//!
//! Reading ([`scan`]) stops at the first record that is not whole. If no
//! valid record follows it anywhere, it is the torn end of the last write
//! (a power cut mid-append): open zeroes it and says so. If a valid record
//! follows, the log is damaged in the middle: open refuses, naming the
//! file and offset, and `parlor check` reports it without changing
//! anything.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{align8, record_crc, segments, HEADER, MAGIC, REC_HEAD, VERSION};

/// Payloads larger than this are damage, not records.
pub(super) const MAX_PAYLOAD: u64 = 1 << 30;

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
/// in the sequence below `after + 1` is no damage (segments a compaction
/// deleted, their records in a base). Changes nothing on disk.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::tests::{records, writer};

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

    /// Twelve records of 1,500 bytes in 8 KiB segments: three or more.
    fn three_segments(dir: &Path) -> Vec<(u64, PathBuf)> {
        let mut w = writer(dir, 8192);
        for _ in 0..12 {
            w.append(&[1u8; 1500]).unwrap();
        }
        drop(w);
        let segs = segments(dir).unwrap();
        assert!(segs.len() >= 3);
        segs
    }

    /// Whether a scan of the whole log finds it damaged.
    fn damaged(dir: &Path) -> bool {
        matches!(
            scan(dir, 0, &mut |_, _| Ok(())),
            Err(Damage::Corrupt { .. })
        )
    }

    #[test]
    fn damage_followed_by_a_later_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let segs = three_segments(dir.path());
        // The whole last record of the first segment zeroed: alone, that
        // would look like a torn end; the later segments prove otherwise.
        let f = OpenOptions::new().write(true).open(&segs[0].1).unwrap();
        f.write_all_at(&[0u8; 8192 - HEADER as usize], HEADER)
            .unwrap();
        assert!(damaged(dir.path()));
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
        let segs = three_segments(dir.path());
        fs::remove_file(&segs[1].1).unwrap();
        // With the index at 0 the missing segment's records are lost…
        assert!(damaged(dir.path()));
        // …with the index past them, the gap does not matter.
        let (_, seen) = records(dir.path(), segs[2].0 - 1);
        assert_eq!(seen.first().unwrap().0, segs[2].0);
    }
}
