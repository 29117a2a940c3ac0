//! What each new test costs per run (`benches/tests_cost.sh`): the real `vantage` binary runs
//! `--test whatsapp|telegram|signal|facebook_messenger` once against loopback servers shaped like
//! the built-in `test-lists/apps.toml` (16 WhatsApp endpoints on two ports, six Telegram data
//! centres on two ports, Signal's four backends plus its uptime host, Facebook's seven names),
//! `--test dnscheck` against five DoH and five DoT servers shaped like `test-lists/resolvers.toml`
//! (one or two addresses each), and `--test quic` against the 20 https hosts of the built-in
//! global list (a quinn server beside a TCP/TLS one); every one of them answering, then once
//! with every endpoint dropping connects (and, for QUIC, datagrams).
//! Ignored by default: it is a benchmark, run with `--ignored --nocapture`; it still asserts
//! that each run worked (or, silent, found the app blocked) so that a broken harness cannot
//! print numbers.
//!
//! Bytes are the daemon's own charge against its daily budget, read from the stored
//! measurements: for the apps (`apps::traffic_bytes`) the response bodies recorded plus the
//! measurement's JSON, for dnscheck and quic the measurement's JSON (which records the
//! certificates the handshakes received). The signed size is the envelope `vantage results
//! show` prints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use vantage_fixtures::dns::{Behaviour, DnsFixture, respond};
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tls::{Leaf, TestCa, TlsFixture};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The daemon's default daily traffic budget (`[budget] daily_megabytes`, docs/apps.md).
const DAILY_BUDGET_BYTES: u64 = 200_000_000;
/// The daemon's default `[apps] every_seconds`: once a day.
const RUNS_PER_DAY: u64 = 1;

const FACEBOOK_NAMES: [&str; 7] = [
    "stun.fbsbx.com",
    "b-api.facebook.com",
    "b-graph.facebook.com",
    "edge-mqtt.facebook.com",
    "external.xx.fbcdn.net",
    "scontent.xx.fbcdn.net",
    "star.c10r.facebook.com",
];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-cost-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn vantage(args: Vec<String>) -> (Output, Duration) {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = Command::new(VANTAGE)
            .args(&args)
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_SOCKS5")
            .stdin(Stdio::null())
            .output()
            .expect("run vantage");
        (out, start.elapsed())
    })
    .await
    .expect("join")
}

/// One run's numbers.
struct Cost {
    wall: Duration,
    charged: u64,
    signed: u64,
    connects: usize,
    blocking: String,
}

