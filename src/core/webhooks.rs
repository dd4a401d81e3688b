//! Webhooks in the core (API.md §5 "Webhook"): each workspace's webhook,
//! and the life of its deliveries. The post job writes a pending delivery
//! into the outbox with its message (`patients::on_patient_message`); the
//! worker (`crate::webhooks`) sends it, and from here on:
//!
//! - accepted (2xx) → removed ([`Core::delivered`]);
//! - failing for `--webhook-give-up-hours` → set aside as dead
//!   ([`Core::give_up`]): kept in a keyspace of its own, no longer tried,
//!   and no longer holding back that patient's later deliveries;
//! - dead → back into the outbox when the operator asks
//!   ([`Core::retry_dead`], `parlor webhook retry`);
//! - its workspace's webhook deleted → dropped, pending and dead alike
//!   ([`Core::delete_webhook`]; a delivery has nowhere to go without one).
//!
//! Work over many deliveries (dropping, retrying all) runs as one writer
//! job per [`CHUNK`], so the writer is never held for long.

use std::sync::atomic::Ordering::Relaxed;

use super::audit::{self, Actor, Entry};
use super::{Admin, Core};
use crate::error::{Error, Result};
use crate::model::{external_id, DeadDelivery, Delivery, MsgId, UserId, Webhook, Workspace};

/// Deliveries looked at per writer job when dropping or retrying many.
pub const CHUNK: usize = 1000;

/// What deleting a webhook dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub pending: u64,
    pub dead: u64,
}

impl Core {
    /// `POST /admin/webhooks` and `parlor webhook set`: replaces a
    /// workspace's webhook (the workspace need not have users yet).
    pub async fn set_webhook(&self, admin: &Admin<'_>, ws: Workspace, hook: Webhook) -> Result<()> {
        let url_ok = (hook.url.starts_with("http://") || hook.url.starts_with("https://"))
            && hook.url.len() <= 2048
            && !hook.url.chars().any(char::is_whitespace);
        if !url_ok {
            return Err(Error::bad_request("url must be an http:// or https:// URL"));
        }
        // Refused like an empty password: an empty secret would key the
        // signature with nothing.
        if hook.api_key.is_empty() || hook.api_secret.is_empty() {
            return Err(Error::bad_request(
                "api_key and api_secret must not be empty (the secret keys the X-Webhook-Signature HMAC)",
            ));
        }
        if hook.api_key.len() > 1024 || hook.api_secret.len() > 1024 {
            return Err(Error::bad_request(
                "api_key and api_secret are at most 1024 bytes",
            ));
        }
        let entry = Entry::new(audit::Kind::WebhookSet, admin.actor().recorded())
            .workspace(&ws)
            .detail("url", hook.url.clone());
        self.commit
            .run(move |tx| {
                tx.batch.put_webhook(&ws, &hook);
                tx.audit(entry)?;
                Ok(((), vec![]))
            })
            .await
    }

    /// `DELETE /admin/webhooks` and `parlor webhook delete`: removes a
    /// workspace's webhook (`NOT_FOUND` if it has none), then drops that
    /// workspace's pending and dead deliveries. Staff messages sent from
    /// then on queue nothing. Should the webhook be set again while the
    /// drop runs, the deliveries not yet dropped are kept for it.
    pub async fn delete_webhook(&self, admin: &Admin<'_>, ws: Workspace) -> Result<Dropped> {
        let w = ws.clone();
        let entry = Entry::new(audit::Kind::WebhookDelete, admin.actor().recorded()).workspace(&ws);
        self.commit
            .run(move |tx| {
                let Some(hook) = tx.store.webhook(&w)? else {
                    return Err(Error::not_found(format!(
                        "the workspace {}/{} has no webhook",
                        w.tenant, w.instance
                    )));
                };
                tx.batch.remove_webhook(&w);
                tx.audit(entry.detail("url", hook.url))?;
                Ok(((), vec![]))
            })
            .await?;
        Ok(Dropped {
            pending: self.drop_deliveries(&ws, Keyspace::Outbox).await?,
            dead: self.drop_deliveries(&ws, Keyspace::Dead).await?,
        })
    }

