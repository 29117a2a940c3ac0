//! QUIC handshake (RFC 9000, with TLS 1.3 inside it, RFC 9001), recorded as OONI records one:
//! a `quic_handshakes` entry in df-006-tlshandshake's format with `network` `"udp"`
//! (`ooni/spec` `data-formats/df-006-tlshandshake.md`; `nettests/ts-034-simplequicping.md`).
//!
//! The handshake runs from a fresh quinn client endpoint on an ephemeral UDP port (from the
//! engine's local address when one is configured), offers ALPN `h3`, sends the host as SNI and
//! checks the certificate with the same roots as the TCP steps ([`TlsContext::client_config`]).
//! Our own deadline bounds it: a censor that drops UDP 443 shows as `generic_timeout_error`.
//!
//! Failures keep OONI's strings (df-007-errors). quinn reports a TLS failure detected here as a
//! transport error whose code carries the TLS alert we send (RFC 9001 section 4.8) and whose
//! text is rustls' own; one the peer detected as the alert it sent. Certificate errors map as
//! for TCP ([`crate::failure::classify_tls`]), except that rustls sends `bad_certificate` for a
//! certificate not valid for the name, so that case is told by rustls' text. quinn does not
//! report ICMP port-unreachable (its socket is not connected), so a closed UDP port is a
//! timeout too, never `connection_refused`.
//!
//! Unlike the TCP handshake, a failed one carries no peer chain (quinn keeps it only on
//! success), and `cipher_suite` stays empty: quinn does not expose the suite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::AlertDescription;
use rustls::pki_types::CertificateDer;
use serde_json::Map;

use super::{TlsContext, Trace};
use crate::failure::{Failure, classify_tls};
use crate::ooni::{BinaryData, TlsHandshake};

/// ALPN offered: HTTP/3 (RFC 9114 section 3.1), what a browser offers a QUIC server.
pub const ALPN_H3: &[u8] = b"h3";

/// The QUIC transport error code CONNECTION_REFUSED (RFC 9000 section 20.1).
const CONNECTION_REFUSED: u64 = 0x2;
/// Transport error codes 0x0100-0x01ff carry a TLS alert (RFC 9001 section 20.1).
const CRYPTO_ERROR_BASE: u64 = 0x100;

/// Why a QUIC handshake failed. Each variant names the peer.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// Our deadline elapsed.
    #[error("quic_handshake {addr}: no result within {} ms", after.as_millis())]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The deadline.
        after: Duration,
    },
    /// The local UDP socket could not be opened.
    #[error("quic_handshake {addr}: cannot open a UDP socket: {source}")]
    Socket {
        /// The peer.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// quinn refused to start (bad server name, bad configuration).
    #[error("quic_handshake {addr}: cannot start: {reason}")]
    Setup {
        /// The peer.
        addr: SocketAddr,
        /// quinn's or rustls' complaint.
        reason: String,
    },
    /// The connection failed during the handshake.
    #[error("quic_handshake {addr}: {source}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// quinn's verdict.
        #[source]
        source: quinn::ConnectionError,
    },
}

impl QuicError {
    /// OONI's failure string (df-007-errors).
    pub fn failure(&self) -> String {
        match self {
            QuicError::Timeout { .. } => Failure::GenericTimeoutError.to_string(),
            QuicError::Socket { source, .. } => crate::failure::classify_io(source).to_string(),
            QuicError::Setup { reason, .. } => Failure::unknown(reason).to_string(),
            QuicError::Connection { source, .. } => classify(source),
        }
    }
}