async fn run_once(
    test: &str,
    dir: &Path,
    file: &str,
    dns: SocketAddr,
    ca: &TestCa,
    timeout: Option<&str>,
) -> Cost {
    let apps = dir.join("apps.toml");
    std::fs::write(&apps, file).expect("write apps file");
    let ca_file = dir.join("ca.pem");
    ca.write_pem(&ca_file);
    let data = dir.join("data").display().to_string();
    let args: Vec<String> = [
        "run",
        "--test",
        test,
        "--apps-file",
        &apps.display().to_string(),
        "--resolver",
        &dns.to_string(),
        "--ca-file",
        &ca_file.display().to_string(),
        "--probe-cc",
        "ZZ",
        "--probe-asn",
        "AS0",
        "--json",
        "--yes",
        "--no-upload",
        "--data-dir",
        &data,
    ]
    .map(String::from)
    .to_vec();
    let mut args = args;
    if let Some(t) = timeout {
        args.extend(["--timeout", t, "--dns-timeout", t].map(String::from));
    }
    let (out, wall) = vantage(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{test}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let id = line["id"].as_str().expect("id").to_string();
    let (shown, _) = vantage(vec![
        "results".into(),
        "show".into(),
        id,
        "--data-dir".into(),
        data,
    ])
    .await;
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.status.success(), "show: {text}");
    let (start, end) = (
        text.find('{').expect("JSON in show"),
        text.rfind('}').expect("end"),
    );
    let envelope: Value = serde_json::from_str(&text[start..=end]).expect("show prints JSON");
    let m = envelope.get("measurement").unwrap_or(&envelope);
    let tk = &m["test_keys"];
    let bodies: u64 = tk["requests"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["response"]["x_body_length"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let measurement = serde_json::to_string(m).expect("json").len() as u64;
    let signed = serde_json::to_string(&envelope).expect("json").len() as u64;
    Cost {
        wall,
        charged: bodies + measurement,
        signed,
        connects: tk["tcp_connect"].as_array().map_or(0, Vec::len),
        blocking: line["blocking"].to_string().trim_matches('"').to_string(),
    }
}

/// The apps file: every section shaped like the built-in one, pointed at `port_a`/`port_b`
/// (the two ports of WhatsApp's endpoints and Telegram's data centres) and `https` (every
/// URL).
fn apps_file(ca_pem: &str, port_a: u16, port_b: u16, https: u16, fb_port: u16) -> String {
    let endpoints: Vec<String> = (1..=16).map(|i| format!("\"e{i}.wa.test\"")).collect();
    let access: Vec<String> = (2..=7).map(|i| format!("\"127.0.0.{i}\"")).collect();
    format!(
        "[whatsapp]\nendpoints = [{}]\nports = [{port_a}, {port_b}]\n\
         registration_url = \"https://v.wa.test:{https}/v2/register\"\n\
         web_url = \"https://web.wa.test:{https}/\"\n\n\
         [telegram]\naccess_points = [{}]\nports = [{port_a}, {port_b}]\n\
         web_url = \"https://web.telegram.org:{https}/\"\n\n\
         [signal]\nurls = [\"https://cdsi.signal.test:{https}/\", \"https://chat.signal.test:{https}/\", \
         \"https://sfu.voip.signal.test:{https}/\", \"https://storage.signal.test:{https}/\"]\n\
         uptime_host = \"uptime.signal.test\"\nca_pem = [\"\"\"\n{ca_pem}\"\"\"]\n\n\
         [facebook_messenger]\nport = {fb_port}\nnetblocks = [\"127.0.0.0/8\"]\n",
        endpoints.join(", "),
        access.join(", "),
    )
}

fn dns_table() -> Vec<(String, Behaviour)> {
    let mut names: Vec<String> = (1..=16).map(|i| format!("e{i}.wa.test")).collect();
    names.extend(
        [
            "v.wa.test",
            "web.wa.test",
            "web.telegram.org",
            "cdsi.signal.test",
            "chat.signal.test",
            "sfu.voip.signal.test",
            "storage.signal.test",
            "uptime.signal.test",
        ]
        .map(String::from),
    );
    names.extend(FACEBOOK_NAMES.map(String::from));
    names
        .into_iter()
        .map(|n| (n, Behaviour::Answer(vec![LOOPBACK])))
        .collect()
}

/// Binds an HTTP fixture on 127.0.0.1..=127.0.0.7 at one port (Telegram's data centres share
/// their ports), retrying with another port when one of the addresses has it taken.
async fn http_on_all(addresses: u8) -> (u16, Vec<HttpFixture>) {
    'port: for _ in 0..20 {
        let first = HttpFixture::fixed(Response::html("")).await;
        let port = first.addr.port();
        let mut all = vec![first];
        for i in 2..=addresses {
            let addr: SocketAddr = (Ipv4Addr::new(127, 0, 0, i), port).into();
            if std::net::TcpListener::bind(addr).is_err() {
                continue 'port;
            }
            all.push(
                HttpFixture::start_on(addr, std::sync::Arc::new(|_| Response::html(""))).await,
            );
        }
        return (port, all);
    }
    panic!("no port free on 127.0.0.1..=127.0.0.{addresses}");
}

/// A port on 127.0.0.1..=127.0.0.`addresses` whose connects never complete, as when a censor
/// drops the SYNs: a listener with a backlog of 0 that never accepts, its queue filled by one
/// held connection, so that the kernel drops every further SYN (Linux, `listen(2)`). Returns
/// the port and what must stay alive.
async fn dropping_on_all(addresses: u8) -> (u16, Vec<(TcpListener, TcpStream)>) {
    'port: for _ in 0..20 {
        let mut held = Vec::new();
        let mut port = 0;
        for i in 1..=addresses {
            let ip = Ipv4Addr::new(127, 0, 0, i);
            let socket = TcpSocket::new_v4().expect("socket");
            if socket.bind((ip, port).into()).is_err() {
                continue 'port;
            }
            let listener = socket.listen(0).expect("listen");
            let addr = listener.local_addr().expect("addr");
            port = addr.port();
            let filler = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr))
                .await
                .expect("the first connect fills the queue")
                .expect("connect");
            held.push((listener, filler));
        }
        return (port, held);
    }
    panic!("no port free on 127.0.0.1..=127.0.0.{addresses}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: benches/tests_cost.sh"]
