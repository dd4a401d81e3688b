//! Rooms in the store: the room records (`ROOM`), their participants
//! with each one's read marker (`PARTICIPANT`), the index from a user to
//! their rooms (`MEMBERSHIP`), and the DM of each pair of users (`DM`).

use std::sync::atomic::Ordering;

use super::keys::*;
use super::{codec, Result, Store, StoreError, WriteBatch};
use crate::model::{Participant, Room, RoomId, UserId};

impl Store {
    pub fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.get(&one(ROOM, id.0))
    }

    /// Rooms with ids above `after`, ascending, at most `limit`: every
    /// room, a page at a time (the purge's walk).
    pub fn rooms_after(&self, after: RoomId, limit: usize) -> Result<Vec<Room>> {
        let mut out = Vec::new();
        let lo = one(ROOM, after.0.saturating_add(1));
        for kv in self.db().range(lo..one(ROOM + 1, 0)).take(limit) {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            let (_, v) = kv?;
            out.push(codec::decode(&v).map_err(StoreError)?);
        }
        Ok(out)
    }

    pub fn participant(&self, room: RoomId, user: UserId) -> Result<Option<Participant>> {
        self.get(&two(PARTICIPANT, room.0, user.0))
    }

    /// A room's participants, by user id.
    pub fn participants(&self, room: RoomId) -> Result<Vec<(UserId, Participant)>> {
        let mut out = Vec::new();
        for (k, v) in self.prefix(&one(PARTICIPANT, room.0))? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push((UserId(tail_u64(&k)), codec::decode(&v).map_err(StoreError)?));
        }
        Ok(out)
    }

    /// The rooms a user is in, ascending by id.
    pub fn rooms_of(&self, user: UserId) -> Result<Vec<RoomId>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&one(MEMBERSHIP, user.0))? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(RoomId(tail_u64(&k)));
        }
        Ok(out)
    }

    pub fn dm(&self, a: UserId, b: UserId) -> Result<Option<RoomId>> {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Ok(self
            .raw_get(two(DM, lo.0, hi.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }
}

impl WriteBatch {
    pub fn put_room(&mut self, room: &Room) {
        self.put(&one(ROOM, room.id.0), room);
    }

    /// Adds a participant (or updates one), and the user→room membership
    /// index.
    pub fn put_participant(&mut self, room: RoomId, user: UserId, p: &Participant) {
        self.update_participant(room, user, p);
        self.insert(&two(MEMBERSHIP, user.0, room.0), &[]);
    }

    /// Updates a participant already in the room (a read marker, the
    /// time of their last post): the membership index has them already,
    /// so only their record is written (a post writes one key less).
    pub fn update_participant(&mut self, room: RoomId, user: UserId, p: &Participant) {
        self.put(&two(PARTICIPANT, room.0, user.0), p);
    }

    pub fn put_dm(&mut self, a: UserId, b: UserId, room: RoomId) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        self.insert(&two(DM, lo.0, hi.0), &u64_value(room.0));
    }
}
