//! Messages in the store: the global log (`LOG`: id → room and commit
//! time) and each room's index of its messages (`ROOM_MSG`), both written
//! by one `put_message`. Point reads, range scans whose cost is the
//! messages taken, a time bound found by binary search over the log, and
//! the newest of a room with the writer's pending writes merged in.

use std::sync::atomic::Ordering;

use super::keys::*;
use super::{codec, Result, Store, StoreError, WriteBatch};
use crate::model::{Message, MsgId, RoomId};

impl Store {
    /// The log's entry for a message id: (room, at_ms).
    pub(super) fn log_entry(&self, id: u64) -> Result<Option<(u64, u64)>> {
        Ok(self.raw_get(one(LOG, id))?.and_then(|v| log_value(&v)))
    }

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
                .db()
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
        self.db().range::<[u8; 17], _>(range).map(move |kv| {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let (_, v) = kv?;
            codec::decode(&v).map_err(StoreError)
        })
    }

    /// A room's newest `n` messages after `after`, oldest first, with the
    /// calling thread's pending writes merged in: what the writer adds to
    /// a chat's snapshot read before its job. Cost: at most `n` plus the
    /// room's pending writes.
    pub fn newest_messages(&self, room: RoomId, after: MsgId, n: usize) -> Result<Vec<Message>> {
        let lo = two(ROOM_MSG, room.0, after.0.saturating_add(1));
        let hi = two(ROOM_MSG, room.0, u64::MAX);
        let mut merged = self.pending_range(&lo, &hi);
        // Enough of sled's newest that `n` survive the pending removals.
        let want = n + merged.values().filter(|w| w.is_none()).count();
        for kv in self.db().range(lo..=hi).rev().take(want) {
            let (k, v) = kv?;
            self.scanned.fetch_add(1, Ordering::Relaxed);
            merged.entry(k.to_vec()).or_insert_with(|| Some(v.to_vec()));
        }
        let newest: Vec<Vec<u8>> = merged.into_values().rev().flatten().take(n).collect();
        newest
            .iter()
            .rev()
            .map(|v| codec::decode(v).map_err(StoreError))
            .collect()
    }

    /// A room's oldest messages committed before `before_ms`, at most
    /// `limit`: what a purge deletes next. Commit times never decrease as
    /// ids grow, so the scan stops at the first newer one: its cost is the
    /// messages taken, whatever the room's history.
    pub fn messages_before(
        &self,
        room: RoomId,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        for m in self.room_messages(room, MsgId(0), MsgId(u64::MAX)) {
            let m = m?;
            if m.at_ms >= before_ms || out.len() == limit {
                break;
            }
            out.push(m);
        }
        Ok(out)
    }

    /// Keeps ids up to `upto` from being given again although their
    /// messages are gone (a restored backup whose newest messages were
    /// deleted before it was taken): the log's newest entry is `upto`,
    /// marked deleted, at the newest entry's time. Only while no
    /// sequencer runs.
    pub fn reserve_ids(&self, upto: MsgId) -> Result<()> {
        let newest = self
            .db()
            .scan_prefix([LOG])
            .next_back()
            .transpose()?
            .map(|(k, v)| (tail_u64(&k), log_value(&v).map_or(0, |(_, at)| at)));
        let (last, at_ms) = newest.unwrap_or((0, 0));
        if upto.0 <= last {
            return Ok(());
        }
        let mut b = WriteBatch::default();
        b.insert(&one(LOG, upto.0), &log_bytes(RoomId(0), at_ms, true));
        self.write_through(b)
    }

    /// The id of a room's newest message, if any.
    pub fn last_message_in(&self, room: RoomId) -> Result<Option<MsgId>> {
        Ok(self
            .db()
            .scan_prefix(one(ROOM_MSG, room.0))
            .next_back()
            .transpose()?
            .map(|(k, _)| MsgId(tail_u64(&k))))
    }
}

/// A `LOG` value, as `put_message` writes it: (room, at_ms), and after
/// them a 1 once the message was deleted (`delete_message`).
fn log_value(v: &[u8]) -> Option<(u64, u64)> {
    Some((read_u64(v.get(..8)?)?, read_u64(v.get(8..16)?)?))
}

/// Whether a `LOG` value marks a deleted message.
pub(super) fn log_deleted(v: &[u8]) -> bool {
    v.get(16) == Some(&1)
}

fn log_bytes(room: RoomId, at_ms: u64, deleted: bool) -> Vec<u8> {
    let mut log = Vec::with_capacity(17);
    log.extend_from_slice(&room.0.to_be_bytes());
    log.extend_from_slice(&at_ms.to_be_bytes());
    if deleted {
        log.push(1);
    }
    log
}

impl WriteBatch {
    /// Appends a message to the global log and its room's index.
    pub fn put_message(&mut self, m: &Message) {
        self.insert(&one(LOG, m.id.0), &log_bytes(m.room, m.at_ms, false));
        self.put(&two(ROOM_MSG, m.room.0, m.id.0), m);
    }

    /// Deletes a message (retention, erasure): its record goes; its log
    /// entry stays, marked deleted, holding no text — so its id is never
    /// given again and time bounds over the log still hold. What is
    /// derived from it goes too (`core::derived::on_delete`).
    pub fn delete_message(&mut self, m: &Message) {
        self.insert(&one(LOG, m.id.0), &log_bytes(m.room, m.at_ms, true));
        self.remove(&two(ROOM_MSG, m.room.0, m.id.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{fresh, msg};

    /// The writer's chat snapshot: the room's newest, with the group's
    /// pending messages merged in for the staging thread only.
    #[test]
    fn newest_messages_merge_the_callers_pending_writes() {
        let (_dir, s) = fresh();
        let mut b = WriteBatch::default();
        for (id, room) in [(1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 5)] {
            b.put_message(&msg(id, room));
        }
        s.write_through(b).unwrap();
        let mut b = WriteBatch::default();
        b.put_message(&msg(7, 4));
        s.stage(b);
        let ids = |v: Vec<Message>| v.iter().map(|m| m.id.0).collect::<Vec<_>>();
        let newest =
            |room, after, n| ids(s.newest_messages(RoomId(room), MsgId(after), n).unwrap());
        assert_eq!(newest(4, 0, 3), [4, 5, 7]);
        assert_eq!(newest(4, 4, 9), [5, 7]);
        assert_eq!(newest(4, 7, 3), Vec::<u64>::new());
        assert_eq!(newest(5, 0, 3), [6]);
        assert_eq!(newest(4, 0, 0), Vec::<u64>::new());
        let elsewhere = std::thread::scope(|t| {
            t.spawn(|| ids(s.newest_messages(RoomId(4), MsgId(0), 3).unwrap()))
                .join()
                .unwrap()
        });
        assert_eq!(elsewhere, [3, 4, 5]);
    }

    #[test]
    fn room_messages_respect_both_bounds() {
        let (_dir, s) = fresh();
        let mut b = WriteBatch::default();
        for id in 1..=10 {
            b.put_message(&msg(id, 1 + id % 2));
        }
        s.write_through(b).unwrap();
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
        let (_dir, s) = fresh();
        let mut b = WriteBatch::default();
        // ids 1..=40 with gaps at multiples of 7; times 10, 20, 20, 40, …
        for id in (1..=40u64).filter(|i| i % 7 != 0) {
            let mut m = msg(id, 1);
            m.at_ms = (id / 2) * 10;
            b.put_message(&m);
        }
        s.write_through(b).unwrap();
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
}
