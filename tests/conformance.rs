//! WebSocket conformance (issue 7), black-box: the conformance echo
//! endpoint (`serve --conformance-echo`, `GET /conformance/echo`) that
//! `.ci/autobahn` points Autobahn|Testsuite at, and regression tests for
//! what that suite found in the session loop every dialect shares.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = WS_TIMEOUT;
const ECHO: &str = "/conformance/echo";

/// A daemon with the echo endpoint on.
fn echo_server() -> Server {
    let mut s = Server::new();
    s.start_with(&["--conformance-echo"]);
    s
}

/// One raw frame (`fin` false for all but a message's last fragment).
fn raw(opcode: OpCode, payload: &[u8], fin: bool) -> Message {
    Message::Frame(RawFrame::message(payload.to_vec(), opcode, fin))
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);

/// After the server's close frame, the server ends the TCP connection
/// (RFC 6455 §7.1.1: the server closes first).
async fn expect_tcp_end(ws: &mut Ws) {
    match ws.next_frame(T).await {
        Frame::Ended => {}
        other => panic!("expected the connection to end after the close, got {other:?}"),
    }
}

#[tokio::test]
async fn echo_returns_text_and_binary_as_sent() {
    let s = echo_server();
    let mut ws = Ws::open_path(&s.addr(), ECHO).await;
    for text in ["hello", "", "héllo wörld 🙂", &"x".repeat(64 * 1024)] {
        ws.send_text(text).await;
        match ws.next_frame(T).await {
            Frame::Text(got) => assert_eq!(got, text),
            other => panic!("expected the text back, got {other:?}"),
        }
    }
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for b in [vec![], vec![0u8, 0xff, 0xfe], bytes] {
        ws.send_binary(b.clone()).await;
        match ws.next_frame(T).await {
            Frame::Binary(got) => assert_eq!(got, b),
            other => panic!("expected the bytes back, got {other:?}"),
        }
    }
    // A ping is answered with a pong carrying its payload.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await;
    let pong = timeout(T, async {
        use futures_util::StreamExt;
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Pong(p))) => return p.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    })
    .await
    .expect("no pong");
    assert_eq!(pong, b"are you there");
}

#[tokio::test]
async fn echo_is_off_by_default_and_hidden() {
    let s = Server::started();
    let addr = s.addr();
    assert_eq!(s.get(ECHO).await.status, 404);
    // An upgrade request too: 404, like any unknown path, and no 101.
    let head = format!(
        "GET {ECHO} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let (status, _, body) = parse_raw_response(&raw_exchange(&addr, head, vec![]).await);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert_error_body(&serde_json::from_slice(&body).unwrap(), "NOT_FOUND");
    // The flag is not advertised.
    let help = s.cli(&["serve", "--help"], None);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--msg-burst"), "serve --help: {help}");
    assert!(!help.contains("conformance"), "serve --help: {help}");
}

#[tokio::test]
async fn echo_needs_no_authentication() {
    let s = echo_server();
    let mut ws = Ws::open_path(&s.addr(), ECHO).await;
    // Past the 10 s authentication deadline that closes the chat dialects'
    // unauthenticated sockets (1008).
    ws.expect_silence(Duration::from_millis(10_500)).await;
    ws.send_text("still open").await;
    match ws.next_frame(T).await {
        Frame::Text(got) => assert_eq!(got, "still open"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_and_frames_over_128_kib_are_closed_with_1009() {
    let s = echo_server();
    let addr = s.addr();
    // One 200 KiB text message in one frame; then binary.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send_text("x".repeat(200 * 1024)).await;
    assert_eq!(ws.expect_closed(T).await, Some(1009));
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send_binary(vec![7u8; 200 * 1024]).await;
    assert_eq!(ws.expect_closed(T).await, Some(1009));
    // 200 KiB in 4 KiB fragments: no frame is too big, the message is.
    // (The server closes, and stops reading, part-way: later sends may
    // fail, which is fine.)
    let mut ws = Ws::open_path(&addr, ECHO).await;
    let chunk = vec![b'y'; 4096];
    for i in 0..50 {
        let frame = raw(if i == 0 { TEXT } else { CONTINUE }, &chunk, i == 49);
        let sent = timeout(T, futures_util::SinkExt::send(&mut ws.stream, frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    assert_eq!(ws.expect_closed(T).await, Some(1009));
    // Exactly at the limit still echoes.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    let max = "z".repeat(128 * 1024);
    ws.send_text(max.clone()).await;
    match ws.next_frame(T).await {
        Frame::Text(got) => assert!(got == max, "128 KiB echo differs"),
        other => panic!("expected the 128 KiB echo, got {other:?}"),
    }
}

#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    let s = echo_server();
    let mut ws = Ws::open_path(&s.addr(), ECHO).await;
    // Text in three fragments, a ping between two of them (RFC 6455 §5.4:
    // control frames may be interleaved), and "ö" split across fragments.
    let text = "fragmented wörld";
    let bytes = text.as_bytes();
    let split = text.find('ö').unwrap() + 1; // inside the two-byte "ö"
    ws.send(raw(TEXT, &bytes[..4], false)).await;
    ws.send(Message::Ping(b"between".to_vec().into())).await;
    ws.send(raw(CONTINUE, &bytes[4..split], false)).await;
    ws.send(raw(CONTINUE, &bytes[split..], true)).await;
    match ws.next_frame(T).await {
        Frame::Text(got) => assert_eq!(got, text),
        other => panic!("expected the reassembled text, got {other:?}"),
    }
    // Binary, with an empty fragment in the middle.
    ws.send(raw(BINARY, &[1, 2, 3], false)).await;
    ws.send(raw(CONTINUE, &[], false)).await;
    ws.send(raw(CONTINUE, &[4, 5], true)).await;
    match ws.next_frame(T).await {
        Frame::Binary(got) => assert_eq!(got, vec![1, 2, 3, 4, 5]),
        other => panic!("expected the reassembled bytes, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_utf8_and_protocol_errors_close_with_their_codes() {
    let s = echo_server();
    let addr = s.addr();
    // Invalid UTF-8 in one frame, and across fragments: 1007.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(raw(TEXT, &[b'a', 0xff, b'b'], true)).await;
    assert_eq!(ws.expect_closed(T).await, Some(1007));
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(raw(TEXT, "ok ".as_bytes(), false)).await;
    ws.send(raw(CONTINUE, &[0xed, 0xa0, 0x80], true)).await; // a surrogate
    assert_eq!(ws.expect_closed(T).await, Some(1007));
    // A continuation with nothing to continue; a reserved opcode: 1002.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(raw(CONTINUE, b"orphan", true)).await;
    assert_eq!(ws.expect_closed(T).await, Some(1002));
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(raw(OpCode::Data(Data::Reserved(3)), b"?", true))
        .await;
    assert_eq!(ws.expect_closed(T).await, Some(1002));
}

/// The peer's close is answered with a close frame, on the echo endpoint
/// and on every chat dialect (they share the session loop). Autobahn found
/// parlor dropping the TCP connection instead (141 of 301 cases): the loop
/// "flushed" the queued reply with a call that sends a close of its own,
/// which tungstenite refuses after the peer's, so the reply never left.
#[tokio::test]
async fn a_peers_close_is_answered_with_a_close_frame() {
    let s = echo_server();
    let addr = s.addr();
    s.user_add("ann", "staff", "pw-ann");
    let token = s.token_issue("ann");
    let typed = format!("/ws?token={token}");
    for path in [ECHO, "/chat/connect", "/actions", typed.as_str()] {
        let mut ws = Ws::open_path(&addr, path).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        })))
        .await;
        assert_eq!(ws.expect_closed(T).await, Some(1000), "{path}: close reply");
        expect_tcp_end(&mut ws).await;
    }
    // A close with another valid code is echoed; one without a code gets
    // one without a code; an invalid code (999) gets 1002.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: 3000.into(),
        reason: "".into(),
    })))
    .await;
    assert_eq!(ws.expect_closed(T).await, Some(3000));
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(Message::Close(None)).await;
    assert!(matches!(ws.next_frame(T).await, Frame::Close(None)));
    expect_tcp_end(&mut ws).await;
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send(raw(
        OpCode::Control(Control::Close),
        &999u16.to_be_bytes(),
        true,
    ))
    .await;
    assert_eq!(ws.expect_closed(T).await, Some(1002));
    // And data sent before the close is still echoed first.
    let mut ws = Ws::open_path(&addr, ECHO).await;
    ws.send_text("last words").await;
    ws.send(Message::Close(None)).await;
    match ws.next_frame(T).await {
        Frame::Text(got) => assert_eq!(got, "last words"),
        other => panic!("expected the echo before the close, got {other:?}"),
    }
    assert!(matches!(ws.next_frame(T).await, Frame::Close(None)));
}

