//! OONI's service tests end to end: real OONI measurements of WhatsApp, Tor and Signal, signed
//! by probe keys and uploaded, are stored with their verdicts (`blocking`, `accessible`, the
//! rule set) and found by the search over real HTTP; a run of anomalous WhatsApp measurements
//! from several probes of one network, uploaded between runs of working ones, becomes one
//! blocking event "whatsapp" on its layer, in SQLite and in ClickHouse alike.

mod common;

use common::{fresh_aggregator, http, search};
use serde_json::Value;
use vantage_aggregator::detect::{Kind, format_time};
use vantage_aggregator::ingest::{self, IngestConfig, Origin, Status};
use vantage_aggregator::store::model::Layer;
use vantage_aggregator::store::{Location, Sqlite, Storage};
use vantage_probe::envelope::Identity;
use vantage_probe::verdict::fingerprints::Fingerprints;

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/ooni/real/");

/// whatsapp 0.9.0 (ooniprobe-android 3.7.1, JP): every WhatsApp name resolves to 0.0.0.0 and
/// the web client and registration server fail TLS: blocked on `dns`.
const WHATSAPP_SINKHOLED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221105223930.168194_JP_whatsapp_e3e891f975f0d5ef_full-true.json";
/// whatsapp 0.9.0 (ooniprobe-android 3.7.1, US): everything reachable.
const WHATSAPP_OK: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110103854.762862_US_whatsapp_cb48f652956e71e0_full-true.json";
/// tor 0.4.0 (ooniprobe-android 3.7.3, RU): 31 of 35 targets time out, most at connect.
const TOR_BLOCKED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20230121235805.670038_RU_tor_e8fd37f3f4f1085f_full-true.json";
/// signal 0.2.0 (ooniprobe-desktop 3.9.2, IR): NXDOMAIN for Signal's names.
const SIGNAL_BLOCKED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20210415084230.511612_IR_signal_ed269d082953bf2e_full-true.json";

fn real(file: &str) -> Value {
    let text = std::fs::read_to_string(format!("{REAL}{file}")).expect("real measurement");
    serde_json::from_str(&text).expect("json")
}

/// A real OONI measurement (its test name, version, annotations and test keys as OONI's probe
/// wrote them) signed by `key` as measured at `at` in IR / AS64500.
fn resigned(key: &Identity, file: &str, at: &str) -> (String, String) {
    let mut m = real(file);
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["probe_ip"] = "127.0.0.1".into();
    m["measurement_start_time"] = at.into();
    let (id, line) = key.seal(&m.to_string()).expect("seal");
    (id.to_string(), line)
}

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

