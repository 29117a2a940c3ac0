//! DNS lookups (df-002-dnst): the system resolver, raw DNS over UDP, DNS over HTTPS and DNS over
//! TLS.
//!
//! The UDP lookup is the one that sees injection. A censor on the path races a forged answer ahead
//! of the real one (OONI ts-017 E003); a resolver library keeps the first datagram and drops the
//! rest. We keep reading the socket for a window after the first answer (OONI: 500 ms) and record
//! every datagram with its arrival time and raw bytes, parsed or not.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::Map;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use url::Url;

use super::{EngineConfig, TlsContext, Trace, client, tcp, tls};
use crate::failure::{GaiError, Operation, StepError};
use crate::ooni::{DnsAnswer, DnsQuery, TcpConnect, TlsHandshake};

/// A resolver the engine can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// `getaddrinfo(3)`, i.e. whatever the system is configured with.
    System,
    /// Raw DNS over UDP to this address.
    Udp(SocketAddr),
    /// DNS over HTTPS (RFC 8484) to this URL.
    Doh(Url),
    /// DNS over TLS (RFC 7858) to this address, with this name as SNI and as the name its
    /// certificate must be valid for (RFC 8310 section 8, strict privacy).
    Dot {
        /// The resolver's address, port 853 normally.
        addr: SocketAddr,
        /// The resolver's name (or its address written out, for a certificate for an address).
        server_name: String,
    },
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolver::System => f.write_str("system resolver"),
            Resolver::Udp(addr) => write!(f, "udp://{addr}"),
            Resolver::Doh(url) => write!(f, "{url}"),
            Resolver::Dot { addr, .. } => write!(f, "dot://{addr}/"),
        }
    }
}

/// The outcome of looking a name up with one resolver.
#[derive(Debug, Default)]
pub struct Lookup {
    /// One record per query (A and AAAA; a single `ANY` for getaddrinfo), first answer of each.
    pub queries: Vec<DnsQuery>,
    /// Every later datagram for the same query, with its own arrival time.
    pub duplicates: Vec<DnsQuery>,
    /// Addresses from the first answers, in order, without repeats.
    pub addrs: Vec<IpAddr>,
    /// Why no address was found; `None` when at least one was.
    pub error: Option<StepError>,
}

/// Looks `host` up with `resolver`.
pub async fn lookup(
    resolver: &Resolver,
    host: &str,
    config: &EngineConfig,
    tls: &TlsContext,
    trace: &Trace,
    tags: Option<Vec<String>>,
) -> Lookup {
    let timeout = config.timeouts.dns;
    match resolver {
        Resolver::System => system(host, timeout, trace, tags).await,
        Resolver::Udp(server) => {
            let window = config.late_reply_window;
            let tid = trace.transaction();
            let (a, aaaa) = tokio::join!(
                udp(
                    *server,
                    host,
                    RecordType::A,
                    timeout,
                    window,
                    trace,
                    &tags,
                    tid
                ),
                udp(
                    *server,
                    host,
                    RecordType::AAAA,
                    timeout,
                    window,
                    trace,
                    &tags,
                    tid
                ),
            );
            merge(vec![a, aaaa])
        }
        Resolver::Doh(url) => {
            let tid = trace.transaction();
            let (a, aaaa) = tokio::join!(
                doh(url, host, RecordType::A, config, tls, trace, &tags, tid),
                doh(url, host, RecordType::AAAA, config, tls, trace, &tags, tid),
            );
            merge(vec![a, aaaa])
        }
        Resolver::Dot { addr, server_name } => {
            let (a, aaaa) = tokio::join!(
                dot_query(
                    *addr,
                    server_name,
                    host,
                    RecordType::A,
                    config,
                    tls,
                    trace,
                    &tags
                ),
                dot_query(
                    *addr,
                    server_name,
                    host,
                    RecordType::AAAA,
                    config,
                    tls,
                    trace,
                    &tags
                ),
            );
            merge(vec![a.lookup, aaaa.lookup])
        }
    }
}

