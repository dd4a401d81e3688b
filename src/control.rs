//! The operator's control socket: `DATA_DIR/parlor.sock`, owner-only.
//! While the daemon runs it holds the store's lock, so the CLI sends its
//! operation here instead; without a daemon the CLI opens the store itself.
//! Either way the same core operation runs. One JSON line in, one out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::core::audit;
use crate::core::{accounts, Admin, Core};
use crate::dialects::accounts::{new_user, new_webhook, AddUser};
use crate::dialects::api_clients::new_api_client;
use crate::dialects::retention::{SetHold, SetRetention};
use crate::error::{Error, Result};
use crate::model::{parse_external_id, MsgId, Workspace};
use crate::webhooks::{self, Monitor};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    UserAdd(AddUser),
    TokenIssue {
        username: String,
    },
    /// Answers the new secret.
    ApiClientAdd {
        name: String,
        tenant: String,
        instance: String,
        display_name: Option<String>,
        rotate: bool,
    },
    WebhookSet {
        tenant: String,
        instance: String,
        url: String,
        api_key: String,
        api_secret: String,
    },
    /// Answers what was dropped, as JSON `{"pending","dead"}`.
    WebhookDelete {
        tenant: String,
        instance: String,
    },
    /// Answers a `webhooks::listing::PendingList` (with `dead`, a
    /// `DeadList`) as JSON.
    WebhookPending {
        after: Option<String>,
        limit: usize,
        #[serde(default)]
        dead: bool,
    },
    /// Moves dead deliveries back into the outbox: `message` (an
    /// externalId) or, without one, every one. Answers how many moved.
    WebhookRetry {
        message: Option<String>,
    },
    /// Answers with the backup itself (`core::backup`'s format), streamed,
    /// instead of a `Reply` line.
    Backup,
    /// Answers with the audit records (JSON lines), streamed, instead of a
    /// `Reply` line.
    AuditExport {
        since_ms: Option<u64>,
        tenant: Option<String>,
        instance: Option<String>,
    },
    /// Answers a `core::audit::Verdict` as JSON.
    AuditVerify,
    RetentionSet(SetRetention),
    HoldSet(SetHold),
    /// Answers how many messages were deleted.
    UserErase {
        id: String,
    },
}

