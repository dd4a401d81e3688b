//! Durability (API.md §0): a message is acknowledged only once durable, so
//! every message any client has seen pushed survives `kill -9`; ids are
//! never reused and keep growing across restarts.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const USERS: usize = 4;
const PER_USER: usize = 75; // 4 × 75 = 300 messages per cycle
const CYCLES: usize = 3;

struct Setup {
    srv: Server,
    /// (username, password, id)
    users: Vec<(String, String, String)>,
    room: String,
}

/// A daemon with USERS members of one admin-created group room.
async fn setup() -> Setup {
    let mut srv = Server::new();
    srv.user_add("admin", "admin", "admin-pw");
    let mut users = Vec::new();
    for u in 0..USERS {
        let (name, pw) = (format!("w{u}"), format!("pw-w{u}"));
        let id = srv.user_add(&name, "staff", &pw);
        users.push((name, pw, id));
    }
    srv.start();
    let a = srv.addr();
    let (admin_tok, _) = login(&a, "admin", "admin-pw").await;
    let ids: Vec<&str> = users.iter().map(|u| u.2.as_str()).collect();
    let room = admin_room(&a, &admin_tok, Some("durable"), &ids).await;
    Setup { srv, users, room }
}

/// Checks the history after a restart against what was acknowledged:
/// ascending ids, every acknowledged message present exactly once and
/// unchanged, every stored message one that was sent.
fn check_history(history: &[Value], acked: &BTreeMap<u64, Value>, sent: &HashSet<String>) {
    assert_ascending(history);
    let mut texts = HashSet::new();
    for m in history {
        let t = msg_text(m).to_string();
        assert!(
            sent.contains(&t),
            "history holds a message that was never sent: {m}"
        );
        assert!(texts.insert(t), "message stored twice: {m}");
    }
    let by_id: BTreeMap<u64, &Value> = history.iter().map(|m| (msg_id(m), m)).collect();
    let missing: Vec<&Value> = acked
        .iter()
        .filter(|(id, _)| !by_id.contains_key(id))
        .map(|(_, m)| m)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost after kill -9, e.g. {}",
        missing.len(),
        missing[0]
    );
    for (id, m) in acked {
        assert_eq!(
            by_id[id], m,
            "acknowledged message {id} changed after restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_messages_survive_repeated_kill9() {
    let Setup {
        mut srv,
        users,
        room,
    } = setup().await;
    let mut pacers: Vec<Pacer> = (0..USERS).map(|_| Pacer::new()).collect();
    let mut acked: BTreeMap<u64, Value> = BTreeMap::new();
    let mut sent: HashSet<String> = HashSet::new();

    for cycle in 0..CYCLES {
        let a = srv.addr();
        // Send 300 messages from 4 users at once; each is acknowledged when
        // pushed back to its sender.
        let runs =
            users
                .iter()
                .zip(pacers.iter_mut())
                .enumerate()
                .map(|(u, ((name, pw, id), pacer))| {
                    let (a, room) = (a.clone(), room.clone());
                    async move {
                        let (tok, _) = login(&a, name, pw).await;
                        let mut ws = Ws::auth(&a, &tok).await;
                        let texts: Vec<String> = (0..PER_USER)
                            .map(|n| format!("c{cycle}-w{u}-{n}"))
                            .collect();
                        let pushes = send_until_echoed(
                            &mut ws,
                            id,
                            &room,
                            &texts,
                            pacer,
                            Duration::from_secs(60),
                        )
                        .await;
                        (texts, pushes)
                    }
                });
        for (texts, pushes) in futures_util::future::join_all(runs).await {
            sent.extend(texts);
            for p in pushes {
                ack(&mut acked, p);
            }
        }
        assert_eq!(
            acked.len(),
            sent.len(),
            "cycle {cycle}: every sent message was pushed back"
        );

        srv.kill9();
        srv.start();
        let a = srv.addr();
        let (name, pw, _) = &users[0];
        let (tok, _) = login(&a, name, pw).await;
        let history = retrieve(&a, &tok, 0, None).await;
        check_history(&history, &acked, &sent);
        assert_eq!(
            history.len(),
            acked.len(),
            "cycle {cycle}: history after restart"
        );

        // A new message gets an id above every earlier one.
        let max_before = msg_id(history.last().unwrap());
        let mut ws = Ws::auth(&a, &tok).await;
        let text = format!("after-restart-{cycle}");
        pacers[0].take().await;
        ws.send_msg(&room, &text).await;
        let m = ws.recv_message(WS_TIMEOUT).await;
        assert_eq!(msg_text(&m), text);
        assert!(
            msg_id(&m) > max_before,
            "id {} reused/not above {max_before} after restart",
            msg_id(&m)
        );
        sent.insert(text);
        ack(&mut acked, m);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill9_mid_stream_loses_no_acknowledged_message() {
    let Setup {
        mut srv,
        users,
        room,
    } = setup().await;
    let a = srv.addr();
    let acked: Arc<Mutex<BTreeMap<u64, Value>>> = Arc::default();
    let mut sent: HashSet<String> = HashSet::new();

    let mut tasks = Vec::new();
    for (u, (name, pw, _)) in users.iter().enumerate() {
        let (tok, _) = login(&a, name, pw).await;
        let ws = Ws::auth(&a, &tok).await;
        let texts: Vec<String> = (0..PER_USER).map(|n| format!("mid-w{u}-{n}")).collect();
        sent.extend(texts.iter().cloned());
        let (mut sink, mut stream) = ws.stream.split();
        let acked_r = acked.clone();
        // Reader: every push received is acknowledged; ends when the daemon dies.
        tasks.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(60), stream.next()).await {
                    Ok(Some(Ok(Message::Text(s)))) => {
                        let v: Value = serde_json::from_str(s.as_str()).expect("push is JSON");
                        let m = v["message"].clone();
                        check_message(&m);
                        ack(&mut acked_r.lock().unwrap(), m);
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(_)) | None) => break,
                    Err(_) => panic!("reader: daemon neither pushed nor closed within 60 s"),
                }
            }
        }));
        // Writer: stops at the first failed send.
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut pacer = Pacer::new();
            for t in texts {
                pacer.take().await;
                let f = json!({"room": room, "messages": t}).to_string();
                match tokio::time::timeout(WS_TIMEOUT, sink.send(Message::text(f))).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }));
    }

    // Kill once a good part is acknowledged, while senders are still going.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than 100 pushes within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    srv.kill9();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(70), t)
            .await
            .expect("client task did not end after kill -9")
            .expect("client task panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    srv.start();
    let a = srv.addr();
    let (name, pw, _) = &users[0];
    let (tok, _) = login(&a, name, pw).await;
    let history = retrieve(&a, &tok, 0, None).await;
    check_history(&history, &acked, &sent);
    let max_before = history.last().map(msg_id).unwrap_or(0);

    // A second crash without traffic changes nothing.
    srv.kill9();
    srv.start();
    let a = srv.addr();
    let (tok, _) = login(&a, name, pw).await;
    let again = retrieve(&a, &tok, 0, None).await;
    assert_eq!(
        again, history,
        "history changed across a crash without traffic"
    );

    let mut ws = Ws::auth(&a, &tok).await;
    ws.send_msg(&room, "after the crash").await;
    let m = ws.recv_message(WS_TIMEOUT).await;
    assert_eq!(msg_text(&m), "after the crash");
    assert!(
        msg_id(&m) > max_before,
        "id {} not above {max_before} after restart",
        msg_id(&m)
    );
    let acked_max = acked.keys().next_back().copied().unwrap_or(0);
    assert!(msg_id(&m) > acked_max);
}

