//! The checkpoint file: the seq of the last completed checkpoint, which
//! tells an index that lost durable writes from one that never had them.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{crc32c, sync_dir};

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
