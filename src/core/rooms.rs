//! Rooms: DMs, admin-made group rooms, membership, room info, live sessions.

use super::hub::{Event, EventKind, Subscription};
use super::reach::may_use_open_rooms;
use super::{Admin, Caller, Core};
use crate::error::{Error, Result};
use crate::model::{check_name, MsgId, Participant, Room, RoomId, RoomKind, User, UserId};

/// What a participant of a room may learn about it.
#[derive(Clone, Debug)]
pub struct RoomInfo {
    pub room: Room,
    pub participants: Vec<(UserId, Participant)>,
    /// Commit time of the newest message, or the room's creation time.
    pub updated_ms: u64,
}

impl Core {
    /// Opens a live session: authenticates, then registers with the hub
    /// (before any backlog is read, so nothing committed afterwards is
    /// missed), then checks the token was not revoked in between.
    pub fn open_session(&self, token: &str) -> Result<(Caller, Subscription)> {
        let caller = self.authenticate(token)?;
        let sub = self
            .hub
            .subscribe(caller.user.id, caller.token)
            .ok_or_else(|| {
                Error::rate_limited(std::time::Duration::from_secs(1)).with_message(format!(
                    "a user may hold at most {} open connections",
                    self.limits.conns_per_user
                ))
            })?;
        self.authenticate(token)?;
        Ok((caller, sub))
    }

    /// A room the user takes part in. A room that does not exist and one the
    /// user is not in look the same.
    pub fn room_for(&self, user: &User, room: RoomId) -> Result<Room> {
        if self.store.participant(room, user.id)?.is_none() {
            return Err(no_such_room());
        }
        self.store.room(room)?.ok_or_else(no_such_room)
    }

    /// `room_info`: the room and its participants, for a participant.
    pub fn room_info(&self, user: &User, room: RoomId) -> Result<RoomInfo> {
        let room = self.room_for(user, room)?;
        self.info(room)
    }

    /// Details of a room the user may see: one they are in, or an open
    /// room of their workspace (which they may join; a patient may not:
    /// `FORBIDDEN`, see `reach`).
    pub fn visible_room_info(&self, user: &User, room: RoomId) -> Result<RoomInfo> {
        if self.store.participant(room, user.id)?.is_some() {
            return self.room_info(user, room);
        }
        match self.store.room(room)? {
            Some(r) if r.is_open() && r.workspace == user.workspace => {
                may_use_open_rooms(user)?;
                self.info(r)
            }
            _ => Err(no_such_room()),
        }
    }

    fn info(&self, room: Room) -> Result<RoomInfo> {
        let participants = self.without_api_clients(self.store.participants(room.id)?)?;
        let visible = self.commit.visible();
        let last = self
            .store
            .room_messages(room.id, MsgId(0), visible)
            .next_back()
            .transpose()?;
        Ok(RoomInfo {
            updated_ms: last.map_or(room.created_ms, |m| m.at_ms),
            room,
            participants,
        })
    }

    /// `createEmptyChat`: an open room with no participants, in the
    /// creator's workspace. Not for patients (`FORBIDDEN`, see `reach`).
    pub async fn create_open_room(&self, creator: &User) -> Result<RoomInfo> {
        may_use_open_rooms(creator)?;
        let workspace = creator.workspace.clone();
        let room = self
            .commit
            .run(move |tx| {
                let room = Room {
                    id: tx.next_room_id(),
                    kind: RoomKind::Open,
                    name: None,
                    workspace,
                    created_ms: tx.now_ms,
                    patient: None,
                };
                tx.batch.put_room(&room);
                Ok((room, vec![]))
            })
            .await?;
        self.info(room)
    }

