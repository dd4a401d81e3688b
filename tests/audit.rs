//! The audit trail (API.md §7), black-box: what each dialect's read of a
//! patient chat, each sign-in and each change leaves; `GET /admin/audit`
//! paged and filtered; `parlor audit export` and `verify` with the daemon
//! and without; a flipped byte named by seq; the trail across `kill -9`,
//! backup and restore. Every record's hash is recomputed here, from the
//! exported lines, as an outside verifier would.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const T: std::time::Duration = WS_TIMEOUT;

/// One page of `GET /admin/audit?QUERY` as the admin.
async fn page(w: &World, query: &str) -> Value {
    get_as(&w.addr(), &format!("/admin/audit?{query}"), &w.admin.token)
        .await
        .expect(200)
}

/// Every record matching `query`, paging with `pageSize=7`.
async fn records(w: &World, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("{query}&pageSize=7&pageToken={t}"),
            None => format!("{query}&pageSize=7"),
        };
        let p = page(w, &q).await;
        out.extend(p["records"].as_array().unwrap().iter().cloned());
        match p["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

/// The newest record of `kind`.
async fn last_of(w: &World, kind: &str) -> Value {
    records(w, &format!("kind={kind}"))
        .await
        .pop()
        .unwrap_or_else(|| panic!("no {kind} record"))
}

fn patient_path(w: &World, who: &User) -> String {
    let _ = w;
    format!("/default/default/patient/{}/chat", who.id)
}

async fn outbound(w: &World, staff: &User, patient: &User, text: &str) {
    let path = format!("{}/outbound", patient_path(w, patient));
    post_json(
        &w.addr(),
        &path,
        Some(&staff.token),
        &json!({"message": text}),
    )
    .await
    .expect(200);
}

async fn inbound(w: &World, by: &User, patient: &User, text: &str) {
    let path = format!("{}/inbound", patient_path(w, patient));
    post_json(&w.addr(), &path, Some(&by.token), &json!({"message": text}))
        .await
        .expect(200);
}

/// Typed `getChatMessages` of `room`: the messages' count.
async fn typed_history(addr: &str, token: &str, room: u64) -> usize {
    let mut ws = Ws::typed(addr, token).await;
    ws.send_json(&json!({"type": "getChatMessages", "data": {"chatId": room}}))
        .await;
    let v = ws.recv_json(T).await;
    assert_eq!(v["type"], "chatMessages", "{v}");
    v["data"].as_array().unwrap().len()
}

/// Actions `get_messages`: each chat's id and message count.
async fn actions_history(addr: &str, token: &str) -> Vec<(String, usize)> {
    let mut ws = Ws::actions_ready(addr, token).await;
    ws.send_json(&json!({"action": "get_messages", "authToken": token}))
        .await;
    let v = ws.recv_json(T).await;
    assert_eq!(v["action"], "get_message", "{v}");
    v["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["messages"].as_array().unwrap().len(),
            )
        })
        .collect()
}

/// Checks a `chat.read` record: who, where, whose, how many.
fn assert_read(r: &Value, actor: &str, patient: &User, room: &str, count: u64) {
    assert_eq!(r["kind"], "chat.read", "{r}");
    assert_eq!(r["actor"], actor, "{r}");
    assert_eq!(r["tenant"], "default", "{r}");
    assert_eq!(r["instance"], "default", "{r}");
    assert_eq!(r["patient"], patient.id.as_str(), "{r}");
    assert_eq!(r["detail"]["room"], room, "{r}");
    assert_eq!(r["detail"]["count"], count, "{r}");
}

/// The newest `chat.read` record: `actor`'s read of `count` messages of
/// alice's chat `room`.
async fn last_read(w: &World, actor: &str, room: &str, count: u64) -> Value {
    let r = last_of(w, "chat.read").await;
    assert_read(&r, actor, &w.alice, room, count);
    r
}

