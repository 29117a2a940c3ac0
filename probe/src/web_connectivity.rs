//! The `web_connectivity` test for one URL (`ooni/spec` `nettests/ts-017-web-connectivity.md`).
//!
//! Steps, each recorded on its own: resolve the host with every configured resolver (the first
//! one is the "classic" lookup whose failure becomes `dns_experiment_failure`); TCP-connect to
//! every resolved address; for `https` URLs, a TLS handshake on every connection with the URL
//! host as SNI; GET over the first connection that worked; then follow redirects one by one
//! (ts-017 E002), each hop with its own DNS, connect and handshake, tagged `depth=N`.
//!
//! Scoring against a control is not done here: the aggregator scores (docs/architecture.md, "What
//! probe and aggregator agree on"). With no
//! test helper configured, `control` is `null` and `control_failure` says so. When the helper
//! refused or failed (`th::call`), `control_failure` says why; when it answered but measured
//! nothing of the site (`th::unusable`), its answer is kept in `control` and `control_failure`
//! says why it must not be used.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use url::{Host, Url};

use crate::engine::bogon::is_bogon;
use crate::engine::{
    EngineConfig, Resolver, TlsContext, Trace, dns, http as http_step, tags, tcp, tls,
};
use crate::failure::StepError;
use crate::ooni::{
    Measurement, TcpConnect, TlsHandshake, WEB_CONNECTIVITY, WEB_CONNECTIVITY_VERSION,
    WebConnectivityMeasurement, WebConnectivityTestKeys, ooni_timestamp,
};

/// `control_failure` when no test helper is configured.
pub const NO_TEST_HELPER: &str = "test_helper_not_configured";

/// ALPN we offer: HTTP/1.1 only, since the engine speaks HTTP/1.1 on the connection it made.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Why an input cannot be measured. Found before any network I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a URL at all.
    #[error("invalid URL {input:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        input: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Not `http` or `https`.
    #[error("unsupported URL scheme {scheme:?} in {input:?}: only http and https can be measured")]
    UnsupportedScheme {
        /// What was given.
        input: String,
        /// Its scheme.
        scheme: String,
    },
    /// No resolver to use.
    #[error("no resolver configured")]
    NoResolver,
}

/// A validated `web_connectivity` measurement of one URL.
#[derive(Debug, Clone)]
pub struct WebConnectivityPlan {
    input: String,
    url: Url,
    resolvers: Vec<Resolver>,
    config: EngineConfig,
    test_helper: Option<Url>,
}