async fn cost_of_each_app_test() {
    let ca = TestCa::new("Cost CA");
    let names: Vec<String> = dns_table().into_iter().map(|(n, _)| n).collect();
    let leaf = ca.leaf(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let https = TlsFixture::fixed(&leaf, Response::html("<title>ok</title>")).await;
    let (port_a, _a) = http_on_all(7).await;
    let (port_b, _b) = http_on_all(7).await;
    let table = dns_table();
    let dns = DnsFixture::start(table.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()).await;
    let (s, _dropping) = dropping_on_all(7).await;
    let answering = apps_file(&ca.pem(), port_a, port_b, https.addr.port(), port_a);
    let dropped = apps_file(&ca.pem(), s, s, s, s);
    header("connects");
    for test in ["whatsapp", "telegram", "signal", "facebook_messenger"] {
        let ok = run_once(test, &temp_dir(test), &answering, dns.addr, &ca, None).await;
        assert_eq!(
            ok.blocking, "false",
            "{test}: answering servers must be reachable"
        );
        let dir = temp_dir(&format!("{test}-dropped"));
        let blocked = run_once(test, &dir, &dropped, dns.addr, &ca, None).await;
        assert_ne!(
            blocked.blocking, "false",
            "{test}: dropped endpoints must be blocked"
        );
        let daily = ok.charged * RUNS_PER_DAY;
        println!(
            "{test:<20} {:>12} {:>10} {:>9} {:>9} | {:>13.1}  {:<8} | {:>7} {:>7.3}",
            ok.wall.as_millis(),
            ok.charged,
            ok.signed,
            ok.connects,
            blocked.wall.as_secs_f64(),
            blocked.blocking,
            daily,
            daily as f64 * 100.0 / DAILY_BUDGET_BYTES as f64,
        );
    }
}

/// Every result in a data directory: (the measurement's JSON size, the envelope's size).
async fn stored(data: &Path) -> Vec<(u64, u64)> {
    let d = data.display().to_string();
    let (out, _) = vantage(
        [
            "results",
            "list",
            "--json",
            "--limit",
            "1000",
            "--data-dir",
            &d,
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sizes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: Value = serde_json::from_str(line).expect("json line");
        let id = row["id"].as_str().expect("id").to_string();
        let (shown, _) = vantage(vec![
            "results".into(),
            "show".into(),
            id,
            "--data-dir".into(),
            d.clone(),
        ])
        .await;
        let text = String::from_utf8_lossy(&shown.stdout).into_owned();
        let (start, end) = (text.find('{').expect("JSON"), text.rfind('}').expect("end"));
        let envelope: Value = serde_json::from_str(&text[start..=end]).expect("show prints JSON");
        let m = envelope.get("measurement").unwrap_or(&envelope);
        sizes.push((
            serde_json::to_string(m).expect("json").len() as u64,
            serde_json::to_string(&envelope).expect("json").len() as u64,
        ));
    }
    sizes
}

/// Runs `vantage run` with `args` (plus the probe's location and data directory); returns the
/// wall time, the JSON lines and the results kept.
async fn run_args(dir: &Path, args: &[String]) -> (Duration, Vec<Value>, Vec<(u64, u64)>) {
    let data = dir.join("data");
    let mut all: Vec<String> = [
        "run",
        "--probe-cc",
        "ZZ",
        "--probe-asn",
        "AS0",
        "--json",
        "--yes",
        "--no-upload",
    ]
    .map(String::from)
    .to_vec();
    all.extend(args.iter().cloned());
    all.extend(["--data-dir".to_string(), data.display().to_string()]);
    let (out, wall) = vantage(all).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (wall, lines, stored(&data).await)
}

fn server_tls(leaf: &Leaf, dir: &Path, alpn: &[u8], tls13_only: bool) -> rustls::ServerConfig {
    let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
    leaf.write_pem(&chain, &key);
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .expect("server cert");
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}

/// A DNS-over-TLS server (RFC 7858: two-byte length, then the message) answering from
/// `table` as the UDP fixture does.
async fn dot_server(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    table: Arc<Vec<(String, Behaviour)>>,
) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("bind DoT");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, table) = (acceptor.clone(), table.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(stream).await else {
                    return;
                };
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    let Ok(q) = hickory_proto::op::Message::from_vec(&buf) else {
                        return;
                    };
                    for (_, reply) in respond(&q, &table) {
                        let n = u16::try_from(reply.len()).expect("short reply");
                        if s.write_all(&n.to_be_bytes()).await.is_err()
                            || s.write_all(&reply).await.is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    })
}

