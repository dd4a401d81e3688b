//! `Store::compact`'s tests: deleted bytes gone from every file, the same
//! data after, commits going on meanwhile, a crash after each step.

use super::*;
use crate::model::{MsgId, RoomId};
use crate::store::keys::{one, postings, two, with_id, LOG, ROOM_MSG, WAL_SEQ_KEY};
use crate::store::testing::{commit, msg};
use crate::store::{wal_dir, Options, WriteBatch};
use std::path::PathBuf;

const DELETED: &str = "purged-7f3a9c-secret";
/// A search word: it is in a key (a posting), not a value.
const DELETED_WORD: &str = "zqxmarkerword";
const OVERWRITTEN: &str = "overwritten-2b81e4-secret";

fn opts() -> Options {
    Options {
        cache_bytes: 8 << 20,
        segment_bytes: 64 * 1024,
    }
}

fn open(dir: &Path) -> Store {
    Store::open_with(dir, &opts()).unwrap().0
}

/// Opens a store this process just dropped (see `testing::reopen`).
fn reopen(dir: &Path) -> (Store, crate::store::Summary) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_with(dir, &opts()) {
            Err(OpenError::Locked) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r.unwrap_or_else(|e| panic!("reopen: {e}")),
        }
    }
}

fn put(s: &Store, id: u64, text: &str) {
    let mut m = msg(id, 1);
    m.text = text.to_owned();
    let mut b = WriteBatch::default();
    b.put_message(&m);
    b.put_postings(RoomId(1), &[format!("w{id}")], MsgId(id));
    commit(s, vec![b]);
}

fn filler(s: &Store, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        put(s, id, &format!("filler message {id} {}", "x".repeat(300)));
    }
}

/// Message 1001 holding `DELETED` (and a posting of `DELETED_WORD`),
/// then deleted; message 1002 holding `OVERWRITTEN`, then replaced.
fn write_and_delete(s: &Store) {
    let mut m = msg(1001, 1);
    m.text = format!("the text {DELETED} to purge");
    let mut b = WriteBatch::default();
    b.put_message(&m);
    b.put_postings(RoomId(1), &[DELETED_WORD.into()], MsgId(1001));
    commit(s, vec![b]);
    put(s, 1002, &format!("first {OVERWRITTEN}"));
    filler(s, 1003..=1010);
    // sled's files hold them too, not only the log.
    s.checkpoint().unwrap();
    let mut b = WriteBatch::default();
    b.remove(&one(LOG, 1001));
    b.remove(&two(ROOM_MSG, 1, 1001));
    b.remove_postings(RoomId(1), &[DELETED_WORD.into()], MsgId(1001));
    commit(s, vec![b]);
    put(s, 1002, "the replacement text");
}

fn secrets() -> [&'static str; 3] {
    [DELETED, DELETED_WORD, OVERWRITTEN]
}

/// Every file under `dir` (recursively) whose raw bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
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

fn assert_gone(dir: &Path) {
    for s in secrets() {
        let found = files_holding(dir, s);
        assert!(found.is_empty(), "{s} is still in {found:?}");
    }
}

