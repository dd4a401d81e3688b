//! Black-box test harness for the `parlor` binary.
//!
//! * [`Server`] owns a temporary data directory, runs CLI subcommands against
//!   it and starts / kills / restarts `parlor serve` on it. The daemon's
//!   stderr goes to a log file that is printed when a test panics.
//! * [`http`], [`post_json`], … — a tiny HTTP/1.1 client (one connection per
//!   request) over hyper's low-level client.
//! * [`Ws`] — a WebSocket client for `/chat/connect`.
//! * [`Pacer`] — keeps a single user's send rate inside what API.md §1
//!   guarantees to pass the rate limiter (burst ≥ 100, steady ≥ 20/s).
//!
//! Every wait in here is bounded by a timeout, so a hung daemon fails a test
//! instead of hanging CI. The tests only ever talk to 127.0.0.1.
#![allow(dead_code)]

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_parlor");
/// How long `parlor serve` may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI subcommand may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP request (connect + request + whole body) may take.
/// Generous because logins hash with argon2 (slow in debug builds).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default wait for one WebSocket frame that must arrive.
pub const WS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is observed for.
pub const SILENCE: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------
// Server: data dir, CLI, daemon process
// ---------------------------------------------------------------------------

/// One daemon data directory, plus (at most) one running `parlor serve` on it.
pub struct Server {
    root: TempDir,
    data_dir: PathBuf,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    starts: u32,
    logs: Vec<PathBuf>,
}

impl Server {
    /// A fresh, empty data directory; the daemon is not started.
    pub fn new() -> Server {
        let root = tempfile::Builder::new()
            .prefix("parlor-test-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        Server {
            root,
            data_dir,
            child: None,
            addr: None,
            starts: 0,
            logs: Vec::new(),
        }
    }

