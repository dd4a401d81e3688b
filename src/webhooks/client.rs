//! One webhook call: connect (TCP, and TLS for `https://` with the Mozilla
//! roots compiled in from `webpki-roots`), `POST`, read the status. Each
//! attempt has its own connection; redirects are not followed (a 3xx is a
//! failed attempt, like any other non-2xx answer).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::core::webhooks::target;

/// Answers up to this size are read (and dropped) before the connection is
/// closed, so a receiver does not see its answer cut off.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Client {
    /// `connect_timeout` bounds name resolution, TCP and the TLS handshake;
    /// `response_timeout` bounds sending the request and reading the answer.
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Client {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            tls: TlsConnector::from(Arc::new(config)),
            connect_timeout,
            response_timeout,
        }
    }

    /// POSTs `body` to `url`; the answer's status, or why there is none (a
    /// sentence for the operator's listing and the log).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
    ) -> Result<StatusCode, String> {
        let t = target(url)?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(t.path.as_str())
            .header(hyper::header::HOST, t.host_header.as_str());
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("the request could not be built: {e}"))?;
        let to = format!("{}:{}", t.host, t.port);
        let tcp = timeout(
            self.connect_timeout,
            TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "connecting to {to} timed out after {:?}",
                self.connect_timeout
            )
        })?
        .map_err(|e| format!("connecting to {to} failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let answer = if t.https {
            let name = ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{:?} is not a valid TLS server name: {e}", t.host))?;
            let tls = timeout(self.connect_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| format!("TLS handshake with {to} timed out"))?
                .map_err(|e| format!("TLS handshake with {to} failed: {e}"))?;
            timeout(self.response_timeout, exchange(tls, req)).await
        } else {
            timeout(self.response_timeout, exchange(tcp, req)).await
        };
        answer.map_err(|_| format!("{to} did not answer within {:?}", self.response_timeout))?
    }
}

/// Aborts the connection task when the call ends (or is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<S>(io: S, req: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = res.status();
    let _ = Limited::new(res.into_body(), MAX_ANSWER).collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_connector_builds_with_the_compiled_in_roots() {
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
        let _ = Client::new(Duration::from_secs(1), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_failed_attempt_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let c = Client::new(Duration::from_secs(2), Duration::from_secs(2));
        let e = c
            .post(&format!("http://127.0.0.1:{port}/"), &[], b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("connecting to 127.0.0.1"), "{e}");
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let c = Client::new(Duration::from_secs(2), Duration::from_millis(200));
        let t0 = std::time::Instant::now();
        let e = c
            .post(&format!("http://{addr}/"), &[], b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[tokio::test]
    async fn https_speaks_tls_and_fails_cleanly_against_a_plain_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            buf
        });
        let c = Client::new(Duration::from_secs(2), Duration::from_secs(2));
        let e = c
            .post(&format!("https://{addr}/"), &[], b"{}".to_vec())
            .await
            .unwrap_err();
        assert!(e.contains("TLS handshake"), "{e}");
        // The first bytes were a TLS handshake record (0x16), not HTTP.
        assert_eq!(serve.await.unwrap()[0], 0x16);
    }
}
