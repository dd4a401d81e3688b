//! The "patient" dialect (seeds 003/004, API.md §5), black-box: inbound
//! and outbound, what every endpoint refuses, archive; workspace isolation
//! from every dialect; the patient chat seen and answered from
//! `/chat/connect`. History pages and their tokens are in
//! `patient_pages.rs`, search and find in `patient_search.rs`.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::json;

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
        get(&addr, &p).await.expect_error(401, "UNAUTHENTICATED");
        get_as(&addr, &p, "nope")
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
            get_as(&addr, &format!("{base}{rest}"), &who.token)
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
        get_as(&addr, &chat_path(&c.pat, rest), &c.nurse.token)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    // And 200 at both ends of pageSize.
    for rest in ["?pageSize=1", "?pageSize=100", "?includeArchived=TRUE"] {
        get_as(&addr, &chat_path(&c.pat, rest), &c.nurse.token)
            .await
            .expect(200);
    }
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
    let p2 = page_at(&addr, &c.pat, &base, &t, false).await;
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
    get_as(
        &addr,
        &format!("{base}?pageToken={}&includeArchived=false", enc(&t)),
        &c.pat.token,
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    // And without: the page after the newest skips it.
    let q1 = page(&addr, &c.pat, &format!("{base}?pageSize=1"), false).await;
    let q2 = page_at(&addr, &c.pat, &base, &q1.next.unwrap(), false).await;
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
    let occupants = occupants(&room_info(&addr, &c.nurse.token, &room).await);
    assert!(
        occupants.contains(&c.pat.id) && occupants.contains(&c.nurse.id),
        "{occupants:?}"
    );
    assert!(!occupants.contains(&c.pat2.id));
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
        get_as(&addr, &base, &c.mallory.token)
            .await
            .expect_error(404, "NOT_FOUND");
        get_as(
            &addr,
            &format!("{base}/search?query=room"),
            &c.mallory.token,
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
    get_as(&addr, &acme, &c.nurse.token)
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
    let mut actions = Ws::actions_ready(&addr, &c.mallory.token).await;
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
    let mut typed = Ws::typed(&addr, &c.mallory.token).await;
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
