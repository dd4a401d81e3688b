//! A full disk is an answer, not a crash loop (issue 13), black-box: the
//! daemon's data directory on a size-limited tmpfs, filled by its own
//! writes and then by another file. Writes are refused (`503 UNAVAILABLE`
//! with `Retry-After`; the actions dialect's error frame), reads and live
//! sockets go on — but a read that shows a patient chat's messages waits
//! like a write, its audit record must be durable first (API.md §7) —
//! `/readyz`, `/metrics` and the log say why, writes resume by themselves
//! once there is room, ids stay gapless, and a daemon started (after
//! SIGTERM, and after kill -9) on a disk with no byte free opens and
//! serves everything it acknowledged.
//!
//! Needs root (mount(8)); without it the test fails saying so.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The tmpfs: small enough to fill quickly, big enough for the reserve
/// (8 MiB with 1 MiB segments), the ballast (as much), a spare segment and
/// the store.
const DISK_MIB: u64 = 32;
const FLAGS: &[&str] = &[
    "--wal-segment-mib",
    "1",
    "--cache-mib",
    "4",
    "--msg-burst",
    "100000",
    "--msg-rate",
    "100000",
];
const T: Duration = WS_TIMEOUT;

/// The daemon on a tmpfs mounted at its data directory. Dropped: the
/// daemon killed, the tmpfs unmounted, then the temporary directory gone.
struct Rig {
    srv: Server,
    mount: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let srv = Server::new();
        let mount = srv.data_dir().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m,mode=0755")])
            .arg("tmpfs")
            .arg(&mount)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test needs root: it mounts a {DISK_MIB} MiB tmpfs at {} to fill it \
             (mount said: {})",
            mount.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Rig { srv, mount }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mount.join(name)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.srv.kill9();
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// Free bytes on the filesystem holding `p`.
fn free(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string and a writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Writes `bytes` of filler to `path`.
fn filler(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0x5a; bytes]).unwrap();
}

/// Writes to `path` until the filesystem has no room left.
fn fill_up(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096] {
        let buf = vec![0xa5u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
    assert!(free(path) < 4096, "{} bytes still free", free(path));
}

/// Through the running daemon (the CLI alone would make the store with
/// its default 16 MiB segments): the admin, then a patient and a nurse of
/// the clinic's workspace over HTTP.
async fn patient_and_nurse(srv: &Server) -> (User, User) {
    srv.user_add("admin", "admin", "pw-admin-secret");
    let addr = srv.addr();
    let (admin, _) = login(&addr, "admin", "pw-admin-secret").await;
    let ws = (TENANT, INSTANCE);
    let pat = add_user(&addr, &admin, "pat", "patient", ws, None).await;
    let nurse = add_user(&addr, &admin, "nurse", "staff", ws, None).await;
    (pat, nurse)
}

/// A 16 KiB message whose first word names it.
fn big(label: &str) -> String {
    let t = format!("{label} ");
    let pad = "x".repeat(16_384 - t.len());
    t + &pad
}

/// `POST …/chat/inbound` as the patient.
async fn inbound(addr: &str, pat: &User, text: &str) -> Resp {
    let path = format!("/{TENANT}/{INSTANCE}/patient/{}/chat/inbound", pat.id);
    post_json(addr, &path, Some(&pat.token), &json!({ "message": text })).await
}

/// A refused write: 503, `UNAVAILABLE`, and a `Retry-After` in seconds.
fn assert_refused(r: &Resp) {
    r.expect_error(503, "UNAVAILABLE");
    let wait: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(wait >= 1, "Retry-After {wait}");
}

/// Every message the nurse can see, oldest first: the first word of each.
async fn history(addr: &str, nurse: &User) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |(id, _)| *id);
        let page = retrieve(addr, &nurse.token, after, Some(50)).await;
        if page.is_empty() {
            return out;
        }
        for m in &page {
            let first = msg_text(m).split(' ').next().unwrap().to_string();
            out.push((msg_id(m), first));
        }
    }
}

/// Posts `label` until it is taken (writes resume by themselves);
/// returns the message as the live socket pushes it.
async fn post_when_room(addr: &str, pat: &User, live: &mut Ws, label: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = inbound(addr, pat, &big(label)).await;
        if r.status == 200 {
            break;
        }
        assert_refused(&r);
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = live.recv_message(T).await;
    assert!(msg_text(&m).starts_with(label), "{m}");
    m
}

