//! The `quic` test (`vantage run --test quic`, `docs/quic.md`): for one `https` URL, a QUIC
//! handshake beside a TCP connect and TLS handshake to the same address with the same SNI, so
//! that "QUIC blocked, TCP/TLS works" (a censor dropping UDP 443, or filtering the SNI of QUIC
//! Initial packets only) is told apart from a host blocked or down on both.
//!
//! OONI has no test of this name: its `urlgetter` records `quic_handshakes` for one `http3://`
//! URL, and `quicping` (ts-031) only probes version negotiation. The measurement is therefore
//! `test_name` `quic`, in OONI's data format (df-000), with OONI's own keys for every step
//! (`queries` df-002, `tcp_connect` df-005, `tls_handshakes` and `quic_handshakes` df-006 with
//! `network` `tcp` and `udp`) and failure strings (df-007), plus the verdict keys described at
//! [`QuicKeys`].
//!
//! Each address the host resolves to (at most [`MAX_ADDRESSES`], all at once) gets both
//! handshakes, run at the same time so that a path change between them does not decide. The verdict is made from
//! the recorded handshakes alone ([`assess`]), so that the aggregator, which scores again on
//! arrival, reaches the same one from the same bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::engine::quic::{self as quic_step, ALPN_H3, QuicSpec};
use crate::engine::{EngineConfig, Resolver, TlsContext, Trace, dns, tcp, tls};
use crate::ooni::{DnsQuery, Measurement, TcpConnect, TlsHandshake, ooni_timestamp};

/// The test's name in measurements.
pub const QUIC: &str = "quic";
/// Its version; a change of what it records or how it decides bumps it.
pub const QUIC_VERSION: &str = "0.1.0";
/// Addresses measured per host: a host's first few, as a browser would try them.
pub const MAX_ADDRESSES: usize = 4;
/// ALPN offered on the TCP handshake: what a browser offers before it learns of HTTP/3.
const TCP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why a URL cannot be measured, found before any network I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a URL.
    #[error("invalid URL {input:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        input: String,
        /// The parser's complaint.
        reason: String,
    },
    /// QUIC is measured for `https` URLs only: HTTP/3 has no cleartext form (RFC 9114 3.1).
    #[error("{input:?} is not an https URL; the QUIC test measures https URLs only")]
    NotHttps {
        /// What was given.
        input: String,
    },
    /// No resolver to use.
    #[error("no resolver configured")]
    NoResolver,
}

/// A validated QUIC measurement of one URL.
#[derive(Debug, Clone)]
pub struct Plan {
    input: String,
    url: Url,
    resolver: Resolver,
    config: EngineConfig,
}

impl Plan {
    /// Validates `input`; the first resolver looks the host up.
    pub fn new(
        input: &str,
        resolvers: &[Resolver],
        config: EngineConfig,
    ) -> Result<Plan, PlanError> {
        let url = Url::parse(input.trim()).map_err(|e| PlanError::InvalidUrl {
            input: input.to_string(),
            reason: e.to_string(),
        })?;
        if url.scheme() != "https" {
            return Err(PlanError::NotHttps {
                input: input.to_string(),
            });
        }
        if url.host().is_none() {
            return Err(PlanError::InvalidUrl {
                input: input.to_string(),
                reason: "no host".into(),
            });
        }
        let resolver = resolvers.first().cloned().ok_or(PlanError::NoResolver)?;
        Ok(Plan {
            input: input.trim().to_string(),
            url,
            resolver,
            config,
        })
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A QUIC handshake worked.
    Accessible,
    /// Every QUIC handshake failed while a TCP connect and TLS handshake worked.
    QuicBlocked,
    /// QUIC worked and TCP/TLS did not: not a QUIC block (the TCP side is web_connectivity's).
    TcpBlocked,
    /// Both failed everywhere: the host is blocked or down, which says nothing of QUIC.
    HostBlocked,
    /// The name gave no address: nothing was tried.
    DnsFailure,
}

impl Verdict {
    /// The name in measurements and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accessible => "accessible",
            Verdict::QuicBlocked => "quic-blocked",
            Verdict::TcpBlocked => "tcp-blocked",
            Verdict::HostBlocked => "host-blocked",
            Verdict::DnsFailure => "dns-failure",
        }
    }
}

