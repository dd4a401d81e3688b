//! The write-ahead log from outside (issue 13): what a crash or a damaged
//! disk leaves is replayed, cut or refused — never silently dropped — and
//! `parlor check` says which without changing anything.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// No checkpoint during the test: every write stays in the log only.
const NO_CHECKPOINT: &[&str] = &["--checkpoint-secs", "3600", "--checkpoint-mib", "65536"];

fn wal_dir(srv: &Server) -> PathBuf {
    srv.data_dir().join("store").join("wal")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// The (offset, payload length) of every record in a segment, read as
/// the format says: records from 4096, `len u32 | crc u32 | seq u64`.
fn records(seg: &Path) -> Vec<(u64, u64)> {
    let buf = std::fs::read(seg).unwrap();
    let mut out = Vec::new();
    let mut off = 4096usize;
    while off + 16 <= buf.len() {
        let len = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((off as u64, len as u64));
        off += (16 + len + 7) & !7;
    }
    out
}

/// Starts `parlor serve` on DIR expecting it to refuse: its exit code and
/// stderr (bounded wait).
fn serve_refused(srv: &Server) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(srv.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (st.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("parlor serve did not stop on a damaged log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(srv: &Server) -> (bool, String) {
    let out = srv.cli(&["check"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A daemon that wrote `n` users (one log record each) and was killed.
fn users_then_kill(n: usize) -> Server {
    let mut srv = Server::new();
    srv.start_with(NO_CHECKPOINT);
    for i in 0..n {
        srv.user_add(&format!("u{i}"), "staff", "pw");
    }
    srv.kill9();
    srv
}

#[tokio::test]
async fn a_damaged_middle_record_refuses_start_and_check_names_it() {
    let mut srv = users_then_kill(6);
    let (ok, text) = check(&srv);
    assert!(ok, "{text}");
    assert!(text.contains("torn end: none"), "{text}");
    let seg = segments(&wal_dir(&srv)).pop().unwrap();
    let recs = records(&seg);
    assert!(recs.len() >= 6, "{recs:?}");
    // One byte of the third record's payload flipped.
    let (off, _) = recs[2];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off + 20).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], off + 20).unwrap();
    drop(f);
    let before = std::fs::read(&seg).unwrap();

    let (code, stderr) = serve_refused(&srv);
    assert_ne!(code, Some(0), "{stderr}");
    let name = seg.display().to_string();
    assert!(stderr.contains(&name), "{stderr}");
    assert!(stderr.contains(&format!("offset {off}")), "{stderr}");
    let (ok, text) = check(&srv);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&name) && text.contains(&format!("offset {off}")),
        "{text}"
    );
    // Neither the refusal nor the check changed a byte.
    assert_eq!(std::fs::read(&seg).unwrap(), before);

    // Put back, the daemon starts and every user is there.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[b[0]], off + 20).unwrap();
    drop(f);
    srv.start();
    for i in 0..6 {
        login(&srv.addr(), &format!("u{i}"), "pw").await;
    }
}

#[tokio::test]
async fn a_torn_last_record_is_cut_at_start_and_the_rest_kept() {
    let mut srv = users_then_kill(5);
    let seg = segments(&wal_dir(&srv)).pop().unwrap();
    let recs = records(&seg);
    let (off, len) = *recs.last().unwrap();
    // The last record's second half never reached the disk.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    let half = (16 + len) / 2;
    f.write_all_at(&vec![0u8; (16 + len - half) as usize], off + half)
        .unwrap();
    drop(f);
    let (ok, text) = check(&srv);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("at offset {off}")), "{text}");

    srv.start_with(NO_CHECKPOINT);
    // Every user but the torn record's is certainly there.
    for i in 0..4 {
        login(&srv.addr(), &format!("u{i}"), "pw").await;
    }
    // Writing goes on after the cut, and survives another crash.
    srv.user_add("after", "staff", "pw");
    srv.kill9();
    let (ok, text) = check(&srv);
    assert!(ok && text.contains("torn end: none"), "{text}");
    srv.start();
    login(&srv.addr(), "after", "pw").await;
}

#[tokio::test]
async fn a_clean_stop_checkpoints_and_check_reports_the_log() {
    let mut srv = Server::new();
    srv.start();
    srv.user_add("a", "staff", "pw");
    assert_eq!(srv.terminate(Duration::from_secs(10)), Some(0));
    let (ok, text) = check(&srv);
    assert!(ok, "{text}");
    for line in ["store format: ", "segments: 1", "records: ", "ok"] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let out = Server::new().cli(&["check"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no store"));
}
