//! `baseline-server`: the smallest fan-out server that speaks the same
//! protocol as parlor's rooms dialect — `POST /auth/login`,
//! `/admin/users`, `/admin/rooms`, `GET /chat/connect` — with no storage,
//! no durability, no rate limits and no password hashing: users, rooms and
//! tokens in memory, each message rendered once and handed to every
//! member's connection queue. The same tokio-tungstenite with the same
//! small buffers as parlor. It is the ceiling a load generator on this
//! machine can measure; parlor's figures are read against it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::BenchArgs;

/// Events a connection may lag behind before it is dropped (as parlor).
const QUEUE: usize = 4096;
const MAX_BODY: usize = 128 * 1024;
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

struct Account {
    id: u64,
    password: String,
    admin: bool,
}

/// A connection's id and its queue of rendered pushes.
type Queue = (u64, mpsc::Sender<Utf8Bytes>);

#[derive(Default)]
struct State {
    next_user: AtomicU64,
    next_room: AtomicU64,
    next_msg: AtomicU64,
    next_conn: AtomicU64,
    accounts: Mutex<HashMap<String, Account>>,
    /// token → (user id, admin)
    tokens: Mutex<HashMap<String, (u64, bool)>>,
    rooms: Mutex<HashMap<u64, Arc<[u64]>>>,
    /// user → its connections' queues
    conns: Mutex<HashMap<u64, Vec<Queue>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, v: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, code: &str) -> Resp {
    reply(
        status,
        &json!({"error": code.to_lowercase().replace('_', " "), "error_code": code}),
    )
}

/// Runs the baseline server until `--duration` passes, SIGINT/SIGTERM,
/// or (when spawned by a bench) its stdin closes.
pub async fn serve(args: &BenchArgs) -> Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("could not listen on '{}'", args.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && !args.allow_remote {
        bail!("the baseline server listens on loopback only unless --allow-remote is given");
    }
    let state = Arc::new(State::default());
    {
        let mut accounts = lock(&state.accounts);
        match &args.admin_token {
            Some(t) => {
                let id = state.next_user.fetch_add(1, Ordering::Relaxed) + 1;
                lock(&state.tokens).insert(t.clone(), (id, true));
            }
            None => {
                let user = args.admin_user.clone().unwrap_or_else(|| "admin".into());
                let password = args
                    .admin_password
                    .clone()
                    .unwrap_or_else(|| "admin".into());
                let id = state.next_user.fetch_add(1, Ordering::Relaxed) + 1;
                accounts.insert(
                    user,
                    Account {
                        id,
                        password,
                        admin: true,
                    },
                );
            }
        }
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let (lifeline_tx, mut lifeline) = tokio::sync::oneshot::channel::<()>();
    if args.stdin_lifeline {
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
            let _ = lifeline_tx.send(());
        });
    } else {
        std::mem::forget(lifeline_tx);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let until = tokio::time::sleep(args.duration());
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => break,
            _ = &mut lifeline => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            r = listener.accept() => {
                let Ok((stream, _)) = r else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        }
    }
    Ok(())
}

async fn body(req: Request<Incoming>) -> Option<Value> {
    let b = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()?
        .to_bytes();
    serde_json::from_slice::<Value>(&b)
        .ok()
        .filter(Value::is_object)
}

fn bearer(state: &State, req: &Request<Incoming>) -> Option<(u64, bool)> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let t = h.strip_prefix("Bearer ")?;
    lock(&state.tokens).get(t).copied()
}

fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/healthz") => reply(StatusCode::OK, &json!({"status": "ok"})),
        ("GET", "/chat/connect") => upgrade(state, req),
        ("POST", "/auth/login") => {
            let Some(b) = body(req).await else {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            };
            let (user, pw) = (b["username"].as_str(), b["password"].as_str());
            let found = match (user, pw) {
                (Some(u), Some(p)) => lock(&state.accounts)
                    .get(u)
                    .filter(|a| a.password == p)
                    .map(|a| (a.id, a.admin)),
                _ => None,
            };
            match found {
                Some((id, admin)) => {
                    let t = new_token();
                    lock(&state.tokens).insert(t.clone(), (id, admin));
                    reply(
                        StatusCode::OK,
                        &json!({"token": t, "user_id": id.to_string()}),
                    )
                }
                None => error(StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            }
        }
        ("POST", "/admin/users") => {
            if !bearer(&state, &req).is_some_and(|(_, admin)| admin) {
                return error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
            }
            let Some(b) = body(req).await else {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            };
            let (Some(user), Some(pw)) = (b["username"].as_str(), b["password"].as_str()) else {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            };
            let mut accounts = lock(&state.accounts);
            if accounts.contains_key(user) {
                return error(StatusCode::CONFLICT, "CONFLICT");
            }
            let id = state.next_user.fetch_add(1, Ordering::Relaxed) + 1;
            accounts.insert(
                user.to_string(),
                Account {
                    id,
                    password: pw.to_string(),
                    admin: b["role"] == "admin",
                },
            );
            reply(StatusCode::CREATED, &json!({"id": id.to_string()}))
        }
        ("POST", "/admin/rooms") => {
            if !bearer(&state, &req).is_some_and(|(_, admin)| admin) {
                return error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
            }
            let Some(b) = body(req).await else {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            };
            let members: Option<Vec<u64>> = b["members"].as_array().and_then(|a| {
                a.iter()
                    .map(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_u64()))
                    .collect()
            });
            let Some(mut members) = members.filter(|m| !m.is_empty()) else {
                return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            };
            members.sort_unstable();
            members.dedup();
            let id = state.next_room.fetch_add(1, Ordering::Relaxed) + 1;
            lock(&state.rooms).insert(id, members.into());
            reply(StatusCode::CREATED, &json!({"room_id": id.to_string()}))
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND"),
    }
}

fn upgrade(state: Arc<State>, mut req: Request<Incoming>) -> Resp {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec());
    let Some(key) = key else {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
    };
    let mut sha = Sha1::new();
    sha.update(&key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(1 << 20)
                .max_message_size(Some(MAX_BODY))
                .max_frame_size(Some(MAX_BODY));
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(config))
                .await;
            session(state, ws).await;
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

#[derive(Deserialize)]
struct Send {
    room: String,
    #[serde(alias = "message")]
    messages: String,
}

#[derive(Serialize)]
struct Push<'a> {
    message: Wire<'a>,
}

#[derive(Serialize)]
struct Wire<'a> {
    id: u64,
    message: &'a str,
    poster: String,
    room: &'a str,
    timestamp: u64,
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn session(state: Arc<State>, mut ws: Socket) {
    // Authentication: the first frame, within the deadline.
    let first = tokio::time::timeout(AUTH_DEADLINE, ws.next()).await;
    let user = match first {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<Value>(t.as_str())
            .ok()
            .and_then(|v| v["auth_token"].as_str().map(str::to_string))
            .and_then(|t| lock(&state.tokens).get(&t).map(|(id, _)| *id)),
        _ => None,
    };
    let Some(user) = user else {
        let _ = ws
            .send(Message::text(
                json!({"error": "not authenticated", "error_code": "UNAUTHENTICATED"}).to_string(),
            ))
            .await;
        let _ = ws.close(None).await;
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(QUEUE);
    let conn = state.next_conn.fetch_add(1, Ordering::Relaxed);
    lock(&state.conns).entry(user).or_default().push((conn, tx));
    if ws
        .send(Message::text(json!({"status": "CONNECTED"}).to_string()))
        .await
        .is_ok()
    {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(text) => {
                        match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::Text(text))).await {
                            Ok(Ok(())) => {}
                            _ => break,
                        }
                    }
                    // Dropped from the queues: too slow.
                    None => break,
                },
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => publish(&state, user, t.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut conns = lock(&state.conns);
    if let Some(list) = conns.get_mut(&user) {
        list.retain(|(id, _)| *id != conn);
        if list.is_empty() {
            conns.remove(&user);
        }
    }
}

/// Renders a message once and queues it for every connection of every
/// member of its room (the sender's own included); a full queue drops
/// that connection, as parlor's hub does.
fn publish(state: &State, user: u64, text: &str) {
    let Ok(send) = serde_json::from_str::<Send>(text) else {
        return;
    };
    let Some(members) = send
        .room
        .parse::<u64>()
        .ok()
        .and_then(|r| lock(&state.rooms).get(&r).cloned())
    else {
        return;
    };
    if members.binary_search(&user).is_err() {
        return;
    }
    let id = state.next_msg.fetch_add(1, Ordering::Relaxed) + 1;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let push = Push {
        message: Wire {
            id,
            message: &send.messages,
            poster: user.to_string(),
            room: &send.room,
            timestamp,
        },
    };
    let Ok(rendered) = serde_json::to_string(&push) else {
        return;
    };
    let rendered = Utf8Bytes::from(rendered);
    let mut conns = lock(&state.conns);
    for m in members.iter() {
        if let Some(list) = conns.get_mut(m) {
            list.retain(|(_, tx)| tx.try_send(rendered.clone()).is_ok());
        }
    }
}
