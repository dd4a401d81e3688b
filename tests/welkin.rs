//! Welkin's own clients against parlor (API.md §5a and §6), black-box:
//! the `/patients/` spelling, `size`, a search hit's tokens on the history
//! endpoint, `contentPageSize`, unknown query parameters; API clients (the
//! token exchange, its throttle, rotation closing sockets, workspace
//! confinement); and Welkin's real Python SDK (`welkin` 0.1.12 from PyPI,
//! in a venv this test makes) driving a running daemon.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `/{tenant}/{instance}/{patient|patients}/{id}/chat{rest}`.
fn path(seg: &str, patient: &User, rest: &str) -> String {
    format!("/{TENANT}/{INSTANCE}/{seg}/{}/chat{rest}", patient.id)
}

fn token_of(v: &Value, which: &str) -> Option<String> {
    v["meta"][which].as_str().map(str::to_owned)
}

/// Posts `n` inbound messages as the patient (`text(i)`); their ids.
async fn fill(addr: &str, pat: &User, n: usize, text: impl Fn(usize) -> String) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(eid(&send(addr, pat, pat, "inbound", &text(i)).await));
    }
    out
}

// ---------------------------------------------------------------------------
// API.md §5a
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn patients_plural_is_the_same_resource_as_patient_for_every_endpoint() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let m = post_json(
        &addr,
        &path("patients", &c.pat, "/inbound"),
        Some(&c.pat.token),
        &json!({"message": "hello zebra"}),
    )
    .await
    .expect(200);
    assert_eq!(m["sender"]["clientType"], "PATIENT");
    let o = post_json(
        &addr,
        &path("patients", &c.pat, "/outbound"),
        Some(&c.nurse.token),
        &json!({"message": "answer zebra"}),
    )
    .await
    .expect(200);
    assert_eq!(o["sender"]["titleName"], "Nurse Joy");
    // History, search and find answer the same bytes under either spelling.
    for rest in [
        "",
        "?pageSize=1",
        "/search?query=zebra",
        "/find?date=2030-01-01T00:00:00.000Z",
    ] {
        let a = get_as(&addr, &path("patient", &c.pat, rest), &c.nurse.token).await;
        let b = get_as(&addr, &path("patients", &c.pat, rest), &c.nurse.token).await;
        assert_eq!((a.status, b.status), (200, 200), "{rest}: {}", b.text());
        assert_eq!(a.json(), b.json(), "{rest}");
    }
    let h = get_as(&addr, &path("patients", &c.pat, ""), &c.pat.token)
        .await
        .expect(200);
    assert_eq!(page_ids(&h), [eid(&o), eid(&m)]);
    // A token from one spelling is good under the other.
    let t = token_of(
        &get_as(&addr, &path("patient", &c.pat, "?pageSize=1"), &c.pat.token)
            .await
            .expect(200),
        "nextPageToken",
    )
    .unwrap();
    let on = get_as(
        &addr,
        &path("patients", &c.pat, &format!("?pageToken={}", enc(&t))),
        &c.pat.token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&on), [eid(&m)]);
    // Archive, and its refusal for the patient, under `/patients/` too.
    let body = json!({"externalIds": [m["externalId"]]});
    post_json(
        &addr,
        &path("patients", &c.pat, "/archive"),
        Some(&c.pat.token),
        &body,
    )
    .await
    .expect_error(403, "FORBIDDEN");
    let r = post_json(
        &addr,
        &path("patients", &c.pat, "/archive"),
        Some(&c.nurse.token),
        &body,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let h = get_as(&addr, &path("patients", &c.pat, ""), &c.pat.token)
        .await
        .expect(200);
    assert_eq!(page_ids(&h), [eid(&o)]);
    // The rules of §5 hold there too: another workspace's patient, an
    // unknown endpoint, no token.
    get_as(&addr, &path("patients", &c.epat, ""), &c.nurse.token)
        .await
        .expect_error(404, "NOT_FOUND");
    get_as(&addr, &path("patients", &c.pat, "/nope"), &c.nurse.token)
        .await
        .expect_error(404, "NOT_FOUND");
    get_as(&addr, &path("patients", &c.pat, ""), "not-a-token")
        .await
        .expect_error(401, "UNAUTHENTICATED");
}