/// alice's care-team chat with three messages (two from bob, one from
/// alice); its room id, from the posts' records.
async fn alices_chat(w: &World) -> String {
    outbound(w, &w.bob, &w.alice, "hello alice, how is the knee").await;
    inbound(w, &w.alice, &w.alice, "better, thank you").await;
    outbound(w, &w.bob, &w.alice, "good to hear about the knee").await;
    let post = last_of(w, "chat.post").await;
    post["detail"]["room"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dialects_read_of_a_patient_chat_leaves_a_chat_read_with_its_count() {
    let w = World::new().await;
    let room = alices_chat(&w).await;
    let addr = w.addr();
    let reads = || async { records(&w, "kind=chat.read").await.len() };
    assert_eq!(reads().await, 0);

    // Patient history: a page of two, by staff and by the patient.
    let path = format!("{}?pageSize=2", patient_path(&w, &w.alice));
    let v = get_as(&addr, &path, &w.bob.token).await.expect(200);
    assert_eq!(v["content"].as_array().unwrap().len(), 2);
    last_read(&w, &w.bob.id, &room, 2).await;
    get_as(&addr, &patient_path(&w, &w.alice), &w.alice.token)
        .await
        .expect(200);
    last_read(&w, &w.alice.id, &room, 3).await;

    // Search (two hits) and find (by date, everything before now).
    let path = format!("{}/search?query=knee", patient_path(&w, &w.alice));
    let v = get_as(&addr, &path, &w.bob.token).await.expect(200);
    assert_eq!(v["content"].as_array().unwrap().len(), 2);
    last_read(&w, &w.bob.id, &room, 2).await;
    let path = format!(
        "{}/find?date=2100-01-01T00:00:00Z&pageSize=1",
        patient_path(&w, &w.alice)
    );
    get_as(&addr, &path, &w.bob.token).await.expect(200);
    last_read(&w, &w.bob.id, &room, 1).await;

    // rooms `retrieve`, with and without a limit.
    assert_eq!(retrieve(&addr, &w.bob.token, 0, None).await.len(), 3);
    last_read(&w, &w.bob.id, &room, 3).await;
    assert_eq!(retrieve(&addr, &w.bob.token, 0, Some(1)).await.len(), 1);
    let r = last_read(&w, &w.bob.id, &room, 1).await;
    assert_eq!(r["detail"]["first"], r["detail"]["last"]);

    // typed `getChatMessages` and actions `get_messages`.
    let room_id: u64 = room.parse().unwrap();
    assert_eq!(typed_history(&addr, &w.bob.token, room_id).await, 3);
    last_read(&w, &w.bob.id, &room, 3).await;
    let chats = actions_history(&addr, &w.alice.token).await;
    assert_eq!(chats, [(room.clone(), 3)]);
    last_read(&w, &w.alice.id, &room, 3).await;

    // One record per answer, none for an answer that shows nothing.
    assert_eq!(reads().await, 8);
    assert!(retrieve(&addr, &w.bob.token, u64::MAX / 2, None)
        .await
        .is_empty());
    assert_eq!(reads().await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_of_chats_that_are_not_patient_chats_leave_no_record() {
    let w = World::new().await;
    let addr = w.addr();
    let dm = create_dm(&addr, &w.bob.token, &w.admin.id).await;
    let mut ws = Ws::typed(&addr, &w.bob.token).await;
    ws.send_json(&json!({"type": "newMessage",
        "data": {"chatId": dm.parse::<u64>().unwrap(), "text": "lunch?"}}))
        .await;
    assert_eq!(ws.recv_json(T).await["type"], "messageCreated");
    assert_eq!(retrieve(&addr, &w.bob.token, 0, None).await.len(), 1);
    assert_eq!(
        typed_history(&addr, &w.admin.token, dm.parse().unwrap()).await,
        1
    );
    assert_eq!(actions_history(&addr, &w.bob.token).await, [(dm, 1)]);
    assert!(records(&w, "kind=chat.read").await.is_empty());
    assert!(records(&w, "kind=chat.post").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_sign_outs_posts_and_changes_leave_their_records() {
    let w = World::new().await;
    let addr = w.addr();
    // Made before the daemon started: by the command line.
    let adds = records(&w, "kind=user.add").await;
    assert_eq!(adds.len(), 5);
    assert!(adds.iter().all(|r| r["actor"] == "cli"), "{adds:?}");
    let eve = &adds[4];
    assert_eq!(
        (&eve["tenant"], &eve["instance"]),
        (&json!("acme"), &json!("north"))
    );
    assert_eq!(eve["patient"], w.eve.id.as_str());
    assert_eq!(eve["detail"], json!({"user": w.eve.id, "role": "patient"}));
    let logins = records(&w, "kind=auth.login").await;
    assert_eq!(logins.len(), 5);
    assert_eq!(logins[0]["detail"]["addr"], "127.0.0.1");

    // A wrong password names the account; an unknown name keeps nothing.
    let bad = json!({"username": "alice", "password": "nope"});
    post_json(&addr, "/auth/login", None, &bad)
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    let fail = last_of(&w, "auth.fail").await;
    assert_eq!(fail["actor"], w.alice.id.as_str());
    assert_eq!(fail["tenant"], "default");
    assert_eq!(
        fail["detail"],
        json!({"addr": "127.0.0.1", "method": "password"})
    );
    let typo = json!({"username": "hunter2-secret-typed-here", "password": "x"});
    post_json(&addr, "/auth/login", None, &typo)
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    let fail = last_of(&w, "auth.fail").await;
    assert_eq!(
        (&fail["actor"], &fail["tenant"]),
        (&json!("unknown"), &Value::Null)
    );
    assert!(!fail.to_string().contains("hunter2"), "{fail}");

    // A post on the patient's behalf: the staff member acted.
    inbound(&w, &w.bob, &w.alice, "called: the patient feels better").await;
    let post = last_of(&w, "chat.post").await;
    assert_eq!(post["actor"], w.bob.id.as_str());
    assert_eq!(post["patient"], w.alice.id.as_str());
    assert_eq!(post["detail"]["sender"], w.alice.id.as_str());
    let v = get_as(&addr, &patient_path(&w, &w.alice), &w.bob.token)
        .await
        .expect(200);
    let ext = v["content"][0]["externalId"].as_str().unwrap().to_owned();
    let path = format!("{}/archive", patient_path(&w, &w.alice));
    let r = post_json(
        &addr,
        &path,
        Some(&w.bob.token),
        &json!({"externalIds": [ext]}),
    )
    .await;
    assert_eq!(r.status, 204);
    let archive = last_of(&w, "chat.archive").await;
    assert_eq!(archive["detail"]["count"], 1);
    assert_eq!(
        archive["detail"]["messages"],
        json!([post["detail"]["message"]])
    );

    // The admin's changes, over HTTP: the admin acted.
    let body = json!({"username": "nurse2", "password": "pw", "role": "staff"});
    post_json(&addr, "/admin/users", Some(&w.admin.token), &body)
        .await
        .expect(201);
    assert_eq!(last_of(&w, "user.add").await["actor"], w.admin.id.as_str());
    let hook = json!({"tenant": "default", "instance": "default",
        "url": "http://127.0.0.1:9/hook", "api_key": "k", "api_secret": "s"});
    let r = post_json(&addr, "/admin/webhooks", Some(&w.admin.token), &hook).await;
    assert_eq!(r.status, 204);
    let set = last_of(&w, "webhook.set").await;
    assert_eq!(set["actor"], w.admin.id.as_str());
    assert_eq!(set["detail"]["url"], "http://127.0.0.1:9/hook");
    assert!(!set.to_string().contains("api_secret"), "{set}");

    // An API client: added, signed in, refused, reading as `client:NAME`.
    let body = json!({"tenant": "default", "instance": "default", "name": "ehr"});
    let v = post_json(&addr, "/admin/api_clients", Some(&w.admin.token), &body)
        .await
        .expect(201);
    assert_eq!(last_of(&w, "api_client.add").await["detail"]["name"], "ehr");
    let secret = v["secret"].as_str().unwrap();
    let exchange = "/default/admin/api_clients/ehr";
    let v = post_json(&addr, exchange, None, &json!({"secret": secret}))
        .await
        .expect(200);
    let client_token = v["token"].as_str().unwrap().to_owned();
    let login = last_of(&w, "auth.login").await;
    assert_eq!(login["actor"], "client:ehr");
    assert_eq!(login["detail"]["method"], "api_client_secret");
    post_json(&addr, exchange, None, &json!({"secret": "wrong"}))
        .await
        .expect_error(401, "INVALID_CREDENTIALS");
    assert_eq!(last_of(&w, "auth.fail").await["actor"], "client:ehr");
    // (The chat's one message is archived: shown only when asked for.)
    let path = format!("{}?includeArchived=true", patient_path(&w, &w.alice));
    get_as(&addr, &path, &client_token).await.expect(200);
    assert_eq!(last_of(&w, "chat.read").await["actor"], "client:ehr");
    let body = json!({"tenant": "default", "instance": "default", "name": "ehr", "rotate": true});
    post_json(&addr, "/admin/api_clients", Some(&w.admin.token), &body)
        .await
        .expect(201);
    let rotate = last_of(&w, "api_client.rotate").await;
    assert_eq!(rotate["detail"]["revoked_tokens"], 1);

    // Sign-out, and the command line's token.
    let r = post_json(&addr, "/auth/logout", Some(&w.bob.token), &json!({})).await;
    assert_eq!(r.status, 204);
    let out = last_of(&w, "auth.logout").await;
    assert_eq!(
        (&out["actor"], &out["tenant"]),
        (&json!(w.bob.id), &json!("default"))
    );
    w.srv.token_issue("carol");
    let issued = last_of(&w, "token.issue").await;
    assert_eq!(issued["actor"], "cli");
    assert_eq!(issued["detail"]["user"], w.carol.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_audit_pages_filter_and_refuse_everyone_else() {
    let w = World::new().await;
    let addr = w.addr();
    alices_chat(&w).await;
    outbound(&w, &w.bob, &w.carol, "hello carol").await;
    let all = records(&w, "").await;
    // 5 user.add, 5 auth.login, 4 chat.post (and nothing else yet).
    assert_eq!(all.len(), 14);
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<_>>());
    for r in &all {
        assert!(r["hash"].as_str().is_some_and(|h| h.len() == 64), "{r}");
        let at = r["at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{r}");
    }
    // A page of 3, and the next from its token.
    let p = page(&w, "pageSize=3").await;
    assert_eq!(p["records"].as_array().unwrap().len(), 3);
    let t = p["nextPageToken"].as_str().unwrap();
    let p = page(&w, &format!("pageToken={t}")).await;
    assert_eq!(p["records"][0]["seq"], 4);
    let p = page(&w, "pageSize=1000").await;
    assert_eq!(p["nextPageToken"], Value::Null);

    // Filters.
    let eves = records(&w, "tenant=acme&instance=north").await;
    assert_eq!(eves.len(), 2, "{eves:?}");
    assert!(eves.iter().all(|r| r["tenant"] == "acme"));
    let carols = records(&w, &format!("patient={}", w.carol.id)).await;
    let kinds: Vec<&str> = carols.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user.add", "chat.post"]);
    let posts = records(&w, "kind=chat.post&tenant=default").await;
    assert_eq!(posts.len(), 4);
    let since = all[10]["at"].as_str().unwrap();
    let later = records(&w, &format!("since={since}")).await;
    assert!(later.len() >= 4 && later.iter().all(|r| r["at"].as_str().unwrap() >= since));
    assert_eq!(later.last(), all.last());
    assert!(records(&w, "since=2100-01-01T00:00:00Z").await.is_empty());

    // Not the operator: 403; no token: 401; bad parameters: 400.
    get_as(&addr, "/admin/audit", &w.bob.token)
        .await
        .expect_error(403, "FORBIDDEN");
    get_as(&addr, "/admin/audit", &w.eve.token)
        .await
        .expect_error(403, "FORBIDDEN");
    get(&addr, "/admin/audit")
        .await
        .expect_error(401, "UNAUTHENTICATED");
    for bad in [
        "pageSize=0",
        "pageSize=5000",
        "kind=chat.eat",
        "since=last-tuesday",
        "patient=alice",
        "pageToken=!!",
        "tenant=a&tenant=b",
        "tennant=default",
    ] {
        get_as(&addr, &format!("/admin/audit?{bad}"), &w.admin.token)
            .await
            .expect_error(400, "BAD_REQUEST");
    }
}

/// `parlor audit export ARGS…`: its stdout lines (it must succeed).
fn export(srv: &Server, args: &[&str]) -> Vec<String> {
    let mut all = vec!["audit", "export"];
    all.extend_from_slice(args);
    let out = srv.cli(&all, None);
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Recomputes the chain from exported lines as an outside verifier would:
/// the canonical JSON is the line without its trailing `"hash"` member.
fn check_chain(lines: &[String]) {
    let mut prev = "0".repeat(64);
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], i as u64 + 1, "{line}");
        let hash = v["hash"].as_str().unwrap();
        let suffix = format!(",\"hash\":\"{hash}\"}}");
        let canonical = line
            .strip_suffix(&suffix)
            .expect("hash is the last member")
            .to_owned()
            + "}";
        let mut h = Sha256::new();
        h.update(prev.as_bytes());
        h.update(canonical.as_bytes());
        let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, want, "record {}", i + 1);
        prev = want;
    }
}

fn verify(srv: &Server) -> (bool, String) {
    let out = srv.cli(&["audit", "verify"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn export_matches_the_api_and_verify_names_a_flipped_byte_by_seq() {
    let mut w = World::new().await;
    alices_chat(&w).await;
    get_as(&w.addr(), &patient_path(&w, &w.alice), &w.bob.token)
        .await
        .expect(200);
    let api = records(&w, "").await;

    // While the daemon runs (through its control socket).
    let lines = export(&w.srv, &[]);
    let exported: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported, api);
    check_chain(&lines);
    let acme = export(&w.srv, &["--tenant", "acme", "--instance", "north"]);
    assert_eq!(acme.len(), 2);
    let since = api[12]["at"].as_str().unwrap().to_owned();
    let later = export(&w.srv, &["--since", &since]);
    assert_eq!(later.last(), lines.last());
    assert!(later.len() < lines.len());
    let out = w.srv.cli(&["audit", "export", "--since", "soon"], None);
    assert!(!out.status.success());
    let (ok, text) = verify(&w.srv);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("{} audit records", api.len())),
        "{text}"
    );

    // Without it: the same records, straight from the store.
    w.srv.terminate(std::time::Duration::from_secs(20));
    assert_eq!(export(&w.srv, &[]), lines);
    assert!(verify(&w.srv).0);

    // A byte of record 7's stored value flipped: verify names seq 7.
    let store_dir = w.srv.data_dir().join("store");
    {
        let (store, _) = parlor::store::Store::open(&store_dir).unwrap();
        let found = store
            .damage_audit_record(7, &mut |v: &mut Vec<u8>| {
                let i = v.len() / 2;
                v[i] ^= 0x01;
            })
            .unwrap();
        assert!(found);
    }
    // The test process lets go of the store's lock a moment after the drop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (ok, text) = loop {
        let (ok, text) = verify(&w.srv);
        if !text.contains("held by") || std::time::Instant::now() > deadline {
            break (ok, text);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!ok, "a damaged trail verified: {text}");
    assert!(text.contains("first bad seq 7"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trail_goes_on_without_gaps_after_kill_9_and_through_backup_and_restore() {
    let mut w = World::new().await;
    alices_chat(&w).await;
    let before = records(&w, "").await;
    w.srv.kill9();
    w.srv.start();
    let (token, _) = w.srv.login("bob", &w.bob.password).await;
    w.admin.token = w.srv.login("admin", &w.admin.password).await.0;
    get_as(&w.addr(), &patient_path(&w, &w.alice), &token)
        .await
        .expect(200);
    let after = records(&w, "").await;
    assert_eq!(after[..before.len()], before[..]);
    let seqs: Vec<u64> = after.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=before.len() as u64 + 3).collect::<Vec<_>>());
    assert_eq!(after.last().unwrap()["kind"], "chat.read");

    // A backup records itself; a restore keeps the trail and goes on.
    let file = w.srv.data_dir().join("../backup.jsonl");
    let out = w.srv.cli(&["backup", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let backup = last_of(&w, "backup").await;
    assert_eq!(backup["actor"], "cli");
    let lines = export(&w.srv, &[]);
    check_chain(&lines);
    let other = Server::new();
    let out = other.cli(&["restore", file.to_str().unwrap(), "--verify"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = export(&other, &[]);
    check_chain(&restored);
    // Everything up to the backup's own record (made after it), then the restore.
    assert_eq!(restored[..lines.len() - 1], lines[..lines.len() - 1]);
    let last: Value = serde_json::from_str(restored.last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["actor"]),
        (&json!("restore"), &json!("cli"))
    );
    assert_eq!(last["seq"], lines.len() as u64);
    assert!(verify(&other).0);
}
