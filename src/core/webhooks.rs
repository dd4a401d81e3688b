//! Webhooks in the core (API.md §5 "Webhook"): each workspace's webhook —
//! set, read, deleted (which drops its deliveries). The deliveries
//! themselves, from queued to sent, dead or dropped: `outbox`.

use super::audit::{self, Entry};
use super::outbox::Dropped;
use super::{Admin, Core};
use crate::error::{Error, Result};
use crate::model::{Webhook, Workspace};

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
        self.drop_deliveries(&ws).await
    }

    pub fn webhook(&self, ws: &Workspace) -> Result<Option<Webhook>> {
        Ok(self.store.webhook(ws)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outbox::CHUNK;
    use crate::core::testing::two;
    use crate::error::Kind;
    use crate::model::{Delivery, MsgId};
    use std::sync::atomic::Ordering::Relaxed;

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
}
