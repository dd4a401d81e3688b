//! Operator endpoints (issue 7): `/healthz`, `/readyz`, `/metrics`.

mod common;

use common::*;
use serde_json::json;

async fn metrics(addr: &str, headers: &[(&str, &str)]) -> Resp {
    http(addr, "GET", "/metrics", headers, "").await
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_from_loopback() {
    let w = World::new().await;
    let addr = w.addr();
    assert_eq!(
        get(&addr, "/healthz").await.expect(200),
        json!({"status": "ok"})
    );
    assert_eq!(
        get(&addr, "/readyz").await.expect(200),
        json!({"status": "ready"})
    );

    let room = create_dm(&addr, &w.alice.token, &w.bob.id).await;
    let mut ws = Ws::auth(&addr, &w.alice.token).await;
    ws.send_msg(&room, "counted").await;
    ws.recv_message(WS_TIMEOUT).await;

    let r = metrics(&addr, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for line in [
        "parlor_connections{dialect=\"rooms\"} 1",
        "parlor_messages_committed_total 1",
        "parlor_last_message_id 1",
        "parlor_commit_batch_size_bucket{le=\"+Inf\"}",
        "parlor_commit_sync_seconds_count",
        "parlor_webhook_queue_depth 0",
        "parlor_sends_rate_limited_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    drop(ws);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_relayed_by_a_proxy_need_an_admin_token() {
    let w = World::new().await;
    let addr = w.addr();
    let relayed = ("x-forwarded-for", "203.0.113.9");
    metrics(&addr, &[relayed])
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let alice = format!("Bearer {}", w.alice.token);
    metrics(&addr, &[relayed, ("authorization", &alice)])
        .await
        .expect_error(403, "FORBIDDEN");
    let admin = format!("Bearer {}", w.admin.token);
    let r = metrics(&addr, &[relayed, ("authorization", &admin)]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("parlor_commit_sync_seconds"));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_throttling_is_counted() {
    let w = World::new().await;
    let addr = w.addr();
    for _ in 0..11 {
        post_json(
            &addr,
            "/auth/login",
            None,
            &json!({"username": "bob", "password": "wrong"}),
        )
        .await;
    }
    let text = metrics(&addr, &[]).await.text();
    assert!(
        text.contains("parlor_logins_rate_limited_total 1"),
        "{text}"
    );
}

/// Graceful shutdown (issue 7): SIGTERM while a client sends — every
/// socket is closed with 1001, the daemon exits 0 within 5 s, and every
/// message that was acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_closes_sockets_with_1001_and_keeps_what_was_acknowledged() {
    let mut w = World::new().await;
    let addr = w.addr();
    let room = create_dm(&addr, &w.alice.token, &w.bob.id).await;
    let mut bob = Ws::auth(&addr, &w.bob.token).await;
    let alice = Ws::auth(&addr, &w.alice.token).await;
    let room2 = room.clone();
    let sender = tokio::spawn(async move {
        let mut alice = alice;
        let mut pacer = Pacer::new();
        for i in 0..10_000 {
            pacer.take().await;
            let f = serde_json::json!({"room": room2, "messages": format!("load-{i}")}).to_string();
            let sent = tokio::time::timeout(
                WS_TIMEOUT,
                futures_util::SinkExt::send(
                    &mut alice.stream,
                    tokio_tungstenite::tungstenite::Message::text(f),
                ),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
    });
    // Let some traffic flow, then stop the daemon.
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.push(msg_id(&bob.recv_message(WS_TIMEOUT).await));
    }
    let srv = std::thread::spawn(move || {
        let code = w.srv.terminate(std::time::Duration::from_secs(5));
        (w, code)
    });
    // Bob's socket drains what was delivered, then gets 1001.
    let close = loop {
        match bob.next_frame(WS_TIMEOUT).await {
            Frame::Text(s) => {
                let v: serde_json::Value = serde_json::from_str(&s).unwrap();
                acked.push(msg_id(&v["message"]));
            }
            Frame::Close(code) => break code,
            other => panic!("expected pushes then a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, Some(1001));
    let (mut w, code) = srv.join().unwrap();
    assert_eq!(code, Some(0), "exit status after SIGTERM");
    tokio::time::timeout(WS_TIMEOUT, sender)
        .await
        .unwrap()
        .unwrap();
    w.srv.start();
    let history: Vec<u64> = retrieve(&w.addr(), &w.bob.token, 0, None)
        .await
        .iter()
        .map(msg_id)
        .collect();
    for id in acked {
        assert!(
            history.contains(&id),
            "acknowledged message {id} lost in a graceful shutdown"
        );
    }
}

/// `--trusted-proxies`: `X-Forwarded-For` from a trusted proxy names the
/// client, so a local client behind a local proxy reads metrics and a
/// remote one needs an admin token; a forged left part changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_through_a_trusted_proxy_follow_x_forwarded_for() {
    let w = World::with_flags(&["--trusted-proxies", "127.0.0.1"]).await;
    let addr = w.addr();
    assert_eq!(metrics(&addr, &[]).await.status, 200, "direct, loopback");
    let local_client = ("x-forwarded-for", "::1");
    assert_eq!(metrics(&addr, &[local_client]).await.status, 200);
    for remote in ["203.0.113.9", "127.0.0.1, 203.0.113.9"] {
        metrics(&addr, &[("x-forwarded-for", remote)])
            .await
            .expect_error(401, "UNAUTHENTICATED");
    }
    // Trusted, but a header we do not read: cannot tell, so not local.
    metrics(&addr, &[("x-real-ip", "127.0.0.1")])
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

#[test]
fn a_bad_trusted_proxies_list_refuses_to_start() {
    let srv = Server::new();
    let out = srv.cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--trusted-proxies",
            "10.0.0.0/33",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.0.0.0/33"), "{err}");
}