    /// A fresh data directory with the daemon already started.
    pub fn started() -> Server {
        let mut s = Server::new();
        s.start();
        s
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address the running daemon printed (`127.0.0.1:PORT`).
    /// Changes on every (re)start.
    pub fn addr(&self) -> String {
        self.addr
            .expect("daemon is not running (call start())")
            .to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("daemon is not running (call start())")
            .id()
    }

    /// What the daemon's last start has logged so far (its stderr).
    pub fn log_text(&self) -> String {
        self.logs
            .last()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    }

    fn base_command(&self) -> Command {
        let mut c = Command::new(BIN);
        for v in ["PARLOR_DATA_DIR", "PARLOR_LISTEN", "PARLOR_PUBLIC_URL"] {
            c.env_remove(v);
        }
        // Never the default ./data of the repository.
        c.current_dir(self.root.path());
        c
    }

    /// `parlor serve --listen 127.0.0.1:0 --data-dir DIR`; waits (bounded) for
    /// the single `listening on ADDR` stdout line and remembers ADDR.
    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Like [`Server::start`] with extra `serve` flags (e.g. `--public-url`).
    pub fn start_with(&mut self, extra: &[&str]) {
        self.start_with_env(extra, &[]);
    }

    /// Like [`Server::start_with`], with extra environment variables.
    pub fn start_with_env(&mut self, extra: &[&str], envs: &[(&str, &std::ffi::OsStr)]) {
        let data_dir = self.data_dir.clone();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        self.spawn_serve(&args, envs);
    }

    /// Starts `parlor serve` with no flags, configured only through
    /// `PARLOR_LISTEN=127.0.0.1:0` and `PARLOR_DATA_DIR=DIR`.
    pub fn start_via_env(&mut self) {
        let data_dir = self.data_dir.clone();
        self.spawn_serve(
            &[],
            &[
                ("PARLOR_LISTEN", "127.0.0.1:0".as_ref()),
                ("PARLOR_DATA_DIR", data_dir.as_os_str()),
            ],
        );
    }

    fn spawn_serve(&mut self, args: &[&std::ffi::OsStr], envs: &[(&str, &std::ffi::OsStr)]) {
        assert!(self.child.is_none(), "daemon already running");
        self.starts += 1;
        let log = self.root.path().join(format!("serve-{}.log", self.starts));
        let log_file = File::create(&log).expect("create log file");
        self.logs.push(log.clone());
        let mut cmd = self.base_command();
        cmd.arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        let mut child = cmd.spawn().expect("spawn parlor serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on (or dies of) a full
            // or closed stdout pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "parlor serve printed no `listening on` line within {:?} (exit: {:?})\n--- stderr ---\n{}",
                    START_TIMEOUT,
                    status,
                    tail(&log, 80)
                );
            }
        };
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let rest = trimmed.strip_prefix("listening on ").unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("first stdout line is not `listening on ADDR`: {trimmed:?}")
        });
        let addr: SocketAddr = rest
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {trimmed:?}: {e}"));
        assert!(
            addr.ip().is_loopback(),
            "daemon bound {addr}, expected 127.0.0.1"
        );
        assert_ne!(addr.port(), 0, "daemon printed port 0: {trimmed:?}");
        self.child = Some(child);
        self.addr = Some(addr);
    }

    /// SIGKILL the daemon (std's `Child::kill`) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.addr = None;
    }

    /// kill -9, then start again on the same data directory (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.start();
    }

    /// SIGTERM the daemon and wait (bounded) for it to exit; returns its exit
    /// code (`None` if killed by a signal). Panics if it does not exit.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut c = self.child.take().expect("daemon is not running");
        self.addr = None;
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `parlor ARGS… --data-dir DIR` with `stdin` as its standard input;
    /// bounded by [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cli_command(args, stdin, |cmd| {
            cmd.arg("--data-dir").arg(&self.data_dir);
        })
    }

    /// Runs `parlor ARGS…` (no `--data-dir` added) after `adjust` has had
    /// the command (more arguments, the environment); like [`Server::cli`]
    /// otherwise.
    pub fn cli_command(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut cmd = self.base_command();
        cmd.args(args);
        adjust(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn parlor CLI");
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(s) = stdin {
            // A CLI that exits early closes its stdin; ignore EPIPE.
            let _ = input.write_all(s.as_bytes());
        }
        drop(input);
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(out) => out.expect("wait for parlor CLI"),
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!(
                    "`parlor {}` did not finish within {:?}",
                    args.join(" "),
                    CLI_TIMEOUT
                );
            }
        }
    }

    /// `parlor user add NAME --role ROLE [EXTRA…]` with `password` on stdin.
    pub fn try_user_add(&self, name: &str, role: &str, password: &str, extra: &[&str]) -> Output {
        let mut args = vec!["user", "add", name, "--role", role];
        args.extend_from_slice(extra);
        self.cli(&args, Some(&format!("{password}\n")))
    }

    /// Adds a user in the default workspace; returns its id (decimal string).
    pub fn user_add(&self, name: &str, role: &str, password: &str) -> String {
        let out = self.try_user_add(name, role, password, &[]);
        parse_id_output(&out, &format!("user add {name}"))
    }

    /// Adds a user in workspace (tenant, instance); returns its id.
    pub fn user_add_in(
        &self,
        name: &str,
        role: &str,
        password: &str,
        tenant: &str,
        instance: &str,
    ) -> String {
        let out = self.try_user_add(
            name,
            role,
            password,
            &["--tenant", tenant, "--instance", instance],
        );
        parse_id_output(&out, &format!("user add {name} --tenant {tenant}"))
    }

    /// `parlor token issue NAME`; returns the token.
    pub fn token_issue(&self, name: &str) -> String {
        let out = self.cli(&["token", "issue", name], None);
        assert!(
            out.status.success(),
            "`parlor token issue {name}` failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tok = String::from_utf8(out.stdout)
            .expect("utf-8 token")
            .trim()
            .to_string();
        assert!(!tok.is_empty(), "`parlor token issue` printed nothing");
        assert!(
            !tok.contains(char::is_whitespace),
            "token has whitespace: {tok:?}"
        );
        tok
    }

    // -- HTTP / WS conveniences bound to this server's address --------------

    pub async fn get(&self, path: &str) -> Resp {
        get(&self.addr(), path).await
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        post_json(&self.addr(), path, token, body).await
    }

    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: impl Into<Bytes>) -> Resp {
        post_raw(&self.addr(), path, token, body).await
    }

    /// POST /auth/login; asserts 200 and returns (token, user_id).
    pub async fn login(&self, username: &str, password: &str) -> (String, String) {
        login(&self.addr(), username, password).await
    }

    pub async fn ws(&self, token: &str) -> Ws {
        Ws::auth(&self.addr(), token).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for log in &self.logs {
                eprintln!(
                    "--- daemon stderr ({}) ---\n{}",
                    log.display(),
                    tail(log, 60)
                );
            }
        }
    }
}

