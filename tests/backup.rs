//! `parlor backup` while serving, under load, and `parlor restore --verify`
//! into a fresh data directory (issue 7).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn backup_under_load_restores_to_a_store_that_serves_the_same_history() {
    let w = World::new().await;
    let addr = w.addr();
    let room = create_dm(&addr, &w.alice.token, &w.bob.id).await;
    let mut alice = Ws::auth(&addr, &w.alice.token).await;
    let mut pacer = Pacer::new();
    let first: Vec<String> = (0..40).map(|i| format!("before-{i}")).collect();
    send_until_echoed(
        &mut alice,
        &w.alice.id,
        &room,
        &first,
        &mut pacer,
        Duration::from_secs(30),
    )
    .await;

    // Back up while alice keeps sending.
    let more: Vec<String> = (0..60).map(|i| format!("during-{i}")).collect();
    let sender = tokio::spawn(async move {
        let mut pacer = Pacer::new();
        for t in more {
            pacer.take().await;
            alice.send_msg(&room, &t).await;
        }
        alice
    });
    let dest = w.srv.data_dir().parent().unwrap().join("parlor.backup");
    let out = w.srv.cli(&["backup", dest.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("records"), "{said}");
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .unwrap()
        .unwrap();

    // The backup's cut: every message up to its last id, none after.
    let at_backup = retrieve(&addr, &w.bob.token, 0, None).await;
    let text = std::fs::read_to_string(&dest).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let cut = header["last_message"].as_u64().unwrap();
    assert!(
        cut >= 40,
        "the backup holds at least what was acknowledged before it"
    );
    let want: Vec<serde_json::Value> = at_backup.into_iter().filter(|m| msg_id(m) <= cut).collect();

    // Restore into a fresh data directory, verified, and serve from it.
    let mut copy = Server::new();
    let restored = copy.cli(&["restore", dest.to_str().unwrap(), "--verify"], None);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(String::from_utf8_lossy(&restored.stdout).contains("verified"));
    copy.start();
    let a2 = copy.addr();
    // Tokens (their hashes) came along: bob's old token works there.
    let history = retrieve(&a2, &w.bob.token, 0, None).await;
    assert_eq!(history, want);
    // Ids continue above the backup's.
    let mut bob = Ws::auth(&a2, &w.bob.token).await;
    let room_id = want[0]["room"].as_str().unwrap().to_owned();
    bob.send_msg(&room_id, "on the restored store").await;
    let m = bob.recv_message(WS_TIMEOUT).await;
    assert!(msg_id(&m) > cut);

    // Restoring over a store that has data is refused.
    copy.kill9();
    let again = copy.cli(&["restore", dest.to_str().unwrap()], None);
    assert!(!again.status.success());
    // A damaged backup is refused before anything is written.
    let damaged = dest.with_extension("damaged");
    std::fs::write(&damaged, text.replacen("before-1", "before-X", 1)).unwrap();
    let fresh = Server::new();
    let bad = fresh.cli(&["restore", damaged.to_str().unwrap()], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a valid parlor backup"));
}
