//! The engine against loopback fixtures that misbehave as censors do. Each test asserts what a
//! researcher reads in the measurement: the exact OONI failure string and the evidence kept.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{BLOCKPAGE, HttpFixture, Response};
use vantage_fixtures::tcp::{ResetListener, SilentListener};
use vantage_fixtures::tls::{TestCa, TlsFixture};
use vantage_probe::engine::{EngineConfig, Resolver, TlsContext, Trace, dns};
use vantage_probe::ooni::WebConnectivityMeasurement;
use vantage_probe::web_connectivity::{WebConnectivityPlan, measure};

/// What a blockpage fixture serves, known-answer values computed outside Rust.
const BLOCKPAGE_LEN: u64 = 134;
const BLOCKPAGE_SHA256: &str = "8c844a513232052d8ee08b6462c7f46a22f6266f04495c78c79cfe5e642d5ad0";

fn short_timeouts() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.timeouts.dns = Duration::from_secs(2);
    config.timeouts.tcp_connect = Duration::from_secs(2);
    config.timeouts.tls_handshake = Duration::from_secs(2);
    config.timeouts.http = Duration::from_secs(2);
    config
}

async fn run(url: &str, resolvers: Vec<Resolver>, tls: &TlsContext) -> WebConnectivityMeasurement {
    let plan = WebConnectivityPlan::new(url, resolvers, short_timeouts()).expect("valid plan");
    measure(&plan, tls).await
}

fn udp(fixture: &DnsFixture) -> Vec<Resolver> {
    vec![Resolver::Udp(fixture.addr)]
}

fn trusting(ca: &TestCa) -> TlsContext {
    let dir = tempdir();
    let path = dir.join("ca.pem");
    ca.write_pem(&path);
    TlsContext::new(TlsContext::load_pem(&path).expect("load ca")).expect("tls context")
}

fn tempdir() -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vantage-engine-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