fn parse_id_output(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "`parlor {what}` failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    s.parse::<u64>()
        .unwrap_or_else(|_| panic!("`parlor {what}` printed {s:?}, expected a decimal id"));
    s
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Asserts the status, and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
        self.json()
    }

    /// Asserts `status` and a body of exactly `{"error": "<non-empty>",
    /// "error_code": code}` (API.md §1, REST error body).
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
        assert_error_body(&self.json(), code);
    }
}

/// `v` is exactly `{"error": "<non-empty string>", "error_code": code}`.
pub fn assert_error_body(v: &Value, code: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {v}"));
    assert_eq!(
        obj.get("error_code"),
        Some(&json!(code)),
        "error_code in {v}"
    );
    let msg = obj.get("error").and_then(Value::as_str);
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error must be a non-empty string: {v}"
    );
    assert_eq!(
        obj.len(),
        2,
        "error body must have exactly error + error_code: {v}"
    );
}

/// One request on its own connection to `addr` (always 127.0.0.1).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let body: Bytes = body.into();
    let what = format!("{method} {path}");
    match timeout(HTTP_TIMEOUT, http_inner(addr, method, path, headers, body)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{what} to {addr} failed: {e}"),
        Err(_) => panic!("{what} to {addr}: no complete response within {HTTP_TIMEOUT:?}"),
    }
}

/// Like [`http`], but a failed exchange is an `Err`, not a panic (for
/// clients that outlive a killed daemon).
pub async fn http_inner(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    conn_task.abort();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A counter or gauge of `/metrics` (asked from loopback).
pub async fn metric(addr: &str, name: &str) -> u64 {
    let text = get(addr, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

pub async fn get(addr: &str, path: &str) -> Resp {
    http(addr, "GET", path, &[], Bytes::new()).await
}

/// POST with a raw body, `Content-Type: application/json` and, if given,
/// `Authorization: Bearer TOKEN`.
pub async fn post_raw(addr: &str, path: &str, token: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    http(addr, "POST", path, &h, body).await
}

pub async fn post_json(addr: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
    post_raw(addr, path, token, serde_json::to_vec(body).unwrap()).await
}

/// POST /auth/login; asserts 200 `{"token","user_id"}` and returns them.
pub async fn login(addr: &str, username: &str, password: &str) -> (String, String) {
    let r = post_json(
        addr,
        "/auth/login",
        None,
        &json!({"username": username, "password": password}),
    )
    .await;
    let v = r.expect(200);
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {v}"))
        .to_string();
    let uid = v["user_id"]
        .as_str()
        .unwrap_or_else(|| panic!("user_id must be a string: {v}"));
    uid.parse::<u64>()
        .unwrap_or_else(|_| panic!("user_id not decimal: {v}"));
    assert!(!token.is_empty(), "empty token");
    (token, uid.to_string())
}

/// POST /chat/create_dm; asserts 200 and returns the room id.
pub async fn create_dm(addr: &str, token: &str, other: &str) -> String {
    let v = post_json(
        addr,
        "/chat/create_dm",
        Some(token),
        &json!({"other": other}),
    )
    .await
    .expect(200);
    let room = v["room_id"]
        .as_str()
        .unwrap_or_else(|| panic!("room_id must be a string: {v}"));
    room.parse::<u64>()
        .unwrap_or_else(|_| panic!("room_id not decimal: {v}"));
    room.to_string()
}

/// POST /admin/rooms; asserts 201 and returns the room id.
pub async fn admin_room(
    addr: &str,
    admin_token: &str,
    name: Option<&str>,
    members: &[&str],
) -> String {
    let mut body = json!({"members": members});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    let v = post_json(addr, "/admin/rooms", Some(admin_token), &body)
        .await
        .expect(201);
    let room = v["room_id"]
        .as_str()
        .unwrap_or_else(|| panic!("room_id must be a string: {v}"));
    room.parse::<u64>()
        .unwrap_or_else(|_| panic!("room_id not decimal: {v}"));
    room.to_string()
}

/// POST /chat/retrieve; asserts 200 and returns `messages` (each checked
/// with [`check_message`]).
pub async fn retrieve(addr: &str, token: &str, after: u64, limit: Option<u64>) -> Vec<Value> {
    let mut body = json!({"after": after});
    if let Some(l) = limit {
        body["limit"] = json!(l);
    }
    let v = post_json(addr, "/chat/retrieve", Some(token), &body)
        .await
        .expect(200);
    let msgs = v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("retrieve: `messages` must be an array: {v}"))
        .clone();
    for m in &msgs {
        check_message(m);
    }
    msgs
}

/// Checks the shape of a rooms-dialect message object: `id` a number,
/// `message` a string, `poster`/`room` decimal strings, `timestamp` an
/// integer number of unix seconds.
pub fn check_message(m: &Value) {
    assert!(
        m["id"].as_u64().is_some(),
        "message id must be a JSON number: {m}"
    );
    assert!(
        m["message"].is_string(),
        "message text must be a string: {m}"
    );
    for k in ["poster", "room"] {
        let s = m[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} must be a string: {m}"));
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("{k} must be a decimal id: {m}"));
    }
    assert!(
        m["timestamp"].as_u64().is_some(),
        "timestamp must be integer seconds: {m}"
    );
}

pub fn msg_id(m: &Value) -> u64 {
    m["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric id in {m}"))
}