/// A DoH server (RFC 8484) on `addr`, answering from `table`.
async fn doh_on(addr: SocketAddr, leaf: &Leaf, table: Arc<Vec<(String, Behaviour)>>) -> TlsFixture {
    TlsFixture::start_on(
        addr,
        leaf,
        Arc::new(move |req| {
            match hickory_proto::op::Message::from_vec(&req.body)
                .ok()
                .and_then(|q| respond(&q, &table).into_iter().next())
            {
                Some((_, body)) => Response {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/dns-message".into())],
                    body,
                },
                None => Response {
                    status: 400,
                    headers: vec![],
                    body: b"bad query".to_vec(),
                },
            }
        }),
    )
    .await
}

/// A resolvers file shaped like `test-lists/resolvers.toml`: five DoH and five DoT resolvers,
/// bootstrapped by name except one DoT by address, with one or two more addresses each.
fn resolvers_file(doh: u16, dot: u16) -> String {
    let mut text = String::new();
    for (i, extra) in [2, 2, 2, 2, 1].into_iter().enumerate() {
        let addresses: Vec<String> = (0..extra)
            .map(|a| format!("\"127.0.0.{}\"", a + 1))
            .collect();
        text.push_str(&format!(
            "[[resolver]]\nurl = \"https://doh{i}.test:{doh}/dns-query\"\naddresses = [{}]\n\n",
            addresses.join(", ")
        ));
        if i == 0 {
            text.push_str(&format!(
                "[[resolver]]\nurl = \"dot://127.0.0.1:{dot}/\"\nsni = \"dot0.test\"\n\n"
            ));
        } else {
            text.push_str(&format!(
                "[[resolver]]\nurl = \"dot://dot{i}.test:{dot}/\"\naddresses = [{}]\n\n",
                addresses.join(", ")
            ));
        }
    }
    text
}

fn header(count: &str) {
    // A line of its own: the harness's own "test ... " or "." precedes the first one.
    println!(
        "\ntest                 answering_ms  charged_B  signed_B {count:>9} | all_dropped_s  blocking | daily_B  %budget"
    );
}