#[tokio::test]
async fn nxdomain_is_dns_nxdomain_error() {
    let dns = DnsFixture::start(vec![("blocked.test", Behaviour::NxDomain)]).await;
    let m = run(
        "http://blocked.test/",
        udp(&dns),
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let tk = &m.test_keys;
    assert_eq!(
        tk.dns_experiment_failure.as_deref(),
        Some("dns_nxdomain_error")
    );
    assert_eq!(
        tk.http_experiment_failure.as_deref(),
        Some("dns_nxdomain_error")
    );
    let queries = tk.queries.as_ref().expect("queries");
    assert_eq!(queries.len(), 2, "A and AAAA");
    for q in queries {
        assert_eq!(q.failure.as_deref(), Some("dns_nxdomain_error"));
        assert_eq!(q.rcode, Some(3));
        assert_eq!(q.engine.as_deref(), Some("udp"));
        assert_eq!(q.resolver_address, Some(dns.addr.to_string()));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(q.raw_response.as_deref().expect("raw response kept"))
            .expect("base64");
        assert!(raw.len() >= 12, "a whole DNS message is kept");
    }
    assert!(tk.tcp_connect.as_ref().expect("tcp").is_empty());
    assert_eq!(m.resolver_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn bogon_answer_is_recorded() {
    // Only the lookup runs: connecting to the bogon would leave loopback.
    let bogon = Ipv4Addr::new(10, 10, 34, 34);
    let fixture = DnsFixture::start(vec![("bogon.test", Behaviour::Answer(vec![bogon]))]).await;
    let trace = Trace::new();
    let tls = TlsContext::new(vec![]).expect("tls");
    let lookup = dns::lookup(
        &Resolver::Udp(fixture.addr),
        "bogon.test",
        &short_timeouts(),
        &tls,
        &trace,
        None,
    )
    .await;
    assert!(lookup.error.is_none(), "{:?}", lookup.error);
    assert_eq!(lookup.addrs, vec![IpAddr::V4(bogon)]);
    let a = lookup
        .queries
        .iter()
        .find(|q| q.query_type == "A")
        .expect("A query");
    let answers = a.answers.as_ref().expect("answers");
    assert_eq!(answers[0].ipv4.as_deref(), Some("10.10.34.34"));
    assert_eq!(answers[0].answer_type, "A");
    let aaaa = lookup
        .queries
        .iter()
        .find(|q| q.query_type == "AAAA")
        .expect("AAAA query");
    assert_eq!(aaaa.failure.as_deref(), Some("dns_no_answer"));
}

#[tokio::test]
async fn injected_answer_and_real_answer_are_both_recorded_with_arrival_times() {
    let forged = Ipv4Addr::new(10, 10, 34, 34);
    let real = Ipv4Addr::new(127, 0, 0, 1);
    let fixture = DnsFixture::start(vec![(
        "raced.test",
        Behaviour::Race {
            forged,
            real,
            delay: Duration::from_millis(100),
        },
    )])
    .await;
    let trace = Trace::new();
    let tls = TlsContext::new(vec![]).expect("tls");
    // A DNS timeout far longer than the late-reply window, so that a loaded machine's slack
    // cannot be mistaken for the one or the other.
    let mut config = short_timeouts();
    config.timeouts.dns = Duration::from_secs(10);
    let started = Instant::now();
    let lookup = dns::lookup(
        &Resolver::Udp(fixture.addr),
        "raced.test",
        &config,
        &tls,
        &trace,
        None,
    )
    .await;
    let took = started.elapsed();

    let first = lookup
        .queries
        .iter()
        .find(|q| q.query_type == "A")
        .expect("A query");
    assert_eq!(
        first.answers.as_ref().expect("answers")[0].ipv4.as_deref(),
        Some("10.10.34.34")
    );
    assert_eq!(lookup.duplicates.len(), 1, "the late real answer is kept");
    let late = &lookup.duplicates[0];
    assert_eq!(
        late.answers.as_ref().expect("answers")[0].ipv4.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        late.x_dns_id, first.x_dns_id,
        "both replies carry the query id"
    );
    let gap = late.t.expect("t") - first.t.expect("t");
    assert!(
        (0.09..0.4).contains(&gap),
        "second answer about 100 ms later, got {gap:.3} s"
    );
    assert!(late.raw_response.is_some());
    // The engine trusts the first answer, as a stub resolver would.
    assert_eq!(lookup.addrs, vec![IpAddr::V4(forged)]);
    // It kept listening for the late-reply window (500 ms), not for the whole DNS timeout
    // (10 s).
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn garbage_dns_reply_is_server_misbehaving() {
    let fixture = DnsFixture::start(vec![("garbage.test", Behaviour::Garbage)]).await;
    let m = run(
        "http://garbage.test/",
        udp(&fixture),
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    assert_eq!(
        m.test_keys.dns_experiment_failure.as_deref(),
        Some("dns_server_misbehaving")
    );
}

#[tokio::test]
async fn silent_resolver_is_a_timeout() {
    // A UDP socket that never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let started = Instant::now();
    let m = run(
        "http://quiet.test/",
        vec![Resolver::Udp(addr)],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    assert_eq!(
        m.test_keys.dns_experiment_failure.as_deref(),
        Some("generic_timeout_error")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn reset_is_connection_reset() {
    let listener = ResetListener::start().await;
    let url = format!("http://127.0.0.1:{}/", listener.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let tk = &m.test_keys;
    let tcp = &tk.tcp_connect.as_ref().expect("tcp")[0];
    assert!(
        tcp.status.success,
        "the handshake itself completes: {tcp:?}"
    );
    assert_eq!(
        tk.http_experiment_failure.as_deref(),
        Some("connection_reset")
    );
    let req = &tk.requests.as_ref().expect("requests")[0];
    assert_eq!(req.failure.as_deref(), Some("connection_reset"));
    assert_eq!(req.response.as_ref().expect("response").code, Some(0));
}

#[tokio::test]
async fn silent_listener_is_generic_timeout_within_the_timeout_plus_one_second() {
    let listener = SilentListener::start().await;
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://127.0.0.1:{}/", listener.addr.port());
        let started = Instant::now();
        let m = run(
            &url,
            vec![Resolver::System],
            &TlsContext::new(vec![]).expect("tls"),
        )
        .await;
        let took = started.elapsed();
        let tk = &m.test_keys;
        assert_eq!(
            tk.http_experiment_failure.as_deref(),
            Some("generic_timeout_error"),
            "{scheme}"
        );
        assert!(
            took < Duration::from_secs(3),
            "{scheme}: {took:?} > timeout (2 s) + 1 s"
        );
        if scheme == "https" {
            let hs = &tk.tls_handshakes.as_ref().expect("tls")[0];
            assert_eq!(hs.failure.as_deref(), Some("generic_timeout_error"));
        }
    }
}

#[tokio::test]
async fn wrong_host_certificate_is_ssl_invalid_hostname_with_chain() {
    let ca = TestCa::new("Vantage Test CA");
    let leaf = ca.leaf(&["other.example"]);
    let server = TlsFixture::fixed(&leaf, Response::html("<title>ok</title>")).await;
    let dns = DnsFixture::start(vec![(
        "wrong.test",
        Behaviour::Answer(vec![Ipv4Addr::LOCALHOST]),
    )])
    .await;
    let url = format!("https://wrong.test:{}/", server.addr.port());
    let m = run(&url, udp(&dns), &trusting(&ca)).await;
    let tk = &m.test_keys;
    let hs = &tk.tls_handshakes.as_ref().expect("tls")[0];
    assert_eq!(hs.failure.as_deref(), Some("ssl_invalid_hostname"));
    assert_eq!(hs.server_name, "wrong.test");
    assert_eq!(
        hs.address.as_deref(),
        Some(
            SocketAddr::from(([127, 0, 0, 1], server.addr.port()))
                .to_string()
                .as_str()
        )
    );
    let chain = hs
        .peer_certificates
        .as_ref()
        .expect("chain recorded on failure");
    assert_eq!(chain.len(), 2);
    let leaf_der = base64::engine::general_purpose::STANDARD
        .decode(&chain[0].data)
        .expect("b64");
    assert_eq!(leaf_der, leaf.chain[0].as_ref(), "the leaf the server sent");
    assert_eq!(
        tk.http_experiment_failure.as_deref(),
        Some("ssl_invalid_hostname")
    );
    assert!(tk.requests.as_ref().expect("requests").is_empty());
}

#[tokio::test]
async fn untrusted_ca_is_ssl_unknown_authority_with_chain() {
    let rogue = TestCa::new("Rogue Interception CA");
    let leaf = rogue.leaf(&["127.0.0.1"]);
    let server = TlsFixture::fixed(&leaf, Response::html("<title>mitm</title>")).await;
    let url = format!("https://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let hs = &m.test_keys.tls_handshakes.as_ref().expect("tls")[0];
    assert_eq!(hs.failure.as_deref(), Some("ssl_unknown_authority"));
    assert_eq!(hs.peer_certificates.as_ref().expect("chain").len(), 2);
    assert_eq!(hs.tls_version, "", "no version on failure");
}

#[tokio::test]
async fn trusted_https_site_is_fetched_with_handshake_details() {
    let ca = TestCa::new("Vantage Test CA");
    let leaf = ca.leaf(&["ok.test"]);
    let server =
        TlsFixture::fixed(&leaf, Response::html("<html><title>Welcome</title></html>")).await;
    let dns = DnsFixture::start(vec![(
        "ok.test",
        Behaviour::Answer(vec![Ipv4Addr::LOCALHOST]),
    )])
    .await;
    let url = format!("https://ok.test:{}/", server.addr.port());
    let m = run(&url, udp(&dns), &trusting(&ca)).await;
    let tk = &m.test_keys;
    let hs = &tk.tls_handshakes.as_ref().expect("tls")[0];
    assert_eq!(hs.failure, None);
    assert_eq!(hs.tls_version, "TLSv1.3");
    assert!(hs.cipher_suite.starts_with("TLS_"), "{}", hs.cipher_suite);
    assert_eq!(hs.negotiated_protocol, "http/1.1");
    assert_eq!(tk.http_experiment_failure, None);
    let req = &tk.requests.as_ref().expect("requests")[0];
    let resp = req.response.as_ref().expect("response");
    assert_eq!(resp.code, Some(200));
    assert_eq!(resp.x_title.as_deref(), Some("Welcome"));
    assert_eq!(req.alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn blockpage_length_title_and_hash_are_recorded() {
    let server = HttpFixture::fixed(Response::html(BLOCKPAGE)).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let tk = &m.test_keys;
    assert_eq!(tk.http_experiment_failure, None);
    let req = &tk.requests.as_ref().expect("requests")[0];
    let resp = req.response.as_ref().expect("response");
    assert_eq!(resp.code, Some(200));
    assert_eq!(resp.x_body_length, Some(BLOCKPAGE_LEN));
    assert_eq!(resp.x_title.as_deref(), Some("Access Denied"));
    assert_eq!(resp.x_body_sha256.as_deref(), Some(BLOCKPAGE_SHA256));
    assert_eq!(resp.body_is_truncated, Some(false));
    let sent: Vec<&str> = req
        .request
        .headers_list
        .iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(sent, ["Accept", "Accept-Language", "Host", "User-Agent"]);
}

#[tokio::test]
async fn body_is_capped() {
    let big = "x".repeat(600 * 1024);
    let server = HttpFixture::fixed(Response::html(&big)).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let resp = m.test_keys.requests.as_ref().expect("requests")[0]
        .response
        .clone()
        .expect("response");
    assert_eq!(resp.body_is_truncated, Some(true));
    assert_eq!(resp.x_body_length, Some(512 * 1024));
}

#[tokio::test]
async fn redirects_are_followed_one_by_one_latest_first() {
    let server = HttpFixture::start(Arc::new(|req| match req.path.as_str() {
        "/" => Response::redirect(302, "/second"),
        "/second" => Response::redirect(301, "/final"),
        _ => Response::html("<title>Arrived</title>"),
    }))
    .await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let requests = m.test_keys.requests.as_ref().expect("requests");
    assert_eq!(requests.len(), 3);
    assert!(requests[0].request.url.ends_with("/final"));
    assert_eq!(
        requests[0].response.as_ref().expect("r").x_title.as_deref(),
        Some("Arrived")
    );
    assert!(requests[2].request.url.ends_with(':') || requests[2].request.url.ends_with('/'));
    assert_eq!(
        requests[0].tags.as_ref().expect("tags"),
        &vec!["depth=2".to_string()]
    );
    assert_eq!(m.test_keys.http_experiment_failure, None);
    assert_eq!(
        m.test_keys.tcp_connect.as_ref().expect("tcp").len(),
        3,
        "one connect per hop"
    );
}

#[tokio::test]
async fn redirect_loops_stop_after_ten() {
    let server = HttpFixture::start(Arc::new(|req| {
        let n: usize = req.path.trim_start_matches("/r").parse().unwrap_or(0);
        Response::redirect(302, &format!("/r{}", n + 1))
    }))
    .await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    assert_eq!(m.test_keys.requests.as_ref().expect("requests").len(), 11);
    assert_eq!(
        m.test_keys.http_experiment_failure.as_deref(),
        Some("unknown_failure: stopped after 10 redirects")
    );
}

#[tokio::test]
async fn broken_redirect_location_is_reported() {
    let server = HttpFixture::fixed(Response::redirect(302, "http://")).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    assert_eq!(
        m.test_keys.http_experiment_failure.as_deref(),
        Some("http_invalid_redirect_location_host")
    );
}

#[tokio::test]
async fn doh_lookup_is_recorded_and_used() {
    let ca = TestCa::new("Vantage Test CA");
    let doh = TlsFixture::doh(
        &ca.leaf(&["127.0.0.1"]),
        vec![("site.test", Behaviour::Answer(vec![Ipv4Addr::LOCALHOST]))],
    )
    .await;
    let site = HttpFixture::fixed(Response::html("<title>Site</title>")).await;
    let doh_url =
        url::Url::parse(&format!("https://127.0.0.1:{}/dns-query", doh.addr.port())).expect("url");
    let url = format!("http://site.test:{}/", site.addr.port());
    let m = run(&url, vec![Resolver::Doh(doh_url.clone())], &trusting(&ca)).await;
    let tk = &m.test_keys;
    let a = tk
        .queries
        .as_ref()
        .expect("queries")
        .iter()
        .find(|q| q.query_type == "A")
        .expect("A");
    assert_eq!(a.engine.as_deref(), Some("doh"));
    assert_eq!(a.resolver_address, Some(doh_url.to_string()));
    assert_eq!(
        a.answers.as_ref().expect("answers")[0].ipv4.as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(tk.http_experiment_failure, None);
    assert_eq!(
        tk.requests.as_ref().expect("r")[0]
            .response
            .as_ref()
            .expect("r")
            .x_title
            .as_deref(),
        Some("Site")
    );
}

#[tokio::test]
async fn doh_with_untrusted_certificate_fails_the_lookup() {
    let rogue = TestCa::new("Rogue");
    let doh = TlsFixture::doh(&rogue.leaf(&["127.0.0.1"]), vec![]).await;
    let doh_url =
        url::Url::parse(&format!("https://127.0.0.1:{}/dns-query", doh.addr.port())).expect("url");
    let m = run(
        "http://site.test/",
        vec![Resolver::Doh(doh_url)],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    assert_eq!(
        m.test_keys.dns_experiment_failure.as_deref(),
        Some("ssl_unknown_authority")
    );
}

#[tokio::test]
async fn timings_are_relative_and_ordered() {
    let server = HttpFixture::fixed(Response::html("<title>t</title>")).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let m = run(
        &url,
        vec![Resolver::System],
        &TlsContext::new(vec![]).expect("tls"),
    )
    .await;
    let tcp = &m.test_keys.tcp_connect.as_ref().expect("tcp")[0];
    let req = &m.test_keys.requests.as_ref().expect("requests")[0];
    let (t0, t) = (tcp.t0.expect("t0"), tcp.t.expect("t"));
    let req_t = req.t.expect("t");
    assert!(0.0 <= t0 && t0 <= t && t <= req.t0.expect("t0") && req.t0.expect("t0") <= req_t);
    assert!(m.test_runtime >= req_t);
    assert_eq!(
        tcp.transaction_id, req.transaction_id,
        "same connection, same transaction"
    );
}
