//! dnscheck (OONI spec ts-028): whether well-known encrypted DNS resolvers work from here, over
//! DNS over HTTPS (RFC 8484) and DNS over TLS (RFC 7858), and what they answer (docs/dnscheck.md).
//!
//! For each resolver of the list (`test-lists/resolvers.toml`, [`Target`]), as ts-028 describes
//! it: the *bootstrap* resolves the resolver's own name with the engine's normal DNS (none when
//! its URL holds an address), its result merged with the addresses the list knows; then, for
//! each address, the *lookup* asks it for the domain's A and AAAA records, each query on a
//! connection of its own (TCP connect, TLS handshake with the resolver's name as SNI, then the
//! DNS exchange), every step recorded with the engine's OONI failure strings (df-007). The
//! verdict is the aggregator's own rule for OONI's dnscheck ([`crate::verdict::services`]), so
//! the volunteer sees what the aggregator will decide.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use bytes::Bytes;
use hickory_proto::rr::RecordType;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::{Host, Url};

use crate::engine::{
    EngineConfig, Lookup, Resolver, TlsContext, Trace, dns, http as http_step, tcp, tls,
};
use crate::envelope::{Identity, MeasurementId};
use crate::failure::{Operation, StepError};
use crate::ooni::{Measurement, TcpConnect, TlsHandshake};
use crate::run::RunError;
use crate::store::Store;
use crate::verdict::services::{ServiceVerdict, score_service};

/// OONI's `test_name`.
pub const TEST_NAME: &str = "dnscheck";
/// The version of OONI's dnscheck whose keys and steps we follow (probe-cli's
/// `internal/experiment/dnscheck`).
pub const TEST_VERSION: &str = "0.9.2";
/// The name resolvers are asked for when none is given: ts-028's default.
pub const DEFAULT_DOMAIN: &str = "example.org";
/// The list compiled into the binary.
pub const BUILTIN_RESOLVERS: &str = include_str!("../../test-lists/resolvers.toml");

/// The most resolvers one file may list: each costs a bootstrap and two connections an address.
const MAX_RESOLVERS: usize = 200;
/// The most addresses one resolver is tried at (bootstrap and list together).
const MAX_ADDRESSES: usize = 8;
/// The largest DoH response body read (a DNS message is at most 65,535 bytes).
const DOH_BODY_CAP: usize = 64 * 1024;

/// How a resolver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// DNS over HTTPS (RFC 8484), `https://` URLs.
    Doh,
    /// DNS over TLS (RFC 7858), `dot://` URLs.
    Dot,
}

/// One resolver to check, validated before any network I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the list writes it: the measurement's `input`.
    pub input: String,
    /// The URL parsed.
    pub url: Url,
    /// DoH or DoT.
    pub transport: Transport,
    /// The URL's host: a name to bootstrap, or an address.
    pub host: Host<String>,
    /// The port (443 for DoH, 853 for DoT unless the URL says).
    pub port: u16,
    /// The TLS server name: `sni` from the list, else the URL's host.
    pub server_name: String,
    /// Addresses known to be the resolver's, tried besides the bootstrap's.
    pub addresses: Vec<IpAddr>,
    /// Who runs it, for the summary.
    pub operator: Option<String>,
}

/// Why a resolvers file cannot be used. Found before any network I/O.
pub type ResolversFileError = crate::data_file::DataFileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    resolver: Vec<RawResolver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    url: String,
    operator: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    sni: Option<String>,
}

/// The built-in list.
pub fn builtin() -> Result<Vec<Target>, ResolversFileError> {
    parse_resolvers(BUILTIN_RESOLVERS, "test-lists/resolvers.toml")
}

/// Reads a resolvers file (the format of `test-lists/resolvers.toml`).
pub fn parse_resolvers(text: &str, source_name: &str) -> Result<Vec<Target>, ResolversFileError> {
    let raw: RawFile = crate::data_file::parse_toml(text, source_name)?;
    let bad = |field: String, reason: String| ResolversFileError::Field {
        source_name: source_name.to_string(),
        field,
        reason,
    };
    if raw.resolver.is_empty() {
        return Err(bad("resolver".into(), "no [[resolver]] listed".into()));
    }
    if raw.resolver.len() > MAX_RESOLVERS {
        return Err(bad(
            "resolver".into(),
            format!("{} listed; at most {MAX_RESOLVERS}", raw.resolver.len()),
        ));
    }
    let mut targets: Vec<Target> = Vec::with_capacity(raw.resolver.len());
    for (i, r) in raw.resolver.into_iter().enumerate() {
        let target =
            target(&r).map_err(|(field, reason)| bad(format!("resolver[{i}].{field}"), reason))?;
        if targets.iter().any(|t| t.input == target.input) {
            return Err(bad(
                format!("resolver[{i}].url"),
                format!("{} is listed twice", target.input),
            ));
        }
        targets.push(target);
    }
    Ok(targets)
}