/// Combines per-type lookups: addresses from all, and an error only if none found an address.
/// The A lookup's error wins, since a censor's answer to A is what a browser acts on.
fn merge(parts: Vec<Lookup>) -> Lookup {
    let mut out = Lookup::default();
    let mut errors = Vec::new();
    for part in parts {
        out.queries.extend(part.queries);
        out.duplicates.extend(part.duplicates);
        for addr in part.addrs {
            if !out.addrs.contains(&addr) {
                out.addrs.push(addr);
            }
        }
        errors.extend(part.error);
    }
    if out.addrs.is_empty() {
        out.error = errors.into_iter().next();
    }
    out
}

/// Which lookup a [`DnsQuery`] record describes.
struct QuerySpec<'a> {
    engine: &'a str,
    hostname: &'a str,
    query_type: &'a str,
    resolver_address: &'a str,
    t0: f64,
    tags: Option<Vec<String>>,
    transaction_id: i64,
}

impl QuerySpec<'_> {
    /// A record with no answer yet, stamped `t`.
    fn record(&self, t: f64) -> DnsQuery {
        DnsQuery {
            answers: None,
            engine: Some(self.engine.into()),
            failure: None,
            getaddrinfo_error: None,
            hostname: self.hostname.into(),
            query_type: self.query_type.into(),
            raw_response: None,
            rcode: None,
            resolver_address: Some(self.resolver_address.into()),
            resolver_hostname: None,
            resolver_port: None,
            t0: Some(self.t0),
            t: Some(t),
            tags: self.tags.clone(),
            transaction_id: Some(self.transaction_id),
            x_dns_id: None,
            extra: Map::new(),
        }
    }
}

async fn system(host: &str, timeout: Duration, trace: &Trace, tags: Option<Vec<String>>) -> Lookup {
    let t0 = trace.clock.secs();
    let name = host.to_string();
    let task = tokio::task::spawn_blocking(move || {
        let hints = dns_lookup::AddrInfoHints {
            socktype: dns_lookup::SockType::Stream.into(),
            ..dns_lookup::AddrInfoHints::default()
        };
        dns_lookup::getaddrinfo(Some(&name), None, Some(hints)).map(|iter| {
            iter.filter_map(Result::ok)
                .map(|ai| ai.sockaddr.ip())
                .collect::<Vec<_>>()
        })
    });
    let result = match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(addrs))) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(Ok(_))) => Err(StepError::Getaddrinfo {
            host: host.to_string(),
            kind: GaiError::NoData,
            code: 0,
        }),
        Ok(Ok(Err(e))) => Err(gai_error(host, &e)),
        Ok(Err(join)) => Err(StepError::Io {
            op: Operation::Resolve,
            target: host.to_string(),
            source: std::io::Error::other(join.to_string()),
        }),
        Err(_) => Err(StepError::Timeout {
            op: Operation::Resolve,
            target: host.to_string(),
            after: timeout,
        }),
    };
    let spec = QuerySpec {
        engine: "getaddrinfo",
        hostname: host,
        query_type: "ANY",
        resolver_address: "",
        t0,
        tags,
        transaction_id: trace.transaction(),
    };
    let mut lookup = Lookup::default();
    let mut query = spec.record(trace.clock.secs());
    match result {
        Ok(addrs) => {
            for addr in addrs {
                if !lookup.addrs.contains(&addr) {
                    lookup.addrs.push(addr);
                }
            }
            query.answers = Some(lookup.addrs.iter().map(|a| address_answer(*a)).collect());
        }
        Err(e) => {
            query.failure = Some(e.failure().to_string());
            if let StepError::Getaddrinfo { code, .. } = &e {
                query.getaddrinfo_error = Some(i64::from(*code));
            }
            lookup.error = Some(e);
        }
    }
    lookup.queries.push(query);
    lookup
}

fn gai_error(host: &str, e: &dns_lookup::LookupError) -> StepError {
    use dns_lookup::LookupErrorKind as K;
    let kind = match e.kind() {
        K::NoName => GaiError::NoName,
        K::NoData => GaiError::NoData,
        K::Again => GaiError::Again,
        K::Fail => GaiError::Fail,
        K::System | K::IO => GaiError::System,
        _ => GaiError::Other,
    };
    StepError::Getaddrinfo {
        host: host.to_string(),
        kind,
        code: e.error_num(),
    }
}