#[tokio::test(flavor = "multi_thread")]
async fn size_is_page_size_and_both_at_once_or_with_a_token_is_400() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let all = fill(&addr, &c.pat, 7, |i| format!("word {i}")).await;
    let p = get_as(&addr, &path("patients", &c.pat, "?size=3"), &c.pat.token)
        .await
        .expect(200);
    assert_eq!(page_ids(&p), [all[6], all[5], all[4]]);
    assert_eq!(p["meta"]["pageSize"], 3);
    let s = get_as(
        &addr,
        &path("patients", &c.pat, "/search?query=word&size=2"),
        &c.pat.token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&s), [all[6], all[5]]);
    let f = get_as(
        &addr,
        &path(
            "patients",
            &c.pat,
            "/find?date=2030-01-01T00:00:00.000Z&size=4",
        ),
        &c.pat.token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&f), [all[6], all[5], all[4], all[3]]);
    let t = token_of(&p, "nextPageToken").unwrap();
    for bad in [
        "?size=3&pageSize=3".to_string(),
        "?size=0".into(),
        "?size=101".into(),
        "?size=x".into(),
        format!("?size=3&pageToken={}", enc(&t)),
        "/search?query=word&size=2&pageSize=2".into(),
    ] {
        get_as(&addr, &path("patients", &c.pat, &bad), &c.pat.token)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_hits_tokens_open_on_the_history_endpoint_the_page_find_shows() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let all = fill(&addr, &c.pat, 30, |i| {
        if i == 12 {
            "the unique zebra".into()
        } else {
            format!("plain {i}")
        }
    })
    .await;
    let s = get_as(
        &addr,
        &path("patients", &c.pat, "/search?query=zebra&contentPageSize=4"),
        &c.nurse.token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&s), [all[12]]);
    let hit = &s["content"][0]["meta"];
    for (which, want) in [
        ("nextPageToken", vec![all[12], all[11], all[10], all[9]]),
        ("prevPageToken", vec![all[15], all[14], all[13], all[12]]),
    ] {
        let t = enc(hit[which].as_str().unwrap());
        let h = get_as(
            &addr,
            &path("patients", &c.pat, &format!("?pageToken={t}")),
            &c.nurse.token,
        )
        .await
        .expect(200);
        let f = get_as(
            &addr,
            &path("patients", &c.pat, &format!("/find?pageToken={t}")),
            &c.nurse.token,
        )
        .await
        .expect(200);
        assert_eq!(page_ids(&h), want, "{which} on history");
        assert_eq!(page_ids(&f), want, "{which} on find");
        // History renders its own envelope: messages, not hits.
        assert!(h["content"][0]["externalId"].is_string(), "{h}");
        assert_eq!(h["meta"]["pageSize"], 4);
        // includeArchived may repeat the token's value; another is refused.
        get_as(
            &addr,
            &path(
                "patients",
                &c.pat,
                &format!("?pageToken={t}&includeArchived=false"),
            ),
            &c.nurse.token,
        )
        .await
        .expect(200);
        get_as(
            &addr,
            &path(
                "patients",
                &c.pat,
                &format!("?pageToken={t}&includeArchived=true"),
            ),
            &c.nurse.token,
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    }
    // From the hit's page, history's own tokens walk on to the oldest,
    // every message once.
    let t = hit["nextPageToken"].as_str().unwrap().to_owned();
    let mut page = get_as(
        &addr,
        &path("patients", &c.pat, &format!("?pageToken={}", enc(&t))),
        &c.nurse.token,
    )
    .await
    .expect(200);
    let mut seen = page_ids(&page);
    while let Some(t) = token_of(&page, "nextPageToken") {
        page = get_as(
            &addr,
            &path("patients", &c.pat, &format!("?pageToken={}", enc(&t))),
            &c.nurse.token,
        )
        .await
        .expect(200);
        seen.extend(page_ids(&page));
    }
    assert_eq!(seen, all[..13].iter().rev().copied().collect::<Vec<_>>());
    // A hit token of another patient's chat is refused on history too.
    fill(&addr, &c.pat2, 1, |_| "zebra too".into()).await;
    let other = get_as(
        &addr,
        &path("patients", &c.pat2, "/search?query=zebra"),
        &c.nurse.token,
    )
    .await
    .expect(200);
    let t = other["content"][0]["meta"]["nextPageToken"]
        .as_str()
        .unwrap();
    get_as(
        &addr,
        &path("patients", &c.pat, &format!("?pageToken={}", enc(t))),
        &c.nurse.token,
    )
    .await
    .expect_error(400, "INVALID_PAGE_TOKEN");
}

