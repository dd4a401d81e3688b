//! A tiny HTTP/1.1 client over hyper's low-level client: one connection
//! per request, every exchange bounded by [`HTTP_TIMEOUT`]; [`Resp`] with
//! the assertions tests make on answers (status, REST error bodies).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long one HTTP request (connect + request + whole body) may take.
/// Generous because logins hash with argon2 (slow in debug builds).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response ({}) is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// Asserts the status, and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
        self.json()
    }

    /// Asserts `status` and a body of exactly `{"error": "<non-empty>",
    /// "error_code": code}` (API.md §1, REST error body).
    /// Asserts the status of an answer without a body (`204`).
    pub fn expect_status(&self, status: u16) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
    }

    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {:?}",
            self.text()
        );
        assert_error_body(&self.json(), code);
    }
}

/// `v` is exactly `{"error": "<non-empty string>", "error_code": code}`.
pub fn assert_error_body(v: &Value, code: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {v}"));
    assert_eq!(
        obj.get("error_code"),
        Some(&json!(code)),
        "error_code in {v}"
    );
    let msg = obj.get("error").and_then(Value::as_str);
    assert!(
        msg.is_some_and(|m| !m.is_empty()),
        "error must be a non-empty string: {v}"
    );
    assert_eq!(
        obj.len(),
        2,
        "error body must have exactly error + error_code: {v}"
    );
}

/// One request on its own connection to `addr` (always 127.0.0.1).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let body: Bytes = body.into();
    let what = format!("{method} {path}");
    match timeout(HTTP_TIMEOUT, http_inner(addr, method, path, headers, body)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{what} to {addr} failed: {e}"),
        Err(_) => panic!("{what} to {addr}: no complete response within {HTTP_TIMEOUT:?}"),
    }
}

/// Like [`http`], but a failed exchange is an `Err`, not a panic (for
/// clients that outlive a killed daemon).
pub async fn http_inner(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Resp, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    conn_task.abort();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub async fn get(addr: &str, path: &str) -> Resp {
    http(addr, "GET", path, &[], Bytes::new()).await
}

/// GET with `Authorization: Bearer TOKEN`.
pub async fn get_as(addr: &str, path: &str, token: &str) -> Resp {
    let auth = format!("Bearer {token}");
    http(addr, "GET", path, &[("authorization", &auth)], Bytes::new()).await
}

/// POST with a raw body, `Content-Type: application/json` and, if given,
/// `Authorization: Bearer TOKEN`.
pub async fn post_raw(addr: &str, path: &str, token: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    http(addr, "POST", path, &h, body).await
}

pub async fn post_json(addr: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
    post_raw(addr, path, token, serde_json::to_vec(body).unwrap()).await
}

/// POST /auth/login; asserts 200 `{"token","user_id"}` and returns them.
pub async fn login(addr: &str, username: &str, password: &str) -> (String, String) {
    let r = post_json(
        addr,
        "/auth/login",
        None,
        &json!({"username": username, "password": password}),
    )
    .await;
    let v = r.expect(200);
    let token = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {v}"))
        .to_string();
    let uid = v["user_id"]
        .as_str()
        .unwrap_or_else(|| panic!("user_id must be a string: {v}"));
    uid.parse::<u64>()
        .unwrap_or_else(|_| panic!("user_id not decimal: {v}"));
    assert!(!token.is_empty(), "empty token");
    (token, uid.to_string())
}
