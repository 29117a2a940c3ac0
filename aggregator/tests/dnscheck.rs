//! dnscheck end to end: the real `vantage run --test dnscheck` checks a working DoH resolver
//! and a DoT resolver whose handshake is reset (as an SNI filter does), on loopback, uploads to
//! the real `serve`, and the aggregator stores each with the verdict its dnscheck rule gives.

mod common;

use std::process::Command;

use common::{fresh_aggregator, http, vantage};
use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::tcp::ResetListener;
use vantage_fixtures::tls::{TestCa, TlsFixture};

/// The results of a search, as (input, blocking, accessible, rule_set).
fn search(base: &str, filters: &str) -> Vec<(String, Value, Value, Value)> {
    let (status, body) = http(
        base,
        "GET",
        &format!("/api/v1/measurements?{filters}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{filters}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let mut rows: Vec<_> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["input"].as_str().unwrap_or_default().to_string(),
                r["blocking"].clone(),
                r["accessible"].clone(),
                r["rule_set"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dnscheck_results_are_uploaded_and_scored_by_the_aggregator() {
    let (server, dir, _db) = fresh_aggregator("dnscheck").await;
    let ca = TestCa::new("resolvers CA");
    let ca_path = dir.join("resolvers-ca.pem");
    ca.write_pem(&ca_path);
    let doh = TlsFixture::doh(
        &ca.leaf(&["doh.test"]),
        vec![(
            "example.org",
            Behaviour::Answer(vec![[93, 184, 216, 34].into()]),
        )],
    )
    .await;
    // The engine's normal DNS (--resolver) bootstraps the DoH resolver's name.
    let bootstrap = DnsFixture::start(vec![(
        "doh.test",
        Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
    )])
    .await;
    let reset = ResetListener::start().await;
    let doh_url = format!("https://doh.test:{}/dns-query", doh.addr.port());
    let dot_url = format!("dot://{}/", reset.addr);
    let resolvers = dir.join("resolvers.toml");
    std::fs::write(
        &resolvers,
        format!(
            "[[resolver]]\nurl = \"{doh_url}\"\noperator = \"loopback DoH\"\n\n\
             [[resolver]]\nurl = \"{dot_url}\"\nsni = \"dot.test\"\n"
        ),
    )
    .expect("write resolvers");

    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--test", "dnscheck", "--yes", "--json"])
        .arg("--resolvers-file")
        .arg(&resolvers)
        .args(["--resolver", &bootstrap.addr.to_string()])
        .arg("--ca-file")
        .arg(&ca_path)
        .args(["--timeout", "3", "--dns-timeout", "2"])
        .args(["--probe-cc", "IR", "--probe-asn", "AS64500"])
        .args(["--aggregator", &server.base])
        .arg("--data-dir")
        .arg(dir.join("probe"));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}\n{stderr}");
    let (doh_line, dot_line) = (&lines[0], &lines[1]);
    assert_eq!(doh_line["input"], doh_url.as_str());
    assert_eq!(doh_line["accessible"], true, "{doh_line:#}");
    assert_eq!(doh_line["lookups"][0]["answers"][0], "93.184.216.34");
    assert_eq!(dot_line["input"], dot_url.as_str());
    assert_eq!(dot_line["blocking"], "tls", "{dot_line:#}");
    assert_eq!(dot_line["lookups"][0]["failure"], "connection_reset");
    assert_eq!(dot_line["lookups"][0]["failed_operation"], "tls_handshake");
    assert_eq!(
        dot_line["lookups"][0]["tls_handshakes"][0],
        "connection_reset"
    );

    // Stored by the aggregator with the verdict its own rule gives, searchable by layer.
    let base = server.base.clone();
    let rows = tokio::task::spawn_blocking(move || search(&base, "test_name=dnscheck"))
        .await
        .expect("join");
    assert_eq!(rows.len(), 2, "{rows:?}");
    // Sorted by input: `dot://` before `https://`.
    let (dot_row, doh_row) = (&rows[0], &rows[1]);
    assert_eq!(doh_row.0, doh_url);
    assert_eq!(doh_row.1, Value::Bool(false), "{doh_row:?}");
    assert_eq!(doh_row.2, Value::Bool(true), "{doh_row:?}");
    assert_eq!(dot_row.0, dot_url);
    assert_eq!(dot_row.1, "tls", "{dot_row:?}");
    assert_eq!(dot_row.2, Value::Bool(false), "{dot_row:?}");
    assert!(
        dot_row.3.as_str().is_some_and(|r| !r.is_empty()),
        "{dot_row:?}"
    );
    let base = server.base.clone();
    let blocked =
        tokio::task::spawn_blocking(move || search(&base, "test_name=dnscheck&blocking=tls"))
            .await
            .expect("join");
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].0, dot_url);
    // Each is found by its resolver's host, as the rule's target.
    let base = server.base.clone();
    let by_host = tokio::task::spawn_blocking(move || search(&base, "domain=doh.test"))
        .await
        .expect("join");
    assert_eq!(by_host.len(), 1, "{by_host:?}");
    assert_eq!(by_host[0].0, doh_url);

    // The stored measurement is the signed one, in OONI's dnscheck shape.
    let id = dot_line["id"].as_str().expect("id").to_string();
    let base = server.base.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            &base,
            "GET",
            &format!("/api/v1/measurements/{id}"),
            &[],
            b"",
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).expect("json");
    let m = &stored["measurement"];
    assert_eq!(m["test_name"], "dnscheck");
    assert_eq!(m["probe_cc"], "IR");
    assert!(m["test_keys"]["bootstrap"].is_null());
    let key = format!("dot://{}", reset.addr);
    assert_eq!(
        m["test_keys"]["lookups"][&key]["failure"], "connection_reset",
        "{m:#}"
    );
}
