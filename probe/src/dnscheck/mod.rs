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

mod lookup;
mod resolvers;

pub use lookup::AddressLookup;
pub use resolvers::{
    ResolversFileError, Target, Transport, builtin, check_domain, parse_resolvers,
};

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use serde_json::{Map, Value, json};
use url::Host;

use crate::engine::{EngineConfig, Resolver, TlsContext, Trace, dns};
use crate::envelope::{Identity, MeasurementId};
use crate::ooni::Measurement;
use crate::run::RunError;
use crate::store::Store;
use crate::verdict::services::{ServiceVerdict, score_service};
use lookup::{lookup_at, queries_json};

/// OONI's `test_name`.
pub const TEST_NAME: &str = "dnscheck";
/// The version of OONI's dnscheck whose keys and steps we follow (probe-cli's
/// `internal/experiment/dnscheck`).
pub const TEST_VERSION: &str = "0.9.2";
/// The name resolvers are asked for when none is given: ts-028's default.
pub const DEFAULT_DOMAIN: &str = "example.org";
/// The list compiled into the binary.
pub const BUILTIN_RESOLVERS: &str = include_str!("../../../test-lists/resolvers.toml");

/// The most resolvers one file may list: each costs a bootstrap and two connections an address.
const MAX_RESOLVERS: usize = 200;
/// The most addresses one resolver is tried at (bootstrap and list together).
const MAX_ADDRESSES: usize = 8;
/// The largest DoH response body read (a DNS message is at most 65,535 bytes).
const DOH_BODY_CAP: usize = 64 * 1024;

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
    use vantage_fixtures::tcp::closed_port;
    use vantage_fixtures::tls::{Leaf, TestCa, TlsFixture};

    pub(super) const ANSWER: [u8; 4] = [93, 184, 216, 34];

    fn table() -> Vec<(&'static str, Behaviour)> {
        vec![("example.org", Behaviour::Answer(vec![ANSWER.into()]))]
    }

    /// Trusts only the test CA, as a probe trusts Mozilla's roots.
    pub(super) fn client_tls(ca: &TestCa) -> TlsContext {
        let root = CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("ca pem");
        TlsContext::new(vec![root]).expect("tls context")
    }

    pub(super) fn quick() -> EngineConfig {
        let mut config = EngineConfig::default();
        config.timeouts.dns = Duration::from_millis(700);
        config.timeouts.tcp_connect = Duration::from_secs(2);
        config.timeouts.tls_handshake = Duration::from_secs(2);
        config
    }

    pub(super) fn one(url: &str, extra: &str) -> Target {
        let text = format!("[[resolver]]\nurl = \"{url}\"\n{extra}\n");
        parse_resolvers(&text, "test").expect("target").remove(0)
    }

    #[derive(Debug, Clone, Copy)]
    pub(super) enum DotMode {
        /// Answers from the table.
        Answer,
        /// Answers a framed message that is not DNS.
        Garbage,
        /// Completes the handshake, reads the query, never answers.
        Silent,
    }

    /// A DNS-over-TLS server on loopback (RFC 7858): TLS with `leaf`, then length-prefixed DNS
    /// messages (RFC 7766 section 8) answered as the UDP and DoH fixtures answer them.
    pub(super) async fn dot_server(
        leaf: &Leaf,
        mode: DotMode,
    ) -> (SocketAddr, vantage_test_task::Task) {
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
    pub(super) mod vantage_test_task {
        pub struct Task(pub tokio::task::JoinHandle<()>);
        impl Drop for Task {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
    }

    pub(super) fn layer(r: &DnscheckResult) -> Option<String> {
        match r.verdict.as_ref().and_then(|v| v.blocking.clone()) {
            Some(crate::ooni::Blocking::Kind(k)) => Some(k),
            _ => None,
        }
    }

    pub(super) fn accessible(r: &DnscheckResult) -> Option<bool> {
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
