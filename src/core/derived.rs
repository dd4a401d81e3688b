//! Derived records: what follows by a rule from a primary record, written
//! here and nowhere else, into the batch that writes the record it follows
//! — by the writer's jobs as they write primary records, and by restore
//! (`backup`) as it reads a backup's back ([`Rebuild`], through
//! `Store::import`'s callback). A backup holds primary records only.
//!
//! | derived record | follows from |
//! |----------------|--------------|
//! | care-team membership (the workspace's staff and admins) | a user: staff and admins are on their workspace's care team ([`of_user`]) |
//! | the patient-chat index (a patient's chat; a workspace's patient chats) | a patient chat ([`of_room`]) |
//! | search postings (a word of a message) | a message of a patient chat, unless archived ([`of_message`], [`on_archive`]) |
//! | the webhook outbox (a pending delivery) | a new message of a patient chat not sent by the patient, in a workspace with a webhook ([`new_message`], `outbox::queue`) |
//!
//! A message deleted by retention or erasure takes its postings and its
//! delivery, pending or dead, with it ([`on_delete`]).
//!
//! The outbox is the one restore does not rebuild: it is also a queue the
//! webhook worker works through (a delivery leaves it once accepted), so a
//! backup carries its pending and dead deliveries as they are and restore
//! puts them back unchanged. What becomes of a delivery after it is
//! queued: `outbox`.
//!
//! A care team's members are in each of its patient chats too; those are
//! participant records, primary (a member's read marker lives there), and
//! the jobs that add them say so (`patients`).

use std::collections::HashMap;

use super::outbox;
use crate::error::Result;
use crate::model::{words, Message, Role, Room, RoomId, RoomKind, User};
use crate::store::{Record, Store, WriteBatch};

/// Whether `user` is on their workspace's care team — and so in each of
/// its patient chats, now and later: staff and admins are.
pub(crate) fn on_care_team(user: &User) -> bool {
    matches!(user.role, Role::Staff | Role::Admin)
}

/// A user's derived records: care-team membership.
pub(crate) fn of_user(batch: &mut WriteBatch, user: &User) {
    if on_care_team(user) {
        batch.put_care_team_member(&user.workspace, user.id);
    }
}

/// A room's: a patient chat is found by its patient, and listed among its
/// workspace's patient chats.
pub(crate) fn of_room(batch: &mut WriteBatch, room: &Room) {
    if let (RoomKind::Patient, Some(patient)) = (room.kind, room.patient) {
        batch.put_patient_chat(patient, &room.workspace, room.id);
    }
}

/// A message's, in a room of kind `kind`: in a patient chat, and unless
/// archived, the search postings of its words.
pub(crate) fn of_message(batch: &mut WriteBatch, kind: RoomKind, msg: &Message) {
    if kind == RoomKind::Patient && !msg.archived {
        batch.put_postings(msg.room, &words(&msg.text), msg.id);
    }
}

/// A message being archived (`msg`, as it was): its postings go.
pub(crate) fn on_archive(batch: &mut WriteBatch, msg: &Message) {
    batch.remove_postings(msg.room, &words(&msg.text), msg.id);
}

/// A message being deleted (retention, erasure): its postings, and its
/// delivery, pending or dead, go with it. Postings are removed whether or
/// not it was archived (removing what is not there is harmless).
pub(crate) fn on_delete(batch: &mut WriteBatch, msg: &Message) {
    batch.remove_postings(msg.room, &words(&msg.text), msg.id);
    batch.remove_delivery(msg.id);
    batch.remove_dead(msg.id);
}

/// A new message of `room` (the post job's): its derived records, and its
/// delivery queued in the outbox.
pub(crate) fn new_message(
    store: &Store,
    batch: &mut WriteBatch,
    room: &Room,
    msg: &Message,
) -> Result<()> {
    of_message(batch, room.kind, msg);
    outbox::queue(store, batch, room, msg)
}

/// Restore's side: the derived records of a backup's primary records, as
/// `Store::import` writes them. A backup holds rooms before their
/// messages, so a message's room is known by the time it comes.
#[derive(Default)]
pub(crate) struct Rebuild {
    kinds: HashMap<RoomId, RoomKind>,
}