/// The records `parlor audit export` asks for.
pub fn export_filter(
    since_ms: Option<u64>,
    tenant: Option<String>,
    instance: Option<String>,
) -> audit::Filter {
    audit::Filter {
        tenant,
        instance,
        since_ms,
        ..audit::Filter::default()
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(String),
    Error(String),
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("parlor.sock")
}

/// Runs one operation against a core: the daemon's (with its webhook
/// worker's `monitor`) or the CLI's own (`None`).
pub async fn execute(core: &Arc<Core>, monitor: Option<&Monitor>, req: Request) -> Result<String> {
    match req {
        Request::UserAdd(add) => {
            let new = new_user(add)?;
            Ok(core.create_user(&Admin::operator(), new).await?.to_string())
        }
        Request::TokenIssue { username } => core.issue_token(&username).await,
        Request::ApiClientAdd {
            name,
            tenant,
            instance,
            display_name,
            rotate,
        } => {
            let new = new_api_client(&tenant, &instance, name, display_name, rotate)?;
            core.add_api_client(&Admin::operator(), new).await
        }
        Request::WebhookSet {
            tenant,
            instance,
            url,
            api_key,
            api_secret,
        } => {
            let (ws, hook) = new_webhook(&tenant, &instance, url, api_key, api_secret)?;
            core.set_webhook(&Admin::operator(), ws, hook).await?;
            if let Some(m) = monitor {
                m.retry_now();
            }
            Ok(String::new())
        }
        Request::Backup | Request::AuditExport { .. } => Err(Error::bad_request(
            "a backup or an audit export is streamed, not answered: use `parlor backup` or `parlor audit export`",
        )),
        Request::AuditVerify => {
            let core = core.clone();
            let verdict = crate::core::blocking(move || core.audit_verify()).await?;
            Ok(serde_json::to_string(&verdict).expect("serializing a verdict"))
        }
        Request::RetentionSet(set) => {
            let (ws, days) = set.parse()?;
            core.set_retention(&Admin::operator(), ws, days).await?;
            Ok(String::new())
        }
        Request::HoldSet(set) => {
            let (ws, patient, hold, reason) = set.parse()?;
            core.set_hold(&Admin::operator(), ws, patient, hold, reason)
                .await?;
            Ok(String::new())
        }
        Request::UserErase { id } => {
            let id = accounts::parse_user_id(&id)?;
            Ok(core.erase_user(&Admin::operator(), id).await?.to_string())
        }
        Request::WebhookDelete { tenant, instance } => {
            let ws = Workspace::new(&tenant, &instance)?;
            let dropped = core.delete_webhook(&Admin::operator(), ws).await?;
            let answer = serde_json::json!({"pending": dropped.pending, "dead": dropped.dead});
            Ok(answer.to_string())
        }
        Request::WebhookPending { after, limit, dead } => {
            let after = after.map(|a| external("--after", &a)).transpose()?;
            let list = if dead {
                serde_json::to_string(&webhooks::dead(core, &Admin::operator(), after, limit)?)
            } else {
                serde_json::to_string(&webhooks::pending(core, &Admin::operator(), monitor, after, limit)?)
            };
            Ok(list.expect("serializing a listing"))
        }
        Request::WebhookRetry { message } => {
            let one = message.map(|m| external("--message", &m)).transpose()?;
            let moved = core.retry_dead(one).await?;
            if let Some(m) = monitor {
                m.requeue(&moved);
            }
            Ok(moved.len().to_string())
        }
    }
}

/// A message id given as its externalId on the command line.
fn external(flag: &str, s: &str) -> Result<MsgId> {
    parse_external_id(s).ok_or_else(|| {
        Error::bad_request(format!("{flag} must be an externalId (IM + 32 hex digits)"))
    })
}

/// Binds the control socket (replacing a stale one) with mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(core: Arc<Core>, monitor: Arc<Monitor>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        let monitor = monitor.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r).take(64 * 1024);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(Request::Backup) => {
                    stream_out(core, r.into_inner().into_inner(), w, |core, out| match core
                        .backup(out)
                    {
                        Ok(s) => tracing::info!(
                            records = s.records,
                            last_message = s.last_message,
                            "backup streamed"
                        ),
                        Err(e) => tracing::warn!(error = %e, "backup failed"),
                    })
                    .await;
                    return;
                }
                Ok(Request::AuditExport {
                    since_ms,
                    tenant,
                    instance,
                }) => {
                    let filter = export_filter(since_ms, tenant, instance);
                    stream_out(core, r.into_inner().into_inner(), w, move |core, out| {
                        if let Err(e) = core.audit_export(&filter, out) {
                            tracing::warn!(error = %e, "audit export failed");
                        }
                    })
                    .await;
                    return;
                }
                Ok(req) => match execute(&core, Some(&monitor), req).await {
                    Ok(s) => Reply::Ok(s),
                    Err(e) => Reply::Error(e.to_string()),
                },
                Err(e) => Reply::Error(format!("bad control request: {e}")),
            };
            let mut out = serde_json::to_vec(&reply).expect("serializing a reply");
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

/// Streams what `write` writes (a backup, an audit export) from the
/// running store to the control client: on the blocking pool, through a
/// buffer of a few chunks, so memory stays flat.
async fn stream_out(
    core: Arc<Core>,
    r: tokio::net::unix::OwnedReadHalf,
    w: tokio::net::unix::OwnedWriteHalf,
    write: impl FnOnce(&Core, &mut dyn std::io::Write) + Send + 'static,
) {
    let Ok(stream) = r.reunite(w) else { return };
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let _ = tokio::task::spawn_blocking(move || {
        std_stream.set_nonblocking(false)?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std_stream);
        write(&core, &mut out);
        std::io::Write::flush(&mut out)
    })
    .await;
}

/// Sends a request to a running daemon; `None` if none answers.
pub async fn call(data_dir: &Path, req: &Request) -> Option<std::io::Result<Reply>> {
    let stream = UnixStream::connect(socket_path(data_dir)).await.ok()?;
    Some(
        async {
            let (r, mut w) = stream.into_split();
            let mut out = serde_json::to_vec(req)?;
            out.push(b'\n');
            w.write_all(&out).await?;
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await?;
            serde_json::from_str(&line).map_err(std::io::Error::other)
        }
        .await,
    )
}
