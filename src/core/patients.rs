//! Patient chats (API.md §5): each patient has exactly one care-team chat,
//! the patient plus the staff and admins of their workspace. It is an
//! ordinary room for the other dialects. Here: access, inbound/outbound,
//! archive (its pages and search: `pages`; the webhook settings and
//! deliveries: `webhooks`, `outbox`).
//!
//! What follows from a chat, its members and its messages — the
//! patient-chat index, care-team membership, search postings, the webhook
//! outbox — is written by `derived`, in the same atomic batch as what it
//! follows from.

use super::audit::{self, Actor, Entry};
use super::derived;
use super::messages::PostAs;
use super::Core;
use crate::error::{Error, Result};
use crate::model::{
    parse_external_id, Message, Participant, Role, Room, RoomId, RoomKind, User, UserId,
};
use crate::store::{Store, WriteBatch};

// A chat's pages are `pages`'; the patient dialect and the fuzz targets
// name them from here.

/// A patient's chat, as resolved for a caller allowed to use it.
#[derive(Clone, Debug)]
pub struct PatientChat {
    pub room: RoomId,
    pub patient: User,
    /// The caller it was resolved for: who reads what it shows.
    pub reader: UserId,
}

impl Core {
    /// The chat of patient `patient` in workspace `(tenant, instance)`,
    /// made on first use. Allowed: the patient, and staff or admins of that
    /// workspace. Anything else — another workspace, a user who is not a
    /// patient, no such user — is the same `NOT_FOUND`.
    pub async fn patient_chat(
        &self,
        caller: &User,
        tenant: &str,
        instance: &str,
        patient: &str,
    ) -> Result<PatientChat> {
        let hidden = || Error::not_found("no such patient");
        let id = UserId::parse(patient).ok_or_else(hidden)?;
        let patient = self.store.user(id)?.ok_or_else(hidden)?;
        let ws_matches =
            patient.workspace.tenant == tenant && patient.workspace.instance == instance;
        let allowed = caller.id == patient.id
            || (derived::on_care_team(caller) && caller.workspace == patient.workspace);
        if patient.role != Role::Patient || !ws_matches || !allowed {
            return Err(hidden());
        }
        let reader = caller.id;
        // The index entry reaches sled after the room it names (a group's
        // writes are applied in the order they were staged).
        if let Some(room) = self.store.patient_chat(patient.id)? {
            return Ok(PatientChat {
                room,
                patient,
                reader,
            });
        }
        self.make_patient_chat(patient, reader).await
    }

    /// The patient's chat as the writer finds it, made if there is none.
    async fn make_patient_chat(&self, patient: User, reader: UserId) -> Result<PatientChat> {
        let (pid, ws) = (patient.id, patient.workspace.clone());
        let room = self
            .commit
            .run(move |tx| {
                // Looked up again in the writer: concurrent first uses make
                // one chat.
                if let Some(room) = tx.store.patient_chat(pid)? {
                    return Ok((room, vec![]));
                }
                let room = Room {
                    id: tx.next_room_id(),
                    kind: RoomKind::Patient,
                    name: None,
                    workspace: ws,
                    created_ms: tx.now_ms,
                    patient: Some(pid),
                };
                tx.batch.put_room(&room);
                derived::of_room(&mut tx.batch, &room);
                let p = Participant {
                    joined_ms: tx.now_ms,
                    ..Participant::default()
                };
                tx.batch.put_participant(room.id, pid, &p);
                for member in tx.store.care_team(&room.workspace)? {
                    tx.batch.put_participant(room.id, member, &p);
                }
                Ok((room.id, vec![]))
            })
            .await?;
        Ok(PatientChat {
            room,
            patient,
            reader,
        })
    }

    /// `inbound`: a message from the patient — sent by the patient, or by
    /// staff on the patient's behalf (the sender is the patient either way).
    pub async fn inbound(
        &self,
        caller: &User,
        chat: &PatientChat,
        text: String,
    ) -> Result<Message> {
        let how = PostAs {
            on_behalf_of: (caller.id != chat.patient.id).then_some(chat.patient.id),
            ..PostAs::default()
        };
        self.post(caller, chat.room, text, how).await
    }

