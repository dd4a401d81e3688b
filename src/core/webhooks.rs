//! Webhooks in the core (API.md §5 "Webhook"): each workspace's webhook —
//! set, read, deleted (which drops its deliveries). The deliveries
//! themselves, from queued to sent, dead or dropped: `outbox`.

use super::audit::{self, Entry};
use super::outbox::Dropped;
use super::{Admin, Core};
use crate::error::{Error, Result};
use crate::model::{Webhook, Workspace};
use hyper::Uri;

impl Core {
    /// `POST /admin/webhooks` and `parlor webhook set`: replaces a
    /// workspace's webhook (the workspace need not have users yet).
    pub async fn set_webhook(&self, admin: &Admin<'_>, ws: Workspace, hook: Webhook) -> Result<()> {
        if hook.url.len() > 2048 || hook.url.chars().any(char::is_whitespace) {
            return Err(Error::bad_request(
                "url must be an http:// or https:// URL of at most 2048 bytes",
            ));
        }
        target(&hook.url).map_err(Error::bad_request)?;
        if !header_safe(&hook.api_key) || !header_safe(&hook.api_secret) {
            return Err(Error::bad_request(
                "api_key and api_secret must be printable ASCII without leading or trailing spaces (they are sent as HTTP header values)",
            ));
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

/// Where a webhook URL points.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Host name or IP address as connected to (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's host and explicit port.
    pub host_header: String,
    /// Path and query, `/` if the URL has none.
    pub path: String,
}

/// Parses an `http://` or `https://` URL into what a call needs.
pub fn target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("the webhook URL is not a valid URL: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the webhook URL must start with http:// or https://".into()),
    };
    let authority = uri
        .authority()
        .ok_or("the webhook URL has no host")?
        .as_str();
    if authority.contains('@') {
        return Err("the webhook URL must not carry user information".into());
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or("the webhook URL has no host")?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok(Target {
        https,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        host_header: authority.to_owned(),
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    })
}

/// Whether a key or secret can travel as an HTTP header value unchanged:
/// printable ASCII (spaces inside allowed, not at either end).
pub fn header_safe(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b)) && s.trim() == s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::outbox::CHUNK;
    use crate::core::testing::two;
    use crate::error::Kind;
    use crate::model::{Delivery, MsgId};
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn target_takes_scheme_host_port_and_path() {
        let t = target("http://127.0.0.1:8081/hooks/in?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                https: false,
                host: "127.0.0.1".into(),
                port: 8081,
                host_header: "127.0.0.1:8081".into(),
                path: "/hooks/in?x=1".into(),
            }
        );
        let t = target("https://hooks.example.org").unwrap();
        assert_eq!((t.https, t.port, t.path.as_str()), (true, 443, "/"));
        let t = target("http://[::1]:9/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:9")
        );
    }

    #[test]
    fn target_refuses_other_schemes_credentials_and_garbage() {
        for bad in [
            "ftp://h/",
            "h:80/x",
            "http://user:pw@h/",
            "http:///x",
            "not a url",
        ] {
            assert!(target(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn header_safe_refuses_control_characters_and_outer_spaces() {
        assert!(header_safe("abc-123 XYZ"));
        assert!(header_safe(""));
        assert!(!header_safe("a\nb"));
        assert!(!header_safe(" a"));
        assert!(!header_safe("ü"));
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
}