/// A client frame (masked, with a zero key: the payload goes as it is).
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first_byte];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A message too big while the peer is still sending it (Autobahn 9.3.1:
/// 4 MiB in 64-byte fragments): the close frame must reach the peer, and the
/// connection must end with a FIN, not a reset. Autobahn found parlor
/// closing the socket with the rest of the message unread, which resets the
/// connection — and a reset can destroy the close frame before the peer
/// reads it. Now the server half-closes and discards the rest (lingering
/// close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_big_closes_cleanly_while_the_peer_still_sends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = echo_server();
    let addr = s.addr();
    for _ in 0..5 {
        let mut tcp = timeout(T, tokio::net::TcpStream::connect(&addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let head = format!(
            "GET {ECHO} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = timeout(T, tcp.read(&mut buf))
                .await
                .expect("no handshake answer")
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 101"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut from_server = got.split_off(end);

        // 4 MiB of text in 64-byte fragments, sent without waiting, in
        // parallel with the reads below.
        let (mut rd, mut wr) = tcp.into_split();
        let writer = tokio::spawn(async move {
            let chunk = [b'*'; 64];
            let mut batch = Vec::with_capacity(8 * 1024);
            for i in 0..65_536u32 {
                let first = match i {
                    0 => 0x01,
                    65_535 => 0x80,
                    _ => 0x00,
                };
                batch.extend_from_slice(&client_frame(first, &chunk));
                if batch.len() >= 4 * 1024 {
                    if wr.write_all(&batch).await.is_err() {
                        return;
                    }
                    batch.clear();
                }
            }
            let _ = wr.write_all(&batch).await;
            // Keep the write half open: the server decides when to close.
            tokio::time::sleep(T).await;
        });
        // Everything until the server ends the connection: a FIN (read 0),
        // not a reset.
        let ended = loop {
            match timeout(T, rd.read(&mut buf)).await {
                Err(_) => panic!("the server did not end the connection"),
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => from_server.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => break Err(e),
            }
        };
        writer.abort();
        assert!(
            from_server.len() >= 4 && from_server[0] == 0x88,
            "expected a close frame, got {from_server:02x?}"
        );
        assert_eq!(u16::from_be_bytes([from_server[2], from_server[3]]), 1009);
        if let Err(e) = ended {
            panic!("the connection was reset after the close frame: {e}");
        }
    }
}
