//! Messages: posting (through the sequencer) and reading (bounded by the
//! visible id, so readers never see an id before a smaller one).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use tokio::sync::oneshot;

use super::error::{Error, Result};
use super::hub::{ChatView, Event, EventKind};
use super::model::{check_text, Message, MsgId, Participant, Room, RoomId, RoomKind, User, UserId};
use super::Core;

/// How a message is posted, beyond its text.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostAs {
    /// Post it as this participant's message (staff writing for a patient).
    pub on_behalf_of: Option<UserId>,
    /// The sender's read flag (typed dialect).
    pub is_read: bool,
}

/// Which of a room's messages to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Only messages committed at or after this (Unix ms).
    pub from_ms: Option<u64>,
    /// Only messages committed before this (Unix ms).
    pub until_ms: Option<u64>,
    /// Keep only the newest N of what is left.
    pub last: Option<usize>,
}

impl Core {
    /// One send from the user's rate budget, or `RATE_LIMITED`.
    fn take_send(&self, user: &User) -> Result<()> {
        self.send_buckets.take(user.id.0).map_err(|wait| {
            self.metrics
                .sends_rate_limited
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Error::rate_limited(wait)
        })
    }

    /// Queues a message; the receiver answers once it is durable and
    /// published. Checked before queueing: text limits and the author's
    /// rate; in the writer: that author (and the one posted for) are in
    /// the room.
    pub async fn post_queued(
        &self,
        author: &User,
        room: RoomId,
        text: String,
        how: PostAs,
    ) -> Result<oneshot::Receiver<Result<Message>>> {
        check_text(&text)?;
        self.take_send(author)?;
        let (author, author_name) = (author.id, author.username.clone());
        self.commit
            .submit(move |tx| {
                let mut participants = tx.store.participants(room)?;
                let sender = how.on_behalf_of.unwrap_or(author);
                let Some(i) = participants.iter().position(|(u, _)| *u == author) else {
                    return Err(Error::not_found("no such room"));
                };
                if !participants.iter().any(|(u, _)| *u == sender) {
                    return Err(Error::not_found("no such room"));
                }
                let msg = Message {
                    id: tx.next_msg_id(),
                    room,
                    sender,
                    text,
                    at_ms: tx.now_ms,
                    author: (sender != author).then_some(author),
                    is_read: how.is_read,
                    archived: false,
                };
                tx.batch.put_message(&msg);
                let kind = tx.store.room(room)?.filter(|r| r.kind == RoomKind::Patient);
                if let Some(r) = kind {
                    super::patients::on_patient_message(tx.store, &mut tx.batch, &r, &msg)?;
                }
                let (_, p) = &mut participants[i];
                p.last_posted_ms = tx.now_ms;
                tx.batch.put_participant(room, author, p);
                let sender_name = if sender == author {
                    author_name
                } else {
                    tx.store
                        .user(sender)?
                        .map(|u| u.username)
                        .unwrap_or_default()
                };
                let event = message_event(msg.clone(), sender_name, &participants, None);
                Ok((msg, vec![event]))
            })
            .await
    }

    /// Posts a message and waits until it is durable.
    pub async fn post(
        &self,
        author: &User,
        room: RoomId,
        text: String,
        how: PostAs,
    ) -> Result<Message> {
        self.post_queued(author, room, text, how)
            .await?
            .await
            .map_err(Error::internal)?
    }

    /// A new closed chat of the creator and `recipients` (all users the
    /// creator may reach — of their workspace, and for a patient only their
    /// care team, see `reach` — else `NOT_FOUND` naming the first bad id
    /// and nothing is created), with `first` as its first message.
    pub async fn create_chat(
        &self,
        creator: &User,
        recipients: &[UserId],
        first: String,
    ) -> Result<Message> {
        check_text(&first)?;
        for id in recipients {
            self.reachable_user(creator, *id)
                .map_err(|_| Error::not_found(format!("no user with id {id}")))?;
        }
        self.take_send(creator)?;
        let mut members: Vec<UserId> = recipients.to_vec();
        members.push(creator.id);
        members.sort();
        members.dedup();
        let (creator, creator_name, workspace) = (
            creator.id,
            creator.username.clone(),
            creator.workspace.clone(),
        );
        self.commit
            .run(move |tx| {
                let room = tx.next_room_id();
                tx.batch.put_room(&Room {
                    id: room,
                    kind: RoomKind::Group,
                    name: None,
                    workspace,
                    created_ms: tx.now_ms,
                    patient: None,
                });
                let msg = Message {
                    id: tx.next_msg_id(),
                    room,
                    sender: creator,
                    text: first,
                    at_ms: tx.now_ms,
                    author: None,
                    is_read: false,
                    archived: false,
                };
                tx.batch.put_message(&msg);
                let participants: Vec<(UserId, Participant)> = members
                    .iter()
                    .map(|&u| {
                        let mut p = Participant {
                            joined_ms: tx.now_ms,
                            ..Participant::default()
                        };
                        if u == creator {
                            p.last_posted_ms = tx.now_ms;
                        }
                        (u, p)
                    })
                    .collect();
                for (u, p) in &participants {
                    tx.batch.put_participant(room, *u, p);
                }
                let chat = ChatView {
                    participants: participants.clone(),
                    recent: vec![msg.clone()],
                };
                let event = message_event(msg.clone(), creator_name, &participants, Some(chat));
                Ok((msg, vec![event]))
            })
            .await
    }