/// Everything the index holds but its marker, in key order.
fn data(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.db()
        .iter()
        .map(|kv| kv.unwrap())
        .filter(|(k, _)| k != WAL_SEQ_KEY)
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// The entries at the top of the store's directory, sorted.
fn top(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn deleted_and_overwritten_bytes_leave_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    filler(&s, 1..=300);
    write_and_delete(&s);
    filler(&s, 1011..=1020);
    for secret in secrets() {
        assert!(
            !files_holding(dir.path(), secret).is_empty(),
            "{secret} was never on disk: the test would prove nothing"
        );
    }
    let before = data(&s);
    let segments = wal::segments(&wal_dir(dir.path())).unwrap().len();
    assert!(segments > 2, "{segments} segments");
    let c = s.compact().unwrap();
    println!("compaction: {c:?}");
    assert_eq!(c.base_seq, s.log_position().0);
    assert!(c.segments_removed >= segments - 1, "{c:?}");
    assert!(c.bytes_after < c.bytes_before, "{c:?}");
    assert_gone(dir.path());
    assert_eq!(data(&s), before);
    assert!(!files_holding(dir.path(), "the replacement text").is_empty());
    assert_eq!(
        top(dir.path()),
        ["INDEX", &index::dir_name(c.base_seq), "wal"]
    );
    // Nothing committed since: a second one has nothing to do.
    let again = s.compact().unwrap();
    assert_eq!((again.base_seq, again.segments_removed), (c.base_seq, 0));
    // The store goes on: commits, checkpoints, reopens.
    filler(&s, 1021..=1030);
    s.checkpoint().unwrap();
    let before = data(&s);
    drop(s);
    let (s, sum) = reopen(dir.path());
    assert_eq!(sum.last_msg, 1030);
    assert_eq!(data(&s), before);
    assert_eq!(
        s.message(MsgId(1002)).unwrap().unwrap().text,
        "the replacement text"
    );
    assert!(s.message(MsgId(1001)).unwrap().is_none());
    assert_gone(dir.path());
}

/// sled's data file scribbled over (see `rebuild`'s tests).
fn damage(dir: &Path) {
    let db = index::current(dir).unwrap().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::write(&db, vec![0x5au8; len as usize]).unwrap();
}

#[test]
fn after_a_compaction_the_index_is_rebuilt_from_the_base_and_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    filler(&s, 1..=100);
    write_and_delete(&s);
    s.compact().unwrap();
    filler(&s, 1011..=1050);
    s.checkpoint().unwrap();
    let before = data(&s);
    drop(s);
    damage(dir.path());
    let (s, sum) = reopen(dir.path());
    assert!(sum.rebuilt_from.is_some());
    assert_eq!(data(&s), before);
    assert!(!top(dir.path()).contains(&"INDEX".to_owned()));
    // The next compaction deletes the damaged index it kept aside.
    let c = s.compact().unwrap();
    assert_eq!(c.damaged_removed, 1);
    assert_eq!(data(&s), before);
    assert_gone(dir.path());
    assert_eq!(wal::bases(&wal_dir(dir.path())).unwrap().len(), 1);
    drop(s);
    let (s, _) = reopen(dir.path());
    assert_eq!(data(&s), before);
}

/// An index older than the base, whose records the compaction deleted
/// (an old copy put back): rebuilt from the base, not refused.
#[test]
fn an_index_older_than_the_base_is_rebuilt_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    filler(&s, 1..=100);
    s.checkpoint().unwrap();
    for name in ["conf", "db"] {
        std::fs::copy(dir.path().join(name), old.path().join(name)).unwrap();
    }
    write_and_delete(&s);
    let c = s.compact().unwrap();
    let before = data(&s);
    drop(s);
    std::fs::remove_file(dir.path().join("INDEX")).unwrap();
    std::fs::remove_dir_all(dir.path().join(index::dir_name(c.base_seq))).unwrap();
    for name in ["conf", "db"] {
        std::fs::copy(old.path().join(name), dir.path().join(name)).unwrap();
    }
    let (s, sum) = reopen(dir.path());
    assert!(sum.rebuilt_from.is_some());
    assert_eq!(data(&s), before);
}

