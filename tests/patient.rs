//! The "patient" dialect (seeds 003/004, API.md §5), black-box: inbound,
//! outbound, history pages and their tokens (walked both ways while
//! messages arrive), archive, search, find; forged and foreign tokens;
//! workspace isolation from every dialect; the patient chat seen and
//! answered from `/chat/connect`.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TENANT: &str = "gh";
const INSTANCE: &str = "sb-demo";

/// A clinic (`gh/sb-demo`: patients `pat` and `pat2`, staff `nurse`
/// "Nurse Joy") and another workspace (`acme/north`: staff `mallory`,
/// patient `epat`), plus the default workspace's `admin`. Send rate limits
/// are raised: these tests post hundreds of messages as one user.
struct Clinic {
    srv: Server,
    admin: User,
    pat: User,
    pat2: User,
    nurse: User,
    mallory: User,
    epat: User,
}

impl Clinic {
    async fn new() -> Clinic {
        let mut srv = Server::new();
        let admin_pw = "pw-admin-secret";
        srv.user_add("admin", "admin", admin_pw);
        srv.start_with(&["--msg-burst", "100000", "--msg-rate", "100000"]);
        let addr = srv.addr();
        let (admin_token, admin_id) = login(&addr, "admin", admin_pw).await;
        let add = |name: &'static str,
                   role: &'static str,
                   ws: (&'static str, &'static str),
                   dn: &'static str| {
            let (addr, admin_token) = (addr.clone(), admin_token.clone());
            async move {
                let password = format!("pw-{name}-secret");
                let body = json!({"username": name, "password": password, "role": role,
                    "tenant": ws.0, "instance": ws.1, "display_name": dn});
                let id = post_json(&addr, "/admin/users", Some(&admin_token), &body)
                    .await
                    .expect(201)["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let (token, uid) = login(&addr, name, &password).await;
                assert_eq!(uid, id);
                User {
                    name: name.into(),
                    password,
                    id,
                    token,
                }
            }
        };
        let clinic = (TENANT, INSTANCE);
        let acme = ("acme", "north");
        Clinic {
            pat: add("pat", "patient", clinic, "Pat Patient").await,
            pat2: add("pat2", "patient", clinic, "Second Patient").await,
            nurse: add("nurse", "staff", clinic, "Nurse Joy").await,
            mallory: add("mallory", "staff", acme, "Mallory").await,
            epat: add("epat", "patient", acme, "Acme Patient").await,
            admin: User {
                name: "admin".into(),
                password: admin_pw.into(),
                id: admin_id,
                token: admin_token,
            },
            srv,
        }
    }

    fn addr(&self) -> String {
        self.srv.addr()
    }
}

/// `/{tenant}/{instance}/patient/{id}/chat{rest}` in the clinic.
fn chat_path(patient: &User, rest: &str) -> String {
    format!("/{TENANT}/{INSTANCE}/patient/{}/chat{rest}", patient.id)
}

async fn get(addr: &str, path: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    http(addr, "GET", path, &h, Bytes::new()).await
}

/// `POST …/chat/{inbound|outbound}` as `who`; asserts 200 and the shape.
async fn send(addr: &str, who: &User, patient: &User, way: &str, text: &str) -> Value {
    let path = chat_path(patient, &format!("/{way}"));
    let v = post_json(addr, &path, Some(&who.token), &json!({ "message": text }))
        .await
        .expect(200);
    check_msg(&v);
    assert_eq!(v["message"], json!(text));
    v
}

/// The message id inside an `externalId` (`IM` + 32 hex digits).
fn eid(m: &Value) -> u64 {
    let e = m["externalId"].as_str().expect("externalId");
    u64::from_str_radix(&e[2..], 16).unwrap()
}

