//! The control vantage point: OONI's test helper protocol (`ooni/probe-cli`
//! `internal/oohelperd/`; the request and answer shapes of ts-017's "control"), both ends.
//!
//! [`answer`] is the helper: given a `THRequest` it measures the URL from here with the same
//! engine the probe uses and answers with a `THResponse`. [`call`] is the probe's client. A
//! helper built on our engine and speaking OONI's JSON lets our probes use OONI's helpers and
//! OONI's probes use ours.
//!
//! The helper answers in OONI's *legacy* failure vocabulary on the control side
//! (`dns_name_error`, `dns_lookup_error`, `connection_refused_error`, ...), because OONI's
//! classifiers compare against those strings (`oohelperd/dns.go::dnsMapFailure`,
//! `http.go::httpMapFailure`).

mod client;
mod helper;

pub use client::{FAILED, REFUSED, UNUSABLE, call, describe, request_for, unusable};
pub use helper::{HelperConfig, HelperError, answer, plan_for};

use std::time::Duration;

/// OONI's deadline for the whole helper call (`webconnectivitylte/control.go`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Most `tcp_connect` entries one request may list; a longer list is refused before any I/O.
///
/// A probe lists the addresses its own lookups of the URL's host returned, at the URL's port;
/// OONI's probes list each at both 443 and 80 when the URL names no port
/// (`webconnectivitylte/control.go`). That is the A and AAAA records of one name, one or two
/// ports each. Even large sites answer with well under eight addresses of each family, so 32
/// leaves room for 16 addresses (the union of a few resolvers' answers) at two ports. A longer
/// list is not what one name resolves to but a list of targets, and measuring it would make the
/// helper a port scanner for whoever asks: one 57 kB request could otherwise send it to 3,000
/// endpoints of any public host.
pub const MAX_TCP_CONNECT: usize = 32;

/// Most of the helper's own addresses for the URL's host that it connects to, for the same
/// reason: a name whose DNS answer lists hundreds of addresses (anyone can publish such a zone)
/// must not turn into hundreds of connections. With at most two ports, at most 32 more.
pub const MAX_HELPER_ADDRS: usize = 16;

/// Most helper connections open at once, over all requests ([`HelperConfig::connections`]).
/// One request makes at most [`MAX_TCP_CONNECT`] + 2 x [`MAX_HELPER_ADDRS`] (64); this lets a
/// few requests run fully in parallel while bounding what a flood of them can open. Further
/// connections wait their turn in order (tokio's semaphore is fair).
pub const MAX_CONCURRENT_CONNECTIONS: usize = 256;

/// `ip_info.flags` bits (`oohelperd/ipinfo.go`).
pub mod flags {
    /// The probe resolved this address.
    pub const RESOLVED_BY_PROBE: u32 = 1;
    /// The helper resolved this address.
    pub const RESOLVED_BY_HELPER: u32 = 2;
    /// The address is a bogon.
    pub const BOGON: u32 = 4;
    /// A TLS handshake with the URL's host as SNI succeeded on this address.
    pub const VALID_FOR_DOMAIN: u32 = 8;
}