/// `/readyz` says why writes are refused.
async fn assert_not_ready(addr: &str) {
    let r = get(addr, "/readyz").await;
    assert_refused(&r);
    let why = r.json()["error"].as_str().unwrap().to_string();
    assert!(why.contains("disk is full"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_keeps_reads_and_resumes_by_itself() {
    let mut rig = Rig::new();
    // Room the test gives back later.
    filler(&rig.path("filler"), 4 << 20);
    rig.srv.start_with(FLAGS);
    let (pat, nurse) = patient_and_nurse(&rig.srv).await;
    let addr = rig.srv.addr();
    let mut live = Ws::auth(&addr, &nurse.token).await;

    // The daemon's own writes fill the disk: every 16 KiB message is
    // acknowledged (and pushed live, in order) until one is refused.
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut room = String::new();
    let refused = loop {
        assert!(
            acked.len() < 5_000,
            "no write refused on a {DISK_MIB} MiB disk"
        );
        let label = format!("m{:05}", acked.len());
        let r = inbound(&addr, &pat, &big(&label)).await;
        if r.status != 200 {
            break r;
        }
        let m = live.recv_message(T).await;
        assert!(msg_text(&m).starts_with(&label), "{m}");
        if let Some((last, _)) = acked.last() {
            assert_eq!(msg_id(&m), last + 1, "ids stay gapless");
        }
        room = m["room"].as_str().unwrap().to_owned();
        acked.push((msg_id(&m), label));
    };
    assert_refused(&refused);
    assert!(acked.len() >= 20, "only {} messages fitted", acked.len());
    // Refused again, and nothing of it reaches the live socket.
    assert_refused(&inbound(&addr, &pat, "small, refused too").await);
    live.expect_silence(SILENCE).await;
    // A WebSocket dialect answers in its own error shape.
    let mut act = Ws::actions_ready(&addr, &nurse.token).await;
    act.send_json(&json!({"action": "send_message", "authToken": nurse.token,
        "chat_id": room, "message": "refused over actions"}))
        .await;
    let e = act.recv_json(T).await;
    assert_eq!(e["action"], "error", "{e}");
    assert_eq!(e["error_code"], "UNAVAILABLE", "{e}");
    live.expect_silence(SILENCE).await;
    // Reads go on: everything acknowledged, nothing else. Reading the
    // patient chat's messages waits like a write (its audit record).
    assert_eq!(newest(&addr, &nurse, &room).await, acked.last().unwrap().0);
    assert_refused(
        &post_json(
            &addr,
            "/chat/retrieve",
            Some(&nurse.token),
            &json!({"after": 0}),
        )
        .await,
    );
    assert_not_ready(&addr).await;
    let metrics = get(&addr, "/metrics").await.text();
    assert!(metrics.contains("parlor_disk_full 1\n"), "{metrics}");
    assert!(
        !metrics.contains("parlor_writes_refused_total 0\n"),
        "{metrics}"
    );
    // The log says it once, not per refused write.
    let log = rig.srv.log_text();
    assert_eq!(log.matches("writes are refused").count(), 1, "{log}");

    // Room again: writes resume with no restart, the next id follows on,
    // and the sockets opened before go on working.
    std::fs::remove_file(rig.path("filler")).unwrap();
    let m = post_when_room(&addr, &pat, &mut live, "resumed").await;
    assert_eq!(
        msg_id(&m),
        acked.last().unwrap().0 + 1,
        "no id spent on refusals"
    );
    acked.push((msg_id(&m), "resumed".into()));
    let pushed = act.recv_json(T).await;
    assert_eq!(pushed["action"], "receive_message", "{pushed}");
    assert_eq!(get(&addr, "/readyz").await.expect(200)["status"], "ready");
    let metrics = get(&addr, "/metrics").await.text();
    assert!(metrics.contains("parlor_disk_full 0\n"), "{metrics}");
    assert!(rig.srv.log_text().contains("writes resume"));
    drop((live, act));

    // Killed with that write not yet checkpointed, and the disk filled to
    // the last byte by someone else: the daemon starts (replaying the log),
    // serves everything it acknowledged and refuses writes; stopped
    // cleanly there, it starts again the same.
    rig.srv.kill9();
    fill_up(&rig.path("filler2"));
    for start in ["after kill -9", "after SIGTERM"] {
        rig.srv.start_with(FLAGS);
        let addr = rig.srv.addr();
        let last = acked.last().unwrap().0;
        assert_eq!(newest(&addr, &nurse, &room).await, last, "{start}");
        assert_refused(&inbound(&addr, &pat, "on a full disk").await);
        assert_not_ready(&addr).await;
        assert_eq!(
            rig.srv.terminate(Duration::from_secs(20)),
            Some(0),
            "{start}"
        );
    }

    // And once there is room, writes resume there too.
    std::fs::remove_file(rig.path("filler2")).unwrap();
    rig.srv.start_with(FLAGS);
    let addr = rig.srv.addr();
    let mut live = Ws::auth(&addr, &nurse.token).await;
    let m = post_when_room(&addr, &pat, &mut live, "again").await;
    assert_eq!(msg_id(&m), acked.last().unwrap().0 + 1);
    acked.push((msg_id(&m), "again".into()));
    assert_eq!(history(&addr, &nurse).await, acked);
}

/// The newest message id of `room` as the nurse's room list shows it (a
/// read that shows no message, so it goes on while the disk is full).
async fn newest(addr: &str, nurse: &User, room: &str) -> u64 {
    let o = overview(addr, &nurse.token).await;
    overview_room(&o, room)["last_message_id"].as_u64().unwrap()
}

/// A daemon that checkpoints only when it stops (sled holds everything
/// unflushed), a patient and a nurse, and `n` acknowledged patient
/// messages: the rig, its flags, the two, and the nurse's history.
async fn unflushed_clinic(n: usize) -> (Rig, Vec<&'static str>, User, User, Vec<(u64, String)>) {
    let mut rig = Rig::new();
    let mut flags = FLAGS.to_vec();
    flags.extend(["--checkpoint-secs", "3600", "--checkpoint-mib", "65536"]);
    rig.srv.start_with(&flags);
    let (pat, nurse) = patient_and_nurse(&rig.srv).await;
    let addr = rig.srv.addr();
    for i in 0..n {
        inbound(&addr, &pat, &format!("m{i:05} small"))
            .await
            .expect(200);
    }
    let acked = history(&addr, &nurse).await;
    (rig, flags, pat, nurse, acked)
}

/// sled's checkpoint on a disk someone else filled to the last byte fails:
/// the daemon does not stop over it (here the last checkpoint, at SIGTERM;
/// the periodic one takes the same path), says so, and what it
/// acknowledged is replayed from the log at the next start.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_that_finds_no_room_stops_nothing_and_loses_nothing() {
    let (mut rig, flags, pat, nurse, acked) = unflushed_clinic(20).await;
    let addr = rig.srv.addr();
    assert_eq!(acked.len(), 20);
    let room = retrieve(&addr, &nurse.token, 0, Some(1)).await[0]["room"]
        .as_str()
        .unwrap()
        .to_owned();

    fill_up(&rig.path("filler"));
    assert_eq!(rig.srv.terminate(Duration::from_secs(20)), Some(0));
    let log = rig.srv.log_text();
    assert!(log.contains("the index could not be written"), "{log}");

    // On the still full disk (the ballast makes room to open: the newest
    // message is there; reading the patient chat's messages waits for
    // room, its audit record being a write), then with room.
    rig.srv.start_with(&flags);
    let addr = rig.srv.addr();
    assert_eq!(newest(&addr, &nurse, &room).await, acked.last().unwrap().0);
    assert_not_ready(&addr).await;
    std::fs::remove_file(rig.path("filler")).unwrap();
    let mut live = Ws::auth(&addr, &nurse.token).await;
    let m = post_when_room(&addr, &pat, &mut live, "resumed").await;
    assert_eq!(msg_id(&m), acked.last().unwrap().0 + 1);
    let mut all = acked.clone();
    all.push((msg_id(&m), "resumed".into()));
    assert_eq!(history(&addr, &nurse).await, all);
}

/// A start with no room at all (no spare segment or ballast left to
/// release, no byte free): sled cannot open, and the daemon says so and
/// stops — nothing is moved aside as damaged, nothing lost; with room it
/// starts and replays everything.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_with_no_byte_to_spare_says_so_and_loses_nothing() {
    let (mut rig, flags, _pat, nurse, acked) = unflushed_clinic(50).await;
    // Killed before any checkpoint; what parlor set aside is gone too.
    rig.srv.kill9();
    for made_ahead in ["store/wal/spare.tmp", "store/wal/ballast"] {
        std::fs::remove_file(rig.path(made_ahead)).unwrap();
    }
    fill_up(&rig.path("filler"));

    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend(&flags);
    let out = rig.srv.cli(&args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with no byte free: {stderr}");
    assert!(
        stderr.contains("no space left on the device to open the store"),
        "{stderr}"
    );
    let store = std::fs::read_dir(rig.path("store")).unwrap();
    let names: Vec<String> = store
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("index-damaged")),
        "{names:?}"
    );

    std::fs::remove_file(rig.path("filler")).unwrap();
    rig.srv.start_with(&flags);
    assert_eq!(history(&rig.srv.addr(), &nurse).await, acked);
}
