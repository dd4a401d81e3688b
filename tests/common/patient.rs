//! The patient dialect (API.md §5) from a client's side, in the
//! [`Clinic`](super::clinic::Clinic): chat paths, sending, the seed's
//! message object and page envelope checked exactly, and walks over pages
//! by their tokens.

use serde_json::{json, Value};

use super::clinic::{INSTANCE, TENANT};
use super::http::{get_as, post_json};
use super::world::User;

/// `/{tenant}/{instance}/patient/{id}/chat{rest}` in the clinic.
pub fn chat_path(patient: &User, rest: &str) -> String {
    format!("/{TENANT}/{INSTANCE}/patient/{}/chat{rest}", patient.id)
}

/// `POST …/chat/{inbound|outbound}` as `who`; asserts 200 and the shape.
pub async fn send(addr: &str, who: &User, patient: &User, way: &str, text: &str) -> Value {
    let path = chat_path(patient, &format!("/{way}"));
    let v = post_json(addr, &path, Some(&who.token), &json!({ "message": text }))
        .await
        .expect(200);
    check_msg(&v);
    assert_eq!(v["message"], json!(text));
    v
}

/// The message id inside an `externalId` (`IM` + 32 hex digits).
pub fn eid(m: &Value) -> u64 {
    let e = m["externalId"].as_str().expect("externalId");
    u64::from_str_radix(&e[2..], 16).unwrap()
}

/// The seed's message object, exactly: `sender{clientType,id,titleName}`,
/// `message`, `externalId`, `createdAt` (RFC 3339 UTC with milliseconds).
pub fn check_msg(m: &Value) {
    let o = m
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {m}"));
    assert_eq!(
        o.len(),
        4,
        "exactly sender, message, externalId, createdAt: {m}"
    );
    let s = m["sender"].as_object().expect("sender object");
    assert_eq!(
        s.len(),
        3,
        "sender is exactly clientType, id, titleName: {m}"
    );
    let id = m["sender"]["id"].as_str().expect("sender id is a string");
    id.parse::<u64>().expect("sender id is decimal");
    match m["sender"]["clientType"].as_str() {
        Some("PATIENT") => assert!(m["sender"]["titleName"].is_null(), "{m}"),
        Some("USER") => assert!(m["sender"]["titleName"].is_string(), "{m}"),
        _ => panic!("clientType must be PATIENT or USER: {m}"),
    }
    assert!(m["message"].is_string());
    let e = m["externalId"].as_str().expect("externalId is a string");
    assert!(
        e.len() == 34
            && e.starts_with("IM")
            && e[2..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
        "externalId is IM + 32 hex digits: {e}"
    );
    let t = m["createdAt"].as_str().expect("createdAt is a string");
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert!(
        t.len() == shape.len()
            && t.bytes().zip(shape.bytes()).all(|(c, p)| match p {
                b'd' => c.is_ascii_digit(),
                p => c == p,
            }),
        "createdAt is RFC 3339 UTC with milliseconds: {t}"
    );
}

/// A page envelope: its content, `nextPageToken`, `prevPageToken`.
pub struct Envelope {
    pub content: Vec<Value>,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub page_size: u64,
}

/// Checks `{"meta":{nextPageToken,prevPageToken,pageSize,found},
/// "content":[…]}`; `hits` for the search/find shape (items are
/// `{"meta":{nextPageToken,prevPageToken},"message"}`). Content is
/// newest first.
pub fn envelope(v: &Value, hits: bool) -> Envelope {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    assert_eq!(o.len(), 2, "exactly meta and content: {v}");
    let meta = v["meta"].as_object().expect("meta");
    assert_eq!(meta.len(), 4, "meta keys: {v}");
    let content = v["content"].as_array().expect("content array").clone();
    assert_eq!(
        v["meta"]["found"],
        json!(!content.is_empty()),
        "found is whether content is non-empty: {v}"
    );
    let tok = |k: &str| match &v["meta"][k] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{k} must be a string or null: {other}"),
    };
    let content: Vec<Value> = content
        .into_iter()
        .map(|item| {
            if hits {
                assert_eq!(item.as_object().unwrap().len(), 2, "hit keys: {item}");
                let m = item["meta"].as_object().expect("hit meta");
                assert_eq!(m.len(), 2, "{item}");
                assert!(item["meta"]["nextPageToken"].is_string(), "{item}");
                assert!(item["meta"]["prevPageToken"].is_string(), "{item}");
                check_msg(&item["message"]);
            } else {
                check_msg(&item);
            }
            item
        })
        .collect();
    let ids: Vec<u64> = content.iter().map(|i| eid(message_of(i))).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    Envelope {
        content,
        next: tok("nextPageToken"),
        prev: tok("prevPageToken"),
        page_size: v["meta"]["pageSize"].as_u64().expect("pageSize"),
    }
}

/// A content item's message: a hit's `message`, or the item itself.
fn message_of(item: &Value) -> &Value {
    match item.get("message") {
        Some(m) if m.is_object() => m,
        _ => item,
    }
}

/// The ids of an envelope's content (messages, or hits' messages).
pub fn ids(env: &Envelope) -> Vec<u64> {
    env.content.iter().map(|i| eid(message_of(i))).collect()
}

/// The texts of an envelope's content (messages, or hits' messages).
pub fn texts(env: &Envelope) -> Vec<String> {
    env.content
        .iter()
        .map(|i| message_of(i)["message"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of a page's `content` as answered, its shape unchecked.
pub fn page_ids(v: &Value) -> Vec<u64> {
    v["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content: {v}"))
        .iter()
        .map(|i| eid(message_of(i)))
        .collect()
}

/// `GET path` as `who`; asserts 200 and the envelope shape.
pub async fn page(addr: &str, who: &User, path: &str, hits: bool) -> Envelope {
    envelope(&get_as(addr, path, &who.token).await.expect(200), hits)
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The page at `token` of `endpoint` (a history, search or find URL), as
/// [`page`] checks it.
pub async fn page_at(addr: &str, who: &User, endpoint: &str, token: &str, hits: bool) -> Envelope {
    let path = format!("{endpoint}?pageToken={}", enc(token));
    page(addr, who, &path, hits).await
}

/// Follows `nextPageToken` (older) from `first` to the end; returns every
/// page's ids, pages in visiting order, each newest first.
pub async fn walk_down(
    addr: &str,
    who: &User,
    endpoint: &str,
    first: Envelope,
    hits: bool,
) -> (Vec<u64>, Envelope) {
    let mut seen = ids(&first);
    let mut cur = first;
    while let Some(t) = cur.next.clone() {
        let next = page_at(addr, who, endpoint, &t, hits).await;
        assert!(
            next.prev.is_some(),
            "a page after the first has a prevPageToken"
        );
        assert!(next.content.len() as u64 <= next.page_size);
        seen.extend(ids(&next));
        cur = next;
    }
    (seen, cur)
}

/// Follows `prevPageToken` (newer) from `from` to the end; returns the ids
/// oldest first.
pub async fn walk_up(
    addr: &str,
    who: &User,
    endpoint: &str,
    from: Envelope,
    hits: bool,
) -> Vec<u64> {
    let mut seen: Vec<u64> = ids(&from).into_iter().rev().collect();
    let mut cur = from;
    while let Some(t) = cur.prev.clone() {
        let next = page_at(addr, who, endpoint, &t, hits).await;
        assert!(next.content.len() as u64 <= next.page_size);
        seen.extend(ids(&next).into_iter().rev());
        cur = next;
    }
    seen
}
