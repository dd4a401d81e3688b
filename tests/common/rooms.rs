//! The rooms dialect over HTTP (`/chat/create_dm`, `/admin/rooms`,
//! `/chat/room_info`, `/chat/rooms`, `/chat/retrieve`) and the checks of its message objects.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::http::{get_as, post_json};

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
    room_id_of(&v)
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
    room_id_of(&v)
}

/// The `room_id` of an answer: a decimal string.
fn room_id_of(v: &Value) -> String {
    let room = v["room_id"]
        .as_str()
        .unwrap_or_else(|| panic!("room_id must be a string: {v}"));
    room.parse::<u64>()
        .unwrap_or_else(|_| panic!("room_id not decimal: {v}"));
    room.to_string()
}

/// POST /chat/room_info as the owner of `token`; asserts 200.
pub async fn room_info(addr: &str, token: &str, room: &str) -> Value {
    post_json(
        addr,
        "/chat/room_info",
        Some(token),
        &json!({"room_id": room}),
    )
    .await
    .expect(200)
}

/// A room_info answer's occupants, sorted (each must be a string).
pub fn occupants(v: &Value) -> Vec<String> {
    let mut o: Vec<String> = v["occupants"]
        .as_array()
        .unwrap_or_else(|| panic!("occupants must be an array: {v}"))
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("occupant ids must be strings: {v}"))
                .to_string()
        })
        .collect();
    o.sort();
    o
}

/// `GET /chat/rooms` as the owner of `token` (the web client's room
/// overview); asserts 200.
pub async fn overview(addr: &str, token: &str) -> Value {
    get_as(addr, "/chat/rooms", token).await.expect(200)
}

/// `room`'s entry in an [`overview`].
pub fn overview_room<'a>(o: &'a Value, room: &str) -> &'a Value {
    o["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("no rooms in {o}"))
        .iter()
        .find(|r| r["id"] == json!(room))
        .unwrap_or_else(|| panic!("room {room} not in {o}"))
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
