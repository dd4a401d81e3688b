//! Messages: posting (through the sequencer) and reading (bounded by the
//! visible id, so readers never see an id before a smaller one).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::{Error, Result};
use super::hub::Event;
use super::model::{check_text, Message, MsgId, RoomId, User, UserId};
use super::Core;

impl Core {
    /// Queues a message; the receiver answers once it is durable and
    /// published. Rules checked before queueing: text limits and the
    /// sender's rate; in the writer: that the sender is in the room.
    pub async fn post_queued(
        &self,
        sender: &User,
        room: RoomId,
        text: String,
    ) -> Result<oneshot::Receiver<Result<Message>>> {
        check_text(&text)?;
        if let Err(wait) = self.send_buckets.take(sender.id.0) {
            return Err(Error::rate_limited(wait));
        }
        let sender = sender.id;
        self.commit
            .submit(move |tx| {
                let participants = tx.store.participants(room)?;
                if !participants.iter().any(|(u, _)| *u == sender) {
                    return Err(Error::not_found("no such room"));
                }
                let audience: Arc<[UserId]> = participants.iter().map(|(u, _)| *u).collect();
                let msg = Message {
                    id: tx.next_msg_id(),
                    room,
                    sender,
                    text,
                    at_ms: tx.now_ms,
                };
                tx.batch.put_message(&msg);
                Ok((msg.clone(), vec![Event::Message { msg, audience }]))
            })
            .await
    }

    /// Posts a message and waits until it is durable.
    pub async fn post(&self, sender: &User, room: RoomId, text: String) -> Result<Message> {
        self.post_queued(sender, room, text)
            .await?
            .await
            .map_err(Error::internal)?
    }

    /// Every visible message after `after` in every room of `user`,
    /// ascending by id: a merge of one lazy range scan per room, so the
    /// cost is the messages taken plus one seek per room — never the size
    /// of the history. Blocking: run it off the async executor.
    pub fn messages_after(
        &self,
        user: &User,
        after: MsgId,
    ) -> Result<impl Iterator<Item = Result<Message>> + '_> {
        let upto = self.commit.visible();
        let rooms = self.store.rooms_of(user.id)?;
        let scans = rooms
            .into_iter()
            .map(|room| self.store.room_messages(room, after, upto));
        Ok(Merge::new(scans.map(|s| s.map(|r| r.map_err(Error::from)))))
    }
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
    use super::*;
    use crate::core::accounts::NewUser;
    use crate::core::limits::Limits;
    use crate::core::model::{Role, Workspace};

    async fn setup(dir: &std::path::Path) -> (Arc<Core>, User, User) {
        let limits = Limits {
            msg_burst: 1_000_000,
            msg_rate: 1_000_000,
            ..Limits::default()
        };
        let core = Core::open(dir, limits).unwrap();
        let mut users = Vec::new();
        for name in ["ann", "bob"] {
            let id = core
                .create_user(NewUser {
                    username: name.into(),
                    password: "pw".into(),
                    role: Role::Staff,
                    workspace: Workspace::default(),
                    display_name: None,
                })
                .await
                .unwrap();
            users.push(core.user(id).unwrap().unwrap());
        }
        let bob = users.pop().unwrap();
        let ann = users.pop().unwrap();
        (core, ann, bob)
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
            core.post(who, room, format!("m{i}")).await.unwrap();
        }
        let texts: Vec<String> = core
            .messages_after(&ann, MsgId(0))
            .unwrap()
            .map(|m| m.unwrap().text)
            .collect();
        assert_eq!(texts, ["m0", "m1", "m3", "m4"]);
        let first = core
            .messages_after(&ann, MsgId(0))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let after_first: Vec<u64> = core
            .messages_after(&ann, first.id)
            .unwrap()
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
            pending.push(core.post_queued(who, room, format!("m{i}")).await.unwrap());
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
        let page: Vec<Message> = core
            .messages_after(&ann, cursor)
            .unwrap()
            .take(50)
            .collect::<Result<_>>()
            .unwrap();
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