/// Builds a recursive query for `host` (RFC 1035 section 4.1).
fn build_query(host: &str, qtype: RecordType) -> Result<Message, StepError> {
    let name = Name::from_ascii(host)
        .or_else(|_| Name::from_utf8(host))
        .map_err(|e| StepError::DnsMalformed {
            server: String::new(),
            reason: format!("cannot encode name {host:?}: {e}"),
        })?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, qtype));
    Ok(message)
}

#[allow(clippy::too_many_arguments)]
async fn udp(
    server: SocketAddr,
    host: &str,
    qtype: RecordType,
    timeout: Duration,
    window: Duration,
    trace: &Trace,
    tags: &Option<Vec<String>>,
    transaction_id: i64,
) -> Lookup {
    let t0 = trace.clock.secs();
    let target = server.to_string();
    let query_type = qtype.to_string();
    let spec = QuerySpec {
        engine: "udp",
        hostname: host,
        query_type: &query_type,
        resolver_address: &target,
        t0,
        tags: tags.clone(),
        transaction_id,
    };
    let template = |t: f64| spec.record(t);
    let fail = |error: StepError| {
        let mut query = template(trace.clock.secs());
        query.failure = Some(error.failure().to_string());
        Lookup {
            queries: vec![query],
            error: Some(error),
            ..Lookup::default()
        }
    };
    let io_error = |source| StepError::Io {
        op: Operation::DnsRoundTrip,
        target: target.clone(),
        source,
    };

    let query = match build_query(host, qtype) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let wire = match query.to_vec() {
        Ok(w) => w,
        Err(e) => {
            return fail(StepError::DnsMalformed {
                server: target.clone(),
                reason: e.to_string(),
            });
        }
    };
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => return fail(io_error(e)),
    };
    if let Err(e) = socket.connect(server).await {
        return fail(io_error(e));
    }
    if let Err(e) = socket.send(&wire).await {
        return fail(io_error(e));
    }

    // Read until the deadline; once something arrived, only for the late-reply window more.
    let overall = tokio::time::Instant::now() + timeout;
    let mut deadline = overall;
    let mut datagrams: Vec<(f64, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                datagrams.push((trace.clock.secs(), buf[..n].to_vec()));
                if datagrams.len() == 1 {
                    deadline = (tokio::time::Instant::now() + window).min(overall);
                }
            }
            // An ICMP port-unreachable surfaces as ECONNREFUSED on a connected socket.
            Ok(Err(e)) if datagrams.is_empty() => return fail(io_error(e)),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    if datagrams.is_empty() {
        return fail(StepError::Timeout {
            op: Operation::DnsRoundTrip,
            target: target.clone(),
            after: timeout,
        });
    }

    record_datagrams(datagrams, query.metadata.id, &target, template)
}

/// Reads the datagrams that arrived for one query, in arrival order: the first is the answer
/// (its addresses and error are the lookup's), each later one a duplicate kept with its own
/// arrival time and bytes, since an injected answer races the real one (OONI ts-017 E003).
fn record_datagrams(
    datagrams: Vec<(f64, Vec<u8>)>,
    id: u16,
    server: &str,
    template: impl Fn(f64) -> DnsQuery,
) -> Lookup {
    let mut lookup = Lookup::default();
    for (t, raw) in datagrams {
        let mut record = template(t);
        let parsed = read_response(&raw, id, server).record_into(&mut record, &raw);
        if lookup.queries.is_empty() {
            lookup.addrs = parsed.addrs;
            lookup.error = parsed.error;
            lookup.queries.push(record);
        } else {
            lookup.duplicates.push(record);
        }
    }
    lookup
}

/// `raw` read as the datagrams answering a UDP query whose id was `id`, in arrival order, as
/// the UDP lookup reads them. Only for the fuzz targets (`fuzz/fuzz_targets/dns_response.rs`),
/// which cannot reach the private functions.
#[doc(hidden)]
pub fn parse_datagrams(raw: &[&[u8]], id: u16) -> Lookup {
    let spec = QuerySpec {
        engine: "udp",
        hostname: "",
        query_type: "A",
        resolver_address: "",
        t0: 0.0,
        tags: None,
        transaction_id: 0,
    };
    let datagrams = raw
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64, r.to_vec()))
        .collect();
    record_datagrams(datagrams, id, "", |t| spec.record(t))
}

