//! The webhook outbox (API.md §5 "Webhook"): every write of a delivery,
//! from the moment a message queues it to the moment it leaves.
//!
//! - queued: by the post job, in the message's own batch ([`queue`],
//!   called through `derived::new_message`) — a message of a patient
//!   chat not sent by the patient, in a workspace with a webhook;
//! - sent by the worker (`crate::webhooks`), which reads it here
//!   ([`Core::pending_deliveries`]), and then:
//! - accepted (2xx) → removed ([`Core::delivered`]);
//! - failing for `--webhook-give-up-hours` → set aside as dead
//!   ([`Core::give_up`]): kept in a keyspace of its own, no longer tried,
//!   and no longer holding back that patient's later deliveries;
//! - dead → back into the outbox when the operator asks
//!   ([`Core::retry_dead`], `parlor webhook retry`);
//! - its workspace's webhook deleted → dropped, pending and dead alike
//!   (`Core::delete_webhook`, `webhooks`; a delivery has nowhere to go
//!   without one).
//!
//! Work over many deliveries (dropping, retrying all) runs as one writer
//! job per [`CHUNK`], so the writer is never held for long.

use std::sync::atomic::Ordering::Relaxed;

use super::audit::{self, Actor, Entry};
use super::Core;
use crate::error::{Error, Result};
use crate::model::{
    external_id, DeadDelivery, Delivery, Message, MsgId, Room, RoomKind, UserId, Workspace,
};
use crate::store::{Store, WriteBatch};

/// Deliveries looked at per writer job when dropping or retrying many.
pub const CHUNK: usize = 1000;

/// What deleting a webhook dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub pending: u64,
    pub dead: u64,
}

/// Queues the delivery of a new message of `room`, in its batch: one of a
/// patient chat, not sent by the patient (staff writing to them, or for
/// them), in a workspace with a webhook.
pub(crate) fn queue(
    store: &Store,
    batch: &mut WriteBatch,
    room: &Room,
    msg: &Message,
) -> Result<()> {
    let Some(patient) = room.patient.filter(|_| room.kind == RoomKind::Patient) else {
        return Ok(());
    };
    if msg.sender == patient || store.webhook(&room.workspace)?.is_none() {
        return Ok(());
    }
    batch.put_delivery(&Delivery {
        message: msg.id,
        patient,
        workspace: room.workspace.clone(),
        text: msg.text.clone(),
        at_ms: msg.at_ms,
    });
    Ok(())
}

impl Core {
    /// Drops the pending and dead deliveries of `ws`, for as long as the
    /// workspace has no webhook (its webhook was just deleted).
    pub(super) async fn drop_deliveries(&self, ws: &Workspace) -> Result<Dropped> {
        Ok(Dropped {
            pending: self.drop_from(ws, Keyspace::Outbox).await?,
            dead: self.drop_from(ws, Keyspace::Dead).await?,
        })
    }

    /// Drops the deliveries of `ws` in one keyspace, a chunk per job, for
    /// as long as the workspace has no webhook.
    async fn drop_from(&self, ws: &Workspace, from_ks: Keyspace) -> Result<u64> {
        let (mut from, mut dropped) = (MsgId(0), 0);
        loop {
            let chunk: Vec<Delivery> = match from_ks {
                Keyspace::Outbox => self.store.outbox(from, CHUNK)?,
                Keyspace::Dead => self
                    .store
                    .dead(from, CHUNK)?
                    .into_iter()
                    .map(|d| d.delivery)
                    .collect(),
            };
            let Some(last) = chunk.last() else { break };
            from = MsgId(last.message.0 + 1);
            let full = chunk.len() == CHUNK;
            let ids: Vec<MsgId> = chunk
                .into_iter()
                .filter(|d| d.workspace == *ws)
                .map(|d| d.message)
                .collect();
            if !ids.is_empty() {
                let (w, metrics) = (ws.clone(), self.metrics.clone());
                let n = self
                    .commit
                    .run(move |tx| {
                        if tx.store.webhook(&w)?.is_some() {
                            return Ok((None, vec![]));
                        }
                        let mut n = 0;
                        for id in ids {
                            match from_ks {
                                Keyspace::Outbox if tx.store.delivery(id)?.is_some() => {
                                    tx.batch.remove_delivery(id);
                                }
                                Keyspace::Dead if tx.store.dead_one(id)?.is_some() => {
                                    tx.batch.remove_dead(id);
                                    metrics.webhook_dead.fetch_sub(1, Relaxed);
                                }
                                _ => continue,
                            }
                            n += 1;
                        }
                        Ok((Some(n), vec![]))
                    })
                    .await?;
                match n {
                    Some(n) => dropped += n,
                    // Set again meanwhile: the rest are the new webhook's.
                    None => break,
                }
            }
            if !full {
                break;
            }
        }
        Ok(dropped)
    }

