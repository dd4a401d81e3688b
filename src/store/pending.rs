//! The group commit being built: each job's batch staged where only the
//! writer's thread reads it ([`Store::stage`]), and the reads that see
//! those writes before sled has them (`raw_get`, `get`, `prefix`), so a
//! job reads what the jobs before it in the group wrote. `commit` takes
//! the writes once the group's log record is durable, in the order they
//! were staged: a job stages a record before what is derived from it (a
//! room before its patient-chat index entry), so a reader outside the
//! group that finds the derived key in sled finds its record too.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use super::{codec, Result, Store, StoreError, WriteBatch};

/// The group commit being built (see `Store::pending`).
#[derive(Default)]
pub(super) struct Pending {
    thread: Option<std::thread::ThreadId>,
    /// Last write per key (`None` removes), with the position at which the
    /// key was first staged in the group.
    writes: BTreeMap<Vec<u8>, (usize, Option<Vec<u8>>)>,
}

impl Store {
    /// Stages a job's batch in the group commit being built: from now on
    /// the calling thread's reads see it (and the next jobs'), nobody
    /// else's. [`Store::commit`] writes the group to the log, then to
    /// sled. Called by one thread at a time (the sequencer, or open and
    /// restore while no sequencer runs).
    pub fn stage(&self, batch: WriteBatch) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.thread = Some(std::thread::current().id());
        for (key, write) in batch.into_writes() {
            let next = p.writes.len();
            // A key written again keeps its first position: whatever was
            // derived from it since was staged after it.
            p.writes.entry(key).or_insert((next, None)).1 = write;
        }
    }

    /// Takes the group's staged writes, leaving none, in the order they
    /// were first staged: to apply them to sled once the group is
    /// durable, or to drop them if it was refused.
    pub(super) fn take_pending(&self) -> impl ExactSizeIterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        let writes = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .writes,
        );
        let mut staged: Vec<_> = writes.into_iter().collect();
        staged.sort_unstable_by_key(|(_, (at, _))| *at);
        staged.into_iter().map(|(k, (_, w))| (k, w))
    }

    /// The calling thread's pending writes, if it is building a group.
    fn pending_here(&self) -> Option<std::sync::MutexGuard<'_, Pending>> {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (p.thread == Some(std::thread::current().id()) && !p.writes.is_empty()).then_some(p)
    }

    /// One key: the caller's pending write, else sled's.
    pub(super) fn raw_get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>> {
        let key = key.as_ref();
        if let Some(p) = self.pending_here() {
            if let Some((_, w)) = p.writes.get(key) {
                return Ok(w.as_deref().map(sled::IVec::from));
            }
        }
        Ok(self.db().get(key)?)
    }

    /// The caller's pending writes with keys in `lo..=hi` (`None`: removed).
    pub(super) fn pending_range(&self, lo: &[u8], hi: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut out = BTreeMap::new();
        if let Some(p) = self.pending_here() {
            for (k, (_, w)) in p.writes.range(lo.to_vec()..=hi.to_vec()) {
                out.insert(k.clone(), w.clone());
            }
        }
        out
    }

    /// Every key under `prefix`, ascending, with the caller's pending
    /// writes merged in. For the small keyspaces jobs read whole (a
    /// room's participants, a care team).
    pub(super) fn prefix(&self, prefix: &[u8]) -> Result<Vec<(sled::IVec, sled::IVec)>> {
        let mut out = Vec::new();
        for kv in self.db().scan_prefix(prefix) {
            out.push(kv?);
        }
        let Some(p) = self.pending_here() else {
            return Ok(out);
        };
        let mut pending = p
            .writes
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        if pending.peek().is_none() {
            return Ok(out);
        }
        // Both ascending: one merge, a pending write replacing (or
        // removing) sled's value of the same key.
        let mut merged = Vec::with_capacity(out.len() + 1);
        let mut durable = out.into_iter().peekable();
        loop {
            let order = match (durable.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((k, _)), Some((pk, _))) => k.as_ref().cmp(pk.as_slice()),
            };
            if order == std::cmp::Ordering::Equal {
                durable.next();
            }
            if order == std::cmp::Ordering::Less {
                merged.extend(durable.next());
            } else if let Some((k, (_, Some(v)))) = pending.next() {
                merged.push((
                    sled::IVec::from(k.as_slice()),
                    sled::IVec::from(v.as_slice()),
                ));
            }
        }
        Ok(merged)
    }

    /// One key, decoded: the caller's pending write, else sled's.
    pub(super) fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.raw_get(key)? {
            Some(v) => codec::decode(&v).map(Some).map_err(StoreError),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Participant, RoomId, UserId};
    use crate::store::keys::{two, PARTICIPANT};
    use crate::store::testing::{commit, fresh};
    use crate::store::WriteBatch;

    /// A group reaches sled in the order its writes were staged, not in
    /// key order: a record staged before what is derived from it lands
    /// first. A key written again keeps its first place and its last value.
    #[test]
    fn a_group_is_applied_in_staging_order_each_key_once() {
        let (_dir, s) = fresh();
        let mut before = WriteBatch::default();
        before.insert(b"zz-order-a", b"a0");
        s.write_through(before).unwrap();
        let mut events = s.db().db.watch_prefix(b"zz-order-");
        let mut first = WriteBatch::default();
        first.insert(b"zz-order-c", b"c1");
        first.insert(b"zz-order-a", b"a1");
        let mut second = WriteBatch::default();
        second.insert(b"zz-order-b", b"b1");
        second.insert(b"zz-order-c", b"c2");
        second.remove(b"zz-order-a");
        commit(&s, vec![first, second]);
        let applied: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..3)
            .map(
                |_| match events.next_timeout(std::time::Duration::from_secs(5)) {
                    Ok(sled::Event::Insert { key, value }) => (key.to_vec(), Some(value.to_vec())),
                    Ok(sled::Event::Remove { key }) => (key.to_vec(), None),
                    Err(e) => panic!("no apply seen: {e:?}"),
                },
            )
            .collect();
        let want: [(&[u8], Option<&[u8]>); 3] = [
            (b"zz-order-c", Some(b"c2")),
            (b"zz-order-a", None),
            (b"zz-order-b", Some(b"b1")),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(applied, want);
        assert_eq!(s.raw_get(b"zz-order-c").unwrap().unwrap(), b"c2"[..]);
        assert!(s.raw_get(b"zz-order-a").unwrap().is_none());
    }

    /// A job reads a small keyspace whole with the group's pending writes
    /// merged in order: added, replaced and removed keys.
    #[test]
    fn prefix_reads_merge_pending_puts_and_removes_in_key_order() {
        let (_dir, s) = fresh();
        let p = |ms: u64| Participant {
            joined_ms: ms,
            ..Participant::default()
        };
        let mut b = WriteBatch::default();
        for u in [1, 3, 5, 7] {
            b.put_participant(RoomId(9), UserId(u), &p(u));
        }
        b.put_participant(RoomId(10), UserId(2), &p(2));
        s.write_through(b).unwrap();
        let mut b = WriteBatch::default();
        b.put_participant(RoomId(9), UserId(2), &p(20));
        b.put_participant(RoomId(9), UserId(3), &p(30));
        b.remove(&two(PARTICIPANT, 9, 5));
        b.put_participant(RoomId(9), UserId(8), &p(80));
        s.stage(b);
        let got: Vec<(u64, u64)> = s
            .participants(RoomId(9))
            .unwrap()
            .into_iter()
            .map(|(u, p)| (u.0, p.joined_ms))
            .collect();
        assert_eq!(got, [(1, 1), (2, 20), (3, 30), (7, 7), (8, 80)]);
        assert_eq!(s.participants(RoomId(10)).unwrap().len(), 1);
    }
}
