//! Raw TCP, for requests hyper's client would not send as a test needs
//! them (odd heads, bodies that outlast an early answer), and a parser for
//! what comes back.

use tokio::net::TcpStream;
use tokio::time::timeout;

use super::http::HTTP_TIMEOUT;

/// Sends `head` (request line + headers, ending in a blank line), then
/// `body` while concurrently reading; returns whatever the server answered
/// until it closed or `HTTP_TIMEOUT` passed (write errors are ignored: the
/// server may answer early and stop reading).
pub async fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = timeout(HTTP_TIMEOUT, TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        // Keep the write half open; the server decides when to close.
        tokio::time::sleep(HTTP_TIMEOUT).await;
        drop(wr);
    });
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + HTTP_TIMEOUT;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if response_complete(&got) {
                    break;
                }
            }
        }
    }
    writer.abort();
    got
}

/// True when `buf` holds a full response head and a complete
/// Content-Length (or chunked) body.
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().ok())
        })
        .flatten();
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        None if head.contains("transfer-encoding: chunked") => buf.ends_with(b"0\r\n\r\n"),
        None => false,
    }
}

/// Parses a raw HTTP/1.1 response into (status, lower-cased head, body).
pub fn parse_raw_response(buf: &[u8]) -> (u16, String, Vec<u8>) {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(buf)
            )
        });
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let lower = head.to_ascii_lowercase();
    let mut body = buf[end + 4..].to_vec();
    if lower.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, lower, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}