    /// `joinChat`: joins an open room of the user's workspace (joining a
    /// room one is already in only moves the marker; a patient may join
    /// no open room: `FORBIDDEN`, see `reach`). With `last_read`, sets the
    /// read marker. Everyone in the room, the joiner included, is told.
    pub async fn join(
        &self,
        user: &User,
        room: RoomId,
        last_read: Option<MsgId>,
    ) -> Result<Participant> {
        let member = self.store.participant(room, user.id)?.is_some();
        let r = self.store.room(room)?.ok_or_else(no_such_room)?;
        if r.workspace != user.workspace || !(member || r.is_open()) {
            return Err(no_such_room());
        }
        if !member {
            may_use_open_rooms(user)?;
        }
        let visible = self.commit.visible();
        if let Some(id) = last_read.filter(|id| id.0 != 0) {
            if self
                .store
                .message(id)?
                .filter(|m| m.room == room && id <= visible)
                .is_none()
            {
                return Err(Error::bad_request(format!(
                    "message {id} is not in this chat"
                )));
            }
        }
        let (user, username) = (user.id, user.username.clone());
        self.commit
            .run(move |tx| {
                let mut participants = tx.store.participants(room)?;
                let i = match participants.iter().position(|(u, _)| *u == user) {
                    Some(i) => i,
                    None => {
                        let p = Participant {
                            joined_ms: tx.now_ms,
                            ..Participant::default()
                        };
                        participants.push((user, p));
                        participants.len() - 1
                    }
                };
                let p = &mut participants[i].1;
                if let Some(id) = last_read {
                    // Forward only, as in `mark_read`.
                    p.last_read = p.last_read.max(id);
                    p.last_read_ms = tx.now_ms;
                }
                let p = p.clone();
                tx.batch.put_participant(room, user, &p);
                let audience = participants.iter().map(|(u, _)| *u).collect();
                let kind = EventKind::Joined {
                    user,
                    username,
                    last_read,
                };
                let event = Event::new(room, audience, kind);
                Ok((p, vec![event]))
            })
            .await
    }

    /// The rooms a user is in.
    pub fn rooms_of(&self, user: &User) -> Result<Vec<RoomId>> {
        Ok(self.store.rooms_of(user.id)?)
    }

    /// `create_dm`: the one DM room of a pair, made on first use, with a
    /// user the caller may reach (see `reach`).
    pub async fn create_dm(&self, caller: &User, other: UserId) -> Result<RoomId> {
        let other = self.reachable_user(caller, other)?;
        if let Some(room) = self.store.dm(caller.id, other.id)? {
            return Ok(room);
        }
        let (a, b, workspace) = (caller.id, other.id, caller.workspace.clone());
        self.commit
            .run(move |tx| {
                // Looked up again in the writer: two concurrent first calls
                // must still make one room.
                if let Some(room) = tx.store.dm(a, b)? {
                    return Ok((room, vec![]));
                }
                let id = tx.next_room_id();
                tx.batch.put_room(&Room {
                    id,
                    kind: RoomKind::Dm,
                    name: None,
                    workspace,
                    created_ms: tx.now_ms,
                    patient: None,
                });
                let p = Participant {
                    joined_ms: tx.now_ms,
                    ..Participant::default()
                };
                tx.batch.put_participant(id, a, &p);
                tx.batch.put_participant(id, b, &p);
                tx.batch.put_dm(a, b, id);
                Ok((id, vec![]))
            })
            .await
    }

    /// `POST /admin/rooms`: a closed group room. Admins only; all members in
    /// one workspace.
    pub async fn create_group_room(
        &self,
        _admin: &Admin<'_>,
        name: Option<String>,
        members: Vec<UserId>,
    ) -> Result<RoomId> {
        if let Some(n) = &name {
            check_name("room name", n)?;
        }
        if members.is_empty() {
            return Err(Error::bad_request("a room needs at least one member"));
        }
        let mut users = Vec::with_capacity(members.len());
        for id in &members {
            users.push(
                self.store
                    .user(*id)?
                    .filter(|u| !self.is_api_client(u.id).unwrap_or(true))
                    .ok_or_else(|| Error::not_found(format!("no user with id {id}")))?,
            );
        }
        let workspace = users[0].workspace.clone();
        if users.iter().any(|u| u.workspace != workspace) {
            return Err(Error::bad_request("all members must be in one workspace"));
        }
        let mut ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
        ids.sort();
        ids.dedup();
        self.commit
            .run(move |tx| {
                let id = tx.next_room_id();
                tx.batch.put_room(&Room {
                    id,
                    kind: RoomKind::Group,
                    name,
                    workspace,
                    created_ms: tx.now_ms,
                    patient: None,
                });
                let p = Participant {
                    joined_ms: tx.now_ms,
                    ..Participant::default()
                };
                for u in ids {
                    tx.batch.put_participant(id, u, &p);
                }
                Ok((id, vec![]))
            })
            .await
    }
}

pub(crate) fn no_such_room() -> Error {
    Error::not_found("no such room")
}