    /// Pending webhook deliveries, in message order, from `from` on — only
    /// of durable messages (bounded by the visible id, like every read of
    /// messages), so nothing is sent before it is on disk.
    pub fn pending_deliveries(&self, from: MsgId, limit: usize) -> Result<Vec<Delivery>> {
        let visible = self.commit.visible();
        let mut out = self.store.outbox(from, limit)?;
        out.retain(|d| d.message <= visible);
        Ok(out)
    }

    /// Dead deliveries, in message order, from `from` on.
    pub fn dead_deliveries(&self, from: MsgId, limit: usize) -> Result<Vec<DeadDelivery>> {
        Ok(self.store.dead(from, limit)?)
    }

    /// Removes a delivery the receiver acknowledged (2xx).
    pub async fn delivered(&self, message: MsgId) -> Result<()> {
        self.commit
            .run(move |tx| {
                tx.batch.remove_delivery(message);
                Ok(((), vec![]))
            })
            .await
    }

    /// Drops a pending delivery whose workspace has no webhook (the worker
    /// found it so: a delete was cut short by a stop before it dropped
    /// everything). `false`, and nothing changes, if it has one again.
    pub async fn drop_orphan(&self, message: MsgId) -> Result<bool> {
        self.commit
            .run(move |tx| {
                let Some(d) = tx.store.delivery(message)? else {
                    return Ok((true, vec![]));
                };
                if tx.store.webhook(&d.workspace)?.is_some() {
                    return Ok((false, vec![]));
                }
                tx.batch.remove_delivery(message);
                Ok((true, vec![]))
            })
            .await
    }

    /// Sets a pending delivery aside as dead (the worker does, once it has
    /// failed for `--webhook-give-up-hours`). `false` if it was no longer
    /// pending (delivered or dropped meanwhile).
    pub async fn give_up(
        &self,
        message: MsgId,
        failed_attempts: u32,
        last_error: String,
    ) -> Result<bool> {
        let metrics = self.metrics.clone();
        self.commit
            .run(move |tx| {
                let Some(delivery) = tx.store.delivery(message)? else {
                    return Ok((false, vec![]));
                };
                tx.batch.remove_delivery(message);
                let entry = Entry::new(audit::Kind::WebhookDead, Actor::Daemon)
                    .workspace(&delivery.workspace)
                    .patient(delivery.patient)
                    .detail("message", external_id(message))
                    .detail("failed_attempts", failed_attempts)
                    .detail("last_error", last_error.clone());
                tx.audit(entry)?;
                tx.batch.put_dead(&DeadDelivery {
                    delivery,
                    failed_attempts,
                    last_error,
                    dead_ms: tx.now_ms,
                });
                metrics.webhook_dead.fetch_add(1, Relaxed);
                Ok((true, vec![]))
            })
            .await
    }

    /// `parlor webhook retry`: moves dead deliveries back into the outbox,
    /// under their own message ids — `Some(id)` that one (`NOT_FOUND` if
    /// it is not dead), `None` every one. Returns what moved, for the
    /// running worker (`webhooks::Monitor::requeue`): its outbox cursor is
    /// past them.
    pub async fn retry_dead(&self, which: Option<MsgId>) -> Result<Vec<(MsgId, UserId)>> {
        if let Some(id) = which {
            let moved = self.move_back(vec![id]).await?;
            if moved.is_empty() {
                return Err(Error::not_found(format!(
                    "no dead delivery {}",
                    external_id(id)
                )));
            }
            return Ok(moved);
        }
        let (mut from, mut moved) = (MsgId(0), Vec::new());
        loop {
            let ids: Vec<MsgId> = self
                .store
                .dead(from, CHUNK)?
                .iter()
                .map(|d| d.delivery.message)
                .collect();
            let Some(last) = ids.last() else { break };
            from = MsgId(last.0 + 1);
            let full = ids.len() == CHUNK;
            moved.extend(self.move_back(ids).await?);
            if !full {
                break;
            }
        }
        Ok(moved)
    }

