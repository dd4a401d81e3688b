//! Retention and legal holds (API.md §8): each workspace's policy, the
//! holds that stop it, and the purge that applies it.
//!
//! A purge run walks every room a page at a time, off the writer: in a
//! workspace with a retention of N days, a room's messages older than N
//! days go; in an erased patient's chat (`erasure`), all of them. It reads
//! what to delete outside the writer, oldest first ([`Store::
//! messages_before`]: the cost is what it takes), and deletes it in jobs
//! of at most [`CHUNK`] messages, a short pause apart, each checking the
//! holds again: a hold
//! set while a run goes on stops it there, and chat never waits long
//! behind a purge. With each message go its postings and its webhook
//! delivery (`derived::on_delete`); its log entry stays, marked, so ids
//! are never given again. Once a run deleted anything, the store is
//! compacted (`Store::compact_with`: the deleted text leaves every file), and
//! only then is the run's one `retention.purge` record written, with its
//! counts: the record says the purge is done.
//!
//! The daemon runs a purge every `--purge-interval-secs` (30 minutes by
//! default: a message is gone within an hour of crossing its line).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::audit::{self, Actor, Entry};
use super::{derived, Admin, Core};
use crate::error::{Error, Result};
use crate::model::{Hold, Message, Role, Room, RoomId, UserId, Workspace};
use crate::store::Swap;

pub const DAY_MS: u64 = 86_400_000;
/// The longest retention: a century.
pub const MAX_DAYS: u64 = 36_500;
/// Messages deleted per writer job: a job's writes stay small, so the
/// messages committed in its group wait little for it.
pub const CHUNK: usize = 64;
/// The pause between two delete jobs of a purge: the writer's time goes
/// to chat first.
const BETWEEN_CHUNKS: Duration = Duration::from_millis(2);
/// Rooms read per page of a purge's walk.
const ROOMS_PAGE: usize = 512;
const MAX_REASON_BYTES: usize = 1024;

/// What a purge run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Messages deleted.
    pub messages: u64,
    /// Rooms that lost messages.
    pub rooms: u64,
    /// Rooms left alone under a legal hold although they had messages due.
    pub held: u64,
}

