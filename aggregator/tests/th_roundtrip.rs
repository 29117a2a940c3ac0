//! A control round trip on loopback with the real binaries: fixture sites, the aggregator's test
//! helper (connecting from 127.0.0.2, a different "network"), `vantage measure --th`, and
//! `vantage-aggregator score` on what the probe printed.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tcp::closed_port;
use vantage_fixtures::tls::{TestCa, TlsFixture};

mod common;

use common::{AGGREGATOR, start_aggregator, vantage};

/// The probe's address on loopback; the helper connects from 127.0.0.2.
const PROBE_NET: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Measures `url` through the helper and scores the result with `rules`.
fn measure_and_score(dir: &Path, th: &str, ca: &Path, url: &str, rules: &str) -> (Value, Value) {
    let out = Command::new(vantage())
        .args([
            "measure",
            "--compact",
            "--timeout",
            "3",
            "--th",
            th,
            "--ca-file",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .expect("run vantage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let measurement: Value = serde_json::from_slice(&out.stdout).expect("measurement JSON");
    let file = dir.join(format!(
        "m-{}.jsonl",
        url.len() + rules.len() + url.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::write(&file, &out.stdout).expect("write");
    let out = Command::new(AGGREGATOR)
        .args(["score", "--rules", rules])
        .arg(&file)
        .output()
        .expect("run score");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        measurement,
        serde_json::from_slice(&out.stdout).expect("verdict JSON"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn control_tells_censorship_from_a_site_that_is_down() {
    let dir = std::env::temp_dir().join(format!("vantage-th-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = TestCa::new("Vantage Test CA");
    let ca_path = dir.join("ca.pem");
    ca.write_pem(&ca_path);
    let page: vantage_fixtures::http::Handler =
        Arc::new(|_| Response::html("<html><title>The real site</title><p>news</p></html>"));

    let open = HttpFixture::start(page.clone()).await;
    let http_censored = HttpFixture::censoring(PROBE_NET, page.clone()).await;
    let tls_censored = TlsFixture::censoring(&ca.leaf(&["127.0.0.1"]), PROBE_NET, page).await;
    let down = closed_port();

    let server = tokio::task::spawn_blocking({
        let ca_path = ca_path.clone();
        move || start_aggregator(&ca_path)
    })
    .await
    .expect("join");
    let th = server.th.clone();

    let cases = [
        (
            format!("http://127.0.0.1:{}/", open.addr.port()),
            "vantage",
            Value::Bool(false),
            Value::Bool(true),
        ),
        (
            format!("http://127.0.0.1:{}/", http_censored.addr.port()),
            "vantage",
            "http-failure".into(),
            Value::Bool(false),
        ),
        (
            format!("https://127.0.0.1:{}/", tls_censored.addr.port()),
            "vantage",
            "tls".into(),
            Value::Bool(false),
        ),
        (
            format!("https://127.0.0.1:{}/", tls_censored.addr.port()),
            "ooni",
            "http-failure".into(),
            Value::Bool(false),
        ),
        (
            format!("http://127.0.0.1:{}/", down.port()),
            "vantage",
            Value::Bool(false),
            Value::Bool(false),
        ),
    ];
    for (url, rules, blocking, accessible) in cases {
        let (dir, th, ca_path) = (dir.clone(), th.clone(), ca_path.clone());
        let u = url.clone();
        let (m, verdict) =
            tokio::task::spawn_blocking(move || measure_and_score(&dir, &th, &ca_path, &u, rules))
                .await
                .expect("join");
        let tk = &m["test_keys"];
        assert_eq!(
            tk["control_failure"],
            Value::Null,
            "{url}: {}",
            tk["control_failure"]
        );
        assert!(tk["control"].is_object(), "{url}");
        assert_eq!(tk["x_control_request"]["http_request"], url);
        // The passive throttling signal: how the page arrived, for the probe and for the
        // helper, whenever a response came.
        let control_transfer = &tk["control"]["http_request"]["x_transfer"];
        let probe_transfer = &tk["requests"][0]["response"]["x_transfer"];
        for (who, t) in [("helper", control_transfer), ("probe", probe_transfer)] {
            let (status, length) = if who == "helper" {
                let r = &tk["control"]["http_request"];
                (r["status_code"].clone(), r["body_length"].clone())
            } else {
                let r = &tk["requests"][0]["response"];
                (r["code"].clone(), r["x_body_length"].clone())
            };
            if status == 200 {
                assert!(t["ttfb_ms"].is_u64(), "{url} {who}: {t}");
                let last = t["samples"].as_array().and_then(|s| s.last().cloned());
                assert_eq!(
                    last.map(|s| s[1].clone()),
                    Some(length),
                    "{url} {who}: the whole page: {t}"
                );
            }
        }
        assert_eq!(verdict["blocking"], blocking, "{url} ({rules}): {verdict}");
        assert_eq!(
            verdict["accessible"], accessible,
            "{url} ({rules}): {verdict}"
        );
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_helper_is_a_control_failure_not_a_verdict() {
    let site = HttpFixture::fixed(Response::html("<title>x</title>")).await;
    let th = format!("http://127.0.0.1:{}/api/v1/th", closed_port().port());
    let url = format!("http://127.0.0.1:{}/", site.addr.port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(vantage())
            .args(["measure", "--compact", "--th", &th, &url])
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join");
    assert!(out.status.success());
    let m: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(m["test_keys"]["control_failure"], "connection_refused");
    assert_eq!(m["test_keys"]["control"], Value::Null);
    assert_eq!(m["test_keys"]["requests"][0]["response"]["code"], 200);
}

#[test]
fn helper_rejects_malformed_requests() {
    let dir = std::env::temp_dir().join(format!("vantage-th-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = TestCa::new("unused");
    ca.write_pem(&dir.join("ca.pem"));
    let server = start_aggregator(&dir.join("ca.pem"));
    let base = server
        .th
        .trim_end_matches("/api/v1/th")
        .trim_start_matches("http://")
        .to_string();
    let post = |body: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&base).expect("connect");
        write!(
            s,
            "POST /api/v1/th HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("read");
        reply
    };
    let reply = post("{not json");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("malformed THRequest"), "{reply}");
    let reply =
        post(r#"{"http_request":"gopher://x/","http_request_headers":{},"tcp_connect":[]}"#);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("unsupported URL scheme"), "{reply}");
    let big = format!(r#"{{"http_request":"{}"}}"#, "a".repeat(100_000));
    let reply = post(&big);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}
