//! dnscheck end to end: the real `vantage run --test dnscheck` checks a working DoH resolver
//! and a DoT resolver whose handshake is reset (as an SNI filter does), on loopback, uploads to
//! the real `serve`, and the aggregator stores each with the verdict its dnscheck rule gives.
//! Then detection: two probes of one network checking a blocked DoT resolver and a working one
//! for two days make one blocking event for the blocked resolver, `dnscheck:<host>` on its
//! layer, from its measurements alone; the working one is in no event.

mod common;

use std::process::Command;

use common::{fresh_aggregator, http, vantage};
use serde_json::Value;
use vantage_aggregator::detect::format_time;
use vantage_aggregator::ingest::{self, IngestConfig, Origin, Status};
use vantage_aggregator::store::Sqlite;
use vantage_aggregator::store::model::Layer;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::tcp::ResetListener;
use vantage_fixtures::tls::{TestCa, TlsFixture};
use vantage_probe::envelope::Identity;
use vantage_probe::verdict::fingerprints::Fingerprints;

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
    // Each is found by its resolver's host with the test named, as the rule's target.
    let base = server.base.clone();
    let by_host = tokio::task::spawn_blocking(move || search(&base, "domain=dnscheck:doh.test"))
        .await
        .expect("join");
    assert_eq!(by_host.len(), 1, "{by_host:?}");
    assert_eq!(by_host[0].0, doh_url);

    // The stored measurement is the signed one, in OONI's dnscheck shape.
    let id = dot_line["id"].as_str().expect("id").to_string();
    let (status, body) = common::get_measurement(&server.base, &id).await;
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

/// OONI's own dnscheck measurement (ts-028's example, DoT to dns.google, every lookup working)
/// as measured in IR / AS64500 at `at` of `input`; when `dropped`, every lookup fails at the
/// TCP connect with `generic_timeout_error`, as when the censor drops TCP 853 to the resolver.
fn dnscheck_of(input: &str, at: i64, dropped: bool) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/ooni/spec/ts-028-dnscheck.json"
    ))
    .expect("ts-028 example");
    let mut m: Value = serde_json::from_str(&text).expect("json");
    m["input"] = input.into();
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["measurement_start_time"] = format_time(at).into();
    if dropped {
        let lookups = m["test_keys"]["lookups"].as_object_mut().expect("lookups");
        for l in lookups.values_mut() {
            l["failure"] = "generic_timeout_error".into();
            l["failed_operation"] = "connect".into();
        }
    }
    m.to_string()
}

#[test]
fn a_dropped_dot_resolver_is_one_event_of_its_own_and_the_control_is_in_none() {
    const BLOCKED: &str = "dot://dot-blocked.example:853/";
    const CONTROL: &str = "dot://dot-ok.example:853/";
    let dir = common::tempdir("dnscheck-detect");
    let db = Sqlite::open(&dir.join("agg.db")).expect("db");
    let now = vantage_aggregator::store::now();
    let t0 = (now - 48 * 3600) / 3600 * 3600;
    let mut failures = Vec::new();
    let (mut first, mut last) = (i64::MAX, 0);
    for p in 0..2 {
        let key = Identity::generate().expect("key");
        let mut lines = Vec::new();
        for h in 0..48 {
            for (i, input) in [BLOCKED, CONTROL].into_iter().enumerate() {
                let at = t0 + h * 3600 + p * 600 + i as i64 * 60 + 60;
                let dropped = input == BLOCKED && (20..32).contains(&h);
                let (id, line) = key.seal(&dnscheck_of(input, at, dropped)).expect("seal");
                if dropped {
                    failures.push(id.to_string());
                    (first, last) = (first.min(at), last.max(at));
                }
                lines.push(line);
            }
        }
        let outcomes = ingest::ingest(
            &db,
            &lines.join("\n"),
            &IngestConfig::default(),
            &Fingerprints::builtin(),
            &Origin::UNKNOWN,
        )
        .expect("ingest");
        assert!(
            outcomes.iter().all(|o| o.status == Status::Accepted),
            "{outcomes:?}"
        );
    }
    common::detect_ir(&db, now);
    let events = common::timeline_ir(&db, None);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.targets, ["dnscheck:dot-blocked.example"], "{e:#?}");
    assert_eq!(e.layer, Some(Layer::Tcp), "{e:#?}");
    assert_eq!(e.probes, 2, "{e:#?}");
    assert_eq!(
        (e.start.clone(), e.end.clone()),
        (format_time(first), Some(format_time(last)))
    );
    let mut evidence = e.evidence.clone();
    evidence.sort();
    failures.sort();
    assert_eq!(
        evidence, failures,
        "exactly the blocked resolver's failures"
    );
    // What an operator reads.
    let out = Command::new(env!("CARGO_BIN_EXE_vantage-aggregator"))
        .args(["timeline", "--db"])
        .arg(dir.join("agg.db"))
        .args(["--cc", "IR", "--since", &format_time(t0)])
        .output()
        .expect("run timeline");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("AS64500") && l.ends_with("dnscheck:dot-blocked.example on tcp")),
        "{table}"
    );
    assert!(!table.contains("dot-ok.example"), "{table}");
    std::fs::remove_dir_all(&dir).ok();
}
