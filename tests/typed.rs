//! Black-box tests of the "typed" dialect (API.md §4, seed
//! 002_c85dcde09b712ec8.txt): the `{"type","data"}` WebSocket at `/ws`,
//! authenticated on upgrade; every request type, every error, the date
//! filters, open/closed joins, read flags, and messages crossing to and
//! from the rooms dialect.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

// ---------------------------------------------------------------------------
// A client for /ws
// ---------------------------------------------------------------------------

/// A `/ws` connection (reusing the harness's `Ws` for frame handling).
struct Typed {
    ws: Ws,
}

impl Typed {
    /// Connects with `Authorization: Bearer <token>`.
    async fn open(addr: &str, token: &str) -> Typed {
        Typed {
            ws: Ws::typed(addr, token).await,
        }
    }

    /// Connects with `?token=<token>` (the browser form).
    async fn open_query(addr: &str, token: &str) -> Typed {
        let req = format!("ws://{addr}/ws?token={token}")
            .into_client_request()
            .unwrap();
        Typed::connect(req).await
    }

    async fn connect(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> Typed {
        let (stream, resp) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .expect("WebSocket handshake to /ws timed out")
            .expect("WebSocket handshake to /ws failed");
        assert_eq!(resp.status(), 101);
        Typed { ws: Ws { stream } }
    }

    async fn send(&mut self, kind: &str, data: Value) {
        self.ws
            .send_json(&json!({"type": kind, "data": data}))
            .await;
    }

    /// The next frame, which must be `{"type": kind, "data": …}`; returns
    /// `data`.
    async fn expect(&mut self, kind: &str) -> Value {
        let v = self.ws.recv_json(WS_TIMEOUT).await;
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("frame is not an object: {v}"));
        assert_eq!(obj.len(), 2, "a frame is exactly {{type, data}}: {v}");
        assert_eq!(v["type"], json!(kind), "expected a {kind} frame, got {v}");
        v["data"].clone()
    }

    /// Sends a request and returns the data of its `reply` frame.
    async fn ask(&mut self, kind: &str, data: Value, reply: &str) -> Value {
        self.send(kind, data).await;
        self.expect(reply).await
    }

    /// The next frame must be an error for `request_type` with `code`;
    /// returns its message.
    async fn expect_error(&mut self, request_type: Option<&str>, code: &str) -> String {
        let d = self.expect("error").await;
        let obj = d
            .as_object()
            .unwrap_or_else(|| panic!("error data is not an object: {d}"));
        assert_eq!(
            obj.len(),
            3,
            "error data is code, message, request_type: {d}"
        );
        assert_eq!(d["code"], json!(code), "{d}");
        assert_eq!(d["request_type"], json!(request_type), "{d}");
        let m = d["message"]
            .as_str()
            .unwrap_or_else(|| panic!("message must be a string: {d}"));
        assert!(!m.is_empty(), "empty error message: {d}");
        m.to_string()
    }

    async fn silence(&mut self) {
        self.ws.expect_silence(SILENCE).await;
    }

    // -- request shorthands --------------------------------------------------

    async fn create(&mut self) -> u64 {
        let d = self
            .ask("createEmptyChat", json!({}), "emptyChatCreated")
            .await;
        check_chat(&d);
        d["id"].as_u64().unwrap()
    }

    async fn join(&mut self, chat: u64) -> Value {
        self.ask("joinChat", json!({"chat": chat}), "chatJoined")
            .await
    }

    /// Sends and waits for this connection's own `messageCreated`.
    async fn post(&mut self, chat: u64, text: &str) -> Value {
        self.send("newMessage", json!({"chat": chat, "text": text}))
            .await;
        let m = self.expect("messageCreated").await;
        check_message(&m);
        assert_eq!(m["text"], json!(text));
        m
    }

    async fn history(&mut self, data: Value) -> Vec<Value> {
        let d = self.ask("getChatMessages", data, "chatMessages").await;
        let list = d
            .as_array()
            .unwrap_or_else(|| panic!("chatMessages data must be an array: {d}"))
            .clone();
        list.iter().for_each(check_message);
        list
    }

    async fn chats(&mut self) -> Vec<Value> {
        let d = self.ask("getChats", json!({}), "chatsList").await;
        let list = d
            .as_array()
            .unwrap_or_else(|| panic!("chatsList data must be an array: {d}"))
            .clone();
        list.iter().for_each(check_chat);
        list
    }
}

fn is_rfc3339_ms_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn check_person(p: &Value) {
    assert!(p["id"].is_u64(), "person id must be a number: {p}");
    assert!(
        p["username"].as_str().is_some_and(|u| !u.is_empty()),
        "person needs a username: {p}"
    );
}

