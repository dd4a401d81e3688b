//! Patient chats in the store: each patient's care-team chat
//! (`PATIENT_CHAT`), and per workspace its staff and admins (`WS_STAFF`,
//! a patient chat's care team) and its patient chats (`WS_PATIENT_CHAT`).

use std::sync::atomic::Ordering;

use super::keys::*;
use super::{Result, Store, WriteBatch};
use crate::model::{RoomId, UserId, Workspace};

impl Store {
    pub fn patient_chat(&self, patient: UserId) -> Result<Option<RoomId>> {
        Ok(self
            .raw_get(one(PATIENT_CHAT, patient.0))?
            .and_then(|v| read_u64(&v))
            .map(RoomId))
    }

    fn ids_under(&self, prefix: Vec<u8>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for (k, _) in self.prefix(&prefix)? {
            self.scanned.fetch_add(1, Ordering::Relaxed);
            out.push(tail_u64(&k));
        }
        Ok(out)
    }

    /// Staff and admins of a workspace: a patient chat's care team.
    pub fn care_team(&self, ws: &Workspace) -> Result<Vec<UserId>> {
        Ok(self
            .ids_under(workspace(WS_STAFF, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(UserId)
            .collect())
    }

    /// The patient chats of a workspace.
    pub fn patient_chats(&self, ws: &Workspace) -> Result<Vec<RoomId>> {
        Ok(self
            .ids_under(workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance))?
            .into_iter()
            .map(RoomId)
            .collect())
    }
}

impl WriteBatch {
    pub fn put_care_team_member(&mut self, ws: &Workspace, user: UserId) {
        self.insert(
            &with_id(&workspace(WS_STAFF, &ws.tenant, &ws.instance), user.0),
            &[],
        );
    }

    pub fn put_patient_chat(&mut self, patient: UserId, ws: &Workspace, room: RoomId) {
        self.insert(&one(PATIENT_CHAT, patient.0), &u64_value(room.0));
        self.insert(
            &with_id(
                &workspace(WS_PATIENT_CHAT, &ws.tenant, &ws.instance),
                room.0,
            ),
            &[],
        );
    }
}
