//! Search postings in the store (`SEARCH`): one empty key per word of a
//! message, `room word 0 id`, so a word's postings in a room read in id
//! order and a search is an intersection of range seeks.

use std::sync::atomic::Ordering;

use super::keys::*;
use super::{Result, Store, WriteBatch};
use crate::model::{MsgId, RoomId};

impl Store {
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
                self.db().range(with_id(p, cur)..=with_id(p, last)).next()
            } else {
                self.db()
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
}

impl WriteBatch {
    pub fn put_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.insert(&with_id(&postings(room.0, w), id.0), &[]);
        }
    }

    pub fn remove_postings(&mut self, room: RoomId, words: &[String], id: MsgId) {
        for w in words.iter().filter(|w| w.len() <= MAX_WORD) {
            self.remove(&with_id(&postings(room.0, w), id.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh;

    #[test]
    fn search_intersects_postings_newest_first_below_a_border() {
        let (_dir, s) = fresh();
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
        s.write_through(b).unwrap();
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
}
