//! The probe's quic test end to end: a measurement the probe makes on loopback (a TCP+TLS
//! server that works and a UDP port on the same number that swallows every datagram), signed
//! and uploaded over HTTP to the real `serve`, is stored with the aggregator's own verdict
//! (`quic-blocked` on `tcp_ip`, under the target `quic:<host>`) and found by the search; a run
//! of such measurements of one host from two probes of one network, between runs of working
//! ones, with a control host measured by the same probes working throughout, rescored in place,
//! is one blocking event `quic:blocked.example` on the tcp layer whose evidence is exactly the
//! blocked host's failures, in SQLite and in ClickHouse alike, which `timeline` shows as such;
//! the control host is in no event.

mod common;

use std::time::Duration;

use common::{fresh_aggregator, http, search};
use serde_json::Value;
use vantage_aggregator::detect::{Kind, format_time};
use vantage_aggregator::ingest::{self, IngestConfig, Origin, Status};
use vantage_aggregator::store::model::Layer;
use vantage_aggregator::store::{Location, Sqlite, Storage};
use vantage_fixtures::http::Response;
use vantage_fixtures::tls::{TestCa, TlsFixture};
use vantage_probe::engine::{EngineConfig, Resolver, Timeouts, TlsContext};
use vantage_probe::envelope::Identity;
use vantage_probe::quic::{self, Plan, Verdict};
use vantage_probe::verdict::fingerprints::Fingerprints;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// A real quic measurement of a loopback host whose UDP port drops everything while TCP+TLS
/// works, as JSON, by the probe's own code.
async fn quic_blocked_measurement() -> Value {
    // One directory per call: the tests run at once, each with its own CA.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = common::tempdir(&format!("quic-measure-{n}"));
    let ca = TestCa::new("quic e2e ca");
    let ca_file = dir.join("ca.pem");
    ca.write_pem(&ca_file);
    let tls = TlsContext::new(TlsContext::load_pem(&ca_file).expect("ca")).expect("tls");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let tcp = TlsFixture::fixed(&leaf, Response::html("hi")).await;
    let _sink = std::net::UdpSocket::bind(tcp.addr).expect("udp on the same port");
    let config = EngineConfig {
        timeouts: Timeouts {
            tls_handshake: Duration::from_millis(800),
            ..Timeouts::default()
        },
        ..EngineConfig::default()
    };
    let plan = Plan::new(
        &format!("https://127.0.0.1:{}/", tcp.addr.port()),
        &[Resolver::System],
        config,
    )
    .expect("plan");
    let m = quic::measure(&plan, &tls).await;
    assert_eq!(m.test_keys.quic_blocking, Verdict::QuicBlocked);
    std::fs::remove_dir_all(&dir).ok();
    serde_json::to_value(&m).expect("json")
}

/// `m` as measured in IR / AS64500 at `at`, with its QUIC handshake working when `works`.
fn variant(m: &Value, at: &str, works: bool) -> String {
    variant_of(m, None, at, works)
}

/// [`variant`] of `https://{host}/` when a host is given.
fn variant_of(m: &Value, host: Option<&str>, at: &str, works: bool) -> String {
    let mut m = m.clone();
    if let Some(host) = host {
        m["input"] = format!("https://{host}/").into();
    }
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["measurement_start_time"] = at.into();
    if works {
        m["test_keys"]["quic_handshakes"][0]["failure"] = Value::Null;
        m["test_keys"]["quic_handshakes"][0]["negotiated_protocol"] = "h3".into();
    }
    m.to_string()
}