    /// Drops the deliveries of `ws` in one keyspace, a chunk per job, for
    /// as long as the workspace has no webhook.
    async fn drop_deliveries(&self, ws: &Workspace, from_ks: Keyspace) -> Result<u64> {
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

    pub fn webhook(&self, ws: &Workspace) -> Result<Option<Webhook>> {
        Ok(self.store.webhook(ws)?)
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
    use crate::error::Kind;
    use crate::model::User;
    use std::sync::Arc;

    struct Two {
        core: Arc<Core>,
        staff: User,
        /// A patient of workspace `a/main`, and one of `b/main`.
        pats: [User; 2],
    }

    use crate::core::testing::user;
    use crate::model::Role;

    fn hook() -> Webhook {
        Webhook {
            url: "http://127.0.0.1:9/hook".into(),
            api_key: "k".into(),
            api_secret: "s".into(),
        }
    }

    /// Two workspaces with a webhook each, and `n` staff messages to each
    /// one's patient (the staff of `b` posting there).
    async fn two(dir: &std::path::Path, n: usize) -> Two {
        let limits = Limits {
            msg_burst: 1_000_000,
            msg_rate: 1_000_000,
            ..Limits::default()
        };
        let core = Core::open(dir, limits).unwrap();
        let staff = user(&core, "nurse", Role::Staff, "a").await;
        let staff_b = user(&core, "nurse-b", Role::Staff, "b").await;
        let pats = [
            user(&core, "pat-a", Role::Patient, "a").await,
            user(&core, "pat-b", Role::Patient, "b").await,
        ];
        for (p, s) in pats.iter().zip([&staff, &staff_b]) {
            core.set_webhook(&Admin::operator(), p.workspace.clone(), hook())
                .await
                .unwrap();
            let t = &p.workspace.tenant;
            let ch = core
                .patient_chat(s, t, "main", &p.id.to_string())
                .await
                .unwrap();
            for i in 0..n {
                core.outbound(s, &ch, format!("m{i}")).await.unwrap();
            }
        }
        Two { core, staff, pats }
    }

    fn of(ds: &[Delivery], ws: &Workspace) -> usize {
        ds.iter().filter(|d| d.workspace == *ws).count()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn delete_drops_the_workspaces_pending_and_dead_deliveries_only() {
        let dir = tempfile::tempdir().unwrap();
        let n = CHUNK + 5; // more than one chunk of each workspace
        let t = two(dir.path(), n).await;
        let (a, b) = (t.pats[0].workspace.clone(), t.pats[1].workspace.clone());
        let first = t.core.pending_deliveries(MsgId(0), 1).unwrap()[0].clone();
        assert!(t
            .core
            .give_up(first.message, 3, "500".into())
            .await
            .unwrap());
        assert_eq!(t.core.metrics.webhook_dead.load(Relaxed), 1);

        let dropped = t
            .core
            .delete_webhook(&Admin::operator(), a.clone())
            .await
            .unwrap();
        assert_eq!(
            dropped,
            Dropped {
                pending: n as u64 - 1,
                dead: 1
            }
        );
        let left = t.core.pending_deliveries(MsgId(0), 10 * n).unwrap();
        assert_eq!((of(&left, &a), of(&left, &b)), (0, n));
        assert!(t.core.dead_deliveries(MsgId(0), 10).unwrap().is_empty());
        assert_eq!(t.core.metrics.webhook_dead.load(Relaxed), 0);
        assert!(t.core.webhook(&a).unwrap().is_none());
        assert!(t.core.webhook(&b).unwrap().is_some());
        // No webhook: nothing to delete, and staff messages queue nothing.
        let again = t.core.delete_webhook(&Admin::operator(), a.clone()).await;
        assert_eq!(again.unwrap_err().kind, Kind::NotFound);
        let ch = t
            .core
            .patient_chat(&t.staff, "a", "main", &t.pats[0].id.to_string())
            .await
            .unwrap();
        t.core
            .outbound(&t.staff, &ch, "after".into())
            .await
            .unwrap();
        let left = t.core.pending_deliveries(MsgId(0), 10 * n).unwrap();
        assert_eq!(of(&left, &a), 0);
        t.core.shutdown();
    }

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