/// The verdict on a measurement and what decided it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The verdict.
    pub verdict: Verdict,
    /// For `quic-blocked`: where QUIC failed, in web_connectivity's words: `tcp_ip` when the
    /// datagrams went unanswered or were refused (the transport, as for a UDP exchange in
    /// OONI's stunreachability), `tls` when the handshake inside QUIC failed (an SNI filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The first QUIC failure, when every QUIC handshake failed.
    pub quic_failure: Option<String>,
    /// The first TCP or TLS failure, when no TCP connect + TLS handshake worked.
    pub tcp_tls_failure: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// `test_keys` of a `quic` measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuicKeys {
    /// The lookup of the URL's host (df-002); empty when the URL holds an address.
    #[serde(default)]
    pub queries: Vec<DnsQuery>,
    /// TCP connects (df-005).
    #[serde(default)]
    pub tcp_connect: Vec<TcpConnect>,
    /// TLS handshakes over TCP (df-006, `network` `tcp`).
    #[serde(default)]
    pub tls_handshakes: Vec<TlsHandshake>,
    /// QUIC handshakes (df-006, `network` `udp`), as OONI's urlgetter records them.
    #[serde(default)]
    pub quic_handshakes: Vec<TlsHandshake>,
    /// Why the lookup gave no address (df-007), `null` when it gave one.
    #[serde(default)]
    pub dns_failure: Option<String>,
    /// The verdict's name ([`Verdict::as_str`]).
    pub quic_blocking: Verdict,
    /// Whether QUIC reached the host: `null` when that cannot be told apart from the host
    /// being unreachable.
    pub accessible: Option<bool>,
    /// The probe's assessment (the aggregator makes its own from the handshakes).
    pub assessment: Assessment,
}

/// A `quic` measurement.
pub type QuicMeasurement = Measurement<QuicKeys>;

/// Decides from recorded steps. A QUIC handshake "worked" when it has no failure; a TCP/TLS
/// path when a TLS handshake has none (a connect alone is not HTTPS).
pub fn assess(
    dns_failure: Option<&str>,
    tcp_connect: &[TcpConnect],
    tls_handshakes: &[TlsHandshake],
    quic_handshakes: &[TlsHandshake],
) -> Assessment {
    let quic_ok = quic_handshakes.iter().any(|h| h.failure.is_none());
    let tls_ok = tls_handshakes.iter().any(|h| h.failure.is_none());
    let quic_failure = (!quic_ok)
        .then(|| quic_handshakes.iter().find_map(|h| h.failure.clone()))
        .flatten();
    let tcp_tls_failure = (!tls_ok)
        .then(|| {
            tcp_connect
                .iter()
                .find_map(|c| c.status.failure.clone())
                .or_else(|| tls_handshakes.iter().find_map(|h| h.failure.clone()))
        })
        .flatten();
    let tried = !quic_handshakes.is_empty() || !tcp_connect.is_empty();
    let (verdict, reason) = match (tried, quic_ok, tls_ok) {
        (false, _, _) => (
            Verdict::DnsFailure,
            format!(
                "no address to try: {}",
                dns_failure.unwrap_or("the lookup gave none")
            ),
        ),
        (true, true, true) => (Verdict::Accessible, "QUIC and TCP/TLS both worked".into()),
        (true, true, false) => (
            Verdict::Accessible,
            format!(
                "QUIC worked; TCP/TLS failed: {}",
                tcp_tls_failure.as_deref().unwrap_or("no handshake")
            ),
        ),
        (true, false, true) => (
            Verdict::QuicBlocked,
            format!(
                "QUIC failed ({}) while TCP/TLS to the same address and name worked",
                quic_failure.as_deref().unwrap_or("no handshake")
            ),
        ),
        (true, false, false) => (
            Verdict::HostBlocked,
            format!(
                "QUIC ({}) and TCP/TLS ({}) both failed",
                quic_failure.as_deref().unwrap_or("no handshake"),
                tcp_tls_failure.as_deref().unwrap_or("no handshake")
            ),
        ),
    };
    // QUIC worked: a TCP failure is web_connectivity's to judge, not a verdict on QUIC.
    let verdict = match (verdict, quic_ok, tls_ok) {
        (Verdict::Accessible, true, false) => Verdict::TcpBlocked,
        (v, _, _) => v,
    };
    let layer = (verdict == Verdict::QuicBlocked).then(|| {
        match quic_failure.as_deref() {
            Some(f) if f.starts_with("ssl_") => "tls",
            _ => "tcp_ip",
        }
        .to_string()
    });
    Assessment {
        verdict,
        layer,
        quic_failure,
        tcp_tls_failure,
        reason,
    }
}

