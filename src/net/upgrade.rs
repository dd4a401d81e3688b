//! The WebSocket opening handshake (RFC 6455 §4.2), by hand: validate the
//! request, compute `Sec-WebSocket-Accept`, answer 101, and hand the
//! upgraded connection to tokio-tungstenite with small, explicit limits.

use base64::Engine;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::http::{self, Resp};
use crate::error::Error;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A socket's read buffer: chat frames are small, and an idle socket
/// keeps this much allocated (a bigger frame grows it while it is read).
pub const READ_BUFFER: usize = 512;

/// Frames queued for a socket are written out once this many bytes are
/// waiting, else at the session loop's flush (one per wake-up, however
/// many frames it queued: `net::ws`).
pub const WRITE_BUFFER: usize = 4 * 1024;

/// Per-socket limits. tungstenite's defaults allocate a 128 KiB read buffer
/// per socket; a small one keeps an idle socket cheap.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(http::MAX_BODY))
        .max_frame_size(Some(http::MAX_BODY))
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Why a handshake was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not an upgrade request, or a bad key: 400.
    Bad(&'static str),
    /// Not version 13: 426 with `Sec-WebSocket-Version: 13`.
    Version,
}

impl Refusal {
    /// The answer: the caller's error response for it (`render`, the
    /// dialect's wire error), made `426` with `Sec-WebSocket-Version: 13`
    /// for a version this server does not speak.
    pub fn response(&self, render: impl Fn(&Error) -> Resp) -> Resp {
        match self {
            Refusal::Bad(why) => render(&Error::bad_request(*why)),
            Refusal::Version => {
                let mut r = render(&Error::bad_request(
                    "only WebSocket version 13 is supported",
                ));
                *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
                r.headers_mut()
                    .insert("sec-websocket-version", HeaderValue::from_static("13"));
                r
            }
        }
    }
}

/// Checks an opening handshake; `Ok(accept)` or why it is refused.
pub fn check<B>(req: &Request<B>) -> Result<String, Refusal> {
    check_headers(req.method(), req.headers())
}

/// [`check`] on a request's method and headers alone (pure, so property
/// tests and the fuzz target can drive it with any headers).
pub fn check_headers(method: &Method, h: &HeaderMap) -> Result<String, Refusal> {
    if method != Method::GET
        || !has_token(h, CONNECTION, "upgrade")
        || !has_token(h, UPGRADE, "websocket")
    {
        return Err(Refusal::Bad(
            "this endpoint speaks WebSocket: send a GET with Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if h.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return Err(Refusal::Version);
    }
    let key = h
        .get("sec-websocket-key")
        .map(|v| v.as_bytes().trim_ascii())
        .unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => Ok(accept_key(key)),
        _ => Err(Refusal::Bad(
            "Sec-WebSocket-Key must be 16 bytes, base64-encoded",
        )),
    }
}

/// Answers the handshake and runs `session` on the upgraded socket,
/// holding the connection's `guard` until it ends; or why the handshake
/// is refused (the caller answers with [`Refusal::response`]).
pub fn upgrade<B, F, Fut>(
    guard: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    mut req: Request<B>,
    session: F,
) -> Result<Resp, Refusal>
where
    F: FnOnce(Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let accept = check(&req)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _guard = guard;
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config()),
                )
                .await;
                session(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut r = http::empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(Method::GET).uri("/chat/connect");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// A refusal's answer, as a caller renders it: its message, status 400.
    fn refused(r: Refusal) -> Resp {
        r.response(|e| http::json(StatusCode::BAD_REQUEST, &e.message))
    }

    const OK: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn rfc6455_sample_key_gives_the_sample_accept() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        // Firefox's `keep-alive, Upgrade` and any case of `websocket`.
        assert_eq!(check(&req(&OK)).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn wrong_version_is_426_with_the_supported_version() {
        let mut h = OK;
        h[2] = ("sec-websocket-version", "8");
        let r = refused(check(&req(&h)).unwrap_err());
        assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(r.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn bad_key_or_missing_upgrade_is_400() {
        let mut h = OK;
        h[3] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(
            refused(check(&req(&h)).unwrap_err()).status(),
            StatusCode::BAD_REQUEST
        );
        let mut h = OK;
        h[0] = ("connection", "keep-alive");
        assert_eq!(
            refused(check(&req(&h)).unwrap_err()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            refused(check(&req(&[])).unwrap_err()).status(),
            StatusCode::BAD_REQUEST
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use hyper::header::HeaderName;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        "connection",
        "upgrade",
        "sec-websocket-version",
        "sec-websocket-key",
        "host",
        "origin",
    ];

    /// Header lines as a client might send them — mostly the ones the
    /// handshake reads, with values of any bytes a header may hold.
    fn headers() -> impl Strategy<Value = HeaderMap> {
        let name = prop_oneof![
            4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
            1 => "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,20}",
        ];
        let value = prop_oneof![
            "(keep-alive, )?[Uu]pgrade|[Ww]eb[Ss]ocket|13|8|[A-Za-z0-9+/]{22}==",
            "[ \\t]*[A-Za-z0-9+/=]{0,30}[ \\t]*",
            proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ];
        proptest::collection::vec((name, value), 0..8).prop_map(|pairs| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_str(&v),
                ) {
                    h.append(n, v);
                }
            }
            h
        })
    }

    fn valid(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("sec-websocket-version", HeaderValue::from_static("13"));
        h.insert("sec-websocket-key", HeaderValue::from_str(key).unwrap());
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn any_headers_are_accepted_or_refused_with_a_reason(
            h in headers(),
            post in proptest::bool::weighted(0.1),
        ) {
            let method = if post { Method::POST } else { Method::GET };
            match check_headers(&method, &h) {
                Ok(accept) => {
                    prop_assert_eq!(&method, &Method::GET);
                    let key = h["sec-websocket-key"].as_bytes().trim_ascii();
                    prop_assert_eq!(accept, accept_key(key));
                }
                Err(Refusal::Bad(why)) => prop_assert!(!why.is_empty()),
                Err(Refusal::Version) => prop_assert_ne!(
                    h.get("sec-websocket-version").map(HeaderValue::as_bytes),
                    Some(&b"13"[..])
                ),
            }
        }

        #[test]
        fn every_16_byte_key_is_accepted_with_its_rfc6455_answer(
            raw in any::<[u8; 16]>(),
            pad in "[ \\t]{0,2}",
        ) {
            let key = base64::engine::general_purpose::STANDARD.encode(raw);
            let got = check_headers(&Method::GET, &valid(&format!("{pad}{key}{pad}")));
            let mut sha = Sha1::new();
            sha.update(format!("{key}{GUID}"));
            let want = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
            prop_assert_eq!(got, Ok(want));
        }

        #[test]
        fn keys_of_any_other_length_are_refused(
            raw in proptest::collection::vec(any::<u8>(), 0..40).prop_filter("not 16", |r| r.len() != 16),
        ) {
            let key = base64::engine::general_purpose::STANDARD.encode(raw);
            prop_assert!(matches!(check_headers(&Method::GET, &valid(&key)), Err(Refusal::Bad(_))));
        }
    }

    #[test]
    fn the_fuzz_targets_input_shape_reaches_acceptance() {
        // flags 7: the three fixed headers; then a key line.
        let mut data = vec![7u8];
        data.extend_from_slice(b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==");
        crate::fuzzing::upgrade(&data);
        let h = {
            let mut h = valid("dGhlIHNhbXBsZSBub25jZQ==");
            h.remove(CONNECTION);
            h
        };
        assert!(check_headers(&Method::GET, &h).is_err());
    }
}
