//! Power cuts during a compaction (`Store::compact`): the store is opened
//! in this process on the power-cut filesystem (`tests/common/lazyfs.rs`,
//! see `tests/powercut.rs`, which cuts a running daemon's); a thread commits messages while a compaction runs, and
//! the power is cut from inside the filesystem at its n-th write or fsync
//! (seeded), so in the middle of the compaction (building, writing the
//! base, switching, deleting) or of a commit. Remounted, the store must
//! open with every acknowledged message, no file on the disk may hold what
//! a compaction that returned had deleted, and it compacts again.
//!
//! Skipped (with a message) where FUSE cannot be mounted, as `powercut.rs`
//! is. `PARLOR_COMPACT_CUTS` (default 8) and `PARLOR_POWERCUT_SEED`.

#[path = "../../tests/common/lazyfs.rs"]
#[allow(dead_code)]
mod lazyfs;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lazyfs::{CutMode, LazyFs, Trigger};

use crate::model::{Message, MsgId, RoomId, UserId};
use crate::store::keys::{one, two, LOG, ROOM_MSG};
use crate::store::{OpenError, Options, Store, WriteBatch};

fn mount_or_skip(disk: &Path, at: &Path, mode: CutMode) -> Option<LazyFs> {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED: no /dev/fuse, so no power-cut filesystem here");
        return None;
    }
    match lazyfs::mount_with(disk, at, false, mode) {
        Ok(fs) => Some(fs),
        Err(e) => {
            let not_allowed = matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
            );
            if not_allowed && std::env::var("CI").as_deref() != Ok("true") {
                eprintln!("SKIPPED: cannot mount a FUSE filesystem here: {e}");
                None
            } else {
                panic!("mounting the FUSE test filesystem at {at:?} failed: {e}");
            }
        }
    }
}

fn opts() -> Options {
    Options {
        cache_bytes: 8 << 20,
        segment_bytes: 64 * 1024,
    }
}

fn open(dir: &Path) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_with(dir, &opts()) {
            Err(OpenError::Locked) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r.unwrap_or_else(|e| panic!("open: {e}")).0,
        }
    }
}

fn text(id: u64) -> String {
    format!("message {id} {}", "x".repeat(200))
}

fn message(id: u64) -> Message {
    Message {
        id: MsgId(id),
        room: RoomId(1),
        sender: UserId(1),
        text: text(id),
        at_ms: id,
        author: None,
        is_read: false,
        archived: false,
    }
}

/// Commits `b` as the sequencer does; its seq, or the error.
fn apply(s: &Store, b: WriteBatch) -> Result<u64, String> {
    let mut record = Vec::new();
    b.encode_into(&mut record);
    s.stage(b);
    s.commit(&record).map_err(|e| e.to_string())
}

/// Commits message `id`.
fn commit(s: &Store, id: u64) -> Result<u64, String> {
    let mut b = WriteBatch::default();
    b.put_message(&message(id));
    apply(s, b)
}

/// Every file under `dir` (recursively) whose raw bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                out.push(path);
            }
        }
    }
    out
}