/// The seed's message object, exactly: `sender{clientType,id,titleName}`,
/// `message`, `externalId`, `createdAt` (RFC 3339 UTC with milliseconds).
fn check_msg(m: &Value) {
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
struct Env {
    content: Vec<Value>,
    next: Option<String>,
    prev: Option<String>,
    page_size: u64,
}

/// Checks `{"meta":{nextPageToken,prevPageToken,pageSize,found},
/// "content":[…]}`; `hits` for the search/find shape (items are
/// `{"meta":{nextPageToken,prevPageToken},"message"}`). Content is
/// newest first.
fn envelope(v: &Value, hits: bool) -> Env {
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
    let ids: Vec<u64> = content
        .iter()
        .map(|i| eid(if hits { &i["message"] } else { i }))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    Env {
        content,
        next: tok("nextPageToken"),
        prev: tok("prevPageToken"),
        page_size: v["meta"]["pageSize"].as_u64().expect("pageSize"),
    }
}

fn ids(env: &Env) -> Vec<u64> {
    env.content
        .iter()
        .map(|i| {
            eid(if i.get("message").is_some_and(Value::is_object) {
                &i["message"]
            } else {
                i
            })
        })
        .collect()
}

fn texts(env: &Env) -> Vec<String> {
    env.content
        .iter()
        .map(|i| {
            let m = if i.get("message").is_some_and(Value::is_object) {
                &i["message"]
            } else {
                i
            };
            m["message"].as_str().unwrap().to_string()
        })
        .collect()
}

/// `GET path` as `who`; asserts 200 and the envelope shape.
async fn page(addr: &str, who: &User, path: &str, hits: bool) -> Env {
    envelope(&get(addr, path, Some(&who.token)).await.expect(200), hits)
}

fn enc(s: &str) -> String {
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

/// Follows `nextPageToken` (older) from `first` to the end; returns every
/// page's ids, pages in visiting order, each newest first.
async fn walk_down(
    addr: &str,
    who: &User,
    endpoint: &str,
    first: Env,
    hits: bool,
) -> (Vec<u64>, Env) {
    let mut seen = ids(&first);
    let mut cur = first;
    while let Some(t) = cur.next.clone() {
        let next = page(
            addr,
            who,
            &format!("{endpoint}?pageToken={}", enc(&t)),
            hits,
        )
        .await;
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
async fn walk_up(addr: &str, who: &User, endpoint: &str, from: Env, hits: bool) -> Vec<u64> {
    let mut seen: Vec<u64> = ids(&from).into_iter().rev().collect();
    let mut cur = from;
    while let Some(t) = cur.prev.clone() {
        let next = page(
            addr,
            who,
            &format!("{endpoint}?pageToken={}", enc(&t)),
            hits,
        )
        .await;
        assert!(next.content.len() as u64 <= next.page_size);
        seen.extend(ids(&next).into_iter().rev());
        cur = next;
    }
    seen
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn inbound_and_outbound_answer_the_seed_message_object() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let m = send(&addr, &c.pat, &c.pat, "inbound", "hello, world!").await;
    assert_eq!(
        m["sender"],
        json!({"clientType": "PATIENT", "id": c.pat.id, "titleName": null})
    );
    // Staff posting inbound writes on the patient's behalf.
    let m2 = send(&addr, &c.nurse, &c.pat, "inbound", "for the patient").await;
    assert_eq!(m2["sender"]["clientType"], "PATIENT");
    assert_eq!(m2["sender"]["id"], json!(c.pat.id));
    let m3 = send(&addr, &c.nurse, &c.pat, "outbound", "from the team").await;
    assert_eq!(
        m3["sender"],
        json!({"clientType": "USER", "id": c.nurse.id, "titleName": "Nurse Joy"})
    );
    assert!(eid(&m) < eid(&m2) && eid(&m2) < eid(&m3));
    assert!(m["createdAt"].as_str() <= m3["createdAt"].as_str());
    // The patient may not speak as the care team.
    let path = chat_path(&c.pat, "/outbound");
    post_json(&addr, &path, Some(&c.pat.token), &json!({"message": "x"}))
        .await
        .expect_error(403, "FORBIDDEN");
    // History shows the same three objects, newest first.
    let h = page(&addr, &c.pat, &chat_path(&c.pat, ""), false).await;
    assert_eq!(h.content, vec![m3, m2, m]);
    // Text is kept exactly, unicode and surrounding spaces included.
    let odd = "  Grüße 😀 \u{1F600}\n";
    let v = send(&addr, &c.pat, &c.pat, "inbound", odd).await;
    assert_eq!(v["message"], json!(odd));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_refuses_what_api_md_refuses() {
    let c = Clinic::new().await;
    let addr = c.addr();
    send(&addr, &c.pat, &c.pat, "inbound", "hi").await;
    let gets = [
        "",
        "/search?query=hi",
        "/find?date=2021-03-05T16:09:52.655Z",
    ];
    let posts = ["/inbound", "/outbound", "/archive"];
    let body = json!({"message": "x", "externalIds": []});
    // 401 without or with a bad token.
    for rest in gets {
        let p = chat_path(&c.pat, rest);
        get(&addr, &p, None)
            .await
            .expect_error(401, "UNAUTHENTICATED");
        get(&addr, &p, Some("nope"))
            .await
            .expect_error(401, "UNAUTHENTICATED");
    }
    for rest in posts {
        post_json(&addr, &chat_path(&c.pat, rest), None, &body)
            .await
            .expect_error(401, "UNAUTHENTICATED");
    }
    // 404 for every way of not being allowed, all alike.
    let wrong_ws = format!("/acme/north/patient/{}/chat", c.pat.id);
    let wrong_instance = format!("/{TENANT}/other/patient/{}/chat", c.pat.id);
    let staff_as_patient = format!("/{TENANT}/{INSTANCE}/patient/{}/chat", c.nurse.id);
    let nobody = format!("/{TENANT}/{INSTANCE}/patient/999999/chat");
    let not_an_id = format!("/{TENANT}/{INSTANCE}/patient/7272b601-bb09/chat");
    let mine = chat_path(&c.pat, "");
    let cases: Vec<(&User, &str)> = vec![
        (&c.pat2, &mine),      // another patient
        (&c.mallory, &mine),   // staff of another workspace
        (&c.admin, &mine),     // the operator, not of this workspace
        (&c.nurse, &wrong_ws), // the right patient under the wrong workspace
        (&c.nurse, &wrong_instance),
        (&c.nurse, &staff_as_patient), // not a patient
        (&c.nurse, &nobody),
        (&c.nurse, &not_an_id),
    ];
    for (who, base) in &cases {
        for rest in gets {
            get(&addr, &format!("{base}{rest}"), Some(&who.token))
                .await
                .expect_error(404, "NOT_FOUND");
        }
        for rest in posts {
            post_json(&addr, &format!("{base}{rest}"), Some(&who.token), &body)
                .await
                .expect_error(404, "NOT_FOUND");
        }
    }
    // Unknown sub-paths and methods.
    for (m, rest) in [
        ("GET", "/inbound"),
        ("POST", ""),
        ("GET", "/nope"),
        ("DELETE", ""),
        ("GET", "/"),
    ] {
        let auth = format!("Bearer {}", c.nurse.token);
        http(
            &addr,
            m,
            &chat_path(&c.pat, rest),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await
        .expect_error(404, "NOT_FOUND");
    }
    // 400s: bodies.
    let inbound = chat_path(&c.pat, "/inbound");
    let tok = Some(c.pat.token.as_str());
    post_raw(&addr, &inbound, tok, "{")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, &inbound, tok, "[\"x\"]")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_json(&addr, &inbound, tok, &json!({"text": "x"}))
        .await
        .expect_error(400, "BAD_REQUEST");
    post_json(&addr, &inbound, tok, &json!({"message": 5}))
        .await
        .expect_error(400, "BAD_REQUEST");
    post_json(&addr, &inbound, tok, &json!({"message": ""}))
        .await
        .expect_error(400, "BAD_REQUEST");
    let big = "a".repeat(16_385);
    post_json(&addr, &inbound, tok, &json!({"message": big}))
        .await
        .expect_error(413, "TOO_LARGE");
    let max = "a".repeat(16_384);
    post_json(&addr, &inbound, tok, &json!({"message": max}))
        .await
        .expect(200);
    let archive = chat_path(&c.pat, "/archive");
    let ntok = Some(c.nurse.token.as_str());
    post_json(&addr, &archive, ntok, &json!({"externalIds": "IM1"}))
        .await
        .expect_error(400, "BAD_REQUEST");
    post_json(&addr, &archive, ntok, &json!({}))
        .await
        .expect_error(400, "BAD_REQUEST");
    // 400s: query parameters.
    for rest in [
        "?pageSize=0",
        "?pageSize=101",
        "?pageSize=ten",
        "?pageSize=",
        "?pageSize=5&pageToken=abc",
        "?includeArchived=maybe",
        "?pageSize=5&pageSize=6",
        "/search",
        "/search?query=",
        "/search?query=%21%3F%20.",
        "/search?query=hi&pageSize=0",
        "/search?query=hi&pageSize=3&pageToken=abc",
        "/find",
        "/find?before=true",
        "/find?date=yesterday",
        "/find?date=2021-02-30T00:00:00Z",
        "/find?date=2021-03-05T16:09:52Z&before=sometimes",
        "/find?date=2021-03-05T16:09:52Z&pageSize=500",
    ] {
        get(&addr, &chat_path(&c.pat, rest), Some(&c.nurse.token))
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    // And 200 at both ends of pageSize.
    for rest in ["?pageSize=1", "?pageSize=100", "?includeArchived=TRUE"] {
        get(&addr, &chat_path(&c.pat, rest), Some(&c.nurse.token))
            .await
            .expect(200);
    }
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn history_default_page_is_20_and_an_empty_chat_has_no_tokens() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let base = chat_path(&c.pat, "");
    let empty = page(&addr, &c.pat, &base, false).await;
    assert!(empty.content.is_empty() && empty.next.is_none() && empty.prev.is_none());
    assert_eq!(empty.page_size, 20);
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(eid(&send(
            &addr,
            &c.pat,
            &c.pat,
            "inbound",
            &format!("m{i}"),
        )
        .await));
    }
    let first = page(&addr, &c.nurse, &base, false).await;
    assert_eq!(first.page_size, 20);
    assert_eq!(
        ids(&first),
        sent[5..].iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(first.prev.is_none(), "the first page has no prevPageToken");
    let t = first.next.clone().expect("a nextPageToken");
    let second = page(
        &addr,
        &c.nurse,
        &format!("{base}?pageToken={}", enc(&t)),
        false,
    )
    .await;
    assert_eq!(second.page_size, 20, "the token carries the page size");
    assert_eq!(
        ids(&second),
        sent[..5].iter().rev().copied().collect::<Vec<_>>()
    );
    assert!(second.next.is_none(), "the last page has no nextPageToken");
    // The token works for anyone allowed in the chat: the patient too.
    let again = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}", enc(&t)),
        false,
    )
    .await;
    assert_eq!(ids(&again), ids(&second));
    // A token is opaque URL-safe base64.
    assert!(
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
        "{t}"
    );
    // An empty pageToken counts as none.
    let p = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken=&pageSize=3"),
        false,
    )
    .await;
    assert_eq!(
        ids(&p),
        sent[22..].iter().rev().copied().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_walk_visits_every_message_once_each_way_while_messages_arrive() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let base = chat_path(&c.pat, "");
    // 250 messages, patient and staff interleaved, posted concurrently.
    let mut sent = Vec::new();
    for chunk in 0..5 {
        let posts = (0..50).map(|i| {
            let n = chunk * 50 + i;
            let (who, way) = if n % 3 == 0 {
                (&c.nurse, "outbound")
            } else {
                (&c.pat, "inbound")
            };
            let (addr, pat) = (addr.clone(), &c.pat);
            async move { eid(&send(&addr, who, pat, way, &format!("msg {n}")).await) }
        });
        sent.extend(futures_util::future::join_all(posts).await);
    }
    sent.sort_unstable();
    assert_eq!(sent.len(), 250);
    // Down from the newest page: exactly the 250, newest first, each
    // once — while messages keep arriving (during both walks).
    let first = page(&addr, &c.nurse, &format!("{base}?pageSize=7"), false).await;
    assert!(first.prev.is_none());
    let stop = Arc::new(AtomicBool::new(false));
    let (posted_tx, mut posted) = tokio::sync::watch::channel(0usize);
    let arrivals = {
        let (stop, addr, pat) = (stop.clone(), addr.clone(), c.pat.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            // Bounded, so that the walk up surely reaches the newest.
            while !stop.load(Ordering::SeqCst) && ids.len() < 300 {
                let m = send(&addr, &pat, &pat, "inbound", &format!("late {}", ids.len())).await;
                ids.push(eid(&m));
                let _ = posted_tx.send(ids.len());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        })
    };
    timeout(WS_TIMEOUT, posted.wait_for(|n| *n > 0))
        .await
        .expect("the first arrival")
        .unwrap();
    let (down, last) = walk_down(&addr, &c.nurse, &base, first, false).await;
    let want: Vec<u64> = sent.iter().rev().copied().collect();
    assert_eq!(
        down, want,
        "the walk down visits each message once, in order"
    );
    assert!(last.next.is_none());
    // Up from the oldest page: every message once, ascending, including
    // arrivals, until the walk reaches the newest.
    let up = walk_up(&addr, &c.pat, &base, last, false).await;
    stop.store(true, Ordering::SeqCst);
    let late = timeout(Duration::from_secs(30), arrivals)
        .await
        .unwrap()
        .unwrap();
    assert!(
        late.len() >= 5,
        "messages arrived during the walk: {}",
        late.len()
    );
    assert!(
        up.windows(2).all(|w| w[0] < w[1]),
        "strictly ascending, no repeats"
    );
    let mut all: Vec<u64> = sent.iter().chain(&late).copied().collect();
    all.sort_unstable();
    // What the walk up saw is exactly a prefix of everything, in order:
    // no message skipped, none seen twice.
    assert!(up.len() >= 250);
    assert_eq!(up[..], all[..up.len()]);
}

// ---------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn archive_hides_messages_from_history_and_search_until_include_archived() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let base = chat_path(&c.pat, "");
    let a = send(&addr, &c.pat, &c.pat, "inbound", "keep this apple").await;
    let b = send(&addr, &c.pat, &c.pat, "inbound", "archive this apple").await;
    let d = send(&addr, &c.nurse, &c.pat, "outbound", "another apple").await;
    let archive = chat_path(&c.pat, "/archive");
    let body = json!({"externalIds": [b["externalId"]]});
    // The patient may not archive; an unknown id or another chat's message
    // is NOT_FOUND and archives nothing.
    post_json(&addr, &archive, Some(&c.pat.token), &body)
        .await
        .expect_error(403, "FORBIDDEN");
    let other = send(&addr, &c.pat2, &c.pat2, "inbound", "apple elsewhere").await;
    for bad in [
        json!(["IMzz"]),
        json!([b["externalId"], other["externalId"]]),
        json!(["IM0000000000000000000000000000ffff"]),
    ] {
        post_json(
            &addr,
            &archive,
            Some(&c.nurse.token),
            &json!({"externalIds": bad}),
        )
        .await
        .expect_error(404, "NOT_FOUND");
    }
    assert_eq!(
        ids(&page(&addr, &c.pat, &base, false).await),
        [eid(&d), eid(&b), eid(&a)]
    );
    let r = post_json(&addr, &archive, Some(&c.nurse.token), &body).await;
    assert_eq!(r.status, 204, "{}", r.text());
    // Twice is fine.
    assert_eq!(
        post_json(&addr, &archive, Some(&c.nurse.token), &body)
            .await
            .status,
        204
    );
    assert_eq!(
        ids(&page(&addr, &c.pat, &base, false).await),
        [eid(&d), eid(&a)]
    );
    let with = page(
        &addr,
        &c.pat,
        &format!("{base}?includeArchived=true"),
        false,
    )
    .await;
    assert_eq!(ids(&with), [eid(&d), eid(&b), eid(&a)]);
    assert_eq!(with.content[1], b, "an archived message renders as before");
    // The tokens of an includeArchived walk keep including them.
    let p1 = page(
        &addr,
        &c.pat,
        &format!("{base}?includeArchived=true&pageSize=1"),
        false,
    )
    .await;
    let t = p1.next.unwrap();
    let p2 = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}", enc(&t)),
        false,
    )
    .await;
    assert_eq!(ids(&p2), [eid(&b)]);
    let p2b = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}&includeArchived=true", enc(&t)),
        false,
    )
    .await;
    assert_eq!(
        ids(&p2b),
        [eid(&b)],
        "repeating the token's includeArchived is fine"
    );
    get(
        &addr,
        &format!("{base}?pageToken={}&includeArchived=false", enc(&t)),
        Some(&c.pat.token),
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    // And without: the page after the newest skips it.
    let q1 = page(&addr, &c.pat, &format!("{base}?pageSize=1"), false).await;
    let q2 = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}", enc(&q1.next.unwrap())),
        false,
    )
    .await;
    assert_eq!(ids(&q2), [eid(&a)]);
    assert!(q2.next.is_none());
    // Search leaves archived messages out.
    let s = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=apple"),
        true,
    )
    .await;
    assert_eq!(ids(&s), [eid(&d), eid(&a)]);
    let s = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=archive"),
        true,
    )
    .await;
    assert!(s.content.is_empty());
    // An empty list archives nothing.
    let r = post_json(
        &addr,
        &archive,
        Some(&c.nurse.token),
        &json!({"externalIds": []}),
    )
    .await;
    assert_eq!(r.status, 204);
}

