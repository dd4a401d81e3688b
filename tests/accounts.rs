//! Black-box tests of API.md §1: accounts, tokens, the admin API, the CLI,
//! error bodies and request limits.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn healthz_returns_200_when_serving() {
    let srv = Server::started();
    let r = srv.get("/healthz").await;
    assert_eq!(r.status, 200, "healthz body: {:?}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_success_returns_token_and_string_user_id() {
    let mut srv = Server::new();
    let id = srv.user_add("alice", "patient", "correct horse");
    srv.start();
    let r = srv
        .post_json(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": "correct horse"}),
        )
        .await;
    let v = r.expect(200);
    assert!(
        v["token"].as_str().is_some_and(|t| !t.is_empty()),
        "token: {v}"
    );
    assert_eq!(
        v["user_id"],
        json!(id),
        "user_id must be the id as a string: {v}"
    );

    // Two logins give two distinct tokens, both usable.
    let (t1, _) = srv.login("alice", "correct horse").await;
    let (t2, _) = srv.login("alice", "correct horse").await;
    assert_ne!(t1, t2, "tokens must be fresh per login");
    for t in [&t1, &t2] {
        srv.post_json("/chat/retrieve", Some(t), &json!({"after": 0}))
            .await
            .expect(200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_wrong_password_and_unknown_user_get_identical_401() {
    let w = World::new().await;
    let wrong = w
        .srv
        .post_json(
            "/auth/login",
            None,
            &json!({"username": "alice", "password": "nope"}),
        )
        .await;
    wrong.expect_error(401, "INVALID_CREDENTIALS");
    let unknown = w
        .srv
        .post_json(
            "/auth/login",
            None,
            &json!({"username": "nobody", "password": "nope"}),
        )
        .await;
    unknown.expect_error(401, "INVALID_CREDENTIALS");
    assert_eq!(
        wrong.body, unknown.body,
        "wrong password and unknown user must answer the same"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_returns_204_and_token_then_unauthenticated() {
    let w = World::new().await;
    let (tok, _) = w.srv.login("alice", &w.alice.password).await;
    w.srv
        .post_json("/chat/retrieve", Some(&tok), &json!({"after": 0}))
        .await
        .expect(200);

    let r = w
        .srv
        .post_json("/auth/logout", Some(&tok), &json!({}))
        .await;
    assert_eq!(r.status, 204, "logout body: {:?}", r.text());

    w.srv
        .post_json("/chat/retrieve", Some(&tok), &json!({"after": 0}))
        .await
        .expect_error(401, "UNAUTHENTICATED");
    w.srv
        .post_json("/chat/create_dm", Some(&tok), &json!({"other": w.bob.id}))
        .await
        .expect_error(401, "UNAUTHENTICATED");
    w.srv
        .post_json("/auth/logout", Some(&tok), &json!({}))
        .await
        .expect_error(401, "UNAUTHENTICATED");

    // Alice's other token (from World) is unaffected.
    w.srv
        .post_json("/chat/retrieve", Some(&w.alice.token), &json!({"after": 0}))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_garbage_bearer_is_unauthenticated() {
    let w = World::new().await;
    let addr = w.addr();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("/chat/retrieve", json!({"after": 0})),
        ("/chat/create_dm", json!({"other": w.bob.id})),
        ("/chat/room_info", json!({"room_id": "1"})),
        (
            "/admin/users",
            json!({"username": "x1", "password": "p", "role": "patient"}),
        ),
        ("/admin/rooms", json!({"members": [w.alice.id]})),
        ("/auth/logout", json!({})),
    ];
    for (path, body) in &cases {
        let raw = serde_json::to_vec(body).unwrap();
        // Missing header.
        post_raw(&addr, path, None, raw.clone())
            .await
            .expect_error(401, "UNAUTHENTICATED");
        // Garbage token.
        post_raw(&addr, path, Some("not-a-real-token"), raw.clone())
            .await
            .expect_error(401, "UNAUTHENTICATED");
        // Empty bearer.
        post_raw(&addr, path, Some(""), raw.clone())
            .await
            .expect_error(401, "UNAUTHENTICATED");
        // A valid token under another scheme is not a bearer token.
        let basic = format!("Basic {}", w.admin.token);
        http(
            &addr,
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", basic.as_str()),
            ],
            raw.clone(),
        )
        .await
        .expect_error(401, "UNAUTHENTICATED");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_users_creates_user_that_can_log_in() {
    let w = World::new().await;
    let r = w
        .srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &json!({"username": "dave", "password": "dave-pw", "role": "staff", "display_name": "Dr Dave"}),
        )
        .await;
    let v = r.expect(201);
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id must be a string: {v}"))
        .to_string();
    id.parse::<u64>()
        .unwrap_or_else(|_| panic!("id not decimal: {v}"));
    let (_, uid) = w.srv.login("dave", "dave-pw").await;
    assert_eq!(uid, id);

    // In another workspace too.
    let v = w
        .srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &json!({"username": "frank@clinic2", "password": "f-pw", "role": "patient",
                    "tenant": "clinic2", "instance": "main"}),
        )
        .await
        .expect(201);
    let fid = v["id"].as_str().expect("id string").to_string();
    assert_ne!(fid, id);
    let (_, uid) = w.srv.login("frank@clinic2", "f-pw").await;
    assert_eq!(uid, fid);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_users_duplicate_username_conflicts_across_workspaces() {
    let w = World::new().await;
    let create = |name: &str, tenant: &str| json!({"username": name, "password": "pw", "role": "patient", "tenant": tenant, "instance": "i"});
    // Existing default-workspace user, asked for in another workspace.
    w.srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &create("alice", "elsewhere"),
        )
        .await
        .expect_error(409, "CONFLICT");
    // Same name twice through the API.
    w.srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &json!({"username": "gina", "password": "pw", "role": "patient"}),
        )
        .await
        .expect(201);
    w.srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &json!({"username": "gina", "password": "pw2", "role": "staff"}),
        )
        .await
        .expect_error(409, "CONFLICT");
    // A user of acme/north by name, recreated in the default workspace.
    w.srv
        .post_json(
            "/admin/users",
            Some(&w.admin.token),
            &json!({"username": "eve@acme", "password": "pw", "role": "patient"}),
        )
        .await
        .expect_error(409, "CONFLICT");
    // The original password still works (the conflict changed nothing).
    w.srv.login("gina", "pw").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints_require_admin_role() {
    let w = World::new().await;
    for u in [&w.alice, &w.bob] {
        w.srv
            .post_json(
                "/admin/users",
                Some(&u.token),
                &json!({"username": format!("by-{}", u.name), "password": "pw", "role": "patient"}),
            )
            .await
            .expect_error(403, "FORBIDDEN");
        w.srv
            .post_json(
                "/admin/rooms",
                Some(&u.token),
                &json!({"name": "x", "members": [w.alice.id, w.bob.id]}),
            )
            .await
            .expect_error(403, "FORBIDDEN");
    }
    // Nothing was created by the refused request.
    let r = w
        .srv
        .post_json(
            "/auth/login",
            None,
            &json!({"username": "by-alice", "password": "pw"}),
        )
        .await;
    r.expect_error(401, "INVALID_CREDENTIALS");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_users_bad_role_or_missing_field_is_bad_request() {
    let w = World::new().await;
    let t = Some(w.admin.token.as_str());
    w.srv
        .post_json(
            "/admin/users",
            t,
            &json!({"username": "h1", "password": "pw", "role": "superuser"}),
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json(
            "/admin/users",
            t,
            &json!({"username": "h2", "password": "pw"}),
        )
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json(
            "/admin/users",
            t,
            &json!({"password": "pw", "role": "patient"}),
        )
        .await
        .expect_error(400, "BAD_REQUEST");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_users_username_and_display_name_must_be_1_to_64_characters() {
    let w = World::new().await;
    let t = Some(w.admin.token.as_str());
    let user = |name: String| json!({"username": name, "password": "pw", "role": "patient"});
    w.srv
        .post_json("/admin/users", t, &user(String::new()))
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json("/admin/users", t, &user("a".repeat(65)))
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json("/admin/users", t, &user("b".repeat(64)))
        .await
        .expect(201);

    // Display names count characters, not bytes: 64 × 'é' (128 bytes) is fine.
    let named = |name: &str, dn: String| json!({"username": name, "password": "pw", "role": "patient", "display_name": dn});
    w.srv
        .post_json("/admin/users", t, &named("dn0", String::new()))
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json("/admin/users", t, &named("dn65", "é".repeat(65)))
        .await
        .expect_error(400, "BAD_REQUEST");
    w.srv
        .post_json("/admin/users", t, &named("dn64", "é".repeat(64)))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rooms_creates_named_group_room() {
    let w = World::new().await;
    let room = admin_room(
        &w.addr(),
        &w.admin.token,
        Some("Ward 7"),
        &[&w.alice.id, &w.bob.id, &w.carol.id],
    )
    .await;
    let v = w
        .srv
        .post_json(
            "/chat/room_info",
            Some(&w.bob.token),
            &json!({"room_id": room}),
        )
        .await
        .expect(200);
    assert_eq!(v["room_name"], json!("Ward 7"), "{v}");
    let mut occ: Vec<String> = v["occupants"]
        .as_array()
        .unwrap_or_else(|| panic!("occupants must be an array: {v}"))
        .iter()
        .map(|o| {
            o.as_str()
                .unwrap_or_else(|| panic!("occupant ids are strings: {v}"))
                .to_string()
        })
        .collect();
    occ.sort();
    let mut want = vec![w.alice.id.clone(), w.bob.id.clone(), w.carol.id.clone()];
    want.sort();
    assert_eq!(occ, want);

    // Without a name.
    let room2 = admin_room(&w.addr(), &w.admin.token, None, &[&w.alice.id, &w.bob.id]).await;
    assert_ne!(room, room2);
    let v = w
        .srv
        .post_json(
            "/chat/room_info",
            Some(&w.alice.token),
            &json!({"room_id": room2}),
        )
        .await
        .expect(200);
    assert_eq!(v["room_name"], json!(null), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rooms_unknown_member_is_not_found() {
    let w = World::new().await;
    w.srv
        .post_json(
            "/admin/rooms",
            Some(&w.admin.token),
            &json!({"name": "x", "members": [w.alice.id, "987654321"]}),
        )
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_rooms_cross_workspace_members_rejected() {
    let w = World::new().await;
    let r = w
        .srv
        .post_json(
            "/admin/rooms",
            Some(&w.admin.token),
            &json!({"name": "mixed", "members": [w.alice.id, w.eve.id]}),
        )
        .await;
    assert!(
        r.status == 400 || r.status == 404,
        "members from two workspaces must be refused with 400 or 404, got {} {:?}",
        r.status,
        r.text()
    );
    let code = if r.status == 400 {
        "BAD_REQUEST"
    } else {
        "NOT_FOUND"
    };
    r.expect_error(r.status, code);
    // And no room appeared for alice.
    assert!(retrieve(&w.addr(), &w.alice.token, 0, None)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404_json() {
    let w = World::new().await;
    w.srv
        .get("/no/such/path")
        .await
        .expect_error(404, "NOT_FOUND");
    w.srv
        .post_json("/chat/no_such_endpoint", Some(&w.alice.token), &json!({}))
        .await
        .expect_error(404, "NOT_FOUND");
    w.srv
        .post_json("/nope", None, &json!({}))
        .await
        .expect_error(404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_bad_request() {
    let w = World::new().await;
    let addr = w.addr();
    post_raw(&addr, "/auth/login", None, "{\"username\":")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, "/auth/login", None, "not json at all")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, "/chat/retrieve", Some(&w.alice.token), "{after: 0}")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, "/chat/create_dm", Some(&w.alice.token), "[1,2")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, "/chat/room_info", Some(&w.alice.token), "")
        .await
        .expect_error(400, "BAD_REQUEST");
    post_raw(
        &addr,
        "/admin/users",
        Some(&w.admin.token),
        "{\"username\":\"x\",",
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    post_raw(&addr, "/admin/rooms", Some(&w.admin.token), "\u{1}\u{2}")
        .await
        .expect_error(400, "BAD_REQUEST");
}

/// API.md §1: request bodies up to 128 KiB are read.
#[tokio::test(flavor = "multi_thread")]
async fn body_of_exactly_128_kib_is_read() {
    let w = World::new().await;
    let mut body = String::from("{\"after\":0");
    body.push_str(&" ".repeat(128 * 1024 - body.len() - 1));
    body.push('}');
    assert_eq!(body.len(), 128 * 1024);
    let r = post_raw(&w.addr(), "/chat/retrieve", Some(&w.alice.token), body).await;
    let v = r.expect(200);
    assert!(v["messages"].is_array(), "{v}");
}

/// API.md §1: the body cap is at most 1 MiB; above it `413 TOO_LARGE`.
/// Sent over raw TCP (both framings) because the server may answer before
/// reading the whole body.
#[tokio::test(flavor = "multi_thread")]
async fn body_over_1_mib_is_413() {
    let w = World::new().await;
    let addr = w.addr();
    let n = 1024 * 1024 + 1;
    let mut body = String::from("{\"username\":\"alice\",\"password\":\"x\"");
    body.push_str(&" ".repeat(n - body.len() - 1));
    body.push('}');
    assert_eq!(body.len(), n);

    // Content-Length framing.
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
    );
    let raw = raw_exchange(&addr, head, body.clone().into_bytes()).await;
    let (status, _head, rbody) = parse_raw_response(&raw);
    assert_eq!(
        status,
        413,
        "Content-Length body: {:?}",
        String::from_utf8_lossy(&rbody)
    );
    let v: serde_json::Value = serde_json::from_slice(&rbody).unwrap_or_else(|e| {
        panic!(
            "413 body not JSON ({e}): {:?}",
            String::from_utf8_lossy(&rbody)
        )
    });
    assert_error_body(&v, "TOO_LARGE");

    // Chunked framing.
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for c in body.as_bytes().chunks(32 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(&addr, head, chunked).await;
    let (status, _head, rbody) = parse_raw_response(&raw);
    assert_eq!(
        status,
        413,
        "chunked body: {:?}",
        String::from_utf8_lossy(&rbody)
    );

    // The daemon is still fine.
    w.srv.get("/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_throttled_after_ten_consecutive_failures() {
    let w = World::new().await;
    let mut failures = 0;
    let mut throttled = None;
    for _ in 0..11 {
        let r = w
            .srv
            .post_json(
                "/auth/login",
                None,
                &json!({"username": "alice", "password": "wrong"}),
            )
            .await;
        match r.status {
            401 => {
                r.expect_error(401, "INVALID_CREDENTIALS");
                failures += 1;
            }
            429 => {
                throttled = Some(r);
                break;
            }
            s => panic!("unexpected status {s} for a failed login: {:?}", r.text()),
        }
    }
    let r = throttled.unwrap_or_else(|| panic!("no 429 after {failures} failed logins in a row"));
    assert!(
        failures <= 10,
        "throttling must start after at most 10 failures"
    );
    r.expect_error(429, "RATE_LIMITED");
    let ra = r.header("retry-after").expect("429 must carry Retry-After");
    assert!(!ra.trim().is_empty(), "empty Retry-After");

    // Throttling is per account (and per address only after ≥ 100 failures):
    // another account on the same loopback address logs in fine.
    w.srv.login("bob", &w.bob.password).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn successful_logins_are_never_throttled() {
    let w = World::new().await;
    let addr = w.addr();
    let pw = w.alice.password.clone();
    for round in 0..3 {
        let results = futures_util::future::join_all((0..10).map(|_| {
            let addr = addr.clone();
            let pw = pw.clone();
            async move {
                post_json(
                    &addr,
                    "/auth/login",
                    None,
                    &json!({"username": "alice", "password": pw}),
                )
                .await
            }
        }))
        .await;
        for r in results {
            assert_eq!(
                r.status,
                200,
                "round {round}: successful login refused: {:?}",
                r.text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_issue_cli_token_works_stopped_and_running() {
    let mut srv = Server::new();
    srv.user_add("alice", "patient", "pw");
    let offline = srv.token_issue("alice");
    srv.start();
    srv.post_json("/chat/retrieve", Some(&offline), &json!({"after": 0}))
        .await
        .expect(200);

    let online = srv.token_issue("alice");
    assert_ne!(online, offline);
    srv.post_json("/chat/retrieve", Some(&online), &json!({"after": 0}))
        .await
        .expect(200);
    let _ws = srv.ws(&online).await;

    // Unknown user → non-zero exit.
    let out = srv.cli(&["token", "issue", "nobody"], None);
    assert!(
        !out.status.success(),
        "token issue for an unknown user must fail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn user_add_cli_while_daemon_runs_then_login() {
    let mut srv = Server::new();
    srv.user_add("admin", "admin", "admin-pw");
    srv.start();
    let id = srv.user_add("dave", "staff", "dave pw with spaces");
    let (_, uid) = srv.login("dave", "dave pw with spaces").await;
    assert_eq!(uid, id);

    let id2 = srv.try_user_add(
        "erin@acme",
        "patient",
        "erin-pw",
        &[
            "--tenant",
            "acme",
            "--instance",
            "north",
            "--display-name",
            "Erin",
        ],
    );
    assert!(
        id2.status.success(),
        "user add with workspace failed: {:?}",
        String::from_utf8_lossy(&id2.stderr)
    );
    let (_, _) = srv.login("erin@acme", "erin-pw").await;

    // Existing username → non-zero exit, with the daemon running…
    let dup = srv.try_user_add("dave", "patient", "other", &[]);
    assert!(
        !dup.status.success(),
        "duplicate `user add` must fail while running"
    );
    srv.login("dave", "dave pw with spaces").await;
    // …and stopped.
    srv.kill9();
    let dup = srv.try_user_add("dave", "patient", "other", &[]);
    assert!(
        !dup.status.success(),
        "duplicate `user add` must fail while stopped"
    );

    // The admin API sees CLI-created users.
    srv.start();
    let (admin_tok, _) = srv.login("admin", "admin-pw").await;
    srv.post_json(
        "/admin/users",
        Some(&admin_tok),
        &json!({"username": "dave", "password": "x", "role": "patient"}),
    )
    .await
    .expect_error(409, "CONFLICT");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exits_zero_on_sigterm_and_keeps_data() {
    let mut srv = Server::new();
    let id = srv.user_add("alice", "patient", "pw");
    srv.start();
    srv.login("alice", "pw").await;
    let code = srv.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "SIGTERM must exit 0");
    srv.start();
    let (_, uid) = srv.login("alice", "pw").await;
    assert_eq!(uid, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_reads_listen_and_data_dir_from_environment() {
    let mut srv = Server::new();
    let id = srv.user_add("alice", "patient", "pw");
    srv.start_via_env();
    let (_, uid) = srv.login("alice", "pw").await;
    assert_eq!(uid, id, "PARLOR_DATA_DIR must select the data directory");
}

#[test]
fn listen_without_a_host_is_refused_before_the_data_dir_is_made() {
    let srv = Server::new();
    std::fs::remove_dir(srv.data_dir()).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap().to_string();
    for (listen, hint) in [(":18411", "127.0.0.1:18411"), (in_use.as_str(), "")] {
        let out = srv.cli(&["serve", "--listen", listen], None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "serve --listen {listen} succeeded");
        assert!(!stdout.contains("listening on"), "{stdout}");
        assert!(
            stderr.contains(&format!("could not listen on '{listen}'")) && stderr.contains(hint),
            "{stderr}"
        );
        assert!(
            !srv.data_dir().exists(),
            "--listen {listen}: the data directory was made before the address was checked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_dir_is_taken_before_or_after_the_subcommand() {
    let mut srv = Server::new();
    let dir = srv.data_dir().to_str().unwrap().to_owned();
    // Elsewhere, so that the default ./data is not the server's directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let before = |srv: &Server, args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--data-dir", dir.as_str()];
        all.extend_from_slice(args);
        srv.cli_command(&all, stdin, |c| {
            c.current_dir(elsewhere.path());
        })
    };
    let out = before(
        &srv,
        &["user", "add", "ann", "--role", "staff"],
        Some("pw-ann\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = before(&srv, &["token", "issue", "ann"], None);
    assert!(out.status.success(), "{out:?}");
    let stopped = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        !elsewhere.path().join("data").exists(),
        "the default ./data was used"
    );

    srv.start();
    let out = before(&srv, &["token", "issue", "ann"], None);
    assert!(out.status.success(), "{out:?}");
    let running = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    for token in [&stopped, &running] {
        srv.post_json("/chat/retrieve", Some(token), &json!({"after": 0}))
            .await
            .expect(200);
    }
    let (_, uid) = srv.login("ann", "pw-ann").await;
    assert_eq!(uid, id);

    // serve's flags are not dropped silently before another subcommand (or
    // before `serve`); their variables are not flags, so they never clash.
    for (args, says) in [
        (
            vec!["--listen", "127.0.0.1:0", "token", "issue", "ann"],
            "'token'",
        ),
        (vec!["--msg-rate", "5", "serve"], "after 'serve'"),
    ] {
        let out = before(&srv, &args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(&format!("'--{}'", &args[0][2..])),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
    let out = srv.cli_command(&["token", "issue", "ann", "--data-dir", &dir], None, |c| {
        c.env("PARLOR_LISTEN", "127.0.0.1:0")
            .env("PARLOR_MSG_RATE", "5");
    });
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn cli_subcommands_log_only_warnings_unless_rust_log_says_otherwise() {
    let srv = Server::new();
    let dir = srv.data_dir().to_str().unwrap().to_owned();
    // The daemon is stopped: the CLI opens the store itself, which logs at
    // info (shown when RUST_LOG asks for it: the check can fail).
    let run = |args: &[&str], stdin: Option<&str>, rust_log: Option<&str>| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--data-dir", &dir]);
        let out = srv.cli_command(&all, stdin, |c| {
            match rust_log {
                Some(f) => c.env("RUST_LOG", f),
                None => c.env_remove("RUST_LOG"),
            };
        });
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let quiet = run(
        &["user", "add", "ann", "--role", "staff"],
        Some("pw\n"),
        None,
    );
    assert!(!quiet.contains("INFO"), "{quiet}");
    let loud = run(&["token", "issue", "ann"], None, Some("info"));
    assert!(
        loud.contains("INFO"),
        "no info lines with RUST_LOG=info: {loud}"
    );
    let quiet = run(&["token", "issue", "ann"], None, None);
    assert!(!quiet.contains("INFO"), "{quiet}");
}

async fn failed_login_via(addr: &str, forwarded_for: &str, user: &str) -> u16 {
    let body = json!({"username": user, "password": "wrong"}).to_string();
    http(
        addr,
        "POST",
        "/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", forwarded_for),
        ],
        body,
    )
    .await
    .status
}

/// The per-address throttle counts the client a trusted proxy names, not
/// the proxy: one abuser behind the proxy does not lock out the others,
/// and prepending a fake address does not escape the count.
#[tokio::test(flavor = "multi_thread")]
async fn login_throttle_per_client_behind_a_trusted_proxy() {
    let w = World::with_flags(&[
        "--trusted-proxies",
        "127.0.0.1",
        "--login-fails-per-addr",
        "3",
    ])
    .await;
    let addr = w.addr();
    // Different accounts, so only the address throttle can kick in.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(failed_login_via(&addr, "203.0.113.1", user).await, 401);
    }
    assert_eq!(failed_login_via(&addr, "203.0.113.1", "u4").await, 429);
    assert_eq!(
        failed_login_via(&addr, "198.51.100.7, 203.0.113.1", "u5").await,
        429,
        "a forged left-most address does not reset the count"
    );
    // Another client behind the same proxy is unaffected.
    assert_eq!(failed_login_via(&addr, "203.0.113.2", "u6").await, 401);
    let body = json!({"username": "alice", "password": w.alice.password}).to_string();
    let r = http(
        &addr,
        "POST",
        "/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "203.0.113.2"),
        ],
        body,
    )
    .await;
    r.expect(200);
}

/// Without `--trusted-proxies` the header is the client's own claim and is
/// ignored: changing it does not escape the per-address throttle.
#[tokio::test(flavor = "multi_thread")]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let w = World::with_flags(&["--login-fails-per-addr", "3"]).await;
    let addr = w.addr();
    for (i, user) in ["u1", "u2", "u3"].iter().enumerate() {
        let fake = format!("203.0.113.{i}");
        assert_eq!(failed_login_via(&addr, &fake, user).await, 401);
    }
    assert_eq!(failed_login_via(&addr, "198.51.100.99", "u4").await, 429);
}
