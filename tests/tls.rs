//! Black-box tests of the optional TLS listener (`--tls-cert` /
//! `--tls-key`): HTTPS over TLS 1.3 and 1.2, `wss://` on the rooms
//! dialect, plain HTTP and stalled handshakes on the TLS port, and bad
//! certificate files refusing the start. The certificate is a fresh
//! self-signed one for `localhost` / 127.0.0.1, the clients' only root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{
    self, ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate and its key, as PEM files in a temp dir.
struct Pki {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("parlor-tls-")
            .tempdir()
            .expect("temp dir");
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a self-signed certificate");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Pki {
            der: ck.cert.der().clone(),
            dir,
            cert,
            key,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn args(&self) -> [String; 4] {
        [
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A client trusting only this certificate, offering ALPN `http/1.1`,
    /// restricted to `versions`.
    fn client(&self, versions: &[&'static SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(cfg))
    }

    fn client_default(&self) -> TlsConnector {
        self.client(rustls::DEFAULT_VERSIONS)
    }
}

/// Starts `parlor serve` with the certificate of `pki`.
fn start_tls(srv: &mut Server, pki: &Pki) {
    let args = pki.args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    srv.start_with(&refs);
}

/// TCP connect + TLS handshake to `addr` as `localhost`, bounded.
async fn tls_connect(addr: &str, tls: &TlsConnector) -> TlsStream<TcpStream> {
    timeout(HTTP_TIMEOUT, async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        tls.connect(name, tcp).await.expect("TLS handshake")
    })
    .await
    .expect("TLS connect timed out")
}

/// One HTTPS request on its own connection; returns (status, body, the
/// negotiated TLS version).
async fn https(
    addr: &str,
    tls: &TlsConnector,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Bytes, Option<ProtocolVersion>) {
    let stream = tls_connect(addr, tls).await;
    let version = stream.get_ref().1.protocol_version();
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN"
    );
    timeout(HTTP_TIMEOUT, async {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP handshake");
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", port(addr)));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let res = sender
            .send_request(req.body(Full::new(body)).unwrap())
            .await
            .expect("HTTPS request");
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        conn_task.abort();
        (status, body, version)
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path} over TLS: no response within {HTTP_TIMEOUT:?}"))
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

async fn healthz_over(addr: &str, tls: &TlsConnector) -> Option<ProtocolVersion> {
    let (status, body, version) = https(addr, tls, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "healthz body: {body:?}");
    version
}

// ---------------------------------------------------------------------------
// HTTPS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn healthz_over_tls13_and_tls12() {
    let pki = Pki::new();
    let mut srv = Server::new();
    start_tls(&mut srv, &pki);
    let addr = srv.addr();

    let v = healthz_over(&addr, &pki.client(&[&rustls::version::TLS13])).await;
    assert_eq!(v, Some(ProtocolVersion::TLSv1_3));
    let v = healthz_over(&addr, &pki.client(&[&rustls::version::TLS12])).await;
    assert_eq!(v, Some(ProtocolVersion::TLSv1_2));
    // Default client: the best both sides have.
    let v = healthz_over(&addr, &pki.client_default()).await;
    assert_eq!(v, Some(ProtocolVersion::TLSv1_3));
}

// ---------------------------------------------------------------------------
// wss://
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn wss_rooms_session_sends_and_receives() {
    let pki = Pki::new();
    let mut srv = Server::new();
    let alice = srv.user_add("alice", "staff", "pw-alice-secret");
    let bob = srv.user_add("bob", "staff", "pw-bob-secret");
    let alice_token = srv.token_issue("alice");
    let bob_token = srv.token_issue("bob");
    start_tls(&mut srv, &pki);
    let addr = srv.addr();
    let tls = pki.client_default();

    let (status, body, _) = https(
        &addr,
        &tls,
        "POST",
        "/chat/create_dm",
        Some(&alice_token),
        Some(&json!({"other": bob})),
    )
    .await;
    assert_eq!(status, 200, "create_dm: {body:?}");
    let room = serde_json::from_slice::<Value>(&body).unwrap()["room_id"]
        .as_str()
        .expect("room_id")
        .to_string();

    let mut a = wss_auth(&addr, &tls, &alice_token).await;
    let mut b = wss_auth(&addr, &tls, &bob_token).await;
    send_json(&mut a, &json!({"room": room, "messages": "over TLS"})).await;
    for ws in [&mut a, &mut b] {
        let v = recv_json(ws).await;
        let m = &v["message"];
        check_message(m);
        assert_eq!(msg_text(m), "over TLS");
        assert_eq!(m["poster"], json!(alice));
        assert_eq!(m["room"], json!(room));
    }
}

type Wss = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

/// `wss://localhost:PORT/chat/connect`, then the auth frame.
async fn wss_auth(addr: &str, tls: &TlsConnector, token: &str) -> Wss {
    let stream = tls_connect(addr, tls).await;
    let url = format!("wss://localhost:{}/chat/connect", port(addr));
    let (mut ws, _resp) = timeout(WS_TIMEOUT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake");
    send_json(&mut ws, &json!({"auth_token": token})).await;
    assert_eq!(recv_json(&mut ws).await, json!({"status": "CONNECTED"}));
    ws
}

async fn send_json(ws: &mut Wss, v: &Value) {
    timeout(WS_TIMEOUT, ws.send(Message::text(v.to_string())))
        .await
        .expect("send timed out")
        .expect("send");
}

async fn recv_json(ws: &mut Wss) -> Value {
    let deadline = tokio::time::Instant::now() + WS_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no WebSocket frame in time");
        match next {
            Some(Ok(Message::Text(s))) => return serde_json::from_str(&s).expect("JSON frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Not TLS on the TLS port
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_the_tls_port_gets_a_400_saying_use_https_and_the_server_carries_on() {
    let pki = Pki::new();
    let mut srv = Server::new();
    start_tls(&mut srv, &pki);
    let addr = srv.addr();
    let tls = pki.client_default();

    for head in [
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
        format!("POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 2\r\n\r\n{{}}"),
    ] {
        let started = Instant::now();
        let got = raw_exchange(&addr, head.clone(), Vec::new()).await;
        let (status, lower_head, body) = parse_raw_response(&got);
        assert_eq!(
            status,
            400,
            "{head:?} → {:?}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            lower_head.contains("content-type: application/json"),
            "{lower_head}"
        );
        let v: Value = serde_json::from_slice(&body).expect("a JSON error body");
        assert_error_body(&v, "BAD_REQUEST");
        assert!(
            v["error"].as_str().unwrap().contains("https://"),
            "the answer does not say to use https: {v}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered only after {:?}",
            started.elapsed()
        );
    }
    healthz_over(&addr, &tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn neither_tls_nor_http_on_the_tls_port_is_closed_without_an_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let mut srv = Server::new();
    start_tls(&mut srv, &pki);
    let addr = srv.addr();

    let started = Instant::now();
    let mut s = timeout(HTTP_TIMEOUT, TcpStream::connect(&addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    s.write_all(b"\x00\x01\x02\x03 not a TLS record\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let r = timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the connection was not closed within 5 s");
    assert!(
        r.is_err() || !got.starts_with(b"HTTP/"),
        "answered in HTTP: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    healthz_over(&addr, &pki.client_default()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_handshake_does_not_block_others_and_is_dropped_in_time() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let mut srv = Server::new();
    start_tls(&mut srv, &pki);
    let addr = srv.addr();

    // Connects and never says anything.
    let mut idle = timeout(HTTP_TIMEOUT, TcpStream::connect(&addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let started = Instant::now();
    // Others are served meanwhile.
    healthz_over(&addr, &pki.client_default()).await;
    // The handshake timeout (10 s) closes the silent connection.
    let mut buf = [0u8; 64];
    let r = timeout(Duration::from_secs(20), idle.read(&mut buf))
        .await
        .expect("a silent connection was not closed within 20 s");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "expected the connection closed, got {r:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "closed after only {:?}",
        started.elapsed()
    );
    healthz_over(&addr, &pki.client_default()).await;
}

// ---------------------------------------------------------------------------
// Bad files refuse the start
// ---------------------------------------------------------------------------

/// Runs `parlor serve` with `args` on a fresh data dir; it must exit (within
/// a timeout) non-zero, without a `listening on` line. Returns its stderr and
/// the data dir (to check that no store was made).
fn serve_must_fail(args: &[&str]) -> (String, TempDir) {
    serve_must_fail_env(args, &[])
}

fn serve_must_fail_env(args: &[&str], envs: &[(&str, &Path)]) -> (String, TempDir) {
    let root = tempfile::Builder::new()
        .prefix("parlor-tls-fail-")
        .tempdir()
        .unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut cmd = Command::new(BIN);
    for v in [
        "PARLOR_DATA_DIR",
        "PARLOR_LISTEN",
        "PARLOR_PUBLIC_URL",
        "PARLOR_TLS_CERT",
        "PARLOR_TLS_KEY",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .current_dir(root.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn parlor serve");
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("parlor serve {args:?} did not exit within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !status.success(),
        "parlor serve {args:?} succeeded; stderr: {stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "it listened before failing: {stdout}"
    );
    assert!(!stderr.contains("panicked"), "it panicked: {stderr}");
    (stderr, root)
}

fn assert_refused(args: &[&str], file: &Path) {
    assert_refused_env(args, &[], file);
}

fn assert_refused_env(args: &[&str], envs: &[(&str, &Path)], file: &Path) {
    let (stderr, root) = serve_must_fail_env(args, envs);
    let file = file.display().to_string();
    assert!(
        stderr.contains(&file),
        "the error does not name {file}: {stderr}"
    );
    assert!(
        !root.path().join("data").join("store").exists(),
        "a store was made before the TLS files were checked"
    );
}

#[test]
fn mismatched_key_refuses_to_start_naming_the_file() {
    let pki = Pki::new();
    let other = pki.path("other-key.pem");
    std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let cert = pki.cert.display().to_string();
    let key = other.display().to_string();
    assert_refused(&["--tls-cert", &cert, "--tls-key", &key], &other);
}

#[test]
fn missing_files_refuse_to_start_naming_the_file() {
    let pki = Pki::new();
    let missing = pki.path("nope.pem");
    let cert = pki.cert.display().to_string();
    let key = pki.key.display().to_string();
    let gone = missing.display().to_string();
    assert_refused(&["--tls-cert", &gone, "--tls-key", &key], &missing);
    assert_refused(&["--tls-cert", &cert, "--tls-key", &gone], &missing);
}

#[test]
fn file_without_a_certificate_or_key_refuses_to_start() {
    let pki = Pki::new();
    let cert = pki.cert.display().to_string();
    let key = pki.key.display().to_string();
    // The key file holds no certificate, the certificate file no key.
    assert_refused(&["--tls-cert", &key, "--tls-key", &key], &pki.key);
    assert_refused(&["--tls-cert", &cert, "--tls-key", &cert], &pki.cert);
}

#[test]
fn cert_without_key_is_a_usage_error() {
    let pki = Pki::new();
    let cert = pki.cert.display().to_string();
    let key = pki.key.display().to_string();
    let (stderr, _root) = serve_must_fail(&["--tls-cert", &cert]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let (stderr, _root) = serve_must_fail(&["--tls-key", &key]);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

#[test]
fn files_are_read_from_the_environment_too() {
    let pki = Pki::new();
    let missing = pki.path("env-nope.pem");
    assert_refused_env(
        &[],
        &[("PARLOR_TLS_CERT", &pki.cert), ("PARLOR_TLS_KEY", &missing)],
        &missing,
    );
    let (stderr, _root) = serve_must_fail_env(&[], &[("PARLOR_TLS_CERT", &pki.cert)]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