/// One `[[resolver]]` checked; the error names the field.
fn target(r: &RawResolver) -> Result<Target, (&'static str, String)> {
    let input = r.url.trim().to_string();
    let url = Url::parse(&input).map_err(|e| ("url", format!("{input:?} is not a URL: {e}")))?;
    let transport = match url.scheme() {
        "https" => Transport::Doh,
        "dot" => Transport::Dot,
        other => {
            return Err((
                "url",
                format!("{input:?}: scheme {other:?} is neither https (DoH) nor dot (DoT)"),
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(("url", format!("{input:?} carries credentials")));
    }
    // `dot://` is not a scheme the URL standard knows, so its host is read here as an address
    // when it is one, as for `https://`.
    let host = match url.host() {
        None => return Err(("url", format!("{input:?} has no host"))),
        Some(Host::Domain(d)) => match d.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Host::Ipv4(v4),
            Ok(IpAddr::V6(v6)) => Host::Ipv6(v6),
            Err(_) if d.is_empty() => return Err(("url", format!("{input:?} has no host"))),
            Err(_) => Host::Domain(d.to_ascii_lowercase()),
        },
        Some(Host::Ipv4(a)) => Host::Ipv4(a),
        Some(Host::Ipv6(a)) => Host::Ipv6(a),
    };
    let port = url.port().unwrap_or(match transport {
        Transport::Doh => 443,
        Transport::Dot => 853,
    });
    if port == 0 {
        return Err(("url", format!("{input:?}: port 0")));
    }
    let server_name = match &r.sni {
        Some(s) if s.trim().is_empty() => return Err(("sni", "empty".into())),
        Some(s) => s.trim().to_string(),
        None => match &host {
            Host::Domain(d) => d.clone(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => a.to_string(),
        },
    };
    if rustls::pki_types::ServerName::try_from(server_name.clone()).is_err() {
        return Err(("sni", format!("{server_name:?} is not a server name")));
    }
    let mut addresses = Vec::new();
    for a in &r.addresses {
        let ip: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| ("addresses", format!("{a:?} is not an IP address")))?;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    if addresses.len() > MAX_ADDRESSES {
        return Err((
            "addresses",
            format!("{} listed; at most {MAX_ADDRESSES}", addresses.len()),
        ));
    }
    Ok(Target {
        input,
        url,
        transport,
        host,
        port,
        server_name,
        addresses,
        operator: r.operator.clone().filter(|o| !o.trim().is_empty()),
    })
}

/// Checks that `domain` can be asked for (a DNS name), before any network I/O.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let d = domain.trim_end_matches('.');
    if d.is_empty() || d.parse::<IpAddr>().is_ok() {
        return Err(format!("{domain:?} is not a domain name"));
    }
    hickory_proto::rr::Name::from_ascii(d)
        .map(|_| ())
        .map_err(|e| format!("{domain:?} is not a domain name ({e})"))
}

/// What one address's lookup found: the ts-027 result kept under `lookups`, and a line's worth
/// for the summary.
#[derive(Debug, Clone)]
pub struct AddressLookup {
    /// The key under `lookups`: `dot://ADDR:PORT` or the DoH URL with the address as host.
    pub endpoint: String,
    /// The lookup's failure (null when any query gave an address).
    pub failure: Option<String>,
    /// The step that failed, as OONI names it (`connect`, `tls_handshake`, `resolve`,
    /// `http_round_trip`).
    pub failed_operation: Option<String>,
    /// The addresses the resolver answered for the domain.
    pub answers: Vec<IpAddr>,
    /// The urlgetter-shaped result (ts-027) for `lookups`.
    pub keys: Value,
}

/// One resolver's measurement, with the aggregator's verdict on it.
#[derive(Debug, Clone)]
pub struct DnscheckResult {
    /// The resolver.
    pub target: Target,
    /// The OONI measurement.
    pub measurement: Measurement<Value>,
    /// Why the bootstrap failed, if it did (df-007).
    pub bootstrap_failure: Option<String>,
    /// Each address's lookup, in the order tried.
    pub lookups: Vec<AddressLookup>,
    /// The aggregator's rules applied to it.
    pub verdict: Option<ServiceVerdict>,
}

/// Checks one resolver: bootstrap with `bootstrap` (the engine's normal DNS), then each address.
/// Network failures are results: they are in the measurement.
pub async fn measure(
    target: &Target,
    domain: &str,
    config: &EngineConfig,
    bootstrap: &Resolver,
    tls_ctx: &TlsContext,
) -> DnscheckResult {
    let started = SystemTime::now();
    let trace = Trace::new();
    let domain = domain.trim_end_matches('.');

    let (bootstrap_keys, bootstrap_failure, mut addrs) = match &target.host {
        Host::Ipv4(a) => (Value::Null, None, vec![IpAddr::V4(*a)]),
        Host::Ipv6(a) => (Value::Null, None, vec![IpAddr::V6(*a)]),
        Host::Domain(name) => {
            let found = dns::lookup(bootstrap, name, config, tls_ctx, &trace, None).await;
            let failure = found.error.as_ref().map(|e| e.failure().to_string());
            let keys = json!({
                "agent": "",
                "failed_operation": failure.as_ref().map(|_| "resolve"),
                "failure": failure,
                "network_events": null,
                "queries": queries_json(&found.queries),
                "requests": null,
                "tcp_connect": null,
                "tls_handshakes": null,
            });
            (keys, failure, found.addrs)
        }
    };
    for a in &target.addresses {
        if !addrs.contains(a) {
            addrs.push(*a);
        }
    }
    addrs.truncate(MAX_ADDRESSES);

    let mut lookups = Vec::with_capacity(addrs.len());
    for ip in addrs {
        let addr = SocketAddr::new(ip, target.port);
        lookups.push(lookup_at(target, addr, domain, config, tls_ctx, &trace).await);
    }
    let mut by_endpoint = Map::new();
    for l in &lookups {
        by_endpoint.insert(l.endpoint.clone(), l.keys.clone());
    }
    let test_keys = json!({
        "domain": domain,
        "bootstrap": bootstrap_keys,
        "bootstrap_failure": bootstrap_failure,
        "lookups": by_endpoint,
    });
    let verdict = score_service(TEST_NAME, Some(&target.input), &test_keys);
    let mut m = Measurement::vantage(TEST_NAME, TEST_VERSION, test_keys);
    let mut extensions = Map::new();
    for key in [
        "dnst",
        "httpt",
        "netevents",
        "tcpconnect",
        "tlshandshake",
        "tunnel",
    ] {
        extensions.insert(key.into(), Value::from(0));
    }
    m.extensions = Some(extensions);
    m.input = Some(target.input.clone());
    m.measurement_start_time = crate::ooni::ooni_timestamp(started);
    m.test_start_time = Some(m.measurement_start_time.clone());
    m.test_runtime = trace.clock.secs();
    DnscheckResult {
        target: target.clone(),
        measurement: m,
        bootstrap_failure,
        lookups,
        verdict,
    }
}

/// The A and AAAA queries to one address, each on a connection of its own (as OONI's example
/// measurement shows, two connects an address), recorded as one urlgetter result (ts-027).
async fn lookup_at(
    target: &Target,
    addr: SocketAddr,
    domain: &str,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
) -> AddressLookup {
    let (endpoint, a, aaaa) = match target.transport {
        Transport::Dot => {
            let endpoint = format!("dot://{addr}");
            let (a, aaaa) = tokio::join!(
                dns::dot_query(
                    addr,
                    &target.server_name,
                    domain,
                    RecordType::A,
                    config,
                    tls_ctx,
                    trace,
                    &None
                ),
                dns::dot_query(
                    addr,
                    &target.server_name,
                    domain,
                    RecordType::AAAA,
                    config,
                    tls_ctx,
                    trace,
                    &None
                ),
            );
            let a = Exchange {
                lookup: a.lookup,
                tcp: a.tcp_connect,
                tls: a.tls_handshake,
                request: None,
            };
            let aaaa = Exchange {
                lookup: aaaa.lookup,
                tcp: aaaa.tcp_connect,
                tls: aaaa.tls_handshake,
                request: None,
            };
            (endpoint, a, aaaa)
        }
        Transport::Doh => {
            let mut url = target.url.clone();
            // The query goes to this address; Host and SNI stay the resolver's name.
            let _ = url.set_ip_host(addr.ip());
            let endpoint = url.to_string();
            let (a, aaaa) = tokio::join!(
                doh_at(
                    target,
                    &url,
                    addr,
                    domain,
                    RecordType::A,
                    config,
                    tls_ctx,
                    trace
                ),
                doh_at(
                    target,
                    &url,
                    addr,
                    domain,
                    RecordType::AAAA,
                    config,
                    tls_ctx,
                    trace
                ),
            );
            (endpoint, a, aaaa)
        }
    };
    let mut tcp_connect = vec![a.tcp, aaaa.tcp];
    tcp_connect.sort_by(|x, y| x.t0.partial_cmp(&y.t0).unwrap_or(std::cmp::Ordering::Equal));
    let tls_handshakes: Vec<TlsHandshake> = [a.tls, aaaa.tls].into_iter().flatten().collect();
    let requests: Vec<Value> = [a.request, aaaa.request].into_iter().flatten().collect();
    let merged = dns::merge_lookups(vec![a.lookup, aaaa.lookup]);
    let failure = merged.error.as_ref().map(|e| e.failure().to_string());
    let failed_operation = merged.error.as_ref().map(|e| ooni_operation(e).to_string());
    let keys = json!({
        "agent": "redirect",
        "failed_operation": failed_operation,
        "failure": failure,
        "network_events": null,
        "queries": queries_json(&merged.queries),
        "requests": (!requests.is_empty()).then_some(requests),
        "tcp_connect": tcp_connect,
        "tls_handshakes": (!tls_handshakes.is_empty()).then_some(tls_handshakes),
    });
    AddressLookup {
        endpoint,
        failure,
        failed_operation,
        answers: merged.addrs,
        keys,
    }
}

/// Query records (df-002) with `resolver_hostname` and `resolver_port` written out as null
/// when unknown, as OONI's dnscheck writes them (ts-028's example), rather than left out.
fn queries_json(queries: &[crate::ooni::DnsQuery]) -> Value {
    let mut out = serde_json::to_value(queries).unwrap_or(Value::Null);
    if let Some(list) = out.as_array_mut() {
        for q in list.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["resolver_hostname", "resolver_port"] {
                q.entry(key).or_insert(Value::Null);
            }
        }
    }
    out
}

/// The `failed_operation` OONI's urlgetter writes for a lookup that failed: the innermost step
/// (probe-cli `internal/netxlite/operations.go`), where a DNS message that could not be used,
/// or did not come, is the lookup's own step, `resolve`.
fn ooni_operation(e: &StepError) -> &'static str {
    match e.operation() {
        Operation::Connect => "connect",
        Operation::TlsHandshake => "tls_handshake",
        Operation::HttpRoundTrip => "http_round_trip",
        Operation::Resolve | Operation::DnsRoundTrip => "resolve",
        Operation::TopLevel => "top_level",
    }
}