impl Assessment {
    /// Whether QUIC reached the host: `false` only when TCP/TLS shows the host was there.
    pub fn accessible(&self) -> Option<bool> {
        match self.verdict {
            Verdict::Accessible | Verdict::TcpBlocked => Some(true),
            Verdict::QuicBlocked => Some(false),
            Verdict::HostBlocked | Verdict::DnsFailure => None,
        }
    }

    /// OONI's `blocking` value for the verdict, as the aggregator stores it: `false`, the
    /// layer, or `null` when QUIC cannot be judged.
    pub fn blocking(&self) -> Option<crate::ooni::Blocking> {
        use crate::ooni::Blocking;
        match self.verdict {
            Verdict::Accessible | Verdict::TcpBlocked => Some(Blocking::Flag(false)),
            Verdict::QuicBlocked => self.layer.clone().map(Blocking::Kind),
            Verdict::HostBlocked | Verdict::DnsFailure => None,
        }
    }
}

/// Measures one URL. Network failures are results, in the measurement.
pub async fn measure(plan: &Plan, tls_ctx: &TlsContext) -> QuicMeasurement {
    let started = Instant::now();
    let start_time = ooni_timestamp(SystemTime::now());
    let trace = Trace::new();
    let mut queries = Vec::new();
    let mut dns_failure = None;
    let addrs: Vec<IpAddr> = match plan.url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(Host::Domain(d)) => {
            let lookup = dns::lookup(&plan.resolver, d, &plan.config, tls_ctx, &trace, None).await;
            queries = lookup.queries;
            dns_failure = lookup.error.as_ref().map(|e| e.failure().to_string());
            lookup.addrs
        }
        None => Vec::new(),
    };
    let host = plan.url.host_str().unwrap_or_default().to_string();
    // An IPv6 literal is bracketed in the URL; the SNI is the name, and an address has none.
    let server_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = plan.url.port_or_known_default().unwrap_or(443);
    let mut tcp_connect = Vec::new();
    let mut tls_handshakes = Vec::new();
    let mut quic_handshakes = Vec::new();
    // Every address at once: a host dropped everywhere costs one deadline, not one per address.
    let trace = Arc::new(trace);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ip) in addrs.into_iter().take(MAX_ADDRESSES).enumerate() {
        let addr = SocketAddr::new(ip, port);
        let (plan, tls_ctx, trace, server_name) = (
            plan.clone(),
            tls_ctx.clone(),
            trace.clone(),
            server_name.clone(),
        );
        tasks.spawn(async move {
            let (tcp_side, quic_side) = tokio::join!(
                tcp_tls(&plan, &tls_ctx, &trace, addr, &server_name),
                quic_step::handshake(
                    &tls_ctx,
                    QuicSpec {
                        server_name: &server_name,
                        addr,
                        alpn: &[ALPN_H3],
                        timeout: plan.config.timeouts.tls_handshake,
                        local: plan.config.local_addr,
                        tags: None,
                        transaction_id: trace.transaction(),
                    },
                    &trace,
                )
            );
            (i, tcp_side, quic_side.record)
        });
    }
    // In the order of the addresses, as the lookup gave them.
    let mut done: Vec<_> = tasks.join_all().await;
    done.sort_by_key(|(i, _, _)| *i);
    for (_, (connect, handshake), quic) in done {
        tcp_connect.push(connect);
        tls_handshakes.extend(handshake);
        quic_handshakes.push(quic);
    }
    let assessment = assess(
        dns_failure.as_deref(),
        &tcp_connect,
        &tls_handshakes,
        &quic_handshakes,
    );
    let keys = QuicKeys {
        queries,
        tcp_connect,
        tls_handshakes,
        quic_handshakes,
        dns_failure,
        quic_blocking: assessment.verdict,
        accessible: assessment.accessible(),
        assessment,
    };
    let mut m = Measurement::vantage(QUIC, QUIC_VERSION, keys);
    m.input = Some(plan.input.clone());
    // The run's start when the caller knows it (`vantage run` sets it); this measurement's
    // otherwise.
    m.test_start_time = Some(start_time.clone());
    m.measurement_start_time = start_time;
    m.test_runtime = started.elapsed().as_secs_f64();
    m
}

