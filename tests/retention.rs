//! Retention, legal holds and erasure (API.md §8), black-box: the admin
//! endpoints and the CLI with their errors; erasing a patient (sockets
//! closed, login gone, messages deleted, the text in no file of the data
//! directory); erased staff shown as "erased user"; and a purge of old
//! messages — made old by restoring a backup whose times were moved back,
//! as a clinic moving an older server's data would — that leaves their
//! text in no file either, and that a hold stops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const T: Duration = WS_TIMEOUT;
const DAY_MS: u64 = 86_400_000;

/// `PUT path` with a JSON body as `token`.
async fn put_json(addr: &str, path: &str, token: &str, body: &Value) -> Resp {
    let auth = format!("Bearer {token}");
    let h = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    http(addr, "PUT", path, &h, serde_json::to_vec(body).unwrap()).await
}

/// The clinic's workspace, with more fields.
fn ws(more: Value) -> Value {
    let mut v = json!({"tenant": TENANT, "instance": INSTANCE});
    v.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    v
}

/// Every file under `dir`, recursively, that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(p);
            } else if meta.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

/// The newest audit record of `kind`, if any.
async fn newest(addr: &str, admin: &User, kind: &str) -> Option<Value> {
    let v = get_as(
        addr,
        &format!("/admin/audit?kind={kind}&pageSize=1000"),
        &admin.token,
    )
    .await
    .expect(200);
    v["records"].as_array().unwrap().last().cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_and_holds_over_http_with_their_errors_and_records() {
    let c = Clinic::new().await;
    let a = c.addr();
    let admin = &c.admin.token;
    // Only an admin; malformed bodies and values are 400; nothing applied.
    put_json(
        &a,
        "/admin/retention",
        &c.nurse.token,
        &ws(json!({"days": 30})),
    )
    .await
    .expect_error(403, "FORBIDDEN");
    for bad in [
        json!({"days": 0}),
        json!({"days": 36_501}),
        json!({"days": "30"}),
        json!({"days": -1}),
        json!({}),
    ] {
        put_json(&a, "/admin/retention", admin, &ws(bad))
            .await
            .expect_error(400, "BAD_REQUEST");
    }
    http(
        &a,
        "PUT",
        "/admin/retention",
        &[("authorization", &format!("Bearer {admin}"))],
        "{no",
    )
    .await
    .expect_error(400, "BAD_REQUEST");
    assert!(newest(&a, &c.admin, "retention.set").await.is_none());

    put_json(&a, "/admin/retention", admin, &ws(json!({"days": 30})))
        .await
        .expect_status(204);
    let r = newest(&a, &c.admin, "retention.set").await.unwrap();
    assert_eq!(
        (r["tenant"].as_str(), r["detail"]["days"].as_u64()),
        (Some(TENANT), Some(30))
    );

    // Holds: a patient of the workspace, or the workspace; a reason.
    let hold = |patient: Option<&str>, on: bool, reason: &str| {
        let mut b = ws(json!({"hold": on, "reason": reason}));
        if let Some(p) = patient {
            b["patient"] = json!(p);
        }
        b
    };
    for (who, code) in [
        (c.nurse.id.as_str(), 404),
        (c.epat.id.as_str(), 404),
        ("999999", 404),
    ] {
        put_json(&a, "/admin/holds", admin, &hold(Some(who), true, "case 7"))
            .await
            .expect_error(code, "NOT_FOUND");
    }
    put_json(&a, "/admin/holds", admin, &hold(Some(&c.pat.id), true, ""))
        .await
        .expect_error(400, "BAD_REQUEST");
    put_json(&a, "/admin/holds", &c.doc.token, &hold(None, true, "x"))
        .await
        .expect_error(403, "FORBIDDEN");
    put_json(
        &a,
        "/admin/holds",
        admin,
        &hold(Some(&c.pat.id), true, "case 7"),
    )
    .await
    .expect_status(204);
    let r = newest(&a, &c.admin, "hold.set").await.unwrap();
    assert_eq!(r["patient"], c.pat.id.as_str(), "{r}");
    assert_eq!(
        (
            r["detail"]["hold"].as_bool(),
            r["detail"]["reason"].as_str()
        ),
        (Some(true), Some("case 7"))
    );

    // Under a workspace hold, retention cannot change; lifted, it can.
    put_json(&a, "/admin/holds", admin, &hold(None, true, "inspection"))
        .await
        .expect_status(204);
    put_json(&a, "/admin/retention", admin, &ws(json!({"days": null})))
        .await
        .expect_error(409, "CONFLICT");
    put_json(&a, "/admin/holds", admin, &hold(None, false, ""))
        .await
        .expect_status(204);
    put_json(&a, "/admin/retention", admin, &ws(json!({"days": null})))
        .await
        .expect_status(204);
    let r = newest(&a, &c.admin, "retention.set").await.unwrap();
    assert_eq!(r["detail"]["days"], Value::Null, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_sets_retention_and_holds_and_erases_with_the_daemon_running() {
    let c = Clinic::new().await;
    let a = c.addr();
    let run = |args: &[&str]| c.srv.cli(args, None);
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let place = ["--tenant", TENANT, "--instance", INSTANCE];
    ok(run(
        &[&["retention", "set", "--days", "7"][..], &place].concat()
    ));
    let r = newest(&a, &c.admin, "retention.set").await.unwrap();
    assert_eq!(
        (r["actor"].as_str(), r["detail"]["days"].as_u64()),
        (Some("cli"), Some(7))
    );
    // Neither --days nor --forever, or both: refused by the CLI itself.
    assert!(!run(&[&["retention", "set"][..], &place].concat())
        .status
        .success());
    let both = [
        &["retention", "set", "--days", "3", "--forever"][..],
        &place,
    ]
    .concat();
    assert!(!run(&both).status.success());

    let pat = ["--patient", c.pat.id.as_str()];
    ok(run(&[
        &["hold", "set", "--reason", "case 9"][..],
        &place,
        &pat,
    ]
    .concat()));
    let erase = run(&["user", "erase", &c.pat.id]);
    assert!(!erase.status.success());
    assert!(
        String::from_utf8_lossy(&erase.stderr).contains("legal hold"),
        "{erase:?}"
    );
    ok(run(&[&["hold", "clear"][..], &place, &pat].concat()));
    send(&a, &c.pat, &c.pat, "inbound", "a message to erase").await;
    let out = ok(run(&["user", "erase", &c.pat.id]));
    assert!(out.contains("1 messages deleted"), "{out}");
    let nobody = run(&["user", "erase", "999999"]);
    assert!(!nobody.status.success());
    let r = newest(&a, &c.admin, "user.erase").await.unwrap();
    assert_eq!(
        (r["actor"].as_str(), r["patient"].as_str()),
        (Some("cli"), Some(c.pat.id.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn erasing_a_patient_closes_their_sockets_and_leaves_their_text_in_no_file() {
    let c = Clinic::new().await;
    let a = c.addr();
    const MARK: &str = "Quokka-7731-erase-me";
    send(
        &a,
        &c.pat,
        &c.pat,
        "inbound",
        &format!("{MARK} my knee hurts"),
    )
    .await;
    send(
        &a,
        &c.nurse,
        &c.pat,
        "outbound",
        &format!("sorry about {MARK}"),
    )
    .await;
    let kept = send(&a, &c.nurse, &c.pat2, "outbound", "for the other patient").await;
    let mut socket = Ws::typed(&a, &c.pat.token).await;
    assert!(
        !files_holding(c.srv.data_dir(), MARK).is_empty(),
        "the marker was never written"
    );

    // Not an admin, not a user: refused, nothing changes.
    let erase = |id: &str| format!("/admin/users/{id}/erase");
    post_json(&a, &erase(&c.pat.id), Some(&c.nurse.token), &json!({}))
        .await
        .expect_error(403, "FORBIDDEN");
    for nobody in ["999999", "abc"] {
        post_json(&a, &erase(nobody), Some(&c.admin.token), &json!({}))
            .await
            .expect_error(404, "NOT_FOUND");
    }
    let v = post_json(&a, &erase(&c.pat.id), Some(&c.admin.token), &json!({}))
        .await
        .expect(200);
    assert_eq!(v, json!({"messages_deleted": 2}));

    assert!(
        socket.expect_closed(T).await.is_some(),
        "the patient's socket stayed open"
    );
    post_json(
        &a,
        "/auth/login",
        None,
        &json!({"username": "pat", "password": c.pat.password}),
    )
    .await
    .expect_error(401, "INVALID_CREDENTIALS");
    get_as(&a, &chat_path(&c.pat, ""), &c.pat.token)
        .await
        .expect_error(401, "UNAUTHENTICATED");
    let seen = page(&a, &c.nurse, &chat_path(&c.pat, ""), false).await;
    assert!(ids(&seen).is_empty(), "erased messages still shown");
    let other = page(&a, &c.nurse, &chat_path(&c.pat2, ""), false).await;
    assert_eq!(ids(&other), [eid(&kept)]);
    // Gone from every file of the data directory, not only hidden.
    assert_eq!(files_holding(c.srv.data_dir(), MARK), Vec::<String>::new());
    // `parlor check` reads the compacted log (its base, then the records).
    let check = c.srv.cli(&["check"], None);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And after a restart, still gone, the rest still there.
    let mut srv = c.srv;
    srv.restart();
    assert_eq!(files_holding(srv.data_dir(), MARK), Vec::<String>::new());
    let other = page(&srv.addr(), &c.nurse, &chat_path(&c.pat2, ""), false).await;
    assert_eq!(ids(&other), [eid(&kept)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn erased_staff_are_shown_as_erased_user_and_their_name_is_free_again() {
    let c = Clinic::new().await;
    let a = c.addr();
    send(&a, &c.doc, &c.pat, "outbound", "from the doctor").await;
    post_json(
        &a,
        &format!("/admin/users/{}/erase", c.doc.id),
        Some(&c.admin.token),
        &json!({}),
    )
    .await
    .expect(200);
    let seen = page(&a, &c.nurse, &chat_path(&c.pat, ""), false).await;
    let v = get_as(&a, &chat_path(&c.pat, ""), &c.nurse.token)
        .await
        .expect(200);
    assert_eq!(ids(&seen).len(), 1, "{v}");
    assert!(v.to_string().contains("erased user"), "{v}");
    assert!(!v.to_string().contains("Dana Ortiz"), "{v}");
    // Nor in any file: the old user record is compacted away.
    assert_eq!(
        files_holding(c.srv.data_dir(), "Dana Ortiz"),
        Vec::<String>::new()
    );
    // Their username can be given to someone new, with a new id.
    let again = add_user(&a, &c.admin.token, "doc", "staff", (TENANT, INSTANCE), None).await;
    assert!(again.id.parse::<u64>().unwrap() > c.doc.id.parse::<u64>().unwrap());
}

/// Rewrites a backup so that every message is `by_ms` older (the footer's
/// checksum recomputed as `parlor backup` computes it).
fn age_backup(path: &Path, by_ms: u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = lines.len();
    let mut sha = Sha256::new();
    for l in &mut lines[1..n - 1] {
        if l["kind"] == "message" {
            let at = l["message"]["at_ms"].as_u64().unwrap();
            l["message"]["at_ms"] = json!(at - by_ms);
        }
        let mut bytes = serde_json::to_vec(l).unwrap();
        bytes.push(b'\n');
        sha.update(&bytes);
    }
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    lines[n - 1]["sha256"] = json!(hex);
    let out: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, out).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_deletes_messages_past_retention_from_every_file_but_not_under_a_hold() {
    let c = Clinic::new().await;
    let a = c.addr();
    const OLD: &str = "Wombat-5519-purge-me";
    const HELD: &str = "Numbat-2208-keep-me";
    for i in 0..3 {
        send(&a, &c.nurse, &c.pat, "outbound", &format!("{OLD} {i}")).await;
    }
    send(&a, &c.nurse, &c.pat2, "outbound", HELD).await;
    let dest = c.srv.data_dir().parent().unwrap().join("aged.backup");
    let out = c.srv.cli(&["backup", dest.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    age_backup(&dest, 40 * DAY_MS);

    // A new server from the aged backup, purging every second.
    let mut srv = Server::new();
    let restored = srv.cli(&["restore", dest.to_str().unwrap()], None);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    srv.start_with(&["--purge-interval-secs", "1"]);
    let a = srv.addr();
    let (admin, _) = login(&a, "admin", &c.admin.password).await;
    let (nurse, _) = login(&a, "nurse", &c.nurse.password).await;
    let nurse = User {
        token: nurse,
        ..c.nurse.clone()
    };
    let admin_user = User {
        token: admin.clone(),
        ..c.admin.clone()
    };
    let fresh = send(&a, &nurse, &c.pat, "outbound", "written today").await;
    let hold = ws(json!({"patient": c.pat2.id, "hold": true, "reason": "case 3"}));
    put_json(&a, "/admin/holds", &admin, &hold)
        .await
        .expect_status(204);
    put_json(&a, "/admin/retention", &admin, &ws(json!({"days": 30})))
        .await
        .expect_status(204);

    // The run's record says it is done; wait for one that deleted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        if let Some(r) = newest(&a, &admin_user, "retention.purge").await {
            if r["detail"]["messages"].as_u64() > Some(0) {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "no purge within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(record["actor"], "daemon", "{record}");
    assert_eq!(record["detail"]["messages"], 3, "{record}");
    assert_eq!(record["detail"]["held"], 1, "{record}");
    let left = page(&a, &nurse, &chat_path(&c.pat, ""), false).await;
    assert_eq!(ids(&left), [eid(&fresh)]);
    let held = page(&a, &nurse, &chat_path(&c.pat2, ""), false).await;
    assert_eq!(ids(&held).len(), 1);
    assert_eq!(files_holding(srv.data_dir(), OLD), Vec::<String>::new());
    assert!(!files_holding(srv.data_dir(), HELD).is_empty());
}