pub fn msg_text(m: &Value) -> &str {
    m["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message text in {m}"))
}

/// Asserts ids strictly increase along `msgs`.
pub fn assert_ascending(msgs: &[Value]) {
    for w in msgs.windows(2) {
        assert!(
            msg_id(&w[0]) < msg_id(&w[1]),
            "ids not strictly ascending: {} then {}",
            w[0],
            w[1]
        );
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The set of message texts in `msgs`.
pub fn unique_texts(msgs: &[Value]) -> HashSet<String> {
    msgs.iter().map(|m| msg_text(m).to_string()).collect()
}

// ---------------------------------------------------------------------------
// Raw TCP (for requests hyper's client would not send as we want)
// ---------------------------------------------------------------------------

/// Sends `head` (request line + headers, ending in a blank line), then
/// `body` while concurrently reading; returns whatever the server answered
/// until it closed or `HTTP_TIMEOUT` passed (write errors are ignored: the
/// server may answer early and stop reading).
pub async fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = timeout(HTTP_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        // Keep the write half open; the server decides when to close.
        tokio::time::sleep(HTTP_TIMEOUT).await;
        drop(wr);
    });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + HTTP_TIMEOUT;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if response_complete(&got) {
                    break;
                }
            }
        }
    }
    writer.abort();
    got
}

/// True when `buf` holds a full response head and a complete
/// Content-Length (or chunked) body.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().ok())
        })
        .flatten();
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        None if head.contains("transfer-encoding: chunked") => buf.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

/// Parses a raw HTTP/1.1 response into (status, lower-cased head, body).
pub fn parse_raw_response(buf: &[u8]) -> (u16, String, Vec<u8>) {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let lower = head.to_ascii_lowercase();
    let mut body = buf[end + 4..].to_vec();
    if lower.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, lower, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the next WebSocket event was.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The stream ended (or errored) without a close frame.
    Ended,
}

/// A client connection to `ws://ADDR/chat/connect`.
pub struct Ws {
    pub stream: WsStream,
}

