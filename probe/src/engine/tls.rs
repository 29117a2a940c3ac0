//! TLS handshake (df-006-tlshandshake) with rustls and the ring provider.
//!
//! The URL's host is the SNI and the name the certificate is checked against. The peer's chain is
//! recorded also when verification fails: a censor's man-in-the-middle certificate is evidence,
//! and rustls does not expose the chain on the error path, so a [`RecordingVerifier`] copies it
//! before delegating to webpki. Roots are Mozilla's (webpki-roots, compiled in, so every probe
//! judges certificates alike) plus any extra roots from configuration.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Map;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::Trace;
use crate::failure::{Operation, StepError};
use crate::ooni::{BinaryData, TlsHandshake};

/// Errors setting up TLS, before any network I/O.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra-roots file could not be read or holds no certificate.
    #[error("cannot read CA certificates from {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Trust roots and crypto provider, shared by all handshakes of a run.
#[derive(Debug, Clone)]
pub struct TlsContext {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl TlsContext {
    /// Mozilla's roots plus `extra_roots`.
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots
                .add(cert)
                .map_err(|e| TlsSetupError::Config(format!("extra root rejected: {e}")))?;
        }
        Ok(TlsContext {
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Reads every certificate in a PEM file.
    pub fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
        let err = |reason: String| TlsSetupError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        Ok(certs)
    }

    /// A client configuration whose verifier records the chain into the returned slot.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<(ClientConfig, ChainSlot), StepError> {
        let slot = ChainSlot::default();
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| StepError::Tls {
                    addr: ([0, 0, 0, 0], 0).into(),
                    source: rustls::Error::General(e.to_string()),
                })?;
        let verifier = Arc::new(RecordingVerifier {
            inner,
            seen: slot.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| StepError::Tls {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok((config, slot))
    }
}

/// Where a [`RecordingVerifier`] leaves the peer's chain.
#[derive(Debug, Clone, Default)]
pub struct ChainSlot(Arc<Mutex<Option<Vec<CertificateDer<'static>>>>>);

impl ChainSlot {
    fn take(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

/// Copies the presented chain, then lets webpki decide.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: ChainSlot,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        if let Ok(mut slot) = self.seen.0.lock() {
            *slot = Some(chain);
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The SHA-256 of a server's certificate (DER), the one certificate a pinned handshake accepts.
/// Written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertPin(pub [u8; 32]);

impl CertPin {
    /// The pin of a certificate.
    pub fn of(cert: &[u8]) -> CertPin {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut pin = [0u8; 32];
        pin.copy_from_slice(digest.as_ref());
        CertPin(pin)
    }
}

impl std::fmt::Display for CertPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for CertPin {
    type Err = String;

    fn from_str(s: &str) -> Result<CertPin, String> {
        let bytes =
            hex::decode(s.trim()).map_err(|e| format!("certificate pin {s:?} is not hex: {e}"))?;
        let pin: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "certificate pin {s:?} has {} bytes; a SHA-256 has 32",
                b.len()
            )
        })?;
        Ok(CertPin(pin))
    }
}

/// Accepts the one certificate whose SHA-256 is the pin, and checks the handshake signatures
/// against it as usual, so the peer must hold that certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: CertPin,
    seen: ChainSlot,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.seen.0.lock() {
            *slot = Some(vec![end_entity.clone().into_owned()]);
        }
        if CertPin::of(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One observed handshake and, on success, the stream to carry HTTP.
pub struct Handshake<IO> {
    /// The record for `tls_handshakes`.
    pub record: TlsHandshake,
    /// The stream, or why there is none.
    pub result: Result<TlsStream<IO>, StepError>,
}

/// Inputs of one handshake.
#[derive(Debug, Clone)]
pub struct HandshakeSpec<'a> {
    /// SNI, and the name the certificate must be valid for.
    pub server_name: &'a str,
    /// The peer address, for the record.
    pub addr: std::net::SocketAddr,
    /// ALPN protocols to offer.
    pub alpn: &'a [&'a [u8]],
    /// Deadline.
    pub timeout: Duration,
    /// Tags for the record.
    pub tags: Option<Vec<String>>,
    /// Transaction id shared with the TCP connect.
    pub transaction_id: i64,
}

/// Runs a TLS handshake over `io`.
pub async fn handshake<IO>(
    ctx: &TlsContext,
    io: IO,
    spec: HandshakeSpec<'_>,
    trace: &Trace,
) -> Handshake<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let record = start_record(&spec, trace);
    let result = match ctx.client_config(spec.alpn) {
        Ok((config, slot)) => {
            run(config, slot, io, spec.server_name, spec.addr, spec.timeout).await
        }
        Err(e) => Err((e, ChainSlot::default())),
    };
    finish(record, result, trace)
}