/// What one DNS response message says.
#[derive(Debug, Default)]
struct Parsed {
    id: Option<u16>,
    rcode: Option<u16>,
    answers: Vec<DnsAnswer>,
    addrs: Vec<IpAddr>,
    error: Option<StepError>,
}

impl Parsed {
    /// Writes the response into `record` (answers, rcode, id, failure, raw bytes) and keeps
    /// what the caller still needs: the addresses and the error.
    fn record_into(self, record: &mut DnsQuery, raw: &[u8]) -> Parsed {
        record.raw_response = Some(base64::engine::general_purpose::STANDARD.encode(raw));
        record.x_dns_id = self.id;
        record.rcode = self.rcode.map(i64::from);
        record.failure = self.error.as_ref().map(|e| e.failure().to_string());
        record.answers = (!self.answers.is_empty()).then_some(self.answers);
        Parsed {
            answers: Vec::new(),
            ..self
        }
    }
}

fn read_response(raw: &[u8], expected_id: u16, server: &str) -> Parsed {
    let mut out = Parsed::default();
    let malformed = |reason: String| StepError::DnsMalformed {
        server: server.to_string(),
        reason,
    };
    let message = match Message::from_vec(raw) {
        Ok(m) => m,
        Err(e) => {
            out.error = Some(malformed(e.to_string()));
            return out;
        }
    };
    out.id = Some(message.metadata.id);
    let rcode = u16::from(message.metadata.response_code);
    out.rcode = Some(rcode);
    if message.metadata.message_type != MessageType::Response {
        out.error = Some(malformed("not a response".into()));
        return out;
    }
    if message.metadata.id != expected_id {
        out.error = Some(malformed(format!(
            "reply with wrong query id {} (sent {expected_id})",
            message.metadata.id
        )));
        return out;
    }
    for record in &message.answers {
        match &record.data {
            RData::A(a) => {
                out.addrs.push(IpAddr::V4(a.0));
                out.answers
                    .push(with_ttl(address_answer(IpAddr::V4(a.0)), record.ttl));
            }
            RData::AAAA(aaaa) => {
                out.addrs.push(IpAddr::V6(aaaa.0));
                out.answers
                    .push(with_ttl(address_answer(IpAddr::V6(aaaa.0)), record.ttl));
            }
            RData::CNAME(cname) => out.answers.push(DnsAnswer {
                answer_type: "CNAME".into(),
                asn: None,
                as_org_name: None,
                ipv4: None,
                ipv6: None,
                hostname: Some(cname.0.to_string()),
                ttl: Some(record.ttl),
                extra: Map::new(),
            }),
            _ => {}
        }
    }
    if rcode != 0 {
        out.error = Some(StepError::DnsResponseCode {
            server: server.to_string(),
            rcode,
        });
    } else if out.addrs.is_empty() {
        out.error = Some(StepError::DnsNoAnswer {
            server: server.to_string(),
        });
    }
    out
}

fn address_answer(addr: IpAddr) -> DnsAnswer {
    let (answer_type, ipv4, ipv6) = match addr {
        IpAddr::V4(v4) => ("A", Some(v4.to_string()), None),
        IpAddr::V6(v6) => ("AAAA", None, Some(v6.to_string())),
    };
    DnsAnswer {
        answer_type: answer_type.into(),
        asn: None,
        as_org_name: None,
        ipv4,
        ipv6,
        hostname: None,
        ttl: None,
        extra: Map::new(),
    }
}

fn with_ttl(mut answer: DnsAnswer, ttl: u32) -> DnsAnswer {
    answer.ttl = Some(ttl);
    answer
}

/// DNS over HTTPS (RFC 8484 section 4.1: POST with `application/dns-message`), over a connection
/// the engine makes itself, so a failure is attributed to the step that failed.
#[allow(clippy::too_many_arguments)]
async fn doh(
    url: &Url,
    host: &str,
    qtype: RecordType,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
    tags: &Option<Vec<String>>,
    transaction_id: i64,
) -> Lookup {
    let t0 = trace.clock.secs();
    let query_type = qtype.to_string();
    let resolver_address = url.to_string();
    let spec = QuerySpec {
        engine: "doh",
        hostname: host,
        query_type: &query_type,
        resolver_address: &resolver_address,
        t0,
        tags: tags.clone(),
        transaction_id,
    };
    let mut record = spec.record(t0);
    let result = doh_round_trip(url, host, qtype, config, tls_ctx, trace).await;
    record.t = Some(trace.clock.secs());
    let mut lookup = Lookup::default();
    match result {
        Ok((raw, id)) => {
            let parsed = read_response(&raw, id, url.as_str()).record_into(&mut record, &raw);
            lookup.addrs = parsed.addrs;
            lookup.error = parsed.error;
        }
        Err(e) => {
            record.failure = Some(e.failure().to_string());
            lookup.error = Some(e);
        }
    }
    lookup.queries.push(record);
    lookup
}

