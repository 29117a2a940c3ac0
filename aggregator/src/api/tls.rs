//! HTTPS for `serve --tls-cert PEM --tls-key PEM`.
//!
//! Probes upload through networks that may tamper with plain HTTP; the signature already protects
//! each measurement, but TLS also hides which tests a volunteer ran from the network they run
//! them on. The accept loop (`listen.rs`) runs each handshake in the connection's own task with
//! a deadline, so a client that connects and stays silent cannot hold up everyone else's accept,
//! and every route (and whoami's use of the peer address) works the same with and without TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate and key problems, found before the server listens.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or held no certificate.
    #[error("cannot read a certificate chain from {path}: {reason}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or held no private key.
    #[error("cannot read a private key from {path}: {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (for instance a key that does not match the certificate).
    #[error("the certificate and key do not make a TLS server: {0}")]
    Config(rustls::Error),
}

/// Loads a PEM certificate chain and private key into a rustls server configuration offering
/// HTTP/1.1 (the only protocol the server speaks).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("vantage-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a pem\n").expect("write");
        let err = server_config(&dir.join("nope.pem"), &empty).expect_err("missing");
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let err = server_config(&empty, &empty).expect_err("empty");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read a certificate chain from {}: no CERTIFICATE block",
                empty.display()
            )
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
