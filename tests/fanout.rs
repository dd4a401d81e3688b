//! Live fan-out (issue 14): a hub event is rendered once per dialect, and
//! that one rendering reaches every connection of the dialect.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const T: std::time::Duration = WS_TIMEOUT;

/// A counter of `/metrics` (from loopback).
async fn counter(addr: &str, name: &str) -> u64 {
    let text = get(addr, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// `/ws` (typed), authenticated on upgrade.
async fn typed(addr: &str, token: &str) -> Ws {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (stream, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    Ws { stream }
}

/// `/actions`, after `ready`.
async fn actions(addr: &str, token: &str) -> Ws {
    let url = format!("ws://{addr}/actions");
    let (stream, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    let mut ws = Ws { stream };
    ws.send_json(&json!({"action": "ready", "authToken": token}))
        .await;
    assert_eq!(ws.recv_json(T).await["message"], "Connection ready");
    ws
}

#[tokio::test]
async fn each_event_is_rendered_once_per_dialect_however_many_receive_it() {
    let w = World::new().await;
    let addr = w.addr();
    let room = admin_room(
        &addr,
        &w.admin.token,
        Some("ward"),
        &[&w.alice.id, &w.bob.id, &w.carol.id],
    )
    .await;
    // Seven connections on three dialects: rooms ×4, actions ×2, typed ×1.
    let mut rooms = Vec::new();
    for token in [&w.alice.token, &w.alice.token, &w.bob.token, &w.carol.token] {
        rooms.push(Ws::auth(&addr, token).await);
    }
    let mut acts = vec![
        actions(&addr, &w.bob.token).await,
        actions(&addr, &w.carol.token).await,
    ];
    let mut typ = typed(&addr, &w.bob.token).await;
    let rendered = counter(&addr, "parlor_frames_rendered_total").await;
    let pushed = counter(&addr, "parlor_frames_pushed_total").await;

    rooms[0].send_msg(&room, "one rendering each").await;
    for ws in &mut rooms {
        assert_eq!(ws.recv_message(T).await["message"], "one rendering each");
    }
    for ws in &mut acts {
        let v: Value = ws.recv_json(T).await;
        assert_eq!(v["action"], "receive_message");
        assert_eq!(v["message"], "one rendering each");
    }
    let v = typ.recv_json(T).await;
    assert_eq!(v["type"], "messageCreated");
    assert_eq!(v["data"]["text"], "one rendering each");
    assert_eq!(v["data"]["sender"]["username"], "alice");

    assert_eq!(
        counter(&addr, "parlor_frames_rendered_total").await - rendered,
        3,
        "one rendering per dialect"
    );
    assert_eq!(
        counter(&addr, "parlor_frames_pushed_total").await - pushed,
        7,
        "one push per connection"
    );
}