    /// Moves those of `ids` that are dead back into the outbox, in one job.
    async fn move_back(&self, ids: Vec<MsgId>) -> Result<Vec<(MsgId, UserId)>> {
        let metrics = self.metrics.clone();
        self.commit
            .run(move |tx| {
                let mut moved = Vec::with_capacity(ids.len());
                for id in ids {
                    let Some(dead) = tx.store.dead_one(id)? else {
                        continue;
                    };
                    tx.batch.remove_dead(id);
                    tx.batch.put_delivery(&dead.delivery);
                    let entry = Entry::new(audit::Kind::WebhookRetry, Actor::Cli)
                        .workspace(&dead.delivery.workspace)
                        .patient(dead.delivery.patient)
                        .detail("message", external_id(id));
                    tx.audit(entry)?;
                    metrics.webhook_dead.fetch_sub(1, Relaxed);
                    moved.push((id, dead.delivery.patient));
                }
                Ok((moved, vec![]))
            })
            .await
    }
}

#[derive(Clone, Copy)]
enum Keyspace {
    Outbox,
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::limits::Limits;
    use crate::core::testing::two;
    use crate::error::Kind;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_dead_delivery_is_kept_apart_and_moves_back_under_its_own_id() {
        let dir = tempfile::tempdir().unwrap();
        let t = two(dir.path(), 2).await;
        let pending = t.core.pending_deliveries(MsgId(0), 10).unwrap();
        let (d0, d1) = (pending[0].clone(), pending[1].clone());
        assert!(t
            .core
            .give_up(d0.message, 7, "the receiver answered 500".into())
            .await
            .unwrap());
        assert!(t
            .core
            .give_up(d1.message, 1, "timeout".into())
            .await
            .unwrap());
        // Not pending twice over: a second give-up finds nothing.
        assert!(!t.core.give_up(d1.message, 1, "x".into()).await.unwrap());
        let dead = t.core.dead_deliveries(MsgId(0), 10).unwrap();
        assert_eq!(dead.len(), 2);
        assert_eq!((&dead[0].delivery, dead[0].failed_attempts), (&d0, 7));
        assert_eq!(dead[0].last_error, "the receiver answered 500");
        assert!(dead[0].dead_ms >= d0.at_ms);
        let pending_ids = |c: &Core| -> Vec<MsgId> {
            c.pending_deliveries(MsgId(0), 10)
                .unwrap()
                .iter()
                .map(|d| d.message)
                .collect()
        };
        assert!(!pending_ids(&t.core).contains(&d0.message));

        let e = t.core.retry_dead(Some(MsgId(999_999))).await.unwrap_err();
        assert_eq!(e.kind, Kind::NotFound);
        assert_eq!(
            t.core.retry_dead(Some(d1.message)).await.unwrap(),
            [(d1.message, d1.patient)]
        );
        assert_eq!(t.core.metrics.webhook_dead.load(Relaxed), 1);
        assert_eq!(
            t.core.retry_dead(None).await.unwrap(),
            [(d0.message, d0.patient)]
        );
        assert_eq!(t.core.metrics.webhook_dead.load(Relaxed), 0);
        assert!(pending_ids(&t.core).starts_with(&[d0.message, d1.message]));
        assert_eq!(t.core.pending_deliveries(d0.message, 1).unwrap()[0], d0);
        assert!(t.core.retry_dead(None).await.unwrap().is_empty());
        t.core.shutdown();
        drop(t);

        // The count of dead deliveries is the store's, after a reopen too.
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        let d = core.pending_deliveries(MsgId(0), 1).unwrap()[0].clone();
        assert!(core.give_up(d.message, 1, "x".into()).await.unwrap());
        core.shutdown();
        drop(core);
        let core = Core::open(dir.path(), Limits::default()).unwrap();
        assert_eq!(core.metrics.webhook_dead.load(Relaxed), 1);
        core.shutdown();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_orphan_is_dropped_only_while_its_workspace_has_no_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let t = two(dir.path(), 1).await;
        let d = t.core.pending_deliveries(MsgId(0), 1).unwrap()[0].clone();
        assert!(!t.core.drop_orphan(d.message).await.unwrap());
        assert_eq!(t.core.pending_deliveries(MsgId(0), 1).unwrap()[0], d);
        // What a delete cut short leaves behind: the webhook gone, the
        // delivery still queued.
        let ws = d.workspace.clone();
        t.core
            .commit
            .run(move |tx| {
                tx.batch.remove_webhook(&ws);
                Ok(((), vec![]))
            })
            .await
            .unwrap();
        assert!(t.core.drop_orphan(d.message).await.unwrap());
        assert_ne!(t.core.pending_deliveries(MsgId(0), 1).unwrap()[0], d);
        t.core.shutdown();
    }
}