impl Ws {
    /// Opens the WebSocket (no auth frame yet).
    pub async fn open(addr: &str) -> Ws {
        let url = format!("ws://{addr}/chat/connect");
        let (stream, _resp) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake to {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake to {url} failed: {e}"));
        Ws { stream }
    }

    /// `/ws` (the typed dialect), authenticated on upgrade with
    /// `Authorization: Bearer`.
    pub async fn typed(addr: &str, token: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("WebSocket handshake to /ws timed out")
            .expect("WebSocket handshake to /ws failed");
        Ws { stream }
    }

    /// `ws://ADDR{path}` with no authentication yet (the actions dialect's
    /// paths: `/actions`, `/dev`, …).
    pub async fn open_path(addr: &str, path: &str) -> Ws {
        let url = format!("ws://{addr}{path}");
        let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .unwrap_or_else(|_| panic!("WebSocket handshake to {url} timed out"))
            .unwrap_or_else(|e| panic!("WebSocket handshake to {url} failed: {e}"));
        Ws { stream }
    }

    /// `/actions` after `ready` with `token`, its reply asserted.
    pub async fn actions_ready(addr: &str, token: &str) -> Ws {
        let mut ws = Ws::open_path(addr, "/actions").await;
        ws.send_json(&json!({"action": "ready", "authToken": token}))
            .await;
        assert_eq!(
            ws.recv_json(WS_TIMEOUT).await,
            json!({"message": "Connection ready"})
        );
        ws
    }

    /// Opens, sends `{"auth_token": token}` and asserts `{"status":"CONNECTED"}`.
    pub async fn auth(addr: &str, token: &str) -> Ws {
        let mut ws = Ws::open(addr).await;
        ws.send_json(&json!({"auth_token": token})).await;
        let v = ws.recv_json(WS_TIMEOUT).await;
        assert_eq!(v, json!({"status": "CONNECTED"}), "auth reply");
        ws
    }

    pub async fn send(&mut self, m: Message) {
        timeout(WS_TIMEOUT, self.stream.send(m))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send failed");
    }

    pub async fn send_text(&mut self, s: impl Into<String>) {
        self.send(Message::text(s.into())).await;
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.send(Message::binary(b)).await;
    }

    /// Sends `{"room": room, "messages": text}`.
    pub async fn send_msg(&mut self, room: &str, text: &str) {
        self.send_json(&json!({"room": room, "messages": text}))
            .await;
    }

    /// The next data/close event within `t` (pings/pongs skipped); panics on
    /// timeout.
    pub async fn next_frame(&mut self, t: Duration) -> Frame {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no WebSocket frame within {t:?}"));
            return match next {
                None | Some(Err(_)) => Frame::Ended,
                Some(Ok(Message::Text(s))) => Frame::Text(s.to_string()),
                Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                Some(Ok(Message::Close(c))) => Frame::Close(c.map(|f| u16::from(f.code))),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
        }
    }

    /// The next Text frame parsed as JSON; fails on timeout, close or
    /// anything that is not a JSON text frame.
    pub async fn recv_json(&mut self, t: Duration) -> Value {
        match self.next_frame(t).await {
            Frame::Text(s) => serde_json::from_str(&s)
                .unwrap_or_else(|e| panic!("text frame is not JSON ({e}): {s:?}")),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }

    /// The next frame must be a message push `{"message":{…}}`; returns the
    /// inner message object (shape-checked).
    pub async fn recv_message(&mut self, t: Duration) -> Value {
        let v = self.recv_json(t).await;
        let m = v
            .get("message")
            .filter(|m| m.is_object())
            .unwrap_or_else(|| panic!("expected a message push, got {v}"))
            .clone();
        check_message(&m);
        m
    }

    /// Asserts that no data frame (and no close) arrives during `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Waits (bounded by `t`) for the server to close the connection; returns
    /// the close code if a close frame came. Panics if a data frame arrives.
    pub async fn expect_closed(&mut self, t: Duration) -> Option<u16> {
        match self.next_frame(t).await {
            Frame::Close(code) => code,
            Frame::Ended => None,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Rate pacing
// ---------------------------------------------------------------------------

/// A client-side token bucket strictly inside API.md §1's guaranteed send
/// rates (burst ≥ 100, steady ≥ 20/s), so a test that sends many messages
/// as one user is never legitimately rate-limited. Use one per user.
pub struct Pacer {
    tokens: f64,
    cap: f64,
    per_sec: f64,
    last: Instant,
}

impl Pacer {
    pub fn new() -> Pacer {
        Pacer {
            tokens: 90.0,
            cap: 90.0,
            per_sec: 18.0,
            last: Instant::now(),
        }
    }

    /// Waits until one more send is inside the guaranteed envelope.
    pub async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let dt = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.per_sec;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// A small populated world shared by several test files
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub id: String,
    pub token: String,
}

/// A started daemon with: `admin` (admin), `alice`, `bob`, `carol`
/// (patient/staff, default workspace) and `eve` (workspace acme/north),
/// each logged in over HTTP.
pub struct World {
    pub srv: Server,
    pub admin: User,
    pub alice: User,
    pub bob: User,
    pub carol: User,
    pub eve: User,
}

impl World {
    pub async fn new() -> World {
        World::with_flags(&[]).await
    }

    /// Like [`World::new`], the daemon started with extra `serve` flags.
    pub async fn with_flags(flags: &[&str]) -> World {
        let mut srv = Server::new();
        type Spec<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>);
        let spec: [Spec; 5] = [
            ("admin", "admin", None),
            ("alice", "patient", None),
            ("bob", "staff", None),
            ("carol", "patient", None),
            ("eve@acme", "patient", Some(("acme", "north"))),
        ];
        let mut ids = Vec::new();
        for (name, role, ws) in spec {
            let pw = format!("pw-{name}-secret");
            let id = match ws {
                None => srv.user_add(name, role, &pw),
                Some((t, i)) => srv.user_add_in(name, role, &pw, t, i),
            };
            ids.push((name.to_string(), pw, id));
        }
        srv.start_with(flags);
        let addr = srv.addr();
        let logins = futures_util::future::join_all(ids.iter().map(|(n, pw, _)| {
            let addr = addr.clone();
            async move { login(&addr, n, pw).await }
        }))
        .await;
        let mut users: Vec<User> = ids
            .into_iter()
            .zip(logins)
            .map(|((name, password, id), (token, uid))| {
                assert_eq!(
                    uid, id,
                    "login user_id of {name} differs from `user add` output"
                );
                User {
                    name,
                    password,
                    id,
                    token,
                }
            })
            .collect();
        let eve = users.pop().unwrap();
        let carol = users.pop().unwrap();
        let bob = users.pop().unwrap();
        let alice = users.pop().unwrap();
        let admin = users.pop().unwrap();
        World {
            srv,
            admin,
            alice,
            bob,
            carol,
            eve,
        }
    }

    pub fn addr(&self) -> String {
        self.srv.addr()
    }
}

// ---------------------------------------------------------------------------
// Bulk send helpers
// ---------------------------------------------------------------------------

/// Sends every text of `texts` to `room` over `ws` (each send paced by
/// `pacer`, using the seed's `messages` field) while reading this
/// connection's pushes, until every text has been pushed back to this very
/// connection with `poster == me` (= acknowledged). Returns every push this
/// connection received meanwhile, in arrival order. Panics if a text is
/// pushed back twice, if the socket closes, or if `within` passes.
pub async fn send_until_echoed(
    ws: &mut Ws,
    me: &str,
    room: &str,
    texts: &[String],
    pacer: &mut Pacer,
    within: Duration,
) -> Vec<Value> {
    let mut pending: HashSet<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(pending.len(), texts.len(), "texts must be unique");
    let mut acked: HashSet<String> = HashSet::new();
    let mut pushes = Vec::new();
    let mut next = 0usize;
    let deadline = tokio::time::Instant::now() + within;
    while !pending.is_empty() {
        tokio::select! {
            _ = pacer.take(), if next < texts.len() => {
                let frame = json!({"room": room, "messages": texts[next]}).to_string();
                timeout(WS_TIMEOUT, ws.stream.send(Message::text(frame)))
                    .await
                    .expect("WebSocket send timed out")
                    .unwrap_or_else(|e| panic!("send #{next} failed (after {} acks): {e}", acked.len()));
                next += 1;
            }
            frame = ws.stream.next() => {
                let v: Value = match frame {
                    Some(Ok(Message::Text(s))) => serde_json::from_str(s.as_str())
                        .unwrap_or_else(|e| panic!("push is not JSON ({e}): {s:?}")),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!(
                        "socket of {me} ended while sending: {other:?} (sent {next}, {} of {} echoed)",
                        acked.len(),
                        texts.len()
                    ),
                };
                let m = v.get("message").cloned().unwrap_or_else(|| panic!("unexpected frame {v}"));
                check_message(&m);
                if m["poster"] == json!(me) {
                    let t = msg_text(&m);
                    if pending.remove(t) {
                        acked.insert(t.to_string());
                    } else if acked.contains(t) {
                        panic!("message pushed twice to one connection: {m}");
                    }
                }
                pushes.push(m);
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!(
                    "{me}: only {} of {} messages echoed within {within:?} (sent {next})",
                    acked.len(),
                    texts.len()
                );
            }
        }
    }
    pushes
}

/// Reads message pushes from `ws` until `n` have arrived (bounded by `within`).
pub async fn collect_pushes(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            panic!("only {} of {n} pushes within {within:?}", out.len());
        }
        out.push(ws.recv_message(left).await);
    }
    out
}

// --- Crash and power-cut harnesses (durability.rs, powercut.rs) -------------

/// `serve` flags for the crash harnesses: rate limits high enough that the
/// senders are limited by the daemon's commit speed, not by policy.
pub const UNTHROTTLED: [&str; 4] = ["--msg-burst", "1000000", "--msg-rate", "1000000"];

/// A small xorshift generator: crash moments are random but reproducible
/// from a printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Records a push as acknowledged (any live delivery acknowledges); the same
/// id pushed twice must be the same message.
pub fn ack(acked: &mut std::collections::BTreeMap<u64, Value>, m: Value) {
    let id = msg_id(&m);
    if let Some(prev) = acked.get(&id) {
        assert_eq!(prev, &m, "two different messages pushed with id {id}");
    } else {
        acked.insert(id, m);
    }
}

/// A seed for a harness's random choices: `$var` if set (to replay a run),
/// else the clock (odd, as xorshift needs a non-zero state).
pub fn seed_from_env(var: &str) -> u64 {
    env_u64(var).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    })
}

