//! OONI failure strings and the one mapping from errors to them.
//!
//! Every `failure` key in a measurement is either `null` (success) or one of the strings of OONI's
//! `df-007-errors` data format (`ooni/spec` `data-formats/df-007-errors.md`). Researchers compare
//! those strings across probes and across years, so they must be exact. The mapping from Rust
//! errors lives in one place, [`classify`], an exhaustive `match` over [`StepError`]; every arm
//! has a unit test at the bottom of this file.
//!
//! The rules follow OONI's `internal/netxlite/classify.go`: errno first, then the TLS library's
//! own verdict, then the DNS response code, else `unknown_failure: <text>` with every IP address
//! in `<text>` replaced by `[scrubbed]` (OONI's `internal/scrubber`), so that a volunteer's address
//! never leaves the probe inside an error message.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use rustls::{AlertDescription, CertificateError};

/// A failure string from OONI's `df-007-errors`.
///
/// `Display` writes the exact string that goes into a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `ECONNREFUSED`: the peer (or a middlebox) answered the SYN with a RST.
    ConnectionRefused,
    /// `ECONNRESET`: the connection was reset after it was established.
    ConnectionReset,
    /// `ECONNABORTED`.
    ConnectionAborted,
    /// Our own deadline for the step elapsed.
    GenericTimeoutError,
    /// `ETIMEDOUT` from the kernel, distinct from our own deadline.
    TimedOut,
    /// The peer closed the connection before the step completed.
    EofError,
    /// `EHOSTUNREACH`, typically an ICMP host-unreachable.
    HostUnreachable,
    /// `ENETUNREACH`.
    NetworkUnreachable,
    /// `ENETDOWN`.
    NetworkDown,
    /// `EADDRINUSE`.
    AddressInUse,
    /// `EADDRNOTAVAIL`.
    AddressNotAvailable,
    /// `EACCES` / `EPERM`, e.g. a local firewall.
    PermissionDenied,
    /// The operation was cancelled.
    Interrupted,
    /// The name does not exist (RCODE 3, or `EAI_NONAME`).
    DnsNxdomainError,
    /// The resolver answered without any address for the name.
    DnsNoAnswer,
    /// RCODE 5.
    DnsRefusedError,
    /// RCODE 2.
    DnsServfailError,
    /// Any other unexpected response code, or a response we could not parse.
    DnsServerMisbehaving,
    /// `EAI_AGAIN`.
    DnsTemporaryFailure,
    /// Every address was a bogon and the engine was told not to connect to bogons.
    DnsBogonError,
    /// `EAI_FAIL`.
    DnsNonRecoverableFailure,
    /// The certificate is not valid for the name we asked for (or the server sent alert 112).
    SslInvalidHostname,
    /// The certificate chains to no root we trust.
    SslUnknownAuthority,
    /// The certificate is invalid for another reason (expired, revoked, bad signature, ...).
    SslInvalidCertificate,
    /// Any other TLS handshake failure, including a received alert.
    SslFailedHandshake,
    /// A redirect's `Location` could not be turned into a URL with a host.
    HttpInvalidRedirectLocationHost,
    /// More redirects than the engine follows (OONI: 10).
    HttpTooManyRedirects,
    /// Anything else. The text is already scrubbed of IP addresses.
    Unknown(String),
}

impl Failure {
    /// Builds an `unknown_failure` from free text, scrubbing IP addresses first.
    pub fn unknown(text: impl AsRef<str>) -> Self {
        Failure::Unknown(scrub_addresses(text.as_ref()))
    }

