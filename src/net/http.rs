//! HTTP plumbing shared by every dialect's REST endpoints: body reading
//! with a size cap, bearer tokens, JSON replies (an error too: each
//! dialect's `dialects::wire_error::WireError` picks its status and body).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

/// Request bodies larger than this are refused with 413 (API.md §1: at
/// least 128 KiB, so a 16 KiB message may come `\u`-escaped).
pub const MAX_BODY: usize = 128 * 1024;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).expect("serializing a reply");
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Reads a JSON body of at most `MAX_BODY` bytes.
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T> {
    let too_large = || Error::too_large(format!("request body is over {MAX_BODY} bytes"));
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Error::bad_request("the request body could not be read")
            }
        })?
        .to_bytes();
    json_object(&body)
}

/// Parses a body or frame that must be a JSON object into `T`. (serde alone
/// would also accept a struct written as an array, which nobody means.)
pub fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::bad_request("expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| Error::bad_request(format!("malformed request: {e}")))
}

/// The token of `Authorization: Bearer <token>`.
pub fn bearer<B>(req: &Request<B>) -> Option<&str> {
    let v = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Writes a streamed body from a blocking producer, in chunks of ~16 KiB
/// through a small bounded channel: memory stays flat however long the
/// body is, and a client that stops reading stops the producer.
pub struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

const CHUNK: usize = 16 * 1024;

impl ChunkWriter {
    /// `false` once the client has gone away.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).is_ok()
    }
}

/// A `200 application/json` response whose body `produce` writes on the
/// blocking pool. If `produce` fails midway the body is cut off (the client
/// sees an incomplete response, never a wrong one).
pub fn stream_json<F>(produce: F) -> Resp
where
    F: FnOnce(&mut ChunkWriter) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            buf: Vec::with_capacity(CHUNK),
            tx: tx.clone(),
        };
        match produce(&mut w) {
            Ok(()) => {
                w.flush();
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `%XX` escapes (and, in a query, `+` for a space) → UTF-8 text; `None`
/// for a `%` without two hex digits or for bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                // Two hex digits: `from_str_radix` alone would also take a sign (`%+a`).
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?)
                    .ok()
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_takes_two_hex_digits_and_nothing_else() {
        assert_eq!(
            super::percent_decode("a%2Fb%0a", false).as_deref(),
            Some("a/b\n")
        );
        assert_eq!(super::percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(super::percent_decode("a+b", true).as_deref(), Some("a b"));
        // `from_str_radix` would take these signs (the bug the property
        // tests found).
        for bad in ["%+a", "a%+0b", "%-1", "%", "%a", "%zz", "%C3"] {
            assert_eq!(super::percent_decode(bad, true), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn bearer_takes_the_token_case_insensitively() {
        let req = |v: &str| {
            Request::builder()
                .header(AUTHORIZATION, v)
                .body(())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&req("bearer abc")), Some("abc"));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
        assert_eq!(bearer(&Request::new(())), None);
    }

    #[test]
    fn json_object_refuses_arrays_that_serde_would_take_for_structs() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Login {
            username: String,
            password: String,
        }
        assert!(json_object::<Login>(br#"{"username":"a","password":"b"}"#).is_ok());
        let e = json_object::<Login>(br#"["a","b"]"#).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::BadRequest);
        assert!(json_object::<Login>(b"{").is_err());
        assert!(json_object::<Login>(br#"{"username":"a"}"#).is_err());
    }
}
