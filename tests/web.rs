//! The web client's server side, black-box over HTTP: its files at `/` and
//! `/app/…` (types, ETag/304, security headers) and its one endpoint,
//! `GET /chat/rooms` (the room overview with bounded unread counts).
//! The client itself is driven in a browser by `tests/browser.rs`.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use common::{overview, overview_room, Pacer, World, Ws, WS_TIMEOUT};

async fn get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> common::Resp {
    common::http(addr, "GET", path, headers, bytes::Bytes::new()).await
}

fn assert_secure(r: &common::Resp, what: &str) {
    let h = |n: &str| r.header(n).unwrap_or_else(|| panic!("{what}: no {n}"));
    let csp = h("content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part:?}");
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("cache-control"), "no-cache", "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_is_served_with_types_etags_and_security_headers() {
    let w = World::new().await;
    let addr = w.addr();
    let page = get_with(&addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_secure(&page, "/");
    let html = page.text();
    assert!(html.contains("<script type=\"module\" src=\"/app/main.js\"></script>"));

    // Every file the page and its modules name is served, with its type.
    let mut files = vec![
        "/app/app.css".to_string(),
        "/app/icon.svg".into(),
        "/app/main.js".into(),
    ];
    let main = get_with(&addr, "/app/main.js", &[]).await.text();
    for line in main.lines().filter(|l| l.starts_with("import ")) {
        let module = line.split('"').nth(1).unwrap();
        files.push(format!("/app/{}", module.trim_start_matches("./")));
    }
    assert!(files.len() >= 7, "{files:?}");
    for f in &files {
        let r = get_with(&addr, f, &[]).await;
        assert_eq!(r.status, 200, "{f}");
        let want = match f.rsplit('.').next().unwrap() {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected file type {other}"),
        };
        assert_eq!(r.header("content-type").as_deref(), Some(want), "{f}");
        assert_secure(&r, f);
        assert!(r.header("etag").is_some(), "{f}");
    }

    // The ETag revalidates: same bytes → 304 with no body.
    let tag = page.header("etag").unwrap();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    let again = get_with(&addr, "/", &[("if-none-match", &tag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag").as_deref(), Some(tag.as_str()));
    assert_secure(&again, "304 of /");
    let stale = get_with(&addr, "/", &[("if-none-match", "\"0000\"")]).await;
    assert_eq!(stale.status, 200);

    // Unknown files and other methods are the usual JSON 404.
    get_with(&addr, "/app/nope.js", &[])
        .await
        .expect_error(404, "NOT_FOUND");
    common::post_raw(&addr, "/", None, "{}")
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_overview_needs_a_valid_token() {
    let w = World::new().await;
    let addr = w.addr();
    get_with(&addr, "/chat/rooms", &[])
        .await
        .expect_error(401, "UNAUTHENTICATED");
    get_with(&addr, "/chat/rooms", &[("authorization", "Bearer nope")])
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let (token, _) = w.srv.login(&w.bob.name, &w.bob.password).await;
    overview(&addr, &token).await;
    let out = common::post_json(&addr, "/auth/logout", Some(&token), &json!({})).await;
    assert_eq!(out.status, 204);
    common::get_as(&addr, "/chat/rooms", &token)
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

/// A `/ws` (typed dialect) socket.
async fn typed(
    addr: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("ws://{addr}/ws?token={token}");
    timeout(WS_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
        .await
        .expect("typed handshake timed out")
        .expect("typed handshake")
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_overview_counts_others_unread_messages_after_the_marker() {
    let w = World::new().await;
    let addr = w.addr();
    let (bob, alice) = (&w.bob, &w.alice);
    let dm = common::create_dm(&addr, &bob.token, &alice.id).await;

    let o = overview(&addr, &bob.token).await;
    assert_eq!(
        o["me"],
        json!({"id": bob.id, "username": "bob", "display_name": "bob", "role": "staff",
               "tenant": "default", "instance": "default"})
    );
    let r = overview_room(&o, &dm);
    assert_eq!(r["kind"], "dm");
    assert_eq!(r["name"], Value::Null);
    assert_eq!(r["last_message_id"], Value::Null);
    assert_eq!(
        (r["unread"].clone(), r["last_read"].clone()),
        (json!(0), json!(0))
    );
    let mut members: Vec<String> = serde_json::from_value(r["members"].clone()).unwrap();
    members.sort();
    let mut want = vec![bob.id.clone(), alice.id.clone()];
    want.sort();
    assert_eq!(members, want);
    assert_eq!(o["people"][&alice.id]["username"], "alice");
    assert_eq!(o["people"][&alice.id]["role"], "patient");

    // alice writes three, bob one: bob has three unread, alice none.
    let mut a = Ws::auth(&addr, &alice.token).await;
    let texts: Vec<String> = (0..3).map(|i| format!("from alice {i}")).collect();
    let pushes = common::send_until_echoed(
        &mut a,
        &alice.id,
        &dm,
        &texts,
        &mut Pacer::new(),
        WS_TIMEOUT,
    )
    .await;
    let ids: Vec<u64> = pushes.iter().map(common::msg_id).collect();
    let mut b = Ws::auth(&addr, &bob.token).await;
    let own = common::send_until_echoed(
        &mut b,
        &bob.id,
        &dm,
        &["from bob".to_string()],
        &mut Pacer::new(),
        WS_TIMEOUT,
    )
    .await;
    let last = common::msg_id(own.last().unwrap());
    let r = overview_room(&overview(&addr, &bob.token).await, &dm).clone();
    assert_eq!(r["unread"], 3);
    assert_eq!(r["unread_more"], false);
    assert_eq!(r["last_message_id"], last);
    assert!(r["updated_at"].as_u64().unwrap() > 0);
    assert_eq!(
        overview_room(&overview(&addr, &alice.token).await, &dm)["unread"],
        1
    );

    // The marker moved through the typed dialect (joinChat with
    // last_read_message) is the one the overview counts from.
    let mut t = typed(&addr, &bob.token).await;
    let join = json!({"type": "joinChat", "data": {"chat": dm.parse::<u64>().unwrap(),
                                                   "last_read_message": ids[1]}});
    t.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let f = timeout(WS_TIMEOUT, t.next())
            .await
            .expect("a reply")
            .unwrap()
            .unwrap();
        if let Message::Text(s) = f {
            let v: Value = serde_json::from_str(s.as_str()).unwrap();
            assert_eq!(v["type"], "chatJoined", "{v}");
            break;
        }
    }
    let r = overview_room(&overview(&addr, &bob.token).await, &dm).clone();
    assert_eq!(
        (r["last_read"].clone(), r["unread"].clone()),
        (json!(ids[1]), json!(1))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_overview_caps_the_unread_count_and_says_so() {
    let w = World::new().await;
    let addr = w.addr();
    let dm = common::create_dm(&addr, &w.bob.token, &w.alice.id).await;
    let mut a = Ws::auth(&addr, &w.alice.token).await;
    let texts: Vec<String> = (0..130).map(|i| format!("m{i}")).collect();
    common::send_until_echoed(
        &mut a,
        &w.alice.id,
        &dm,
        &texts,
        &mut Pacer::new(),
        Duration::from_secs(60),
    )
    .await;
    let r = overview_room(&overview(&addr, &w.bob.token).await, &dm).clone();
    assert_eq!(
        (r["unread"].clone(), r["unread_more"].clone()),
        (json!(100), json!(true))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_overview_lists_patient_chats_for_staff_within_the_workspace_only() {
    let w = World::new().await;
    let addr = w.addr();
    let chat = format!("/default/default/patient/{}/chat/inbound", w.alice.id);
    common::post_json(
        &addr,
        &chat,
        Some(&w.alice.token),
        &json!({"message": "hello"}),
    )
    .await
    .expect(200);
    let o = overview(&addr, &w.bob.token).await;
    let rooms = o["rooms"].as_array().unwrap();
    let patient: Vec<&Value> = rooms.iter().filter(|r| r["kind"] == "patient").collect();
    assert_eq!(patient.len(), 1, "{o}");
    assert_eq!(patient[0]["patient"], json!(w.alice.id));
    assert_eq!(patient[0]["unread"], 1);
    // alice sees her own chat; carol (another patient) and eve (another
    // workspace) see nothing of it.
    let o = overview(&addr, &w.alice.token).await;
    assert_eq!(o["rooms"][0]["patient"], json!(w.alice.id));
    assert_eq!(o["rooms"][0]["unread"], 0);
    assert_eq!(overview(&addr, &w.carol.token).await["rooms"], json!([]));
    let eve = overview(&addr, &w.eve.token).await;
    assert_eq!(eve["rooms"], json!([]));
    assert_eq!(eve["people"], json!({}));
    assert_eq!(
        (eve["me"]["tenant"].clone(), eve["me"]["instance"].clone()),
        (json!("acme"), json!("north"))
    );
}