impl Rebuild {
    /// What follows from `record`, into `batch` (the one `record` is in).
    pub(crate) fn record(&mut self, record: &Record, batch: &mut WriteBatch) {
        match record {
            Record::User { user } => of_user(batch, user),
            Record::Room { room } => {
                self.kinds.insert(room.id, room.kind);
                of_room(batch, room);
            }
            Record::Message { message } => {
                if let Some(&kind) = self.kinds.get(&message.room) {
                    of_message(batch, kind, message);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::backup;
    use crate::core::messages::PostAs;
    use crate::core::patients::PatientChat;
    use crate::core::testing::{clinic, hook, open_restored, user};
    use crate::core::{Admin, Core};
    use crate::model::{external_id, Delivery, MsgId, UserId, Workspace};

    /// What a store derived, read back: the raw keyspaces, and as the
    /// core reads them.
    #[derive(Debug, PartialEq)]
    struct Derived {
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        hits: Vec<Vec<MsgId>>,
        care_team: Vec<UserId>,
        patient_chats: Vec<RoomId>,
        outbox: Vec<Delivery>,
    }

    fn derived(core: &Core, chats: &[&PatientChat]) -> Derived {
        let ws = Workspace::new("a", "main").unwrap();
        let all = (MsgId(0), MsgId(u64::MAX));
        let mut hits = Vec::new();
        for ch in chats {
            for q in ["knee", "exercises", "dm"] {
                let found = core.search_chat(ch, &words(q), all, 10, false).unwrap();
                hits.push(found.iter().map(|m| m.id).collect());
            }
        }
        Derived {
            keys: core.store.derived_keyspaces(),
            hits,
            care_team: core.store.care_team(&ws).unwrap(),
            patient_chats: core.store.patient_chats(&ws).unwrap(),
            outbox: core.pending_deliveries(MsgId(0), 100).unwrap(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn restore_derives_what_the_writers_jobs_derived() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(&dir.path().join("live")).await;
        let ws = c.pat.workspace.clone();
        c.core
            .set_webhook(&Admin::operator(), ws.clone(), hook())
            .await
            .unwrap();
        let ch = c.chat(&c.pat).await.unwrap();
        let other = c
            .core
            .patient_chat(&c.staff, "a", "main", &c.other_pat.id.to_string())
            .await
            .unwrap();
        // Joins the care team after the chats exist.
        let late = user(&c.core, "late", Role::Admin, "a").await;
        let post = |who, chat, text: &str, inbound: bool| {
            let (core, text) = (c.core.clone(), text.to_owned());
            async move {
                let m = if inbound {
                    core.inbound(who, chat, text).await
                } else {
                    core.outbound(who, chat, text).await
                };
                m.unwrap().id
            }
        };
        let from_pat = post(&c.pat, &ch, "knee pain", true).await;
        let for_pat = post(&late, &ch, "knee again", true).await;
        let to_pat = post(&c.staff, &ch, "knee exercises", false).await;
        let aside = post(&late, &ch, "exercises", false).await;
        let elsewhere = post(&c.staff, &other, "knee", false).await;
        let dm = c.core.create_dm(&c.staff, late.id).await.unwrap();
        c.core
            .post(&c.staff, dm, "knee dm".into(), PostAs::default())
            .await
            .unwrap();
        c.core
            .archive(&c.staff, &ch, &[external_id(aside)])
            .await
            .unwrap();

        let live = derived(&c.core, &[&ch, &other]);
        assert_eq!(live.hits[0], [to_pat, for_pat, from_pat]);
        assert_eq!(live.hits[1], [to_pat], "the archived message is not found");
        assert!(live.hits[2].is_empty(), "a DM is not indexed");
        assert_eq!(live.hits[3], [elsewhere]);
        assert_eq!(live.care_team, [c.staff.id, late.id]);
        assert_eq!(live.patient_chats, [ch.room, other.room]);
        // Staff writing to a patient queue a delivery each; the patient's
        // messages (their own, or written for them) do not, nor does a DM.
        let queued: Vec<MsgId> = live.outbox.iter().map(|d| d.message).collect();
        assert_eq!(queued, [to_pat, aside, elsewhere]);

        let file = tokio::task::spawn_blocking({
            let core = c.core.clone();
            move || {
                let mut file = Vec::new();
                core.backup(&mut file).unwrap();
                file
            }
        })
        .await
        .unwrap();
        c.core.shutdown();
        let path = dir.path().join("backup.jsonl");
        std::fs::write(&path, file).unwrap();
        backup::restore(&path, &dir.path().join("restored"), false).unwrap();
        let restored = open_restored(&dir.path().join("restored"));
        assert_eq!(derived(&restored, &[&ch, &other]), live);
        restored.shutdown();
    }
}
