//! Patient chats (API.md §5): each patient has exactly one care-team chat,
//! the patient plus the staff and admins of their workspace. It is an
//! ordinary room for the other dialects. Here: access, inbound/outbound,
//! archive, id-bordered pages and search (the webhook settings and
//! deliveries: `webhooks`).
//!
//! Commit-time side effects of posting into a patient chat (search
//! postings, the webhook outbox) are written by the post job itself
//! (`messages.rs`), in the same atomic batch as the message.

use super::audit::{self, Actor, Entry, ToShow};
use super::messages::PostAs;
use super::Core;
use crate::error::{Error, Result};
use crate::model::{
    parse_external_id, words, Delivery, Message, MsgId, Participant, Role, Room, RoomId, RoomKind,
    User, UserId,
};
use crate::store::{Store, WriteBatch};

/// A patient's chat, as resolved for a caller allowed to use it.
#[derive(Clone, Debug)]
pub struct PatientChat {
    pub room: RoomId,
    pub patient: User,
    /// The caller it was resolved for: who reads what it shows.
    pub reader: UserId,
}

/// Where a page starts. Pages are newest first; ids, not offsets, so a walk
/// visits every message once even while new ones arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    Newest,
    /// Messages with ids below this one (exclusive)…
    Below(MsgId),
    /// …or at or below it (a hit opened with its own `nextPageToken`).
    AtOrBelow(MsgId),
    /// Messages with ids above this one (exclusive)…
    Above(MsgId),
    /// …or at or above it.
    AtOrAbove(MsgId),
}

/// A page, newest first, and whether there is more on either side.
#[derive(Clone, Debug)]
pub struct Page {
    pub messages: Vec<Message>,
    pub older: bool,
    pub newer: bool,
}