/// The crash harness of issue 7: under concurrent load, `kill -9` at a
/// random moment, restart, and check that every acknowledged message is
/// there exactly once, no id was reused, and a reader following the
/// `after` cursor during the load saw no gap. `PARLOR_CRASH_CYCLES` cycles
/// (default 20; run 200+ by hand), seed from `PARLOR_CRASH_SEED`.
#[tokio::test(flavor = "multi_thread")]
async fn random_kill9_cycles_under_load_keep_every_acknowledged_message() {
    let cycles = env_u64("PARLOR_CRASH_CYCLES").unwrap_or(20);
    let seed = seed_from_env("PARLOR_CRASH_SEED");
    eprintln!("crash harness: {cycles} cycles, PARLOR_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut srv = Server::new();
    srv.user_add("admin", "admin", "admin-pw");
    let mut ids = Vec::new();
    for u in 0..USERS {
        ids.push(srv.user_add(&format!("w{u}"), "staff", &format!("pw-w{u}")));
    }
    srv.start_with(&UNTHROTTLED);
    let a = srv.addr();
    // Tokens are durable: log in once, use them across every restart.
    let (admin_tok, _) = login(&a, "admin", "admin-pw").await;
    let room = admin_room(
        &a,
        &admin_tok,
        Some("crash"),
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let mut tokens = Vec::new();
    for u in 0..USERS {
        tokens.push(login(&a, &format!("w{u}"), &format!("pw-w{u}")).await.0);
    }

    let mut acked: BTreeMap<u64, Value> = BTreeMap::new();
    let mut sent: HashSet<String> = HashSet::new();
    let mut max_id = 0;
    for cycle in 0..cycles {
        let a = srv.addr();
        let kill_after = 1 + rng.next(400) as usize;
        let texts: Vec<Vec<String>> = (0..USERS)
            .map(|u| (0..1000).map(|n| format!("k{cycle}-w{u}-{n}")).collect())
            .collect();
        sent.extend(texts.iter().flatten().cloned());
        let load = SendLoad::start(&a, &tokens, &room, texts).await;
        // A reader following the cursor while the load runs.
        let poll = {
            let (a, tok, after) = (a.clone(), tokens[0].clone(), max_id);
            tokio::spawn(async move {
                let mut seen: Vec<u64> = Vec::new();
                let mut cursor = after;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                let auth = format!("Bearer {tok}");
                let headers = [("authorization", auth.as_str())];
                while tokio::time::Instant::now() < deadline {
                    let r = http_inner(
                        &a,
                        "POST",
                        "/chat/retrieve",
                        &headers,
                        json!({ "after": cursor, "limit": 200 }).to_string().into(),
                    );
                    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), r).await else {
                        break;
                    };
                    let Ok(v) = serde_json::from_slice::<Value>(&resp.body) else {
                        break;
                    };
                    let Some(msgs) = v["messages"].as_array() else {
                        break;
                    };
                    for m in msgs {
                        seen.push(msg_id(m));
                        cursor = msg_id(m);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                seen
            })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while load.acked_count() < kill_after && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        srv.kill9();
        let cycle_acked = load.finish().await;
        let polled = tokio::time::timeout(Duration::from_secs(40), poll)
            .await
            .expect("poller did not end")
            .expect("poller panicked");
        for (id, m) in cycle_acked {
            assert!(id > max_id, "cycle {cycle}: id {id} reused (had {max_id})");
            ack(&mut acked, m);
        }

        srv.start_with(&UNTHROTTLED);
        let a = srv.addr();
        let history = retrieve(&a, &tokens[0], 0, None).await;
        check_history(&history, &acked, &sent);
        // The cursor reader: ascending, and no gap against history.
        assert!(
            polled.windows(2).all(|w| w[0] < w[1]),
            "cycle {cycle}: poller saw ids out of order"
        );
        if let (Some(&lo), Some(&hi)) = (polled.first(), polled.last()) {
            let range: Vec<u64> = history
                .iter()
                .map(msg_id)
                .filter(|id| (lo..=hi).contains(id))
                .collect();
            assert_eq!(
                range, polled,
                "cycle {cycle}: the after-cursor reader skipped messages"
            );
        }
        max_id = history.last().map(msg_id).unwrap_or(max_id).max(max_id);
    }
    assert!(
        acked.len() >= cycles as usize,
        "every cycle acknowledged something"
    );
}
