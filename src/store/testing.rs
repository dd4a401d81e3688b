//! Helpers for the store's unit tests: a new store, a message, a reopen that waits
//! for sled to let go of its lock, a group commit, a format-1 store.

use std::path::Path;

use super::keys::{u64_value, FORMAT_VERSION_KEY, WAL_SEQ_KEY};
use super::{wal_dir, OpenError, Store, Summary, WriteBatch};
use crate::model::{Message, MsgId, RoomId, UserId};

/// A new store in a temporary directory, removed when it is dropped.
pub(super) fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// Message `id` in `room`, committed at `id` ms, its text `m{id}`.
pub(super) fn msg(id: u64, room: u64) -> Message {
    Message {
        id: MsgId(id),
        room: RoomId(room),
        sender: UserId(1),
        text: format!("m{id}"),
        at_ms: id,
        author: None,
        is_read: false,
        archived: false,
    }
}

/// Opens a store this process just dropped. sled lets go of its file
/// lock when its last background task ends, a moment after the drop,
/// so a reopen in the same process may briefly see `Locked` (a new
/// process, e.g. a restarted daemon, never does: exit drops the lock).
pub(super) fn reopen(dir: &Path) -> (Store, Summary) {
    try_reopen(dir).unwrap_or_else(|e| panic!("reopen: {e}"))
}

/// [`reopen`] that may be refused: the refusal's message.
pub(super) fn try_reopen(dir: &Path) -> std::result::Result<(Store, Summary), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(OpenError::Locked) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.map_err(|e| e.to_string()),
        }
    }
}

/// Commits `batches` as one group, as the sequencer does.
pub(super) fn commit(s: &Store, batches: Vec<WriteBatch>) {
    let mut record = Vec::new();
    for b in batches {
        b.encode_into(&mut record);
        s.stage(b);
    }
    s.commit(&record).unwrap();
}

/// What a format-1 parlor left in `dir`: messages `ids` of room 1 in
/// sled, and no log, no marker.
pub(super) fn format_1_store(dir: &Path, ids: &[u64]) {
    {
        let (s, _) = Store::open(dir).unwrap();
        let mut b = WriteBatch::default();
        for &id in ids {
            b.put_message(&msg(id, 1));
        }
        s.write_through(b).unwrap();
        s.db().insert(FORMAT_VERSION_KEY, &u64_value(1)).unwrap();
        s.db().remove(WAL_SEQ_KEY).unwrap();
        s.checkpoint().unwrap();
    }
    std::fs::remove_dir_all(wal_dir(dir)).unwrap();
}
