//! Base snapshots: the log's history up to a record, as the state it left.
//!
//! A compaction (`Store::compact_with`) writes `base-<seq, 20 digits>.snap`
//! beside the segments: every key and value the index held as of record
//! `seq`, in key order. From then on the log's history is that base plus
//! the records after `seq`, and the segments holding only records at or
//! below it are deleted, with the older bases. That is how a deleted
//! value leaves the log: no base holds it, and the records that wrote it
//! are gone.
//!
//! On disk: `MAGIC_BASE | version: u32 LE | seq: u64 LE`, then per entry
//! `key len: u32 LE | value len: u32 LE | key | value`, then the end:
//! `u32::MAX | entries: u64 LE | crc32c of everything before: u32 LE`.
//! Written to `<name>.tmp`, fsynced, renamed into place and the directory
//! fsynced: a base either exists whole or not at all (a leftover `.tmp`
//! is removed at open, [`remove_partial_bases`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{crc32c_update, sync_dir};

const MAGIC_BASE: [u8; 8] = *b"PARLORBS";
/// The layout described above.
const BASE_VERSION: u32 = 1;
const END: u32 = u32::MAX;
/// Entries longer than this are damage (a log record is at most 1 GiB).
const MAX_ENTRY: u64 = 1 << 30;

fn base_name(seq: u64) -> String {
    format!("base-{seq:020}.snap")
}

fn parse_base_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("base-")?.strip_suffix(".snap")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The bases in `dir`, oldest first: (seq, path).
pub fn bases(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(parse_base_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest base, if any: where the log's history starts.
pub fn latest_base(dir: &Path) -> io::Result<Option<(u64, PathBuf)>> {
    Ok(bases(dir)?.pop())
}

/// Removes a base a crash left half written.
pub fn remove_partial_bases(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_suffix(".tmp")
            .and_then(parse_base_name)
            .is_some()
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Writes a base, entry by entry, in key order.
pub struct BaseWriter {
    out: BufWriter<File>,
    crc: u32,
    entries: u64,
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
}

impl BaseWriter {
    /// Starts the base of the history up to record `seq` in `dir`.
    pub fn create(dir: &Path, seq: u64) -> io::Result<BaseWriter> {
        let path = dir.join(base_name(seq));
        let tmp = dir.join(format!("{}.tmp", base_name(seq)));
        let mut w = BaseWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(&tmp)?),
            crc: !0,
            entries: 0,
            dir: dir.to_path_buf(),
            tmp,
            path,
        };
        w.write(&MAGIC_BASE)?;
        w.write(&BASE_VERSION.to_le_bytes())?;
        w.write(&seq.to_le_bytes())?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c_update(self.crc, b);
        self.out.write_all(b)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let len = |n: usize| {
            u32::try_from(n)
                .ok()
                .filter(|&n| n != END)
                .ok_or_else(|| io::Error::other("a key or value over 4 GiB"))
        };
        let (k, v) = (len(key.len())?, len(value.len())?);
        self.write(&k.to_le_bytes())?;
        self.write(&v.to_le_bytes())?;
        self.write(key)?;
        self.write(value)?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the base and puts it in place, durably. Returns its path.
    /// Makes what was written so far reach the disk (its data: the base
    /// is whole only once `finish` syncs it all and renames it).
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }

    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.write(&END.to_le_bytes())?;
        self.write(&self.entries.to_le_bytes())?;
        let crc = self.crc ^ !0;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        sync_dir(&self.dir)?;
        Ok(self.path.clone())
    }
}

impl Drop for BaseWriter {
    /// An unfinished base is removed (a finished one was renamed).
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What [`read_base`] calls with each (key, value).
pub type Entry<'a> = dyn FnMut(&[u8], &[u8]) -> io::Result<()> + 'a;

fn damaged(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("base snapshot {} is damaged: {why}", path.display()),
    )
}

