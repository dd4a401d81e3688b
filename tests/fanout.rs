//! Live fan-out (issue 14): a hub event is rendered once per dialect, and
//! that one rendering reaches every connection of the dialect.

mod common;

use common::*;
use serde_json::Value;

const T: std::time::Duration = WS_TIMEOUT;

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
        Ws::actions_ready(&addr, &w.bob.token).await,
        Ws::actions_ready(&addr, &w.carol.token).await,
    ];
    let mut typ = Ws::typed(&addr, &w.bob.token).await;
    let rendered = metric(&addr, "parlor_frames_rendered_total").await;
    let pushed = metric(&addr, "parlor_frames_pushed_total").await;

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
        metric(&addr, "parlor_frames_rendered_total").await - rendered,
        3,
        "one rendering per dialect"
    );
    assert_eq!(
        metric(&addr, "parlor_frames_pushed_total").await - pushed,
        7,
        "one push per connection"
    );
}
