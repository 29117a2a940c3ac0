//! A shutdown's evidence holds the failed canaries of every probe that went dark, with a real
//! SQLite file: among them a probe whose heartbeat, signed during the cut, got through only
//! when the link came back (TCP retries its SYN for seconds), while its failed canaries came
//! out during the cut by a relay and the other probe's by file (docs/carry.md).

use std::collections::BTreeSet;
use std::collections::HashMap;

use vantage_aggregator::detect::outage::OutageConfig;
use vantage_aggregator::detect::{DetectConfig, Pass, TimelineQuery, detect, format_time};
use vantage_aggregator::store::model::BIN_SECONDS;
use vantage_aggregator::store::{Route, Row, Sqlite, Storage, now};

/// A failed canary round of `key` at `at`, arrived by `route`.
fn failed_canary(key: &str, at: i64, route: Route) -> Row {
    Row {
        id: format!("{key}-canary-{at}"),
        source: "vantage".into(),
        probe_key: Some(key.into()),
        probe_cc: "IR".into(),
        probe_asn: 64500,
        test_name: "canary".into(),
        input: None,
        domain: None,
        measured_at: format_time(at),
        blocking: None,
        accessible: Some(false),
        confirmed: false,
        rule_set: None,
        verdict: None,
        envelope: r#"{"v":1,"measurement":{"test_keys":{"ok":0,"total":2}}}"#.into(),
        network_verified: false,
        route,
    }
}

#[test]
fn a_heartbeat_signed_during_the_cut_keeps_neither_its_probe_nor_its_canaries_out_of_the_shutdown()
{
    let dir = std::env::temp_dir().join(format!("vantage-late-beat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = Sqlite::open(&dir.join("agg.db")).expect("open");

    // The uplink is back about now, and was cut at least 103 s before, across the start of
    // this 5-minute bin (the detector sees a probe's contacts once per bin, so a gap shows only
    // across a bin boundary). A gap must last `min_gap` = the cut less 3 s. Probe "b" signed a
    // heartbeat 7 s before the link came back, which reaches us now: stamped with its signing
    // time it would close "b"'s gap 4 s short of `min_gap`.
    let back = now();
    let bin_start = back.div_euclid(BIN_SECONDS) * BIN_SECONDS;
    let cut = (bin_start - 10).min(back - 103);
    let min_gap = back - cut - 3;
    assert!(
        db.heartbeat("b", "IR", 64500, &format_time(back - 7), true)
            .expect("late beat")
    );
    for key in ["a", "b"] {
        for t in (cut - 600..=cut).step_by(2) {
            db.heartbeat(key, "IR", 64500, &format_time(t), true)
                .expect("beat before the cut");
        }
        for t in (back + 1..=back + 30).step_by(2) {
            db.heartbeat(key, "IR", 64500, &format_time(t), true)
                .expect("beat after the restore");
        }
    }
    // Their failed canaries of the cut: "a"'s came out on a stick, "b"'s through a neighbour's
    // relay, both while the cut went on.
    let mut rows = Vec::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for t in (cut + 1..back).step_by(10) {
        for (key, route) in [
            ("a", Route::File),
            (
                "b",
                Route::Relay {
                    by: "relay-key".into(),
                },
            ),
        ] {
            let row = failed_canary(key, t, route);
            ids.insert(row.id.clone());
            rows.push(row);
        }
    }
    db.insert(&rows).expect("insert canaries");

    let config = DetectConfig {
        outage: OutageConfig {
            silence_seconds: 10,
            min_gap_seconds: min_gap,
            burst_seconds: 20,
            live_seconds: 900,
            min_probes: 2,
            settle_seconds: 120,
            ..OutageConfig::default()
        },
        ..DetectConfig::default()
    };
    let at = back + 31;
    detect(&db, Some("IR"), Pass::Recent, at, &HashMap::new(), &config).expect("detect");
    let events = db
        .timeline(&TimelineQuery {
            cc: Some("IR".into()),
            since: at - 86_400,
            until: at + 86_400,
            ..Default::default()
        })
        .expect("timeline");
    let [e] = events.as_slice() else {
        panic!("expected one shutdown: {events:#?}");
    };
    assert_eq!(e.status, "ended", "{e:#?}");
    assert_eq!(e.probes, 2, "both probes went dark: {e:#?}");
    let evidence: BTreeSet<String> = e.evidence.iter().cloned().collect();
    let missing: Vec<&String> = ids.difference(&evidence).collect();
    assert!(
        missing.is_empty(),
        "failed canaries missing from the evidence: {missing:?}; event {e:#?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
