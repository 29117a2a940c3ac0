//! The helper's side: what it checks in a request before any network I/O ([`plan_for`]), and
//! how it measures the URL and the endpoints and answers in OONI's legacy failure vocabulary
//! ([`answer`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::Map;
use tokio::sync::Semaphore;
use url::Host;

use super::{MAX_CONCURRENT_CONNECTIONS, MAX_HELPER_ADDRS, MAX_TCP_CONNECT, flags};
use crate::engine::bogon::is_bogon;
use crate::engine::{EngineConfig, Resolver, TlsContext, Trace, tcp, tls};
use crate::ooni::{
    ControlDns, ControlHttpRequest, ControlRequest, ControlResponse, ControlTcpConnect,
    ControlTlsHandshake, IpInfo, MaybeBinary,
};
use crate::web_connectivity::{PlanError, WebConnectivityPlan, measure};

/// Why the helper refuses a request, found before any network I/O.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The URL cannot be measured (scheme, host, syntax).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// More endpoints than one name's addresses.
    #[error(
        "THRequest for {url:?} lists {count} tcp_connect endpoints; this test helper measures at most {MAX_TCP_CONNECT} per request (the addresses one name resolves to)"
    )]
    TooManyEndpoints {
        /// The URL asked for, cut to 100 characters.
        url: String,
        /// How many entries the request listed.
        count: usize,
    },
    /// The URL is, resolves to or redirects to private or other non-public addresses only,
    /// which this helper does not connect to ([`HelperConfig::engine`]'s `connect_to_bogons`).
    /// It measured nothing of the site, so it answers with no control at all rather than a
    /// control whose failure is its own refusal: a probe that got the page would otherwise read
    /// "the site failed for the control" as an unexpected success, that is as blocking
    /// (`docs/scoring.md`, "When the helper refuses or fails").
    #[error(
        "this test helper does not connect to private or other non-public addresses ({addrs}), so there is no control for this URL (a lab's aggregator allows them with --th-allow-private)"
    )]
    PrivateAddress {
        /// The URL asked for, cut to 100 characters (for the operator's log; the message
        /// leaves it out, so that every refusal of a run reads the same).
        url: String,
        /// The non-public addresses it is at or leads to, comma-separated.
        addrs: String,
    },
    /// The helper's own resolver gave no answer at all (unreachable, refused the connection,
    /// timed out): the helper could not look the name up, which says nothing about the site.
    /// Answered as a failure of the helper rather than as a control whose DNS and HTTP
    /// "failed", which a probe that got the page would read as blocking.
    #[error(
        "this test helper's resolver did not answer ({failure}), so there is no control for this URL"
    )]
    ResolverFailed {
        /// The URL asked for, cut to 100 characters (for the operator's log).
        url: String,
        /// The lookup's failure, in OONI's vocabulary.
        failure: String,
    },
}

impl HelperError {
    /// The HTTP status the helper answers this refusal with. Every refusal is a 4xx, so a
    /// probe (ours, or OONI's, which records any status but 200 as `control_failure`) can
    /// tell a helper that would not measure from a site that failed: 400 for a request that is
    /// not a probe's (RFC 9110 section 15.5.1), 403 for one the helper understood and will not
    /// carry out (section 15.5.4); and 502 when the helper itself failed.
    pub fn status(&self) -> u16 {
        match self {
            HelperError::Plan(_) | HelperError::TooManyEndpoints { .. } => 400,
            HelperError::PrivateAddress { .. } => 403,
            // RFC 9110 section 15.6.3: what the helper relies on upstream failed.
            HelperError::ResolverFailed { .. } => 502,
        }
    }
}

/// How the helper measures.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// Engine settings; `connect_to_bogons` should stay false on a public helper.
    pub engine: EngineConfig,
    /// How the helper resolves names.
    pub resolvers: Vec<Resolver>,
    /// Permits for the TCP connections (and the TLS handshakes over them) to the requests'
    /// endpoints, shared by every clone of this configuration; [`MAX_CONCURRENT_CONNECTIONS`]
    /// by default.
    pub connections: Arc<Semaphore>,
}

