//! Black-box tests of the "rooms" dialect (API.md §2, seed
//! 001_7c52f722c16a6d04.txt): `/chat/connect`, create_dm, room_info,
//! retrieve.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Asserts a close with code 1008 follows (after an optional error frame
/// already consumed by the caller).
async fn expect_policy_close(ws: &mut Ws) {
    let code = ws.expect_closed(WS_TIMEOUT).await;
    assert_eq!(code, Some(1008), "expected a close frame with code 1008");
}

async fn expect_auth_rejected(ws: &mut Ws) {
    let v = ws.recv_json(WS_TIMEOUT).await;
    assert_error_body(&v, "UNAUTHENTICATED");
    expect_policy_close(ws).await;
}

// ---------------------------------------------------------------------------
// /chat/connect authentication
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn connect_with_valid_token_gets_connected() {
    let w = World::new().await;
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"auth_token": w.alice.token})).await;
    assert_eq!(
        ws.recv_json(WS_TIMEOUT).await,
        json!({"status": "CONNECTED"})
    );
    ws.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_with_bad_token_gets_unauthenticated_then_close_1008() {
    let w = World::new().await;
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"auth_token": "definitely-not-a-token"}))
        .await;
    expect_auth_rejected(&mut ws).await;

    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"auth_token": ""})).await;
    expect_auth_rejected(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_with_invalid_first_frame_gets_unauthenticated_then_close_1008() {
    let w = World::new().await;
    // Not JSON.
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_text("hello there").await;
    expect_auth_rejected(&mut ws).await;
    // JSON without auth_token.
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"token": w.alice.token})).await;
    expect_auth_rejected(&mut ws).await;
    // auth_token of the wrong type.
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"auth_token": 12345})).await;
    expect_auth_rejected(&mut ws).await;
    // A message send before authenticating.
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"room": "1", "messages": "hi"})).await;
    expect_auth_rejected(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_with_revoked_token_is_unauthenticated() {
    let w = World::new().await;
    let (tok, _) = w.srv.login("alice", &w.alice.password).await;
    let r = w
        .srv
        .post_json("/auth/logout", Some(&tok), &json!({}))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.text());
    let mut ws = Ws::open(&w.addr()).await;
    ws.send_json(&json!({"auth_token": tok})).await;
    expect_auth_rejected(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_without_auth_frame_is_closed_after_about_10_s() {
    let w = World::new().await;
    let mut ws = Ws::open(&w.addr()).await;
    // The server may send an error frame first; then it must close.
    for _ in 0..3 {
        match ws.next_frame(Duration::from_secs(25)).await {
            Frame::Text(s) => {
                let v: Value =
                    serde_json::from_str(&s).unwrap_or_else(|_| panic!("non-JSON frame {s:?}"));
                assert!(
                    v.get("error_code").is_some(),
                    "unexpected frame before auth: {v}"
                );
            }
            Frame::Close(_) | Frame::Ended => return,
            Frame::Binary(b) => panic!("unexpected binary frame {b:?}"),
        }
    }
    panic!("unauthenticated socket was not closed");
}

// ---------------------------------------------------------------------------
// create_dm / room_info
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn create_dm_is_idempotent_in_both_directions() {
    let w = World::new().await;
    let a = w.addr();
    let r1 = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let r2 = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let r3 = create_dm(&a, &w.bob.token, &w.alice.id).await;
    assert_eq!(r1, r2, "same pair, same room");
    assert_eq!(r1, r3, "same pair in the other direction, same room");
    let other = create_dm(&a, &w.alice.token, &w.admin.id).await;
    assert_ne!(r1, other, "a different pair gets a different room");
}

/// API.md §8: a patient reaches only their care team. Another patient of
/// the workspace is answered byte for byte like an id nobody has, so the
/// answer does not tell who else is a patient; staff and admins are
/// reachable both ways.
#[tokio::test(flavor = "multi_thread")]
async fn create_dm_from_a_patient_to_another_patient_looks_like_a_missing_user() {
    let w = World::new().await;
    let a = w.addr();
    let dm = |token: &str, other: &str| {
        let (a, token, other) = (a.clone(), token.to_owned(), other.to_owned());
        async move {
            post_json(
                &a,
                "/chat/create_dm",
                Some(&token),
                &json!({"other": other}),
            )
            .await
        }
    };
    let missing = dm(&w.alice.token, "987654321").await;
    let patient = dm(&w.alice.token, &w.carol.id).await;
    missing.expect_error(404, "NOT_FOUND");
    assert_eq!(
        (patient.status, patient.body.clone()),
        (missing.status, missing.body.clone())
    );
    assert_eq!(
        patient.header("content-type"),
        missing.header("content-type")
    );
    assert_eq!(dm(&w.carol.token, &w.alice.id).await.body, missing.body);
    // Nothing was made for either of them.
    assert!(retrieve(&a, &w.carol.token, 0, None).await.is_empty());

    // The care team: staff and the admin, from the patient and back.
    let to_bob = create_dm(&a, &w.alice.token, &w.bob.id).await;
    assert_eq!(create_dm(&a, &w.bob.token, &w.alice.id).await, to_bob);
    create_dm(&a, &w.alice.token, &w.admin.id).await;
    create_dm(&a, &w.bob.token, &w.carol.id).await;
    // A patient's DM with themself tells nothing about anyone.
    create_dm(&a, &w.alice.token, &w.alice.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_dm_with_unknown_or_other_workspace_user_is_not_found() {
    let w = World::new().await;
    let a = w.addr();
    post_json(
        &a,
        "/chat/create_dm",
        Some(&w.alice.token),
        &json!({"other": "987654321"}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    post_json(
        &a,
        "/chat/create_dm",
        Some(&w.alice.token),
        &json!({"other": w.eve.id}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    post_json(
        &a,
        "/chat/create_dm",
        Some(&w.eve.token),
        &json!({"other": w.alice.id}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    // Nothing was created for either side.
    assert!(retrieve(&a, &w.alice.token, 0, None).await.is_empty());
    assert!(retrieve(&a, &w.eve.token, 0, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn room_info_of_dm_has_null_name_and_both_occupants() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    for u in [&w.alice, &w.bob] {
        let v = room_info(&a, &u.token, &room).await;
        assert!(
            v.get("room_name").is_some_and(Value::is_null),
            "DM room_name must be null: {v}"
        );
        assert_eq!(occupants(&v), sorted(&[&w.alice.id, &w.bob.id]), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn room_info_of_admin_group_room_has_its_name() {
    let w = World::new().await;
    let a = w.addr();
    let room = admin_room(
        &a,
        &w.admin.token,
        Some("Cardiology team"),
        &[&w.alice.id, &w.bob.id, &w.carol.id],
    )
    .await;
    let v = room_info(&a, &w.carol.token, &room).await;
    assert_eq!(v["room_name"], json!("Cardiology team"), "{v}");
    assert_eq!(
        occupants(&v),
        sorted(&[&w.alice.id, &w.bob.id, &w.carol.id]),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn room_info_not_occupant_is_not_found_like_nonexistent() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let ward = admin_room(&a, &w.admin.token, Some("Ward"), &[&w.alice.id, &w.bob.id]).await;
    for r in [&room, &ward] {
        for u in [&w.carol, &w.eve, &w.admin] {
            post_json(
                &a,
                "/chat/room_info",
                Some(&u.token),
                &json!({"room_id": r}),
            )
            .await
            .expect_error(404, "NOT_FOUND");
        }
    }
    post_json(
        &a,
        "/chat/room_info",
        Some(&w.alice.token),
        &json!({"room_id": "987654321"}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

// ---------------------------------------------------------------------------
// Live push and sends
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn push_reaches_every_connection_of_every_occupant_including_sender() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut alice1 = Ws::auth(&a, &w.alice.token).await;
    let mut alice2 = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;
    let mut carol = Ws::auth(&a, &w.carol.token).await;
    let mut admin = Ws::auth(&a, &w.admin.token).await;

    let before = now_unix();
    alice1.send_msg(&room, "hello bob ✓").await;
    let m = alice1.recv_message(WS_TIMEOUT).await;
    let after = now_unix();
    assert!(m["id"].is_u64(), "id is a JSON number: {m}");
    assert_eq!(m["message"], json!("hello bob ✓"));
    assert_eq!(m["poster"], json!(w.alice.id));
    assert_eq!(m["room"], json!(room));
    let ts = m["timestamp"].as_u64().unwrap();
    assert!(
        ts + 120 >= before && ts <= after + 120,
        "timestamp {ts} is not unix seconds of now"
    );
    assert_eq!(
        alice2.recv_message(WS_TIMEOUT).await,
        m,
        "sender's other connection"
    );
    assert_eq!(bob.recv_message(WS_TIMEOUT).await, m, "other occupant");

    // And the other way round.
    bob.send_msg(&room, "hi alice").await;
    let m2 = bob.recv_message(WS_TIMEOUT).await;
    assert_eq!(m2["poster"], json!(w.bob.id));
    assert!(msg_id(&m2) > msg_id(&m), "ids grow");
    assert_eq!(alice1.recv_message(WS_TIMEOUT).await, m2);
    assert_eq!(alice2.recv_message(WS_TIMEOUT).await, m2);

    // Non-occupants see nothing (the admin included).
    carol.expect_silence(SILENCE).await;
    admin.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn push_in_group_room_reaches_all_members() {
    let w = World::new().await;
    let a = w.addr();
    let room = admin_room(
        &a,
        &w.admin.token,
        Some("Ward"),
        &[&w.alice.id, &w.bob.id, &w.carol.id],
    )
    .await;
    let mut socks = [
        Ws::auth(&a, &w.alice.token).await,
        Ws::auth(&a, &w.bob.token).await,
        Ws::auth(&a, &w.carol.token).await,
    ];
    socks[2].send_msg(&room, "rounds at 9").await;
    let m = socks[2].recv_message(WS_TIMEOUT).await;
    assert_eq!(m["room"], json!(room));
    assert_eq!(m["poster"], json!(w.carol.id));
    for s in socks.iter_mut().take(2) {
        assert_eq!(s.recv_message(WS_TIMEOUT).await, m);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_connections_of_one_user_all_receive_pushes() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut socks = Vec::new();
    for _ in 0..10 {
        socks.push(Ws::auth(&a, &w.alice.token).await);
    }
    let mut bob = Ws::auth(&a, &w.bob.token).await;
    bob.send_msg(&room, "to all of alice's devices").await;
    let m = bob.recv_message(WS_TIMEOUT).await;
    for (i, s) in socks.iter_mut().enumerate() {
        assert_eq!(s.recv_message(WS_TIMEOUT).await, m, "connection #{i}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_to_room_not_in_is_ignored_and_socket_stays_usable() {
    let w = World::new().await;
    let a = w.addr();
    let ab = create_dm(&a, &w.alice.token, &w.bob.id).await;
    // Two patients share a room only if an admin makes one (API.md §8).
    let ca = admin_room(&a, &w.admin.token, None, &[&w.carol.id, &w.alice.id]).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;
    let mut carol = Ws::auth(&a, &w.carol.token).await;
    let mut eve = Ws::auth(&a, &w.eve.token).await;

    carol.send_msg(&ab, "intrusion").await; // a room carol is not in
    carol.send_msg("987654321", "nowhere").await; // no such room
    eve.send_msg(&ab, "cross-workspace").await; // another workspace
    carol.send_msg(&ca, "legit").await;

    let m = carol.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        m["message"],
        json!("legit"),
        "the ignored sends must produce nothing"
    );
    assert_eq!(alice.recv_message(WS_TIMEOUT).await, m);
    bob.expect_silence(SILENCE).await;
    eve.expect_silence(SILENCE).await;
    let hist: Vec<String> = retrieve(&a, &w.alice.token, 0, None)
        .await
        .iter()
        .map(|m| msg_text(m).to_string())
        .collect();
    assert_eq!(hist, vec!["legit".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_non_text_frames_are_ignored_without_reply() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;

    alice.send_text("this is not json").await;
    alice.send_text("{\"room\":").await;
    alice
        .send_binary(b"{\"room\":\"1\",\"messages\":\"binary\"}".to_vec())
        .await;
    alice.send_binary(vec![0, 159, 146, 150]).await;
    alice.send_json(&json!({"messages": "no room"})).await;
    alice.send_json(&json!({"room": room})).await;
    alice
        .send_json(&json!({"room": room, "messages": 42}))
        .await;
    alice.send_json(&json!({"auth_token": w.alice.token})).await;
    alice
        .send_json(&json!({"room": room, "messages": "after the junk"}))
        .await;

    let m = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        m["message"],
        json!("after the junk"),
        "junk frames must get no reply"
    );
    assert_eq!(bob.recv_message(WS_TIMEOUT).await, m);
    alice.expect_silence(SILENCE).await;
    let hist = retrieve(&a, &w.bob.token, 0, None).await;
    assert_eq!(hist, vec![m]);
}

/// A JSON array is not a send frame, even if its elements line up with
/// `{"room","messages"}` (serde's derive accepts structs as sequences).
#[tokio::test(flavor = "multi_thread")]
async fn array_frame_is_not_a_send() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    alice.send_json(&json!([room, "array"])).await;
    alice
        .send_json(&json!({"room": room, "messages": "object"}))
        .await;
    let m = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        m["message"],
        json!("object"),
        "an array frame must not be stored or pushed: {m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn send_accepts_message_field_alias() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;
    alice
        .send_json(&json!({"room": room, "message": "via alias"}))
        .await;
    let m = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(m["message"], json!("via alias"));
    assert_eq!(bob.recv_message(WS_TIMEOUT).await, m);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_length_limits_over_websocket() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;

    let max_ascii = "x".repeat(16_384);
    let max_multi = "é".repeat(8_192); // 16,384 bytes, 8,192 characters
    let over_ascii = "y".repeat(16_385);
    let over_multi = format!("{}a", "é".repeat(8_192)); // 16,385 bytes
    assert_eq!(max_multi.len(), 16_384);
    assert_eq!(over_multi.len(), 16_385);

    alice.send_msg(&room, &over_ascii).await;
    alice.send_msg(&room, "").await;
    alice.send_msg(&room, &over_multi).await;
    alice.send_msg(&room, &max_ascii).await;
    let m1 = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        msg_text(&m1).len(),
        16_384,
        "the next push must be the 16,384-byte message"
    );
    assert_eq!(msg_text(&m1), max_ascii);
    assert_eq!(bob.recv_message(WS_TIMEOUT).await, m1);

    alice.send_msg(&room, &max_multi).await;
    let m2 = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        msg_text(&m2),
        max_multi,
        "16,384 bytes of 2-byte characters is within the limit"
    );
    assert_eq!(bob.recv_message(WS_TIMEOUT).await, m2);

    // Not trimmed.
    alice.send_msg(&room, "  padded \n").await;
    let m3 = alice.recv_message(WS_TIMEOUT).await;
    assert_eq!(
        m3["message"],
        json!("  padded \n"),
        "text must not be trimmed"
    );

    let hist = retrieve(&a, &w.alice.token, 0, None).await;
    assert_eq!(hist, vec![m1, m2, m3], "rejected texts must not be stored");
}

// ---------------------------------------------------------------------------
// retrieve
// ---------------------------------------------------------------------------

/// Three rooms (DMs alice–bob and bob–carol; alice and carol, patients
/// both, in a room an admin made), messages interleaved.
/// Returns (world, all pushes in send order, room ids).
async fn retrieve_fixture() -> (World, Vec<Value>, [String; 3]) {
    let w = World::new().await;
    let a = w.addr();
    let ab = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let ac = admin_room(&a, &w.admin.token, None, &[&w.alice.id, &w.carol.id]).await;
    let bc = create_dm(&a, &w.bob.token, &w.carol.id).await;
    let mut alice = Ws::auth(&a, &w.alice.token).await;
    let mut bob = Ws::auth(&a, &w.bob.token).await;
    let mut carol = Ws::auth(&a, &w.carol.token).await;
    let mut all = Vec::new();
    for i in 0..4 {
        alice.send_msg(&ab, &format!("ab-{i}")).await;
        all.push(alice.recv_message(WS_TIMEOUT).await);
        bob.recv_message(WS_TIMEOUT).await;
        carol.send_msg(&ac, &format!("ac-{i}")).await;
        all.push(carol.recv_message(WS_TIMEOUT).await);
        alice.recv_message(WS_TIMEOUT).await;
        bob.send_msg(&bc, &format!("bc-{i}")).await;
        all.push(bob.recv_message(WS_TIMEOUT).await);
        carol.recv_message(WS_TIMEOUT).await;
    }
    assert_ascending(&all);
    (w, all, [ab, ac, bc])
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_after_zero_returns_all_ascending_only_own_rooms() {
    let (w, all, [ab, ac, _bc]) = retrieve_fixture().await;
    let a = w.addr();
    let got = retrieve(&a, &w.alice.token, 0, None).await;
    let want: Vec<Value> = all
        .iter()
        .filter(|m| m["room"] == json!(ab) || m["room"] == json!(ac))
        .cloned()
        .collect();
    assert_eq!(want.len(), 8);
    assert_eq!(
        got, want,
        "alice's history: exactly her rooms' messages, ascending, same objects as pushed"
    );

    // Users in none of these rooms see nothing; the admin does not read
    // conversations it is not a member of.
    assert!(retrieve(&a, &w.eve.token, 0, None).await.is_empty());
    assert!(retrieve(&a, &w.admin.token, 0, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_after_cursor_excludes_cursor() {
    let (w, all, _) = retrieve_fixture().await;
    let a = w.addr();
    let mine: Vec<Value> = retrieve(&a, &w.bob.token, 0, None).await;
    assert_eq!(mine.len(), 8);
    for k in 0..mine.len() {
        let cursor = msg_id(&mine[k]);
        let got = retrieve(&a, &w.bob.token, cursor, None).await;
        assert_eq!(got, mine[k + 1..].to_vec(), "after={cursor}");
    }
    // A cursor between ids (a message bob cannot see) also works.
    let carol_only = all.iter().find(|m| m["message"] == json!("ac-1")).unwrap();
    let c = msg_id(carol_only);
    let got = retrieve(&a, &w.bob.token, c, None).await;
    let want: Vec<Value> = mine.iter().filter(|m| msg_id(m) > c).cloned().collect();
    assert_eq!(got, want);
    // Beyond the newest: empty.
    let last = msg_id(all.last().unwrap());
    assert!(retrieve(&a, &w.bob.token, last, None).await.is_empty());
    assert!(retrieve(&a, &w.bob.token, u64::MAX / 2, None)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_limit_keeps_oldest_after_cursor() {
    let (w, _all, _) = retrieve_fixture().await;
    let a = w.addr();
    let mine = retrieve(&a, &w.carol.token, 0, None).await;
    assert_eq!(mine.len(), 8);
    for limit in [1u64, 3, 8, 50] {
        let got = retrieve(&a, &w.carol.token, 0, Some(limit)).await;
        let n = (limit as usize).min(mine.len());
        assert_eq!(got, mine[..n].to_vec(), "after=0 limit={limit}");
    }
    let cursor = msg_id(&mine[2]);
    let got = retrieve(&a, &w.carol.token, cursor, Some(2)).await;
    assert_eq!(got, mine[3..5].to_vec(), "after=<3rd> limit=2");
    // Paging with limit walks the whole history without skipping.
    let mut paged = Vec::new();
    let mut cur = 0;
    for _ in 0..20 {
        let page = retrieve(&a, &w.carol.token, cur, Some(3)).await;
        if page.is_empty() {
            break;
        }
        cur = msg_id(page.last().unwrap());
        paged.extend(page);
    }
    assert_eq!(paged, mine);
}

#[tokio::test(flavor = "multi_thread")]
async fn retrieve_with_bad_json_is_bad_request() {
    let w = World::new().await;
    let a = w.addr();
    post_raw(&a, "/chat/retrieve", Some(&w.alice.token), "{\"after\": ")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&a, "/chat/retrieve", Some(&w.alice.token), "after=0")
        .await
        .expect_error(400, "BAD_REQUEST");
}

// ---------------------------------------------------------------------------
// logout closes sockets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_that_tokens_socket_only() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let (tok, _) = w.srv.login("alice", &w.alice.password).await;
    let mut doomed = Ws::auth(&a, &tok).await;
    let mut kept = Ws::auth(&a, &w.alice.token).await;

    let r = w
        .srv
        .post_json("/auth/logout", Some(&tok), &json!({}))
        .await;
    assert_eq!(r.status, 204, "{:?}", r.text());
    doomed.expect_closed(WS_TIMEOUT).await;

    // Alice's other token and its socket are unaffected.
    kept.send_msg(&room, "still here").await;
    assert_eq!(
        kept.recv_message(WS_TIMEOUT).await["message"],
        json!("still here")
    );
}

// ---------------------------------------------------------------------------
// Concurrency: ordering and the `after` cursor
// ---------------------------------------------------------------------------

const SENDERS: usize = 6;
const PER_SENDER: usize = 200;

/// 6 users send 200 messages each, concurrently, into 3 rooms; a reader in
/// all 3 rooms polls retrieve with an advancing cursor and must see every
/// message exactly once, ids strictly increasing, with no gap relative to
/// the final history. Its live socket must get the same sequence.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_senders_cursor_reader_sees_every_message_once_in_order() {
    let mut srv = Server::new();
    srv.user_add("admin", "admin", "admin-pw");
    srv.user_add("reader", "staff", "reader-pw");
    for i in 0..SENDERS {
        srv.user_add(&format!("u{i}"), "patient", &format!("pw{i}"));
    }
    srv.start();
    let a = srv.addr();
    let (admin_tok, _) = login(&a, "admin", "admin-pw").await;
    let (reader_tok, reader_id) = login(&a, "reader", "reader-pw").await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(login(&a, &format!("u{i}"), &format!("pw{i}")).await);
    }
    let mut rooms = Vec::new();
    for k in 0..SENDERS / 2 {
        let members = [
            reader_id.as_str(),
            senders[2 * k].1.as_str(),
            senders[2 * k + 1].1.as_str(),
        ];
        rooms.push(admin_room(&a, &admin_tok, Some(&format!("room{k}")), &members).await);
    }

    // The reader's live socket.
    let mut reader_ws = Ws::auth(&a, &reader_tok).await;
    let total = SENDERS * PER_SENDER;
    // Collects pushes until all arrived; a close ends it early and is
    // reported (with what came before it) at the end of the test.
    let live = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut got: Vec<Value> = Vec::new();
        while got.len() < total {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match reader_ws.next_frame(left).await {
                Frame::Text(s) => {
                    let v: Value =
                        serde_json::from_str(&s).unwrap_or_else(|_| panic!("non-JSON push {s:?}"));
                    let m = v["message"].clone();
                    check_message(&m);
                    got.push(m);
                }
                other => return (got, Some(format!("{other:?}"))),
            }
        }
        (got, None)
    });

    // Senders.
    let mut handles = Vec::new();
    for (i, (tok, id)) in senders.iter().cloned().enumerate() {
        let a = a.clone();
        let room = rooms[i / 2].clone();
        handles.push(tokio::spawn(async move {
            let mut ws = Ws::auth(&a, &tok).await;
            let texts: Vec<String> = (0..PER_SENDER).map(|n| format!("u{i}-{n}")).collect();
            let mut pacer = Pacer::new();
            let pushes = send_until_echoed(
                &mut ws,
                &id,
                &room,
                &texts,
                &mut pacer,
                Duration::from_secs(90),
            )
            .await;
            (id, pushes)
        }));
    }

    // Cursor reader.
    let expected: HashSet<String> = (0..SENDERS)
        .flat_map(|i| (0..PER_SENDER).map(move |n| format!("u{i}-{n}")))
        .collect();
    let mut seen: Vec<Value> = Vec::new();
    let mut seen_texts: HashSet<String> = HashSet::new();
    let mut cursor = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut polls = 0u32;
    while seen.len() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader saw only {} of {total} in time",
            seen.len()
        );
        assert!(polls < 100_000, "too many polls");
        polls += 1;
        let limit = if polls % 2 == 0 { Some(137) } else { None };
        let batch = retrieve(&a, &reader_tok, cursor, limit).await;
        if let Some(l) = limit {
            assert!(
                batch.len() <= l as usize,
                "limit {l} exceeded: {}",
                batch.len()
            );
        }
        for m in &batch {
            let id = msg_id(m);
            assert!(
                id > cursor,
                "id {id} not above the cursor {cursor} (or not ascending): {m}"
            );
            cursor = id;
            let t = msg_text(m).to_string();
            assert!(expected.contains(&t), "unexpected message {m}");
            assert!(
                seen_texts.insert(t),
                "message seen twice by the cursor reader: {m}"
            );
            seen.push(m.clone());
        }
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Every sender got all its own messages echoed; per connection, pushes
    // arrive in id order.
    let mut by_text: HashMap<String, Value> = HashMap::new();
    for m in &seen {
        by_text.insert(msg_text(m).to_string(), m.clone());
    }
    for h in handles {
        let (id, pushes) = tokio::time::timeout(Duration::from_secs(90), h)
            .await
            .expect("sender task timed out")
            .expect("sender task panicked");
        assert_ascending(&pushes);
        // (A sender stops reading once its own messages are echoed, so it
        // may not have seen all of its room partner's.)
        assert!(pushes.len() >= PER_SENDER, "sender {id}: too few pushes");
        for p in &pushes {
            assert_eq!(
                by_text.get(msg_text(p)),
                Some(p),
                "push differs from history"
            );
        }
    }

    // No gaps: the final full history is exactly what the cursor reader saw.
    let full = retrieve(&a, &reader_tok, 0, None).await;
    assert_eq!(full.len(), total);
    assert_eq!(
        full, seen,
        "cursor reader's sequence differs from the final history"
    );

    // The reader's live socket got the same sequence.
    let (live, closed) = tokio::time::timeout(Duration::from_secs(90), live)
        .await
        .expect("live reader timed out")
        .expect("live reader panicked");
    assert_eq!(
        live[..],
        full[..live.len()],
        "live push order differs from history order"
    );
    assert!(
        closed.is_none(),
        "the reader's socket (reading continuously) was closed with {} after {} of {total} \
         pushes (last pushed id {:?})",
        closed.unwrap_or_default(),
        live.len(),
        live.last().map(msg_id),
    );
}