/// The failure string of a quinn connection error during the handshake.
pub fn classify(error: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match error {
        // df-007-errors names this case for QUIC.
        E::VersionMismatch => "quic_incompatible_version".into(),
        // A failure detected here: the code is the alert we sent, the reason rustls' text.
        E::TransportError(e) => match alert_of(u64::from(e.code)) {
            Some(alert) => local_tls_failure(alert, &e.reason).to_string(),
            None => Failure::SslFailedHandshake.to_string(),
        },
        // The peer closed the connection: its alert, as a received alert is read over TCP.
        E::ConnectionClosed(close) => {
            let code = u64::from(close.error_code);
            match alert_of(code) {
                Some(alert) => classify_tls(&rustls::Error::AlertReceived(alert)).to_string(),
                None if code == CONNECTION_REFUSED => Failure::ConnectionRefused.to_string(),
                None => Failure::SslFailedHandshake.to_string(),
            }
        }
        E::ApplicationClosed(_) => Failure::SslFailedHandshake.to_string(),
        E::Reset => Failure::ConnectionReset.to_string(),
        E::TimedOut => Failure::GenericTimeoutError.to_string(),
        E::LocallyClosed => Failure::Interrupted.to_string(),
        E::CidsExhausted => Failure::unknown(error.to_string()).to_string(),
    }
}

/// The TLS alert carried by a QUIC transport error code, if it carries one.
fn alert_of(code: u64) -> Option<AlertDescription> {
    (CRYPTO_ERROR_BASE..CRYPTO_ERROR_BASE + 0x100)
        .contains(&code)
        .then(|| AlertDescription::from((code - CRYPTO_ERROR_BASE) as u8))
}

