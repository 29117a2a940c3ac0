//! What each app test costs per run (`benches/tests_cost.sh`): the real `vantage` binary runs
//! `--test whatsapp|telegram|signal|facebook_messenger` once against loopback servers shaped like
//! the built-in `test-lists/apps.toml` (16 WhatsApp endpoints on two ports, six Telegram data
//! centres on two ports, Signal's four backends plus its uptime host, Facebook's seven names),
//! every one of them answering, then once with every server accepting and never answering.
//! Ignored by default: it is a benchmark, run with `--ignored --nocapture`; it still asserts
//! that each run worked (or, silent, found the app blocked) so that a broken harness cannot
//! print numbers.
//!
//! Bytes are the daemon's own charge against its daily budget (`apps::traffic_bytes`: the
//! response bodies recorded in the measurement plus the measurement's JSON), read from the
//! stored measurement; the signed size is the envelope `vantage results show` prints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tls::{TestCa, TlsFixture};

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
    println!(
        "Per run, engine's default timeouts; bytes = the daemon's charge (response bodies in the records + measurement JSON)."
    );
    println!(
        "test                 answering_ms  charged_B  signed_B  connects | all_dropped_s  blocking | daily_B  %budget"
    );
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
