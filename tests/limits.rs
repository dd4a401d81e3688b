//! Configurable limits (issue 7): the WebSocket authentication deadline,
//! the request-header timeout and the global connection cap, each set by
//! its flag so the test runs in seconds. (Rates, the per-user socket cap
//! and throttles are tested with their dialects, in `accounts.rs` and in
//! `core::hub`.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_does_not_authenticate_in_time_is_closed_1008() {
    let w = World::with_flags(&["--auth-deadline-secs", "1"]).await;
    let addr = w.addr();
    let started = Instant::now();
    let mut idle = Ws::open(&addr).await;
    // One that authenticates in time stays open past the deadline.
    let mut ok = Ws::auth(&addr, &w.alice.token).await;
    assert_eq!(
        idle.expect_closed(Duration::from_secs(10)).await,
        Some(1008)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed before the deadline: {waited:?}"
    );
    ok.expect_silence(Duration::from_millis(500)).await;
    let room = create_dm(&addr, &w.alice.token, &w.bob.id).await;
    ok.send_msg(&room, "still here").await;
    assert_eq!(msg_text(&ok.recv_message(WS_TIMEOUT).await), "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_not_complete_in_time_end_the_connection() {
    let srv_flags = ["--header-timeout-secs", "1"];
    let w = World::with_flags(&srv_flags).await;
    let addr = w.addr();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must hang up (an error response
    // or EOF), within a bounded wait.
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf))
        .await
        .expect("the server kept a half-sent request open past its header timeout");
    assert!(n.is_ok() || buf.is_empty());
    let head = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || head.starts_with("HTTP/1.1 408"),
        "unexpected answer {head:?}"
    );
    // Others are served meanwhile and after.
    assert_eq!(get(&addr, "/healthz").await.status, 200);
}

#[test]
fn out_of_range_limits_are_refused_at_start() {
    let srv = Server::new();
    for (flag, value) in [
        ("--auth-deadline-secs", "0"),
        ("--header-timeout-secs", "601"),
        ("--login-fails-per-addr", "0"),
    ] {
        let out = srv.cli(&["serve", "--listen", "127.0.0.1:0", flag, value], None);
        assert!(!out.status.success(), "{flag} {value} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

/// `--max-connections`: at the cap the daemon stops accepting (the kernel
/// queues the rest); a freed connection lets the next one in.
#[tokio::test(flavor = "multi_thread")]
async fn the_connection_cap_holds_new_connections_until_one_ends() {
    let w = World::with_flags(&["--max-connections", "2"]).await;
    let addr = w.addr();
    let first = Ws::auth(&addr, &w.alice.token).await;
    let mut second = Ws::auth(&addr, &w.bob.token).await;
    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move { get(&addr, "/healthz").await.status }
    });
    // Two held: the third is not served (not refused either).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served at a cap of 2"
    );
    second.expect_silence(Duration::from_millis(100)).await;
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once a connection ended")
        .unwrap();
    assert_eq!(status, 200);
}