    /// Moves the user's read marker in a room forward: to `upto`, or with
    /// `None` to the newest message (a marker never moves back). The marker
    /// is the one every dialect shows.
    pub async fn mark_read(
        &self,
        user: &User,
        room: RoomId,
        upto: Option<MsgId>,
    ) -> Result<Participant> {
        self.room_for(user, room)?;
        let visible = self.commit.visible();
        let target = match upto {
            Some(id) => {
                if id.0 != 0
                    && self
                        .reading()
                        .message(id)?
                        .filter(|m| m.room == room && id <= visible)
                        .is_none()
                {
                    return Err(Error::bad_request(format!(
                        "message {id} is not in this chat"
                    )));
                }
                id
            }
            None => self
                .visible_log()
                .room_messages(room, MsgId(0), visible)
                .next_back()
                .transpose()?
                .map_or(MsgId(0), |m| m.id),
        };
        let (user, history) = (user.id, self.limits.chat_history);
        self.commit
            .run(move |tx| {
                let mut participants = tx.store.participants(room)?;
                let Some((_, current)) = participants.iter_mut().find(|(u, _)| *u == user) else {
                    return Err(Error::not_found("no such room"));
                };
                // Markers only move forward: a message once read stays read.
                let marker = Participant {
                    last_read: target.max(current.last_read),
                    last_read_ms: tx.now_ms,
                    ..current.clone()
                };
                *current = marker.clone();
                tx.batch.put_participant(room, user, &marker);
                let audience = participants.iter().map(|(u, _)| *u).collect();
                let chat = ChatView {
                    recent: tx.store.newest_messages(room, history)?,
                    participants,
                };
                let kind = EventKind::Read {
                    user,
                    marker: marker.clone(),
                    chat,
                };
                Ok((marker, vec![Event::new(room, audience, kind)]))
            })
            .await
    }

    /// A room's visible messages in `window`, oldest first. The time bounds
    /// become id bounds (`Store::first_id_at`), so the cost is the messages
    /// returned plus O(log n) seeks. `user` must be a participant.
    pub fn room_history(&self, user: &User, room: RoomId, window: Window) -> Result<Vec<Message>> {
        self.room_for(user, room)?;
        let visible = self.commit.visible();
        let after = match window.from_ms {
            Some(ms) => MsgId(self.visible_log().first_id_at(ms, visible)?.0 - 1),
            None => MsgId(0),
        };
        let upto = match window.until_ms {
            Some(ms) => MsgId(self.visible_log().first_id_at(ms, visible)?.0 - 1),
            None => visible,
        };
        let scan = self.visible_log().room_messages(room, after, upto);
        let mut out: Vec<Message> = match window.last {
            Some(n) => scan.rev().take(n).collect::<std::result::Result<_, _>>()?,
            None => scan.collect::<std::result::Result<_, _>>()?,
        };
        if window.last.is_some() {
            out.reverse();
        }
        Ok(out)
    }

    /// The rooms of `user` that a cursor read covers. Read in the task
    /// that answers (see `Core::answer`), before the messages are
    /// streamed, so no answer shows a membership that is not durable.
    pub fn cursor_rooms(&self, user: &User) -> Result<CursorRooms> {
        Ok(CursorRooms(self.reading().rooms_of(user.id)?))
    }

    /// Every visible message after `after` in `rooms`, ascending by id: a
    /// merge of one lazy range scan per room, so the cost is the messages
    /// taken plus one seek per room — never the size of the history.
    /// Blocking: run it off the async executor.
    pub fn messages_after(
        &self,
        rooms: &CursorRooms,
        after: MsgId,
    ) -> impl Iterator<Item = Result<Message>> + '_ {
        let upto = self.commit.visible();
        let scans = rooms
            .0
            .iter()
            .map(move |&room| self.visible_log().room_messages(room, after, upto));
        Merge::new(scans.map(|s| s.map(|r| r.map_err(Error::from))))
    }
}

/// The rooms a user takes part in, for [`Core::messages_after`]; only
/// [`Core::cursor_rooms`] makes one.
pub struct CursorRooms(Vec<RoomId>);

