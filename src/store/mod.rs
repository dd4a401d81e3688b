//! The store: the only code that imports sled. Typed reads, typed write
//! batches, and `sync` (flush, then fsync). It knows nothing of ordering or
//! fan-out; `core::commit` is its only writer.
//!
//! Key layouts: `keys`. Value encoding: `codec`.

mod api_clients;
mod codec;
mod export;
pub mod keys;

pub use export::Record;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{de::DeserializeOwned, Serialize};

use crate::core::model::{
    Delivery, Message, MsgId, Participant, Room, RoomId, User, UserId, Webhook, Workspace,
};
use keys::*;

/// Bumped when the layout in `keys` changes incompatibly; checked at open.
pub const FORMAT_VERSION: u64 = 1;

/// A stored token: only the SHA-256 of the token string is the key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    pub user: UserId,
    pub created_ms: u64,
}

#[derive(Debug)]
pub enum OpenError {
    /// Another process (a running daemon) holds the store.
    Locked,
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked => write!(f, "the store is locked by another process"),
            OpenError::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<StoreError> for crate::core::error::Error {
    fn from(e: StoreError) -> Self {
        crate::core::error::Error::internal(e)
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What `open` found, for the startup log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub recovered: bool,
    pub last_user: u64,
    pub last_room: u64,
    pub last_msg: u64,
    /// Commit time of the newest message (Unix ms), 0 if none.
    pub last_msg_ms: u64,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    /// sled's data file; `sync` fsyncs it after sled's own flush.
    data_file: File,
    /// Blob files already fsynced (sled writes values too big for a log
    /// segment to files of their own, and never fsyncs them).
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Items read by range scans; lets tests prove a scan's cost.
    scanned: AtomicU64,
    /// The page-token key, made (and synced) at open.
    page_key: std::sync::OnceLock<[u8; 32]>,
}

/// sled writes its `conf` file and creates its files without ever fsyncing
/// them or the directory: after a power cut `conf` may be empty (sled then
/// warns and writes its defaults again). Synced once, at open.
fn sync_sled_files(dir: &Path) -> io::Result<()> {
    match File::open(dir.join("conf")) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir`, checks the format version and
    /// that the log's tail is consistent with its index.
    pub fn open(dir: &Path) -> std::result::Result<(Store, Summary), OpenError> {
        std::fs::create_dir_all(dir).map_err(|e| OpenError::Other(format!("{dir:?}: {e}")))?;
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            let s = e.to_string();
            if s.contains("lock") {
                OpenError::Locked
            } else {
                OpenError::Other(format!("opening the store in {dir:?}: {s}"))
            }
        })?;
        let data_file = File::open(dir.join("db"))
            .map_err(|e| OpenError::Other(format!("opening the data file: {e}")))?;
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            data_file,
            synced_blobs: Mutex::new(HashSet::new()),
            scanned: AtomicU64::new(0),
            page_key: std::sync::OnceLock::new(),
        };
        let other = |e: StoreError| OpenError::Other(e.0);
        store.check_format().map_err(other)?;
        let summary = store.summary().map_err(other)?;
        store.check_log_tail(summary.last_msg).map_err(other)?;
        // Made here, before the sync below, so tokens signed with it
        // survive any crash after open.
        store.page_token_key().map_err(other)?;
        store
            .sync()
            .and_then(|()| sync_sled_files(dir))
            .map_err(|e| OpenError::Other(format!("syncing the store: {e}")))?;
        Ok((store, summary))
    }

    fn check_format(&self) -> Result<()> {
        match self.db.get(FORMAT_VERSION_KEY)? {
            Some(v) => match read_u64(&v) {
                Some(FORMAT_VERSION) => Ok(()),
                other => Err(StoreError(format!(
                    "store format {other:?}, this parlor reads {FORMAT_VERSION}"
                ))),
            },
            None if self.db.is_empty() => {
                self.db
                    .insert(FORMAT_VERSION_KEY, &u64_value(FORMAT_VERSION))?;
                Ok(())
            }
            None => Err(StoreError("store has data but no format version".into())),
        }
    }

    /// The newest log entry must have its room-index entry: both are written
    /// by one atomic batch, so anything else means the files were damaged.
    fn check_log_tail(&self, last_msg: u64) -> Result<()> {
        if last_msg == 0 {
            return Ok(());
        }
        let Some((room, _)) = self.log_entry(last_msg)? else {
            return Err(StoreError(format!("log entry {last_msg} is unreadable")));
        };
        if self.db.get(two(ROOM_MSG, room, last_msg))?.is_none() {
            return Err(StoreError(format!(
                "message {last_msg} is in the log but not in room {room}"
            )));
        }
        Ok(())
    }

    fn last_id(&self, tag: u8) -> Result<u64> {
        Ok(self
            .db
            .scan_prefix([tag])
            .next_back()
            .transpose()?
            .map(|(k, _)| tail_u64(&k))
            .unwrap_or(0))
    }

    /// Makes everything applied so far durable: sled's flush (which ends in
    /// `sync_file_range`, not a full fsync), then `fsync` of the data file
    /// and of any new blob files. Only after this may anything be
    /// acknowledged.
    pub fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.data_file.sync_all()?;
        self.sync_blobs()
    }

    fn sync_blobs(&self) -> io::Result<()> {
        let dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            if synced.contains(&entry.file_name()) {
                continue;
            }
            match File::open(entry.path()) {
                Ok(f) => f.sync_all()?,
                // sled removes blobs it has rewritten; nothing to sync.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced.insert(entry.file_name());
            new = true;
        }
        if new {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.db.apply_batch(batch.0)?;
        Ok(())
    }

    /// How many items range scans have read since open.
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.db.get(key)? {
            Some(v) => codec::decode(&v).map(Some).map_err(StoreError),
            None => Ok(None),
        }
    }

    pub fn summary(&self) -> Result<Summary> {
        let last_msg = self.last_id(LOG)?;
        Ok(Summary {
            recovered: self.db.was_recovered(),
            last_user: self.last_id(USER)?,
            last_room: self.last_id(ROOM)?,
            last_msg,
            last_msg_ms: self.log_entry(last_msg)?.map_or(0, |(_, ms)| ms),
        })
    }

    /// The log's entry for a message id: (room, at_ms).
    fn log_entry(&self, id: u64) -> Result<Option<(u64, u64)>> {
        Ok(self.db.get(one(LOG, id))?.and_then(|v| log_value(&v)))
    }

    // ---- users and tokens ----

    pub fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get(&one(USER, id.0))
    }

    pub fn user_id_by_name(&self, username: &str) -> Result<Option<UserId>> {
        Ok(self
            .db
            .get(bytes(USERNAME, username.as_bytes()))?
            .and_then(|v| read_u64(&v))
            .map(UserId))
    }

    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>> {
        self.get(&bytes(TOKEN, hash))
    }

    // ---- rooms and membership ----

    pub fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.get(&one(ROOM, id.0))
    }

    pub fn participant(&self, room: RoomId, user: UserId) -> Result<Option<Participant>> {
        self.get(&two(PARTICIPANT, room.0, user.0))
    }

    /// A room's participants, by user id.
    pub fn participants(&self, room: RoomId) -> Result<Vec<(UserId, Participant)>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(one(PARTICIPANT, room.0)) {
            let (k, v) = kv?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push((UserId(tail_u64(&k)), codec::decode(&v).map_err(StoreError)?));
        }
        Ok(out)
    }

    /// The rooms a user is in, ascending by id.
    pub fn rooms_of(&self, user: UserId) -> Result<Vec<RoomId>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(one(MEMBERSHIP, user.0)) {
            let (k, _) = kv?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(RoomId(tail_u64(&k)));
        }
        Ok(out)
    }

    pub fn dm(&self, a: UserId, b: UserId) -> Result<Option<RoomId>> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Ok(self
            .db
            .get(two(DM, lo.0, hi.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }

    // ---- messages ----

    pub fn message(&self, id: MsgId) -> Result<Option<Message>> {
        let Some((room, _)) = self.log_entry(id.0)? else {
            return Ok(None);
        };
        self.get(&two(ROOM_MSG, room, id.0))
    }

    /// The smallest message id in `1..=upto` committed at or after `ms`;
    /// `upto + 1` if none. A binary search over the log (commit times never
    /// decrease as ids grow): O(log n) seeks, whatever the history's size.
    pub fn first_id_at(&self, ms: u64, upto: MsgId) -> Result<MsgId> {
        let (mut lo, mut hi) = (1u64, upto.0.saturating_add(1));
        let mut found = hi;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first existing id at or after `mid` (ids may have gaps).
            let next = self
                .db
                .range(one(LOG, mid)..one(LOG, hi))
                .next()
                .transpose()?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            match next.and_then(|(k, v)| Some((tail_u64(&k), log_value(&v)?.1))) {
                Some((id, at)) if at >= ms => {
                    found = id;
                    hi = mid;
                }
                Some((id, _)) => lo = id + 1,
                None => hi = mid,
            }
        }
        Ok(MsgId(found))
    }

    /// A room's messages with `after < id <= upto`, oldest first, read
    /// lazily: the cost is the messages taken, never the room's history.
    pub fn room_messages(
        &self,
        room: RoomId,
        after: MsgId,
        upto: MsgId,
    ) -> impl DoubleEndedIterator<Item = Result<Message>> + '_ {
        let lo = two(ROOM_MSG, room.0, after.0.saturating_add(1));
        let hi = two(ROOM_MSG, room.0, upto.0);
        use std::ops::Bound::{Excluded, Included};
        let range = if after >= upto {
            (Included(lo), Excluded(lo))
        } else {
            (Included(lo), Included(hi))
        };
        self.db.range::<[u8; 17], _>(range).map(move |kv| {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let (_, v) = kv?;
            codec::decode(&v).map_err(StoreError)
        })
    }

    // ---- patients, search, webhooks ----

    pub fn patient_chat(&self, patient: UserId) -> Result<Option<RoomId>> {
        Ok(self
            .db
            .get(one(PATIENT_CHAT, patient.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }

    fn ids_under(&self, prefix: Vec<u8>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, _) = kv?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(tail_u64(&k));
        }
        Ok(out)
    }

    /// Staff and admins of a workspace: a patient chat's care team.
    pub fn care_team(&self, ws: &Workspace) -> Result<Vec<UserId>> {
        Ok(self
            .ids_under(workspace(WS_STAFF, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(UserId)
            .collect())
    }

    /// The patient chats of a workspace.
    pub fn patient_chats(&self, ws: &Workspace) -> Result<Vec<RoomId>> {
        Ok(self
            .ids_under(workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(RoomId)
            .collect())
    }

    /// Messages of `room` with `after < id < below` containing every one
    /// of `words`, at most `limit`, newest first (or, with `ascending`,
    /// oldest first): a leapfrog intersection of the words' postings, one
    /// seek per step, so the cost follows the rarest word's postings in
    /// range and the hits, not the room's size.
    pub fn search(
        &self,
        room: RoomId,
        words: &[String],
        (after, below): (MsgId, MsgId),
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<MsgId>> {
        let prefixes: Vec<Vec<u8>> = words.iter().map(|w| postings(room.0, w)).collect();
        let n = prefixes.len();
        let mut hits = Vec::new();
        if n == 0 || below.0 <= after.0.saturating_add(1) {
            return Ok(hits);
        }
        let (first, last) = (after.0 + 1, below.0 - 1);
        let mut cur = if ascending { first } else { last };
        let (mut agreed, mut i) = (0, 0);
        while hits.len() < limit {
            let p = &prefixes[i];
            // The posting nearest to `cur` in the walking direction.
            let next = if ascending {
                self.db.range(with_id(p, cur)..=with_id(p, last)).next()
            } else {
                self.db
                    .range(with_id(p, first)..=with_id(p, cur))
                    .next_back()
            };
            let Some((k, _)) = next.transpose()? else {
                break;
            };
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let id = tail_u64(&k);
            if id != cur {
                cur = id;
                agreed = 0;
            }
            agreed += 1;
            if agreed == n {
                hits.push(MsgId(cur));
                match (ascending, cur) {
                    (true, c) if c >= last => break,
                    (false, c) if c <= first => break,
                    (true, c) => cur = c + 1,
                    (false, c) => cur = c - 1,
                }
                agreed = 0;
            }
            i = (i + 1) % n;
        }
        Ok(hits)
    }

    pub fn webhook(&self, ws: &Workspace) -> Result<Option<Webhook>> {
        self.get(&workspace(WEBHOOK, &ws.tenant, &ws.instance))
    }

    /// Pending webhook deliveries in message order, from `from` on.
    pub fn outbox(&self, from: MsgId, limit: usize) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .range(one(OUTBOX, from.0)..one(OUTBOX + 1, 0))
            .take(limit)
        {
            let (_, v) = kv?;
            out.push(codec::decode(&v).map_err(StoreError)?);
        }
        Ok(out)
    }

    /// The key that authenticates page tokens; made once, at open.
    pub fn page_token_key(&self) -> Result<[u8; 32]> {
        if let Some(k) = self.page_key.get() {
            return Ok(*k);
        }
        use rand::RngCore;
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        // compare_and_swap: two first uses agree on one key.
        let _ = self
            .db
            .compare_and_swap(PAGE_KEY_KEY, None as Option<&[u8]>, Some(&fresh[..]))?;
        let v = self
            .db
            .get(PAGE_KEY_KEY)?
            .ok_or_else(|| StoreError("page token key vanished".into()))?;
        let key: [u8; 32] = v
            .as_ref()
            .try_into()
            .map_err(|_| StoreError("page token key is damaged".into()))?;
        Ok(*self.page_key.get_or_init(|| key))
    }

    /// The id of a room's newest message, if any.
    pub fn last_message_in(&self, room: RoomId) -> Result<Option<MsgId>> {
        Ok(self
            .db
            .scan_prefix(one(ROOM_MSG, room.0))
            .next_back()
            .transpose()?
            .map(|(k, _)| MsgId(tail_u64(&k))))
    }
}

fn log_value(v: &[u8]) -> Option<(u64, u64)> {
    Some((read_u64(v.get(..8)?)?, read_u64(v.get(8..16)?)?))
}

/// Writes to apply atomically. Built by `core::commit` jobs only.
#[derive(Default)]
pub struct WriteBatch(sled::Batch);

impl WriteBatch {
    pub fn put_care_team_member(&mut self, ws: &Workspace, user: UserId) {
        self.0.insert(
            with_id(&workspace(WS_STAFF, &ws.tenant, &ws.instance), user.0),
            &[],
        );
    }

    pub fn put_patient_chat(&mut self, patient: UserId, ws: &Workspace, room: RoomId) {
        self.0
            .insert(&one(PATIENT_CHAT, patient.0), &u64_value(room.0));
        self.0.insert(
            with_id(
                &workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance),
                room.0,
            ),
            &[],
        );
    }

    pub fn put_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.0.insert(with_id(&postings(room.0, w), id.0), &[]);
        }
    }

    pub fn remove_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.0.remove(with_id(&postings(room.0, w), id.0));
        }
    }

    pub fn put_webhook(&mut self, ws: &Workspace, hook: &Webhook) {
        self.put(&workspace(WEBHOOK, &ws.tenant, &ws.instance), hook);
    }

    pub fn put_delivery(&mut self, d: &Delivery) {
        self.put(&one(OUTBOX, d.message.0), d);
    }

    pub fn remove_delivery(&mut self, message: MsgId) {
        self.0.remove(&one(OUTBOX, message.0));
    }

    fn put<T: Serialize>(&mut self, key: &[u8], value: &T) {
        self.0.insert(key, codec::encode(value));
    }

    pub fn put_user(&mut self, user: &User) {
        self.put(&one(USER, user.id.0), user);
        self.0.insert(
            bytes(USERNAME, user.username.as_bytes()),
            &u64_value(user.id.0),
        );
    }

    pub fn put_token(&mut self, hash: &[u8; 32], rec: &TokenRecord) {
        self.put(&bytes(TOKEN, hash), rec);
    }

    pub fn remove_token(&mut self, hash: &[u8; 32]) {
        self.0.remove(bytes(TOKEN, hash));
    }

    pub fn put_room(&mut self, room: &Room) {
        self.put(&one(ROOM, room.id.0), room);
    }

    /// Adds or updates a participant, and the user→room membership index.
    pub fn put_participant(&mut self, room: RoomId, user: UserId, p: &Participant) {
        self.put(&two(PARTICIPANT, room.0, user.0), p);
        self.0.insert(&two(MEMBERSHIP, user.0, room.0), &[]);
    }

    pub fn put_dm(&mut self, a: UserId, b: UserId, room: RoomId) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.0.insert(&two(DM, lo.0, hi.0), &u64_value(room.0));
    }

    /// Appends a message to the global log and its room's index.
    pub fn put_message(&mut self, m: &Message) {
        let mut log = [0u8; 16];
        log[..8].copy_from_slice(&m.room.0.to_be_bytes());
        log[8..].copy_from_slice(&m.at_ms.to_be_bytes());
        self.0.insert(&one(LOG, m.id.0), &log);
        self.put(&two(ROOM_MSG, m.room.0, m.id.0), m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{RoomKind, Workspace};

    fn msg(id: u64, room: u64) -> Message {
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
    fn reopen(dir: &Path) -> (Store, Summary) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir) {
                Err(OpenError::Locked) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => return r.unwrap_or_else(|e| panic!("reopen: {e}")),
            }
        }
    }

    #[test]
    fn reopen_resumes_ids_from_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, sum) = Store::open(dir.path()).unwrap();
            assert_eq!(sum.last_msg, 0);
            let mut b = WriteBatch::default();
            b.put_room(&Room {
                id: RoomId(4),
                kind: RoomKind::Group,
                name: None,
                workspace: Workspace::default(),
                created_ms: 0,
                patient: None,
            });
            for id in [1, 2, 300] {
                b.put_message(&msg(id, 4));
            }
            s.apply(b).unwrap();
            s.sync().unwrap();
        }
        let (s, sum) = reopen(dir.path());
        assert_eq!((sum.last_msg, sum.last_room), (300, 4));
        assert_eq!(s.message(MsgId(2)).unwrap().unwrap().text, "m2");
        assert!(s.message(MsgId(3)).unwrap().is_none());
    }

    #[test]
    fn room_messages_respect_both_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for id in 1..=10 {
            b.put_message(&msg(id, 1 + id % 2));
        }
        s.apply(b).unwrap();
        let ids = |after, upto| -> Vec<u64> {
            s.room_messages(RoomId(1), MsgId(after), MsgId(upto))
                .map(|m| m.unwrap().id.0)
                .collect()
        };
        assert_eq!(ids(0, 10), vec![2, 4, 6, 8, 10]);
        assert_eq!(ids(4, 8), vec![6, 8]);
        assert_eq!(ids(8, 8), Vec::<u64>::new());
        assert_eq!(ids(9, 3), Vec::<u64>::new());
        assert_eq!(s.last_message_in(RoomId(2)).unwrap(), Some(MsgId(9)));
    }

    #[test]
    fn first_id_at_finds_the_time_bound_across_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        // ids 1..=40 with gaps at multiples of 7; times 10, 20, 20, 40, …
        for id in (1..=40u64).filter(|i| i % 7 != 0) {
            let mut m = msg(id, 1);
            m.at_ms = (id / 2) * 10;
            b.put_message(&m);
        }
        s.apply(b).unwrap();
        let upto = MsgId(40);
        let brute = |ms: u64| {
            (1..=40u64)
                .filter(|i| i % 7 != 0 && (i / 2) * 10 >= ms)
                .min()
                .unwrap_or(41)
        };
        for ms in [0, 1, 10, 15, 20, 30, 35, 70, 195, 200, 201, 10_000] {
            assert_eq!(
                s.first_id_at(ms, upto).unwrap(),
                MsgId(brute(ms)),
                "ms {ms}"
            );
        }
        // Bounded by `upto`: later ids are not considered.
        assert_eq!(s.first_id_at(150, MsgId(20)).unwrap(), MsgId(21));
    }

    #[test]
    fn search_intersects_postings_newest_first_below_a_border() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let w = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut b = WriteBatch::default();
        // "a" in every id, "b" in multiples of 3, "c" in multiples of 5.
        for id in 1..=60u64 {
            let mut ws = vec!["a"];
            if id % 3 == 0 {
                ws.push("b");
            }
            if id % 5 == 0 {
                ws.push("c");
            }
            b.put_postings(RoomId(1), &w(&ws), MsgId(id));
        }
        b.put_postings(RoomId(2), &w(&["b", "c"]), MsgId(61));
        s.apply(b).unwrap();
        let ids = |words: &[&str], below: u64, limit| -> Vec<u64> {
            s.search(RoomId(1), &w(words), (MsgId(0), MsgId(below)), limit, false)
                .unwrap()
                .into_iter()
                .map(|m| m.0)
                .collect()
        };
        let up = |words: &[&str], after: u64, limit| -> Vec<u64> {
            s.search(
                RoomId(1),
                &w(words),
                (MsgId(after), MsgId(u64::MAX)),
                limit,
                true,
            )
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect()
        };
        assert_eq!(up(&["b", "c"], 0, 10), [15, 30, 45, 60]);
        assert_eq!(up(&["c", "b"], 15, 2), [30, 45]);
        assert_eq!(up(&["a"], 59, 10), [60]);
        assert_eq!(ids(&["b", "c"], u64::MAX, 10), [60, 45, 30, 15]);
        assert_eq!(ids(&["c", "b", "a"], 45, 10), [30, 15]);
        assert_eq!(ids(&["b"], 10, 2), [9, 6]);
        assert_eq!(ids(&["b", "zzz"], u64::MAX, 10), Vec::<u64>::new());
        assert_eq!(ids(&[], u64::MAX, 10), Vec::<u64>::new());
        // Cost follows the rarer word ("c": 12 postings, two seeks each at
        // most), not the room's 60 messages.
        let before = s.scanned();
        ids(&["b", "c"], u64::MAX, 10);
        assert!(
            s.scanned() - before <= 2 * 12 + 2,
            "scanned {}",
            s.scanned() - before
        );
    }

    #[test]
    fn page_token_key_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        assert_eq!(s.page_token_key().unwrap(), s.page_token_key().unwrap());
    }

    #[test]
    fn second_open_of_a_locked_store_says_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(OpenError::Locked)));
    }
}