/// Runs a TLS handshake over `io` that accepts exactly one certificate, whatever the SNI: the
/// throttling test sends a target's name to a server that is not that target (the IMC 2021
/// method), so name checks cannot apply, and pinning the server's certificate keeps a
/// man-in-the-middle from posing as it.
pub async fn handshake_pinned<IO>(
    ctx: &TlsContext,
    io: IO,
    spec: HandshakeSpec<'_>,
    pin: CertPin,
    trace: &Trace,
) -> Handshake<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let record = start_record(&spec, trace);
    let slot = ChainSlot::default();
    let verifier = Arc::new(PinnedVerifier {
        pin,
        seen: slot.clone(),
        provider: ctx.provider.clone(),
    });
    let result = match ClientConfig::builder_with_provider(ctx.provider.clone())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let mut config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = spec.alpn.iter().map(|p| p.to_vec()).collect();
            run(config, slot, io, spec.server_name, spec.addr, spec.timeout).await
        }
        Err(source) => Err((
            StepError::Tls {
                addr: spec.addr,
                source,
            },
            slot,
        )),
    };
    finish(record, result, trace)
}

/// The record of a handshake about to start.
fn start_record(spec: &HandshakeSpec<'_>, trace: &Trace) -> TlsHandshake {
    let t0 = trace.clock.secs();
    TlsHandshake {
        network: Some("tcp".into()),
        address: Some(spec.addr.to_string()),
        cipher_suite: String::new(),
        failure: None,
        negotiated_protocol: String::new(),
        no_tls_verify: false,
        peer_certificates: None,
        server_name: spec.server_name.to_string(),
        t0: Some(t0),
        t: t0,
        tags: spec.tags.clone(),
        tls_version: String::new(),
        transaction_id: Some(spec.transaction_id),
        x_alert: None,
        extra: Map::new(),
    }
}

/// Completes the record from the handshake's outcome.
fn finish<IO>(
    mut record: TlsHandshake,
    result: Result<(TlsStream<IO>, ChainSlot), (StepError, ChainSlot)>,
    trace: &Trace,
) -> Handshake<IO> {
    record.t = trace.clock.secs();
    let result = match result {
        Ok((stream, slot)) => {
            let (_, conn) = stream.get_ref();
            record.tls_version = conn
                .protocol_version()
                .map(tls_version_name)
                .unwrap_or_default();
            record.cipher_suite = conn
                .negotiated_cipher_suite()
                .map(|s| cipher_suite_name(s.suite()))
                .unwrap_or_default();
            record.negotiated_protocol = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            let chain = conn
                .peer_certificates()
                .map(|c| c.to_vec())
                .or_else(|| slot.take());
            record.peer_certificates = chain.map(encode_chain);
            Ok(stream)
        }
        Err((error, slot)) => {
            record.failure = Some(error.failure().to_string());
            record.peer_certificates = slot.take().map(encode_chain);
            if let StepError::Tls {
                source: rustls::Error::AlertReceived(alert),
                ..
            } = &error
            {
                record.x_alert = Some(alert_name(*alert));
            }
            tracing::debug!(%error, "tls handshake failed");
            Err(error)
        }
    };
    Handshake { record, result }
}

async fn run<IO>(
    config: ClientConfig,
    slot: ChainSlot,
    io: IO,
    server_name: &str,
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<(TlsStream<IO>, ChainSlot), (StepError, ChainSlot)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = match ServerName::try_from(server_name.to_string()) {
        Ok(name) => name,
        Err(e) => {
            let error = StepError::Tls {
                addr,
                source: rustls::Error::General(format!("invalid server name: {e}")),
            };
            return Err((error, slot));
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match tokio::time::timeout(timeout, connector.connect(name, io)).await {
        Ok(Ok(stream)) => Ok((stream, slot)),
        Ok(Err(source)) => {
            // rustls' own verdicts come back wrapped in io::Error(InvalidData).
            let error = match source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(tls) => StepError::Tls {
                    addr,
                    source: tls.clone(),
                },
                None => StepError::Io {
                    op: Operation::TlsHandshake,
                    target: addr.to_string(),
                    source,
                },
            };
            Err((error, slot))
        }
        Err(_) => Err((
            StepError::Timeout {
                op: Operation::TlsHandshake,
                target: addr.to_string(),
                after: timeout,
            },
            slot,
        )),
    }
}

fn encode_chain(chain: Vec<CertificateDer<'static>>) -> Vec<BinaryData> {
    chain
        .iter()
        .map(|c| BinaryData::from_bytes(c.as_ref()))
        .collect()
}

/// `TLSv1.3` and `TLSv1.2`, as OONI writes them.
fn tls_version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// IANA names as Go (and so OONI) prints them: `TLS_AES_128_GCM_SHA256`, not rustls' `TLS13_` form.
fn cipher_suite_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{suite:?}"));
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// RFC 8446 section 6 alert names in snake_case, e.g. `handshake_failure`.
fn alert_name(alert: rustls::AlertDescription) -> String {
    let camel = format!("{alert:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_ooni() {
        assert_eq!(
            cipher_suite_name(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_suite_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        assert_eq!(
            tls_version_name(rustls::ProtocolVersion::TLSv1_3),
            "TLSv1.3"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::HandshakeFailure),
            "handshake_failure"
        );
    }

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let err = TlsContext::load_pem(Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("cannot read CA certificates from /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn pem_without_certificates_is_rejected() {
        let dir = std::env::temp_dir().join(format!("vantage-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = TlsContext::load_pem(&path).expect_err("empty");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
