//! The control vantage point: OONI's test helper protocol (`research/ooni.md` 3.2;
//! `ooni/probe-cli` `internal/oohelperd/`), both ends.
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use url::{Host, Url};

use crate::engine::bogon::is_bogon;
use crate::engine::http::BROWSER_HEADERS;
use crate::engine::{EngineConfig, Resolver, TlsContext, Trace, client, tcp, tls};
use crate::ooni::{
    ControlDns, ControlHttpRequest, ControlRequest, ControlResponse, ControlTcpConnect,
    ControlTlsHandshake, IpInfo, MaybeBinary,
};
use crate::web_connectivity::{PlanError, WebConnectivityPlan, measure};

/// OONI's deadline for the whole helper call (`webconnectivitylte/control.go`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// How the helper measures.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// Engine settings; `connect_to_bogons` should stay false on a public helper.
    pub engine: EngineConfig,
    /// How the helper resolves names.
    pub resolvers: Vec<Resolver>,
}

impl Default for HelperConfig {
    fn default() -> Self {
        HelperConfig {
            engine: EngineConfig {
                connect_to_bogons: false,
                ..EngineConfig::default()
            },
            resolvers: vec![Resolver::System],
        }
    }
}

/// Measures `request.http_request` from here and answers as OONI's helper does.
pub async fn answer(
    request: &ControlRequest,
    config: &HelperConfig,
    tls_ctx: &TlsContext,
) -> Result<ControlResponse, PlanError> {
    let plan = WebConnectivityPlan::new(
        &request.http_request,
        config.resolvers.clone(),
        config.engine.clone(),
    )?;
    let url = plan.url().clone();
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();

    // The helper's own view of the page and its DNS, with the same engine as the probe.
    let m = measure(&plan, tls_ctx).await;
    let tk = &m.test_keys;
    let helper_addrs: Vec<IpAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        _ => {
            let mut addrs = Vec::new();
            let depth0 =
                |q: &&crate::ooni::DnsQuery| q.tags.iter().flatten().any(|t| t == "depth=0");
            for ip in tk
                .queries
                .iter()
                .flatten()
                .filter(depth0)
                .flat_map(|q| q.answers.iter().flatten())
                .filter_map(crate::ooni::DnsAnswer::ip)
            {
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            addrs
        }
    };
    let dns = match tk.dns_experiment_failure.as_deref() {
        Some(f) => ControlDns {
            failure: legacy_dns_failure(f),
            addrs: Vec::new(),
        },
        None => ControlDns {
            failure: None,
            addrs: helper_addrs.iter().map(ToString::to_string).collect(),
        },
    };
    let http_request = match (
        tk.requests.iter().flatten().next(),
        &tk.http_experiment_failure,
    ) {
        (Some(last), None) => {
            let response = last.response.as_ref();
            ControlHttpRequest {
                body_length: response
                    .and_then(|r| r.x_body_length)
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
                discovered_h3_endpoint: Some(String::new()),
                failure: None,
                title: response.and_then(|r| r.x_title.clone()).unwrap_or_default(),
                headers: response
                    .map(|r| {
                        r.headers
                            .iter()
                            .filter_map(|(k, v)| match v {
                                MaybeBinary::Text(t) => Some((k.clone(), t.clone())),
                                MaybeBinary::Binary(_) => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                status_code: response.map_or(-1, |r| r.code),
                x_transfer: response.and_then(|r| r.x_transfer.clone()),
            }
        }
        (_, failure) => ControlHttpRequest {
            body_length: -1,
            discovered_h3_endpoint: Some(String::new()),
            failure: Some(legacy_http_failure(
                failure.as_deref().unwrap_or("unknown_error"),
            )),
            title: String::new(),
            headers: BTreeMap::new(),
            status_code: -1,
            x_transfer: None,
        },
    };

    // TCP and TLS to the union of the probe's and our endpoints (OONI E005), skipping bogons.
    let probe_endpoints: Vec<SocketAddr> = request
        .tcp_connect
        .iter()
        .flatten()
        .filter_map(|e| e.parse().ok())
        .collect();
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    ports.insert(url.port_or_known_default().unwrap_or(80));
    if url.scheme() == "http" && url.port().is_none() {
        ports.insert(443);
    }
    let mut endpoints: Vec<SocketAddr> = probe_endpoints.clone();
    for ip in &helper_addrs {
        for port in &ports {
            let e = SocketAddr::new(*ip, *port);
            if !endpoints.contains(&e) {
                endpoints.push(e);
            }
        }
    }
    endpoints.retain(|e| config.engine.connect_to_bogons || !is_bogon(e.ip()));
    let tls_wanted = |e: &SocketAddr| url.scheme() == "https" || e.port() == 443;

    let trace = Arc::new(Trace::new());
    let mut set = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        let (trace, tls_ctx, engine, host) = (
            trace.clone(),
            tls_ctx.clone(),
            config.engine.clone(),
            host.clone(),
        );
        let want_tls = tls_wanted(&endpoint);
        set.spawn(async move {
            let (_, stream) = tcp::connect(
                endpoint,
                engine.local_addr,
                &trace,
                engine.timeouts.tcp_connect,
                None,
                0,
            )
            .await;
            let tcp = match &stream {
                Ok(_) => ControlTcpConnect {
                    status: true,
                    failure: None,
                },
                Err(e) => ControlTcpConnect {
                    status: false,
                    failure: Some(legacy_http_failure(&e.failure().to_string())),
                },
            };
            let tls = match stream {
                Ok(stream) if want_tls => {
                    let spec = tls::HandshakeSpec {
                        server_name: &host,
                        addr: endpoint,
                        alpn: &[b"http/1.1"],
                        timeout: engine.timeouts.tls_handshake,
                        tags: None,
                        transaction_id: 0,
                    };
                    let hs = tls::handshake(&tls_ctx, stream, spec, &trace).await;
                    Some(ControlTlsHandshake {
                        server_name: host.clone(),
                        status: hs.result.is_ok(),
                        failure: hs.record.failure,
                    })
                }
                _ => None,
            };
            (endpoint, tcp, tls)
        });
    }
    let mut tcp_connect = BTreeMap::new();
    let mut tls_handshake = BTreeMap::new();
    let mut valid_for_domain = BTreeSet::new();
    while let Some(joined) = set.join_next().await {
        let Ok((endpoint, tcp, tls)) = joined else {
            continue;
        };
        tcp_connect.insert(endpoint.to_string(), tcp);
        if let Some(tls) = tls {
            if tls.status {
                valid_for_domain.insert(endpoint.ip());
            }
            tls_handshake.insert(endpoint.to_string(), tls);
        }
    }

    let mut ip_info = BTreeMap::new();
    let all: BTreeSet<IpAddr> = probe_endpoints
        .iter()
        .map(SocketAddr::ip)
        .chain(helper_addrs.iter().copied())
        .collect();
    for ip in all {
        let mut f = 0;
        if probe_endpoints.iter().any(|e| e.ip() == ip) {
            f |= flags::RESOLVED_BY_PROBE;
        }
        if helper_addrs.contains(&ip) {
            f |= flags::RESOLVED_BY_HELPER;
        }
        if is_bogon(ip) {
            f |= flags::BOGON;
        }
        if valid_for_domain.contains(&ip) {
            f |= flags::VALID_FOR_DOMAIN;
        }
        // ASNs come with a geolocation database on the aggregator; 0 means unknown.
        ip_info.insert(ip.to_string(), IpInfo { asn: 0, flags: f });
    }

    Ok(ControlResponse {
        tcp_connect,
        tls_handshake: Some(tls_handshake),
        quic_handshake: Some(Map::new()),
        http_request,
        http3_request: None,
        dns,
        ip_info: Some(ip_info),
        extra: Map::new(),
    })
}

/// `oohelperd/dns.go::dnsMapFailure`.
fn legacy_dns_failure(failure: &str) -> Option<String> {
    match failure {
        "dns_nxdomain_error" => Some("dns_name_error".into()),
        "dns_no_answer" => None,
        "dns_refused_error"
        | "dns_servfail_error"
        | "dns_server_misbehaving"
        | "dns_temporary_failure"
        | "dns_non_recoverable_failure" => Some("dns_server_failure".into()),
        _ => Some("unknown_error".into()),
    }
}

/// `oohelperd/http.go::httpMapFailure`, also used for TCP connects.
fn legacy_http_failure(failure: &str) -> String {
    match failure {
        f if f.starts_with("dns_") => "dns_lookup_error".into(),
        "generic_timeout_error" => "generic_timeout_error".into(),
        "connection_refused" => "connection_refused_error".into(),
        _ => "unknown_error".into(),
    }
}

/// The request a probe sends for `url` with the endpoints it resolved.
pub fn request_for(url: &Url, endpoints: &[SocketAddr]) -> ControlRequest {
    ControlRequest {
        http_request: url.to_string(),
        http_request_headers: BROWSER_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect(),
        tcp_connect: Some(endpoints.iter().map(ToString::to_string).collect()),
        x_quic_enabled: Some(false),
        extra: Map::new(),
    }
}

/// Calls the helper at `helper` and returns its answer, or the failure string for
/// `control_failure`.
pub async fn call(
    helper: &Url,
    request: &ControlRequest,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
) -> Result<ControlResponse, String> {
    let body = serde_json::to_vec(request).map_err(|e| format!("unknown_failure: {e}"))?;
    let trace = Trace::new();
    let mut call = client::Call::post(helper, body, "application/json", "application/json");
    call.timeout = CALL_TIMEOUT;
    call.body_cap = 16 << 20;
    let reply = client::send(call, config, tls_ctx, &trace)
        .await
        .map_err(|e| e.failure().to_string())?;
    if reply.status != 200 {
        return Err(format!(
            "unknown_failure: test helper answered HTTP {}",
            reply.status
        ));
    }
    // `json_parse_error` is OONI's failure for an answer that is not the JSON we expect.
    serde_json::from_slice(&reply.body).map_err(|_| "json_parse_error".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_strings() {
        assert_eq!(
            legacy_dns_failure("dns_nxdomain_error").as_deref(),
            Some("dns_name_error")
        );
        assert_eq!(legacy_dns_failure("dns_no_answer"), None);
        assert_eq!(
            legacy_dns_failure("dns_servfail_error").as_deref(),
            Some("dns_server_failure")
        );
        assert_eq!(
            legacy_dns_failure("generic_timeout_error").as_deref(),
            Some("unknown_error")
        );
        assert_eq!(
            legacy_http_failure("dns_nxdomain_error"),
            "dns_lookup_error"
        );
        assert_eq!(
            legacy_http_failure("connection_refused"),
            "connection_refused_error"
        );
        assert_eq!(
            legacy_http_failure("generic_timeout_error"),
            "generic_timeout_error"
        );
        assert_eq!(legacy_http_failure("ssl_invalid_hostname"), "unknown_error");
    }

    #[test]
    fn request_carries_browser_headers_and_endpoints() {
        let url = Url::parse("https://example.org/").expect("url");
        let r = request_for(&url, &["93.184.216.34:443".parse().expect("addr")]);
        assert_eq!(r.http_request, "https://example.org/");
        assert_eq!(
            r.tcp_connect.as_deref(),
            Some(&["93.184.216.34:443".to_string()][..])
        );
        assert!(r.http_request_headers.contains_key("User-Agent"));
    }

    #[tokio::test]
    async fn helper_refuses_private_addresses_by_default() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let request = request_for(
            &Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url"),
            &[SocketAddr::from(([127, 0, 0, 1], port))],
        );
        let tls = TlsContext::new(vec![]).expect("tls");
        let r = answer(&request, &HelperConfig::default(), &tls)
            .await
            .expect("answer");
        assert!(r.tcp_connect.is_empty(), "no connection to a bogon");
        assert_eq!(r.http_request.status_code, -1);
        assert_eq!(r.http_request.failure.as_deref(), Some("dns_lookup_error"));
        let info = &r.ip_info.expect("ip_info")["127.0.0.1"];
        assert_eq!(
            info.flags,
            flags::RESOLVED_BY_PROBE | flags::RESOLVED_BY_HELPER | flags::BOGON
        );
    }
}