/// An alert's name as the TCP handshake's record writes it (`engine::tls`): rustls' name in
/// snake_case, `no_application_protocol`.
fn alert_name(alert: AlertDescription) -> String {
    let mut out = String::new();
    for (i, c) in format!("{alert:?}").chars().enumerate() {
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

/// A TLS failure we detected and sent `alert` for. rustls sends `bad_certificate` both for a
/// certificate not valid for the name and for a malformed one; its text tells them apart.
fn local_tls_failure(alert: AlertDescription, reason: &str) -> Failure {
    match alert {
        AlertDescription::UnknownCA => Failure::SslUnknownAuthority,
        AlertDescription::BadCertificate if reason.contains("not valid for name") => {
            Failure::SslInvalidHostname
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateRevoked
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateUnknown => Failure::SslInvalidCertificate,
        _ => Failure::SslFailedHandshake,
    }
}

/// Inputs of one QUIC handshake.
#[derive(Debug, Clone)]
pub struct QuicSpec<'a> {
    /// SNI, and the name the certificate must be valid for.
    pub server_name: &'a str,
    /// The peer.
    pub addr: SocketAddr,
    /// ALPN protocols to offer.
    pub alpn: &'a [&'a [u8]],
    /// Deadline for the whole handshake.
    pub timeout: Duration,
    /// Local address to send from; `None` lets the kernel choose.
    pub local: Option<IpAddr>,
    /// Tags for the record.
    pub tags: Option<Vec<String>>,
    /// Transaction id of the record.
    pub transaction_id: i64,
}

/// One observed QUIC handshake.
#[derive(Debug)]
pub struct QuicHandshake {
    /// The `quic_handshakes` entry.
    pub record: TlsHandshake,
    /// The error, when it failed.
    pub error: Option<QuicError>,
}

/// Runs one QUIC handshake and closes the connection once it is established: the test asks
/// only whether QUIC to this address and name works.
pub async fn handshake(ctx: &TlsContext, spec: QuicSpec<'_>, trace: &Trace) -> QuicHandshake {
    let t0 = trace.clock.secs();
    let mut record = TlsHandshake {
        network: Some("udp".into()),
        address: Some(spec.addr.to_string()),
        cipher_suite: String::new(),
        failure: None,
        negotiated_protocol: String::new(),
        no_tls_verify: false,
        peer_certificates: None,
        server_name: spec.server_name.to_string(),
        t0: Some(t0),
        t: t0,
        // OONI writes `tags: []` when there are none (ts-034's example).
        tags: Some(spec.tags.clone().unwrap_or_default()),
        tls_version: String::new(),
        transaction_id: Some(spec.transaction_id),
        x_alert: None,
        extra: Map::new(),
    };
    let result = run(ctx, &spec).await;
    record.t = trace.clock.secs();
    let error = match result {
        Ok(done) => {
            // QUIC carries TLS 1.3 only (RFC 9001 section 4.2).
            record.tls_version = "TLSv1.3".into();
            record.negotiated_protocol = done.alpn.unwrap_or_default();
            record.peer_certificates = done.chain.map(|chain| {
                chain
                    .iter()
                    .map(|c| BinaryData::from_bytes(c.as_ref()))
                    .collect()
            });
            None
        }
        Err(e) => {
            record.failure = Some(e.failure());
            if let QuicError::Connection {
                source: quinn::ConnectionError::ConnectionClosed(close),
                ..
            } = &e
                && let Some(alert) = alert_of(u64::from(close.error_code))
            {
                record.x_alert = Some(alert_name(alert));
            }
            tracing::debug!(error = %e, "quic handshake failed");
            Some(e)
        }
    };
    QuicHandshake { record, error }
}

/// What a completed handshake gave.
struct Done {
    alpn: Option<String>,
    chain: Option<Vec<CertificateDer<'static>>>,
}

async fn run(ctx: &TlsContext, spec: &QuicSpec<'_>) -> Result<Done, QuicError> {
    let addr = spec.addr;
    let setup = |reason: String| QuicError::Setup { addr, reason };
    let (tls, _chain) = ctx
        .client_config(spec.alpn)
        .map_err(|e| setup(e.to_string()))?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    // quinn's own idle timeout stays longer than our deadline, so that ours decides.
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(spec.timeout.saturating_add(Duration::from_secs(5)))
        .map_err(|e| setup(e.to_string()))?;
    transport.max_idle_timeout(Some(idle));
    config.transport_config(Arc::new(transport));
    let local = spec.local.unwrap_or(match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let endpoint = quinn::Endpoint::client(SocketAddr::new(local, 0))
        .map_err(|source| QuicError::Socket { addr, source })?;
    let outcome = async {
        let connecting = endpoint
            .connect_with(config, addr, spec.server_name)
            .map_err(|e| setup(e.to_string()))?;
        match tokio::time::timeout(spec.timeout, connecting).await {
            Err(_) => Err(QuicError::Timeout {
                addr,
                after: spec.timeout,
            }),
            Ok(Err(source)) => Err(QuicError::Connection { addr, source }),
            Ok(Ok(conn)) => {
                let alpn = conn
                    .handshake_data()
                    .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                    .and_then(|d| d.protocol)
                    .map(|p| String::from_utf8_lossy(&p).into_owned());
                let chain = conn
                    .peer_identity()
                    .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
                    .map(|c| *c);
                conn.close(0u32.into(), b"");
                Ok(Done { alpn, chain })
            }
        }
    }
    .await;
    endpoint.close(0u32.into(), b"");
    outcome
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::TlsContext;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use vantage_fixtures::tls::{Leaf, TestCa};

    /// A QUIC server on loopback that completes handshakes with `leaf` and offers `h3`.
    pub(crate) fn quic_server(leaf: &Leaf) -> (quinn::Endpoint, SocketAddr) {
        let dir = std::env::temp_dir().join(format!(
            "vantage-quic-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (chain_path, key_path) = (dir.join("chain.pem"), dir.join("key.pem"));
        leaf.write_pem(&chain_path, &key_path);
        let key = PrivateKeyDer::from_pem_file(&key_path).expect("key");
        let _ = std::fs::remove_dir_all(&dir);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls 1.3")
            .with_no_client_auth()
            .with_single_cert(leaf.chain.clone(), key)
            .expect("server cert");
        tls.alpn_protocols = vec![ALPN_H3.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint =
            quinn::Endpoint::server(config, ([127, 0, 0, 1], 0).into()).expect("quic server");
        let addr = endpoint.local_addr().expect("addr");
        let server = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        let _ = conn.closed().await;
                    }
                });
            }
        });
        (endpoint, addr)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn spec(name: &str, addr: SocketAddr, timeout: Duration) -> QuicSpec<'_> {
        QuicSpec {
            server_name: name,
            addr,
            alpn: &[ALPN_H3],
            timeout,
            local: None,
            tags: None,
            transaction_id: 3,
        }
    }

    fn ctx(ca: &TestCa) -> TlsContext {
        let roots = CertificateDer::pem_slice_iter(ca.pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("ca pem");
        TlsContext::new(roots).expect("tls context")
    }

    #[tokio::test]
    async fn a_quic_server_completes_the_handshake_and_is_recorded_as_ooni_does() {
        let ca = TestCa::new("quic test ca");
        let (_server, addr) = quic_server(&ca.leaf(&["quic.example"]));
        let trace = Trace::new();
        let hs = handshake(
            &ctx(&ca),
            spec("quic.example", addr, Duration::from_secs(5)),
            &trace,
        )
        .await;
        assert!(hs.error.is_none(), "{:?}", hs.error);
        let r = &hs.record;
        assert_eq!(r.failure, None);
        assert_eq!(r.network.as_deref(), Some("udp"));
        assert_eq!(r.address.as_deref(), Some(addr.to_string().as_str()));
        assert_eq!(r.server_name, "quic.example");
        assert_eq!(r.negotiated_protocol, "h3");
        assert_eq!(r.tls_version, "TLSv1.3");
        assert_eq!(r.peer_certificates.as_ref().map(Vec::len), Some(2));
        assert!(r.t >= r.t0.unwrap_or(f64::MAX));
        let json = serde_json::to_value(r).expect("json");
        for key in [
            "address",
            "server_name",
            "negotiated_protocol",
            "failure",
            "t",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[tokio::test]
    async fn a_udp_port_that_swallows_datagrams_is_a_generic_timeout() {
        // Bound and never read: datagrams go nowhere, as when a censor drops UDP 443.
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = sink.local_addr().expect("addr");
        let ca = TestCa::new("quic test ca");
        let trace = Trace::new();
        let hs = handshake(
            &ctx(&ca),
            spec("quic.example", addr, Duration::from_millis(600)),
            &trace,
        )
        .await;
        assert!(matches!(hs.error, Some(QuicError::Timeout { .. })));
        assert_eq!(hs.record.failure.as_deref(), Some("generic_timeout_error"));
        assert_eq!(hs.record.negotiated_protocol, "");
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_ssl_invalid_hostname() {
        let ca = TestCa::new("quic test ca");
        let (_server, addr) = quic_server(&ca.leaf(&["other.example"]));
        let trace = Trace::new();
        let hs = handshake(
            &ctx(&ca),
            spec("quic.example", addr, Duration::from_secs(5)),
            &trace,
        )
        .await;
        assert_eq!(hs.record.failure.as_deref(), Some("ssl_invalid_hostname"));
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_ssl_unknown_authority() {
        let ca = TestCa::new("quic test ca");
        let stranger = TestCa::new("someone else");
        let (_server, addr) = quic_server(&stranger.leaf(&["quic.example"]));
        let trace = Trace::new();
        let hs = handshake(
            &ctx(&ca),
            spec("quic.example", addr, Duration::from_secs(5)),
            &trace,
        )
        .await;
        assert_eq!(hs.record.failure.as_deref(), Some("ssl_unknown_authority"));
    }

    #[tokio::test]
    async fn a_server_refusing_our_alpn_is_its_alert_and_a_failed_handshake() {
        let ca = TestCa::new("quic test ca");
        let (_server, addr) = quic_server(&ca.leaf(&["quic.example"]));
        let trace = Trace::new();
        let mut s = spec("quic.example", addr, Duration::from_secs(5));
        s.alpn = &[b"not-h3"];
        let hs = handshake(&ctx(&ca), s, &trace).await;
        // RFC 9001 section 8.1: a server with no common protocol closes with alert 120.
        assert_eq!(hs.record.failure.as_deref(), Some("ssl_failed_handshake"));
        assert_eq!(
            hs.record.x_alert.as_deref(),
            Some("no_application_protocol")
        );
    }

    #[test]
    fn transport_codes_map_to_ooni_strings() {
        assert_eq!(alert_of(0x100 + 48), Some(AlertDescription::UnknownCA));
        assert_eq!(alert_of(0x2), None);
        assert_eq!(alert_of(0x200), None);
        assert_eq!(
            classify(&quinn::ConnectionError::TimedOut),
            "generic_timeout_error"
        );
        assert_eq!(
            classify(&quinn::ConnectionError::VersionMismatch),
            "quic_incompatible_version"
        );
        assert_eq!(classify(&quinn::ConnectionError::Reset), "connection_reset");
    }
}