/// A stored row's domain and verdict, read from the aggregator's SQLite file.
fn stored(db: &std::path::Path, id: &str) -> (String, Value) {
    let c = rusqlite::Connection::open(db).expect("open db");
    let (domain, verdict): (String, String) = c
        .query_row(
            "SELECT domain, verdict FROM measurements WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("stored row");
    (
        domain,
        serde_json::from_str(&verdict).expect("verdict json"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_quic_measurement_is_scored_stored_and_found() {
    let measured = quic_blocked_measurement().await;
    let (server, dir, db) = fresh_aggregator("quic-http").await;
    let base = server.base.clone();
    let key = Identity::generate().expect("key");
    let at = format_time(vantage_aggregator::store::now() - 3600);
    let (blocked, l1) = key.seal(&variant(&measured, &at, false)).expect("seal");
    let (works, l2) = key.seal(&variant(&measured, &at, true)).expect("seal");
    // The probe's own verdict says accessible; the handshakes say otherwise, and decide.
    let mut lying = serde_json::from_str::<Value>(&variant(&measured, &at, false)).expect("json");
    lying["test_keys"]["quic_blocking"] = "accessible".into();
    lying["test_keys"]["accessible"] = true.into();
    let (lied, l3) = key.seal(&lying.to_string()).expect("seal");
    // More handshakes than the test makes: refused, not stored.
    let mut stuffed = serde_json::from_str::<Value>(&variant(&measured, &at, false)).expect("json");
    let one = stuffed["test_keys"]["quic_handshakes"][0].clone();
    stuffed["test_keys"]["quic_handshakes"] = Value::Array(vec![one; 40]);
    let (_, l4) = key.seal(&stuffed.to_string()).expect("seal");
    let body = [l1, l2, l3, l4].join("\n");
    let (status, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.matches("\"accepted\"").count(), 3, "{reply}");
    assert!(reply.contains("at most 16 steps"), "{reply}");

    let mut found = search(&base, "domain=quic:127.0.0.1&blocking=tcp_ip");
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![blocked.to_string(), lied.to_string()];
    expected.sort();
    assert_eq!(
        found.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        expected
    );
    for (id, blocking, accessible, rule_set) in &found {
        assert_eq!(blocking, "tcp_ip");
        assert_eq!(accessible, &Value::Bool(false));
        assert_eq!(rule_set, "vantage-quic-1");
        // The stored verdict (the search lists rows; the verdict is in the store).
        let (domain, verdict) = stored(&db, id);
        assert_eq!(domain, "quic:127.0.0.1");
        assert_eq!(verdict["target"], "quic:127.0.0.1", "{verdict}");
        assert_eq!(verdict["verdict"], "quic-blocked", "{verdict}");
        assert_eq!(verdict["layer"], "tcp_ip", "{verdict}");
        assert_eq!(
            verdict["quic_failure"], "generic_timeout_error",
            "{verdict}"
        );
        assert_eq!(verdict["host"], "127.0.0.1", "{verdict}");
    }
    // `vantage-aggregator score` reads the same measurements offline and says the same.
    let file = dir.join("quic.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            variant(&measured, &at, false),
            variant(&measured, &at, true)
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-aggregator"))
        .arg("score")
        .arg(&file)
        .output()
        .expect("run score");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{lines}");
    let scored: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(scored.len(), 2, "{lines}");
    assert_eq!(
        (
            &scored[0]["rule"],
            &scored[0]["blocking"],
            &scored[0]["target"]
        ),
        (
            &"quic.quic-blocked".into(),
            &"tcp_ip".into(),
            &"quic:127.0.0.1".into()
        ),
        "{lines}"
    );
    assert_eq!(scored[1]["rule"], "quic.accessible", "{lines}");

    let ok = search(&base, "test_name=quic&blocking=false");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(
        (ok[0].0.as_str(), &ok[0].2),
        (works.as_str(), &Value::Bool(true))
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// The host whose QUIC is dropped, and the control host measured beside it, working.
const BLOCKED: &str = "blocked.example";
const CONTROL: &str = "control.example";

/// What a story uploaded: the block's first and last anomaly, and the ids of the blocked
/// host's failures.
struct Story {
    first: i64,
    last: i64,
    failures: Vec<String>,
}

/// Two probes of AS64500 measure two hosts once an hour for two days; from hour 20 to hour 31
/// QUIC to [`BLOCKED`] is dropped, before and after it works, and [`CONTROL`] works
/// throughout. All of it goes through the upload path (`ingest::ingest`), is rescored in place
/// (as after a rule change), then one detection pass runs.
fn quic_story(store: &dyn Storage, measured: &Value, t0: i64, now: i64) -> Story {
    let mut story = Story {
        first: i64::MAX,
        last: 0,
        failures: Vec::new(),
    };
    for p in 0..2 {
        let key = Identity::generate().expect("key");
        let mut lines = Vec::new();
        for h in 0..48 {
            for (i, host) in [BLOCKED, CONTROL].into_iter().enumerate() {
                let at = t0 + h * 3600 + p * 600 + i as i64 * 60 + 60;
                let blocked = host == BLOCKED && (20..32).contains(&h);
                let m = variant_of(measured, Some(host), &format_time(at), !blocked);
                let (id, line) = key.seal(&m).expect("seal");
                if blocked {
                    story.first = story.first.min(at);
                    story.last = story.last.max(at);
                    story.failures.push(id.to_string());
                }
                lines.push(line);
            }
        }
        let outcomes = ingest::ingest(
            store,
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
    let rescored = ingest::maintain::rescore(store, &Fingerprints::builtin()).expect("rescore");
    assert_eq!(rescored, 2 * 2 * 48);
    common::detect_ir(store, now);
    story
}

fn assert_one_quic_event(store: &dyn Storage, story: &Story) {
    let events = common::timeline_ir(store, None);
    // One event, the blocked host's: the control host, measured by the same probes in the
    // same hours, is in none.
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.kind, Kind::Blocking, "{e:#?}");
    assert_eq!(e.targets, [format!("quic:{BLOCKED}")], "{e:#?}");
    assert_eq!(e.category, None, "{e:#?}");
    assert_eq!(e.layer, Some(Layer::Tcp), "{e:#?}");
    assert_eq!(e.probes, 2);
    assert_eq!(
        (e.start.as_str(), e.end.as_deref()),
        (
            format_time(story.first).as_str(),
            Some(format_time(story.last).as_str())
        ),
        "{e:#?}"
    );
    let mut evidence = e.evidence.clone();
    evidence.sort();
    let mut failures = story.failures.clone();
    failures.sort();
    assert_eq!(evidence, failures, "exactly the blocked host's failures");
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_blocked_to_one_host_of_two_is_one_event_for_that_host_on_tcp() {
    let measured = quic_blocked_measurement().await;
    let dir = common::tempdir("quic-detect");
    let db = Sqlite::open(&dir.join("agg.db")).expect("db");
    let now = vantage_aggregator::store::now();
    let t0 = (now - 48 * 3600) / 3600 * 3600;
    let story = quic_story(&db, &measured, t0, now);
    assert_one_quic_event(&db, &story);
    // What an operator reads: `vantage-aggregator timeline` names the target and the layer.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vantage-aggregator"))
        .args(["timeline", "--db"])
        .arg(dir.join("agg.db"))
        .args(["--cc", "IR", "--since", &format_time(t0)])
        .output()
        .expect("run timeline");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains("blocking"))
        .unwrap_or_else(|| panic!("no blocking event in {table}"));
    assert!(
        line.contains("AS64500") && line.ends_with("quic:blocked.example on tcp"),
        "{table}"
    );
    assert!(!table.contains(CONTROL), "{table}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_blocked_to_one_host_of_two_is_one_event_for_that_host_in_clickhouse() {
    let measured = quic_blocked_measurement().await;
    let server = vantage_fixtures::clickhouse::Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let store = Location::ClickHouse(server.url("quic"))
        .open()
        .expect("open");
    let now = vantage_aggregator::store::now();
    let t0 = (now - 48 * 3600) / 3600 * 3600;
    let story = quic_story(store.as_ref(), &measured, t0, now);
    assert_one_quic_event(store.as_ref(), &story);
}