    /// The exact OONI string.
    pub fn as_str(&self) -> &str {
        match self {
            Failure::ConnectionRefused => "connection_refused",
            Failure::ConnectionReset => "connection_reset",
            Failure::ConnectionAborted => "connection_aborted",
            Failure::GenericTimeoutError => "generic_timeout_error",
            Failure::TimedOut => "timed_out",
            Failure::EofError => "eof_error",
            Failure::HostUnreachable => "host_unreachable",
            Failure::NetworkUnreachable => "network_unreachable",
            Failure::NetworkDown => "network_down",
            Failure::AddressInUse => "address_in_use",
            Failure::AddressNotAvailable => "address_not_available",
            Failure::PermissionDenied => "permission_denied",
            Failure::Interrupted => "interrupted",
            Failure::DnsNxdomainError => "dns_nxdomain_error",
            Failure::DnsNoAnswer => "dns_no_answer",
            Failure::DnsRefusedError => "dns_refused_error",
            Failure::DnsServfailError => "dns_servfail_error",
            Failure::DnsServerMisbehaving => "dns_server_misbehaving",
            Failure::DnsTemporaryFailure => "dns_temporary_failure",
            Failure::DnsBogonError => "dns_bogon_error",
            Failure::DnsNonRecoverableFailure => "dns_non_recoverable_failure",
            Failure::SslInvalidHostname => "ssl_invalid_hostname",
            Failure::SslUnknownAuthority => "ssl_unknown_authority",
            Failure::SslInvalidCertificate => "ssl_invalid_certificate",
            Failure::SslFailedHandshake => "ssl_failed_handshake",
            Failure::HttpInvalidRedirectLocationHost => "http_invalid_redirect_location_host",
            // OONI's probe-cli reports this case as an unclassified error; we keep a stable token.
            Failure::HttpTooManyRedirects => "unknown_failure: stopped after 10 redirects",
            Failure::Unknown(_) => "unknown_failure",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unknown(text) => write!(f, "unknown_failure: {text}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The operation that failed, as OONI's `failed_operation` names it
/// (`ooni/probe-cli` `internal/netxlite/operations.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Name resolution through the system resolver.
    Resolve,
    /// One DNS request and response with a chosen resolver (UDP or DoH).
    DnsRoundTrip,
    /// TCP three-way handshake.
    Connect,
    /// TLS handshake.
    TlsHandshake,
    /// HTTP request, response headers and body.
    HttpRoundTrip,
    /// Anything before the network is touched.
    TopLevel,
}

impl Operation {
    /// The OONI string.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Resolve => "resolve",
            Operation::DnsRoundTrip => "dns_round_trip",
            Operation::Connect => "connect",
            Operation::TlsHandshake => "tls_handshake",
            Operation::HttpRoundTrip => "http_round_trip",
            Operation::TopLevel => "top_level",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one step of a measurement failed. Each variant carries the operation and the address, so
/// that a log line says what was being done to whom; [`classify`] turns it into a [`Failure`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// Our deadline for the step elapsed.
    #[error("{op} {target}: no result within {} ms", after.as_millis())]
    Timeout {
        /// The step.
        op: Operation,
        /// Address or name the step was talking to.
        target: String,
        /// The deadline.
        after: Duration,
    },
    /// A socket error.
    #[error("{op} {target}: {source}")]
    Io {
        /// The step.
        op: Operation,
        /// Address or name the step was talking to.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The system resolver (`getaddrinfo`) failed.
    #[error("resolve {host}: getaddrinfo error {code}: {kind:?}")]
    Getaddrinfo {
        /// The name looked up.
        host: String,
        /// What `getaddrinfo` returned.
        kind: GaiError,
        /// The raw `EAI_*` value, kept for the record (OONI's `getaddrinfo_error`).
        code: i32,
    },
    /// A DNS response carried an error response code.
    #[error("dns_round_trip {server}: response code {rcode}")]
    DnsResponseCode {
        /// The resolver.
        server: String,
        /// RCODE (RFC 1035 section 4.1.1; RFC 6895 section 2.3).
        rcode: u16,
    },
    /// A DNS response was well formed but carried no address.
    #[error("dns_round_trip {server}: no address in the answer")]
    DnsNoAnswer {
        /// The resolver.
        server: String,
    },
    /// Bytes came back that are not a DNS response to our query.
    #[error("dns_round_trip {server}: malformed response: {reason}")]
    DnsMalformed {
        /// The resolver.
        server: String,
        /// What was wrong.
        reason: String,
    },
    /// The TLS library rejected the handshake.
    #[error("tls_handshake {addr}: {source}")]
    Tls {
        /// The peer.
        addr: SocketAddr,
        /// The rustls verdict.
        #[source]
        source: rustls::Error,
    },
    /// The HTTP exchange failed.
    #[error("http_round_trip {addr}: {source}")]
    Http {
        /// The peer.
        addr: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A redirect pointed nowhere usable.
    #[error("http_round_trip: redirect to an invalid location {location:?}")]
    BadRedirect {
        /// The `Location` header as received.
        location: String,
    },
    /// Every address is a bogon, and bogons are not to be connected to.
    #[error("connect {host}: only bogon addresses ({addrs})")]
    OnlyBogons {
        /// The name.
        host: String,
        /// Its addresses.
        addrs: String,
    },
    /// The redirect chain was longer than we follow.
    #[error("http_round_trip: more than {limit} redirects")]
    TooManyRedirects {
        /// The limit.
        limit: usize,
    },
}

impl StepError {
    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        match self {
            StepError::Timeout { op, .. } | StepError::Io { op, .. } => *op,
            StepError::Getaddrinfo { .. } => Operation::Resolve,
            StepError::DnsResponseCode { .. }
            | StepError::DnsNoAnswer { .. }
            | StepError::DnsMalformed { .. } => Operation::DnsRoundTrip,
            StepError::Tls { .. } => Operation::TlsHandshake,
            StepError::OnlyBogons { .. } => Operation::Connect,
            StepError::Http { .. }
            | StepError::BadRedirect { .. }
            | StepError::TooManyRedirects { .. } => Operation::HttpRoundTrip,
        }
    }

    /// The OONI failure string for this error.
    pub fn failure(&self) -> Failure {
        classify(self)
    }
}

/// What `getaddrinfo(3)` returned, without the platform's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaiError {
    /// `EAI_NONAME`
    NoName,
    /// `EAI_NODATA`
    NoData,
    /// `EAI_AGAIN`
    Again,
    /// `EAI_FAIL`
    Fail,
    /// `EAI_SYSTEM` or an I/O error underneath.
    System,
    /// Anything else (`EAI_FAMILY`, `EAI_MEMORY`, ...).
    Other,
}

/// The one mapping from a step error to OONI's failure string.
pub fn classify(error: &StepError) -> Failure {
    match error {
        StepError::Timeout { .. } => Failure::GenericTimeoutError,
        StepError::Io { source, .. } => classify_io(source),
        StepError::Getaddrinfo { kind, .. } => match kind {
            GaiError::NoName => Failure::DnsNxdomainError,
            GaiError::NoData => Failure::DnsNoAnswer,
            GaiError::Again => Failure::DnsTemporaryFailure,
            GaiError::Fail => Failure::DnsNonRecoverableFailure,
            GaiError::System | GaiError::Other => Failure::unknown(error.to_string()),
        },
        StepError::DnsResponseCode { rcode, .. } => classify_rcode(*rcode),
        StepError::DnsNoAnswer { .. } => Failure::DnsNoAnswer,
        StepError::DnsMalformed { .. } => Failure::DnsServerMisbehaving,
        StepError::Tls { source, .. } => classify_tls(source),
        StepError::Http { source, .. } => classify_hyper(source),
        StepError::OnlyBogons { .. } => Failure::DnsBogonError,
        StepError::BadRedirect { .. } => Failure::HttpInvalidRedirectLocationHost,
        StepError::TooManyRedirects { .. } => Failure::HttpTooManyRedirects,
    }
}

/// DNS response codes (RFC 1035 section 4.1.1), as OONI's `ClassifyResolverError` names them.
fn classify_rcode(rcode: u16) -> Failure {
    match rcode {
        2 => Failure::DnsServfailError,
        3 => Failure::DnsNxdomainError,
        5 => Failure::DnsRefusedError,
        _ => Failure::DnsServerMisbehaving,
    }
}

/// Socket errors, by the portable `ErrorKind` that std derives from errno.
pub fn classify_io(error: &io::Error) -> Failure {
    // tokio-rustls hands rustls' verdict back inside an io::Error (InvalidData).
    if let Some(tls) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return classify_tls(tls);
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Failure::ConnectionRefused,
        io::ErrorKind::ConnectionReset => Failure::ConnectionReset,
        io::ErrorKind::ConnectionAborted => Failure::ConnectionAborted,
        io::ErrorKind::TimedOut => Failure::TimedOut,
        io::ErrorKind::UnexpectedEof => Failure::EofError,
        io::ErrorKind::HostUnreachable => Failure::HostUnreachable,
        io::ErrorKind::NetworkUnreachable => Failure::NetworkUnreachable,
        io::ErrorKind::NetworkDown => Failure::NetworkDown,
        io::ErrorKind::AddrInUse => Failure::AddressInUse,
        io::ErrorKind::AddrNotAvailable => Failure::AddressNotAvailable,
        io::ErrorKind::PermissionDenied => Failure::PermissionDenied,
        io::ErrorKind::Interrupted => Failure::Interrupted,
        // A write to a socket the peer has reset surfaces as EPIPE.
        io::ErrorKind::BrokenPipe => Failure::ConnectionReset,
        _ => Failure::unknown(error.to_string()),
    }
}

/// rustls' verdicts, following OONI's `ClassifyTLSHandshakeError` and its alert-code table
/// (42-46 invalid certificate, 48 unknown CA, 112 unrecognised name; RFC 8446 section 6.2).
pub fn classify_tls(error: &rustls::Error) -> Failure {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Failure::SslInvalidHostname
            }
            CertificateError::UnknownIssuer => Failure::SslUnknownAuthority,
            _ => Failure::SslInvalidCertificate,
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnrecognisedName => Failure::SslInvalidHostname,
            AlertDescription::UnknownCA => Failure::SslUnknownAuthority,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown => Failure::SslInvalidCertificate,
            _ => Failure::SslFailedHandshake,
        },
        _ => Failure::SslFailedHandshake,
    }
}

