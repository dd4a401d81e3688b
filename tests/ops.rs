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
