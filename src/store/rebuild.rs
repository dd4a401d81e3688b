//! When sled's files cannot be opened (a power cut can leave them so, see
//! `wal`): they are moved aside, kept for inspection, and the index is
//! rebuilt from the log's history — its base, if a compaction wrote one,
//! and the records after it (`history`) — if the log holds the whole
//! history; otherwise open refuses, saying why.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::index::{self, DAMAGED_PREFIX};
use super::{wal, wal_dir, OpenError};

/// sled's files cannot be opened: if the log holds the whole history (a
/// base and every record after it, or every record from 1, reading
/// cleanly), moves the current index's files to `DIR/index-damaged-<unix
/// ms>/` (kept for inspection; only a compaction deletes them, as they
/// may hold purged data) so that a fresh index is rebuilt, at the top of
/// `DIR`, from the log. Otherwise refuses, saying why.
pub(super) fn move_index_aside(dir: &Path, why: &str) -> std::result::Result<PathBuf, OpenError> {
    let wal = wal_dir(dir);
    let refuse = |more: String| {
        OpenError::Other(format!(
            "the store's index in {} cannot be opened ({why}), and {more}; restore from a \
             backup (`parlor restore`)",
            dir.display()
        ))
    };
    let base = wal::latest_base(&wal)
        .map_err(|e| refuse(format!("its log's base cannot be read: {e}")))?;
    let after = base.as_ref().map_or(0, |b| b.0);
    if let Some((_, path)) = &base {
        wal::read_base(path, &mut |_, _| Ok(()))
            .map_err(|e| refuse(format!("it cannot be rebuilt: {e}")))?;
    }
    let scan = wal::scan(&wal, after, &mut |_, _| Ok(()))
        .map_err(|e| refuse(format!("it cannot be rebuilt: {e}")))?;
    // From a base, `scan` found the records after it contiguous.
    if base.is_none() && scan.first_seq != Some(1) {
        return Err(refuse(format!(
            "the write-ahead log in {} does not hold the whole history to rebuild it from",
            wal.display()
        )));
    }
    let aside = dir.join(format!("{DAMAGED_PREFIX}{}", unix_ms_now()));
    let io = |e: io::Error| OpenError::Other(format!("moving the damaged index aside: {e}"));
    let current = index::current(dir).map_err(io)?;
    if current == dir {
        std::fs::create_dir(&aside).map_err(io)?;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            if index::is_top_index_file(&name.to_string_lossy()) {
                std::fs::rename(entry.path(), aside.join(&name)).map_err(io)?;
            }
        }
    } else {
        // The index's own directory goes aside whole; the fresh one is
        // made at the top.
        std::fs::rename(&current, &aside).map_err(io)?;
        index::point_to_top(dir).map_err(io)?;
    }
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    tracing::error!(
        cause = why,
        moved_to = %aside.display(),
        base = after,
        records = scan.records,
        "the store's index could not be opened; rebuilding it from the write-ahead log"
    );
    Ok(aside)
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use crate::model::MsgId;
    use crate::store::testing::{commit, format_1_store, msg, reopen, try_reopen};
    use crate::store::{wal, wal_dir, Store, WriteBatch};
    use std::path::Path;

    /// sled's data file scribbled over, as a power cut that reordered its
    /// unsynced writes leaves it (sled then refuses or panics).
    fn damage_index(dir: &Path) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("db"))
            .unwrap();
        let len = f.metadata().unwrap().len();
        use std::os::unix::fs::FileExt;
        let mut x = 0x9e37_79b9u32;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        f.write_all_at(&junk, 0).unwrap();
        f.sync_all().unwrap();
    }

    #[test]
    fn an_index_sled_cannot_open_is_rebuilt_from_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let key;
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            key = s.page_token_key().unwrap();
            for id in 1..=50 {
                let mut b = WriteBatch::default();
                b.put_message(&msg(id, 3));
                commit(&s, vec![b]);
            }
            s.checkpoint().unwrap();
        }
        damage_index(dir.path());
        let (s, sum) = reopen(dir.path());
        let aside = sum.rebuilt_from.expect("rebuilt");
        assert!(aside.join("db").exists(), "the damaged files are kept");
        assert_eq!(sum.last_msg, 50);
        assert_eq!(s.message(MsgId(50)).unwrap().unwrap().text, "m50");
        assert_eq!(s.page_token_key().unwrap(), key);
    }

    #[test]
    fn a_migrated_store_can_be_rebuilt_too() {
        let dir = tempfile::tempdir().unwrap();
        format_1_store(dir.path(), &[1, 2]);
        drop(reopen(dir.path()));
        damage_index(dir.path());
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some());
        assert_eq!(s.message(MsgId(2)).unwrap().unwrap().text, "m2");
    }

    #[test]
    fn a_damaged_index_without_the_whole_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(dir.path()).unwrap();
            s.checkpoint().unwrap();
        }
        // The segments gone, the checkpoint record kept.
        for (_, seg) in wal::segments(&wal_dir(dir.path())).unwrap() {
            std::fs::remove_file(seg).unwrap();
        }
        damage_index(dir.path());
        let Err(err) = try_reopen(dir.path()) else {
            panic!("opened a damaged index with no log to rebuild it");
        };
        assert!(err.contains("parlor restore"), "{err}");
    }
}