impl WebConnectivityPlan {
    /// Validates `input` and the resolver list. The first resolver is the "classic" one.
    pub fn new(
        input: &str,
        resolvers: Vec<Resolver>,
        config: EngineConfig,
    ) -> Result<Self, PlanError> {
        let url = Url::parse(input.trim()).map_err(|e| PlanError::InvalidUrl {
            input: input.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(PlanError::UnsupportedScheme {
                input: input.to_string(),
                scheme: url.scheme().to_string(),
            });
        }
        if url.host().is_none() {
            return Err(PlanError::InvalidUrl {
                input: input.to_string(),
                reason: "no host".into(),
            });
        }
        if resolvers.is_empty() {
            return Err(PlanError::NoResolver);
        }
        Ok(WebConnectivityPlan {
            input: input.trim().to_string(),
            url,
            resolvers,
            config,
            test_helper: None,
        })
    }

    /// Asks the test helper at `helper` for a control measurement (OONI's `THRequest`).
    pub fn with_test_helper(mut self, helper: Url) -> Self {
        self.test_helper = Some(helper);
        self
    }

    /// The URL to measure.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The engine configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}

/// A connection ready for HTTP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// What opening one endpoint produced.
struct Opened {
    tcp: TcpConnect,
    tls: Option<TlsHandshake>,
    conn: Result<Conn, StepError>,
}

/// Everything the steps recorded, in the order they happened.
#[derive(Default)]
struct Observations {
    queries: Vec<crate::ooni::DnsQuery>,
    duplicates: Vec<crate::ooni::DnsQuery>,
    tcp_connect: Vec<TcpConnect>,
    tls_handshakes: Vec<TlsHandshake>,
    requests: Vec<crate::ooni::HttpTransaction>,
    dns_experiment_failure: Option<String>,
}

/// Runs the measurement. Network failures are results, not errors: they are in the measurement.
pub async fn measure(
    plan: &WebConnectivityPlan,
    tls_ctx: &TlsContext,
) -> WebConnectivityMeasurement {
    let started = SystemTime::now();
    let trace = Arc::new(Trace::new());
    let mut obs = Observations::default();
    let mut resolved: HashMap<String, Result<Vec<IpAddr>, String>> = HashMap::new();
    let mut url = plan.url.clone();
    let mut final_failure: Option<String> = None;

    let mut control = None;

    for depth in 0..=plan.config.max_redirects {
        let resolved_here =
            resolve(plan, &url, depth, tls_ctx, &trace, &mut obs, &mut resolved).await;
        if depth == 0 {
            control = spawn_control(plan, tls_ctx, resolved_here.as_deref().unwrap_or_default());
        }
        let addrs = match resolved_here {
            Ok(addrs) => addrs,
            Err(failure) => {
                final_failure = Some(failure);
                break;
            }
        };
        let addrs = match refuse_bogons(&plan.config, &url, addrs) {
            Ok(addrs) => addrs,
            Err(failure) => {
                final_failure = Some(failure);
                break;
            }
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let endpoints: Vec<SocketAddr> =
            addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        let (conn, peer, alpn, tid) =
            match open_first(plan, &url, &endpoints, depth, tls_ctx, &trace, &mut obs).await {
                Ok(found) => found,
                Err(failure) => {
                    final_failure = Some(failure);
                    break;
                }
            };
        let spec = http_step::GetSpec {
            url: &url,
            peer: peer.to_string(),
            alpn,
            timeout: plan.config.timeouts.http,
            body_cap: plan.config.body_cap_bytes,
            tags: tags(depth == 0, depth),
            transaction_id: tid,
        };
        let fetch = match conn {
            Conn::Plain(s) => http_step::get(s, spec, &trace).await,
            Conn::Tls(s) => http_step::get(*s, spec, &trace).await,
        };
        obs.requests.push(fetch.record);
        final_failure = fetch.error.as_ref().map(|e| e.failure().to_string());
        match fetch.next {
            None => break,
            Some(Err(e)) => {
                final_failure = Some(e.failure().to_string());
                break;
            }
            Some(Ok(next)) if depth == plan.config.max_redirects => {
                let e = StepError::TooManyRedirects {
                    limit: plan.config.max_redirects,
                };
                tracing::debug!(%next, "not following: {e}");
                final_failure = Some(e.failure().to_string());
            }
            Some(Ok(next)) => url = next,
        }
    }

    // df-001: a redirect chain is listed latest first.
    obs.requests.reverse();
    let (x_control_request, control, control_failure) = match control {
        None => (None, None, Some(NO_TEST_HELPER.to_string())),
        Some((request, task)) => match task.await {
            // An answer that measured nothing of the site is kept, but marked unusable.
            Ok(Ok(response)) => {
                let unusable = crate::th::unusable(&response);
                (Some(request), Some(response), unusable)
            }
            Ok(Err(failure)) => (Some(request), None, Some(failure)),
            Err(e) => (Some(request), None, Some(format!("unknown_failure: {e}"))),
        },
    };
    let test_keys = WebConnectivityTestKeys {
        agent: Some("redirect".into()),
        client_resolver: None,
        queries: Some(obs.queries),
        tcp_connect: Some(obs.tcp_connect),
        tls_handshakes: Some(obs.tls_handshakes),
        requests: Some(obs.requests),
        x_dns_duplicate_responses: Some(obs.duplicates),
        x_control_request,
        control,
        control_failure,
        dns_experiment_failure: obs.dns_experiment_failure,
        dns_consistency: None,
        http_experiment_failure: final_failure,
        body_length_match: None,
        body_proportion: None,
        headers_match: None,
        status_code_match: None,
        title_match: None,
        blocking: None,
        accessible: None,
        extra: Map::new(),
    };
    envelope(plan, started, trace.clock.secs(), test_keys)
}

type ControlTask = tokio::task::JoinHandle<Result<crate::ooni::ControlResponse, String>>;

/// Starts the call to the test helper, if one is configured, with the endpoints resolved here
/// (an empty list when DNS failed, as OONI's probe does).
fn spawn_control(
    plan: &WebConnectivityPlan,
    tls_ctx: &TlsContext,
    addrs: &[IpAddr],
) -> Option<(crate::ooni::ControlRequest, ControlTask)> {
    let helper = plan.test_helper.clone()?;
    let port = plan.url.port_or_known_default().unwrap_or(80);
    let endpoints: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    let request = crate::th::request_for(&plan.url, &endpoints);
    let (sent, config, tls_ctx) = (request.clone(), plan.config.clone(), tls_ctx.clone());
    let task =
        tokio::spawn(async move { crate::th::call(&helper, &sent, &config, &tls_ctx).await });
    Some((request, task))
}

/// Drops bogon addresses when the engine must not connect to them (a test helper).
fn refuse_bogons(
    config: &EngineConfig,
    url: &Url,
    addrs: Vec<IpAddr>,
) -> Result<Vec<IpAddr>, String> {
    if config.connect_to_bogons {
        return Ok(addrs);
    }
    let public: Vec<IpAddr> = addrs.iter().copied().filter(|a| !is_bogon(*a)).collect();
    if public.is_empty() {
        let e = StepError::OnlyBogons {
            host: url.host_str().unwrap_or_default().to_string(),
            addrs: addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        return Err(e.failure().to_string());
    }
    Ok(public)
}

/// Addresses for `url`'s host: the literal address, or the union of every resolver's answers.
async fn resolve(
    plan: &WebConnectivityPlan,
    url: &Url,
    depth: usize,
    tls_ctx: &TlsContext,
    trace: &Trace,
    obs: &mut Observations,
    cache: &mut HashMap<String, Result<Vec<IpAddr>, String>>,
) -> Result<Vec<IpAddr>, String> {
    // ts-017: if the URL holds an address, use it; do not fake a DNS query.
    let host = match url.host() {
        Some(Host::Ipv4(ip)) => return Ok(vec![IpAddr::V4(ip)]),
        Some(Host::Ipv6(ip)) => return Ok(vec![IpAddr::V6(ip)]),
        Some(Host::Domain(d)) => d.to_string(),
        None => {
            return Err(StepError::BadRedirect {
                location: url.to_string(),
            }
            .failure()
            .to_string());
        }
    };
    if let Some(known) = cache.get(&host) {
        return known.clone();
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut first_failure = None;
    for (i, resolver) in plan.resolvers.iter().enumerate() {
        let classic = i == 0 && depth == 0;
        let lookup = dns::lookup(
            resolver,
            &host,
            &plan.config,
            tls_ctx,
            trace,
            tags(classic, depth),
        )
        .await;
        let failure = lookup.error.as_ref().map(|e| e.failure().to_string());
        if classic {
            obs.dns_experiment_failure = failure.clone();
        }
        if first_failure.is_none() {
            first_failure = failure;
        }
        obs.queries.extend(lookup.queries);
        obs.duplicates.extend(lookup.duplicates);
        for a in lookup.addrs {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
    }
    let result = if addrs.is_empty() {
        Err(first_failure.unwrap_or_else(|| "dns_no_answer".into()))
    } else {
        Ok(addrs)
    };
    cache.insert(host, result.clone());
    result
}

/// Opens endpoints: all of them concurrently at depth 0 (every address is measured), one after
/// another at later depths until one works. Returns the first working connection in address order.
async fn open_first(
    plan: &WebConnectivityPlan,
    url: &Url,
    endpoints: &[SocketAddr],
    depth: usize,
    tls_ctx: &TlsContext,
    trace: &Arc<Trace>,
    obs: &mut Observations,
) -> Result<(Conn, SocketAddr, Option<String>, i64), String> {
    let server_name = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let https = url.scheme() == "https";
    let mut opened: Vec<(SocketAddr, i64, Opened)> = Vec::new();
    if depth == 0 {
        let mut set = tokio::task::JoinSet::new();
        for (i, addr) in endpoints.iter().copied().enumerate() {
            let (trace, tls_ctx, name, config) = (
                trace.clone(),
                tls_ctx.clone(),
                server_name.clone(),
                plan.config.clone(),
            );
            set.spawn(async move {
                let tid = trace.transaction();
                (
                    i,
                    addr,
                    tid,
                    open(addr, https, &name, &config, &tls_ctx, &trace, depth, tid).await,
                )
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = set.join_next().await {
            if let Ok(r) = joined {
                results.push(r);
            }
        }
        results.sort_by_key(|r| r.0);
        opened = results.into_iter().map(|(_, a, t, o)| (a, t, o)).collect();
    } else {
        for addr in endpoints.iter().copied() {
            let tid = trace.transaction();
            let o = open(
                addr,
                https,
                &server_name,
                &plan.config,
                tls_ctx,
                trace,
                depth,
                tid,
            )
            .await;
            let ok = o.conn.is_ok();
            opened.push((addr, tid, o));
            if ok {
                break;
            }
        }
    }

    let mut chosen = None;
    let mut first_failure = None;
    for (addr, tid, o) in opened {
        obs.tcp_connect.push(o.tcp);
        let alpn = o
            .tls
            .as_ref()
            .map(|t| t.negotiated_protocol.clone())
            .filter(|p| !p.is_empty());
        obs.tls_handshakes.extend(o.tls);
        match o.conn {
            Ok(conn) if chosen.is_none() => chosen = Some((conn, addr, alpn, tid)),
            Ok(_) => {}
            Err(e) => {
                first_failure.get_or_insert_with(|| e.failure().to_string());
            }
        }
    }
    chosen.ok_or_else(|| first_failure.unwrap_or_else(|| "dns_no_answer".into()))
}

#[allow(clippy::too_many_arguments)]
async fn open(
    addr: SocketAddr,
    https: bool,
    server_name: &str,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
    depth: usize,
    tid: i64,
) -> Opened {
    let (tcp_record, stream) = tcp::connect(
        addr,
        config.local_addr,
        trace,
        config.timeouts.tcp_connect,
        tags(depth == 0, depth),
        tid,
    )
    .await;
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            return Opened {
                tcp: tcp_record,
                tls: None,
                conn: Err(e),
            };
        }
    };
    if !https {
        return Opened {
            tcp: tcp_record,
            tls: None,
            conn: Ok(Conn::Plain(stream)),
        };
    }
    let spec = tls::HandshakeSpec {
        server_name,
        addr,
        alpn: ALPN,
        timeout: config.timeouts.tls_handshake,
        tags: tags(depth == 0, depth),
        transaction_id: tid,
    };
    let hs = tls::handshake(tls_ctx, stream, spec, trace).await;
    Opened {
        tcp: tcp_record,
        tls: Some(hs.record),
        conn: hs.result.map(|s| Conn::Tls(Box::new(s))),
    }
}

fn envelope(
    plan: &WebConnectivityPlan,
    started: SystemTime,
    runtime_secs: f64,
    test_keys: WebConnectivityTestKeys,
) -> WebConnectivityMeasurement {
    let start = ooni_timestamp(started);
    let mut extensions = Map::new();
    for key in ["dnst", "httpt", "tcpconnect", "tlshandshake"] {
        extensions.insert(key.into(), Value::from(0));
    }
    let resolver_ip = plan.resolvers.first().and_then(|r| match r {
        Resolver::Udp(addr) => Some(addr.ip().to_string()),
        _ => None,
    });
    let mut m = Measurement::vantage(WEB_CONNECTIVITY, WEB_CONNECTIVITY_VERSION, test_keys);
    m.extensions = Some(extensions);
    m.input = Some(plan.input.clone());
    m.measurement_start_time = start.clone();
    m.resolver_ip = resolver_ip;
    m.test_helpers = plan
        .test_helper
        .as_ref()
        .map(|th| serde_json::json!({"backend": {"address": th.as_str(), "type": th.scheme()}}));
    m.test_runtime = runtime_secs;
    m.test_start_time = Some(start);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(input: &str) -> Result<WebConnectivityPlan, PlanError> {
        WebConnectivityPlan::new(input, vec![Resolver::System], EngineConfig::default())
    }

    #[test]
    fn plan_rejects_bad_input_before_any_io() {
        assert_eq!(
            plan("not-a-url").expect_err("relative").to_string(),
            "invalid URL \"not-a-url\": relative URL without a base"
        );
        assert_eq!(
            plan("ftp://example.org/").expect_err("scheme").to_string(),
            "unsupported URL scheme \"ftp\" in \"ftp://example.org/\": only http and https can be measured"
        );
        assert!(matches!(
            WebConnectivityPlan::new("https://example.org/", vec![], EngineConfig::default()),
            Err(PlanError::NoResolver)
        ));
        assert!(plan("https://example.org/").is_ok());
    }

    #[tokio::test]
    async fn literal_address_is_not_resolved() {
        // Nothing listens on this port: the measurement records a refused connect and no query.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let p = plan(&format!("http://127.0.0.1:{port}/")).expect("plan");
        let tls = TlsContext::new(vec![]).expect("tls");
        let m = measure(&p, &tls).await;
        let tk = &m.test_keys;
        assert_eq!(tk.queries.as_ref().map(Vec::len), Some(0));
        assert_eq!(
            tk.http_experiment_failure.as_deref(),
            Some("connection_refused")
        );
        assert_eq!(tk.control_failure.as_deref(), Some(NO_TEST_HELPER));
        assert_eq!(m.probe_ip, "127.0.0.1");
    }
}