/// Senders posting to one room as fast as the daemon commits, one
/// `/chat/connect` socket each, never waiting for answers; every push a
/// socket receives is checked and recorded as acknowledged. Built to be
/// cut off: the tasks end when the daemon dies.
pub struct SendLoad {
    acked: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u64, Value>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SendLoad {
    /// `texts[i]` is sent by `tokens[i]`.
    pub async fn start(
        addr: &str,
        tokens: &[String],
        room: &str,
        texts: Vec<Vec<String>>,
    ) -> SendLoad {
        let acked = std::sync::Arc::<std::sync::Mutex<_>>::default();
        let mut tasks = Vec::new();
        for (tok, texts) in tokens.iter().zip(texts) {
            let (mut sink, mut stream) = Ws::auth(addr, tok).await.stream.split();
            let acked_r = std::sync::Arc::clone(&acked);
            // Reader: ends when the daemon dies (or stays silent for 30 s).
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(Ok(frame))) =
                    timeout(Duration::from_secs(30), stream.next()).await
                {
                    if let Message::Text(s) = frame {
                        let v: Value = serde_json::from_str(s.as_str()).expect("push is JSON");
                        let m = v["message"].clone();
                        check_message(&m);
                        ack(&mut acked_r.lock().unwrap(), m);
                    }
                }
            }));
            // Writer: stops at the first failed send.
            let room = room.to_string();
            tasks.push(tokio::spawn(async move {
                for t in texts {
                    let f = json!({"room": room, "messages": t}).to_string();
                    if !matches!(
                        timeout(WS_TIMEOUT, sink.send(Message::text(f))).await,
                        Ok(Ok(()))
                    ) {
                        break;
                    }
                }
            }));
        }
        SendLoad { acked, tasks }
    }

    /// Pushes seen so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Once the daemon is gone: waits for every task and returns what was
    /// acknowledged.
    pub async fn finish(self) -> std::collections::BTreeMap<u64, Value> {
        for t in self.tasks {
            timeout(Duration::from_secs(40), t)
                .await
                .expect("client task did not end after the daemon died")
                .expect("client task panicked");
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}