#[tokio::test(flavor = "multi_thread")]
async fn content_page_size_sets_the_page_size_of_the_hits_tokens_on_every_search_page() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let all = fill(&addr, &c.pat, 30, |i| format!("apple {i}")).await;
    let opened = |v: &Value, i: usize| {
        let t = v["content"][i]["meta"]["nextPageToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let (addr, c_tok, p) = (
            addr.clone(),
            c.pat.token.clone(),
            path("patients", &c.pat, ""),
        );
        async move {
            get_as(&addr, &format!("{p}?pageToken={}", enc(&t)), &c_tok)
                .await
                .expect(200)
        }
    };
    let first = get_as(
        &addr,
        &path(
            "patients",
            &c.pat,
            "/search?query=apple&pageSize=2&contentPageSize=3",
        ),
        &c.pat.token,
    )
    .await
    .expect(200);
    assert_eq!(first["meta"]["pageSize"], 2);
    let h = opened(&first, 0).await;
    assert_eq!(page_ids(&h), [all[29], all[28], all[27]]);
    assert_eq!(h["meta"]["pageSize"], 3);
    // The search token carries it: the next search page's hits too.
    let t = token_of(&first, "nextPageToken").unwrap();
    let second = get_as(
        &addr,
        &path(
            "patients",
            &c.pat,
            &format!("/search?pageToken={}", enc(&t)),
        ),
        &c.pat.token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&second), [all[27], all[26]]);
    assert_eq!(
        page_ids(&opened(&second, 1).await),
        [all[26], all[25], all[24]]
    );
    // Repeating it with the token is fine; another value is refused.
    get_as(
        &addr,
        &path(
            "patients",
            &c.pat,
            &format!("/search?pageToken={}&contentPageSize=3", enc(&t)),
        ),
        &c.pat.token,
    )
    .await
    .expect(200);
    get_as(
        &addr,
        &path(
            "patients",
            &c.pat,
            &format!("/search?pageToken={}&contentPageSize=5", enc(&t)),
        ),
        &c.pat.token,
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    // Without it: 20, whatever the search's own page size.
    let d = get_as(
        &addr,
        &path("patients", &c.pat, "/search?query=apple&pageSize=2"),
        &c.pat.token,
    )
    .await
    .expect(200);
    let h = opened(&d, 0).await;
    assert_eq!(h["meta"]["pageSize"], 20);
    assert_eq!(page_ids(&h).len(), 20);
    for bad in ["0", "101", "-1", "x", ""] {
        get_as(
            &addr,
            &path(
                "patients",
                &c.pat,
                &format!("/search?query=apple&contentPageSize={bad}"),
            ),
            &c.pat.token,
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_query_parameters_are_ignored_by_every_endpoint() {
    let c = Clinic::new().await;
    let addr = c.addr();
    fill(&addr, &c.pat, 5, |i| format!("kiwi {i}")).await;
    let noise = "page=0&sort=desc&x-trace=1&includeArchivedd=maybe&_=123";
    for (plain, with) in [
        ("?pageSize=2".to_string(), format!("?pageSize=2&{noise}")),
        (
            "/search?query=kiwi&pageSize=2".into(),
            format!("/search?{noise}&query=kiwi&pageSize=2"),
        ),
        (
            "/find?date=2030-01-01T00:00:00.000Z&pageSize=2".into(),
            format!("/find?date=2030-01-01T00:00:00.000Z&{noise}&pageSize=2"),
        ),
    ] {
        let a = get_as(&addr, &path("patients", &c.pat, &plain), &c.pat.token)
            .await
            .expect(200);
        let b = get_as(&addr, &path("patients", &c.pat, &with), &c.pat.token)
            .await
            .expect(200);
        assert_eq!(a, b, "{with}");
        // And beside a token.
        let t = token_of(&a, "nextPageToken").unwrap();
        let sub = plain.split('?').next().unwrap();
        let x = get_as(
            &addr,
            &path("patients", &c.pat, &format!("{sub}?pageToken={}", enc(&t))),
            &c.pat.token,
        )
        .await
        .expect(200);
        let y = get_as(
            &addr,
            &path(
                "patients",
                &c.pat,
                &format!("{sub}?{noise}&pageToken={}", enc(&t)),
            ),
            &c.pat.token,
        )
        .await
        .expect(200);
        assert_eq!(x, y, "{sub} with a token");
    }
    // The SDK's Python booleans (`True`/`False`) are read as flags.
    get_as(
        &addr,
        &path("patients", &c.pat, "?includeArchived=False&pageSize=20"),
        &c.pat.token,
    )
    .await
    .expect(200);
}

// ---------------------------------------------------------------------------
// API.md §6: API clients
// ---------------------------------------------------------------------------

/// `POST /admin/api_clients` as the admin; asserts `201 {"name","secret"}`
/// and returns the secret.
async fn add_client(addr: &str, admin: &str, body: Value) -> String {
    let v = post_json(addr, "/admin/api_clients", Some(admin), &body)
        .await
        .expect(201);
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "exactly name and secret: {v}"
    );
    assert_eq!(v["name"], body["name"]);
    let secret = v["secret"].as_str().expect("secret").to_owned();
    assert!(secret.len() >= 22, "at least 128 bits: {secret}");
    secret
}

/// `POST /{tenant}/admin/api_clients/{name}` `{"secret"}`, no
/// Authorization header.
async fn exchange(addr: &str, tenant: &str, name: &str, secret: &str) -> Resp {
    post_json(
        addr,
        &format!("/{tenant}/admin/api_clients/{name}"),
        None,
        &json!({ "secret": secret }),
    )
    .await
}

/// The exchange answers exactly `{"token"}`; the token.
async fn client_token(addr: &str, tenant: &str, name: &str, secret: &str) -> String {
    let v = exchange(addr, tenant, name, secret).await.expect(200);
    assert_eq!(v.as_object().unwrap().len(), 1, "exactly token: {v}");
    v["token"].as_str().expect("token").to_owned()
}

fn as_user(name: &str, token: String) -> User {
    User {
        name: name.into(),
        password: String::new(),
        id: String::new(),
        token,
    }
}

/// Every file under `dir`, recursively, whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p);
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_client_token_is_staff_of_its_workspace_only_and_not_a_participant() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let secret = add_client(
        &addr,
        &c.admin.token,
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr.bridge_1",
            "display_name": "EHR Bridge"}),
    )
    .await;
    let token = client_token(&addr, TENANT, "ehr.bridge_1", &secret).await;
    let bot = as_user("ehr", token.clone());
    // Inbound on the patient's behalf, outbound as itself.
    let inb = post_json(
        &addr,
        &path("patients", &c.pat, "/inbound"),
        Some(&token),
        &json!({"message": "lab results are in"}),
    )
    .await
    .expect(200);
    assert_eq!(inb["sender"]["clientType"], "PATIENT");
    assert_eq!(inb["sender"]["id"], json!(c.pat.id));
    let out = post_json(
        &addr,
        &path("patients", &c.pat, "/outbound"),
        Some(&token),
        &json!({"message": "please call the clinic"}),
    )
    .await
    .expect(200);
    assert_eq!(out["sender"]["clientType"], "USER");
    assert_eq!(out["sender"]["titleName"], "EHR Bridge");
    let bot_id = out["sender"]["id"].as_str().unwrap().to_owned();
    // History and search, as staff; the patient and the nurse see its
    // messages too.
    for who in [&bot.token, &c.pat.token, &c.nurse.token] {
        let h = get_as(&addr, &path("patient", &c.pat, ""), who)
            .await
            .expect(200);
        assert_eq!(page_ids(&h), [eid(&out), eid(&inb)]);
    }
    let s = get_as(
        &addr,
        &path("patients", &c.pat, "/search?query=clinic"),
        &token,
    )
    .await
    .expect(200);
    assert_eq!(page_ids(&s), [eid(&out)]);
    // Nothing of another workspace: the same 404 as a patient that does
    // not exist, under either spelling.
    for seg in ["patient", "patients"] {
        for rest in ["", "/search?query=x"] {
            get_as(&addr, &path(seg, &c.epat, rest), &token)
                .await
                .expect_error(404, "NOT_FOUND");
            get_as(
                &addr,
                &format!("/acme/north/{seg}/{}/chat{rest}", c.epat.id),
                &token,
            )
            .await
            .expect_error(404, "NOT_FOUND");
        }
        post_json(
            &addr,
            &format!("/acme/north/{seg}/{}/chat/outbound", c.epat.id),
            Some(&token),
            &json!({"message": "x"}),
        )
        .await
        .expect_error(404, "NOT_FOUND");
    }
    // Not a participant: room_info of the care-team chat lists the patient
    // and the clinic's staff only; no one can reach it by id.
    let mut ws = Ws::auth(&addr, &c.nurse.token).await;
    post_json(
        &addr,
        &path("patient", &c.pat, "/inbound"),
        Some(&c.pat.token),
        &json!({"message": "which room?"}),
    )
    .await
    .expect(200);
    let pushed = ws.recv_message(WS_TIMEOUT).await;
    let room = pushed["room"].as_str().unwrap().to_owned();
    let mut want = vec![c.pat.id.clone(), c.nurse.id.clone(), c.doc.id.clone()];
    want.sort();
    assert_eq!(
        occupants(&room_info(&addr, &c.nurse.token, &room).await),
        want
    );
    post_json(
        &addr,
        "/chat/create_dm",
        Some(&c.nurse.token),
        &json!({"other": bot_id}),
    )
    .await
    .expect_error(404, "NOT_FOUND");
    // It cannot log in, by its name or any spelling of its user.
    for username in [
        "ehr.bridge_1",
        &format!("\u{1f}api-client\u{1f}{TENANT}\u{1f}ehr.bridge_1"),
    ] {
        post_json(
            &addr,
            "/auth/login",
            None,
            &json!({"username": username, "password": secret}),
        )
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    }
    // The secret is stored only as a hash and never logged: no file of the
    // daemon (store, logs) holds it.
    let root = c.srv.data_dir().parent().unwrap().to_owned();
    assert_eq!(
        files_containing(&root, secret.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_client_bad_input_gets_clear_errors_and_unknown_equals_wrong_secret() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let ok = json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr"});
    let secret = add_client(&addr, &c.admin.token, ok.clone()).await;
    // Creating: only an admin; the name's rules; a taken name.
    post_json(&addr, "/admin/api_clients", Some(&c.nurse.token), &ok)
        .await
        .expect_error(403, "FORBIDDEN");
    post_json(&addr, "/admin/api_clients", None, &ok)
        .await
        .expect_error(401, "UNAUTHENTICATED");
    post_json(&addr, "/admin/api_clients", Some(&c.admin.token), &ok)
        .await
        .expect_error(409, "CONFLICT");
    for bad in [
        json!({"tenant": TENANT, "instance": INSTANCE, "name": ""}),
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "a b"}),
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "x".repeat(65)}),
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "é"}),
        json!({"tenant": TENANT, "name": "ehr2"}),
        json!({"tenant": "", "instance": INSTANCE, "name": "ehr2"}),
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr2", "rotate": "yes"}),
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr2", "display_name": ""}),
    ] {
        post_json(&addr, "/admin/api_clients", Some(&c.admin.token), &bad)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    post_raw(
        &addr,
        "/admin/api_clients",
        Some(&c.admin.token),
        "{not json",
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    // The exchange: an unknown client and a wrong secret are one answer.
    let wrong = exchange(&addr, TENANT, "ehr", "not-the-secret").await;
    let unknown = exchange(&addr, TENANT, "nobody", &secret).await;
    let other_tenant = exchange(&addr, "acme", "ehr", &secret).await;
    for r in [&wrong, &unknown, &other_tenant] {
        r.expect_error(401, "INVALID_CREDENTIALS");
    }
    assert_eq!(wrong.json(), unknown.json());
    exchange(&addr, TENANT, "ehr", "")
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    // A malformed name or body is a 400.
    exchange(&addr, TENANT, "a%20b", &secret)
        .await
        .expect_error(400, "BAD_REQUEST");
    for body in ["{}", "{\"secret\": 5}", "[]", "nope"] {
        post_raw(
            &addr,
            &format!("/{TENANT}/admin/api_clients/ehr"),
            None,
            body,
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    }
    // Another method on the exchange's path is no endpoint.
    get_as(&addr, &format!("/{TENANT}/admin/api_clients/ehr"), "x")
        .await
        .expect_error(404, "NOT_FOUND");
    client_token(&addr, TENANT, "ehr", &secret).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_a_secret_refuses_its_old_token_at_once_and_closes_its_sockets() {
    let c = Clinic::new().await;
    let addr = c.addr();
    let body = json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr"});
    let secret = add_client(&addr, &c.admin.token, body.clone()).await;
    let old = client_token(&addr, TENANT, "ehr", &secret).await;
    let old2 = client_token(&addr, TENANT, "ehr", &secret).await;
    let history = path("patients", &c.pat, "");
    get_as(&addr, &history, &old).await.expect(200);
    // Its sockets: two dialects, both told of the patient chat's messages.
    let mut rooms_ws = Ws::auth(&addr, &old).await;
    let typed_url = format!("ws://{addr}/ws?token={}", enc(&old2));
    let (mut typed_ws, _) = tokio::time::timeout(
        WS_TIMEOUT,
        tokio_tungstenite::connect_async(typed_url.as_str()),
    )
    .await
    .expect("typed handshake in time")
    .expect("typed handshake");
    post_json(
        &addr,
        &path("patient", &c.pat, "/inbound"),
        Some(&c.pat.token),
        &json!({"message": "live to the bridge"}),
    )
    .await
    .expect(200);
    let m = rooms_ws.recv_message(WS_TIMEOUT).await;
    assert_eq!(m["message"], "live to the bridge");
    // Rotate: the next request with either old token is refused.
    let mut rotated = body.clone();
    rotated["rotate"] = json!(true);
    let fresh = add_client(&addr, &c.admin.token, rotated.clone()).await;
    assert_ne!(fresh, secret);
    for t in [&old, &old2] {
        get_as(&addr, &history, t)
            .await
            .expect_error(401, "UNAUTHENTICATED");
    }
    rooms_ws.expect_closed(WS_TIMEOUT).await;
    let closed = tokio::time::timeout(WS_TIMEOUT, async {
        use futures_util::StreamExt;
        loop {
            match typed_ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the typed socket was not closed");
    // The old secret no longer exchanges; the new one does.
    exchange(&addr, TENANT, "ehr", &secret)
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    let new = client_token(&addr, TENANT, "ehr", &fresh).await;
    get_as(&addr, &history, &new).await.expect(200);
    // The CLI rotates too, while the daemon runs.
    let out = c.srv.cli(
        &[
            "api-client",
            "add",
            "ehr",
            "--tenant",
            TENANT,
            "--instance",
            INSTANCE,
            "--rotate",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_cli = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(by_cli.len() >= 22 && by_cli != fresh);
    get_as(&addr, &history, &new)
        .await
        .expect_error(401, "UNAUTHENTICATED");
    client_token(&addr, TENANT, "ehr", &by_cli).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exchange_is_throttled_like_logins_after_failures_only() {
    let c = Clinic::with_flags(&["--login-fails-per-account", "3"]).await;
    let addr = c.addr();
    let secret = add_client(
        &addr,
        &c.admin.token,
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "ehr"}),
    )
    .await;
    // Successes are never throttled.
    for _ in 0..20 {
        client_token(&addr, TENANT, "ehr", &secret).await;
    }
    for _ in 0..3 {
        exchange(&addr, TENANT, "ehr", "wrong")
            .await
            .expect_error(401, "INVALID_CREDENTIALS");
    }
    // Now even the right secret waits.
    let r = exchange(&addr, TENANT, "ehr", &secret).await;
    r.expect_error(429, "RATE_LIMITED");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    // Per client: another client of the tenant is not slowed.
    let other = add_client(
        &addr,
        &c.admin.token,
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "other"}),
    )
    .await;
    client_token(&addr, TENANT, "other", &other).await;
    // An unknown client's failures are counted under its name as well.
    for _ in 0..3 {
        exchange(&addr, TENANT, "ghost", "x")
            .await
            .expect_error(401, "INVALID_CREDENTIALS");
    }
    exchange(&addr, TENANT, "ghost", "x")
        .await
        .expect_error(429, "RATE_LIMITED");
    // After the wait, the right secret is let through and resets it.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    client_token(&addr, TENANT, "ehr", &secret).await;
    exchange(&addr, TENANT, "ehr", "wrong")
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
}

#[tokio::test(flavor = "multi_thread")]
async fn parlor_api_client_add_works_with_the_daemon_stopped_and_running() {
    let mut srv = Server::new();
    let add = |srv: &Server, name: &str, extra: &[&str]| {
        let mut args = vec![
            "api-client",
            "add",
            name,
            "--tenant",
            TENANT,
            "--instance",
            INSTANCE,
        ];
        args.extend_from_slice(extra);
        srv.cli(&args, None)
    };
    let out = add(&srv, "ehr", &["--display-name", "EHR Bridge"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.len() >= 22, "{secret}");
    let bad = add(&srv, "bad name", &[]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("A-Z a-z 0-9 . _ -"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    srv.user_add_in("pat", "patient", "pw-pat", TENANT, INSTANCE);
    srv.start();
    let addr = srv.addr();
    let token = client_token(&addr, TENANT, "ehr", &secret).await;
    let (_, pat) = login(&addr, "pat", "pw-pat").await;
    let m = post_json(
        &addr,
        &format!("/{TENANT}/{INSTANCE}/patients/{pat}/chat/outbound"),
        Some(&token),
        &json!({"message": "hello from the bridge"}),
    )
    .await
    .expect(200);
    assert_eq!(m["sender"]["titleName"], "EHR Bridge");
    // While it runs: a taken name is refused, a second client is made.
    let dup = add(&srv, "ehr", &[]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists"));
    let out = add(&srv, "reminders", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s2 = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    client_token(&addr, TENANT, "reminders", &s2).await;
    // It survives a restart.
    srv.restart();
    client_token(&srv.addr(), TENANT, "ehr", &secret).await;
}

// ---------------------------------------------------------------------------
// Welkin's real SDK
// ---------------------------------------------------------------------------

/// Runs `cmd` to its end, at most `limit`; its output, or why not.
fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

fn assert_ran(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A venv under target/ with tests/welkin-requirements.txt installed (made
/// once; remade when the requirements change). `None` when there is no
/// python3 on this machine.
fn welkin_venv() -> Option<std::path::PathBuf> {
    let has_python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_python {
        return None;
    }
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let reqs = manifest.join("tests/welkin-requirements.txt");
    let pinned = std::fs::read_to_string(&reqs).expect("tests/welkin-requirements.txt");
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("welkin-venv");
    let stamp = venv.join("parlor-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pinned.as_str()) {
        return Some(venv);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let mut mk = std::process::Command::new("python3");
    mk.args(["-m", "venv"]).arg(&venv);
    assert_ran(
        &run_bounded(mk, Duration::from_secs(120)),
        "python3 -m venv",
    );
    let mut pip = std::process::Command::new(venv.join("bin/python"));
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "-r",
    ])
    .arg(&reqs);
    assert_ran(&run_bounded(pip, Duration::from_secs(600)), "pip install");
    std::fs::write(&stamp, pinned).expect("write the venv's stamp");
    Some(venv)
}

/// Welkin's Python SDK, unchanged but for its base URL, exchanges an API
/// client's secret for a token, posts inbound messages, walks the whole
/// history (also with archived messages), searches with a content page
/// size across pages, and opens hits' pages through the history endpoint
/// (tests/welkin_sdk.py).
#[tokio::test(flavor = "multi_thread")]
async fn the_real_welkin_sdk_works_unchanged_against_parlor() {
    let Some(venv) = welkin_venv() else {
        eprintln!(
            "SKIPPED the_real_welkin_sdk_works_unchanged_against_parlor: no python3 on this machine"
        );
        return;
    };
    let c = Clinic::new().await;
    let secret = add_client(
        &c.addr(),
        &c.admin.token,
        json!({"tenant": TENANT, "instance": INSTANCE, "name": "welkin-sdk"}),
    )
    .await;
    let cache = tempfile::tempdir().expect("a TMPDIR for the SDK's token cache");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/welkin_sdk.py");
    let mut py = std::process::Command::new(venv.join("bin/python"));
    py.arg(&script)
        .env("TMPDIR", cache.path())
        .env("PARLOR_ADDR", c.addr())
        .env("WELKIN_TENANT", TENANT)
        .env("WELKIN_INSTANCE", INSTANCE)
        .env("WELKIN_CLIENT", "welkin-sdk")
        .env("WELKIN_SECRET", &secret)
        .env("WELKIN_PATIENT", &c.pat.id);
    let out = tokio::task::spawn_blocking(move || run_bounded(py, Duration::from_secs(300)))
        .await
        .unwrap();
    assert_ran(&out, "tests/welkin_sdk.py");
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("{said}");
    assert!(said.lines().any(|l| l == "welkin sdk: OK"), "{said}");
    // What the SDK posted is there for the other dialects too: the nurse
    // sees the 42 unarchived messages.
    let mut seen = 0;
    let mut next = Some(String::new());
    while let Some(t) = next {
        let q = if t.is_empty() {
            "?pageSize=100".to_owned()
        } else {
            format!("?pageToken={}", enc(&t))
        };
        let p = get_as(&c.addr(), &path("patient", &c.pat, &q), &c.nurse.token)
            .await
            .expect(200);
        seen += page_ids(&p).len();
        next = token_of(&p, "nextPageToken");
    }
    assert_eq!(seen, 42);
}
