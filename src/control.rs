//! The operator's control socket: `DATA_DIR/parlor.sock`, owner-only.
//! While the daemon runs it holds the store's lock, so the CLI sends its
//! operation here instead; without a daemon the CLI opens the store itself.
//! Either way the same core operation runs. One JSON line in, one out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::core::error::Result;
use crate::core::Core;
use crate::dialects::accounts::new_user;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    UserAdd {
        username: String,
        password: String,
        role: String,
        tenant: Option<String>,
        instance: Option<String>,
        display_name: Option<String>,
    },
    TokenIssue {
        username: String,
    },
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

/// Runs one operation against a core: the daemon's or the CLI's own.
pub async fn execute(core: &Core, req: Request) -> Result<String> {
    match req {
        Request::UserAdd {
            username,
            password,
            role,
            tenant,
            instance,
            display_name,
        } => {
            let new = new_user(
                username,
                password,
                &role,
                tenant.as_deref(),
                instance.as_deref(),
                display_name,
            )?;
            Ok(core.create_user(new).await?.to_string())
        }
        Request::TokenIssue { username } => core.issue_token(&username).await,
    }
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

pub async fn serve(core: Arc<Core>, listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r).take(64 * 1024);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => match execute(&core, req).await {
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
