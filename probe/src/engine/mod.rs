//! The measurement engine: every network step observed on its own, with its own deadline and
//! timestamps relative to the start of the measurement (README.md, "Looking at one site:
//! `vantage measure`").
//!
//! Nothing here is inferred from a library's combined error: DNS messages are built and read with
//! hickory-proto over our own sockets, TCP connects are ours, TLS runs over our TCP stream, and
//! HTTP runs over our TLS (or TCP) stream with hyper's connection API.

pub mod bogon;
pub mod client;
pub mod dns;
pub mod http;
pub mod quic;
pub mod tcp;
pub mod tls;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

pub use dns::{Lookup, Resolver};
pub use tls::{TlsContext, TlsSetupError};

/// Deadline of each step. Defaults are OONI's web_connectivity v0.5 values (`ooni/probe-cli`): 4 s per DNS
/// lookup, 10 s each for TCP connect, TLS handshake and HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One DNS lookup (system, UDP or DoH).
    pub dns: Duration,
    /// One TCP connect.
    pub tcp_connect: Duration,
    /// One TLS handshake.
    pub tls_handshake: Duration,
    /// One HTTP request, headers and body.
    pub http: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dns: Duration::from_secs(4),
            tcp_connect: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            http: Duration::from_secs(10),
        }
    }
}

/// What the engine does, fixed before any network I/O.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Per-step deadlines.
    pub timeouts: Timeouts,
    /// How long a UDP DNS socket keeps listening after the first answer, to catch injected
    /// duplicates. OONI uses 500 ms (`dnsresolvers.go` `waitForLateReplies`).
    pub late_reply_window: Duration,
    /// HTTP body cap; OONI's is 512 KiB (`secureflow.go`).
    pub body_cap_bytes: usize,
    /// Redirects followed one by one; OONI follows at most 10 (ts-017 E002).
    pub max_redirects: usize,
    /// Local address to connect from, e.g. to measure through one interface of a multi-homed
    /// host. `None` lets the kernel choose.
    pub local_addr: Option<std::net::IpAddr>,
    /// Whether to connect to bogon addresses (RFC 6890 special-purpose ranges). A probe does,
    /// since a censor's bogon answer is what a user's browser would try; a test helper must not,
    /// or it can be made to scan its operator's private network. Refused endpoints fail with
    /// `dns_bogon_error`.
    pub connect_to_bogons: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeouts: Timeouts::default(),
            late_reply_window: Duration::from_millis(500),
            body_cap_bytes: 512 * 1024,
            max_redirects: 10,
            local_addr: None,
            connect_to_bogons: true,
        }
    }
}

/// The monotonic clock of one measurement: `t0` and `t` are seconds since its start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts a clock now.
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Seconds since the start.
    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// Per-measurement state shared by the steps: the clock and the transaction id counter.
#[derive(Debug)]
pub struct Trace {
    /// The measurement's clock.
    pub clock: Clock,
    next_transaction: AtomicI64,
}

impl Trace {
    /// A new trace whose clock starts now.
    pub fn new() -> Self {
        Trace {
            clock: Clock::start(),
            next_transaction: AtomicI64::new(1),
        }
    }

    /// A fresh transaction id, grouping the events of one connection or lookup.
    pub fn transaction(&self) -> i64 {
        self.next_transaction.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

/// OONI's tags: `classic` marks data that feeds the legacy top-level keys, `depth=N` the
/// position in the redirect chain (ts-017 v0.5).
pub fn tags(classic: bool, depth: usize) -> Option<Vec<String>> {
    let mut tags = Vec::with_capacity(2);
    if classic {
        tags.push("classic".to_string());
    }
    tags.push(format!("depth={depth}"));
    Some(tags)
}