fn report(test: &str, ok: (Duration, &[(u64, u64)]), dropped: Duration, blocked: &str) {
    let charged: u64 = ok.1.iter().map(|s| s.0).sum();
    let signed: u64 = ok.1.iter().map(|s| s.1).sum();
    let daily = charged * RUNS_PER_DAY;
    println!(
        "{test:<20} {:>12} {:>10} {:>9} {:>9} | {:>13.1}  {:<8} | {:>7} {:>7.3}",
        ok.0.as_millis(),
        charged,
        signed,
        ok.1.len(),
        dropped.as_secs_f64(),
        blocked,
        daily,
        daily as f64 * 100.0 / DAILY_BUDGET_BYTES as f64,
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: benches/tests_cost.sh"]
async fn cost_of_dnscheck_and_quic() {
    let ca = TestCa::new("Cost CA");
    let dir = temp_dir("servers");
    let ca_file = dir.join("ca.pem");
    ca.write_pem(&ca_file);
    let mut names: Vec<String> = (0..5)
        .flat_map(|i| [format!("doh{i}.test"), format!("dot{i}.test")])
        .collect();
    let hosts: Vec<String> = (1..=20).map(|i| format!("site{i}.quic.test")).collect();
    names.extend(hosts.iter().cloned());
    let leaf = ca.leaf(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let table: Vec<(String, Behaviour)> = names
        .iter()
        .map(|n| (n.clone(), Behaviour::Answer(vec![LOOPBACK])))
        .chain([(
            "example.org".to_string(),
            Behaviour::Answer(vec![Ipv4Addr::new(192, 0, 2, 7)]),
        )])
        .collect();
    let dns = DnsFixture::start(table.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()).await;
    let table = Arc::new(table);

    // DoH and DoT on 127.0.0.1 and 127.0.0.2, one port each.
    let doh1 = doh_on((LOOPBACK, 0).into(), &leaf, table.clone()).await;
    let doh_port = doh1.addr.port();
    let _doh2 = doh_on(
        (Ipv4Addr::new(127, 0, 0, 2), doh_port).into(),
        &leaf,
        table.clone(),
    )
    .await;
    let dot_tls = Arc::new(server_tls(&leaf, &dir, b"dot", false));
    let dot_port = std::net::TcpListener::bind((LOOPBACK, 0))
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let _dot1 = dot_server((LOOPBACK, dot_port).into(), dot_tls.clone(), table.clone()).await;
    let _dot2 = dot_server(
        (Ipv4Addr::new(127, 0, 0, 2), dot_port).into(),
        dot_tls,
        table.clone(),
    )
    .await;
    let (dropping, _held) = dropping_on_all(2).await;
    // Datagrams to the dropping port are read by nobody, as when UDP 443 is dropped.
    let _udp_sink = std::net::UdpSocket::bind((LOOPBACK, dropping)).expect("udp sink");

    // QUIC and TCP/TLS on one port for all 20 hosts.
    let https = TlsFixture::fixed(&leaf, Response::html("<title>ok</title>")).await;
    let quic_tls =
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls(&leaf, &dir, b"h3", true))
            .expect("quic tls");
    let quic = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(quic_tls)),
        https.addr,
    )
    .expect("quic server");
    let server = quic.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });

    let common = || -> Vec<String> {
        vec![
            "--resolver".into(),
            dns.addr.to_string(),
            "--ca-file".into(),
            ca_file.display().to_string(),
        ]
    };

    header("results");
    // dnscheck
    let mut ok_args = common();
    let ok_dir = temp_dir("dnscheck");
    let file = ok_dir.join("resolvers.toml");
    std::fs::write(&file, resolvers_file(doh_port, dot_port)).expect("resolvers");
    ok_args.extend([
        "--test".into(),
        "dnscheck".into(),
        "--resolvers-file".into(),
        file.display().to_string(),
    ]);
    let (wall, lines, sizes) = run_args(&ok_dir, &ok_args).await;
    assert_eq!(sizes.len(), 10, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l["blocking"] == false || l["blocking"].is_null()),
        "all working: {lines:?}"
    );
    let bad_dir = temp_dir("dnscheck-dropped");
    let bad_file = bad_dir.join("resolvers.toml");
    std::fs::write(&bad_file, resolvers_file(dropping, dropping)).expect("resolvers");
    let mut bad_args = common();
    bad_args.extend([
        "--test".into(),
        "dnscheck".into(),
        "--resolvers-file".into(),
        bad_file.display().to_string(),
    ]);
    let (dropped, bad_lines, _) = run_args(&bad_dir, &bad_args).await;
    assert!(
        bad_lines.iter().all(|l| l["blocking"].is_string()),
        "all blocked: {bad_lines:?}"
    );
    report(
        "dnscheck (10)",
        (wall, &sizes),
        dropped,
        bad_lines[0]["blocking"].as_str().unwrap_or("?"),
    );

    // quic
    let list = |port: u16, path: &Path| {
        let mut text =
            "url,category_code,category_description,date_added,source,notes\n".to_string();
        for h in &hosts {
            text.push_str(&format!("https://{h}:{port}/,NEWS,News,2026,test,\n"));
        }
        std::fs::write(path, text).expect("list");
    };
    let ok_dir = temp_dir("quic");
    list(https.addr.port(), &ok_dir.join("list.csv"));
    let mut ok_args = common();
    ok_args.extend([
        "--test".into(),
        "quic".into(),
        "--list".into(),
        ok_dir.join("list.csv").display().to_string(),
    ]);
    let (wall, lines, sizes) = run_args(&ok_dir, &ok_args).await;
    assert_eq!(sizes.len(), 20, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["verdict"] == "accessible"),
        "{lines:?}"
    );
    let bad_dir = temp_dir("quic-dropped");
    list(dropping, &bad_dir.join("list.csv"));
    let mut bad_args = common();
    bad_args.extend([
        "--test".into(),
        "quic".into(),
        "--list".into(),
        bad_dir.join("list.csv").display().to_string(),
    ]);
    let (dropped, bad_lines, _) = run_args(&bad_dir, &bad_args).await;
    assert!(
        bad_lines.iter().all(|l| l["verdict"] == "host-blocked"),
        "{bad_lines:?}"
    );
    report("quic (20 hosts)", (wall, &sizes), dropped, "host-blocked");
}