pub const MAX_PAGE: usize = 100;

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
            || (matches!(caller.role, Role::Staff | Role::Admin)
                && caller.workspace == patient.workspace);
        if patient.role != Role::Patient || !ws_matches || !allowed {
            return Err(hidden());
        }
        let reader = caller.id;
        if let Some(room) = self.store.patient_chat(patient.id)? {
            return Ok(PatientChat {
                room,
                patient,
                reader,
            });
        }
        let (pid, ws) = (patient.id, patient.workspace.clone());
        let room = self
            .commit
            .run(move |tx| {
                // Looked up again in the writer: concurrent first uses make
                // one chat.
                if let Some(room) = tx.store.patient_chat(pid)? {
                    return Ok((room, vec![]));
                }
                let room = tx.next_room_id();
                tx.batch.put_room(&Room {
                    id: room,
                    kind: RoomKind::Patient,
                    name: None,
                    workspace: ws.clone(),
                    created_ms: tx.now_ms,
                    patient: Some(pid),
                });
                let p = Participant {
                    joined_ms: tx.now_ms,
                    ..Participant::default()
                };
                tx.batch.put_participant(room, pid, &p);
                for member in tx.store.care_team(&ws)? {
                    tx.batch.put_participant(room, member, &p);
                }
                tx.batch.put_patient_chat(pid, &ws, room);
                Ok((room, vec![]))
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
        let room = chat.room;
        let entry = Entry::new(audit::Kind::ChatArchive, Actor::User(caller.id))
            .workspace(&chat.patient.workspace)
            .patient(chat.patient.id)
            .detail("room", room.to_string());
        self.commit
            .run(move |tx| {
                let mut archived = Vec::new();
                for id in ids {
                    let Some(mut m) = tx.store.message(id)? else {
                        continue;
                    };
                    if !m.archived {
                        m.archived = true;
                        tx.batch.remove_postings(room, &words(&m.text), id);
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

    /// A page of the chat's history, newest first, from `border`, to show
    /// once its read is recorded (`Core::show`). Archived messages are
    /// skipped unless `include_archived`.
    pub fn history_page(
        &self,
        chat: &PatientChat,
        border: Border,
        size: usize,
        include_archived: bool,
    ) -> Result<ToShow<Page>> {
        Ok(shown(
            chat,
            self.page(chat, border, size, include_archived)?,
        ))
    }

    fn page(
        &self,
        chat: &PatientChat,
        border: Border,
        size: usize,
        include_archived: bool,
    ) -> Result<Page> {
        let size = size.clamp(1, MAX_PAGE);
        let visible = self.commit.visible();
        let keep = |m: &std::result::Result<Message, crate::store::StoreError>| {
            m.as_ref().map_or(true, |m| include_archived || !m.archived)
        };
        let room = chat.room;
        let (mut messages, more, walking_down) = match border {
            Border::Newest | Border::Below(_) | Border::AtOrBelow(_) => {
                let upper = match border {
                    Border::Below(x) => MsgId(x.0.saturating_sub(1)),
                    Border::AtOrBelow(x) => x,
                    _ => visible,
                }
                .min(visible);
                let mut v: Vec<Message> = self
                    .store
                    .room_messages(room, MsgId(0), upper)
                    .rev()
                    .filter(keep)
                    .take(size + 1)
                    .collect::<std::result::Result<_, _>>()?;
                let more = v.len() > size;
                v.truncate(size);
                (v, more, true)
            }
            Border::Above(x) | Border::AtOrAbove(x) => {
                let lower = if border == Border::Above(x) {
                    x
                } else {
                    MsgId(x.0.saturating_sub(1))
                };
                let mut v: Vec<Message> = self
                    .store
                    .room_messages(room, lower, visible)
                    .filter(keep)
                    .take(size + 1)
                    .collect::<std::result::Result<_, _>>()?;
                let more = v.len() > size;
                v.truncate(size);
                v.reverse();
                (v, more, false)
            }
        };
        // The other side: is there anything beyond the page's far edge?
        let beyond = |newer: bool, edge: MsgId| -> Result<bool> {
            let mut scan: Box<dyn Iterator<Item = _>> = if newer {
                Box::new(self.store.room_messages(room, edge, visible))
            } else {
                Box::new(
                    self.store
                        .room_messages(room, MsgId(0), MsgId(edge.0.saturating_sub(1)))
                        .rev(),
                )
            };
            Ok(scan.find(|m| keep(m)).transpose()?.is_some())
        };
        let (older, newer) = if walking_down {
            let top = match (messages.first(), border) {
                (Some(m), _) => m.id,
                (None, Border::Below(x)) => MsgId(x.0.saturating_sub(1)),
                (None, Border::AtOrBelow(x)) => x,
                (None, _) => visible,
            };
            (more, border != Border::Newest && beyond(true, top)?)
        } else {
            let bottom = match (messages.last(), border) {
                (Some(m), _) => m.id,
                (None, Border::Above(x)) => MsgId(x.0 + 1),
                (None, _) => border_id(border),
            };
            (beyond(false, bottom)?, more)
        };
        messages.shrink_to_fit();
        Ok(Page {
            messages,
            older,
            newer,
        })
    }

    /// A page of search hits from `border`, newest first, shaped like a
    /// history page, to show once its read is recorded (`Core::show`).
    pub fn search_page(
        &self,
        chat: &PatientChat,
        words: &[String],
        border: Border,
        size: usize,
    ) -> Result<ToShow<Page>> {
        const ALL: MsgId = MsgId(u64::MAX);
        let size = size.clamp(1, MAX_PAGE);
        let down = |below: MsgId, first: bool| -> Result<Page> {
            let mut messages = self.search_chat(chat, words, (MsgId(0), below), size + 1, false)?;
            let older = messages.len() > size;
            messages.truncate(size);
            let top = messages
                .first()
                .map_or(MsgId(below.0.saturating_sub(1)), |m| m.id);
            let newer = !first
                && !self
                    .search_chat(chat, words, (top, ALL), 1, true)?
                    .is_empty();
            Ok(Page {
                messages,
                older,
                newer,
            })
        };
        let up = |after: MsgId| -> Result<Page> {
            let mut messages = self.search_chat(chat, words, (after, ALL), size + 1, true)?;
            let newer = messages.len() > size;
            messages.truncate(size);
            messages.reverse();
            let bottom = messages
                .last()
                .map_or(MsgId(after.0.saturating_add(1)), |m| m.id);
            let older = !self
                .search_chat(chat, words, (MsgId(0), bottom), 1, false)?
                .is_empty();
            Ok(Page {
                messages,
                older,
                newer,
            })
        };
        let page = match border {
            Border::Newest => down(ALL, true),
            Border::Below(x) => down(x, false),
            Border::AtOrBelow(x) => down(MsgId(x.0.saturating_add(1)), false),
            Border::Above(x) => up(x),
            Border::AtOrAbove(x) => up(MsgId(x.0.saturating_sub(1))),
        }?;
        Ok(shown(chat, page))
    }

    /// Search hits of the chat, `after < id < below`, newest first (or the
    /// `limit` nearest above `after`, with `ascending`), archived excluded.
    pub(crate) fn search_chat(
        &self,
        chat: &PatientChat,
        query: &[String],
        range: (MsgId, MsgId),
        limit: usize,
        ascending: bool,
    ) -> Result<Vec<Message>> {
        // A word too long to be indexed is in no message's postings: the
        // query matches nothing (rather than matching without that word).
        if query.iter().any(|w| w.len() > crate::store::keys::MAX_WORD) {
            return Ok(Vec::new());
        }
        let below = range.1.min(MsgId(self.commit.visible().0 + 1));
        let ids = self
            .store
            .search(chat.room, query, (range.0, below), limit, ascending)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.store.message(id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The border for `find?date=`: the newest message at or before `ms`
    /// (`before`), or the oldest at or after it.
    pub fn border_at(&self, ms: u64, before: bool) -> Result<Border> {
        let visible = self.commit.visible();
        Ok(if before {
            let first_after = self.store.first_id_at(ms.saturating_add(1), visible)?;
            Border::AtOrBelow(MsgId(first_after.0 - 1))
        } else {
            Border::AtOrAbove(self.store.first_id_at(ms, visible)?)
        })
    }

    /// The key that authenticates page tokens.
    pub fn page_token_key(&self) -> Result<[u8; 32]> {
        Ok(self.store.page_token_key()?)
    }
}

/// A page of `chat`, held until its read is recorded.
fn shown(chat: &PatientChat, page: Page) -> ToShow<Page> {
    let ids: Vec<MsgId> = page.messages.iter().map(|m| m.id).collect();
    let mut read = ToShow::new(page, chat.reader);
    read.note(chat.room, chat.patient.id, &chat.patient.workspace, ids);
    read
}

fn border_id(b: Border) -> MsgId {
    match b {
        Border::Newest => MsgId(u64::MAX),
        Border::Below(x) | Border::AtOrBelow(x) | Border::Above(x) | Border::AtOrAbove(x) => x,
    }
}

/// Commit-time effects of a new message in a patient chat: search
/// postings, and — when the sender is not the patient and the workspace
/// has a webhook — a pending delivery, in the same batch.
pub(crate) fn on_patient_message(
    store: &Store,
    batch: &mut WriteBatch,
    room: &Room,
    msg: &Message,
) -> Result<()> {
    batch.put_postings(room.id, &words(&msg.text), msg.id);
    if room.patient != Some(msg.sender) && store.webhook(&room.workspace)?.is_some() {
        if let Some(patient) = room.patient {
            batch.put_delivery(&Delivery {
                message: msg.id,
                patient,
                workspace: room.workspace.clone(),
                text: msg.text.clone(),
                at_ms: msg.at_ms,
            });
        }
    }
    Ok(())
}

/// Staff and admins join their workspace's care team: every patient chat
/// there, now and later.
pub(crate) fn on_new_user(
    store: &Store,
    batch: &mut WriteBatch,
    user: &User,
    now_ms: u64,
) -> Result<()> {
    if !matches!(user.role, Role::Staff | Role::Admin) {
        return Ok(());
    }
    batch.put_care_team_member(&user.workspace, user.id);
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
    use crate::core::limits::Limits;
    use crate::core::Admin;
    use crate::error::Kind;
    use crate::model::Webhook;
    use std::sync::Arc;

    struct Clinic {
        core: Arc<Core>,
        staff: User,
        pat: User,
        other_pat: User,
        outsider: User,
    }

    use crate::core::testing::user;

    async fn clinic(dir: &std::path::Path) -> Clinic {
        let limits = Limits {
            msg_burst: 1_000_000,
            msg_rate: 1_000_000,
            ..Limits::default()
        };
        let core = Core::open(dir, limits).unwrap();
        Clinic {
            staff: user(&core, "nurse", Role::Staff, "a").await,
            pat: user(&core, "pat", Role::Patient, "a").await,
            other_pat: user(&core, "pat2", Role::Patient, "a").await,
            outsider: user(&core, "doc-b", Role::Staff, "b").await,
            core,
        }
    }

    async fn chat(c: &Clinic, caller: &User) -> Result<PatientChat> {
        c.core
            .patient_chat(caller, "a", "main", &c.pat.id.to_string())
            .await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_chat_per_patient_open_to_the_patient_and_their_care_team_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let (x, y) = tokio::join!(chat(&c, &c.pat), chat(&c, &c.staff));
        assert_eq!(x.unwrap().room, y.unwrap().room);
        for who in [&c.other_pat, &c.outsider] {
            assert_eq!(chat(&c, who).await.unwrap_err().kind, Kind::NotFound);
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
        let room = chat(&c, &c.pat).await.unwrap().room;
        assert!(c.core.room_info(&late, room).is_ok());
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn inbound_is_the_patients_and_outbound_the_staffs() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let ch = chat(&c, &c.pat).await.unwrap();
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

    /// A history page, shown (its read recorded).
    async fn page(
        c: &Clinic,
        ch: &PatientChat,
        border: Border,
        size: usize,
        archived: bool,
    ) -> Page {
        let read = c.core.history_page(ch, border, size, archived).unwrap();
        c.core.show(read).await.unwrap()
    }

    fn ids(p: &Page) -> Vec<u64> {
        p.messages.iter().map(|m| m.id.0).collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pages_walk_both_ways_once_each_while_messages_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let ch = chat(&c, &c.pat).await.unwrap();
        let mut all = Vec::new();
        for i in 0..25 {
            all.push(
                c.core
                    .inbound(&c.pat, &ch, format!("m{i}"))
                    .await
                    .unwrap()
                    .id
                    .0,
            );
        }
        // Down (older) from the newest, with arrivals between pages.
        let mut seen = Vec::new();
        let mut page = page(&c, &ch, Border::Newest, 7, false).await;
        assert!(!page.newer && page.older);
        loop {
            seen.extend(ids(&page));
            c.core.inbound(&c.pat, &ch, "late".into()).await.unwrap();
            if !page.older {
                break;
            }
            let last = page.messages.last().unwrap().id;
            page = self::page(&c, &ch, Border::Below(last), 7, false).await;
            assert!(page.newer);
        }
        let mut want = all.clone();
        want.reverse();
        assert_eq!(seen, want);
        // Up (newer) from the oldest: every message once, arrivals included.
        let oldest = MsgId(all[0]);
        let mut up = Vec::new();
        let mut page = self::page(&c, &ch, Border::AtOrAbove(oldest), 6, false).await;
        assert!(!page.older);
        loop {
            let mut p = ids(&page);
            p.reverse();
            up.extend(p);
            if !page.newer {
                break;
            }
            let first = page.messages.first().unwrap().id;
            page = self::page(&c, &ch, Border::Above(first), 6, false).await;
        }
        assert_eq!(up.len(), 25 + 4);
        assert!(up.windows(2).all(|w| w[0] < w[1]));
        c.core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn archive_hides_from_history_and_search_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let ch = chat(&c, &c.pat).await.unwrap();
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
        let c = clinic(dir.path()).await;
        let ch = chat(&c, &c.pat).await.unwrap();
        c.core
            .outbound(&c.staff, &ch, "before the hook".into())
            .await
            .unwrap();
        let hook = Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            api_key: "k".into(),
            api_secret: "s".into(),
        };
        let bad = Webhook {
            url: "ftp://x".into(),
            ..hook.clone()
        };
        assert!(c
            .core
            .set_webhook(&Admin::operator(), c.pat.workspace.clone(), bad)
            .await
            .is_err());
        c.core
            .set_webhook(&Admin::operator(), c.pat.workspace.clone(), hook)
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

    #[tokio::test(flavor = "multi_thread")]
    async fn border_at_a_time_includes_an_exact_match_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let c = clinic(dir.path()).await;
        let ch = chat(&c, &c.pat).await.unwrap();
        let mut ms = Vec::new();
        for i in 0..3 {
            ms.push(c.core.inbound(&c.pat, &ch, format!("m{i}")).await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let at = ms[1].at_ms;
        assert_eq!(
            c.core.border_at(at, true).unwrap(),
            Border::AtOrBelow(ms[1].id)
        );
        assert_eq!(
            c.core.border_at(at, false).unwrap(),
            Border::AtOrAbove(ms[1].id)
        );
        assert_eq!(
            c.core.border_at(at + 1, false).unwrap(),
            Border::AtOrAbove(ms[2].id)
        );
        c.core.shutdown();
    }
}