fn check_chat(c: &Value) {
    assert!(c["id"].is_u64(), "chat id must be a number: {c}");
    for k in ["created_at", "updated_at"] {
        assert!(
            c[k].as_str().is_some_and(is_rfc3339_ms_utc),
            "{k} must be RFC 3339 UTC with ms: {c}"
        );
    }
    c["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("participants must be an array: {c}"))
        .iter()
        .for_each(check_person);
}

fn check_message(m: &Value) {
    for k in ["id", "chat"] {
        assert!(m[k].is_u64(), "{k} must be a number: {m}");
    }
    check_person(&m["sender"]);
    assert!(m["text"].is_string(), "{m}");
    assert!(m["is_read"].is_boolean(), "{m}");
    assert!(
        m["timestamp"].as_str().is_some_and(is_rfc3339_ms_utc),
        "timestamp must be RFC 3339 UTC with ms: {m}"
    );
}

fn person(u: &User) -> Value {
    json!({"id": u.id.parse::<u64>().unwrap(), "username": u.name})
}

fn uid(u: &User) -> u64 {
    u.id.parse().unwrap()
}

fn texts(msgs: &[Value]) -> Vec<&str> {
    msgs.iter().map(|m| m["text"].as_str().unwrap()).collect()
}

fn participant_ids(chat: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = chat["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

/// A GET /ws with a valid handshake and the given extra headers.
async fn raw_upgrade(addr: &str, path: &str, extra: &[(&str, &str)]) -> Resp {
    let mut h = vec![
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    h.extend_from_slice(extra);
    http(addr, "GET", path, &h, bytes::Bytes::new()).await
}

// ---------------------------------------------------------------------------
// Authentication on upgrade
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_without_or_with_bad_token_is_401_before_upgrade() {
    let w = World::new().await;
    let a = w.addr();
    let (revoked, _) = w.srv.login("alice", &w.alice.password).await;
    let r = post_json(&a, "/auth/logout", Some(&revoked), &json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let bad_header = "Bearer not-a-token".to_string();
    let revoked_header = format!("Bearer {revoked}");
    let revoked_query = format!("/ws?token={revoked}");
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/ws".into(), vec![]),
        ("/ws".into(), vec![("authorization", bad_header.as_str())]),
        (
            "/ws".into(),
            vec![("authorization", revoked_header.as_str())],
        ),
        ("/ws".into(), vec![("authorization", "Basic YWxpY2U6cHc=")]),
        ("/ws?token=not-a-token".into(), vec![]),
        ("/ws?token=".into(), vec![]),
        (revoked_query, vec![]),
    ];
    for (path, headers) in cases {
        let r = raw_upgrade(&a, &path, &headers).await;
        assert!(
            r.header("sec-websocket-accept").is_none(),
            "{path} {headers:?} must not upgrade"
        );
        r.expect_error(401, "UNAUTHENTICATED");
    }
    // A real client sees the handshake refused with 401.
    let mut req = format!("ws://{a}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    match timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401)
        }
        other => panic!("expected an HTTP 401 refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_with_header_or_query_token_connects() {
    let w = World::new().await;
    let a = w.addr();
    let mut by_header = Typed::open(&a, &w.admin.token).await;
    let mut by_query = Typed::open_query(&a, &w.bob.token).await;
    // Nothing is sent unasked.
    by_header.silence().await;
    assert!(by_header.chats().await.is_empty());
    assert!(by_query.chats().await.is_empty());
    // Both see the same chat once both joined it.
    let chat = by_header.create().await;
    by_header.join(chat).await;
    by_query.join(chat).await;
    let d = by_query
        .ask("getChatDetails", json!({"chatId": chat}), "chatDetails")
        .await;
    assert_eq!(participant_ids(&d), {
        let mut v = vec![uid(&w.admin), uid(&w.bob)];
        v.sort();
        v
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_the_socket_opened_with_that_token() {
    let w = World::new().await;
    let a = w.addr();
    let (tok, _) = w.srv.login("alice", &w.alice.password).await;
    let mut doomed = Typed::open(&a, &tok).await;
    let mut kept = Typed::open(&a, &w.alice.token).await;
    let r = post_json(&a, "/auth/logout", Some(&tok), &json!({})).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(doomed.ws.expect_closed(WS_TIMEOUT).await, Some(1008));
    assert!(kept.chats().await.is_empty());
}

// ---------------------------------------------------------------------------
// createEmptyChat, joinChat, getChatDetails, getChats
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn create_empty_chat_has_no_participants_and_rfc3339_times() {
    let w = World::new().await;
    let mut admin = Typed::open(&w.addr(), &w.admin.token).await;
    let d = admin
        .ask("createEmptyChat", json!({}), "emptyChatCreated")
        .await;
    check_chat(&d);
    assert_eq!(d["participants"], json!([]), "{d}");
    assert_eq!(d["created_at"], d["updated_at"], "{d}");
    let second = admin.create().await;
    assert!(second > d["id"].as_u64().unwrap(), "ids grow");
    // `data` may be left out of a request that needs nothing.
    admin
        .ws
        .send_json(&json!({"type": "createEmptyChat"}))
        .await;
    check_chat(&admin.expect("emptyChatCreated").await);
    // The creator is not a participant until they join.
    assert!(admin.chats().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn join_replies_to_the_joiner_and_notifies_the_others_once() {
    let w = World::new().await;
    let a = w.addr();
    let mut admin = Typed::open(&a, &w.admin.token).await;
    let mut bob = Typed::open(&a, &w.bob.token).await;
    let mut bob2 = Typed::open(&a, &w.bob.token).await;
    let mut carol = Typed::open(&a, &w.carol.token).await;
    let chat = admin.create().await;

    let d = admin.join(chat).await;
    assert_eq!(d, json!({"chat": chat, "user": person(&w.admin)}));
    admin.silence().await; // not also as a notification

    let d = bob.join(chat).await;
    assert_eq!(d, json!({"chat": chat, "user": person(&w.bob)}));
    let note = json!({"chat": chat, "user": person(&w.bob)});
    assert_eq!(admin.expect("chatJoined").await, note, "other participant");
    assert_eq!(
        bob2.expect("chatJoined").await,
        note,
        "joiner's other socket"
    );
    bob.silence().await; // the joiner got the reply, not a second copy
    carol.silence().await; // not a participant
    admin.silence().await;

    let chats = admin.chats().await;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["id"], json!(chat));
    let mut ps = chats[0]["participants"].as_array().unwrap().clone();
    ps.sort_by_key(|p| p["id"].as_u64());
    assert_eq!(ps, vec![person(&w.admin), person(&w.bob)]);
    assert!(carol.chats().await.is_empty());

    // Joining again is harmless: still two participants.
    bob.join(chat).await;
    assert_eq!(admin.expect("chatJoined").await, note);
    let d = bob
        .ask("getChatDetails", json!({"chatId": chat}), "chatDetails")
        .await;
    check_chat(&d);
    assert_eq!(participant_ids(&d).len(), 2, "{d}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_details_and_chats_list_show_updated_at_of_the_last_message() {
    let w = World::new().await;
    let a = w.addr();
    let mut admin = Typed::open(&a, &w.admin.token).await;
    let quiet = admin.create().await;
    admin.join(quiet).await;
    let busy = admin.create().await;
    admin.join(busy).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let m = admin.post(busy, "news").await;

    let d = admin
        .ask("getChatDetails", json!({"chatId": busy}), "chatDetails")
        .await;
    assert_eq!(d["id"], json!(busy));
    assert_eq!(d["participants"], json!([person(&w.admin)]));
    assert_eq!(d["updated_at"], m["timestamp"], "{d}");
    assert!(d["created_at"].as_str() < d["updated_at"].as_str(), "{d}");

    let chats = admin.chats().await;
    let ids: Vec<u64> = chats.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![quiet, busy], "getChats lists chats by id");
    assert_eq!(chats[0]["created_at"], chats[0]["updated_at"]);
    assert_eq!(chats[1], d, "getChats and getChatDetails agree");
}

/// API.md §8: open chats are the staff's; a patient reaches only their
/// care team, so creating, joining or looking into one is FORBIDDEN — in
/// this dialect's error shape, the socket staying open.
#[tokio::test(flavor = "multi_thread")]
async fn a_patient_may_not_create_join_or_look_into_open_chats() {
    let w = World::new().await;
    let (dm, mut alice, mut bob) = alice_and_bob_in_a_dm(&w).await;
    alice.send("createEmptyChat", json!({})).await;
    let m = alice
        .expect_error(Some("createEmptyChat"), "FORBIDDEN")
        .await;
    assert!(m.contains("care team"), "{m}");
    let open = bob.create().await;
    bob.join(open).await;
    alice.send("joinChat", json!({"chat": open})).await;
    alice.expect_error(Some("joinChat"), "FORBIDDEN").await;
    alice.send("getChatDetails", json!({"chatId": open})).await;
    alice
        .expect_error(Some("getChatDetails"), "FORBIDDEN")
        .await;
    // Nothing was made or joined; bob heard nothing.
    bob.silence().await;
    let d = bob
        .ask("getChatDetails", json!({"chatId": open}), "chatDetails")
        .await;
    assert_eq!(d["participants"], json!([person(&w.bob)]));
    // The patient's own chats work as before: "joining" the DM with the
    // care team moves the marker.
    let chats = alice.chats().await;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["id"], json!(dm));
    alice.join(dm).await;
    assert_eq!(
        bob.expect("chatJoined").await,
        json!({"chat": dm, "user": person(&w.alice)})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_chats_cannot_be_joined_and_look_like_missing_ones() {
    let w = World::new().await;
    let a = w.addr();
    let dm: u64 = create_dm(&a, &w.alice.token, &w.bob.id)
        .await
        .parse()
        .unwrap();
    let ward: u64 = admin_room(&a, &w.admin.token, Some("Ward"), &[&w.alice.id, &w.bob.id])
        .await
        .parse()
        .unwrap();
    let mut alice = Typed::open(&a, &w.alice.token).await;
    let mut bob = Typed::open(&a, &w.bob.token).await;
    let mut carol = Typed::open(&a, &w.carol.token).await;
    let mut eve = Typed::open(&a, &w.eve.token).await;
    let open = bob.create().await;
    bob.join(open).await;

    // What "does not exist" looks like.
    let missing_join = json!({"chat": 987_654_321u64});
    carol.send("joinChat", missing_join).await;
    let nf_join = carol.expect_error(Some("joinChat"), "NOT_FOUND").await;
    carol
        .send("getChatDetails", json!({"chatId": 987_654_321u64}))
        .await;
    let nf_details = carol
        .expect_error(Some("getChatDetails"), "NOT_FOUND")
        .await;

    // A DM and an admin's group room are closed to others of the workspace.
    for closed in [dm, ward] {
        carol.send("joinChat", json!({"chat": closed})).await;
        assert_eq!(
            carol.expect_error(Some("joinChat"), "NOT_FOUND").await,
            nf_join
        );
        carol
            .send("getChatDetails", json!({"chatId": closed}))
            .await;
        assert_eq!(
            carol
                .expect_error(Some("getChatDetails"), "NOT_FOUND")
                .await,
            nf_details
        );
        // A member sees it (and "joining" it only moves the marker).
        let d = alice
            .ask("getChatDetails", json!({"chatId": closed}), "chatDetails")
            .await;
        assert_eq!(participant_ids(&d), {
            let mut v = vec![uid(&w.alice), uid(&w.bob)];
            v.sort();
            v
        });
        alice.join(closed).await;
        bob.expect("chatJoined").await;
    }

    // An open chat of another workspace: exactly like a missing one.
    eve.send("joinChat", json!({"chat": open})).await;
    assert_eq!(
        eve.expect_error(Some("joinChat"), "NOT_FOUND").await,
        nf_join
    );
    eve.send("getChatDetails", json!({"chatId": open})).await;
    assert_eq!(
        eve.expect_error(Some("getChatDetails"), "NOT_FOUND").await,
        nf_details
    );
    eve.send("getChatMessages", json!({"chatId": open})).await;
    eve.expect_error(Some("getChatMessages"), "NOT_FOUND").await;
    eve.send("newMessage", json!({"chat": open, "text": "hi"}))
        .await;
    eve.expect_error(Some("newMessage"), "NOT_FOUND").await;
    // An open chat of eve's workspace is invisible to bob in turn.
    w.srv
        .user_add_in("doc@acme", "staff", "pw-doc@acme", "acme", "north");
    let (doc_token, _) = w.srv.login("doc@acme", "pw-doc@acme").await;
    let evechat = Typed::open(&a, &doc_token).await.create().await;
    bob.send("joinChat", json!({"chat": evechat})).await;
    assert_eq!(
        bob.expect_error(Some("joinChat"), "NOT_FOUND").await,
        nf_join
    );

    // Nobody was added anywhere, and nothing was posted.
    let d = bob
        .ask("getChatDetails", json!({"chatId": open}), "chatDetails")
        .await;
    assert_eq!(d["participants"], json!([person(&w.bob)]));
    assert!(bob.history(json!({"chatId": open})).await.is_empty());
    assert!(carol.chats().await.is_empty());
}

// ---------------------------------------------------------------------------
// newMessage, is_read
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn new_message_reaches_every_participant_connection_once_sender_included() {
    let w = World::new().await;
    let a = w.addr();
    let mut admin = Typed::open(&a, &w.admin.token).await;
    let mut admin2 = Typed::open(&a, &w.admin.token).await;
    let mut bob = Typed::open(&a, &w.bob.token).await;
    let mut carol = Typed::open(&a, &w.carol.token).await;
    let chat = admin.create().await;
    admin.join(chat).await;
    bob.join(chat).await;
    admin.expect("chatJoined").await;
    admin2.expect("chatJoined").await;
    admin2.expect("chatJoined").await;

    let m = admin.post(chat, "hello ✓").await;
    assert_eq!(m["chat"], json!(chat));
    assert_eq!(m["sender"], person(&w.admin));
    assert_eq!(m["is_read"], json!(false), "is_read defaults to false");
    assert_eq!(admin2.expect("messageCreated").await, m);
    assert_eq!(bob.expect("messageCreated").await, m);
    admin.silence().await; // exactly one copy for the sender
    bob.silence().await;
    carol.silence().await;

    bob.send(
        "newMessage",
        json!({"chat": chat, "text": "read already", "is_read": true}),
    )
    .await;
    let m2 = bob.expect("messageCreated").await;
    assert_eq!(m2["is_read"], json!(true), "is_read is stored as sent");
    assert_eq!(m2["sender"], person(&w.bob));
    assert!(m2["id"].as_u64() > m["id"].as_u64());
    assert_eq!(admin.expect("messageCreated").await, m2);
    assert_eq!(admin2.expect("messageCreated").await, m2);

    // Not a participant: not readable.
    carol.send("getChatMessages", json!({"chatId": chat})).await;
    carol
        .expect_error(Some("getChatMessages"), "NOT_FOUND")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn is_read_becomes_true_once_another_participants_marker_reaches_it() {
    let w = World::new().await;
    let a = w.addr();
    let (dm, mut alice, mut bob) = alice_and_bob_in_a_dm(&w).await;
    let m1 = alice.post(dm, "one").await;
    bob.expect("messageCreated").await;
    alice
        .send(
            "newMessage",
            json!({"chat": dm, "text": "two", "is_read": true}),
        )
        .await;
    let m2 = alice.expect("messageCreated").await;
    bob.expect("messageCreated").await;
    let m3 = alice.post(dm, "three").await;
    bob.expect("messageCreated").await;
    let read =
        |h: &[Value]| -> Vec<bool> { h.iter().map(|m| m["is_read"] == json!(true)).collect() };
    assert_eq!(
        read(&alice.history(json!({"chatId": dm})).await),
        [false, true, false]
    );

    // The sender's own marker does not make their messages read.
    let d = alice
        .ask(
            "joinChat",
            json!({"chat": dm, "last_read_message": m3["id"]}),
            "chatJoined",
        )
        .await;
    assert_eq!(d["last_read_message"], m3["id"], "echoed when given: {d}");
    assert_eq!(
        bob.expect("chatJoined").await,
        json!({"chat": dm, "user": person(&w.alice), "last_read_message": m3["id"]})
    );
    assert_eq!(
        read(&bob.history(json!({"chatId": dm})).await),
        [false, true, false]
    );

    // Bob's marker at m1: m1 is read, m3 is not yet.
    bob.send(
        "joinChat",
        json!({"chat": dm, "last_read_message": m1["id"]}),
    )
    .await;
    bob.expect("chatJoined").await;
    alice.expect("chatJoined").await;
    assert_eq!(
        read(&alice.history(json!({"chatId": dm})).await),
        [true, true, false]
    );
    // …and at m3 everything is.
    bob.send(
        "joinChat",
        json!({"chat": dm, "last_read_message": m3["id"]}),
    )
    .await;
    bob.expect("chatJoined").await;
    alice.expect("chatJoined").await;
    assert_eq!(
        read(&bob.history(json!({"chatId": dm})).await),
        [true, true, true]
    );
    let _ = m2;

    // A marker naming a message of another chat is refused.
    let other: u64 = create_dm(&a, &w.alice.token, &w.admin.id)
        .await
        .parse()
        .unwrap();
    let elsewhere = alice.post(other, "elsewhere").await;
    bob.send(
        "joinChat",
        json!({"chat": dm, "last_read_message": elsewhere["id"]}),
    )
    .await;
    bob.expect_error(Some("joinChat"), "BAD_REQUEST").await;
}

// ---------------------------------------------------------------------------
// getChatMessages: order, last, date filters
// ---------------------------------------------------------------------------

/// alice and bob's DM, and a typed socket of each.
async fn alice_and_bob_in_a_dm(w: &World) -> (u64, Typed, Typed) {
    let a = w.addr();
    let dm = create_dm(&a, &w.alice.token, &w.bob.id)
        .await
        .parse()
        .unwrap();
    let alice = Typed::open(&a, &w.alice.token).await;
    let bob = Typed::open(&a, &w.bob.token).await;
    (dm, alice, bob)
}

/// alice and bob in their DM with five messages `m0`…`m4` sent today.
async fn history_fixture() -> (World, Typed, u64, Vec<Value>) {
    let w = World::new().await;
    let (chat, mut alice, mut bob) = alice_and_bob_in_a_dm(&w).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let (who, other) = if i % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let m = who.post(chat, &format!("m{i}")).await;
        assert_eq!(other.expect("messageCreated").await, m);
        sent.push(m);
    }
    (w, alice, chat, sent)
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_messages_are_oldest_first_and_last_keeps_the_newest() {
    let (_w, mut alice, chat, sent) = history_fixture().await;
    // The history holds what was pushed (the push is read by alice, who
    // sent or received each one).
    let all = alice.history(json!({"chatId": chat})).await;
    assert_eq!(texts(&all), ["m0", "m1", "m2", "m3", "m4"]);
    for (h, s) in all.iter().zip(&sent) {
        assert_eq!(h["id"], s["id"]);
        assert_eq!(h["sender"], s["sender"]);
        assert_eq!(h["timestamp"], s["timestamp"]);
    }
    let got = alice.history(json!({"chatId": chat, "last": 2})).await;
    assert_eq!(texts(&got), ["m3", "m4"]);
    let got = alice.history(json!({"chatId": chat, "last": 99})).await;
    assert_eq!(texts(&got).len(), 5);
    assert!(alice
        .history(json!({"chatId": chat, "last": 0}))
        .await
        .is_empty());
    // `chat` is taken for `chatId` too (the seed spells it both ways).
    let got = alice.history(json!({"chat": chat, "last": 1})).await;
    assert_eq!(texts(&got), ["m4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn date_filters_are_utc_days_and_date_to_is_inclusive() {
    let (_w, mut alice, chat, sent) = history_fixture().await;
    let today = sent[0]["timestamp"].as_str().unwrap()[..10].to_string();
    let all = ["m0", "m1", "m2", "m3", "m4"];
    let q = |from: Option<&str>, to: Option<&str>, last: Option<u64>| {
        let mut d = json!({"chatId": chat});
        if let Some(f) = from {
            d["date_from"] = json!(f);
        }
        if let Some(t) = to {
            d["date_to"] = json!(t);
        }
        if let Some(l) = last {
            d["last"] = json!(l);
        }
        d
    };
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (q(Some("last_7_days"), None, None), all.to_vec()),
        (q(Some("yesterday"), None, None), vec![]),
        (q(Some("day_before_yesterday"), None, None), vec![]),
        (q(Some(&today), None, None), all.to_vec()),
        (q(Some(&today), Some(&today), None), all.to_vec()),
        (q(None, Some(&today), None), all.to_vec()),
        (q(Some("2000-01-01"), None, None), all.to_vec()),
        (q(Some("2000-01-01"), Some("2000-12-31"), None), vec![]),
        (q(None, Some("2000-12-31"), None), vec![]),
        (q(Some("2999-01-01"), None, None), vec![]),
        (q(Some("last_7_days"), Some("2000-01-01"), None), vec![]),
        // date_to before date_from: an empty list, not an error.
        (q(Some("2999-01-01"), Some("2000-01-01"), None), vec![]),
        (q(Some(&today), Some("2000-01-01"), None), vec![]),
        // `last` applies after the date filter.
        (q(Some("last_7_days"), None, Some(2)), vec!["m3", "m4"]),
        (q(Some(&today), Some(&today), Some(1)), vec!["m4"]),
        (q(Some("yesterday"), None, Some(3)), vec![]),
    ];
    for (data, want) in cases {
        let got = alice.history(data.clone()).await;
        assert_eq!(texts(&got), want, "{data}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_dates_are_errors_naming_the_field() {
    let (_w, mut alice, chat, _) = history_fixture().await;
    for bad in [
        "2024-02-30",
        "2024-13-01",
        "24-01-01",
        "tomorrow",
        "",
        "2024-01-01T00:00:00Z",
    ] {
        alice
            .send("getChatMessages", json!({"chatId": chat, "date_from": bad}))
            .await;
        let m = alice
            .expect_error(Some("getChatMessages"), "BAD_REQUEST")
            .await;
        assert!(m.contains("date_from"), "{bad}: {m}");
    }
    for bad in [json!("yesterday"), json!("2023-02-29"), json!(20240101)] {
        alice
            .send("getChatMessages", json!({"chatId": chat, "date_to": bad}))
            .await;
        let m = alice
            .expect_error(Some("getChatMessages"), "BAD_REQUEST")
            .await;
        assert!(m.contains("date_to"), "{bad}: {m}");
    }
    alice
        .send("getChatMessages", json!({"chatId": chat, "date_from": 7}))
        .await;
    let m = alice
        .expect_error(Some("getChatMessages"), "BAD_REQUEST")
        .await;
    assert!(m.contains("date_from"), "{m}");
    for bad in [json!(-1), json!(1.5), json!("3")] {
        alice
            .send("getChatMessages", json!({"chatId": chat, "last": bad}))
            .await;
        let m = alice
            .expect_error(Some("getChatMessages"), "BAD_REQUEST")
            .await;
        assert!(m.contains("last"), "{bad}: {m}");
    }
    // A leap day is a real date.
    assert_eq!(
        alice
            .history(json!({"chatId": chat, "date_from": "2024-02-29"}))
            .await
            .len(),
        5
    );
}

// ---------------------------------------------------------------------------
// Errors: shape, and the socket stays open
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_gets_an_error_frame_and_the_socket_stays_open() {
    let w = World::new().await;
    let a = w.addr();
    let mut admin = Typed::open(&a, &w.admin.token).await;
    let chat = admin.create().await;
    admin.join(chat).await;
    let closed: u64 = create_dm(&a, &w.bob.token, &w.carol.id)
        .await
        .parse()
        .unwrap();

    // Frames that name no type.
    admin.ws.send_text("this is not json").await;
    admin.expect_error(None, "BAD_REQUEST").await;
    admin.ws.send_text("{\"type\":").await;
    admin.expect_error(None, "BAD_REQUEST").await;
    admin.ws.send_json(&json!(["getChats", {}])).await;
    admin.expect_error(None, "BAD_REQUEST").await;
    admin.ws.send_json(&json!({"data": {}})).await;
    admin.expect_error(None, "BAD_REQUEST").await;
    admin.ws.send_json(&json!({"type": 7, "data": {}})).await;
    admin.expect_error(None, "BAD_REQUEST").await;
    admin
        .ws
        .send_binary(b"{\"type\":\"getChats\"}".to_vec())
        .await;
    admin.expect_error(None, "BAD_REQUEST").await;

    // Unknown type, bad data.
    admin.send("deleteEverything", json!({})).await;
    let m = admin
        .expect_error(Some("deleteEverything"), "BAD_REQUEST")
        .await;
    assert!(m.contains("deleteEverything"), "{m}");
    admin
        .ws
        .send_json(&json!({"type": "getChats", "data": "please"}))
        .await;
    admin.expect_error(Some("getChats"), "BAD_REQUEST").await;

    // Missing and mistyped fields name the field.
    let cases = [
        ("joinChat", json!({}), "chat"),
        ("joinChat", json!({"chat": "1"}), "chat"),
        (
            "joinChat",
            json!({"chat": chat, "last_read_message": "x"}),
            "last_read_message",
        ),
        ("getChatDetails", json!({}), "chatId"),
        ("getChatDetails", json!({"chatId": -3}), "chatId"),
        ("newMessage", json!({"text": "hi"}), "chat"),
        ("newMessage", json!({"chat": chat}), "text"),
        ("newMessage", json!({"chat": chat, "text": 5}), "text"),
        (
            "newMessage",
            json!({"chat": chat, "text": "x", "is_read": "yes"}),
            "is_read",
        ),
        ("getChatMessages", json!({}), "chatId"),
        ("getChatMessages", json!({"chatId": 1.5}), "chatId"),
    ];
    for (kind, data, field) in cases {
        admin.send(kind, data.clone()).await;
        let m = admin.expect_error(Some(kind), "BAD_REQUEST").await;
        assert!(m.contains(field), "{kind} {data}: {m}");
    }

    // Text limits (API.md §0): empty is BAD_REQUEST, over 16 KiB TOO_LARGE.
    admin
        .send("newMessage", json!({"chat": chat, "text": ""}))
        .await;
    admin.expect_error(Some("newMessage"), "BAD_REQUEST").await;
    admin
        .send(
            "newMessage",
            json!({"chat": chat, "text": "y".repeat(16_385)}),
        )
        .await;
    admin.expect_error(Some("newMessage"), "TOO_LARGE").await;
    let max = "x".repeat(16_384);
    assert_eq!(admin.post(chat, &max).await["text"], json!(max));

    // Chats the user may not see or write to.
    admin
        .send("newMessage", json!({"chat": closed, "text": "intrusion"}))
        .await;
    admin.expect_error(Some("newMessage"), "NOT_FOUND").await;
    admin
        .send(
            "newMessage",
            json!({"chat": 987_654_321u64, "text": "nowhere"}),
        )
        .await;
    admin.expect_error(Some("newMessage"), "NOT_FOUND").await;
    admin
        .send("getChatMessages", json!({"chatId": closed}))
        .await;
    admin
        .expect_error(Some("getChatMessages"), "NOT_FOUND")
        .await;
    // An open chat one has not joined: visible, but not writable or
    // readable until joined.
    let mut bob = Typed::open(&a, &w.bob.token).await;
    bob.send("newMessage", json!({"chat": chat, "text": "not yet"}))
        .await;
    bob.expect_error(Some("newMessage"), "NOT_FOUND").await;
    bob.send("getChatMessages", json!({"chatId": chat})).await;
    bob.expect_error(Some("getChatMessages"), "NOT_FOUND").await;

    // Still open and working, and nothing refused was stored.
    let hist = admin.history(json!({"chatId": chat})).await;
    assert_eq!(texts(&hist), [max.as_str()]);
    assert_eq!(admin.chats().await.len(), 1);
    bob.silence().await;
}

// ---------------------------------------------------------------------------
// Across dialects
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn messages_cross_between_ws_and_the_rooms_dialect() {
    let w = World::new().await;
    let a = w.addr();
    let room = create_dm(&a, &w.alice.token, &w.bob.id).await;
    let chat: u64 = room.parse().unwrap();
    let mut alice = Typed::open(&a, &w.alice.token).await;
    let mut bob_rooms = Ws::auth(&a, &w.bob.token).await;

    // typed → rooms (live and in retrieve).
    let m = alice.post(chat, "from /ws").await;
    let pushed = bob_rooms.recv_message(WS_TIMEOUT).await;
    assert_eq!(pushed["id"], m["id"]);
    assert_eq!(pushed["message"], json!("from /ws"));
    assert_eq!(pushed["poster"], json!(w.alice.id));
    assert_eq!(pushed["room"], json!(room));
    let hist = retrieve(&a, &w.bob.token, 0, None).await;
    assert_eq!(hist, vec![pushed.clone()]);

    // rooms → typed (live and in history).
    bob_rooms.send_msg(&room, "from /chat/connect").await;
    let echo = bob_rooms.recv_message(WS_TIMEOUT).await;
    let got = alice.expect("messageCreated").await;
    check_message(&got);
    assert_eq!(got["id"], echo["id"]);
    assert_eq!(got["chat"], json!(chat));
    assert_eq!(got["sender"], person(&w.bob));
    assert_eq!(got["text"], json!("from /chat/connect"));
    assert_eq!(got["is_read"], json!(false));
    let hist = alice.history(json!({"chatId": chat})).await;
    assert_eq!(texts(&hist), ["from /ws", "from /chat/connect"]);
    // Both dialects show the same second.
    let secs = |ts: &str| ts[17..19].to_string();
    assert_eq!(
        secs(got["timestamp"].as_str().unwrap()),
        format!("{:02}", echo["timestamp"].as_u64().unwrap() % 60)
    );

    // A marker set on /ws (joinChat) is the one the core keeps: bob's
    // marker at alice's message makes it read for her.
    let mut bob = Typed::open(&a, &w.bob.token).await;
    bob.send(
        "joinChat",
        json!({"chat": chat, "last_read_message": m["id"]}),
    )
    .await;
    bob.expect("chatJoined").await;
    assert_eq!(
        alice.expect("chatJoined").await,
        json!({"chat": chat, "user": person(&w.bob), "last_read_message": m["id"]})
    );
    let hist = alice.history(json!({"chatId": chat})).await;
    assert_eq!(hist[0]["is_read"], json!(true));
    assert_eq!(hist[1]["is_read"], json!(false));
    // The rooms dialect shows no join notices.
    bob_rooms.expect_silence(SILENCE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_and_read_markers_cross_between_ws_and_the_actions_dialect() {
    let w = World::new().await;
    let a = w.addr();
    let url = format!("ws://{a}/actions");
    let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("handshake to /actions timed out")
        .expect("handshake to /actions failed");
    let mut alice = Ws { stream };
    alice
        .send_json(&json!({"action": "ready", "authToken": w.alice.token}))
        .await;
    assert_eq!(
        alice.recv_json(WS_TIMEOUT).await,
        json!({"message": "Connection ready"})
    );
    let mut bob = Typed::open(&a, &w.bob.token).await;

    // actions → typed: a chat created with a first message.
    alice
        .send_json(&json!({"action": "create_chat", "authToken": w.alice.token,
            "message": "first", "recipient_ids": [w.bob.id]}))
        .await;
    let created = alice.recv_json(WS_TIMEOUT).await;
    assert_eq!(created["action"], json!("create_chat"), "{created}");
    let chat: u64 = created["chat"]["id"].as_str().unwrap().parse().unwrap();
    let first = bob.expect("messageCreated").await;
    check_message(&first);
    assert_eq!(first["chat"], json!(chat));
    assert_eq!(first["sender"], person(&w.alice));
    assert_eq!(first["text"], json!("first"));
    let chats = bob.chats().await;
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["id"], json!(chat));

    // typed → actions.
    let reply = bob.post(chat, "reply from /ws").await;
    let got = alice.recv_json(WS_TIMEOUT).await;
    assert_eq!(got["action"], json!("receive_message"), "{got}");
    assert_eq!(got["chat_id"], json!(chat.to_string()));
    assert_eq!(got["message"], json!("reply from /ws"));
    assert_eq!(got["owner_id"], json!(w.bob.id));
    assert_eq!(reply["is_read"], json!(false));

    // alice's read_message (actions) is the core's marker: bob's message
    // now shows as read on /ws, and /ws shows no frame for a read.
    alice
        .send_json(&json!({"action": "read_message", "authToken": w.alice.token, "chat_id": chat.to_string()}))
        .await;
    assert_eq!(
        alice.recv_json(WS_TIMEOUT).await["action"],
        json!("read_message")
    );
    bob.silence().await;
    let hist = bob.history(json!({"chatId": chat})).await;
    assert_eq!(texts(&hist), ["first", "reply from /ws"]);
    assert_eq!(hist[0]["is_read"], json!(false), "alice's own marker");
    assert_eq!(hist[1]["is_read"], json!(true), "read by alice");
}
