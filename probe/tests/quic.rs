//! `vantage run --test quic` as a user runs it: the real binary, a list of https URLs whose
//! names a real UDP DNS server answers with 127.0.0.1, and per host what a censor leaves: a
//! real quinn server beside a TCP+TLS one (accessible), a TCP+TLS server whose UDP port
//! swallows every datagram (QUIC blocked), nothing on either (host blocked). Certificates are
//! made here for each name; nothing leaves loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::Response;
use vantage_fixtures::tcp::closed_port;
use vantage_fixtures::tls::{Leaf, TestCa, TlsFixture};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-quic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn vantage(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(VANTAGE)
            .args(&args)
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_PROBE_CC")
            .env_remove("VANTAGE_PROBE_ASN")
            .env_remove("VANTAGE_SOCKS5")
            .stdin(Stdio::null())
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join")
}

/// A QUIC server (ALPN h3) on `addr`'s UDP port completing handshakes with `leaf`.
fn quic_server(leaf: &Leaf, addr: SocketAddr, dir: &std::path::Path) -> quinn::Endpoint {
    let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
    leaf.write_pem(&chain, &key);
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .expect("server cert");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), addr)
            .expect("quic server");
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_open_dropped_and_gone_are_told_apart_and_kept() {
    let dir = temp_dir("run");
    let ca = TestCa::new("quic cli ca");
    let ca_file = dir.join("ca.pem");
    ca.write_pem(&ca_file);
    let site = |name: &str| Response::html(&format!("<p>{name}</p>"));

    let open_leaf = ca.leaf(&["open.quic.test"]);
    let open_tcp = TlsFixture::fixed(&open_leaf, site("open")).await;
    let _open_quic = quic_server(&open_leaf, open_tcp.addr, &dir);

    let dropped_tcp = TlsFixture::fixed(&ca.leaf(&["dropped.quic.test"]), site("dropped")).await;
    // Bound and never read: every QUIC datagram to this port is lost, as when UDP 443 is dropped.
    let _sink = std::net::UdpSocket::bind(dropped_tcp.addr).expect("udp sink");

    let gone = closed_port();

    let dns = DnsFixture::start(
        ["open.quic.test", "dropped.quic.test", "gone.quic.test"]
            .into_iter()
            .map(|n| (n, Behaviour::Answer(vec![Ipv4Addr::LOCALHOST])))
            .collect(),
    )
    .await;
    let list = dir.join("list.csv");
    std::fs::write(
        &list,
        format!(
            "url,category_code,category_description,date_added,source,notes\n\
             https://open.quic.test:{}/,NEWS,News,2024,x,\n\
             https://dropped.quic.test:{}/,NEWS,News,2024,x,\n\
             https://dropped.quic.test:{}/another-page,NEWS,News,2024,x,\n\
             https://gone.quic.test:{}/,NEWS,News,2024,x,\n\
             http://plain.quic.test/,NEWS,News,2024,x,\n",
            open_tcp.addr.port(),
            dropped_tcp.addr.port(),
            dropped_tcp.addr.port(),
            gone.port()
        ),
    )
    .expect("list");
    let data = dir.join("data").display().to_string();
    let args = |json: bool| {
        let mut a: Vec<String> = [
            "run",
            "--test",
            "quic",
            "--list",
            &list.display().to_string(),
            "--resolver",
            &dns.addr.to_string(),
            "--ca-file",
            &ca_file.display().to_string(),
            "--timeout",
            "1",
            "--dns-timeout",
            "2",
            "--probe-cc",
            "ZZ",
            "--probe-asn",
            "AS0",
            "--yes",
            "--data-dir",
            &data,
        ]
        .map(String::from)
        .to_vec();
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = vantage(args(true)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // One per host and port; the http URL and the second page of a host are not measured.
    assert_eq!(lines.len(), 3, "{stdout}");
    let verdict_of = |host: &str| {
        lines
            .iter()
            .find(|l| l["input"].as_str().is_some_and(|i| i.contains(host)))
            .unwrap_or_else(|| panic!("{host} in {stdout}"))
            .clone()
    };
    let open = verdict_of("open.quic.test");
    assert_eq!(open["verdict"], "accessible", "{open}");
    let dropped = verdict_of("dropped.quic.test");
    assert_eq!(dropped["verdict"], "quic-blocked", "{dropped}");
    assert_eq!(
        dropped["quic_failure"], "generic_timeout_error",
        "{dropped}"
    );
    assert_eq!(dropped["layer"], "tcp_ip", "{dropped}");
    let gone_line = verdict_of("gone.quic.test");
    assert_eq!(gone_line["verdict"], "host-blocked", "{gone_line}");
    assert_eq!(
        gone_line["tcp_tls_failure"], "connection_refused",
        "{gone_line}"
    );

    // The stored, signed measurement of the dropped host, as `vantage results show` prints it.
    let shown = vantage(vec![
        "results".into(),
        "show".into(),
        dropped["id"].as_str().expect("id").into(),
        "--data-dir".into(),
        data.clone(),
    ])
    .await;
    let text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.status.success(), "{text}");
    let start = text.find('{').expect("JSON in show");
    let end = text.rfind('}').expect("JSON end");
    let shown: Value = serde_json::from_str(&text[start..=end]).expect("show JSON");
    let m = shown.get("measurement").cloned().unwrap_or(shown);
    assert_eq!(m["test_name"], "quic", "{m}");
    let k = &m["test_keys"];
    assert_eq!(k["quic_blocking"], "quic-blocked");
    assert_eq!(k["queries"][0]["hostname"], "dropped.quic.test", "{k}");
    let q = &k["quic_handshakes"][0];
    assert_eq!(q["network"], "udp", "{q}");
    assert_eq!(q["server_name"], "dropped.quic.test", "{q}");
    assert_eq!(q["address"], dropped_tcp.addr.to_string(), "{q}");
    assert_eq!(q["failure"], "generic_timeout_error", "{q}");
    let t = &k["tls_handshakes"][0];
    assert_eq!(
        (&t["network"], &t["failure"]),
        (&"tcp".into(), &Value::Null),
        "{t}"
    );

    // Without --json: one line per host and a summary.
    let out = vantage(args(false)).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("QUIC BLOCKED"), "{stdout}");
    assert!(
        stdout.contains(
            "1 accessible over QUIC, 1 QUIC blocked (TCP/TLS works), 1 unreachable on both"
        ),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_without_https_is_refused_before_measuring() {
    let dir = temp_dir("nohttps");
    let list = dir.join("list.csv");
    std::fs::write(
        &list,
        "url,category_code,category_description,date_added,source,notes\n\
         http://plain.quic.test/,NEWS,News,2024,x,\n",
    )
    .expect("list");
    let out = vantage(
        [
            "run",
            "--test",
            "quic",
            "--list",
            &list.display().to_string(),
            "--yes",
            "--data-dir",
            &dir.join("data").display().to_string(),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("no https URL in the list"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