/// One query and the connection that carried it.
struct Exchange {
    lookup: Lookup,
    tcp: TcpConnect,
    tls: Option<TlsHandshake>,
    request: Option<Value>,
}

/// One DoH query (RFC 8484 section 4.1, POST) to `addr`, on a connection the engine makes, with
/// the resolver's name as SNI and Host: `engine::client` would resolve the name again itself.
#[allow(clippy::too_many_arguments)]
async fn doh_at(
    target: &Target,
    url: &Url,
    addr: SocketAddr,
    domain: &str,
    qtype: RecordType,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
) -> Exchange {
    let t0 = trace.clock.secs();
    let tid = trace.transaction();
    let endpoint = url.to_string();
    let record = |result| {
        dns::recorded_query(
            "doh", domain, qtype, &endpoint, t0, trace, None, tid, result,
        )
    };
    let (tcp, stream) = tcp::connect(
        addr,
        config.local_addr,
        trace,
        config.timeouts.tcp_connect,
        None,
        tid,
    )
    .await;
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            return Exchange {
                lookup: record(Err(e)),
                tcp,
                tls: None,
                request: None,
            };
        }
    };
    let spec = tls::HandshakeSpec {
        server_name: &target.server_name,
        addr,
        alpn: &[b"http/1.1"],
        timeout: config.timeouts.tls_handshake,
        tags: None,
        transaction_id: tid,
    };
    let handshake = tls::handshake(tls_ctx, stream, spec, trace).await;
    let stream = match handshake.result {
        Ok(s) => s,
        Err(e) => {
            return Exchange {
                lookup: record(Err(e)),
                tcp,
                tls: Some(handshake.record),
                request: None,
            };
        }
    };
    let (wire, id) = match dns::wire_query(domain, qtype, &endpoint) {
        Ok(q) => q,
        Err(e) => {
            return Exchange {
                lookup: record(Err(e)),
                tcp,
                tls: Some(handshake.record),
                request: None,
            };
        }
    };
    let host_header = http_step::host_header(&target.url);
    let request = Request::builder()
        .method("POST")
        .uri(http_step::origin_form(&target.url))
        .header("Host", &host_header)
        .header("Accept", "application/dns-message")
        .header("Content-Type", "application/dns-message")
        .header("User-Agent", concat!("vantage/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(wire.clone())));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let e = StepError::Io {
                op: Operation::HttpRoundTrip,
                target: endpoint.clone(),
                source: std::io::Error::other(e),
            };
            return Exchange {
                lookup: record(Err(e)),
                tcp,
                tls: Some(handshake.record),
                request: None,
            };
        }
    };
    let peer = addr.to_string();
    let t_request = trace.clock.secs();
    let exchange =
        http_step::exchange(stream, request, &peer, config.timeouts.dns, DOH_BODY_CAP).await;
    let status = exchange.head.as_ref().map(|h| h.status.as_u16());
    let http_failure = exchange.error.as_ref().map(|e| e.failure().to_string());
    let response = exchange.head.as_ref().map(|h| {
        let headers: Map<String, Value> = h
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), Value::from(v))
            })
            .collect();
        json!({
            "body": crate::ooni::MaybeBinary::from_bytes(&exchange.body),
            "body_is_truncated": exchange.truncated,
            "code": h.status.as_u16(),
            "headers": headers,
        })
    });
    let request = json!({
        "failure": http_failure,
        "request": {
            "body": crate::ooni::MaybeBinary::from_bytes(&wire),
            "headers": {
                "Accept": "application/dns-message",
                "Content-Type": "application/dns-message",
                "Host": host_header,
            },
            "method": "POST",
            "url": endpoint,
        },
        "response": response,
        "t0": t_request,
        "t": trace.clock.secs(),
        "transaction_id": tid,
    });
    // RFC 8484 section 4.2.1: a DNS answer comes with 200; any other status is no answer.
    let result = match (exchange.error, status) {
        (Some(e), _) => Err(e),
        (None, Some(200)) => Ok((exchange.body, id)),
        (None, status) => Err(StepError::DnsMalformed {
            server: endpoint.clone(),
            reason: format!("HTTP status {}", status.unwrap_or(0)),
        }),
    };
    Exchange {
        lookup: record(result),
        tcp,
        tls: Some(handshake.record),
        request: Some(request),
    }
}