/// The base is read from the index in use while commits go on (new keys,
/// rewritten and removed ones): with the records after it replayed, the
/// store holds what it held, reopened and rebuilt from the base alike.
#[test]
fn commits_go_on_while_compactions_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    filler(&s, 1..=200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (s, stop) = (s.clone(), stop.clone());
        move || {
            let mut seqs = Vec::new();
            let mut id = 200;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                id += 1;
                let mut m = msg(id, 1);
                m.text = format!("live {id}");
                let mut b = WriteBatch::default();
                b.put_message(&m);
                // Keys the base is being read from change under it too:
                // an older message rewritten, an older posting removed.
                let old = id % 200 + 1;
                let mut edited = msg(old, 1);
                edited.text = format!("edited by {id}");
                b.put_message(&edited);
                b.remove_postings(RoomId(1), &[format!("w{old}")], MsgId(old));
                let mut record = Vec::new();
                b.encode_into(&mut record);
                s.stage(b);
                seqs.push(s.commit(&record).unwrap());
                // Readers on other threads meanwhile.
                assert!(s.message(MsgId(id)).unwrap().is_some());
            }
            (id, seqs)
        }
    });
    let (mut pauses, mut caught_up) = (Vec::new(), 0);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(30));
        let c = s.compact().unwrap();
        pauses.push(c.pause);
        caught_up += c.caught_up;
    }
    // Commits did land while they ran.
    assert!(caught_up > 0, "no commit while compacting");
    std::thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let (last, seqs) = writer.join().unwrap();
    println!(
        "pauses while committing: {pauses:?}; {} commits",
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs not continuous"
    );
    assert!(last > 210, "only {last} committed");
    for id in 1..=last {
        assert!(s.message(MsgId(id)).unwrap().is_some(), "message {id} lost");
    }
    let before = data(&s);
    let s = Arc::try_unwrap(s).ok().unwrap();
    drop(s);
    let (s, sum) = reopen(dir.path());
    assert_eq!(sum.last_msg, last);
    assert_eq!(data(&s), before);
    drop(s);
    damage(dir.path());
    let (s, sum) = reopen(dir.path());
    assert!(sum.rebuilt_from.is_some());
    assert_eq!(data(&s), before);
}

/// Stopped after each step, as a crash would stop it: the reopened
/// store holds the same data and none of the compaction's leftovers;
/// once the deleted data's compaction went through the switch (there
/// or, after reopening, by a compaction run anew), it is gone.
#[test]
fn a_compaction_stopped_at_any_step_leaves_a_store_that_opens_whole() {
    for step in [
        Step::BaseWritten,
        Step::Built,
        Step::Switched,
        Step::OldIndexRemoved,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        filler(&s, 1..=100);
        write_and_delete(&s);
        let before = data(&s);
        s.compact_until(step, &|w| s.swap_here(w)).unwrap();
        drop(s);
        let (s, _) = reopen(dir.path());
        assert_eq!(data(&s), before, "{step:?}");
        let names = top(dir.path());
        let indexes = names.iter().filter(|n| n.starts_with("index-")).count();
        assert!(indexes <= 1, "{step:?}: {names:?}");
        assert!(!names.contains(&index::BUILDING.to_owned()), "{step:?}");
        let has_pointer = names.contains(&"INDEX".to_owned());
        assert_eq!(indexes == 1, has_pointer, "{step:?}: {names:?}");
        if has_pointer {
            assert!(!names.contains(&"db".to_owned()), "{step:?}: {names:?}");
        }
        if step >= Step::Switched {
            assert_gone(dir.path());
        } else {
            s.compact().unwrap();
            assert_gone(dir.path());
            assert_eq!(data(&s), before, "{step:?}");
        }
        filler(&s, 2000..=2010);
        let before = data(&s);
        drop(s);
        let (s, _) = reopen(dir.path());
        assert_eq!(data(&s), before, "{step:?}");
        drop(s);
        damage(dir.path());
        let (s, sum) = reopen(dir.path());
        assert!(sum.rebuilt_from.is_some(), "{step:?}");
        assert_eq!(data(&s), before, "{step:?}");
    }
}

#[test]
fn postings_and_the_page_key_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let key = s.page_token_key().unwrap();
    filler(&s, 1..=20);
    s.compact().unwrap();
    let hits = s
        .search(RoomId(1), &["w7".into()], (MsgId(0), MsgId(100)), 10, true)
        .unwrap();
    assert_eq!(hits, [MsgId(7)]);
    assert!(s
        .db()
        .get(with_id(&postings(1, "w7"), 7))
        .unwrap()
        .is_some());
    drop(s);
    let (s, _) = reopen(dir.path());
    assert_eq!(s.page_token_key().unwrap(), key);
}