impl Core {
    /// `PUT /admin/retention` and `parlor retention set`: keep a
    /// workspace's messages `days` days (`None`: forever). Refused
    /// (`CONFLICT`) while the workspace is under a legal hold.
    pub async fn set_retention(
        &self,
        admin: &Admin<'_>,
        ws: Workspace,
        days: Option<u64>,
    ) -> Result<()> {
        if let Some(d) = days {
            if !(1..=MAX_DAYS).contains(&d) {
                return Err(Error::bad_request(format!(
                    "days must be 1 to {MAX_DAYS}, or null to keep messages forever"
                )));
            }
        }
        let entry = Entry::new(audit::Kind::RetentionSet, admin.actor().recorded())
            .workspace(&ws)
            .detail("days", json!(days));
        self.commit
            .run(move |tx| {
                if tx.store.held(&ws, None)? {
                    return Err(under_hold());
                }
                tx.batch.put_retention(&ws, days);
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await
    }

    /// `PUT /admin/holds` and `parlor hold set|clear`: sets or lifts a
    /// legal hold on one patient's chat (`patient`: a patient of the
    /// workspace, else `NOT_FOUND`) or on the whole workspace. Setting one
    /// needs a reason; lifting one that is not there changes nothing.
    pub async fn set_hold(
        &self,
        admin: &Admin<'_>,
        ws: Workspace,
        patient: Option<UserId>,
        hold: bool,
        reason: String,
    ) -> Result<()> {
        if hold && reason.trim().is_empty() {
            return Err(Error::bad_request("a hold needs a reason"));
        }
        if reason.len() > MAX_REASON_BYTES || reason.chars().any(char::is_control) {
            return Err(Error::bad_request(format!(
                "reason must be at most {MAX_REASON_BYTES} bytes without control characters"
            )));
        }
        let mut entry = Entry::new(audit::Kind::HoldSet, admin.actor().recorded())
            .workspace(&ws)
            .detail("hold", hold)
            .detail("reason", reason.clone());
        if let Some(p) = patient {
            entry = entry.patient(p);
        }
        self.commit
            .run(move |tx| {
                if let Some(p) = patient {
                    match tx.store.user(p)? {
                        Some(u) if u.workspace == ws && u.role == Role::Patient => {}
                        _ => return Err(Error::not_found("no such patient")),
                    }
                }
                let h = Hold {
                    reason,
                    at_ms: tx.now_ms,
                };
                tx.batch.put_hold(&ws, patient, hold.then_some(&h));
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await
    }

    /// One purge run at `now_ms` (see the module's doc). `None` when there
    /// was nothing to apply: no workspace has a retention and no patient
    /// was erased.
    pub async fn purge(self: &Arc<Self>, now_ms: u64) -> Result<Option<Purged>> {
        let (policies, erased) = {
            let core = self.clone();
            super::blocking(move || {
                let policies: HashMap<Workspace, u64> =
                    core.store.retentions()?.into_iter().collect();
                let erased: HashSet<RoomId> = core.store.erased_chats()?.into_iter().collect();
                Ok::<_, Error>((policies, erased))
            })
            .await?
        };
        if policies.is_empty() && erased.is_empty() {
            return Ok(None);
        }
        let mut purged = Purged::default();
        let mut after = RoomId(0);
        loop {
            let page = {
                let store = self.store.clone();
                super::blocking(move || Ok::<_, Error>(store.rooms_after(after, ROOMS_PAGE)?))
                    .await?
            };
            let Some(last) = page.last() else { break };
            after = last.id;
            for room in page {
                let before_ms = if erased.contains(&room.id) {
                    u64::MAX
                } else if let Some(days) = policies.get(&room.workspace) {
                    now_ms.saturating_sub(days.saturating_mul(DAY_MS))
                } else {
                    continue;
                };
                match self.empty_room(&room, before_ms).await? {
                    Emptied::Held => purged.held += 1,
                    Emptied::Deleted(0) => {}
                    Emptied::Deleted(n) => {
                        purged.messages += n;
                        purged.rooms += 1;
                    }
                }
            }
        }
        if purged.messages > 0 || self.compact_owed.load(Ordering::Acquire) {
            self.compact().await?;
        }
        let entry = Entry::new(audit::Kind::RetentionPurge, Actor::Daemon)
            .detail("messages", purged.messages)
            .detail("rooms", purged.rooms)
            .detail("held", purged.held);
        self.commit
            .run(move |tx| {
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await?;
        tracing::info!(
            messages = purged.messages,
            rooms = purged.rooms,
            held = purged.held,
            "retention purge done"
        );
        Ok(Some(purged))
    }

    /// Deletes a room's messages committed before `before_ms`, a chunk per
    /// job, until none is left — or a hold stops it.
    pub(super) async fn empty_room(&self, room: &Room, before_ms: u64) -> Result<Emptied> {
        let mut deleted = 0;
        loop {
            let due = {
                let (store, id) = (self.store.clone(), room.id);
                super::blocking(move || {
                    Ok::<_, Error>(store.messages_before(id, before_ms, CHUNK)?)
                })
                .await?
            };
            if due.is_empty() {
                return Ok(Emptied::Deleted(deleted));
            }
            let n = due.len();
            if !self.delete_messages(room, due).await? {
                return Ok(Emptied::Held);
            }
            deleted += n as u64;
            tokio::time::sleep(BETWEEN_CHUNKS).await;
        }
    }

    /// One job: deletes `msgs` of `room` with what is derived from them,
    /// unless the room is under a hold now (`false`).
    async fn delete_messages(&self, room: &Room, msgs: Vec<Message>) -> Result<bool> {
        let (ws, patient) = (room.workspace.clone(), room.patient);
        self.commit
            .run(move |tx| {
                if tx.store.held(&ws, patient)? {
                    return Ok((false, vec![]));
                }
                for m in &msgs {
                    tx.batch.delete_message(m);
                    derived::on_delete(&mut tx.batch, m);
                }
                Ok((true, vec![]))
            })
            .await
    }
}

impl Core {
    /// Rewrites the store's files so that nothing deleted before this
    /// call is left in any of them (`Store::compact_with`); chat waits
    /// only for the swap of the index, a job of the sequencer's.
    pub(super) async fn compact(self: &Arc<Self>) -> Result<()> {
        // Owed until done: a failure (a full disk, say) leaves the
        // deletions standing and the next run compacts again.
        self.compact_owed.store(true, Ordering::Release);
        // On a thread of its own at the lowest CPU priority: its work
        // (writing the base and the new index) takes only what chat
        // leaves idle. The swap, a few records, is the sequencer's: at
        // its priority, so chat never waits behind an idle thread.
        let core = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("parlor-compact".into())
            .spawn(move || {
                super::passwords::lower_priority();
                let on_writer = |swap: Swap| {
                    core.commit
                        .run_blocking(move |tx| {
                            swap.run(tx.store).map_err(|e| {
                                Error::internal(format!("swapping in the compacted index: {e}"))
                            })?;
                            Ok(((), vec![]))
                        })
                        .map_err(|e| std::io::Error::other(e.to_string()))
                };
                let _ = tx.send(core.store.compact_with(&on_writer));
            })
            .map_err(|e| Error::internal(format!("starting the compaction: {e}")))?;
        rx.await
            .map_err(|_| Error::internal("the compaction thread ended without an answer"))?
            .map_err(|e| Error::internal(format!("compacting the store: {e}")))?;
        // Logged by the store (`Store::compact_with`), with its figures.
        self.compact_owed.store(false, Ordering::Release);
        Ok(())
    }
}

/// What emptying a room came to.
pub(super) enum Emptied {
    Deleted(u64),
    Held,
}

pub(super) fn under_hold() -> Error {
    Error::conflict("that is under a legal hold: lift the hold first (PUT /admin/holds)")
}

/// Runs a purge every `every` until the task is dropped; a failed run is
/// logged and tried again at the next.
pub async fn run(core: Arc<Core>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = core.purge(super::commit::unix_ms()).await {
            tracing::warn!(error = %e, "retention purge failed; trying again at the next run");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audit::Filter;
    use crate::core::testing::{clinic_and_chat, hook};
    use crate::error::Kind;
    use crate::model::{words, MsgId};

    fn ws() -> Workspace {
        Workspace::new("a", "main").unwrap()
    }

    /// The `retention.purge` records so far, as (messages, rooms, held).
    fn purge_records(core: &Core) -> Vec<(u64, u64, u64)> {
        let filter = Filter {
            kind: Some(audit::Kind::RetentionPurge),
            ..Filter::default()
        };
        let page = core
            .audit_page(&Admin::operator(), &filter, 100, None)
            .unwrap();
        let n = |r: &audit::Record, k: &str| r.detail[k].as_u64().unwrap();
        page.records
            .iter()
            .map(|r| (n(r, "messages"), n(r, "rooms"), n(r, "held")))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_purge_deletes_what_is_past_retention_with_its_postings_and_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let op = Admin::operator();
        c.core.set_webhook(&op, ws(), hook()).await.unwrap();
        let mut old = Vec::new();
        for i in 0..3 {
            let text = format!("zebra old {i}");
            old.push(c.core.outbound(&c.staff, &ch, text).await.unwrap());
        }
        old.push(
            c.core
                .inbound(&c.pat, &ch, "zebra from pat".into())
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let kept = c
            .core
            .outbound(&c.staff, &ch, "zebra new".into())
            .await
            .unwrap();
        assert!(kept.at_ms > old[3].at_ms);
        // No retention: a run has nothing to do and records nothing.
        assert_eq!(c.core.purge(kept.at_ms + 400 * DAY_MS).await.unwrap(), None);

        c.core.set_retention(&op, ws(), Some(1)).await.unwrap();
        // "Now" is a day after `kept`'s commit: everything before it is due.
        let purged = c.core.purge(kept.at_ms + DAY_MS).await.unwrap().unwrap();
        assert_eq!((purged.messages, purged.rooms, purged.held), (4, 1, 0));
        for m in &old {
            assert_eq!(c.core.store.message(m.id).unwrap(), None);
            assert_eq!(c.core.store.delivery(m.id).unwrap(), None);
        }
        assert_eq!(
            c.core.store.message(kept.id).unwrap().unwrap().text,
            "zebra new"
        );
        let all = (MsgId(0), MsgId(u64::MAX));
        let found = c
            .core
            .search_chat(&ch, &words("zebra"), all, 10, false)
            .unwrap();
        assert_eq!(found.iter().map(|m| m.id).collect::<Vec<_>>(), [kept.id]);
        let pending = c.core.pending_deliveries(MsgId(0), 10).unwrap();
        assert_eq!(
            pending.iter().map(|d| d.message).collect::<Vec<_>>(),
            [kept.id]
        );
        assert_eq!(purge_records(&c.core), [(4, 1, 0)]);
        // A second run finds nothing more, and says so.
        let again = c.core.purge(kept.at_ms + DAY_MS).await.unwrap().unwrap();
        assert_eq!(again, Purged::default());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_hold_keeps_its_chat_or_workspace_from_the_purge_until_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let (c, ch) = clinic_and_chat(dir.path()).await;
        let op = Admin::operator();
        let other = c.other_chat().await;
        let held = c.core.outbound(&c.staff, &ch, "held".into()).await.unwrap();
        let free = c
            .core
            .outbound(&c.staff, &other, "free".into())
            .await
            .unwrap();
        c.core.set_retention(&op, ws(), Some(1)).await.unwrap();
        c.core
            .set_hold(&op, ws(), Some(c.pat.id), true, "case 12".into())
            .await
            .unwrap();
        let later = free.at_ms + 2 * DAY_MS;
        let p = c.core.purge(later).await.unwrap().unwrap();
        assert_eq!((p.messages, p.held), (1, 1));
        assert!(c.core.store.message(held.id).unwrap().is_some());
        assert_eq!(c.core.store.message(free.id).unwrap(), None);

        // A workspace hold refuses retention changes; lifted, all goes on.
        c.core
            .set_hold(&op, ws(), None, true, "audit".into())
            .await
            .unwrap();
        let e = c.core.set_retention(&op, ws(), Some(2)).await.unwrap_err();
        assert_eq!(e.kind, Kind::Conflict);
        c.core
            .set_hold(&op, ws(), None, false, String::new())
            .await
            .unwrap();
        c.core
            .set_hold(&op, ws(), Some(c.pat.id), false, String::new())
            .await
            .unwrap();
        let p = c.core.purge(later).await.unwrap().unwrap();
        assert_eq!((p.messages, p.held), (1, 0));
        assert_eq!(c.core.store.message(held.id).unwrap(), None);
    }

    /// A compaction that did not finish is owed: the next run compacts
    /// although it deletes nothing.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_compaction_owed_is_done_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _ch) = clinic_and_chat(dir.path()).await;
        let bases = || {
            std::fs::read_dir(dir.path().join("wal"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("base-")
                })
                .count()
        };
        c.core
            .set_retention(&Admin::operator(), ws(), Some(1))
            .await
            .unwrap();
        c.core.purge(super::super::commit::unix_ms()).await.unwrap();
        assert_eq!(bases(), 0, "compacted with nothing deleted");
        c.core.compact_owed.store(true, Ordering::Release);
        let p = c.core.purge(super::super::commit::unix_ms()).await.unwrap();
        assert_eq!(p.unwrap().messages, 0);
        assert_eq!(bases(), 1, "the owed compaction did not run");
        assert!(!c.core.compact_owed.load(Ordering::Acquire));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_retention_and_holds_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (c, _ch) = clinic_and_chat(dir.path()).await;
        let op = Admin::operator();
        for days in [Some(0), Some(MAX_DAYS + 1)] {
            let e = c.core.set_retention(&op, ws(), days).await.unwrap_err();
            assert_eq!(e.kind, Kind::BadRequest);
        }
        let no_reason = c.core.set_hold(&op, ws(), None, true, " ".into()).await;
        assert_eq!(no_reason.unwrap_err().kind, Kind::BadRequest);
        // Staff, another workspace's patient, nobody: no such patient.
        let b = Workspace::new("b", "main").unwrap();
        for (w, p) in [(ws(), c.staff.id), (b, c.pat.id), (ws(), UserId(999))] {
            let e = c.core.set_hold(&op, w, Some(p), true, "r".into()).await;
            assert_eq!(e.unwrap_err().kind, Kind::NotFound);
        }
        assert_eq!(c.core.store.retention(&ws()).unwrap(), None);
        assert!(c.core.store.holds().unwrap().is_empty());
        let kinds = [audit::Kind::RetentionSet, audit::Kind::HoldSet];
        for kind in kinds {
            let filter = Filter {
                kind: Some(kind),
                ..Filter::default()
            };
            let page = c.core.audit_page(&op, &filter, 10, None).unwrap();
            assert!(page.records.is_empty(), "{kind:?} recorded");
        }
    }
}
