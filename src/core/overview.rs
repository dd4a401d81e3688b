//! The overview of a user's rooms: for each room they are in, its kind,
//! name, members, newest message, the user's read marker and how many
//! messages of others wait after it — plus the people those rooms name.
//! What a client needs to draw a room list with unread counts (the web
//! client's `GET /chat/rooms`). Read-only; never touches the sequencer.
//!
//! Cost: per room, one membership read, one seek for the newest message and
//! at most [`UNREAD_SCAN`] + 1 message reads for the unread count. The count
//! is bounded on purpose: a room with a long unread backlog reports
//! "at least [`UNREAD_SCAN`]" (`unread_more`) instead of scanning it all.

use std::collections::BTreeMap;

use super::Core;
use crate::error::Result;
use crate::model::{MsgId, Role, Room, User, UserId};

/// Messages after the read marker looked at per room for the unread count.
pub const UNREAD_SCAN: usize = 100;

/// One room as its member sees it in a room list.
#[derive(Clone, Debug)]
pub struct RoomSummary {
    pub room: Room,
    /// Its members, by id (ascending).
    pub members: Vec<UserId>,
    /// Its newest visible message, if any.
    pub last_message: Option<MsgId>,
    /// Commit time of the newest message, or the room's creation time.
    pub updated_ms: u64,
    /// The user's read marker (`MsgId(0)`: nothing read).
    pub last_read: MsgId,
    /// Messages of others after the marker, among the newest
    /// [`UNREAD_SCAN`] messages after it.
    pub unread: usize,
    /// More than [`UNREAD_SCAN`] messages follow the marker: `unread` is a
    /// lower bound.
    pub unread_more: bool,
}

/// Someone a room of the overview names.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
}

/// A user's rooms, newest activity first, and the people in them.
#[derive(Clone, Debug)]
pub struct Overview {
    pub rooms: Vec<RoomSummary>,
    pub people: BTreeMap<UserId, Person>,
}