    /// `outbound`: a message from the care team. The patient may not.
    pub async fn outbound(
        &self,
        caller: &User,
        chat: &PatientChat,
        text: String,
    ) -> Result<Message> {
        if caller.id == chat.patient.id {
            return Err(Error::forbidden("a patient cannot send as the care team"));
        }
        self.post(caller, chat.room, text, PostAs::default()).await
    }

    /// `archive`: hides messages of the chat from history and search
    /// (staff and admins only). Every id must be a message of this chat.
    pub async fn archive(
        &self,
        caller: &User,
        chat: &PatientChat,
        external_ids: &[String],
    ) -> Result<()> {
        if caller.id == chat.patient.id {
            return Err(Error::forbidden("only the care team may archive messages"));
        }
        let mut ids = Vec::with_capacity(external_ids.len());
        for e in external_ids {
            let id = parse_external_id(e)
                .filter(|id| *id <= self.commit.visible())
                .filter(|id| matches!(self.store.message(*id), Ok(Some(m)) if m.room == chat.room))
                .ok_or_else(|| Error::not_found(format!("no message {e:?} in this chat")))?;
            ids.push(id);
        }
        let entry = Entry::new(audit::Kind::ChatArchive, Actor::User(caller.id))
            .workspace(&chat.patient.workspace)
            .patient(chat.patient.id)
            .detail("room", chat.room.to_string());
        self.commit
            .run(move |tx| {
                let mut archived = Vec::new();
                for id in ids {
                    let Some(mut m) = tx.store.message(id)? else {
                        continue;
                    };
                    if !m.archived {
                        derived::on_archive(&mut tx.batch, &m);
                        m.archived = true;
                        tx.batch.put_message(&m);
                        archived.push(id.to_string());
                    }
                }
                let entry = entry
                    .detail("count", archived.len())
                    .detail("messages", archived);
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await
    }
}

/// Staff and admins join their workspace's care team: every patient chat
/// there, now (participant records, here) and later (the care team, a
/// derived record: `derived::of_user`).
pub(crate) fn on_new_user(
    store: &Store,
    batch: &mut WriteBatch,
    user: &User,
    now_ms: u64,
) -> Result<()> {
    derived::of_user(batch, user);
    if !derived::on_care_team(user) {
        return Ok(());
    }
    let p = Participant {
        joined_ms: now_ms,
        ..Participant::default()
    };
    for room in store.patient_chats(&user.workspace)? {
        batch.put_participant(room, user.id, &p);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pages::tests::{ids, page};
    use crate::core::pages::Border;
    use crate::core::testing::{clinic, clinic_and_chat, hook, user, Clinic};
    use crate::core::Admin;
    use crate::error::Kind;
    use crate::model::{words, MsgId, Webhook};

    #[tokio::test(flavor = "multi_thread")]
    async fn one_chat_per_patient_open_to_the_patient_and_their_care_team_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let (x, y) = tokio::join!(c.chat(&c.pat), c.chat(&c.staff));
        assert_eq!(x.unwrap().room, y.unwrap().room);
        for who in [&c.other_pat, &c.outsider] {
            assert_eq!(c.chat(who).await.unwrap_err().kind, Kind::NotFound);
        }
        // Wrong workspace in the path, or a staff id as "patient": hidden.
        let wrong = c
            .core
            .patient_chat(&c.staff, "b", "main", &c.pat.id.to_string())
            .await;
        assert_eq!(wrong.unwrap_err().kind, Kind::NotFound);
        let staff_as_patient = c
            .core
            .patient_chat(&c.staff, "a", "main", &c.staff.id.to_string())
            .await;
        assert_eq!(staff_as_patient.unwrap_err().kind, Kind::NotFound);
        // Staff created later join existing chats.
        let late = user(&c.core, "late", Role::Staff, "a").await;
        let room = c.chat(&c.pat).await.unwrap().room;
        assert!(c.core.room_info(&late, room).is_ok());
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn inbound_is_the_patients_and_outbound_the_staffs() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let m = c
            .core
            .inbound(&c.staff, &ch, "for pat".into())
            .await
            .unwrap();
        assert_eq!((m.sender, m.author), (c.pat.id, Some(c.staff.id)));
        let m = c
            .core
            .outbound(&c.staff, &ch, "from staff".into())
            .await
            .unwrap();
        assert_eq!(m.sender, c.staff.id);
        let e = c.core.outbound(&c.pat, &ch, "x".into()).await.unwrap_err();
        assert_eq!(e.kind, Kind::Forbidden);
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn archive_hides_from_history_and_search_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let a = c
            .core
            .inbound(&c.pat, &ch, "Hello World".into())
            .await
            .unwrap();
        let b = c
            .core
            .outbound(&c.staff, &ch, "hello there, world".into())
            .await
            .unwrap();
        let q = words("WORLD hello");
        let hits = |c: &Clinic| -> Vec<u64> {
            c.core
                .search_chat(&ch, &q, (MsgId(0), MsgId(u64::MAX)), 10, false)
                .unwrap()
                .iter()
                .map(|m| m.id.0)
                .collect()
        };
        assert_eq!(hits(&c), [b.id.0, a.id.0]);
        let e = c
            .core
            .archive(&c.pat, &ch, &[crate::model::external_id(a.id)])
            .await;
        assert_eq!(e.unwrap_err().kind, Kind::Forbidden);
        c.core
            .archive(&c.staff, &ch, &[crate::model::external_id(a.id)])
            .await
            .unwrap();
        assert_eq!(hits(&c), [b.id.0]);
        assert_eq!(
            ids(&page(&c, &ch, Border::Newest, 10, false).await),
            [b.id.0]
        );
        assert_eq!(
            ids(&page(&c, &ch, Border::Newest, 10, true).await),
            [b.id.0, a.id.0]
        );
        // An id of another chat, or garbage, is refused and archives nothing.
        let other = c
            .core
            .patient_chat(&c.staff, "a", "main", &c.other_pat.id.to_string())
            .await
            .unwrap();
        let foreign = c
            .core
            .inbound(&c.other_pat, &other, "x".into())
            .await
            .unwrap();
        for bad in [crate::model::external_id(foreign.id), "IMzz".into()] {
            let e = c.core.archive(&c.staff, &ch, &[bad]).await.unwrap_err();
            assert_eq!(e.kind, Kind::NotFound);
        }
        // A word too long to index matches nothing, even beside one that
        // matches; a message holding one is still found by its other words.
        let long = "x".repeat(crate::store::keys::MAX_WORD + 1);
        let q_long = words(&format!("hello {long}"));
        assert!(c
            .core
            .search_chat(&ch, &q_long, (MsgId(0), MsgId(u64::MAX)), 10, false)
            .unwrap()
            .is_empty());
        let m = c
            .core
            .inbound(&c.pat, &ch, format!("{long} zebra"))
            .await
            .unwrap();
        let z = c
            .core
            .search_chat(&ch, &words("ZEBRA"), (MsgId(0), MsgId(u64::MAX)), 10, false)
            .unwrap();
        assert_eq!(z.iter().map(|m| m.id).collect::<Vec<_>>(), [m.id]);
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn staff_messages_queue_a_webhook_delivery_and_patient_messages_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        c.core
            .outbound(&c.staff, &ch, "before the hook".into())
            .await
            .unwrap();
        let bad = Webhook {
            url: "ftp://x".into(),
            ..hook()
        };
        assert!(c
            .core
            .set_webhook(&Admin::operator(), c.pat.workspace.clone(), bad)
            .await
            .is_err());
        c.core
            .set_webhook(&Admin::operator(), c.pat.workspace.clone(), hook())
            .await
            .unwrap();
        c.core
            .inbound(&c.pat, &ch, "from patient".into())
            .await
            .unwrap();
        c.core
            .inbound(&c.staff, &ch, "for patient".into())
            .await
            .unwrap();
        let m = c
            .core
            .outbound(&c.staff, &ch, "from staff".into())
            .await
            .unwrap();
        let pending = c.core.pending_deliveries(MsgId(0), 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].message,
                pending[0].patient,
                pending[0].text.as_str()
            ),
            (m.id, c.pat.id, "from staff")
        );
        c.core.delivered(m.id).await.unwrap();
        assert!(c.core.pending_deliveries(MsgId(0), 10).unwrap().is_empty());
        c.core.shutdown();
    }
}