/// hyper's errors: the socket error underneath wins, then hyper's own categories.
pub fn classify_hyper(error: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            return classify_io(io);
        }
        source = inner.source();
    }
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        Failure::EofError
    } else if error.is_timeout() {
        Failure::GenericTimeoutError
    } else {
        Failure::unknown(error.to_string())
    }
}

static CANDIDATE: LazyLock<Regex> = LazyLock::new(|| {
    // Candidates only; each is confirmed by std's address parsers below, so that text such as
    // `std::io::Error` or a version number is left alone.
    Regex::new(
        r"\[[0-9A-Fa-f:.]+\](?::\d{1,5})?|(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f.]*",
    )
    .expect("static regex compiles")
});

/// Whether a candidate (with optional brackets and port) is an IP address.
fn is_address(candidate: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    candidate.parse::<IpAddr>().is_ok()
        || candidate.parse::<SocketAddr>().is_ok()
        || candidate
            .rsplit_once(':')
            .is_some_and(|(ip, port)| ip.parse::<Ipv4Addr>().is_ok() && port.parse::<u16>().is_ok())
}

/// Replaces every IPv4 or IPv6 address (with its port) in `text` by `[scrubbed]`, as OONI's
/// `internal/scrubber` does.
pub fn scrub_addresses(text: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in CANDIDATE.find_iter(text) {
        let before = text[..m.start()].chars().next_back();
        let after = text[m.end()..].chars().next();
        if word(before) || word(after) || !is_address(m.as_str()) {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push_str("[scrubbed]");
        last = m.end();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> StepError {
        StepError::Io {
            op: Operation::Connect,
            target: "192.0.2.1:443".into(),
            source: io::Error::from(kind),
        }
    }

    fn s(error: &StepError) -> String {
        classify(error).to_string()
    }

    #[test]
    fn timeout_is_generic_timeout_error() {
        let e = StepError::Timeout {
            op: Operation::Connect,
            target: "x".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(s(&e), "generic_timeout_error");
    }

    #[test]
    fn io_kinds_map_to_ooni_strings() {
        use io::ErrorKind as K;
        let table = [
            (K::ConnectionRefused, "connection_refused"),
            (K::ConnectionReset, "connection_reset"),
            (K::ConnectionAborted, "connection_aborted"),
            (K::TimedOut, "timed_out"),
            (K::UnexpectedEof, "eof_error"),
            (K::HostUnreachable, "host_unreachable"),
            (K::NetworkUnreachable, "network_unreachable"),
            (K::NetworkDown, "network_down"),
            (K::AddrInUse, "address_in_use"),
            (K::AddrNotAvailable, "address_not_available"),
            (K::PermissionDenied, "permission_denied"),
            (K::Interrupted, "interrupted"),
            (K::BrokenPipe, "connection_reset"),
        ];
        for (kind, want) in table {
            assert_eq!(s(&io(kind)), want, "{kind:?}");
        }
    }

    #[test]
    fn unknown_io_error_is_scrubbed() {
        let e = StepError::Io {
            op: Operation::Connect,
            target: "x".into(),
            source: io::Error::other("cannot reach 203.0.113.7:443 or [2001:db8::1]:80 today"),
        };
        assert_eq!(
            s(&e),
            "unknown_failure: cannot reach [scrubbed] or [scrubbed] today"
        );
    }

    #[test]
    fn real_errno_is_classified() {
        // ECONNREFUSED and ECONNRESET as the kernel reports them on Linux.
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(111)),
            Failure::ConnectionRefused
        );
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(104)),
            Failure::ConnectionReset
        );
    }

    #[test]
    fn getaddrinfo_errors() {
        let table = [
            (GaiError::NoName, "dns_nxdomain_error"),
            (GaiError::NoData, "dns_no_answer"),
            (GaiError::Again, "dns_temporary_failure"),
            (GaiError::Fail, "dns_non_recoverable_failure"),
        ];
        for (kind, want) in table {
            let e = StepError::Getaddrinfo {
                host: "example.org".into(),
                kind,
                code: -2,
            };
            assert_eq!(s(&e), want);
        }
        let e = StepError::Getaddrinfo {
            host: "example.org".into(),
            kind: GaiError::System,
            code: -11,
        };
        assert!(s(&e).starts_with("unknown_failure: resolve example.org"));
        let e = StepError::Getaddrinfo {
            host: "example.org".into(),
            kind: GaiError::Other,
            code: -6,
        };
        assert!(s(&e).starts_with("unknown_failure: "));
    }

    #[test]
    fn dns_response_codes() {
        let table = [
            (2, "dns_servfail_error"),
            (3, "dns_nxdomain_error"),
            (5, "dns_refused_error"),
            (4, "dns_server_misbehaving"),
        ];
        for (rcode, want) in table {
            let e = StepError::DnsResponseCode {
                server: "127.0.0.1:53".into(),
                rcode,
            };
            assert_eq!(s(&e), want);
        }
        let e = StepError::DnsNoAnswer {
            server: "127.0.0.1:53".into(),
        };
        assert_eq!(s(&e), "dns_no_answer");
        let e = StepError::DnsMalformed {
            server: "127.0.0.1:53".into(),
            reason: "short".into(),
        };
        assert_eq!(s(&e), "dns_server_misbehaving");
    }

    fn tls(source: rustls::Error) -> StepError {
        StepError::Tls {
            addr: "127.0.0.1:443".parse().expect("addr"),
            source,
        }
    }

    #[test]
    fn tls_certificate_errors() {
        use rustls::Error as E;
        let table = [
            (
                E::InvalidCertificate(CertificateError::NotValidForName),
                "ssl_invalid_hostname",
            ),
            (
                E::InvalidCertificate(CertificateError::UnknownIssuer),
                "ssl_unknown_authority",
            ),
            (
                E::InvalidCertificate(CertificateError::Expired),
                "ssl_invalid_certificate",
            ),
            (
                E::InvalidCertificate(CertificateError::BadSignature),
                "ssl_invalid_certificate",
            ),
        ];
        for (err, want) in table {
            assert_eq!(s(&tls(err)), want);
        }
    }

    #[test]
    fn tls_alerts() {
        use rustls::Error as E;
        let table = [
            (AlertDescription::UnrecognisedName, "ssl_invalid_hostname"),
            (AlertDescription::UnknownCA, "ssl_unknown_authority"),
            (AlertDescription::BadCertificate, "ssl_invalid_certificate"),
            (
                AlertDescription::CertificateExpired,
                "ssl_invalid_certificate",
            ),
            (AlertDescription::HandshakeFailure, "ssl_failed_handshake"),
            (AlertDescription::ProtocolVersion, "ssl_failed_handshake"),
        ];
        for (alert, want) in table {
            assert_eq!(s(&tls(E::AlertReceived(alert))), want, "{alert:?}");
        }
        assert_eq!(
            s(&tls(E::General("garbage".into()))),
            "ssl_failed_handshake"
        );
    }

    #[test]
    fn tls_error_inside_io_error() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, inner);
        assert_eq!(classify_io(&wrapped), Failure::SslUnknownAuthority);
    }

    #[test]
    fn bogon_refusal() {
        let e = StepError::OnlyBogons {
            host: "intranet.example".into(),
            addrs: "10.0.0.1".into(),
        };
        assert_eq!(s(&e), "dns_bogon_error");
        assert_eq!(e.operation(), Operation::Connect);
    }

    #[test]
    fn redirect_errors() {
        let e = StepError::BadRedirect {
            location: "http://".into(),
        };
        assert_eq!(s(&e), "http_invalid_redirect_location_host");
        let e = StepError::TooManyRedirects { limit: 10 };
        assert_eq!(s(&e), "unknown_failure: stopped after 10 redirects");
        assert_eq!(e.operation(), Operation::HttpRoundTrip);
    }

    #[test]
    fn operations_are_ooni_names() {
        assert_eq!(Operation::Resolve.to_string(), "resolve");
        assert_eq!(Operation::DnsRoundTrip.to_string(), "dns_round_trip");
        assert_eq!(Operation::Connect.to_string(), "connect");
        assert_eq!(Operation::TlsHandshake.to_string(), "tls_handshake");
        assert_eq!(Operation::HttpRoundTrip.to_string(), "http_round_trip");
        assert_eq!(Operation::TopLevel.to_string(), "top_level");
    }

    #[test]
    fn scrubber_leaves_non_addresses_alone() {
        assert_eq!(scrub_addresses("std::io::Error"), "std::io::Error");
        assert_eq!(scrub_addresses("version 1.2.3"), "version 1.2.3");
        assert_eq!(scrub_addresses("to 10.0.0.1 now"), "to [scrubbed] now");
        assert_eq!(scrub_addresses("at fe80::1%eth0"), "at [scrubbed]%eth0");
        assert_eq!(
            scrub_addresses("peer [::1]:8080 gone"),
            "peer [scrubbed] gone"
        );
        assert_eq!(scrub_addresses("2001:db8::7 refused"), "[scrubbed] refused");
        assert_eq!(scrub_addresses("Chrome/122.0.0.0"), "Chrome/[scrubbed]");
    }
}