/// One pass over a base: its seq, then each entry to `visit`; checks the
/// end and the CRC.
fn pass(path: &Path, visit: &mut Entry<'_>) -> io::Result<(u64, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut crc = !0u32;
    let mut read = |r: &mut BufReader<File>, buf: &mut Vec<u8>, n: usize| -> io::Result<()> {
        buf.resize(n, 0);
        r.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => damaged(path, "it ends early"),
            _ => e,
        })?;
        crc = crc32c_update(crc, buf);
        Ok(())
    };
    let (mut head, mut key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    read(&mut r, &mut head, 20)?;
    if head[..8] != MAGIC_BASE {
        return Err(damaged(path, "not a parlor base snapshot"));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != BASE_VERSION {
        return Err(damaged(
            path,
            &format!("format {version}, this parlor reads {BASE_VERSION}"),
        ));
    }
    let seq = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    let mut entries = 0u64;
    loop {
        read(&mut r, &mut head, 4)?;
        let k = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if k == END {
            break;
        }
        read(&mut r, &mut head, 4)?;
        let v = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if u64::from(k) + u64::from(v) > MAX_ENTRY {
            return Err(damaged(path, "an entry's length is out of range"));
        }
        read(&mut r, &mut key, k as usize)?;
        read(&mut r, &mut value, v as usize)?;
        visit(&key, &value)?;
        entries += 1;
    }
    read(&mut r, &mut head, 8)?;
    let count = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let want = crc ^ !0;
    let mut tail = [0u8; 4];
    r.read_exact(&mut tail)
        .map_err(|_| damaged(path, "its checksum is missing"))?;
    if u32::from_le_bytes(tail) != want || count != entries {
        return Err(damaged(path, "its checksum does not match"));
    }
    if r.read(&mut tail)? != 0 {
        return Err(damaged(path, "bytes follow its end"));
    }
    Ok((seq, entries))
}

/// Reads a base: checked whole first (nothing is visited from a damaged
/// one), then each (key, value) to `visit`, in key order. Returns its seq
/// and the number of entries.
pub fn read_base(path: &Path, visit: &mut Entry<'_>) -> io::Result<(u64, u64)> {
    pass(path, &mut |_, _| Ok(()))?;
    pass(path, visit)
}

/// What [`trim`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub segments: usize,
    pub bases: usize,
    pub bytes: u64,
}

/// Removes what the base of record `seq` makes redundant: the segments
/// named at or below it (they hold only records at or below it, see
/// [`Writer::rotate`](super::Writer::rotate)) and the older bases; then
/// syncs the directory. Only once an index durably holds record `seq` or
/// later (the records are no longer needed to bring it forward).
pub fn trim(dir: &Path, seq: u64) -> io::Result<Trimmed> {
    let mut out = Trimmed::default();
    let mut remove = |path: &Path| -> io::Result<()> {
        out.bytes += fs::metadata(path).map_or(0, |m| m.len());
        fs::remove_file(path)
    };
    for (first, path) in super::segments(dir)? {
        if first <= seq {
            remove(&path)?;
            out.segments += 1;
        }
    }
    for (base, path) in bases(dir)? {
        if base < seq {
            remove(&path)?;
            out.bases += 1;
        }
    }
    if out.segments + out.bases > 0 {
        sync_dir(dir)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, seq: u64, entries: &[(&[u8], &[u8])]) -> PathBuf {
        let mut w = BaseWriter::create(dir, seq).unwrap();
        for (k, v) in entries {
            w.put(k, v).unwrap();
        }
        w.finish().unwrap()
    }

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn read_all(path: &Path) -> io::Result<(u64, Entries)> {
        let mut seen = Vec::new();
        let (seq, n) = read_base(path, &mut |k, v| {
            seen.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        assert_eq!(n as usize, seen.len());
        Ok((seq, seen))
    }

    #[test]
    fn a_base_reads_back_and_is_listed_by_seq() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(&[u8], &[u8])> = vec![(b"a", b""), (b"b", b"two"), (b"c", &[7u8; 5000])];
        write(dir.path(), 9, &entries);
        let p = write(dir.path(), 12, &entries[..1]);
        let (seq, seen) = read_all(&p).unwrap();
        assert_eq!((seq, seen.len()), (12, 1));
        let (seq, seen) = read_all(&dir.path().join(base_name(9))).unwrap();
        assert_eq!(seq, 9);
        let want: Entries = entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(seen, want);
        let listed: Vec<u64> = bases(dir.path()).unwrap().iter().map(|b| b.0).collect();
        assert_eq!(listed, [9, 12]);
        assert_eq!(latest_base(dir.path()).unwrap().unwrap().0, 12);
        // Segments do not count as bases, nor bases as segments.
        assert!(super::super::segments(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_or_cut_base_is_refused_before_anything_is_visited() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), 3, &[(b"key", b"value"), (b"more", b"values")]);
        let good = fs::read(&p).unwrap();
        for bad in [
            {
                let mut b = good.clone();
                b[30] ^= 1;
                b
            },
            good[..good.len() - 3].to_vec(),
            good[..25].to_vec(),
        ] {
            fs::write(&p, &bad).unwrap();
            let mut visited = 0;
            let err = read_base(&p, &mut |_, _| {
                visited += 1;
                Ok(())
            })
            .unwrap_err();
            assert!(err.to_string().contains("damaged"), "{err}");
            assert_eq!(visited, 0);
        }
    }

    #[test]
    fn an_unfinished_base_leaves_no_file_and_a_leftover_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BaseWriter::create(dir.path(), 4).unwrap();
        w.put(b"k", b"v").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        fs::write(dir.path().join(format!("{}.tmp", base_name(5))), b"x").unwrap();
        remove_partial_bases(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