/// Signs and stores a result, with its outbox row, as the other tests do ([`crate::run::keep`]).
pub fn keep(
    result: &DnscheckResult,
    identity: &Identity,
    store: &mut Store,
) -> Result<MeasurementId, RunError> {
    crate::run::keep_service(
        &result.measurement,
        Some(&result.target.input),
        TEST_NAME,
        result.verdict.as_ref(),
        identity,
        store,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use hickory_proto::op::Message;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use vantage_fixtures::dns::{Behaviour, DnsFixture, respond};
    use vantage_fixtures::http::Response;
    use vantage_fixtures::tcp::{ResetListener, closed_port};
    use vantage_fixtures::tls::{Leaf, TestCa, TlsFixture};

    const ANSWER: [u8; 4] = [93, 184, 216, 34];

    fn table() -> Vec<(&'static str, Behaviour)> {
        vec![("example.org", Behaviour::Answer(vec![ANSWER.into()]))]
    }

    /// Trusts only the test CA, as a probe trusts Mozilla's roots.
    fn client_tls(ca: &TestCa) -> TlsContext {
        let root = CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca pem");
        TlsContext::new(vec![root]).expect("tls context")
    }

    fn quick() -> EngineConfig {
        let mut config = EngineConfig::default();
        config.timeouts.dns = Duration::from_millis(700);
        config.timeouts.tcp_connect = Duration::from_secs(2);
        config.timeouts.tls_handshake = Duration::from_secs(2);
        config
    }

    fn one(url: &str, extra: &str) -> Target {
        let text = format!("[[resolver]]\nurl = \"{url}\"\n{extra}\n");
        parse_resolvers(&text, "test").expect("target").remove(0)
    }

    #[derive(Debug, Clone, Copy)]
    enum DotMode {
        /// Answers from the table.
        Answer,
        /// Answers a framed message that is not DNS.
        Garbage,
        /// Completes the handshake, reads the query, never answers.
        Silent,
    }

    /// A DNS-over-TLS server on loopback (RFC 7858): TLS with `leaf`, then length-prefixed DNS
    /// messages (RFC 7766 section 8) answered as the UDP and DoH fixtures answer them.
    async fn dot_server(leaf: &Leaf, mode: DotMode) -> (SocketAddr, vantage_test_task::Task) {
        tls_server(leaf, mode, b"dot").await
    }

    /// [`dot_server`] offering `alpn`: with `http/1.1` and [`DotMode::Silent`], a DoH resolver
    /// that completes the handshake and never answers the request.
    async fn tls_server(
        leaf: &Leaf,
        mode: DotMode,
        alpn: &[u8],
    ) -> (SocketAddr, vantage_test_task::Task) {
        let dir = std::env::temp_dir().join(format!(
            "vantage-dnscheck-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let (chain_path, key_path) = (dir.join("chain.pem"), dir.join("key.pem"));
        leaf.write_pem(&chain_path, &key_path);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&chain_path)
            .expect("chain")
            .collect::<Result<_, _>>()
            .expect("chain pem");
        let key = PrivateKeyDer::from_pem_file(&key_path).expect("key pem");
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
        config.alpn_protocols = vec![alpn.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let table: Vec<(String, Behaviour)> = table()
            .into_iter()
            .map(|(n, b)| (n.to_string(), b))
            .collect();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, table) = (acceptor.clone(), table.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut len = [0u8; 2];
                    if tls.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if tls.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let reply = match mode {
                        DotMode::Silent => {
                            std::future::pending::<()>().await;
                            return;
                        }
                        DotMode::Garbage => b"\x13\x37not dns".to_vec(),
                        DotMode::Answer => Message::from_vec(&query)
                            .ok()
                            .and_then(|q| respond(&q, &table).into_iter().next())
                            .map(|(_, bytes)| bytes)
                            .unwrap_or_default(),
                    };
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    let _ = tls.write_all(&framed).await;
                    let _ = tls.flush().await;
                });
            }
        });
        (addr, vantage_test_task::Task(task))
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    /// Aborts the server when the test ends.
    mod vantage_test_task {
        pub struct Task(pub tokio::task::JoinHandle<()>);
        impl Drop for Task {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
    }

    fn layer(r: &DnscheckResult) -> Option<String> {
        match r.verdict.as_ref().and_then(|v| v.blocking.clone()) {
            Some(crate::ooni::Blocking::Kind(k)) => Some(k),
            _ => None,
        }
    }

    fn accessible(r: &DnscheckResult) -> Option<bool> {
        r.verdict.as_ref().and_then(|v| v.accessible)
    }

    #[tokio::test]
    async fn doh_resolver_bootstrapped_by_name_answers() {
        let ca = TestCa::new("dnscheck CA");
        let leaf = ca.leaf(&["doh.test"]);
        let doh = TlsFixture::doh(&leaf, table()).await;
        let bootstrap = DnsFixture::start(vec![(
            "doh.test",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        )])
        .await;
        let url = format!("https://doh.test:{}/dns-query", doh.addr.port());
        let target = one(&url, "");
        let r = measure(
            &target,
            DEFAULT_DOMAIN,
            &quick(),
            &Resolver::Udp(bootstrap.addr),
            &client_tls(&ca),
        )
        .await;
        assert_eq!(accessible(&r), Some(true), "{:?}", r.verdict);
        assert_eq!(r.bootstrap_failure, None);
        assert_eq!(r.lookups.len(), 1);
        let l = &r.lookups[0];
        assert_eq!(
            l.endpoint,
            format!("https://127.0.0.1:{}/dns-query", doh.addr.port())
        );
        assert_eq!(l.failure, None);
        assert_eq!(l.answers, vec![IpAddr::from(ANSWER)]);
        let tk = &r.measurement.test_keys;
        assert_eq!(tk["domain"], "example.org");
        assert_eq!(tk["bootstrap"]["queries"][0]["hostname"], "doh.test");
        let keys = &tk["lookups"][&l.endpoint];
        assert_eq!(keys["requests"].as_array().map(Vec::len), Some(2));
        assert_eq!(keys["requests"][0]["response"]["code"], 200);
        assert_eq!(keys["tls_handshakes"][0]["server_name"], "doh.test");
        assert_eq!(keys["tcp_connect"].as_array().map(Vec::len), Some(2));
        let engines: Vec<&str> = keys["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .filter_map(|q| q["engine"].as_str())
            .collect();
        assert_eq!(engines, ["doh", "doh"]);
        assert_eq!(r.measurement.input.as_deref(), Some(url.as_str()));
        assert_eq!(r.measurement.test_name, "dnscheck");
    }

    #[tokio::test]
    async fn dot_resolver_at_an_address_answers() {
        let ca = TestCa::new("dnscheck CA");
        let (addr, _server) = dot_server(&ca.leaf(&["dot.test"]), DotMode::Answer).await;
        let target = one(&format!("dot://{addr}/"), "sni = \"dot.test\"");
        let r = measure(
            &target,
            "example.org.",
            &quick(),
            &Resolver::System,
            &client_tls(&ca),
        )
        .await;
        assert_eq!(accessible(&r), Some(true), "{:?}", r.verdict);
        assert!(r.measurement.test_keys["bootstrap"].is_null());
        let l = &r.lookups[0];
        assert_eq!(l.endpoint, format!("dot://{addr}"));
        assert_eq!(l.answers, vec![IpAddr::from(ANSWER)]);
        let keys = &r.measurement.test_keys["lookups"][&l.endpoint];
        assert_eq!(keys["queries"][0]["engine"], "dot");
        assert_eq!(keys["queries"][0]["resolver_address"], addr.to_string());
        assert_eq!(keys["tls_handshakes"][0]["negotiated_protocol"], "dot");
        assert!(keys["requests"].is_null());
    }

    /// The engine's own DoT resolver (`Resolver::Dot`, as `dns::lookup` uses it elsewhere) asks
    /// both types over its own connections and merges them: the A answer, AAAA's empty answer
    /// kept as a record without failing the lookup.
    #[tokio::test]
    async fn the_engines_dot_resolver_merges_a_and_aaaa() {
        let ca = TestCa::new("dnscheck CA");
        let (addr, _server) = dot_server(&ca.leaf(&["dot.test"]), DotMode::Answer).await;
        let resolver = Resolver::Dot {
            addr,
            server_name: "dot.test".into(),
        };
        assert_eq!(resolver.to_string(), format!("dot://{addr}/"));
        let trace = Trace::new();
        let found = dns::lookup(
            &resolver,
            "example.org",
            &quick(),
            &client_tls(&ca),
            &trace,
            None,
        )
        .await;
        assert!(found.error.is_none(), "{:?}", found.error);
        assert_eq!(found.addrs, vec![IpAddr::from(ANSWER)]);
        let types: Vec<(&str, Option<&str>)> = found
            .queries
            .iter()
            .map(|q| (q.query_type.as_str(), q.failure.as_deref()))
            .collect();
        assert_eq!(types, [("A", None), ("AAAA", Some("dns_no_answer"))]);
        assert!(
            found
                .queries
                .iter()
                .all(|q| q.engine.as_deref() == Some("dot"))
        );

        // Refused: the lookup fails with the connect's failure on both records.
        let closed = Resolver::Dot {
            addr: closed_port(),
            server_name: "dot.test".into(),
        };
        let found = dns::lookup(
            &closed,
            "example.org",
            &quick(),
            &client_tls(&ca),
            &trace,
            None,
        )
        .await;
        assert_eq!(
            found.error.map(|e| e.failure().to_string()).as_deref(),
            Some("connection_refused")
        );
        assert!(found.addrs.is_empty());
    }

    /// Each way a DoT resolver can fail, with the failure string, the step and the layer the
    /// aggregator's rule gives it.
    #[tokio::test]
    async fn dot_failures_have_ooni_strings_and_layers() {
        let ca = TestCa::new("dnscheck CA");
        let tls = client_tls(&ca);
        let reset = ResetListener::start().await;
        let (wrong_name, _s1) = dot_server(&ca.leaf(&["other.test"]), DotMode::Answer).await;
        let stranger = TestCa::new("someone else");
        let (unknown_ca, _s2) = dot_server(&stranger.leaf(&["dot.test"]), DotMode::Answer).await;
        let (garbage, _s3) = dot_server(&ca.leaf(&["dot.test"]), DotMode::Garbage).await;
        let (silent, _s4) = dot_server(&ca.leaf(&["dot.test"]), DotMode::Silent).await;
        let cases = [
            (reset.addr, "connection_reset", "tls_handshake", "tls"),
            (wrong_name, "ssl_invalid_hostname", "tls_handshake", "tls"),
            (unknown_ca, "ssl_unknown_authority", "tls_handshake", "tls"),
            (closed_port(), "connection_refused", "connect", "tcp_ip"),
            (garbage, "dns_server_misbehaving", "resolve", "dns"),
            (silent, "generic_timeout_error", "resolve", "dns"),
        ];
        for (addr, failure, operation, blocking) in cases {
            let target = one(&format!("dot://{addr}/"), "sni = \"dot.test\"");
            let r = measure(&target, DEFAULT_DOMAIN, &quick(), &Resolver::System, &tls).await;
            let l = &r.lookups[0];
            assert_eq!(l.failure.as_deref(), Some(failure), "{addr}: {:?}", l.keys);
            assert_eq!(l.failed_operation.as_deref(), Some(operation), "{failure}");
            assert_eq!(layer(&r).as_deref(), Some(blocking), "{failure}");
            assert_eq!(accessible(&r), Some(false), "{failure}");
            let q = &l.keys["queries"];
            assert_eq!(q[0]["failure"], failure, "{failure}");
            assert_eq!(q[1]["failure"], failure, "{failure}");
        }
    }

    #[tokio::test]
    async fn doh_failures_and_a_failed_bootstrap() {
        let ca = TestCa::new("dnscheck CA");
        let tls = client_tls(&ca);
        let leaf = ca.leaf(&["doh.test"]);
        let garbage = TlsFixture::doh(&leaf, vec![("example.org", Behaviour::Garbage)]).await;
        let refusing = TlsFixture::fixed(
            &leaf,
            Response {
                status: 500,
                headers: vec![],
                body: b"no".to_vec(),
            },
        )
        .await;
        for (addr, failure) in [
            (garbage.addr, "dns_server_misbehaving"),
            (refusing.addr, "dns_server_misbehaving"),
        ] {
            let target = one(
                &format!("https://doh.test:{}/dns-query", addr.port()),
                "addresses = [\"127.0.0.1\"]",
            );
            // No bootstrap answer: the list's address is still tried (ts-028).
            let dns = DnsFixture::start(vec![("doh.test", Behaviour::NxDomain)]).await;
            let r = measure(
                &target,
                DEFAULT_DOMAIN,
                &quick(),
                &Resolver::Udp(dns.addr),
                &tls,
            )
            .await;
            assert_eq!(r.bootstrap_failure.as_deref(), Some("dns_nxdomain_error"));
            assert_eq!(r.lookups[0].failure.as_deref(), Some(failure));
            assert_eq!(r.lookups[0].failed_operation.as_deref(), Some("resolve"));
            // The bootstrap failure decides, as the rule for OONI's dnscheck says.
            assert_eq!(layer(&r).as_deref(), Some("dns"));
        }
        let refused_status = {
            let target = one(
                &format!("https://doh.test:{}/dns-query", refusing.addr.port()),
                "addresses = [\"127.0.0.1\"]",
            );
            let bootstrap = DnsFixture::start(vec![(
                "doh.test",
                Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
            )])
            .await;
            measure(
                &target,
                DEFAULT_DOMAIN,
                &quick(),
                &Resolver::Udp(bootstrap.addr),
                &tls,
            )
            .await
        };
        let keys = &refused_status.lookups[0].keys;
        // A DoH resolver that completes the handshake and never answers: the exchange's
        // deadline, on the HTTP step.
        let (silent, _server) = tls_server(&leaf, DotMode::Silent, b"http/1.1").await;
        let target = one(
            &format!("https://doh.test:{}/dns-query", silent.port()),
            "addresses = [\"127.0.0.1\"]\nsni = \"doh.test\"",
        );
        // Its name is bootstrapped on loopback: nothing leaves the machine.
        let dns = DnsFixture::start(vec![(
            "doh.test",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        )])
        .await;
        let r = measure(
            &target,
            DEFAULT_DOMAIN,
            &quick(),
            &Resolver::Udp(dns.addr),
            &tls,
        )
        .await;
        assert_eq!(r.lookups.len(), 1, "one address, found twice");
        let l = &r.lookups[0];
        assert_eq!(
            l.failure.as_deref(),
            Some("generic_timeout_error"),
            "{:#}",
            l.keys
        );
        assert_eq!(l.failed_operation.as_deref(), Some("http_round_trip"));
        assert_eq!(layer(&r).as_deref(), Some("http-failure"));
        assert_eq!(l.keys["tls_handshakes"][0]["failure"], Value::Null);
        assert_eq!(keys["requests"][0]["response"]["code"], 500);
        assert_eq!(layer(&refused_status).as_deref(), Some("dns"));

        // A bootstrap that fails with no address known: nothing to look up.
        let dns = DnsFixture::start(vec![("doh.test", Behaviour::NxDomain)]).await;
        let target = one("https://doh.test/dns-query", "");
        let r = measure(
            &target,
            DEFAULT_DOMAIN,
            &quick(),
            &Resolver::Udp(dns.addr),
            &tls,
        )
        .await;
        assert_eq!(r.bootstrap_failure.as_deref(), Some("dns_nxdomain_error"));
        assert!(r.lookups.is_empty());
        assert_eq!(
            r.measurement.test_keys["bootstrap"]["failure"],
            "dns_nxdomain_error"
        );
        assert_eq!(
            r.measurement.test_keys["bootstrap"]["failed_operation"],
            "resolve"
        );
        assert_eq!(layer(&r).as_deref(), Some("dns"));
    }

    /// The keys ts-028 names, with the types its example measurement has.
    #[tokio::test]
    async fn keys_follow_the_spec() {
        let target = one(&format!("dot://{}/", closed_port()), "");
        let r = measure(
            &target,
            DEFAULT_DOMAIN,
            &quick(),
            &Resolver::System,
            &TlsContext::new(vec![]).expect("tls"),
        )
        .await;
        let tk = r.measurement.test_keys.as_object().expect("object");
        let mut names: Vec<&str> = tk.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["bootstrap", "bootstrap_failure", "domain", "lookups"]
        );
        let lookup = tk["lookups"]
            .as_object()
            .and_then(|l| l.values().next())
            .and_then(Value::as_object)
            .expect("one lookup");
        let mut names: Vec<&str> = lookup.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "agent",
                "failed_operation",
                "failure",
                "network_events",
                "queries",
                "requests",
                "tcp_connect",
                "tls_handshakes"
            ]
        );
        assert!(lookup["tcp_connect"][0]["status"]["success"].is_boolean());
        assert!(lookup["tcp_connect"][0]["port"].is_u64());
        let whole = serde_json::to_value(&r.measurement).expect("json");
        assert_eq!(whole["test_name"], "dnscheck");
        assert!(
            whole["input"]
                .as_str()
                .is_some_and(|i| i.starts_with("dot://"))
        );
        assert_eq!(whole["extensions"]["dnst"], 0);
    }

    #[test]
    fn builtin_list_is_valid() {
        let list = builtin().expect("built-in list");
        assert!(list.len() >= 10, "{}", list.len());
        assert!(list.iter().any(|t| t.transport == Transport::Dot));
        assert!(list.iter().any(|t| t.transport == Transport::Doh));
        let dot = list
            .iter()
            .find(|t| t.input == "dot://1.1.1.1:853/")
            .expect("Cloudflare by address");
        assert_eq!(dot.port, 853);
        assert_eq!(dot.server_name, "one.one.one.one");
        assert_eq!(dot.host, Host::<String>::Ipv4([1, 1, 1, 1].into()));
        let google = list
            .iter()
            .find(|t| t.input == "https://dns.google/dns-query")
            .expect("Google DoH");
        assert_eq!(
            (google.port, google.server_name.as_str()),
            (443, "dns.google")
        );
    }

    #[test]
    fn bad_files_name_the_field_or_line() {
        let err = |text: &str| parse_resolvers(text, "f.toml").expect_err(text).to_string();
        let e = err("[[resolver]]\nurl = \"udp://8.8.8.8:53\"\n");
        assert!(
            e.contains("resolver[0].url") && e.contains("neither https"),
            "{e}"
        );
        let e =
            err("[[resolver]]\nurl = \"https://a.example/\"\n[[resolver]]\nurl = \"not a url\"\n");
        assert!(e.contains("resolver[1].url"), "{e}");
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\naddresses = [\"1.2.3\"]\n");
        assert!(
            e.contains("resolver[0].addresses") && e.contains("\"1.2.3\""),
            "{e}"
        );
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\nsni = \"\"\n");
        assert!(e.contains("resolver[0].sni"), "{e}");
        let e = err("[[resolver]]\nurl = \"dot://a.example/\"\nport = 1\n");
        assert!(e.contains("f.toml") && e.contains("port"), "{e}");
        let e = err(
            "[[resolver]]\nurl = \"dot://a.example/\"\n[[resolver]]\nurl = \"dot://a.example/\"\n",
        );
        assert!(e.contains("listed twice"), "{e}");
        let e = err("");
        assert!(e.contains("no [[resolver]]"), "{e}");
        let e = err("[[resolver]]\nurl = \"https://user:pw@a.example/\"\n");
        assert!(e.contains("credentials"), "{e}");
        assert!(check_domain("example.org").is_ok());
        assert!(check_domain("").is_err());
        assert!(check_domain("1.2.3.4").is_err());
        let e = check_domain("bad..name").expect_err("empty label");
        assert!(e.starts_with("\"bad..name\" is not a domain name ("), "{e}");
    }

    /// Whether `ours` has every field of `theirs` with the same JSON type, a `null` on either
    /// side matching any type (df-000: consumers must expect null), down through objects and
    /// the first element of arrays; `skip` names fields left out on purpose. The failures name
    /// the path.
    fn same_shape(
        path: &str,
        theirs: &Value,
        ours: &Value,
        skip: &[&str],
        problems: &mut Vec<String>,
    ) {
        match (theirs, ours) {
            (Value::Null, _) | (_, Value::Null) => {}
            (Value::Object(t), Value::Object(o)) => {
                for (k, v) in t {
                    if skip.contains(&k.as_str()) {
                        continue;
                    }
                    match o.get(k) {
                        Some(m) => same_shape(&format!("{path}.{k}"), v, m, skip, problems),
                        None => problems.push(format!("{path}.{k} is missing")),
                    }
                }
            }
            (Value::Array(t), Value::Array(o)) => {
                if let (Some(a), Some(b)) = (t.first(), o.first()) {
                    same_shape(&format!("{path}[0]"), a, b, skip, problems);
                }
            }
            (t, o) if std::mem::discriminant(t) == std::mem::discriminant(o) => {}
            (t, o) => problems.push(format!("{path} is {o} here, {t} in the spec's example")),
        }
    }

    /// Our measurement of a working DoT resolver has every field of ts-028's example measurement
    /// (copied into tests/data/ooni/spec/ with its licence, tests/data/SOURCES.md), with the
    /// same JSON types: the envelope, `test_keys`, and a working lookup with its queries,
    /// answers, connects and handshakes.
    #[tokio::test]
    async fn a_measurement_has_the_shape_of_the_specs_example() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/ooni/spec/ts-028-dnscheck.json"
        );
        let text = std::fs::read_to_string(path).expect("spec example");
        let example: Value = serde_json::from_str(&text).expect("json");
        let ca = TestCa::new("dnscheck CA");
        let dns = DnsFixture::start(vec![(
            "dot.test",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        )])
        .await;
        let (addr, _server) = dot_server(&ca.leaf(&["dot.test"]), DotMode::Answer).await;
        let target = one(&format!("dot://dot.test:{}/", addr.port()), "");
        let r = measure(
            &target,
            DEFAULT_DOMAIN,
            &quick(),
            &Resolver::Udp(dns.addr),
            &client_tls(&ca),
        )
        .await;
        assert_eq!(accessible(&r), Some(true), "{:?}", r.verdict);
        let ours = serde_json::to_value(&r.measurement).expect("json");
        let mut problems = Vec::new();
        // The envelope. OONI's report id and the resolver's network are optional (df-000) and
        // not written by Vantage; the answers' ASN and network are looked up by OONI's
        // pipeline, not by the probe.
        let envelope_skip = [
            "test_keys",
            "report_id",
            "resolver_asn",
            "resolver_ip",
            "resolver_network_name",
            "probe_network_name",
        ];
        same_shape(
            "measurement",
            &example,
            &ours,
            &envelope_skip,
            &mut problems,
        );
        let keys_skip = ["lookups", "asn", "as_org_name"];
        same_shape(
            "test_keys",
            &example["test_keys"],
            &ours["test_keys"],
            &keys_skip,
            &mut problems,
        );
        let theirs = &example["test_keys"]["lookups"]["dot://8.8.4.4:853"];
        let mine = &ours["test_keys"]["lookups"][format!("dot://{addr}")];
        assert!(mine.is_object(), "{:#}", ours["test_keys"]);
        same_shape(
            "lookup",
            theirs,
            mine,
            &["asn", "as_org_name"],
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:#?}");
        // Not vacuous: the example's working lookup has records of each kind, and so has ours.
        for key in ["queries", "tcp_connect", "tls_handshakes"] {
            assert!(
                theirs[key][0].is_object() && mine[key][0].is_object(),
                "{key}"
            );
        }
        assert_eq!(mine["queries"][0]["answers"][0]["ipv4"], "93.184.216.34");
        // The example itself (one address answered, the IPv6 ones failed with the probe's own
        // `unknown_failure`) and ours are scored alike by the rule the aggregator applies.
        let theirs = score_service(TEST_NAME, example["input"].as_str(), &example["test_keys"])
            .expect("dnscheck has a rule");
        let mine = r.verdict.as_ref().expect("verdict");
        assert_eq!(theirs.accessible, Some(true), "{theirs:?}");
        assert_eq!(
            (theirs.accessible, &theirs.rule),
            (mine.accessible, &mine.rule)
        );
        assert_eq!(theirs.target, "dnscheck:dns.google");
    }
}