impl Default for HelperConfig {
    fn default() -> Self {
        HelperConfig {
            engine: EngineConfig {
                connect_to_bogons: false,
                ..EngineConfig::default()
            },
            resolvers: vec![Resolver::System],
            connections: Arc::new(Semaphore::new(MAX_CONCURRENT_CONNECTIONS)),
        }
    }
}

/// Everything the helper checks in a request before any network I/O: the URL to measure and
/// the probe's endpoints, parsed. [`answer`] measures exactly this; the fuzz target
/// `th_request` (`fuzz/`) runs it alone, without opening a socket.
///
/// A request listing more than [`MAX_TCP_CONNECT`] entries (parseable or not) is refused whole.
/// Entries that are not `IP:port` are skipped, as OONI's helper does, and repeats are measured
/// once.
pub fn plan_for(
    request: &ControlRequest,
    config: &HelperConfig,
) -> Result<(WebConnectivityPlan, Vec<SocketAddr>), HelperError> {
    let listed = request.tcp_connect.as_deref().unwrap_or_default();
    if listed.len() > MAX_TCP_CONNECT {
        return Err(HelperError::TooManyEndpoints {
            url: request.http_request.chars().take(100).collect(),
            count: listed.len(),
        });
    }
    let plan = WebConnectivityPlan::new(
        &request.http_request,
        config.resolvers.clone(),
        config.engine.clone(),
    )?;
    let literal = match plan.url().host() {
        Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal.filter(|ip| !config.engine.connect_to_bogons && is_bogon(*ip)) {
        return Err(HelperError::PrivateAddress {
            url: request.http_request.chars().take(100).collect(),
            addrs: ip.to_string(),
        });
    }
    let mut probe_endpoints: Vec<SocketAddr> = Vec::with_capacity(listed.len());
    for e in listed.iter().filter_map(|e| e.parse().ok()) {
        if !probe_endpoints.contains(&e) {
            probe_endpoints.push(e);
        }
    }
    Ok((plan, probe_endpoints))
}

/// Measures `request.http_request` from here and answers as OONI's helper does.
pub async fn answer(
    request: &ControlRequest,
    config: &HelperConfig,
    tls_ctx: &TlsContext,
) -> Result<ControlResponse, HelperError> {
    let (plan, probe_endpoints) = plan_for(request, config)?;
    let url = plan.url().clone();
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();

    // The helper's own view of the page and its DNS, with the same engine as the probe.
    let m = measure(&plan, tls_ctx).await;
    let tk = &m.test_keys;
    // No answer from the helper's own resolver (OONI's helper maps exactly these failures to
    // `unknown_error`, `oohelperd/dns.go::dnsMapFailure`): the helper's failure, not the site's.
    // REFUSED too: a recursive resolver that declines to answer (RFC 1035 section 4.1.1,
    // RCODE 5, "for policy reasons") speaks of itself, not of the name; a broken zone comes back
    // from a recursive resolver as SERVFAIL, which stays the site's answer.
    if let Some(f) = tk.dns_experiment_failure.as_deref()
        && (legacy_dns_failure(f).as_deref() == Some("unknown_error")
            || f == crate::failure::Failure::DnsRefusedError.as_str())
    {
        return Err(HelperError::ResolverFailed {
            url: request.http_request.chars().take(100).collect(),
            failure: f.chars().take(100).collect(),
        });
    }
    // The engine refused to connect because every address of the host, or of a host it was
    // redirected to, is a bogon: the helper's own refusal, not the site's failure.
    let bogon_failure = crate::failure::Failure::DnsBogonError.as_str();
    if !config.engine.connect_to_bogons
        && tk.http_experiment_failure.as_deref() == Some(bogon_failure)
    {
        let mut bogons: Vec<String> = Vec::new();
        for ip in tk
            .queries
            .iter()
            .flatten()
            .flat_map(|q| q.answers.iter().flatten())
            .filter_map(crate::ooni::DnsAnswer::ip)
            .filter(|ip| is_bogon(*ip))
        {
            if !bogons.contains(&ip.to_string()) {
                bogons.push(ip.to_string());
            }
        }
        let addrs = if bogons.is_empty() {
            "a non-public address".to_string()
        } else {
            bogons.into_iter().take(8).collect::<Vec<_>>().join(",")
        };
        return Err(HelperError::PrivateAddress {
            url: request.http_request.chars().take(100).collect(),
            addrs,
        });
    }
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
            addrs: Some(Vec::new()),
        },
        None => ControlDns {
            failure: None,
            addrs: Some(helper_addrs.iter().map(ToString::to_string).collect()),
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
                title: Some(response.and_then(|r| r.x_title.clone()).unwrap_or_default()),
                headers: Some(
                    response
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
                ),
                status_code: response.map_or(-1, |r| r.status()),
                x_transfer: response.and_then(|r| r.x_transfer.clone()),
            }
        }
        (_, failure) => ControlHttpRequest {
            body_length: -1,
            discovered_h3_endpoint: Some(String::new()),
            failure: Some(legacy_http_failure(
                failure.as_deref().unwrap_or("unknown_error"),
            )),
            title: Some(String::new()),
            headers: Some(BTreeMap::new()),
            status_code: -1,
            x_transfer: None,
        },
    };

    // TCP and TLS to the union of the probe's and our endpoints (OONI E005), skipping bogons.
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    ports.insert(url.port_or_known_default().unwrap_or(80));
    if url.scheme() == "http" && url.port().is_none() {
        ports.insert(443);
    }
    let mut endpoints: Vec<SocketAddr> = probe_endpoints.clone();
    for ip in helper_addrs.iter().take(MAX_HELPER_ADDRS) {
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
        let connections = config.connections.clone();
        set.spawn(async move {
            // Held until this endpoint's TCP connect and TLS handshake are over. Nothing closes
            // the semaphore; if something did, no connection is the safe answer.
            // An endpoint the helper did not try is left out of `tcp_connect` (no data), never
            // written as a failed connect: the rules would read that as the site failing.
            let Ok(_permit) = connections.acquire_owned().await else {
                return None;
            };
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
            Some((endpoint, tcp, tls))
        });
    }
    let mut tcp_connect = BTreeMap::new();
    let mut tls_handshake = BTreeMap::new();
    let mut valid_for_domain = BTreeSet::new();
    while let Some(joined) = set.join_next().await {
        let Ok(Some((endpoint, tcp, tls))) = joined else {
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
        tcp_connect: Some(tcp_connect),
        tls_handshake: Some(tls_handshake),
        quic_handshake: Some(Map::new()),
        http_request: Some(http_request),
        http3_request: None,
        dns: Some(dns),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::*;
    use crate::th::{request_for, unusable};

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

    #[tokio::test]
    async fn helper_refuses_private_addresses_by_default() {
        let (target, accepted) = counting_listener().await;
        let request = request_for(
            &Url::parse(&format!("http://{target}/")).expect("url"),
            &[target],
        );
        let tls = TlsContext::new(vec![]).expect("tls");
        let err = answer(&request, &HelperConfig::default(), &tls)
            .await
            .expect_err("no control for a private address");
        assert!(
            matches!(&err, HelperError::PrivateAddress { addrs, .. } if addrs == "127.0.0.1"),
            "{err:?}"
        );
        assert_eq!(err.status(), 403);
        let msg = err.to_string();
        assert!(msg.contains("does not connect to private"), "{msg}");
        assert!(msg.contains("addresses (127.0.0.1)"), "{msg}");
        assert!(
            matches!(&err, HelperError::PrivateAddress { url, .. } if *url == format!("http://{target}/"))
        );
        assert!(msg.contains("--th-allow-private"), "{msg}");
        // Refused before any I/O: the fuzz target's entry point says so too.
        assert!(matches!(
            plan_for(&request, &HelperConfig::default()),
            Err(HelperError::PrivateAddress { .. })
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_private_addresses_only_is_refused_too() {
        use vantage_fixtures::dns::{Behaviour, DnsFixture};
        let (target, accepted) = counting_listener().await;
        let dns = DnsFixture::start(vec![(
            "intranet.example",
            Behaviour::Answer(vec![std::net::Ipv4Addr::LOCALHOST]),
        )])
        .await;
        let config = HelperConfig {
            resolvers: vec![Resolver::Udp(dns.addr)],
            ..HelperConfig::default()
        };
        let url = format!("http://intranet.example:{}/", target.port());
        let request = request_for(&Url::parse(&url).expect("url"), &[target]);
        let tls = TlsContext::new(vec![]).expect("tls");
        let err = answer(&request, &config, &tls)
            .await
            .expect_err("no control");
        assert!(
            matches!(&err, HelperError::PrivateAddress { addrs, .. } if addrs == "127.0.0.1"),
            "{err:?}"
        );
        assert_eq!(err.status(), 403);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A lab helper that may connect there measures it.
        let lab = HelperConfig {
            engine: EngineConfig {
                connect_to_bogons: true,
                ..EngineConfig::default()
            },
            ..config
        };
        let r = answer(&request, &lab, &tls)
            .await
            .expect("a lab measures it");
        assert_eq!(r.addrs(), ["127.0.0.1".to_string()]);
        assert!(r.tcp(&target.to_string()).expect("tried").status);
        assert_eq!(unusable(&r), None);
    }

    #[tokio::test]
    async fn a_helper_whose_resolver_does_not_answer_fails_instead_of_blaming_the_site() {
        // Nothing listens on the helper's resolver: its lookups fail, on loopback.
        let no_dns = std::net::UdpSocket::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let mut config = HelperConfig {
            resolvers: vec![Resolver::Udp(no_dns)],
            ..HelperConfig::default()
        };
        config.engine.timeouts.dns = Duration::from_millis(500);
        let tls = TlsContext::new(vec![]).expect("tls");
        let request = request_for(&Url::parse("https://example.org/").expect("url"), &[]);
        let err = answer(&request, &config, &tls)
            .await
            .expect_err("no control");
        assert!(
            matches!(&err, HelperError::ResolverFailed { .. }),
            "{err:?}"
        );
        assert_eq!(err.status(), 502);
        assert!(err.to_string().contains("resolver did not answer"), "{err}");
        // A resolver that refuses every name (no upstream) is no answer either.
        let refusing = vantage_fixtures::dns::DnsFixture::start(Vec::new()).await;
        config.resolvers = vec![Resolver::Udp(refusing.addr)];
        let err = answer(&request, &config, &tls)
            .await
            .expect_err("no control");
        assert_eq!(err.status(), 502, "{err:?}");
        assert!(err.to_string().contains("dns_refused_error"), "{err}");
        // A name that does not exist is the site's answer: a control, as before.
        let dns = vantage_fixtures::dns::DnsFixture::start(vec![(
            "gone.example",
            vantage_fixtures::dns::Behaviour::NxDomain,
        )])
        .await;
        config.resolvers = vec![Resolver::Udp(dns.addr)];
        let request = request_for(&Url::parse("https://gone.example/").expect("url"), &[]);
        let r = answer(&request, &config, &tls).await.expect("a control");
        assert_eq!(
            r.dns().and_then(|d| d.failure.as_deref()),
            Some("dns_name_error")
        );
        assert_eq!(unusable(&r), None);
    }

    #[test]
    fn every_refusal_answers_a_4xx() {
        let config = HelperConfig::default();
        let mut r = request_listing("gopher://example.org/", vec![]);
        let e = plan_for(&r, &config).expect_err("scheme");
        assert_eq!(e.status(), 400);
        r.http_request = "https://example.org/".into();
        r.tcp_connect = Some(vec!["93.184.216.34:443".into(); MAX_TCP_CONNECT + 1]);
        assert_eq!(plan_for(&r, &config).expect_err("scan").status(), 400);
        for url in [
            "http://10.0.0.1/",
            "http://[::1]:8080/",
            "https://192.168.1.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let r = request_listing(url, vec![]);
            let e = plan_for(&r, &config).expect_err(url);
            assert_eq!(e.status(), 403, "{url}");
            assert!(matches!(e, HelperError::PrivateAddress { .. }), "{url}");
        }
        // Public literal addresses and names are planned as before.
        assert!(plan_for(&request_listing("http://93.184.216.34/", vec![]), &config).is_ok());
        assert!(plan_for(&request_listing("https://example.org/", vec![]), &config).is_ok());
    }

    /// A request for `url` listing `endpoints` as given.
    fn request_listing(url: &str, endpoints: Vec<String>) -> ControlRequest {
        let mut r = request_for(&Url::parse(url).expect("url"), &[]);
        r.tcp_connect = Some(endpoints);
        r
    }

    /// A loopback listener counting the connections it accepts, holding each until the client
    /// closes it.
    async fn counting_listener() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        (addr, accepted)
    }

    #[test]
    fn endpoint_lists_longer_than_one_names_addresses_are_refused() {
        let config = HelperConfig::default();
        let url = "https://example.org/";
        let at_cap: Vec<String> = (0..MAX_TCP_CONNECT)
            .map(|i| format!("93.184.216.{i}:443"))
            .collect();
        let (_, endpoints) = plan_for(&request_listing(url, at_cap.clone()), &config)
            .expect("32 endpoints are a probe's list");
        assert_eq!(endpoints.len(), MAX_TCP_CONNECT);
        let mut over = at_cap;
        over.push("93.184.216.200:443".into());
        let err = plan_for(&request_listing(url, over), &config).expect_err("33 endpoints");
        assert!(matches!(
            err,
            HelperError::TooManyEndpoints { count: 33, .. }
        ));
        let msg = err.to_string();
        assert!(msg.contains("lists 33 tcp_connect endpoints"), "{msg}");
        assert!(msg.contains("at most 32 per request"), "{msg}");
        assert!(msg.contains("\"https://example.org/\""), "{msg}");
        // Unparseable entries count too, and a hostile URL is not echoed whole.
        let junk = vec!["x".to_string(); 3001];
        let long_url = format!("https://example.org/{}", "a".repeat(5000));
        let msg = plan_for(&request_listing(&long_url, junk), &config)
            .expect_err("3001 entries")
            .to_string();
        assert!(msg.contains("lists 3001"), "{msg}");
        assert!(msg.len() < 400, "{msg}");
        // Repeats are measured once; garbage is skipped.
        let (_, endpoints) = plan_for(
            &request_listing(
                url,
                vec![
                    "93.184.216.34:443".into(),
                    "93.184.216.34:443".into(),
                    "not an endpoint".into(),
                    "[2606:2800:220:1::1]:443".into(),
                ],
            ),
            &config,
        )
        .expect("plan");
        assert_eq!(
            endpoints,
            vec![
                "93.184.216.34:443".parse::<SocketAddr>().expect("v4"),
                "[2606:2800:220:1::1]:443".parse().expect("v6"),
            ]
        );
    }

    #[tokio::test]
    async fn a_scan_request_is_refused_before_any_connection() {
        let (target, accepted) = counting_listener().await;
        // Even a lab helper that may connect to loopback refuses the list as a whole.
        let config = HelperConfig {
            engine: EngineConfig {
                connect_to_bogons: true,
                ..EngineConfig::default()
            },
            ..HelperConfig::default()
        };
        let request = request_listing(&format!("http://{target}/"), vec![target.to_string(); 3001]);
        let tls = TlsContext::new(vec![]).expect("tls");
        let t0 = std::time::Instant::now();
        let err = answer(&request, &config, &tls).await.expect_err("refused");
        assert!(err.to_string().contains("at most 32"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no connection at all"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn helper_connections_at_once_are_capped_across_the_request() {
        // Six silent TLS servers: each connection holds its permit until the handshake times
        // out. The URL's own port is closed, so the helper's own fetch opens nothing there.
        let mut targets = Vec::new();
        let mut counts = Vec::new();
        for _ in 0..6 {
            let (addr, accepted) = counting_listener().await;
            targets.push(addr.to_string());
            counts.push(accepted);
        }
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let mut config = HelperConfig {
            engine: EngineConfig {
                connect_to_bogons: true,
                ..EngineConfig::default()
            },
            connections: Arc::new(Semaphore::new(2)),
            ..HelperConfig::default()
        };
        config.engine.timeouts.tls_handshake = Duration::from_millis(400);
        config.engine.timeouts.tcp_connect = Duration::from_secs(2);
        config.engine.timeouts.http = Duration::from_secs(2);
        let request = request_listing(&format!("https://{closed}/"), targets.clone());
        let tls = TlsContext::new(vec![]).expect("tls");
        let t0 = std::time::Instant::now();
        let r = answer(&request, &config, &tls).await.expect("answer");
        let took = t0.elapsed();
        // Every endpoint was measured (the TCP connects succeeded, the handshakes timed out) ...
        for t in &targets {
            assert_eq!(r.tcp(t).map(|c| c.status), Some(true), "{t}");
            let hs = &r.tls_handshake.as_ref().expect("tls")[t];
            assert!(!hs.status, "{t}: {hs:?}");
        }
        for accepted in &counts {
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
        // ... two at a time: three rounds of a 400 ms handshake deadline, where six at once
        // would have taken one.
        assert!(took >= Duration::from_millis(1150), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(
            config.connections.available_permits(),
            2,
            "permits come back"
        );
    }

    #[tokio::test]
    async fn nat64_and_mapped_forms_of_loopback_are_refused_as_loopback() {
        let (target, accepted) = counting_listener().await;
        let port = target.port();
        let mut config = HelperConfig::default();
        // IPv6 sockets cannot bind this IPv4 address, so even a helper that wrongly tried these
        // endpoints could not send a packet off this machine; the check below is on what it
        // recorded, not on whether a connection worked.
        config.engine.local_addr = Some(IpAddr::from([127, 0, 0, 1]));
        let forms = [
            format!("[64:ff9b::7f00:1]:{port}"),
            format!("[64:ff9b::a00:1]:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
            format!("[2002:7f00:1::1]:{port}"),
        ];
        // A name that does not exist (NXDOMAIN from a resolver on loopback), so the URL itself
        // is not refused and only the listed endpoints are left to check.
        let dns = vantage_fixtures::dns::DnsFixture::start(vec![(
            "unresolvable.example",
            vantage_fixtures::dns::Behaviour::NxDomain,
        )])
        .await;
        config.resolvers = vec![Resolver::Udp(dns.addr)];
        let request = request_listing(
            &format!("http://unresolvable.example:{port}/"),
            forms.to_vec(),
        );
        let tls = TlsContext::new(vec![]).expect("tls");
        let r = answer(&request, &config, &tls).await.expect("answer");
        assert!(
            r.tcp_connect.as_ref().is_some_and(BTreeMap::is_empty),
            "{:?}",
            r.tcp_connect
        );
        let info = r.ip_info.expect("ip_info");
        for f in &forms {
            let ip = f.parse::<SocketAddr>().expect("endpoint").ip().to_string();
            assert_eq!(
                info[&ip].flags & flags::BOGON,
                flags::BOGON,
                "{ip} is flagged a bogon"
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
