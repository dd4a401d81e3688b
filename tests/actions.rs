//! The "actions" dialect (seed 000, API.md §3), black-box: every action,
//! every error case, and the same conversation seen through `rooms`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = WS_TIMEOUT;

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["action"], "error", "expected an error frame, got {v}");
    assert_eq!(v["error_code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(
        v.as_object().unwrap().len(),
        3,
        "exactly action, error_code, message: {v}"
    );
}

/// Checks a chat object's shape; returns it.
fn check_chat(c: &Value) -> &Value {
    assert!(c["id"].is_string(), "chat id is a string: {c}");
    for p in c["participants"].as_array().expect("participants") {
        assert!(p["participant_id"].is_string(), "{p}");
        assert!(p["last_seen"].is_u64(), "last_seen is an integer: {p}");
    }
    for m in c["messages"].as_array().expect("messages") {
        assert!(m["owner_id"].is_string(), "{m}");
        assert!(m["message"].is_string(), "{m}");
        assert!(m["sended_time"].is_u64(), "sended_time is an integer: {m}");
    }
    c
}

fn last_seen(chat: &Value, user: &str) -> u64 {
    chat["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == user)
        .unwrap_or_else(|| panic!("{user} not a participant of {chat}"))["last_seen"]
        .as_u64()
        .unwrap()
}

/// alice creates a chat with bob; both sockets see `create_chat`.
async fn chat_of_alice_and_bob(w: &World) -> (Ws, Ws, String) {
    let addr = w.addr();
    let mut a = Ws::actions_ready(&addr, &w.alice.token).await;
    let mut b = Ws::actions_ready(&addr, &w.bob.token).await;
    a.send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
        "message": "first", "recipient_ids": [w.bob.id]}))
        .await;
    let ca = a.recv_json(T).await;
    let cb = b.recv_json(T).await;
    assert_eq!(ca["action"], "create_chat");
    assert_eq!(ca, cb, "every participant gets the same chat");
    let id = check_chat(&ca["chat"])["id"].as_str().unwrap().to_owned();
    (a, b, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_before_ready_or_with_a_bad_token_get_the_error_frame() {
    let w = World::new().await;
    let mut ws = Ws::open_path(&w.addr(), "/actions").await;
    ws.send_json(&json!({"action": "get_messages", "authToken": w.alice.token}))
        .await;
    assert_error(&ws.recv_json(T).await, "UNAUTHENTICATED");
    ws.send_json(&json!({"action": "ready", "authToken": "not-a-token"}))
        .await;
    assert_error(&ws.recv_json(T).await, "UNAUTHENTICATED");
    ws.send_json(&json!({"action": "ready"})).await;
    assert_error(&ws.recv_json(T).await, "UNAUTHENTICATED");
    // The socket stays usable: a good ready now works.
    ws.send_json(&json!({"action": "ready", "authToken": w.alice.token}))
        .await;
    assert_eq!(
        ws.recv_json(T).await,
        json!({"message": "Connection ready"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stage_paths_serve_the_same_dialect() {
    let w = World::new().await;
    for path in ["/dev", "/demo", "/prod"] {
        let mut ws = Ws::open_path(&w.addr(), path).await;
        ws.send_json(&json!({"action": "ready", "authToken": w.bob.token}))
            .await;
        assert_eq!(
            ws.recv_json(T).await,
            json!({"message": "Connection ready"}),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_other_than_readys_changes_nothing() {
    let w = World::new().await;
    let (mut a, mut b, chat) = chat_of_alice_and_bob(&w).await;
    // bob's (valid) token on alice's socket is still not the one given to ready.
    a.send_json(&json!({"action": "send_message", "authToken": w.bob.token,
        "chat_id": chat, "message": "sneaky"}))
        .await;
    assert_error(&a.recv_json(T).await, "UNAUTHENTICATED");
    b.expect_silence(SILENCE).await;
    a.send_json(&json!({"action": "get_messages", "authToken": w.alice.token}))
        .await;
    let v = a.recv_json(T).await;
    let texts: Vec<&str> = v["chats"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn create_chat_reaches_every_participant_with_the_first_message() {
    let w = World::new().await;
    let addr = w.addr();
    let mut a = Ws::actions_ready(&addr, &w.alice.token).await;
    let mut b = Ws::actions_ready(&addr, &w.bob.token).await;
    let mut c = Ws::actions_ready(&addr, &w.carol.token).await;
    // Staff may bring patients together (a patient may not: API.md §8).
    b.send_json(&json!({"action": "create_chat", "authToken": w.bob.token,
        "message": "try to debug", "recipient_ids": [w.alice.id, w.carol.id]}))
        .await;
    for ws in [&mut a, &mut b, &mut c] {
        let v = ws.recv_json(T).await;
        assert_eq!(v["action"], "create_chat");
        let chat = check_chat(&v["chat"]);
        let mut ids: Vec<&str> = chat["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["participant_id"].as_str().unwrap())
            .collect();
        ids.sort();
        let mut want = [w.alice.id.as_str(), w.bob.id.as_str(), w.carol.id.as_str()];
        want.sort();
        assert_eq!(ids, want);
        let msgs = chat["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["owner_id"], w.bob.id);
        assert_eq!(msgs[0]["message"], "try to debug");
        // The creator posted, so was seen; the others never were.
        assert!(last_seen(chat, &w.bob.id) > 1_600_000_000_000, "ms, not s");
        assert_eq!(last_seen(chat, &w.alice.id), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_chat_with_a_bad_recipient_names_it_and_creates_nothing() {
    let w = World::new().await;
    let mut a = Ws::actions_ready(&w.addr(), &w.alice.token).await;
    for (bad, code) in [("999999", "NOT_FOUND"), (w.eve.id.as_str(), "NOT_FOUND")] {
        a.send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
            "message": "hi", "recipient_ids": [w.bob.id, bad]}))
            .await;
        let v = a.recv_json(T).await;
        assert_error(&v, code);
        assert!(
            v["message"].as_str().unwrap().contains(bad),
            "names {bad}: {v}"
        );
    }
    for bad in [json!([]), json!("7"), json!([7])] {
        a.send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
            "message": "hi", "recipient_ids": bad}))
            .await;
        assert_error(&a.recv_json(T).await, "BAD_REQUEST");
    }
    a.send_json(&json!({"action": "get_messages", "authToken": w.alice.token}))
        .await;
    assert_eq!(
        a.recv_json(T).await,
        json!({"action": "get_message", "chats": []})
    );
}

/// API.md §8: a patient reaches only their care team. Naming another
/// patient is answered exactly as naming an id nobody has (but for the id
/// the message names), and nothing is created for anyone.
#[tokio::test(flavor = "multi_thread")]
async fn create_chat_by_a_patient_with_another_patient_is_the_error_of_a_missing_id() {
    let w = World::new().await;
    let mut a = Ws::actions_ready(&w.addr(), &w.alice.token).await;
    let mut c = Ws::actions_ready(&w.addr(), &w.carol.token).await;
    let mut refused = Vec::new();
    for bad in ["999999", w.carol.id.as_str()] {
        for recipients in [json!([bad]), json!([w.bob.id, bad])] {
            a.send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
                "message": "hi", "recipient_ids": recipients}))
                .await;
            let v = a.recv_json(T).await;
            assert_error(&v, "NOT_FOUND");
            let m = v["message"].as_str().unwrap();
            assert!(m.contains(bad), "names {bad}: {v}");
            refused.push(json!({"action": v["action"], "error_code": v["error_code"],
                "message": m.replace(bad, "<id>")}));
        }
    }
    assert_eq!(refused[..2], refused[2..], "a patient looks like no one");
    c.expect_silence(Duration::from_millis(300)).await;
    for (ws, token) in [(&mut a, &w.alice.token), (&mut c, &w.carol.token)] {
        ws.send_json(&json!({"action": "get_messages", "authToken": token}))
            .await;
        assert_eq!(
            ws.recv_json(T).await,
            json!({"action": "get_message", "chats": []})
        );
    }
    // Their care team is reachable both ways.
    a.send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
        "message": "to the nurse", "recipient_ids": [w.bob.id, w.admin.id]}))
        .await;
    assert_eq!(a.recv_json(T).await["action"], "create_chat");
    let mut b = Ws::actions_ready(&w.addr(), &w.bob.token).await;
    b.send_json(&json!({"action": "create_chat", "authToken": w.bob.token,
        "message": "to the patient", "recipient_ids": [w.carol.id]}))
        .await;
    assert_eq!(b.recv_json(T).await["action"], "create_chat");
    assert_eq!(c.recv_json(T).await["action"], "create_chat");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_users_see_each_others_messages_live() {
    let w = World::new().await;
    let (mut a, mut b, chat) = chat_of_alice_and_bob(&w).await;
    a.send_json(
        &json!({"action": "send_message", "authToken": w.alice.token,
        "chat_id": chat, "message": "hello bob"}),
    )
    .await;
    for ws in [&mut a, &mut b] {
        let v = ws.recv_json(T).await;
        assert_eq!(v["action"], "receive_message");
        assert_eq!(v["chat_id"], chat.as_str());
        assert_eq!(v["message"], "hello bob");
        assert_eq!(v["owner_id"], w.alice.id);
        assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(v.as_object().unwrap().len(), 5, "{v}");
    }
    b.send_json(&json!({"action": "send_message", "authToken": w.bob.token,
        "chat_id": chat, "message": "hi alice"}))
        .await;
    for ws in [&mut a, &mut b] {
        let v = ws.recv_json(T).await;
        assert_eq!(
            (v["message"].as_str(), v["owner_id"].as_str()),
            (Some("hi alice"), Some(w.bob.id.as_str()))
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_messages_lists_every_chat_oldest_message_first() {
    let w = World::new().await;
    let (mut a, mut b, chat) = chat_of_alice_and_bob(&w).await;
    for text in ["two", "three"] {
        a.send_json(
            &json!({"action": "send_message", "authToken": w.alice.token,
            "chat_id": chat, "message": text}),
        )
        .await;
        a.recv_json(T).await;
        b.recv_json(T).await;
    }
    // A DM made through the rooms dialect is a chat here too.
    create_dm(&w.addr(), &w.bob.token, &w.carol.id).await;
    b.send_json(&json!({"action": "get_messages", "authToken": w.bob.token}))
        .await;
    let v = b.recv_json(T).await;
    assert_eq!(v["action"], "get_message");
    let chats = v["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2);
    let ours = chats
        .iter()
        .find(|c| c["id"] == chat.as_str())
        .expect("our chat");
    let texts: Vec<&str> = check_chat(ours)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_messages_is_bounded_to_the_newest_per_chat() {
    let mut srv = Server::new();
    let _ = srv.user_add("ann", "staff", "pw-ann");
    let bob = srv.user_add("bob", "staff", "pw-bob");
    srv.start_with(&["--chat-history", "3"]);
    let addr = srv.addr();
    let (tok, _) = login(&addr, "ann", "pw-ann").await;
    let mut a = Ws::actions_ready(&addr, &tok).await;
    a.send_json(&json!({"action": "create_chat", "authToken": tok,
        "message": "m0", "recipient_ids": [bob]}))
        .await;
    let chat = a.recv_json(T).await["chat"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..5 {
        a.send_json(&json!({"action": "send_message", "authToken": tok,
            "chat_id": chat, "message": format!("m{i}")}))
            .await;
        a.recv_json(T).await;
    }
    a.send_json(&json!({"action": "get_messages", "authToken": tok}))
        .await;
    let v = a.recv_json(T).await;
    let texts: Vec<&str> = v["chats"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_message_moves_last_seen_and_tells_every_participant() {
    let w = World::new().await;
    let (mut a, mut b, chat) = chat_of_alice_and_bob(&w).await;
    b.send_json(&json!({"action": "read_message", "authToken": w.bob.token, "chat_id": chat}))
        .await;
    for ws in [&mut a, &mut b] {
        let v = ws.recv_json(T).await;
        assert_eq!(v["action"], "read_message");
        let c = check_chat(&v["chat"]);
        assert_eq!(c["id"], chat.as_str());
        assert!(last_seen(c, &w.bob.id) > 1_600_000_000_000);
        assert_eq!(c["messages"].as_array().unwrap().len(), 1);
    }
    // The marker is the core's: get_messages shows it afterwards too.
    a.send_json(&json!({"action": "get_messages", "authToken": w.alice.token}))
        .await;
    let v = a.recv_json(T).await;
    assert!(last_seen(&v["chats"][0], &w.bob.id) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_error_frame_and_the_socket_stays_open() {
    let w = World::new().await;
    let (mut a, mut b, chat) = chat_of_alice_and_bob(&w).await;
    let tok = w.alice.token.as_str();
    let cases: Vec<(Value, &str)> = vec![
        (json!("not an object"), "BAD_REQUEST"),
        (json!({"authToken": tok}), "BAD_REQUEST"),
        (json!({"action": 5, "authToken": tok}), "BAD_REQUEST"),
        (json!({"action": "dance", "authToken": tok}), "BAD_REQUEST"),
        (
            json!({"action": "send_message", "authToken": tok, "chat_id": chat}),
            "BAD_REQUEST",
        ),
        (
            json!({"action": "send_message", "authToken": tok, "chat_id": 7, "message": "x"}),
            "BAD_REQUEST",
        ),
        (
            json!({"action": "send_message", "authToken": tok, "chat_id": chat, "message": ""}),
            "BAD_REQUEST",
        ),
        (
            json!({"action": "send_message", "authToken": tok, "chat_id": chat,
            "message": "x".repeat(16_385)}),
            "TOO_LARGE",
        ),
        (
            json!({"action": "send_message", "authToken": tok, "chat_id": "999999", "message": "x"}),
            "NOT_FOUND",
        ),
        (
            json!({"action": "read_message", "authToken": tok, "chat_id": "abc"}),
            "NOT_FOUND",
        ),
    ];
    for (frame, code) in cases {
        a.send_json(&frame).await;
        let v = a.recv_json(T).await;
        assert_error(&v, code);
    }
    a.send_text("{not json").await;
    assert_error(&a.recv_json(T).await, "BAD_REQUEST");
    a.send_binary(b"{}".to_vec()).await;
    assert_error(&a.recv_json(T).await, "BAD_REQUEST");
    // A chat the user is not in looks like one that does not exist.
    let carols = create_dm(&w.addr(), &w.carol.token, &w.bob.id).await;
    a.send_json(
        &json!({"action": "send_message", "authToken": tok, "chat_id": carols, "message": "x"}),
    )
    .await;
    assert_error(&a.recv_json(T).await, "NOT_FOUND");
    b.expect_silence(SILENCE).await;
    // Still open and working.
    a.send_json(
        &json!({"action": "send_message", "authToken": tok, "chat_id": chat,
        "message": "x".repeat(16_384)}),
    )
    .await;
    assert_eq!(a.recv_json(T).await["action"], "receive_message");
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_the_socket_opened_with_that_token() {
    let w = World::new().await;
    let (tok, _) = login(&w.addr(), &w.alice.name, &w.alice.password).await;
    let mut a = Ws::actions_ready(&w.addr(), &tok).await;
    let r = post_json(&w.addr(), "/auth/logout", Some(&tok), &json!({})).await;
    assert_eq!(r.status, 204);
    assert_eq!(a.expect_closed(T).await, Some(1008));
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_and_rooms_share_one_conversation() {
    let w = World::new().await;
    let addr = w.addr();
    let (mut a, _b, chat) = chat_of_alice_and_bob(&w).await;
    let mut rooms_bob = Ws::auth(&addr, &w.bob.token).await;
    // actions → rooms (live and history)
    a.send_json(
        &json!({"action": "send_message", "authToken": w.alice.token,
        "chat_id": chat, "message": "from actions"}),
    )
    .await;
    a.recv_json(T).await;
    let m = rooms_bob.recv_message(T).await;
    assert_eq!(
        (msg_text(&m), m["room"].as_str()),
        ("from actions", Some(chat.as_str()))
    );
    let history = retrieve(&addr, &w.bob.token, 0, None).await;
    let texts: Vec<&str> = history.iter().map(msg_text).collect();
    assert_eq!(texts, ["first", "from actions"]);
    // rooms → actions
    rooms_bob.send_msg(&chat, "from rooms").await;
    let v = a.recv_json(T).await;
    assert_eq!(v["action"], "receive_message");
    assert_eq!(
        (v["message"].as_str(), v["owner_id"].as_str()),
        (Some("from rooms"), Some(w.bob.id.as_str()))
    );
}