fn message_event(
    msg: Message,
    sender_name: String,
    participants: &[(UserId, Participant)],
    new_chat: Option<ChatView>,
) -> Event {
    let (room, audience) = (msg.room, participants.iter().map(|(u, _)| *u).collect());
    let kind = EventKind::Message {
        msg,
        sender_name,
        new_chat,
    };
    Event::new(room, audience, kind)
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
    use std::sync::Arc;

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
            core.post(who, room, format!("m{i}"), PostAs::default())
                .await
                .unwrap();
        }
        let texts: Vec<String> = core
            .messages_after(&core.cursor_rooms(&ann).unwrap(), MsgId(0))
            .map(|m| m.unwrap().text)
            .collect();
        assert_eq!(texts, ["m0", "m1", "m3", "m4"]);
        let first = core
            .messages_after(&core.cursor_rooms(&ann).unwrap(), MsgId(0))
            .next()
            .unwrap()
            .unwrap();
        let after_first: Vec<u64> = core
            .messages_after(&core.cursor_rooms(&ann).unwrap(), first.id)
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
        let page: Vec<Message> = core
            .messages_after(&core.cursor_rooms(&ann).unwrap(), cursor)
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

    #[tokio::test(flavor = "multi_thread")]
    async fn read_marker_moves_to_newest_and_flags_read_for_others_only() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let room = core.create_dm(&ann, bob.id).await.unwrap();
        let m1 = core
            .post(&ann, room, "one".into(), PostAs::default())
            .await
            .unwrap();
        let m2 = core
            .post(&bob, room, "two".into(), PostAs::default())
            .await
            .unwrap();
        let marker = core.mark_read(&bob, room, None).await.unwrap();
        assert_eq!(marker.last_read, m2.id);
        assert!(marker.last_read_ms > 0 && marker.last_seen_ms() >= marker.last_read_ms);
        let parts = core.room_info(&ann, room).unwrap().participants;
        // ann's message was read by bob; bob's own message is not "read by
        // another" just because bob's marker passed it.
        assert!(m1.read_by_other(&parts));
        assert!(!m2.read_by_other(&parts));
        // A marker naming a message of another room is refused.
        let other = core.create_dm(&ann, ann.id).await.unwrap();
        let m3 = core
            .post(&ann, other, "x".into(), PostAs::default())
            .await
            .unwrap();
        assert!(core.mark_read(&bob, room, Some(m3.id)).await.is_err());
        // Markers never move back: naming an older message keeps the newer.
        let again = core.mark_read(&bob, room, Some(m1.id)).await.unwrap();
        assert_eq!(again.last_read, m2.id);
        let joined = core.join(&bob, room, Some(m1.id)).await.unwrap();
        assert_eq!(joined.last_read, m2.id);
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn create_chat_is_all_or_nothing_on_a_bad_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let e = core
            .create_chat(&ann, &[bob.id, UserId(999)], "hi".into())
            .await
            .unwrap_err();
        assert!(e.message.contains("999"));
        assert!(core.rooms_of(&ann).unwrap().is_empty());
        let first = core
            .create_chat(&ann, &[bob.id], "hi".into())
            .await
            .unwrap();
        let info = core.room_info(&bob, first.room).unwrap();
        assert_eq!(info.participants.len(), 2);
        assert_eq!(info.updated_ms, first.at_ms);
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn history_window_bounds_by_time_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let room = core.create_dm(&ann, bob.id).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..5 {
            sent.push(
                core.post(&ann, room, format!("m{i}"), PostAs::default())
                    .await
                    .unwrap(),
            );
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let texts = |w: Window| -> Vec<String> {
            core.room_history(&bob, room, w)
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect()
        };
        assert_eq!(texts(Window::default()).len(), 5);
        let w = Window {
            last: Some(2),
            ..Window::default()
        };
        assert_eq!(texts(w), ["m3", "m4"]);
        let w = Window {
            from_ms: Some(sent[2].at_ms),
            until_ms: Some(sent[4].at_ms),
            last: None,
        };
        assert_eq!(texts(w), ["m2", "m3"]);
        let w = Window {
            from_ms: Some(sent[4].at_ms + 1),
            ..Window::default()
        };
        assert!(texts(w).is_empty());
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_rooms_are_joinable_within_the_workspace_only() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let open = core.create_open_room(&ann).await.unwrap().room.id;
        assert!(core.room_info(&bob, open).is_err());
        assert!(core.visible_room_info(&bob, open).is_ok());
        core.join(&bob, open, None).await.unwrap();
        assert_eq!(core.room_info(&bob, open).unwrap().participants.len(), 1);
        // A DM is closed: a third user cannot join it.
        let dm = core.create_dm(&ann, ann.id).await.unwrap();
        assert_eq!(
            core.join(&bob, dm, None).await.unwrap_err().kind,
            crate::core::error::Kind::NotFound
        );
        let id = core
            .create_user(NewUser {
                username: "eve".into(),
                password: "pw".into(),
                role: Role::Staff,
                workspace: Workspace::new("acme", "north").unwrap(),
                display_name: None,
            })
            .await
            .unwrap();
        let eve = core.user(id).unwrap().unwrap();
        assert!(core.join(&eve, open, None).await.is_err());
        assert!(core.visible_room_info(&eve, open).is_err());
        core.shutdown();
    }
}