/// A TCP connect and, when it works, a TLS handshake with `server_name`.
async fn tcp_tls(
    plan: &Plan,
    tls_ctx: &TlsContext,
    trace: &Trace,
    addr: SocketAddr,
    server_name: &str,
) -> (TcpConnect, Option<TlsHandshake>) {
    let tid = trace.transaction();
    let timeouts = plan.config.timeouts;
    let (record, stream) = tcp::connect(
        addr,
        plan.config.local_addr,
        trace,
        timeouts.tcp_connect,
        None,
        tid,
    )
    .await;
    let Ok(stream) = stream else {
        return (record, None);
    };
    let hs = tls::handshake(
        tls_ctx,
        stream,
        tls::HandshakeSpec {
            server_name,
            addr,
            alpn: TCP_ALPN,
            timeout: timeouts.tls_handshake,
            tags: None,
            transaction_id: tid,
        },
        trace,
    )
    .await;
    (record, Some(hs.record))
}

/// Signs `m` and keeps it in the local store, queued for upload, with its verdict.
pub fn keep(
    m: &QuicMeasurement,
    identity: &crate::envelope::Identity,
    store: &mut crate::store::Store,
) -> Result<crate::envelope::MeasurementId, crate::run::RunError> {
    let a = &m.test_keys.assessment;
    let blocking = a
        .blocking()
        .map(|b| serde_json::to_string(&b).unwrap_or_default());
    let verdict = serde_json::to_string(a)
        .map_err(|e| crate::envelope::EnvelopeError::Malformed(e.to_string()))?;
    let row = crate::store::NewResult {
        id: "",
        input: m.input.as_deref(),
        test_name: QUIC,
        measured_at: &m.measurement_start_time,
        blocking: blocking.as_deref(),
        accessible: m.test_keys.accessible,
        confirmed: false,
        verdict: &verdict,
        envelope: "",
    };
    crate::run::keep(m, row, identity, store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Timeouts;
    use crate::engine::quic::tests::quic_server;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use serde_json::{Map, Value};
    use std::time::Duration;
    use vantage_fixtures::http::Response;
    use vantage_fixtures::tls::{TestCa, TlsFixture};

    fn ctx(ca: &TestCa) -> TlsContext {
        let roots = CertificateDer::pem_slice_iter(ca.pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("ca pem");
        TlsContext::new(roots).expect("tls context")
    }

    fn config() -> EngineConfig {
        EngineConfig {
            timeouts: Timeouts {
                dns: Duration::from_secs(2),
                tcp_connect: Duration::from_secs(2),
                tls_handshake: Duration::from_millis(800),
                http: Duration::from_secs(2),
            },
            ..EngineConfig::default()
        }
    }

    /// The URL of `port` on loopback by address, so no resolver is asked; the SNI is then
    /// the address, for which the fixtures' certificates are made.
    fn plan(port: u16) -> Plan {
        Plan::new(
            &format!("https://127.0.0.1:{port}/"),
            &[Resolver::System],
            config(),
        )
        .expect("plan")
    }

    #[tokio::test]
    async fn a_real_quic_server_is_accessible() {
        let ca = TestCa::new("quic ca");
        let leaf = ca.leaf(&["127.0.0.1"]);
        let (_server, addr) = quic_server(&leaf);
        // TCP on the same port number, as a real site serves both.
        let _tcp = TlsFixture::start_on(
            SocketAddr::new(addr.ip(), addr.port()),
            &leaf,
            std::sync::Arc::new(|_| Response::html("hi")),
        )
        .await;
        let m = measure(&plan(addr.port()), &ctx(&ca)).await;
        let k = &m.test_keys;
        assert_eq!(k.quic_blocking, Verdict::Accessible, "{:?}", k.assessment);
        assert_eq!(k.accessible, Some(true));
        assert_eq!(k.quic_handshakes.len(), 1);
        assert_eq!(k.quic_handshakes[0].failure, None);
        assert_eq!(k.quic_handshakes[0].negotiated_protocol, "h3");
        assert_eq!(k.tls_handshakes[0].failure, None);
        assert_eq!(m.test_name, "quic");
        let json = serde_json::to_value(&m).expect("json");
        assert_eq!(json["test_keys"]["quic_blocking"], "accessible");
        assert_eq!(json["test_keys"]["quic_handshakes"][0]["network"], "udp");
        assert_eq!(json["test_keys"]["tls_handshakes"][0]["network"], "tcp");
    }

    #[tokio::test]
    async fn udp_swallowed_while_tcp_tls_works_is_quic_blocked() {
        let ca = TestCa::new("quic ca");
        let leaf = ca.leaf(&["127.0.0.1"]);
        let tcp = TlsFixture::fixed(&leaf, Response::html("hi")).await;
        // A UDP socket on the same port number that never reads: datagrams are dropped.
        let _sink = std::net::UdpSocket::bind(tcp.addr).expect("udp on the same port");
        let m = measure(&plan(tcp.addr.port()), &ctx(&ca)).await;
        let k = &m.test_keys;
        assert_eq!(k.quic_blocking, Verdict::QuicBlocked, "{:?}", k.assessment);
        assert_eq!(k.accessible, Some(false));
        assert_eq!(
            k.quic_handshakes[0].failure.as_deref(),
            Some("generic_timeout_error")
        );
        assert_eq!(k.assessment.layer.as_deref(), Some("tcp_ip"));
        assert_eq!(
            k.assessment.blocking(),
            Some(crate::ooni::Blocking::Kind("tcp_ip".into()))
        );
    }

    #[tokio::test]
    async fn both_closed_is_host_blocked_not_quic_blocked() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        drop(tcp);
        let ca = TestCa::new("quic ca");
        let m = measure(&plan(port), &ctx(&ca)).await;
        let k = &m.test_keys;
        assert_eq!(k.quic_blocking, Verdict::HostBlocked, "{:?}", k.assessment);
        assert_eq!(k.accessible, None);
        assert_eq!(k.assessment.blocking(), None);
        assert_eq!(
            k.tcp_connect[0].status.failure.as_deref(),
            Some("connection_refused")
        );
        assert_eq!(
            k.assessment.tcp_tls_failure.as_deref(),
            Some("connection_refused")
        );
    }

    #[tokio::test]
    async fn every_address_is_measured_at_once_in_the_lookups_order() {
        use vantage_fixtures::dns::{Behaviour, DnsFixture};
        let ca = TestCa::new("quic ca");
        let leaf = ca.leaf(&["two.quic.test"]);
        let first = TlsFixture::fixed(&leaf, Response::html("one")).await;
        let second_addr = SocketAddr::from(([127, 0, 0, 2], first.addr.port()));
        let _second = TlsFixture::start_on(
            second_addr,
            &leaf,
            std::sync::Arc::new(|_| Response::html("two")),
        )
        .await;
        let _sinks =
            [first.addr, second_addr].map(|a| std::net::UdpSocket::bind(a).expect("udp sink"));
        let dns = DnsFixture::start(vec![(
            "two.quic.test",
            Behaviour::Answer(vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()]),
        )])
        .await;
        let plan = Plan::new(
            &format!("https://two.quic.test:{}/", first.addr.port()),
            &[Resolver::Udp(dns.addr)],
            config(),
        )
        .expect("plan");
        let m = measure(&plan, &ctx(&ca)).await;
        let k = &m.test_keys;
        assert_eq!(k.quic_blocking, Verdict::QuicBlocked, "{:?}", k.assessment);
        let addresses: Vec<_> = k
            .quic_handshakes
            .iter()
            .map(|h| h.address.clone().unwrap_or_default())
            .collect();
        assert_eq!(addresses, [first.addr.to_string(), second_addr.to_string()]);
        assert!(
            k.quic_handshakes
                .iter()
                .all(|h| h.server_name == "two.quic.test")
        );
        assert_eq!(k.tls_handshakes.len(), 2);
        // Two dropped addresses cost one 800 ms deadline, not two.
        assert!(m.test_runtime < 1.5, "took {} s", m.test_runtime);
    }

    /// Every field of `theirs` is in `ours` with the same JSON type, a `null` on either side
    /// matching any type (df-000: consumers must expect null); `skip` names fields left out.
    fn same_shape(what: &str, theirs: &Value, ours: &Value, skip: &[&str]) -> Vec<String> {
        let kind = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let mut problems = Vec::new();
        for (key, t) in theirs.as_object().into_iter().flatten() {
            if skip.contains(&key.as_str()) {
                continue;
            }
            match ours.get(key) {
                None => problems.push(format!("{what}.{key} missing")),
                Some(o) if o.is_null() || t.is_null() || kind(o) == kind(t) => {}
                Some(o) => problems.push(format!("{what}.{key}: {} not {}", kind(o), kind(t))),
            }
        }
        problems
    }

    /// OONI's simplequicping example (`tests/data/ooni/spec/ts-034-simplequicping.json`,
    /// copied from its spec, tests/data/SOURCES.md): our QUIC handshake record has every field
    /// of its `quic_handshake`, and our envelope every field of its envelope, with their types.
    #[tokio::test]
    async fn the_record_has_the_shape_of_the_specs_quic_handshake() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/ooni/spec/ts-034-simplequicping.json"
        );
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("spec example"))
                .expect("json");
        let theirs = &example["test_keys"]["pings"][0]["quic_handshake"];
        assert_eq!(theirs["network"], "udp");
        let ca = TestCa::new("quic ca");
        let leaf = ca.leaf(&["127.0.0.1"]);
        let (_server, addr) = quic_server(&leaf);
        let _tcp =
            TlsFixture::start_on(addr, &leaf, std::sync::Arc::new(|_| Response::html("hi"))).await;
        let m = measure(&plan(addr.port()), &ctx(&ca)).await;
        let ours = serde_json::to_value(&m).expect("json");
        let mine = &ours["test_keys"]["quic_handshakes"][0];
        let mut problems = same_shape("quic_handshake", theirs, mine, &[]);
        // The envelope. OONI's report id, the resolver's and probe's networks are optional
        // (df-000) and not written by Vantage; `options` are miniooni's command line.
        let skip = [
            "test_keys",
            "options",
            "report_id",
            "resolver_asn",
            "resolver_ip",
            "resolver_network_name",
            "probe_network_name",
        ];
        problems.extend(same_shape("measurement", &example, &ours, &skip));
        assert!(problems.is_empty(), "{problems:#?}");
        // Not vacuous: both handshakes worked and carry certificates as base64 binary data.
        assert_eq!(mine["failure"], Value::Null);
        assert_eq!(mine["peer_certificates"][0]["format"], "base64");
        assert_eq!(theirs["peer_certificates"][0]["format"], "base64");
    }

    #[test]
    fn plans_refuse_what_cannot_be_measured() {
        assert!(matches!(
            Plan::new("http://example.org/", &[Resolver::System], config()),
            Err(PlanError::NotHttps { .. })
        ));
        assert!(matches!(
            Plan::new("not a url", &[Resolver::System], config()),
            Err(PlanError::InvalidUrl { .. })
        ));
        assert_eq!(
            Plan::new("https://example.org/", &[], config()).err(),
            Some(PlanError::NoResolver)
        );
    }

    #[test]
    fn a_tls_failure_inside_quic_is_on_the_tls_layer_and_no_address_is_dns_failure() {
        let hs = |network: &str, failure: Option<&str>| TlsHandshake {
            network: Some(network.into()),
            address: Some("192.0.2.1:443".into()),
            cipher_suite: String::new(),
            failure: failure.map(str::to_string),
            negotiated_protocol: String::new(),
            no_tls_verify: false,
            peer_certificates: None,
            server_name: "x.example".into(),
            t0: None,
            t: 0.0,
            tags: None,
            tls_version: String::new(),
            transaction_id: None,
            x_alert: None,
            extra: Map::new(),
        };
        let connect: TcpConnect = serde_json::from_value(serde_json::json!({
            "ip": "192.0.2.1", "port": 443,
            "status": {"failure": null, "success": true}
        }))
        .expect("tcp connect");
        let a = assess(
            None,
            std::slice::from_ref(&connect),
            &[hs("tcp", None)],
            &[hs("udp", Some("ssl_failed_handshake"))],
        );
        assert_eq!(
            (a.verdict, a.layer.as_deref()),
            (Verdict::QuicBlocked, Some("tls"))
        );
        let a = assess(Some("dns_nxdomain_error"), &[], &[], &[]);
        assert_eq!(a.verdict, Verdict::DnsFailure);
        assert_eq!(a.accessible(), None);
        assert!(a.reason.contains("dns_nxdomain_error"));
        let a = assess(
            None,
            &[connect],
            &[hs("tcp", Some("ssl_invalid_hostname"))],
            &[hs("udp", None)],
        );
        assert_eq!(
            (a.verdict, a.accessible()),
            (Verdict::TcpBlocked, Some(true))
        );
    }
}