fn seed() -> u64 {
    std::env::var("PARLOR_POWERCUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

fn next(x: &mut u64, below: u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x % below
}

#[test]
fn power_cuts_during_compaction_lose_no_acknowledged_commit() {
    let seed = seed();
    eprintln!("PARLOR_POWERCUT_SEED={seed}");
    let cuts = std::env::var("PARLOR_COMPACT_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8u64);
    let mut rng = seed;
    let disk = tempfile::tempdir().unwrap();
    let at = tempfile::tempdir().unwrap();
    let store_dir = at.path().join("store");
    // Every acknowledged message id, across cycles.
    let mut acked: Vec<u64> = Vec::new();
    // What compactions that returned deleted: gone from the disk for good.
    let mut purged: Vec<String> = Vec::new();
    let mut next_id = 1u64;
    for cycle in 0..cuts {
        // Odd cycles: what a real disk may do (unsynced writes kept in
        // part, reordered, torn; directory operations undone unless their
        // directory was fsynced).
        let mode = if cycle % 2 == 1 {
            CutMode::lossy(seed.wrapping_add(cycle))
        } else {
            CutMode::default()
        };
        let Some(fs) = mount_or_skip(disk.path(), at.path(), mode) else {
            return;
        };
        let s = Arc::new(open(&store_dir));
        for &id in &acked {
            let m = s.message(MsgId(id)).unwrap();
            assert_eq!(
                m.map(|m| m.text),
                Some(text(id)),
                "cycle {cycle}: acknowledged message {id} lost (seed {seed})"
            );
        }
        for marker in &purged {
            let found = files_holding(disk.path(), marker);
            assert!(
                found.is_empty(),
                "{marker} survived its compaction in {found:?}"
            );
        }
        // History to compact, some of it deleted.
        for _ in 0..150 {
            if commit(&s, next_id).is_ok() {
                acked.push(next_id);
            }
            next_id += 1;
        }
        let marker = format!("purged-in-cycle-{cycle}-zq");
        let mut b = WriteBatch::default();
        let mut m = message(next_id);
        m.text = marker.clone();
        b.put_message(&m);
        apply(&s, b).unwrap();
        let mut b = WriteBatch::default();
        b.remove(&one(LOG, next_id));
        b.remove(&two(ROOM_MSG, 1, next_id));
        apply(&s, b).unwrap();
        next_id += 1;
        // A compaction here takes some hundreds of writes and fsyncs (and
        // the commits meanwhile more): most cuts land in it, some after.
        let trigger = match next(&mut rng, 2) {
            0 => Trigger::Write(1 + next(&mut rng, 3000)),
            _ => Trigger::Fsync(1 + next(&mut rng, 300)),
        };
        fs.arm(trigger);
        let stop = Arc::new(AtomicBool::new(false));
        let first = next_id;
        let writer = std::thread::spawn({
            let (s, stop) = (s.clone(), stop.clone());
            move || {
                let mut ok = Vec::new();
                let mut id = first;
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match commit(&s, id) {
                        Ok(_) => ok.push(id),
                        Err(_) => break,
                    }
                    id += 1;
                }
                (ok, id)
            }
        });
        let compacted = s.compact();
        if compacted.is_ok() {
            purged.push(marker);
        }
        std::thread::sleep(Duration::from_millis(20));
        fs.freeze();
        stop.store(true, Ordering::Relaxed);
        let (ok, after) = writer.join().unwrap();
        acked.extend(ok);
        next_id = after + 1;
        eprintln!(
            "cycle {cycle} ({mode:?}, cut at {trigger:?}): compaction {:?}",
            compacted.map(|c| c.base_seq).map_err(|e| e.to_string())
        );
        // sled may panic on the dead disk as it lets go (a flush): the
        // process a real power cut ends.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(s)));
        fs.unmount().unwrap();
    }
    // A last mount: everything acknowledged is there, and a compaction
    // with no cut goes through.
    let Some(fs) = mount_or_skip(disk.path(), at.path(), CutMode::default()) else {
        return;
    };
    let s = open(&store_dir);
    for &id in &acked {
        assert_eq!(
            s.message(MsgId(id)).unwrap().map(|m| m.text),
            Some(text(id)),
            "acknowledged message {id} lost (seed {seed})"
        );
    }
    for marker in &purged {
        let found = files_holding(disk.path(), marker);
        assert!(
            found.is_empty(),
            "{marker} survived its compaction in {found:?}"
        );
    }
    s.compact().unwrap();
    drop(s);
    let s = open(&store_dir);
    let last = *acked.last().unwrap();
    assert!(s.message(MsgId(last)).unwrap().is_some());
    drop(s);
    fs.unmount().unwrap();
}