impl Core {
    /// Every room `user` takes part in, with unread counts (bounded, see
    /// the module header), newest activity first. Blocking (store reads):
    /// run it off the async executor.
    pub fn overview(&self, user: &User) -> Result<Overview> {
        let visible = self.commit.visible();
        let mut rooms = Vec::new();
        let mut people = BTreeMap::new();
        for id in self.store.rooms_of(user.id)? {
            let Some(room) = self.store.room(id)? else {
                continue;
            };
            let participants = self.store.participants(id)?;
            let Some(me) = participants.iter().find(|(u, _)| *u == user.id) else {
                continue;
            };
            let last_read = me.1.last_read;
            let participants = self.without_api_clients(participants)?;
            let after = self.store.room_messages(id, last_read, visible).rev();
            let mut unread = 0;
            let mut newest = None;
            let mut unread_more = false;
            for (i, m) in after.enumerate() {
                let m = m?;
                if i == 0 {
                    newest = Some((m.id, m.at_ms));
                }
                if i == UNREAD_SCAN {
                    unread_more = true;
                    break;
                }
                let own = m.sender == user.id || m.author == Some(user.id);
                unread += usize::from(!own);
            }
            // Nothing after the marker: the newest message is at or before it.
            if newest.is_none() {
                newest = self
                    .store
                    .room_messages(id, MsgId(0), visible)
                    .next_back()
                    .transpose()?
                    .map(|m| (m.id, m.at_ms));
            }
            for (u, _) in &participants {
                if people.contains_key(u) {
                    continue;
                }
                if let Some(p) = self.store.user(*u)? {
                    people.insert(
                        p.id,
                        Person {
                            id: p.id,
                            username: p.username,
                            display_name: p.display_name,
                            role: p.role,
                        },
                    );
                }
            }
            rooms.push(RoomSummary {
                members: participants.iter().map(|(u, _)| *u).collect(),
                last_message: newest.map(|(id, _)| id),
                updated_ms: newest.map_or(room.created_ms, |(_, at)| at),
                room,
                last_read,
                unread,
                unread_more,
            });
        }
        rooms.sort_by_key(|r| std::cmp::Reverse((r.updated_ms, r.room.id)));
        Ok(Overview { rooms, people })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::messages::PostAs;
    use crate::model::RoomKind;
    use std::sync::Arc;

    async fn setup(dir: &std::path::Path) -> (Arc<Core>, User, User) {
        crate::core::testing::ann_and_bob(dir, |name| Some(format!("{name} display"))).await
    }

    async fn say(core: &Core, who: &User, room: crate::model::RoomId, text: &str) -> MsgId {
        core.post(who, room, text.into(), PostAs::default())
            .await
            .unwrap()
            .id
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unread_counts_others_messages_after_the_marker_only() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let dm = core.create_dm(&ann, bob.id).await.unwrap();
        let first = say(&core, &bob, dm, "one").await;
        say(&core, &ann, dm, "mine").await;
        let last = say(&core, &bob, dm, "two").await;

        let o = core.overview(&ann).unwrap();
        assert_eq!(o.rooms.len(), 1);
        let r = &o.rooms[0];
        assert_eq!(r.room.kind, RoomKind::Dm);
        assert_eq!(r.members, vec![ann.id, bob.id]);
        assert_eq!(r.last_message, Some(last));
        assert_eq!(r.last_read, MsgId(0));
        assert_eq!((r.unread, r.unread_more), (2, false));
        assert_eq!(o.people[&bob.id].display_name, "bob display");
        assert_eq!(o.people.len(), 2);

        core.mark_read(&ann, dm, Some(first)).await.unwrap();
        let r = &core.overview(&ann).unwrap().rooms[0];
        assert_eq!((r.last_read, r.unread), (first, 1));
        core.join(&ann, dm, Some(last)).await.unwrap();
        let r = &core.overview(&ann).unwrap().rooms[0];
        assert_eq!(
            (r.unread, r.unread_more, r.last_message),
            (0, false, Some(last))
        );
        // bob's view: only ann's message counts.
        let r = &core.overview(&bob).unwrap().rooms[0];
        assert_eq!(r.unread, 1);
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unread_scan_is_bounded_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let dm = core.create_dm(&ann, bob.id).await.unwrap();
        for i in 0..(UNREAD_SCAN + 50) {
            say(&core, &bob, dm, &format!("m{i}")).await;
        }
        let before = core.items_scanned();
        let r = core.overview(&ann).unwrap().rooms[0].clone();
        let scanned = core.items_scanned() - before;
        assert_eq!((r.unread, r.unread_more), (UNREAD_SCAN, true));
        // The room's messages, participants and membership: never the
        // whole backlog.
        assert!(scanned <= UNREAD_SCAN as u64 + 10, "scanned {scanned}");
        // Exactly UNREAD_SCAN after the marker is not "more".
        let read = core.room_history(&ann, dm, Default::default()).unwrap();
        let marker = core.show(read).await.unwrap()[49].id;
        core.mark_read(&ann, dm, Some(marker)).await.unwrap();
        let r = &core.overview(&ann).unwrap().rooms[0];
        assert_eq!((r.unread, r.unread_more), (UNREAD_SCAN, false));
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rooms_come_newest_activity_first_and_only_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let (core, ann, bob) = setup(dir.path()).await;
        let dm = core.create_dm(&ann, bob.id).await.unwrap();
        let own = core.create_dm(&ann, ann.id).await.unwrap();
        let bobs = core.create_dm(&bob, bob.id).await.unwrap();
        let open = core.create_open_room(&ann).await.unwrap().room.id;
        say(&core, &ann, own, "note").await;
        say(&core, &bob, bobs, "bob's note").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        say(&core, &bob, dm, "hi").await;
        let o = core.overview(&ann).unwrap();
        let ids: Vec<_> = o.rooms.iter().map(|r| r.room.id).collect();
        // The open room ann has not joined is not hers; the empty self-DM
        // would sort by its creation time.
        assert_eq!(ids, vec![dm, own]);
        assert!(!ids.contains(&open) && !ids.contains(&bobs));
        let r = &o.rooms[1];
        assert_eq!((r.unread, r.members.clone()), (0, vec![ann.id]));
        core.shutdown();
    }
}
