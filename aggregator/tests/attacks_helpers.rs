//! The aggregator's two helpers under attack, replayed against the real `vantage-aggregator
//! serve` on loopback:
//!
//! - the throughput server (the throttling test's download server): 64 and more idle TCP
//!   connections, renewed as soon as they close, used to lock every probe out of the test. Now
//!   one address gets a few slots and the rest are closed at once; connections from many
//!   addresses past the server's cap evict the oldest idle ones; every idle connection is
//!   closed by the handshake deadline; and a probe on another address measures meanwhile;
//! - the test helper (`POST /api/v1/th`): one 57 kB request listing 3,001 `tcp_connect`
//!   endpoints made it connect to every one of them; now it is refused with 400 before any
//!   connection, and IPv6 spellings of loopback (NAT64, IPv4-mapped, 6to4) are refused as
//!   loopback when private addresses are not allowed.
//!
//! After each attack the server must still answer `GET /api/v1/health`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, Server, http, spawn_server, vantage};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tls::TestCa;

/// Idle connections the attacker keeps open.
const IDLE: usize = 80;
/// The throughput server's handshake deadline (`throughput::Limits::default`).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// A fresh directory with a test CA: (directory, CA path).
fn setup(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = common::tempdir(name);
    let ca = dir.join("ca.pem");
    TestCa::new("CA").write_pem(&ca);
    (dir, ca)
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let (base, path) = (base.to_string(), path.to_string());
    tokio::task::spawn_blocking(move || http(&base, "GET", &path, &[], b""))
        .await
        .expect("join")
}

async fn post_th(base: &str, body: String) -> (u16, String) {
    let base = base.to_string();
    tokio::task::spawn_blocking(move || {
        http(
            &base,
            "POST",
            "/api/v1/th",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    })
    .await
    .expect("join")
}

async fn assert_healthy(base: &str) {
    let (status, body) = get(base, "/api/v1/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");
}

/// One attacker's connection, over and over: connect from `from`, send nothing, wait for the
/// server to close it, note how long it lived, reconnect 50 ms later. Stops when `stop` is set.
async fn idle_connection(
    from: [u8; 4],
    to: SocketAddr,
    stop: Arc<AtomicBool>,
    lives: Arc<Mutex<Vec<Duration>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind the attacker's address");
        let Ok(mut s) = socket.connect(to).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let t0 = Instant::now();
        let mut buf = [0u8; 256];
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
            }
        }
        lives.lock().expect("lock").push(t0.elapsed());
        // Back at once, give or take a breath: 80 of these still open over a thousand
        // connections a second.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What an attack on the throughput server did: how long the probe's test took, and how long
/// each attacker connection lived.
struct Attack {
    took: Duration,
    lives: Vec<Duration>,
}

impl Attack {
    fn closed_within(&self, d: Duration) -> usize {
        self.lives.iter().filter(|l| **l < d).count()
    }

    fn longest(&self) -> Duration {
        self.lives.iter().max().copied().unwrap_or_default()
    }
}

