//! How each dialect shows a core error to its clients: one trait,
//! [`WireError`] (garage's `ApiError`), and one impl per dialect, in that
//! dialect's own file — the only place it turns a core `Kind` into a
//! status, a code or a frame:
//!
//! - [`Rest`] (here): API.md §1's `{"error","error_code"}` with a status,
//!   what every dialect's HTTP endpoints answer (and the route table, the
//!   operator endpoints and a refused WebSocket handshake); its table is
//!   the codes every dialect uses unless it names its own;
//! - `rooms::Session`: that body as a frame, then close 1008;
//! - `actions::Session`: `{"action":"error","error_code","message"}`;
//! - `typed::Session`: `{"type":"error","data":{"code","message",
//!   "request_type"}}`, and `UNAUTHENTICATED` for bad credentials too;
//! - `patient::Patient`: §1's, and `400 INVALID_PAGE_TOKEN`.
//!
//! A client sees the error's message and its kind's code, never an
//! internal cause: `Error::internal` logs the cause where it happens and
//! keeps it out of the message.

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::error::{Error, Kind};
use crate::net::http::{self, Resp};

/// A dialect's wire error.
pub(crate) trait WireError {
    /// What fails in this dialect: the core's `Error`, or that with what
    /// the dialect adds (the request a frame named, its own failures).
    type Fail;
    /// What the client is sent: an HTTP response, or WebSocket frames.
    type Wire;
    /// This dialect's code for a core kind: API.md §1's unless the
    /// dialect says otherwise.
    fn code(kind: Kind) -> &'static str {
        Rest::table(kind).1
    }
    /// A failure as this dialect's client sees it.
    fn wire(fail: &Self::Fail) -> Self::Wire;
}

/// API.md §1's REST error: a status, `{"error","error_code"}`, and
/// `Retry-After` when rate limited or unavailable.
pub(crate) struct Rest;

impl Rest {
    /// The status and code of each kind: API.md §1's table.
    fn table(kind: Kind) -> (StatusCode, &'static str) {
        match kind {
            Kind::BadRequest => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Kind::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Kind::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Kind::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Kind::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Kind::Conflict => (StatusCode::CONFLICT, "CONFLICT"),
            Kind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"),
            Kind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Kind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Kind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    /// The body: `{"error":<message>,"error_code":<code>}` (also the rooms
    /// dialect's error frame).
    pub(crate) fn body(code: &str, message: &str) -> Value {
        json!({ "error": message, "error_code": code })
    }
}

impl WireError for Rest {
    type Fail = Error;
    type Wire = Resp;

    fn wire(e: &Error) -> Resp {
        let (status, code) = Self::table(e.kind);
        let mut r = http::json(status, &Self::body(code, &e.message));
        if let Some(wait) = e.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        r
    }
}

/// What the tests of every dialect's impl share.
#[cfg(test)]
pub(crate) mod check {
    use http_body_util::BodyExt;

    use super::WireError;
    use crate::error::{Error, Kind};
    use crate::net::http::Resp;
    use crate::net::ws::Out;

    /// Every core kind, in declaration order.
    pub(crate) const KINDS: [Kind; 10] = [
        Kind::BadRequest,
        Kind::InvalidCredentials,
        Kind::Unauthenticated,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::Conflict,
        Kind::TooLarge,
        Kind::RateLimited,
        Kind::Unavailable,
        Kind::Internal,
    ];

    #[test]
    fn every_kind_is_listed() {
        for (i, kind) in KINDS.into_iter().enumerate() {
            // Exhaustive: a new kind stops this compiling until it has an
            // arm — the reminder to list it in `KINDS` too, which every
            // dialect's test iterates.
            let listed_at = match kind {
                Kind::BadRequest => 0,
                Kind::InvalidCredentials => 1,
                Kind::Unauthenticated => 2,
                Kind::Forbidden => 3,
                Kind::NotFound => 4,
                Kind::Conflict => 5,
                Kind::TooLarge => 6,
                Kind::RateLimited => 7,
                Kind::Unavailable => 8,
                Kind::Internal => 9,
            };
            assert_eq!(listed_at, i, "{kind:?}");
            assert_eq!(kind as usize, i, "{kind:?} out of declaration order");
        }
    }

    /// For every core kind: `W` has an UPPER_SNAKE code for it, and what
    /// its client is sent (`shown` makes it text) carries that code and
    /// the message. An internal error shows no trace of its cause.
    pub(crate) fn every_kind_is_shown<W: WireError>(
        fail: impl Fn(Error) -> W::Fail,
        shown: impl Fn(W::Wire) -> String,
    ) {
        for kind in KINDS {
            let code = W::code(kind);
            assert!(
                !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{kind:?}: {code:?}"
            );
            let text = shown(W::wire(&fail(Error::new(kind, "what went wrong"))));
            assert!(text.contains(code), "{kind:?}: {text}");
            assert!(text.contains("what went wrong"), "{kind:?}: {text}");
        }
        let text = shown(W::wire(&fail(Error::internal("the disk at /srv/secret"))));
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(W::code(Kind::Internal)), "{text}");
    }

    /// A response as text: its status, then its body.
    pub(crate) fn response(r: Resp) -> String {
        use futures_util::FutureExt;
        let status = r.status();
        let body = r
            .into_body()
            .collect()
            .now_or_never()
            .expect("an error body is there at once")
            .expect("an error body reads")
            .to_bytes();
        format!("{status} {}", String::from_utf8_lossy(&body))
    }

    /// Frames as text: each text frame and close reason, one a line.
    pub(crate) fn frames(out: Vec<Out>) -> String {
        out.into_iter()
            .map(|o| match o {
                Out::Text(t) => t,
                Out::Close(code, reason) => format!("close {code} {reason}"),
                Out::Binary(_) => panic!("an error as a binary frame"),
                Out::Subscribe(_) => panic!("an error subscribes"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::check::{every_kind_is_shown, response};
    use super::*;

    #[test]
    fn every_kind_is_a_rest_error() {
        every_kind_is_shown::<Rest>(|e| e, response);
        for kind in check::KINDS {
            let r = Rest::wire(&Error::new(kind, "m"));
            assert!(r.status().is_client_error() || r.status().is_server_error());
        }
    }

    #[test]
    fn errors_map_to_status_code_and_retry_after() {
        let r = Rest::wire(&Error::rate_limited(Duration::from_millis(1500)));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        let r = Rest::wire(&Error::unavailable());
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "10");
        let r = Rest::wire(&Error::new(Kind::InvalidCredentials, "no"));
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(!r.headers().contains_key(RETRY_AFTER));
        assert_eq!(
            response(Rest::wire(&Error::too_large("big"))),
            r#"413 Payload Too Large {"error":"big","error_code":"TOO_LARGE"}"#
        );
    }
}