// ---------------------------------------------------------------------------
// Search and find
// ---------------------------------------------------------------------------

async fn search_texts(c: &Clinic, query: &str) -> Vec<String> {
    let path = chat_path(&c.pat, &format!("/search?query={}", enc(query)));
    texts(&page(&c.addr(), &c.pat, &path, true).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn search_matches_whole_words_in_any_case_and_needs_every_word() {
    let c = Clinic::new().await;
    let addr = c.addr();
    for t in [
        "Hello, world!",
        "hello there",
        "say helloworld",
        "WORLD HELLO again",
        "worldly greetings",
        "Grüße aus Köln",
    ] {
        send(&addr, &c.pat, &c.pat, "inbound", t).await;
    }
    send(
        &addr,
        &c.pat2,
        &c.pat2,
        "inbound",
        "hello from another chat",
    )
    .await;
    assert_eq!(
        search_texts(&c, "hello").await,
        ["WORLD HELLO again", "hello there", "Hello, world!"]
    );
    assert_eq!(
        search_texts(&c, "HeLLo").await,
        search_texts(&c, "hello").await
    );
    assert_eq!(
        search_texts(&c, "world hello").await,
        ["WORLD HELLO again", "Hello, world!"]
    );
    assert_eq!(
        search_texts(&c, "hello, WORLD!!").await,
        search_texts(&c, "world hello").await
    );
    assert_eq!(search_texts(&c, "helloworld").await, ["say helloworld"]);
    assert_eq!(search_texts(&c, "KÖLN grüße").await, ["Grüße aus Köln"]);
    for none in [
        "goodbye",
        "hello goodbye",
        "worl",
        "from",
        &"x".repeat(100),
        &format!("hello {}", "y".repeat(100)),
    ] {
        let path = chat_path(&c.pat, &format!("/search?query={}", enc(none)));
        let env = page(&addr, &c.pat, &path, true).await;
        assert!(env.content.is_empty(), "{none}: {:?}", texts(&env));
        assert!(env.next.is_none() && env.prev.is_none());
        assert_eq!(env.page_size, 20);
    }
    // `+` in a query string is a space.
    let path = chat_path(&c.pat, "/search?query=world+hello");
    assert_eq!(texts(&page(&addr, &c.nurse, &path, true).await).len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_pages_walk_both_ways_and_a_token_carries_its_query() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut hits = Vec::new();
    for i in 0..40 {
        let text = if i % 3 == 0 {
            format!("Needle number {i}")
        } else {
            format!("hay {i}")
        };
        let m = send(&addr, &c.pat, &c.pat, "inbound", &text).await;
        if i % 3 == 0 {
            hits.push(eid(&m));
        }
    }
    let endpoint = chat_path(&c.pat, "/search");
    let first = page(
        &addr,
        &c.nurse,
        &format!("{endpoint}?query=NEEDLE&pageSize=4"),
        true,
    )
    .await;
    assert!(first.prev.is_none());
    assert_eq!(first.page_size, 4);
    let t = first.next.clone().unwrap();
    // With the token the query may be left out, or repeated (any case).
    let a = page(
        &addr,
        &c.nurse,
        &format!("{endpoint}?pageToken={}", enc(&t)),
        true,
    )
    .await;
    let b = page(
        &addr,
        &c.nurse,
        &format!("{endpoint}?pageToken={}&query=needle", enc(&t)),
        true,
    )
    .await;
    assert_eq!(ids(&a), ids(&b));
    get(
        &addr,
        &format!("{endpoint}?pageToken={}&query=hay", enc(&t)),
        Some(&c.nurse.token),
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    let (down, last) = walk_down(&addr, &c.nurse, &endpoint, first, true).await;
    let want: Vec<u64> = hits.iter().rev().copied().collect();
    assert_eq!(down, want);
    assert!(last.next.is_none());
    let up = walk_up(&addr, &c.nurse, &endpoint, last, true).await;
    assert_eq!(up, hits);
}

#[tokio::test(flavor = "multi_thread")]
async fn find_from_a_hit_opens_the_page_around_it_hit_included() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut all = Vec::new();
    for i in 0..30 {
        let text = if i == 15 {
            "the unique zebra".to_string()
        } else {
            format!("plain {i}")
        };
        all.push(eid(&send(&addr, &c.pat, &c.pat, "inbound", &text).await));
    }
    let s = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=zebra&pageSize=5&contentPageSize=5"),
        true,
    )
    .await;
    assert_eq!(ids(&s), [all[15]]);
    let hit = &s.content[0]["meta"];
    let find = chat_path(&c.pat, "/find");
    // Older: the hit, then the four before it.
    let t = hit["nextPageToken"].as_str().unwrap();
    let older = page(&addr, &c.pat, &format!("{find}?pageToken={}", enc(t)), true).await;
    assert_eq!(older.page_size, 5);
    assert_eq!(ids(&older), [all[15], all[14], all[13], all[12], all[11]]);
    // Newer: the four after it, then the hit (still newest first).
    let t = hit["prevPageToken"].as_str().unwrap();
    let newer = page(&addr, &c.pat, &format!("{find}?pageToken={}", enc(t)), true).await;
    assert_eq!(ids(&newer), [all[19], all[18], all[17], all[16], all[15]]);
    // The find pages lead on, with find tokens, without repeating.
    let on = page(
        &addr,
        &c.pat,
        &format!("{find}?pageToken={}", enc(older.next.as_ref().unwrap())),
        true,
    )
    .await;
    assert_eq!(ids(&on), [all[10], all[9], all[8], all[7], all[6]]);
    let back = page(
        &addr,
        &c.pat,
        &format!("{find}?pageToken={}", enc(older.prev.as_ref().unwrap())),
        true,
    )
    .await;
    assert_eq!(ids(&back), [all[20], all[19], all[18], all[17], all[16]]);
    let (down, _) = walk_down(&addr, &c.pat, &find, older, true).await;
    assert_eq!(down, all[..16].iter().rev().copied().collect::<Vec<_>>());
    let up = walk_up(&addr, &c.pat, &find, newer, true).await;
    assert_eq!(up, all[15..]);
    // Each item of a find page opens its own surroundings too.
    let item = &on.content[2]["meta"]["nextPageToken"];
    let around = page(
        &addr,
        &c.pat,
        &format!("{find}?pageToken={}", enc(item.as_str().unwrap())),
        true,
    )
    .await;
    assert_eq!(ids(&around)[0], all[8]);
    // Find tokens are for find (and history, API.md §5a: tests/welkin.rs),
    // not for search; search tokens are not for find.
    let t = hit["nextPageToken"].as_str().unwrap();
    get(
        &addr,
        &chat_path(&c.pat, &format!("/search?pageToken={}", enc(t))),
        Some(&c.pat.token),
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    let search_token = page(
        &addr,
        &c.pat,
        &chat_path(&c.pat, "/search?query=plain&pageSize=2"),
        true,
    )
    .await
    .next
    .unwrap();
    get(
        &addr,
        &format!("{find}?pageToken={}", enc(&search_token)),
        Some(&c.pat.token),
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    // pageSize or a date together with a token → 400.
    for extra in ["&pageSize=3", "&date=2021-03-05T16:09:52.655Z"] {
        get(
            &addr,
            &format!("{find}?pageToken={}{extra}", enc(t)),
            Some(&c.pat.token),
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn find_by_date_includes_a_message_at_that_exact_millisecond_both_ways() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let mut msgs = Vec::new();
    for i in 0..9 {
        msgs.push(send(&addr, &c.pat, &c.pat, "inbound", &format!("at {i}")).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let find = chat_path(&c.pat, "/find");
    let at = msgs[4]["createdAt"].as_str().unwrap();
    let id = |i: usize| eid(&msgs[i]);
    let before = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=true&pageSize=3", enc(at)),
        true,
    )
    .await;
    assert_eq!(ids(&before), [id(4), id(3), id(2)]);
    assert_eq!(before.page_size, 3);
    let after = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=false&pageSize=3", enc(at)),
        true,
    )
    .await;
    assert_eq!(ids(&after), [id(6), id(5), id(4)]);
    // `before` defaults to true, pageSize to 20.
    let dflt = page(&addr, &c.pat, &format!("{find}?date={}", enc(at)), true).await;
    assert_eq!(ids(&dflt), (0..=4).rev().map(id).collect::<Vec<_>>());
    assert_eq!(dflt.page_size, 20);
    // One millisecond off moves the border past the message.
    let ms_later = {
        let (head, tail) = at.split_at(20);
        let ms: u32 = tail[..3].parse().unwrap();
        // Not near a second boundary in practice; fall back if it is.
        if ms < 999 {
            Some(format!("{head}{:03}Z", ms + 1))
        } else {
            None
        }
    };
    if let Some(later) = ms_later {
        let p = page(
            &addr,
            &c.pat,
            &format!("{find}?date={}&before=false&pageSize=3", enc(&later)),
            true,
        )
        .await;
        assert_eq!(ids(&p), [id(7), id(6), id(5)]);
    }
    // The same instant with an offset, and with extra fraction digits.
    let day = &at[..10];
    let t = &at[11..23];
    let (h, rest) = t.split_at(2);
    let h: u32 = h.parse().unwrap();
    if h < 22 {
        let shifted = format!("{day}T{:02}{rest}+02:00", h + 2);
        let p = page(
            &addr,
            &c.pat,
            &format!("{find}?date={}&before=true&pageSize=3", enc(&shifted)),
            true,
        )
        .await;
        assert_eq!(ids(&p), [id(4), id(3), id(2)]);
    }
    let precise = format!("{}999Z", &at[..23]);
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date={}&before=true&pageSize=3", enc(&precise)),
        true,
    )
    .await;
    assert_eq!(ids(&p)[0], id(4));
    // Before everything, after everything.
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2000-01-01T00:00:00.000Z&before=true"),
        true,
    )
    .await;
    assert!(p.content.is_empty() && p.next.is_none());
    assert!(p.prev.is_some(), "newer messages exist");
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2000-01-01T00:00:00.000Z&before=false&pageSize=2"),
        true,
    )
    .await;
    assert_eq!(ids(&p), [id(1), id(0)]);
    let p = page(
        &addr,
        &c.pat,
        &format!("{find}?date=2999-01-01T00:00:00.000Z&before=false"),
        true,
    )
    .await;
    assert!(p.content.is_empty() && p.prev.is_none());
    // A find page's tokens lead on like history's.
    let more = page(
        &addr,
        &c.pat,
        &format!("{find}?pageToken={}", enc(before.next.as_ref().unwrap())),
        true,
    )
    .await;
    assert_eq!(ids(&more), [id(1), id(0)]);
    assert!(more.next.is_none());
}

// ---------------------------------------------------------------------------
// Tokens that must not work
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn forged_altered_and_cross_patient_tokens_are_invalid_page_token() {
    let c = Clinic::new().await;
    let addr = c.addr();
    for i in 0..5 {
        send(
            &addr,
            &c.pat,
            &c.pat,
            "inbound",
            &format!("secret of pat {i}"),
        )
        .await;
        send(
            &addr,
            &c.pat2,
            &c.pat2,
            "inbound",
            &format!("secret of pat2 {i}"),
        )
        .await;
    }
    let mine = chat_path(&c.pat, "");
    let theirs = chat_path(&c.pat2, "");
    let good = page(&addr, &c.nurse, &format!("{mine}?pageSize=2"), false)
        .await
        .next
        .unwrap();
    let other_chat = page(&addr, &c.nurse, &format!("{theirs}?pageSize=2"), false)
        .await
        .next
        .unwrap();
    let other_search = page(
        &addr,
        &c.nurse,
        &chat_path(&c.pat2, "/search?query=secret&pageSize=2"),
        true,
    )
    .await;
    let mut bad: Vec<String> = vec![
        "garbage".into(),
        "!!!!".into(),
        "eyJ0eXBlIjoiUFJPVklERVIifQ==".into(), // the seed's kind of token
        good[..good.len() - 1].to_string(),    // truncated
        format!("{good}A"),                    // extended
        other_chat.clone(),                    // another patient's chat
        "A".repeat(5000),
    ];
    // Altered: every position changed once.
    for i in (0..good.len()).step_by(3) {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        bad.push(String::from_utf8(b).unwrap());
    }
    for t in &bad {
        let r = get(
            &addr,
            &format!("{mine}?pageToken={}", enc(t)),
            Some(&c.nurse.token),
        )
        .await;
        r.expect_error(400, "INVALID_PAGE_TOKEN");
        assert!(!r.text().contains("secret"), "no data with a bad token");
    }
    // Another patient's search and find tokens on this patient's URLs.
    let t = other_search.next.unwrap();
    get(
        &addr,
        &chat_path(&c.pat, &format!("/search?pageToken={}", enc(&t))),
        Some(&c.nurse.token),
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
    let t = other_search.content[0]["meta"]["nextPageToken"]
        .as_str()
        .unwrap();
    for ep in ["/find", ""] {
        get(
            &addr,
            &chat_path(&c.pat, &format!("{ep}?pageToken={}", enc(t))),
            Some(&c.nurse.token),
        )
        .await
        .expect_error(400, "INVALID_PAGE_TOKEN");
    }
    // The right token still works, for the patient too.
    page(
        &addr,
        &c.pat,
        &format!("{mine}?pageToken={}", enc(&good)),
        false,
    )
    .await;
    // A patient with the other chat's token on the other chat's URL: no
    // access, so 404 before any token is read.
    get(
        &addr,
        &format!("{theirs}?pageToken={}", enc(&other_chat)),
        Some(&c.pat.token),
    )
    .await
    .expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn page_tokens_survive_a_restart() {
    let mut c = Clinic::new().await;
    let addr = c.addr();
    for i in 0..3 {
        send(&addr, &c.pat, &c.pat, "inbound", &format!("m{i}")).await;
    }
    let base = chat_path(&c.pat, "");
    let first = page(&addr, &c.pat, &format!("{base}?pageSize=1"), false).await;
    let t = first.next.unwrap();
    let before = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}", enc(&t)),
        false,
    )
    .await;
    c.srv.kill9();
    c.srv.start();
    let addr = c.addr();
    let after = page(
        &addr,
        &c.pat,
        &format!("{base}?pageToken={}", enc(&t)),
        false,
    )
    .await;
    assert_eq!(after.content, before.content);
}

// ---------------------------------------------------------------------------
// Across dialects and workspaces
// ---------------------------------------------------------------------------

/// The patient chat's room id, as a care-team member finds it through the
/// rooms dialect (`POST /chat/retrieve`).
async fn room_of_patient_chat(c: &Clinic) -> String {
    let marker = send(&c.addr(), &c.pat, &c.pat, "inbound", "where is my room").await;
    let msgs = retrieve(&c.addr(), &c.nurse.token, 0, None).await;
    let m = msgs
        .iter()
        .find(|m| msg_id(m) == eid(&marker))
        .unwrap_or_else(|| panic!("the care team retrieves the patient's message: {msgs:?}"));
    assert_eq!(m["poster"], json!(c.pat.id));
    m["room"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn care_team_on_chat_connect_sees_inbound_live_and_answers_the_patient() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let room = room_of_patient_chat(&c).await;
    let info = post_json(
        &addr,
        "/chat/room_info",
        Some(&c.nurse.token),
        &json!({"room_id": room}),
    )
    .await
    .expect(200);
    let occupants: HashSet<&str> = info["occupants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        occupants.contains(c.pat.id.as_str()) && occupants.contains(c.nurse.id.as_str()),
        "{info}"
    );
    assert!(!occupants.contains(c.pat2.id.as_str()));
    let mut ws = c.srv.ws(&c.nurse.token).await;
    let mut pat_ws = c.srv.ws(&c.pat.token).await;
    let m = send(&addr, &c.pat, &c.pat, "inbound", "I feel better").await;
    let pushed = ws.recv_message(WS_TIMEOUT).await;
    assert_eq!(msg_id(&pushed), eid(&m));
    assert_eq!(pushed["poster"], json!(c.pat.id));
    assert_eq!(pushed["room"], json!(room));
    assert_eq!(pushed["message"], "I feel better");
    assert_eq!(msg_id(&pat_ws.recv_message(WS_TIMEOUT).await), eid(&m));
    // The nurse answers on the socket; the patient gets it here as USER.
    ws.send_msg(&room, "Glad to hear it").await;
    let echo = ws.recv_message(WS_TIMEOUT).await;
    assert_eq!(echo["message"], "Glad to hear it");
    let h = page(&addr, &c.pat, &chat_path(&c.pat, "?pageSize=1"), false).await;
    assert_eq!(
        h.content[0]["sender"],
        json!({"clientType": "USER", "id": c.nurse.id, "titleName": "Nurse Joy"})
    );
    assert_eq!(h.content[0]["message"], "Glad to hear it");
    assert_eq!(eid(&h.content[0]), msg_id(&echo));
    // Outbound over HTTP reaches the socket too.
    let o = send(&addr, &c.nurse, &c.pat, "outbound", "take care").await;
    assert_eq!(msg_id(&ws.recv_message(WS_TIMEOUT).await), eid(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_workspace_reaches_the_patient_chat_from_no_dialect() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let room = room_of_patient_chat(&c).await;
    let room_n: u64 = room.parse().unwrap();
    let before = ids(&page(&addr, &c.pat, &chat_path(&c.pat, ""), false).await);
    // The patient dialect: every endpoint, the right path or its own.
    let own_ws = format!("/acme/north/patient/{}/chat", c.pat.id);
    for base in [chat_path(&c.pat, ""), own_ws] {
        get(&addr, &base, Some(&c.mallory.token))
            .await
            .expect_error(404, "NOT_FOUND");
        get(
            &addr,
            &format!("{base}/search?query=room"),
            Some(&c.mallory.token),
        )
        .await
        .expect_error(404, "NOT_FOUND");
        for way in ["inbound", "outbound"] {
            post_json(
                &addr,
                &format!("{base}/{way}"),
                Some(&c.mallory.token),
                &json!({"message": "psst"}),
            )
            .await
            .expect_error(404, "NOT_FOUND");
        }
    }
    // Their own patient works for them, and is as closed to our nurse.
    let acme = format!("/acme/north/patient/{}/chat", c.epat.id);
    let m = post_json(
        &addr,
        &format!("{acme}/outbound"),
        Some(&c.mallory.token),
        &json!({"message": "hello acme"}),
    )
    .await
    .expect(200);
    assert_eq!(m["sender"]["titleName"], "Mallory");
    assert_eq!(page(&addr, &c.epat, &acme, false).await.content, vec![m]);
    get(&addr, &acme, Some(&c.nurse.token))
        .await
        .expect_error(404, "NOT_FOUND");
    // rooms: room_info, a send on /chat/connect, retrieve.
    post_json(
        &addr,
        "/chat/room_info",
        Some(&c.mallory.token),
        &json!({"room_id": room}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    let mut ws = c.srv.ws(&c.mallory.token).await;
    ws.send_msg(&room, "psst from rooms").await;
    ws.expect_silence(SILENCE).await;
    let got = retrieve(&addr, &c.mallory.token, 0, None).await;
    assert!(got.iter().all(|m| m["room"] != json!(room)), "{got:?}");
    // actions: send_message into the chat → NOT_FOUND error frame.
    let url = format!("ws://{addr}/actions");
    let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .unwrap()
        .unwrap();
    let mut actions = Ws { stream };
    actions
        .send_json(&json!({"action": "ready", "authToken": c.mallory.token}))
        .await;
    assert_eq!(
        actions.recv_json(WS_TIMEOUT).await,
        json!({"message": "Connection ready"})
    );
    actions
        .send_json(
            &json!({"action": "send_message", "authToken": c.mallory.token,
            "chat_id": room, "message": "psst from actions"}),
        )
        .await;
    let e = actions.recv_json(WS_TIMEOUT).await;
    assert_eq!(e["action"], "error", "{e}");
    assert_eq!(e["error_code"], "NOT_FOUND", "{e}");
    actions
        .send_json(
            &json!({"action": "read_message", "authToken": c.mallory.token, "chat_id": room}),
        )
        .await;
    assert_eq!(
        actions.recv_json(WS_TIMEOUT).await["error_code"],
        "NOT_FOUND"
    );
    // typed: details, messages, join, send → NOT_FOUND errors.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", c.mallory.token).parse().unwrap(),
    );
    let (stream, _) = timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    let mut typed = Ws { stream };
    for (kind, data) in [
        ("getChatDetails", json!({"chatId": room_n})),
        ("getChatMessages", json!({"chatId": room_n})),
        ("joinChat", json!({"chat": room_n})),
        (
            "newMessage",
            json!({"chat": room_n, "text": "psst from typed"}),
        ),
    ] {
        typed.send_json(&json!({"type": kind, "data": data})).await;
        let v = typed.recv_json(WS_TIMEOUT).await;
        assert_eq!(v["type"], "error", "{kind}: {v}");
        assert_eq!(v["data"]["code"], "NOT_FOUND", "{kind}: {v}");
    }
    // Nothing of theirs landed in the chat.
    let after = ids(&page(&addr, &c.pat, &chat_path(&c.pat, ""), false).await);
    assert_eq!(after, before);
}
