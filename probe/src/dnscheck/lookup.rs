//! One address's lookup: the A and AAAA queries to a resolver at one address, over DoT or DoH
//! (RFC 8484, a connection the engine makes), recorded as one urlgetter result (ts-027) with
//! OONI's failure strings and `failed_operation`.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hickory_proto::rr::RecordType;
use http::Request;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use url::Url;

use super::{DOH_BODY_CAP, Target, Transport};
use crate::engine::{EngineConfig, Lookup, TlsContext, Trace, dns, http as http_step, tcp, tls};
use crate::failure::{Operation, StepError};
use crate::ooni::{TcpConnect, TlsHandshake};

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

/// The A and AAAA queries to one address, each on a connection of its own (as OONI's example
/// measurement shows, two connects an address), recorded as one urlgetter result (ts-027).
pub(super) async fn lookup_at(
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
pub(super) fn queries_json(queries: &[crate::ooni::DnsQuery]) -> Value {
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

#[cfg(test)]
mod tests {
    use vantage_fixtures::tcp::{ResetListener, closed_port};
    use vantage_fixtures::tls::TestCa;

    use super::*;
    use crate::dnscheck::tests::{
        ANSWER, DotMode, accessible, client_tls, dot_server, layer, one, quick,
    };
    use crate::dnscheck::{DEFAULT_DOMAIN, measure};
    use crate::engine::Resolver;

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
}
