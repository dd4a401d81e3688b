//! Black-box tests of webhook delivery (API.md §5, "Webhook"): a loopback
//! receiver in the test, the real daemon, the patient dialect and the rooms
//! dialect as senders. Every wait is bounded; the daemon runs with
//! `--webhook-max-backoff-secs 1` so retries come within a second.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

/// How long one webhook call may take to arrive (first attempt or retry).
const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the 1 s backoff cap: a retry that was due has come by then.
const NO_RETRY: Duration = Duration::from_millis(2500);

// ---------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Call {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
}

impl Call {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on 127.0.0.1: answers 500 to its first `fail_first`
/// calls and 200 after that, and hands every call to the test.
struct Receiver {
    url: String,
    calls: mpsc::UnboundedReceiver<Call>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/parlor?src=test", l.local_addr().unwrap());
        let (tx, calls) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (tx, seen) = (tx.clone(), seen.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let (tx, seen) = (tx.clone(), seen.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body: Bytes = BodyExt::collect(body).await?.to_bytes();
                            let n = seen.fetch_add(1, Ordering::SeqCst);
                            let status = if n < fail_first { 500 } else { 200 };
                            let _ = tx.send(Call {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                                status,
                            });
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, hyper::Error>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Receiver { url, calls, task }
    }

    async fn next(&mut self) -> Call {
        tokio::time::timeout(HOOK_TIMEOUT, self.calls.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook call within {HOOK_TIMEOUT:?}"))
            .expect("receiver stopped")
    }

    async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(c)) = tokio::time::timeout(d, self.calls.recv()).await {
            panic!("unexpected webhook call: {c:?}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// The clinic, and what its tests ask of it
// ---------------------------------------------------------------------------

/// The clinic, its daemon retrying webhooks within a second, started with
/// `extra` flags too.
async fn clinic(extra: &[&str]) -> Clinic {
    let mut flags = vec!["--webhook-max-backoff-secs", "1"];
    flags.extend_from_slice(extra);
    Clinic::with_flags(&flags).await
}

impl Clinic {
    /// `parlor webhook set` for the clinic's workspace, `secret` on stdin
    /// (through the running daemon's control socket, or the store itself).
    fn set_hook_cli(&self, url: &str, key: &str, secret: &str) -> std::process::Output {
        let args = [
            "webhook",
            "set",
            "--tenant",
            TENANT,
            "--instance",
            INSTANCE,
            "--url",
            url,
            "--api-key",
            key,
        ];
        self.srv.cli(&args, Some(secret))
    }

    async fn set_hook(&self, url: &str, key: &str, secret: &str) {
        let body = json!({"tenant": TENANT, "instance": INSTANCE, "url": url, "api_key": key, "api_secret": secret});
        let r = self
            .srv
            .post_json("/admin/webhooks", Some(&self.admin.token), &body)
            .await;
        assert_eq!(r.status, 204, "set webhook: {}", r.text());
        assert!(r.body.is_empty());
    }

    fn chat_path(&self, sub: &str) -> String {
        format!("/{TENANT}/{INSTANCE}/patient/{}/chat/{sub}", self.pat.id)
    }

    /// Posts through the patient dialect; returns the message's externalId.
    async fn send(&self, token: &str, sub: &str, text: &str) -> String {
        let v = self
            .srv
            .post_json(&self.chat_path(sub), Some(token), &json!({"message": text}))
            .await
            .expect(200);
        v["externalId"].as_str().unwrap().to_owned()
    }

    async fn pending(&self) -> Value {
        self.srv
            .get_as("/admin/webhooks/pending", &self.admin.token)
            .await
            .expect(200)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn staff_message_is_accepted_once_after_two_failures_with_one_id_and_a_valid_signature() {
    let c = clinic(&["--public-url", "https://chat.example/base/"]).await;
    let mut rx = Receiver::start(2).await;
    c.set_hook(&rx.url, "key-123", "s3cret-ABC").await;

    let sent = Instant::now();
    let ext = c.send(&c.nurse.token, "outbound", "Webhook test...").await;
    let calls = [rx.next().await, rx.next().await, rx.next().await];
    // First attempt at once; two retries, each within the 1 s cap.
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [500, 500, 200]
    );
    let want_body = format!(
        r#"{{"patientId":"{p}","patientUrl":"https://chat.example/base/{TENANT}/{INSTANCE}/patients/{p}","tenantName":"{TENANT}","instanceName":"{INSTANCE}","message":"Webhook test..."}}"#,
        p = c.pat.id
    );
    for call in &calls {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, "/hooks/parlor?src=test");
        assert_eq!(std::str::from_utf8(&call.body).unwrap(), want_body);
        assert_eq!(call.header("x-webhook-api-key"), "key-123");
        assert_eq!(call.header("x-webhook-api-secret"), "s3cret-ABC");
        assert_eq!(call.header("x-webhook-id"), ext, "one id for every retry");
        assert_eq!(call.header("content-type"), "application/json");
        assert_eq!(
            call.header("x-webhook-signature"),
            format!("sha256={}", hmac_hex("s3cret-ABC", &call.body))
        );
        assert_eq!(call.header("content-length"), call.body.len().to_string());
    }
    // Accepted: never sent again, and nothing is pending.
    rx.expect_silence(NO_RETRY).await;
    assert_eq!(c.pending().await, json!({"pending": [], "more": false}));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_webhook_endpoints_check_role_fields_and_url() {
    let c = clinic(&[]).await;
    let ok = json!({"tenant": TENANT, "instance": INSTANCE, "url": "http://127.0.0.1:9/x", "api_key": "k", "api_secret": "s"});
    let post = |token: Option<String>, body: Value| {
        let srv = &c.srv;
        async move {
            srv.post_json("/admin/webhooks", token.as_deref(), &body)
                .await
        }
    };
    post(None, ok.clone())
        .await
        .expect_error(401, "UNAUTHENTICATED");
    post(Some(c.nurse.token.clone()), ok.clone())
        .await
        .expect_error(403, "FORBIDDEN");
    for field in ["tenant", "instance", "url", "api_key", "api_secret"] {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(field);
        post(Some(c.admin.token.clone()), b)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    for (field, bad) in [
        ("url", json!("ftp://127.0.0.1/x")),
        ("url", json!("not a url")),
        ("api_secret", json!("line\nbreak")),
        ("api_secret", json!("")),
        ("api_key", json!("")),
        ("tenant", json!("")),
    ] {
        let mut b = ok.clone();
        b[field] = bad;
        post(Some(c.admin.token.clone()), b)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    c.srv
        .post_raw("/admin/webhooks", Some(&c.admin.token), "{")
        .await
        .expect_error(400, "BAD_REQUEST");
    // A workspace without users may have a webhook.
    let mut b = ok.clone();
    b["tenant"] = json!("nobody-yet");
    assert_eq!(post(Some(c.admin.token.clone()), b).await.status, 204);

    c.srv
        .get_as("/admin/webhooks/pending", &c.nurse.token)
        .await
        .expect_error(403, "FORBIDDEN");
    c.srv
        .get("/admin/webhooks/pending")
        .await
        .expect_error(401, "UNAUTHENTICATED");
    c.srv
        .get_as("/admin/webhooks/pending?limit=0", &c.admin.token)
        .await
        .expect_error(400, "BAD_REQUEST");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_set_cli_refuses_an_empty_secret_running_and_stopped() {
    let mut c = clinic(&[]).await;
    for running in [true, false] {
        if !running {
            c.srv.kill9();
        }
        for (key, secret) in [("k", ""), ("k", "\n"), ("", "s\n")] {
            let out = c.set_hook_cli("http://127.0.0.1:9/x", key, secret);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "running={running}: key {key:?}, secret {secret:?} accepted"
            );
            assert!(stderr.contains("must not be empty"), "{stderr}");
        }
        // The same with a secret is fine.
        let out = c.set_hook_cli("http://127.0.0.1:9/x", "k", "s\n");
        assert!(out.status.success(), "running={running}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn patient_and_on_behalf_messages_do_not_fire_but_staff_answers_over_other_dialects_do() {
    let c = clinic(&[]).await;
    let mut rx = Receiver::start(0).await;
    c.set_hook(&rx.url, "k", "s").await;
    c.send(&c.pat.token, "inbound", "from the patient").await;
    c.send(&c.nurse.token, "inbound", "for the patient, by staff")
        .await;
    // Another workspace (no webhook) answering its own patient.
    let r = c
        .srv
        .post_json(
            &format!("/acme/north/patient/{}/chat/outbound", c.epat.id),
            Some(&c.mallory.token),
            &json!({"message": "other workspace"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The patient chat is an ordinary room for the rooms dialect: staff
    // answering there fires the webhook too.
    let msgs = retrieve(&c.srv.addr(), &c.nurse.token, 0, None).await;
    let room = msgs[0]["room"].as_str().unwrap().to_owned();
    let mut ws = c.srv.ws(&c.nurse.token).await;
    ws.send_msg(&room, "answered over /chat/connect").await;
    let pushed = ws.recv_message(WS_TIMEOUT).await;
    assert_eq!(msg_text(&pushed), "answered over /chat/connect");

    let call = rx.next().await;
    assert_eq!(call.json()["message"], "answered over /chat/connect");
    assert_eq!(call.json()["patientId"], c.pat.id.as_str());
    assert_eq!(
        call.header("x-webhook-id"),
        format!("IM{:032x}", msg_id(&pushed))
    );

    // …and so does an answer over the actions dialect.
    let tok = c.nurse.token.as_str();
    let mut actions = Ws::actions_ready(&c.srv.addr(), tok).await;
    actions
        .send_json(&json!({"action": "send_message", "authToken": tok, "chat_id": room, "message": "answered over /actions"}))
        .await;
    let call = rx.next().await;
    assert_eq!(call.json()["message"], "answered over /actions");
    rx.expect_silence(Duration::from_millis(800)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_patients_deliveries_arrive_in_message_order_even_when_the_first_is_retried() {
    let c = clinic(&[]).await;
    let mut rx = Receiver::start(1).await;
    // Set through the CLI and the running daemon's control socket.
    let out = c.set_hook_cli(&rx.url, "k", "s\n");
    assert!(out.status.success(), "{out:?}");
    let first = c.send(&c.nurse.token, "outbound", "first").await;
    let second = c.send(&c.nurse.token, "outbound", "second").await;
    let seq: Vec<(String, u16)> = [rx.next().await, rx.next().await, rx.next().await]
        .iter()
        .map(|c| (c.header("x-webhook-id").to_owned(), c.status))
        .collect();
    assert_eq!(
        seq,
        [(first.clone(), 500), (first, 200), (second, 200)],
        "the second waits until the first is accepted"
    );
    rx.expect_silence(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pending_webhook_survives_kill_9_and_is_delivered_after_restart() {
    let mut c = clinic(&[]).await;
    // A receiver that is down: a port nobody listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    c.set_hook(&down, "k", "old-secret").await;
    let ext = c
        .send(&c.nurse.token, "outbound", "kept across a crash")
        .await;

    // The operator sees it failing, over HTTP and through the CLI.
    let deadline = Instant::now() + HOOK_TIMEOUT;
    let entry = loop {
        let v = c.pending().await;
        let e = v["pending"][0].clone();
        if e["failed_attempts"].as_u64().unwrap_or(0) >= 1 {
            break e;
        }
        assert!(Instant::now() < deadline, "no failed attempt listed: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entry["external_id"], ext.as_str());
    assert_eq!(entry["patient_id"], c.pat.id.as_str());
    assert_eq!(
        (entry["tenant"].clone(), entry["instance"].clone()),
        (json!(TENANT), json!(INSTANCE))
    );
    assert!(
        entry["last_error"].as_str().unwrap().contains("connecting"),
        "{entry}"
    );
    assert!(
        entry.get("message").is_none(),
        "the listing leaves the text out"
    );
    let out = c.srv.cli(&["webhook", "pending"], None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains(&ext), "{table}");
    assert!(
        table.contains("retrying") || table.contains("sending"),
        "{table}"
    );

    c.srv.kill9();
    // With the daemon gone the CLI reads the store itself.
    let out = c.srv.cli(&["webhook", "pending", "--json"], None);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"][0]["external_id"], ext.as_str());
    assert_eq!(v["pending"][0]["failed_attempts"], Value::Null);
    // The receiver comes up elsewhere; the operator points the workspace
    // there (read at send time), and the daemon restarts.
    let mut rx = Receiver::start(0).await;
    let out = c.set_hook_cli(&rx.url, "k2", "new-secret\n");
    assert!(out.status.success(), "{out:?}");
    c.srv.start_with(&["--webhook-max-backoff-secs", "1"]);
    let call = rx.next().await;
    assert_eq!(call.header("x-webhook-id"), ext);
    assert_eq!(call.json()["message"], "kept across a crash");
    assert_eq!(call.header("x-webhook-api-key"), "k2");
    assert_eq!(
        call.header("x-webhook-signature"),
        format!("sha256={}", hmac_hex("new-secret", &call.body))
    );
    rx.expect_silence(Duration::from_millis(1500)).await;
    c.admin.token = c.srv.login("admin", &c.admin.password).await.0;
    assert_eq!(c.pending().await, json!({"pending": [], "more": false}));
}

// ---------------------------------------------------------------------------
// The end of a webhook's life: delete, give up, retry
// ---------------------------------------------------------------------------

/// `--webhook-give-up-hours` for the tests: 1.8 s.
const GIVE_UP: &str = "0.0005";

impl Clinic {
    async fn delete_hook(&self, token: Option<&str>, body: &str) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        http(
            &self.srv.addr(),
            "DELETE",
            "/admin/webhooks",
            &headers,
            Bytes::from(body.to_owned()),
        )
        .await
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.srv.cli(args, None);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn cli_err(&self, args: &[&str]) -> String {
        let out = self.srv.cli(args, None);
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `parlor webhook pending --dead --json`.
    fn dead(&self) -> Value {
        let out = self.cli_ok(&["webhook", "pending", "--dead", "--json"]);
        serde_json::from_str(&out).unwrap()
    }

    async fn metric(&self, name: &str) -> u64 {
        metric(&self.srv.addr(), name).await
    }
}

/// A URL nobody answers on (a receiver that is down).
fn down_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_webhook_endpoint_answers_204_then_404_and_checks_role_and_body() {
    let c = clinic(&[]).await;
    c.set_hook("http://127.0.0.1:9/x", "k", "s").await;
    let ws = json!({"tenant": TENANT, "instance": INSTANCE}).to_string();
    c.delete_hook(None, &ws)
        .await
        .expect_error(401, "UNAUTHENTICATED");
    c.delete_hook(Some(&c.nurse.token), &ws)
        .await
        .expect_error(403, "FORBIDDEN");
    c.delete_hook(Some(&c.pat.token), &ws)
        .await
        .expect_error(403, "FORBIDDEN");
    for bad in [
        "{".to_owned(),
        "[]".to_owned(),
        json!({"tenant": TENANT}).to_string(),
        json!({"instance": INSTANCE}).to_string(),
        json!({"tenant": "", "instance": INSTANCE}).to_string(),
        json!({"tenant": TENANT, "instance": 7}).to_string(),
    ] {
        c.delete_hook(Some(&c.admin.token), &bad)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    // A workspace without a webhook, and one that does not exist at all.
    for other in [
        json!({"tenant": TENANT, "instance": "other"}),
        json!({"tenant": "nobody", "instance": "none"}),
    ] {
        c.delete_hook(Some(&c.admin.token), &other.to_string())
            .await
            .expect_error(404, "NOT_FOUND");
    }
    let r = c.delete_hook(Some(&c.admin.token), &ws).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    c.delete_hook(Some(&c.admin.token), &ws)
        .await
        .expect_error(404, "NOT_FOUND");
    // Set again after a delete: a webhook like any other.
    c.set_hook("http://127.0.0.1:9/x", "k", "s").await;
    assert_eq!(c.delete_hook(Some(&c.admin.token), &ws).await.status, 204);
    // Two deletes, two audit records; the refused ones left none.
    let trail = c.cli_ok(&[
        "audit",
        "export",
        "--tenant",
        TENANT,
        "--instance",
        INSTANCE,
    ]);
    let deletes: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "webhook.delete")
        .collect();
    assert_eq!(deletes.len(), 2, "{trail}");
    assert_eq!(deletes[0]["detail"]["url"], "http://127.0.0.1:9/x");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_webhook_drops_its_pending_deliveries_and_gets_no_new_ones() {
    let c = clinic(&[]).await;
    let ws = json!({"tenant": TENANT, "instance": INSTANCE}).to_string();
    let mut rx = Receiver::start(0).await;
    c.set_hook(&rx.url, "k", "s").await;
    c.send(&c.nurse.token, "outbound", "before").await;
    assert_eq!(rx.next().await.json()["message"], "before");
    assert_eq!(c.delete_hook(Some(&c.admin.token), &ws).await.status, 204);
    // No webhook: a staff message queues nothing and reaches no one.
    c.send(&c.nurse.token, "outbound", "after the delete").await;
    rx.expect_silence(NO_RETRY).await;
    assert_eq!(c.pending().await, json!({"pending": [], "more": false}));

    // A delivery failing against a receiver that is down is dropped by
    // the delete: pointing the workspace at a live receiver again does
    // not bring it back.
    c.set_hook(&down_url(), "k", "s").await;
    let failing = c
        .send(&c.nurse.token, "outbound", "to a receiver that is down")
        .await;
    assert_eq!(
        c.pending().await["pending"][0]["external_id"],
        failing.as_str()
    );
    assert_eq!(c.delete_hook(Some(&c.admin.token), &ws).await.status, 204);
    assert_eq!(c.pending().await, json!({"pending": [], "more": false}));
    assert_eq!(c.dead(), json!({"dead": [], "more": false}));
    c.set_hook(&rx.url, "k", "s").await;
    c.send(&c.nurse.token, "outbound", "with the new webhook")
        .await;
    assert_eq!(rx.next().await.json()["message"], "with the new webhook");
    rx.expect_silence(NO_RETRY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_delete_cli_works_running_and_stopped_and_says_when_there_is_none() {
    let mut c = clinic(&[]).await;
    let delete = [
        "webhook",
        "delete",
        "--tenant",
        TENANT,
        "--instance",
        INSTANCE,
    ];
    for running in [true, false] {
        if !running {
            c.srv.kill9();
        }
        let out = c.set_hook_cli(&down_url(), "k", "s\n");
        assert!(out.status.success(), "{out:?}");
        if running {
            c.send(&c.nurse.token, "outbound", "pending at the delete")
                .await;
            assert_eq!(
                c.cli_ok(&delete),
                "deleted; dropped 1 pending and 0 dead deliveries\n"
            );
        } else {
            assert_eq!(
                c.cli_ok(&delete),
                "deleted; dropped 0 pending and 0 dead deliveries\n"
            );
        }
        let err = c.cli_err(&delete);
        assert!(err.contains("has no webhook"), "running={running}: {err}");
        let out = c.cli_ok(&["webhook", "pending", "--json"]);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!({"pending": [], "more": false})
        );
    }
    let err = c.cli_err(&["webhook", "delete", "--tenant", "", "--instance", INSTANCE]);
    assert!(err.contains("tenant"), "{err}");
}

/// A delivery failing for `--webhook-give-up-hours` is set aside as dead:
/// listed by `pending --dead`, no longer tried, no longer holding back the
/// patient's next delivery; `retry` sends it again, through the running
/// daemon or (`--all`) with the daemon stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_failing_past_the_give_up_time_is_set_aside_and_retry_sends_it() {
    let flags = ["--webhook-give-up-hours", GIVE_UP];
    let mut c = clinic(&flags).await;
    let mut bad = Receiver::start(usize::MAX).await;
    c.set_hook(&bad.url, "k", "s").await;
    let first = c.send(&c.nurse.token, "outbound", "first").await;
    let second = c.send(&c.nurse.token, "outbound", "second").await;
    // first fails until it is older than the give-up time; then second,
    // no longer held back, gets its own attempt (and fails too: by then it
    // is as old).
    let deadline = Instant::now() + 2 * HOOK_TIMEOUT;
    let dead = loop {
        let v = c.dead();
        if v["dead"].as_array().unwrap().len() == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "not both dead: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut tried = Vec::new();
    while let Ok(Some(call)) =
        tokio::time::timeout(Duration::from_millis(100), bad.calls.recv()).await
    {
        tried.push(call.header("x-webhook-id").to_owned());
    }
    let pos = |id: &str| tried.iter().position(|t| t == id).unwrap();
    assert!(pos(&first) < pos(&second), "in order: {tried:?}");
    let list = dead["dead"].as_array().unwrap();
    assert_eq!(list[0]["external_id"], first.as_str());
    assert_eq!(list[1]["external_id"], second.as_str());
    for d in list {
        assert_eq!(d["patient_id"], c.pat.id.as_str());
        assert_eq!(
            (d["tenant"].clone(), d["instance"].clone()),
            (json!(TENANT), json!(INSTANCE))
        );
        assert!(d["failed_attempts"].as_u64().unwrap() >= 1, "{d}");
        assert!(d["last_error"].as_str().unwrap().contains("500"), "{d}");
        assert!(d["dead_ms"].as_u64() >= d["created_ms"].as_u64(), "{d}");
        assert!(
            d.get("message").is_none(),
            "the listing leaves the text out"
        );
    }
    // Set aside: no longer pending, no longer tried, counted.
    assert_eq!(c.pending().await, json!({"pending": [], "more": false}));
    bad.expect_silence(NO_RETRY).await;
    assert_eq!(c.metric("parlor_webhook_dead_deliveries").await, 2);
    let over_http = c
        .srv
        .get_as("/admin/webhooks/pending?dead=true", &c.admin.token)
        .await
        .expect(200);
    assert_eq!(over_http, dead);
    let table = c.cli_ok(&["webhook", "pending", "--dead"]);
    assert!(table.contains(&first) && table.contains(&second), "{table}");
    c.srv
        .get_as("/admin/webhooks/pending?dead=maybe", &c.admin.token)
        .await
        .expect_error(400, "BAD_REQUEST");

    // The receiver is back; setting the webhook does not revive the dead.
    let mut good = Receiver::start(0).await;
    c.set_hook(&good.url, "k2", "s2").await;
    good.expect_silence(Duration::from_millis(1500)).await;
    // Retry refuses what is not dead, and needs exactly one of its flags.
    let err = c.cli_err(&[
        "webhook",
        "retry",
        "--message",
        &format!("IM{:032x}", 1u64 << 60),
    ]);
    assert!(err.contains("no dead delivery"), "{err}");
    assert!(c
        .cli_err(&["webhook", "retry", "--message", "nope"])
        .contains("externalId"));
    c.cli_err(&["webhook", "retry"]);
    c.cli_err(&["webhook", "retry", "--all", "--message", &first]);
    // One, through the running daemon.
    assert_eq!(
        c.cli_ok(&["webhook", "retry", "--message", &first]),
        "1 dead deliveries back in the outbox\n"
    );
    let call = good.next().await;
    assert_eq!(call.header("x-webhook-id"), first);
    assert_eq!(call.json()["message"], "first");
    assert_eq!(call.header("x-webhook-api-key"), "k2");
    good.expect_silence(Duration::from_millis(800)).await;
    assert_eq!(c.metric("parlor_webhook_dead_deliveries").await, 1);
    // The rest with the daemon stopped; sent once it is back.
    c.srv.kill9();
    assert_eq!(
        c.cli_ok(&["webhook", "retry", "--all"]),
        "1 dead deliveries back in the outbox\n"
    );
    assert_eq!(c.dead(), json!({"dead": [], "more": false}));
    let mut args = vec!["--webhook-max-backoff-secs", "1"];
    args.extend_from_slice(&flags);
    c.srv.start_with(&args);
    let call = good.next().await;
    assert_eq!(call.header("x-webhook-id"), second);
    assert_eq!(call.json()["message"], "second");
    good.expect_silence(NO_RETRY).await;
    assert_eq!(c.metric("parlor_webhook_dead_deliveries").await, 0);
    assert_eq!(
        c.cli_ok(&["webhook", "retry", "--all"]),
        "0 dead deliveries back in the outbox\n"
    );
    // Each set-aside and each retry left an audit record (API.md §7).
    let trail: Vec<Value> = c
        .cli_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> { trail.iter().filter(|r| r["kind"] == kind).collect() };
    let (dead, retried) = (of("webhook.dead"), of("webhook.retry"));
    assert!(dead.iter().all(|r| r["actor"] == "daemon"), "{dead:?}");
    assert!(retried.iter().all(|r| r["actor"] == "cli"), "{retried:?}");
    for id in [&first, &second] {
        assert!(
            dead.iter().any(|r| r["detail"]["message"] == **id),
            "{dead:?}"
        );
        assert!(
            retried.iter().any(|r| r["detail"]["message"] == **id),
            "{retried:?}"
        );
    }
}
