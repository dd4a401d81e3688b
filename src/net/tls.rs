//! Optional TLS for the listener (`--tls-cert` / `--tls-key`): TLS 1.2 and
//! 1.3 with rustls (ring), ALPN `http/1.1`. The files are read once at
//! start; a bad file stops the daemon before it binds.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{Error, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must finish within this of the connection's accept
/// (the HTTP header timeout starts after it).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
