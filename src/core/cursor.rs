//! Cursor reads (`POST /chat/retrieve`): every message after a cursor in
//! all of a user's rooms, ascending by id — a merge of one lazy range scan
//! per room, bounded by the visible id, so the cost is the messages taken
//! plus one seek per room, never the history. A read that shows patient
//! chats counts what it will show first, for its `chat.read` records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::audit::ToShow;
use super::Core;
use crate::error::{Error, Result};
use crate::model::{Message, MsgId, RoomId, RoomKind, User};

impl Core {
    /// A cursor read (`retrieve`): the messages with id above `after`, at
    /// most `limit`, in the rooms of `user`, as they are now — to stream
    /// with [`Core::messages_after`] once shown (`Core::show`). If some are
    /// patient chats, the messages to be shown are counted first (the same
    /// scan, so the cost still follows the answer). Blocking: run it off
    /// the async executor.
    pub fn cursor_read(&self, user: &User, after: MsgId, limit: usize) -> Result<ToShow<Cursor>> {
        let mut rooms = Vec::new();
        let mut patient_chats = std::collections::BTreeMap::new();
        for id in self.store.rooms_of(user.id)? {
            rooms.push(id);
            if let Some(r) = self.store.room(id)?.filter(|r| r.kind == RoomKind::Patient) {
                patient_chats.insert(id, (r, Vec::new()));
            }
        }
        let cursor = Cursor {
            rooms,
            after,
            upto: self.commit.visible(),
            limit,
        };
        let mut read = ToShow::new((), user.id);
        if !patient_chats.is_empty() {
            for m in self.messages_after(&cursor) {
                let m = m?;
                if let Some((_, shown)) = patient_chats.get_mut(&m.room) {
                    shown.push(m.id);
                }
            }
            for (r, shown) in patient_chats.into_values() {
                read = read.noting(&r, shown);
            }
        }
        Ok(read.map(|()| cursor))
    }

    /// A cursor's messages, ascending by id: a merge of one lazy range
    /// scan per room, so the cost is the messages taken plus one seek per
    /// room — never the size of the history. Blocking: run it off the
    /// async executor.
    pub fn messages_after<'a>(
        &'a self,
        c: &'a Cursor,
    ) -> impl Iterator<Item = Result<Message>> + 'a {
        let scans = c
            .rooms
            .iter()
            .map(move |&room| self.store.room_messages(room, c.after, c.upto));
        Merge::new(scans.map(|s| s.map(|r| r.map_err(Error::from)))).take(c.limit)
    }
}

/// What a cursor read shows: the user's rooms, the cursor, the newest
/// visible id when it was read, and the limit. Only
/// [`Core::cursor_read`] makes one.
pub struct Cursor {
    rooms: Vec<RoomId>,
    after: MsgId,
    upto: MsgId,
    limit: usize,
}

/// Merges ascending iterators of messages into one ascending iterator.
struct Merge<I: Iterator<Item = Result<Message>>> {
    scans: Vec<I>,
    heads: Vec<Option<Message>>,
    heap: BinaryHeap<Reverse<(MsgId, usize)>>,
    error: Option<Error>,
}

impl<I: Iterator<Item = Result<Message>>> Merge<I> {
    fn new(scans: impl Iterator<Item = I>) -> Self {
        let mut m = Merge {
            scans: scans.collect(),
            heads: Vec::new(),
            heap: BinaryHeap::new(),
            error: None,
        };
        m.heads = vec![None; m.scans.len()];
        for i in 0..m.scans.len() {
            m.advance(i);
        }
        m
    }

    fn advance(&mut self, i: usize) {
        match self.scans[i].next() {
            Some(Ok(msg)) => {
                self.heap.push(Reverse((msg.id, i)));
                self.heads[i] = Some(msg);
            }
            Some(Err(e)) => self.error = Some(e),
            None => {}
        }
    }
}

impl<I: Iterator<Item = Result<Message>>> Iterator for Merge<I> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Result<Message>> {
        if let Some(e) = self.error.take() {
            self.heap.clear();
            return Some(Err(e));
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let msg = self.heads[i].take();
        self.advance(i);
        msg.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::super::messages::tests::setup;
    use super::super::messages::PostAs;
    use super::*;

    /// A cursor read, shown.
    async fn cursor(core: &Core, user: &User, after: MsgId, limit: usize) -> Cursor {
        core.show(core.cursor_read(user, after, limit).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn merge_interleaves_rooms_in_id_order_and_skips_others_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let dm = core.create_dm(&ann, bob.id).await.unwrap();
        let own = core.create_dm(&ann, ann.id).await.unwrap();
        let bobs = core.create_dm(&bob, bob.id).await.unwrap();
        for i in 0..6 {
            let room = [dm, own, bobs][i % 3];
            let who = if room == bobs { &bob } else { &ann };
            core.post(who, room, format!("m{i}"), PostAs::default())
                .await
                .unwrap();
        }
        let all = cursor(&core, &ann, MsgId(0), usize::MAX).await;
        let texts: Vec<String> = core.messages_after(&all).map(|m| m.unwrap().text).collect();
        assert_eq!(texts, ["m0", "m1", "m3", "m4"]);
        let one = cursor(&core, &ann, MsgId(0), 1).await;
        let first: Vec<Message> = core.messages_after(&one).map(|m| m.unwrap()).collect();
        assert_eq!(first.len(), 1);
        let first = &first[0];
        let rest = cursor(&core, &ann, first.id, usize::MAX).await;
        let after_first: Vec<u64> = core
            .messages_after(&rest)
            .map(|m| m.unwrap().id.0)
            .collect();
        assert_eq!(after_first.len(), 3);
        assert!(after_first.iter().all(|&id| id > first.id.0));
        core.shutdown();
    }

    /// Invariant 3: the cost of `after` grows with the page, not with the
    /// history. 100k messages in three rooms; a page near the end reads
    /// about as many items as it returns.
    #[tokio::test(flavor = "multi_thread")]
    async fn after_cursor_cost_is_independent_of_history_size() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let rooms = [
            core.create_dm(&ann, bob.id).await.unwrap(),
            core.create_dm(&ann, ann.id).await.unwrap(),
            core.create_dm(&bob, bob.id).await.unwrap(),
        ];
        let mut pending = Vec::new();
        for i in 0..100_000u32 {
            let room = rooms[i as usize % 3];
            let who = if room == rooms[2] { &bob } else { &ann };
            pending.push(
                core.post_queued(who, room, format!("m{i}"), PostAs::default())
                    .await
                    .unwrap(),
            );
            if pending.len() >= 4096 {
                for p in pending.drain(..) {
                    p.await.unwrap().unwrap();
                }
            }
        }
        let mut last = MsgId(0);
        for p in pending {
            last = p.await.unwrap().unwrap().id;
        }
        let cursor = MsgId(last.0 - 75);
        let before = core.items_scanned();
        let c = super::super::blocking({
            let (core, ann) = (core.clone(), ann.clone());
            move || core.cursor_read(&ann, cursor, 50)
        })
        .await
        .unwrap();
        let c = core.show(c).await.unwrap();
        let page: Vec<Message> = core.messages_after(&c).collect::<Result<_>>().unwrap();
        let scanned = core.items_scanned() - before;
        assert_eq!(page.len(), 50);
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
        assert!(page[0].id > cursor);
        // 50 returned + one look-ahead per room + the membership index.
        assert!(
            scanned <= 50 + 2 + 2,
            "scanned {scanned} items for a page of 50"
        );
        core.shutdown();
    }
}