/// Starts the aggregator with its throughput server, opens [`IDLE`] idle connections spread
/// over `sources` and renews each as soon as it is closed, runs the real probe's throttling
/// test from 127.0.0.1 straight to the server while the attack goes on, keeps attacking until
/// the held connections have met the handshake deadline once more, and checks the server
/// still answers `/api/v1/health`.
async fn attack_throughput_server(name: &str, sources: &[[u8; 4]]) -> Attack {
    let (dir, ca) = setup(name);
    let server = common::serve(
        &ca,
        &dir.join("agg.db"),
        &["--throughput-listen", "127.0.0.1:0"],
    )
    .await;
    let (status, body) = get(&server.base, "/api/v1/throughput").await;
    assert_eq!(status, 200, "{body}");
    let info: Value = serde_json::from_str(&body).expect("json");
    let port = u16::try_from(info["port"].as_u64().expect("port")).expect("port");
    let pin = info["cert_sha256"].as_str().expect("pin").to_string();
    let target = SocketAddr::from(([127, 0, 0, 1], port));

    let stop = Arc::new(AtomicBool::new(false));
    let lives = Arc::new(Mutex::new(Vec::new()));
    let attackers: Vec<_> = (0..IDLE)
        .map(|i| {
            let from = sources[i % sources.len()];
            tokio::spawn(idle_connection(from, target, stop.clone(), lives.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--test", "throttling", "--yes", "--json"])
        .args(["--target", "twitter.com", "--control-sni", "example.org"])
        .args(["--probe-cc", "RU", "--probe-asn", "AS64500"])
        .args(["--aggregator", &server.base])
        .args(["--throughput", &target.to_string()])
        .args(["--throughput-pin", &pin])
        .arg("--data-dir")
        .arg(dir.join("probe"));
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vantage");
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .unwrap_or_else(|| panic!("no result line: {stdout}"));
    // Every download went through (nothing throttles loopback), within seconds.
    assert_eq!(line["verdict"], "not_throttled", "{line:#}");
    assert_eq!(line["pairs"].as_array().map(Vec::len), Some(3), "{line:#}");
    assert!(took < Duration::from_secs(15), "the test took {took:?}");

    tokio::time::sleep(HANDSHAKE_DEADLINE + Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for a in attackers {
        a.await.expect("attacker");
    }
    assert_healthy(&server.base).await;
    let attack = Attack {
        took,
        lives: lives.lock().expect("lock").clone(),
    };
    eprintln!(
        "{name}: probe test took {:?}; {} attacker connections from {} sources, {} closed within 1 s, longest {:?}",
        attack.took,
        attack.lives.len(),
        sources.len(),
        attack.closed_within(Duration::from_secs(1)),
        attack.longest()
    );
    attack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sockets_from_one_address_cannot_lock_probes_out_of_the_throttling_test() {
    let attack = attack_throughput_server("attack-throughput-one", &[[127, 0, 0, 2]]).await;
    // Over the source's cap (4): closed at once, on every try.
    let at_once = attack.closed_within(Duration::from_secs(1));
    assert!(
        at_once >= IDLE - 4,
        "{at_once} of {} connections closed at once",
        attack.lives.len()
    );
    // The four it holds are closed by the handshake deadline, then renewed.
    let held = attack.lives.len() - at_once;
    assert!(held >= 4, "{held} connections held to the deadline");
    let longest = attack.longest();
    assert!(
        longest >= HANDSHAKE_DEADLINE - Duration::from_millis(500)
            && longest <= HANDSHAKE_DEADLINE + Duration::from_secs(2),
        "longest idle connection lived {longest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sockets_from_many_addresses_cannot_lock_probes_out_either() {
    // 20 sources at their cap of 4 are more than the server's 64 slots: each newcomer evicts
    // the oldest idle connection, and the probe's connections, which send their request at
    // once, are never the oldest idle ones for long.
    let sources: Vec<[u8; 4]> = (10..30).map(|i| [127, 0, 0, i]).collect();
    let attack = attack_throughput_server("attack-throughput-many", &sources).await;
    // No idle connection outlived the handshake deadline.
    let longest = attack.longest();
    assert!(
        longest <= HANDSHAKE_DEADLINE + Duration::from_secs(2),
        "longest idle connection lived {longest:?}"
    );
    // The server was full: newcomers evicted older idle connections long before the deadline.
    let evicted = attack.closed_within(Duration::from_secs(4));
    assert!(evicted >= IDLE - 64, "{evicted} closed before the deadline");
}

/// A loopback listener counting the connections it accepts.
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, accepted)
}

fn th_request(url: &str, endpoints: &[String]) -> String {
    serde_json::json!({
        "http_request": url,
        "http_request_headers": {},
        "tcp_connect": endpoints,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_request_to_the_test_helper_is_refused_before_any_connection() {
    let (dir, ca) = setup("attack-th-scan");
    // A lab helper, allowed to connect to loopback: only the cap stands between the request
    // and 3,001 connections.
    let server = common::serve(&ca, &dir.join("agg.db"), &[]).await;
    let (target, accepted) = counting_listener().await;

    let scan: Vec<String> = vec![target.to_string(); 3001];
    let body = th_request(&format!("http://{target}/"), &scan);
    assert!(body.len() > 50_000, "{} bytes", body.len());
    let t0 = Instant::now();
    let (status, reply) = post_th(&server.base, body).await;
    let took = t0.elapsed();
    assert_eq!(status, 400, "{reply}");
    let error: Value = serde_json::from_str(&reply).expect("json error");
    let message = error["error"].as_str().expect("error message");
    assert!(
        message.contains("lists 3001 tcp_connect endpoints")
            && message.contains("at most 32 per request"),
        "{message}"
    );
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no connection attempted"
    );
    assert_healthy(&server.base).await;

    // A probe's list at the cap is measured as before.
    let site = HttpFixture::fixed(Response::html("<title>ok</title>")).await;
    let mut list: Vec<String> = vec![site.addr.to_string()];
    list.extend((1..32).map(|i| format!("127.0.0.{}:{}", i + 1, site.addr.port())));
    let (status, reply) = post_th(
        &server.base,
        th_request(&format!("http://{}/", site.addr), &list),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let answer: Value = serde_json::from_str(&reply).expect("json");
    assert_eq!(
        answer["tcp_connect"][site.addr.to_string()]["status"],
        true,
        "{answer:#}"
    );
    assert_eq!(answer["http_request"]["status_code"], 200, "{answer:#}");
    assert_healthy(&server.base).await;
}

/// `vantage-aggregator serve` as deployed: private addresses refused. The helper connects from
/// 127.0.0.2, an IPv4 address no IPv6 socket can bind, so even a broken check could not send a
/// packet to a NAT64 or 6to4 address off this machine; it resolves names with `resolver` (on
/// loopback), so no lookup leaves it either.
fn serve_public(db: &Path, resolver: SocketAddr) -> Server {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--th-local-addr",
            "127.0.0.2",
        ])
        .args([
            "--th-timeout",
            "3",
            "--th-resolver",
            &resolver.to_string(),
            "--db",
        ])
        .arg(db);
    spawn_server(serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_spellings_of_loopback_are_refused_as_loopback() {
    let dir = common::tempdir("attack-th-nat64");
    // The helper's resolver, on loopback: the one name it is asked about does not exist.
    let dns = vantage_fixtures::dns::DnsFixture::start(vec![(
        "unresolvable.example",
        vantage_fixtures::dns::Behaviour::NxDomain,
    )])
    .await;
    let resolver = dns.addr;
    let server = {
        let db = dir.join("agg.db");
        tokio::task::spawn_blocking(move || serve_public(&db, resolver))
            .await
            .expect("join")
    };
    let (target, accepted) = counting_listener().await;
    let port = target.port();
    let forms = [
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::1",
    ];
    let endpoints: Vec<String> = forms.iter().map(|f| format!("[{f}]:{port}")).collect();
    // A URL at loopback, in any spelling, is refused whole: there is nothing the helper may
    // measure, so there is no control (403, not a control whose HTTP "failed").
    for url in [
        format!("http://{target}/"),
        format!("http://[64:ff9b::7f00:1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ] {
        let (status, reply) = post_th(&server.base, th_request(&url, &endpoints)).await;
        assert_eq!(status, 403, "{url}: {reply}");
        assert!(
            reply.contains("does not connect to private or other non-public addresses"),
            "{url}: {reply}"
        );
    }
    // A name that does not exist is measured (NXDOMAIN is the site's answer), and the loopback
    // spellings the probe listed are left out.
    {
        let url = format!("http://unresolvable.example:{port}/");
        let (status, reply) = post_th(&server.base, th_request(&url, &endpoints)).await;
        assert_eq!(status, 200, "{url}: {reply}");
        let answer: Value = serde_json::from_str(&reply).expect("json");
        assert_eq!(
            answer["tcp_connect"],
            serde_json::json!({}),
            "{url}: no endpoint measured: {answer:#}"
        );
        assert_eq!(answer["http_request"]["status_code"], -1, "{answer:#}");
        for f in forms {
            let ip: std::net::IpAddr = f.parse().expect("ip");
            let flags = answer["ip_info"][ip.to_string()]["flags"]
                .as_u64()
                .unwrap_or_else(|| panic!("{url}: no ip_info for {ip}: {answer:#}"));
            assert_eq!(flags & 4, 4, "{url}: {ip} is not flagged a bogon");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "no connection to loopback"
    );
    assert_healthy(&server.base).await;
}