async fn doh_round_trip(
    url: &Url,
    host: &str,
    qtype: RecordType,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
) -> Result<(Vec<u8>, u16), StepError> {
    let query = build_query(host, qtype)?;
    // RFC 8484 section 4.1: the id SHOULD be 0 for cache friendliness; any value is valid.
    let id = query.metadata.id;
    let wire = query.to_vec().map_err(|e| StepError::DnsMalformed {
        server: url.to_string(),
        reason: e.to_string(),
    })?;
    let mut call = client::Call::post(
        url,
        wire,
        "application/dns-message",
        "application/dns-message",
    );
    call.timeout = config.timeouts.dns;
    call.body_cap = 64 * 1024;
    let reply = client::send(call, config, tls_ctx, trace).await?;
    if reply.status != 200 {
        return Err(StepError::DnsMalformed {
            server: url.to_string(),
            reason: format!("HTTP status {}", reply.status),
        });
    }
    Ok((reply.body, id))
}

/// ALPN offered for DNS over TLS: `dot`, the identifier IANA's ALPN registry lists for RFC 7858,
/// as OONI's probe offers it.
pub const DOT_ALPN: &[u8] = b"dot";

/// One query over DNS over TLS on a connection of its own, with that connection's records: a
/// lookup that failed is told apart by the step that failed (connect, handshake, or the DNS
/// exchange), as OONI's dnscheck records it (ts-028: `tcp_connect`, `tls_handshakes`).
#[derive(Debug)]
pub struct DotQuery {
    /// The query's record and outcome (engine `dot`).
    pub lookup: Lookup,
    /// The TCP connect.
    pub tcp_connect: TcpConnect,
    /// The TLS handshake, when the connect succeeded.
    pub tls_handshake: Option<TlsHandshake>,
}