#[tokio::test(flavor = "multi_thread")]
async fn uploaded_service_measurements_are_scored_stored_and_found_by_blocking() {
    let (server, dir, _db) = fresh_aggregator("services-http").await;
    let base = server.base.clone();
    let key = Identity::generate().expect("key");
    let at = format_time(vantage_aggregator::store::now() - 3600);
    let (sinkholed, l1) = resigned(&key, WHATSAPP_SINKHOLED, &at);
    let (ok, l2) = resigned(&key, WHATSAPP_OK, &at);
    let (tor, l3) = resigned(&key, TOR_BLOCKED, &at);
    // Signal at its own date: version 0.2.0 measured after 2022-10-19 would be a broken test.
    let (signal, l4) = resigned(&key, SIGNAL_BLOCKED, "2021-04-15 08:42:27");
    // The same Signal measurement from version 0.2.3 after Signal replaced the certificate
    // that version pinned: OONI's pipeline calls that a failure of the test, not blocking.
    let mut stale = real(SIGNAL_BLOCKED);
    stale["probe_cc"] = "IR".into();
    stale["probe_asn"] = "AS64500".into();
    stale["test_version"] = "0.2.3".into();
    stale["measurement_start_time"] = "2023-11-08 10:00:00".into();
    let (stale_id, l5) = key.seal(&stale.to_string()).expect("seal");
    let body = [l1, l2, l3, l4, l5].join("\n");
    let (status, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.matches("\"accepted\"").count(), 5, "{reply}");

    let rule_set = Value::from("ooni-services-1");
    assert_eq!(
        search(&base, "test_name=whatsapp&blocking=dns"),
        [(
            sinkholed.clone(),
            "dns".into(),
            false.into(),
            rule_set.clone()
        )]
    );
    assert_eq!(
        search(&base, "test_name=whatsapp&blocking=false"),
        [(ok.clone(), false.into(), true.into(), rule_set.clone())]
    );
    // The target is the row's domain: the service's name.
    let mut by_domain: Vec<String> = search(&base, "domain=whatsapp")
        .into_iter()
        .map(|r| r.0)
        .collect();
    by_domain.sort();
    let mut both = vec![sinkholed.clone(), ok.clone()];
    both.sort();
    assert_eq!(by_domain, both);
    assert_eq!(
        search(&base, "domain=tor&blocking=tcp_ip"),
        [(tor, "tcp_ip".into(), false.into(), rule_set.clone())]
    );
    assert_eq!(
        search(&base, "test_name=signal&blocking=dns"),
        [(signal, "dns".into(), false.into(), rule_set.clone())]
    );
    assert_eq!(
        search(&base, "test_name=signal&blocking=null"),
        [(stale_id.to_string(), Value::Null, Value::Null, rule_set)]
    );
    // Nothing of these tests is on a layer it was not measured on.
    assert!(search(&base, "test_name=whatsapp&blocking=tls").is_empty());
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Three probes of AS64500 measure WhatsApp once an hour each for two days; from hour 20 to
/// hour 31 every measurement is the sinkholed one, before and after the working one. All of it
/// goes through the upload path (`ingest::ingest`), then one full detection pass runs at the
/// end of the two days. Returns the start of the block and the end of the last anomaly.
fn whatsapp_story(store: &dyn Storage) -> (i64, i64) {
    let now = vantage_aggregator::store::now();
    let t0 = (now - 48 * 3600) / 3600 * 3600;
    let config = IngestConfig::default();
    let fingerprints = Fingerprints::builtin();
    let (mut first, mut last) = (i64::MAX, 0);
    for p in 0..3 {
        let key = Identity::generate().expect("key");
        let lines: Vec<String> = (0..48)
            .map(|h| {
                let at = t0 + h * 3600 + p * 600 + 60;
                let file = if (20..32).contains(&h) {
                    first = first.min(at);
                    last = last.max(at);
                    WHATSAPP_SINKHOLED
                } else {
                    WHATSAPP_OK
                };
                resigned(&key, file, &format_time(at)).1
            })
            .collect();
        let outcomes = ingest::ingest(
            store,
            &lines.join("\n"),
            &config,
            &fingerprints,
            &Origin::UNKNOWN,
        )
        .expect("ingest");
        assert_eq!(outcomes.len(), 48);
        assert!(
            outcomes.iter().all(|o| o.status == Status::Accepted),
            "{outcomes:?}"
        );
    }
    common::detect_ir(store, now);
    (first, last)
}

fn assert_one_whatsapp_event(store: &dyn Storage, (first, last): (i64, i64)) {
    let events = common::timeline_ir(store, Some(Kind::Blocking));
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.targets, ["whatsapp"], "{e:#?}");
    assert_eq!(e.layer, Some(Layer::Dns), "{e:#?}");
    assert_eq!(e.entity.asn.as_deref(), Some("AS64500"));
    assert_eq!(e.category, None);
    assert_eq!(
        (e.start.as_str(), e.end.as_deref(), e.status.as_str()),
        (
            format_time(first).as_str(),
            Some(format_time(last).as_str()),
            "ended"
        ),
        "{e:#?}"
    );
    assert_eq!(e.probes, 3);
    // Its evidence is the anomalous measurements, each found by the search as `dns`.
    assert_eq!(e.evidence.len(), 3 * 12, "{e:#?}");
}

#[test]
fn a_run_of_blocked_whatsapp_measurements_is_one_event_in_sqlite() {
    let dir = common::tempdir("services-detect-sqlite");
    let db = Sqlite::open(&dir.join("agg.db")).expect("db");
    let run = whatsapp_story(&db);
    assert_one_whatsapp_event(&db, run);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_run_of_blocked_whatsapp_measurements_is_one_event_in_clickhouse() {
    let server = vantage_fixtures::clickhouse::Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let store = Location::ClickHouse(server.url("services"))
        .open()
        .expect("open");
    let run = whatsapp_story(store.as_ref());
    assert_one_whatsapp_event(store.as_ref(), run);
}
