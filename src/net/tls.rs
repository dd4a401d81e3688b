//! Optional TLS for the listener (`--tls-cert` / `--tls-key`): TLS 1.2 and
//! 1.3 with rustls (ring), ALPN `http/1.1`. The files are read once at
//! start; a bad file stops the daemon before it binds. A plain HTTP request
//! on the TLS port gets a short `400` that says to use https.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{Error, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must finish within this of the connection's accept
/// (the HTTP header timeout starts after it).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The answer to a plain HTTP request on the TLS port (API.md §1's error
/// shape), as nginx answers one.
const PLAIN_HTTP_BODY: &str = r#"{"error":"this port speaks HTTPS only: use https:// (wss:// for WebSockets)","error_code":"BAD_REQUEST"}"#;

/// How long the rest of a refused plain HTTP request is read (and dropped)
/// after the answer, so that closing does not reset the answer away.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(2);

/// Accepts one connection on the TLS port: the TLS handshake, unless its
/// first byte says it is plain HTTP (a request starts with its method, an
/// upper-case token; a TLS record with its type, 22 for a handshake). Such
/// a connection is answered `400` and closed, like one that closes before
/// saying anything: `None`. Anything else is left to rustls to refuse.
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0].is_ascii_uppercase() {
        refuse_plain_http(stream).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// Answers `400` without reading the request, half-closes, then drops what
/// the client still sends (bounded in time and bytes) until it closes.
async fn refuse_plain_http(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    tracing::debug!(peer = ?stream.peer_addr().ok(), "plain HTTP on the TLS port: answered 400");
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    let _ = tokio::time::timeout(PLAIN_HTTP_LINGER, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Reads a PEM certificate chain (leaf first) and its private key (PKCS#8,
/// PKCS#1 RSA or SEC1 EC) and builds the acceptor. Every error is one line
/// that names the file at fault.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> anyhow::Result<TlsAcceptor> {
    let cert_pem = std::fs::read(cert_path)
        .with_context(|| format!("reading TLS certificate {}", cert_path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("TLS certificate {}: bad PEM: {e}", cert_path.display()))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate {}: no PEM `CERTIFICATE` in the file",
            cert_path.display()
        );
    }
    let key_pem = std::fs::read(key_path)
        .with_context(|| format!("reading TLS key {}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "TLS key {}: no PEM private key (PKCS#8, RSA or EC) in the file",
            key_path.display()
        ),
        e => anyhow!("TLS key {}: bad PEM: {e}", key_path.display()),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no usable protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            Error::InconsistentKeys(_) => anyhow!(
                "TLS key {} is not the private key of the certificate {}",
                key_path.display(),
                cert_path.display()
            ),
            e => anyhow!(
                "TLS key {} with certificate {}: {e}",
                key_path.display(),
                cert_path.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("parlor-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let missing = dir.join("missing.pem");
        let e = format!("{:#}", acceptor(&missing, &empty).err().unwrap());
        assert!(e.contains("missing.pem"), "{e}");
        let e = format!("{:#}", acceptor(&empty, &empty).err().unwrap());
        assert!(e.contains("empty.pem") && e.contains("no PEM"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
