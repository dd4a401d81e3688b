//! The bench's clients: the target (loopback unless allowed otherwise), a
//! keep-alive HTTP/1.1 client (GET and POST), the admin and login calls, and
//! `/chat/connect` WebSockets with small buffers. Every wait is bounded.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`, as given (for the Host header and the WebSocket URL).
    pub authority: String,
    pub addr: SocketAddr,
    /// Bound for every single network wait (connect, request, frame).
    pub timeout: Duration,
}

impl Target {
    /// Parses `ws://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT` and
    /// refuses anything that is not loopback unless `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool, timeout: Duration) -> Result<Target> {
        let rest = if let Some(r) = url.strip_prefix("ws://") {
            r
        } else if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("wss://") || url.starts_with("https://") {
            bail!("{url}: TLS is not supported; bench the daemon itself, not its proxy")
        } else if url.contains("://") {
            bail!("{url}: the URL must be ws://HOST:PORT")
        } else {
            url
        };
        let authority = rest.split('/').next().unwrap_or_default().to_string();
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        {
            authority.clone()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {with_port}"))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| anyhow!("{with_port} resolves to no address"))?;
        if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
            bail!(
                "{url} is not a loopback address: a load test against another machine needs \
                 --allow-remote (and its operator's consent)"
            );
        }
        Ok(Target {
            authority: with_port,
            addr,
            timeout,
        })
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/chat/connect", self.authority)
    }
}

/// An HTTP status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "answer {} is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON when the status is `want`, else an error naming it.
    pub fn expect(&self, want: u16, what: &str) -> Result<Value> {
        if self.status != want {
            bail!(
                "{what}: HTTP {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            );
        }
        self.json()
    }

    /// A string field of the JSON body.
    pub fn field(&self, want: u16, what: &str, key: &str) -> Result<String> {
        let v = self.expect(want, what)?;
        v[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{what}: no string `{key}` in {v}"))
    }
}

/// One keep-alive HTTP/1.1 connection; reconnects when the server closed it.
pub struct Http {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Http {
    pub fn new(target: &Target) -> Http {
        Http {
            target: target.clone(),
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let t = &self.target;
        let stream = timeout(t.timeout, TcpStream::connect(t.addr))
            .await
            .map_err(|_| anyhow!("connecting to {} timed out", t.addr))?
            .with_context(|| format!("connecting to {}", t.addr))?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = timeout(t.timeout, hyper::client::conn::http1::handshake(io))
            .await
            .map_err(|_| anyhow!("HTTP handshake with {} timed out", t.addr))??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// POSTs a JSON body (with a bearer token if given); the whole answer
    /// within the target's timeout.
    pub async fn post(&mut self, path: &str, token: Option<&str>, body: &Value) -> Result<Reply> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.request(hyper::Method::POST, path, token, Some(body))
            .await
    }

    /// GETs `path` (with a bearer token if given); the whole answer within
    /// the target's timeout.
    pub async fn get(&mut self, path: &str, token: Option<&str>) -> Result<Reply> {
        self.request(hyper::Method::GET, path, token, None).await
    }

    async fn request(
        &mut self,
        method: hyper::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Reply> {
        let limit = self.target.timeout;
        timeout(limit, self.request_inner(method.clone(), path, token, body))
            .await
            .map_err(|_| anyhow!("{method} {path}: no complete answer within {limit:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    async fn request_inner(
        &mut self,
        method: hyper::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Reply> {
        let ready = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected above");
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.target.authority);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let res = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(Reply { status, body })
    }
}

/// `POST /auth/login` → (token, user id).
pub async fn login(http: &mut Http, user: &str, password: &str) -> Result<(String, String)> {
    let r = http
        .post(
            "/auth/login",
            None,
            &json!({"username": user, "password": password}),
        )
        .await?;
    let what = format!("login of {user}");
    let v = r.expect(200, &what)?;
    match (v["token"].as_str(), v["user_id"].as_str()) {
        (Some(t), Some(u)) => Ok((t.to_string(), u.to_string())),
        _ => bail!("{what}: unexpected answer {v}"),
    }
}

/// Small buffers on the client side too: 10,000 idle sockets must not
/// cost the load generator a gigabyte.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens `/chat/connect`, sends the auth frame and waits for
/// `{"status":"CONNECTED"}`.
pub async fn ws_connect(target: &Target, token: &str) -> Result<Ws> {
    let limit = target.timeout;
    let run = async {
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        let _ = stream.set_nodelay(true);
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(target.ws_url(), stream, Some(ws_config()))
                .await
                .context("WebSocket handshake")?;
        ws.send(Message::text(json!({"auth_token": token}).to_string()))
            .await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().contains("\"CONNECTED\"") {
                        return Ok(ws);
                    }
                    bail!("authentication refused: {}", t.as_str());
                }
                Some(Ok(Message::Close(c))) => bail!("closed while authenticating: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => bail!("connection ended while authenticating"),
            }
        }
    };
    timeout(limit, run)
        .await
        .map_err(|_| anyhow!("connecting a WebSocket took longer than {limit:?}"))?
}

/// Sends a close frame and waits (briefly) for the server's.
pub async fn ws_close(mut ws: Ws) {
    let _ = timeout(Duration::from_secs(2), async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_allow_remote() {
        let t = Duration::from_secs(1);
        let ok = Target::parse("ws://127.0.0.1:8080", false, t).unwrap();
        assert_eq!(ok.authority, "127.0.0.1:8080");
        assert_eq!(ok.ws_url(), "ws://127.0.0.1:8080/chat/connect");
        assert!(Target::parse("http://[::1]:9/", false, t).is_ok());
        assert!(Target::parse("127.0.0.1:9", false, t).is_ok());
        let err = Target::parse("ws://192.0.2.1:8080", false, t).unwrap_err();
        assert!(err.to_string().contains("--allow-remote"), "{err}");
        assert!(Target::parse("ws://192.0.2.1:8080", true, t).is_ok());
        assert!(Target::parse("wss://127.0.0.1:1", false, t).is_err());
        assert!(Target::parse("ftp://127.0.0.1:1", false, t).is_err());
    }
}