/// Asks `addr` for `host`'s `qtype` records over DNS over TLS (RFC 7858): a TCP connection, a
/// TLS handshake with `server_name` as SNI, then one length-prefixed query and its response
/// (RFC 7766 section 8). The connect and handshake have their own deadlines; the exchange has
/// the DNS one.
#[allow(clippy::too_many_arguments)]
pub async fn dot_query(
    addr: SocketAddr,
    server_name: &str,
    host: &str,
    qtype: RecordType,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
    tags: &Option<Vec<String>>,
) -> DotQuery {
    let t0 = trace.clock.secs();
    let tid = trace.transaction();
    let resolver_address = addr.to_string();
    let record = |result| {
        recorded_query(
            "dot",
            host,
            qtype,
            &resolver_address,
            t0,
            trace,
            tags.clone(),
            tid,
            result,
        )
    };
    let (tcp_connect, stream) = tcp::connect(
        addr,
        config.local_addr,
        trace,
        config.timeouts.tcp_connect,
        tags.clone(),
        tid,
    )
    .await;
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            return DotQuery {
                lookup: record(Err(e)),
                tcp_connect,
                tls_handshake: None,
            };
        }
    };
    let spec = tls::HandshakeSpec {
        server_name,
        addr,
        alpn: &[DOT_ALPN],
        timeout: config.timeouts.tls_handshake,
        tags: tags.clone(),
        transaction_id: tid,
    };
    let handshake = tls::handshake(tls_ctx, stream, spec, trace).await;
    let result = match handshake.result {
        Ok(mut stream) => match wire_query(host, qtype, &resolver_address) {
            Ok((wire, id)) => {
                stream_round_trip(&mut stream, &wire, &resolver_address, config.timeouts.dns)
                    .await
                    .map(|raw| (raw, id))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    DotQuery {
        lookup: record(result),
        tcp_connect,
        tls_handshake: Some(handshake.record),
    }
}

/// A recursive query for `host`'s `qtype` records in wire format, and its id.
pub fn wire_query(
    host: &str,
    qtype: RecordType,
    server: &str,
) -> Result<(Vec<u8>, u16), StepError> {
    let query = build_query(host, qtype)?;
    let wire = query.to_vec().map_err(|e| StepError::DnsMalformed {
        server: server.to_string(),
        reason: e.to_string(),
    })?;
    Ok((wire, query.metadata.id))
}

/// The largest DNS message a stream carries: its two-byte length prefix (RFC 1035 section
/// 4.2.2, RFC 7766 section 8).
const MAX_STREAM_MESSAGE: usize = u16::MAX as usize;

/// Sends one DNS message over a stream with its two-byte length prefix and reads the response
/// framed the same way (RFC 1035 section 4.2.2, RFC 7766 section 8, RFC 7858 section 3.3),
/// within `timeout`. A peer that closes first gives `eof_error`, one that never answers
/// `generic_timeout_error`.
pub async fn stream_round_trip<S>(
    stream: &mut S,
    wire: &[u8],
    server: &str,
    timeout: Duration,
) -> Result<Vec<u8>, StepError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_error = |source| StepError::Io {
        op: Operation::DnsRoundTrip,
        target: server.to_string(),
        source,
    };
    let len = u16::try_from(wire.len()).map_err(|_| StepError::DnsMalformed {
        server: server.to_string(),
        reason: format!("query of {} bytes does not fit a stream", wire.len()),
    })?;
    let exchange = async {
        let mut framed = Vec::with_capacity(wire.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(wire);
        stream.write_all(&framed).await.map_err(io_error)?;
        stream.flush().await.map_err(io_error)?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.map_err(io_error)?;
        let n = usize::from(u16::from_be_bytes(prefix)).min(MAX_STREAM_MESSAGE);
        let mut raw = vec![0u8; n];
        stream.read_exact(&mut raw).await.map_err(io_error)?;
        Ok(raw)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(StepError::Timeout {
            op: Operation::DnsRoundTrip,
            target: server.to_string(),
            after: timeout,
        }),
    }
}

/// The record (df-002-dnst) and outcome of one query the caller sent over a connection of its
/// own (DoT here, DoH at a chosen address in `dnscheck`): `result` is the response and the
/// query's id, read as every other lookup's response is, or the step error that stopped it.
#[allow(clippy::too_many_arguments)]
pub fn recorded_query(
    engine: &str,
    host: &str,
    qtype: RecordType,
    resolver_address: &str,
    t0: f64,
    trace: &Trace,
    tags: Option<Vec<String>>,
    transaction_id: i64,
    result: Result<(Vec<u8>, u16), StepError>,
) -> Lookup {
    let query_type = qtype.to_string();
    let spec = QuerySpec {
        engine,
        hostname: host,
        query_type: &query_type,
        resolver_address,
        t0,
        tags,
        transaction_id,
    };
    let mut record = spec.record(trace.clock.secs());
    let mut lookup = Lookup::default();
    match result {
        Ok((raw, id)) => {
            let parsed = read_response(&raw, id, resolver_address).record_into(&mut record, &raw);
            lookup.addrs = parsed.addrs;
            lookup.error = parsed.error;
        }
        Err(e) => {
            record.failure = Some(e.failure().to_string());
            lookup.error = Some(e);
        }
    }
    lookup.queries.push(record);
    lookup
}

/// Combines the lookups of one name's record types, as [`lookup`] does: every record, the
/// addresses of all, and an error only when none found an address.
pub fn merge_lookups(parts: Vec<Lookup>) -> Lookup {
    merge(parts)
}

/// The system resolver's addresses for `host`, or why there are none.
pub(crate) async fn resolve_system(
    host: &str,
    timeout: Duration,
    trace: &Trace,
) -> Result<Vec<IpAddr>, StepError> {
    let found = system(host, timeout, trace, None).await;
    match found.error {
        Some(e) => Err(e),
        None => Ok(found.addrs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    fn response(id: u16, rcode: hickory_proto::op::ResponseCode, addrs: &[[u8; 4]]) -> Vec<u8> {
        let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = rcode;
        for a in addrs {
            m.add_answer(Record::from_rdata(
                Name::from_ascii("example.org.").expect("name"),
                60,
                RData::A(A::from(std::net::Ipv4Addr::from(*a))),
            ));
        }
        m.to_vec().expect("encode")
    }

    #[test]
    fn answers_are_read_with_ttl() {
        let raw = response(
            7,
            hickory_proto::op::ResponseCode::NoError,
            &[[10, 10, 34, 34]],
        );
        let parsed = read_response(&raw, 7, "s");
        assert!(parsed.error.is_none());
        assert_eq!(parsed.addrs, vec![IpAddr::from([10, 10, 34, 34])]);
        assert_eq!(parsed.answers[0].ipv4.as_deref(), Some("10.10.34.34"));
        assert_eq!(parsed.answers[0].ttl, Some(60));
    }

    #[test]
    fn nxdomain_and_empty_answers() {
        let raw = response(7, hickory_proto::op::ResponseCode::NXDomain, &[]);
        let parsed = read_response(&raw, 7, "s");
        assert_eq!(
            parsed.error.expect("error").failure().to_string(),
            "dns_nxdomain_error"
        );
        let raw = response(7, hickory_proto::op::ResponseCode::NoError, &[]);
        let parsed = read_response(&raw, 7, "s");
        assert_eq!(
            parsed.error.expect("error").failure().to_string(),
            "dns_no_answer"
        );
    }

    #[test]
    fn a_later_datagram_is_a_duplicate_and_the_first_answer_counts() {
        let injected = response(
            7,
            hickory_proto::op::ResponseCode::NoError,
            &[[10, 0, 0, 1]],
        );
        let real = response(
            7,
            hickory_proto::op::ResponseCode::NoError,
            &[[93, 184, 216, 34]],
        );
        let lookup = parse_datagrams(&[&injected, &real, b"junk"], 7);
        assert_eq!(lookup.addrs, vec![IpAddr::from([10, 0, 0, 1])]);
        assert!(lookup.error.is_none());
        assert_eq!(lookup.queries.len(), 1);
        assert_eq!(lookup.duplicates.len(), 2);
        assert_eq!(lookup.duplicates[0].t, Some(1.0));
        assert_eq!(
            lookup.duplicates[0].answers.as_ref().expect("answers")[0]
                .ipv4
                .as_deref(),
            Some("93.184.216.34")
        );
        assert_eq!(
            lookup.duplicates[1].failure.as_deref(),
            Some("dns_server_misbehaving")
        );
    }

    #[test]
    fn garbage_and_wrong_id_are_misbehaviour() {
        let parsed = read_response(b"\x00\x01garbage", 7, "s");
        assert_eq!(
            parsed.error.expect("error").failure().to_string(),
            "dns_server_misbehaving"
        );
        let raw = response(8, hickory_proto::op::ResponseCode::NoError, &[[1, 2, 3, 4]]);
        let parsed = read_response(&raw, 7, "s");
        assert!(parsed.addrs.is_empty());
        assert_eq!(
            parsed.error.expect("error").failure().to_string(),
            "dns_server_misbehaving"
        );
    }

    /// RFC 7766 section 8 framing both ways: the query goes out with its length, the answer
    /// is read by its length; a peer that closes mid-answer is `eof_error`, one that says
    /// nothing is our deadline.
    #[tokio::test]
    async fn stream_round_trip_frames_and_fails_like_ooni() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut len = [0u8; 2];
            server.read_exact(&mut len).await.expect("length");
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            server.read_exact(&mut query).await.expect("query");
            server.write_all(&[0, 5, b'h', b'e']).await.expect("answer");
            query
        });
        let result = stream_round_trip(&mut client, b"abc", "s", Duration::from_secs(2)).await;
        assert_eq!(peer.await.expect("peer"), b"abc");
        let e = result.expect_err("closed mid-answer");
        assert_eq!(e.failure().to_string(), "eof_error");
        assert_eq!(e.operation(), Operation::DnsRoundTrip);

        let (mut client, _silent) = tokio::io::duplex(4096);
        let e = stream_round_trip(&mut client, b"abc", "s", Duration::from_millis(50))
            .await
            .expect_err("no answer");
        assert_eq!(e.failure().to_string(), "generic_timeout_error");
    }
}
