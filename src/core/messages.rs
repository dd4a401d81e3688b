//! Messages: posting (through the sequencer) and reading a room's history
//! (bounded by the visible id, so readers never see an id before a
//! smaller one). Cursor reads across rooms: `cursor`.

use tokio::sync::oneshot;

use super::audit::{self, Actor, Entry, ToShow};
use super::derived;
use super::hub::{ChatView, Event, EventKind};
use super::rooms::no_such_room;
use super::Core;
use crate::error::{Error, Result};
use crate::model::{check_text, Message, MsgId, Participant, Room, RoomId, RoomKind, User, UserId};

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
    /// published. Checked before queueing: text limits, the author's rate,
    /// and that the author is in the room (`room_for`, which reads the
    /// room: the job is handed it, and reads it no more); in the writer:
    /// that author (and the one posted for) are in the room.
    pub async fn post_queued(
        &self,
        author: &User,
        room: RoomId,
        text: String,
        how: PostAs,
    ) -> Result<oneshot::Receiver<Result<Message>>> {
        check_text(&text)?;
        self.take_send(author)?;
        // Its kind and workspace never change: read here, off the writer.
        // Membership is the writer's to check (it reads the participants
        // anyway), so a post costs the writer no room read and the caller
        // one.
        let r = self.store.room(room)?.ok_or_else(no_such_room)?;
        let (author, author_name) = (author.id, author.username.clone());
        self.commit
            .submit(move |tx| {
                let mut participants = tx.store.participants(room)?;
                let sender = how.on_behalf_of.unwrap_or(author);
                let Some(i) = participants.iter().position(|(u, _)| *u == author) else {
                    return Err(no_such_room());
                };
                if !participants.iter().any(|(u, _)| *u == sender) {
                    return Err(no_such_room());
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
                derived::new_message(tx.store, &mut tx.batch, &r, &msg)?;
                if r.kind == RoomKind::Patient {
                    tx.audit(posted(author, &r, &msg))?;
                }
                let (_, p) = &mut participants[i];
                p.last_posted_ms = tx.now_ms;
                tx.batch.update_participant(room, author, p);
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
        // The chat's newest messages for the event, read here, not in the
        // writer: its job adds only what was committed since (usually
        // nothing), so a marker moving costs the writer next to no reads.
        let history = self.limits.chat_history;
        let mut recent: Vec<Message> = self
            .store
            .room_messages(room, MsgId(0), visible)
            .rev()
            .take(history.max(1))
            .collect::<std::result::Result<_, _>>()?;
        recent.reverse();
        let target = match upto {
            Some(id) => {
                if id.0 != 0
                    && self
                        .store
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
            None => recent.last().map_or(MsgId(0), |m| m.id),
        };
        let user = user.id;
        self.commit
            .run(move |tx| {
                let mut participants = tx.store.participants(room)?;
                let Some((_, current)) = participants.iter_mut().find(|(u, _)| *u == user) else {
                    return Err(no_such_room());
                };
                // Markers only move forward: a message once read stays read.
                let marker = Participant {
                    last_read: target.max(current.last_read),
                    last_read_ms: tx.now_ms,
                    ..current.clone()
                };
                *current = marker.clone();
                tx.batch.update_participant(room, user, &marker);
                let audience = participants.iter().map(|(u, _)| *u).collect();
                recent.extend(tx.store.newest_messages(room, visible, history)?);
                recent.drain(..recent.len().saturating_sub(history));
                let chat = ChatView {
                    recent,
                    participants,
                };
                let kind = EventKind::Read { chat };
                Ok((marker, vec![Event::new(room, audience, kind)]))
            })
            .await
    }

    /// A room's visible messages in `window`, oldest first, to show once
    /// a patient chat's read is recorded (`Core::show`). The time bounds
    /// become id bounds (`Store::first_id_at`), so the cost is the messages
    /// returned plus O(log n) seeks. `user` must be a participant.
    pub fn room_history(
        &self,
        user: &User,
        room: RoomId,
        window: Window,
    ) -> Result<ToShow<Vec<Message>>> {
        let r = self.room_for(user, room)?;
        let visible = self.commit.visible();
        let after = match window.from_ms {
            Some(ms) => MsgId(self.store.first_id_at(ms, visible)?.0 - 1),
            None => MsgId(0),
        };
        let upto = match window.until_ms {
            Some(ms) => MsgId(self.store.first_id_at(ms, visible)?.0 - 1),
            None => visible,
        };
        let scan = self.store.room_messages(room, after, upto);
        let mut out: Vec<Message> = match window.last {
            Some(n) => scan.rev().take(n).collect::<std::result::Result<_, _>>()?,
            None => scan.collect::<std::result::Result<_, _>>()?,
        };
        if window.last.is_some() {
            out.reverse();
        }
        let ids: Vec<MsgId> = out.iter().map(|m| m.id).collect();
        Ok(ToShow::new(out, user.id).noting(&r, ids))
    }
}

/// The `chat.post` record of a message posted in the patient chat `room`
/// by `author` (its sender, or staff posting for the patient).
fn posted(author: UserId, room: &Room, msg: &Message) -> Entry {
    let mut e = Entry::new(audit::Kind::ChatPost, Actor::User(author))
        .workspace(&room.workspace)
        .detail("room", room.id.to_string())
        .detail("message", msg.id.to_string())
        .detail("sender", msg.sender.to_string());
    if let Some(p) = room.patient {
        e = e.patient(p);
    }
    e
}

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Role, Workspace};
    use std::sync::Arc;

    /// A core with two staff users, ann and bob, and no send limits.
    pub(crate) async fn setup(dir: &std::path::Path) -> (Arc<Core>, User, User) {
        crate::core::testing::ann_and_bob(dir, |_| None).await
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

    /// What a post and a read marker cost the writer in sled: a post its
    /// message (the log entry and the room's copy) and its author's
    /// record, a marker the reader's record — the membership index, which
    /// has them since they joined, is not written again — and each group
    /// its commit marker.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_post_and_a_marker_write_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let room = core.create_dm(&ann, bob.id).await.unwrap();
        let before = core.store.applied_writes();
        core.post(&ann, room, "hello".into(), PostAs::default())
            .await
            .unwrap();
        assert_eq!(core.store.applied_writes() - before, 2 + 1 + 1);
        let before = core.store.applied_writes();
        core.mark_read(&bob, room, None).await.unwrap();
        assert_eq!(core.store.applied_writes() - before, 1 + 1);
        // Both still find the room through the membership index.
        assert_eq!(core.rooms_of(&ann).unwrap().len(), 1);
        assert_eq!(core.rooms_of(&bob).unwrap().len(), 1);
        core.shutdown();
    }

    /// The post job is handed the room its caller's check read (so it
    /// knows a patient chat without reading the room again): a post to a
    /// room the author is not in is refused by the writer, one to no room
    /// before it is queued; both alike, and nothing is written.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_post_is_refused_unless_its_author_is_in_the_room() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let own = core.create_dm(&ann, ann.id).await.unwrap();
        for (who, room) in [(&bob, own), (&ann, RoomId(999))] {
            let e = core
                .post(who, room, "x".into(), PostAs::default())
                .await
                .unwrap_err();
            assert_eq!(
                (e.kind, e.message.as_str()),
                (crate::error::Kind::NotFound, "no such room")
            );
        }
        assert_eq!(core.commit.visible(), MsgId(0));
        let done = core.post_queued(&ann, own, "x".into(), PostAs::default());
        assert_eq!(done.await.unwrap().await.unwrap().unwrap().room, own);
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
        let texts = |w: Window| {
            let read = core.room_history(&bob, room, w).unwrap();
            async {
                let shown = core.show(read).await.unwrap();
                shown.into_iter().map(|m| m.text).collect::<Vec<String>>()
            }
        };
        assert_eq!(texts(Window::default()).await.len(), 5);
        let w = Window {
            last: Some(2),
            ..Window::default()
        };
        assert_eq!(texts(w).await, ["m3", "m4"]);
        let w = Window {
            from_ms: Some(sent[2].at_ms),
            until_ms: Some(sent[4].at_ms),
            last: None,
        };
        assert_eq!(texts(w).await, ["m2", "m3"]);
        let w = Window {
            from_ms: Some(sent[4].at_ms + 1),
            ..Window::default()
        };
        assert!(texts(w).await.is_empty());
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
            crate::error::Kind::NotFound
        );
        let acme = Workspace::new("acme", "north").unwrap();
        let eve = crate::core::testing::user_in(&core, "eve", Role::Staff, acme, None).await;
        assert!(core.join(&eve, open, None).await.is_err());
        assert!(core.visible_room_info(&eve, open).is_err());
        core.shutdown();
    }
}
