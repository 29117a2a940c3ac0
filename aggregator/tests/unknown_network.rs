//! Probes that do not know their network yet, and probes that change network, through the real
//! `vantage-aggregator serve` (signed heartbeats and canaries over HTTP) and its `detect`
//! command: claiming `ZZ`/`AS0` makes no event, a fleet leaving a network together for another
//! one (of its country or abroad) is no shutdown, and a real silence afterwards is exactly one
//! (`docs/detection.md`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{AGGREGATOR, Server, http, start_aggregator_with, tempdir};
use serde_json::Value;
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::now;
use vantage_probe::envelope::Identity;

const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];
const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// Detection thresholds of these tests: the defaults, except that a probe is silent after
/// 10 s instead of 150 s, so that the test need not wait two and a half minutes to see one.
const CONFIG: &str = "[outage]\nsilence_seconds = 10\n";

/// A measurement of `test_name` by `key`, made at `at` in `cc`/`asn`, sealed.
fn signed(key: &Identity, test_name: &str, (cc, asn): (&str, u32), at: i64, keys: Value) -> String {
    let mut m = serde_json::to_value(vantage_probe::ooni::Measurement::vantage(
        test_name, "0.1.0", keys,
    ))
    .expect("json");
    m["probe_cc"] = cc.into();
    m["probe_asn"] = format!("AS{asn}").into();
    m["measurement_start_time"] = format_time(at).into();
    key.seal(&m.to_string()).expect("seal").1
}

fn beat(base: &str, key: &Identity, network: (&str, u32), at: i64) {
    let line = signed(key, "heartbeat", network, at, serde_json::json!({}));
    let (status, body) = http(base, "POST", "/api/v1/heartbeat", JSON, line.as_bytes());
    assert_eq!(status, 200, "{body}");
}

/// Heartbeats of every probe, every minute over `[from, to)`, in `network`.
fn beats(base: &str, probes: &[Identity], network: (&str, u32), from: i64, to: i64) {
    for (i, key) in probes.iter().enumerate() {
        let mut t = from + i as i64 * 3;
        while t < to {
            beat(base, key, network, t);
            t += 60;
        }
    }
}

/// Runs `vantage-aggregator detect` on `db` with [`CONFIG`]; returns its report line.
fn detect(dir: &std::path::Path, db: &std::path::Path, since: i64) -> String {
    let config = dir.join("detect.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let out = Command::new(AGGREGATOR)
        .args(["detect", "--db"])
        .arg(db)
        .arg("--detect-config")
        .arg(&config)
        .args(["--since", &format_time(since)])
        .output()
        .expect("run detect");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(out.status.success(), "{err}");
    err
}

/// Every event of `cc` on the timeline since `since`, as `serve` answers it.
fn timeline(server: &Server, cc: &str, since: i64) -> Vec<Value> {
    let path = format!(
        "/api/v1/timeline?cc={cc}&since={}",
        format_time(since).replace(' ', "%20")
    );
    let (status, body) = http(&server.base, "GET", &path, &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["events"].as_array().cloned().unwrap_or_default()
}

fn start(name: &str) -> (Server, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir(name);
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    // The server's own detection runs rarely here: the test runs `detect` when it wants it.
    let server = start_aggregator_with(&ca, &db, &["--detect-every", "3600"]);
    (server, dir, db)
}

#[test]
fn probes_learning_their_network_make_no_event_and_their_real_silence_makes_one() {
    let (server, dir, db) = start("unknown-network");
    let probes: Vec<Identity> = (0..6).map(|_| Identity::generate().expect("key")).collect();
    let t0 = (now() - 2 * 3600) / 60 * 60;
    let learnt = t0 + 40 * 60;
    // As the lab's daemons did: forty minutes in the unknown network, then the one they are
    // in, up to now.
    beats(&server.base, &probes, ("ZZ", 0), t0, learnt);
    beats(&server.base, &probes, ("IR", 64500), learnt, now());
    for key in &probes {
        beat(&server.base, key, ("IR", 64500), now());
    }
    assert_eq!(
        detect(&dir, &db, t0),
        "vantage-aggregator: 0 events in the window"
    );
    for cc in ["ZZ", "IR"] {
        let events = timeline(&server, cc, t0 - 3600);
        assert!(events.is_empty(), "{cc}: {events:#?}");
    }
    // The signals still show what the probes said while they did not know where they were.
    let (status, body) = http(
        &server.base,
        "GET",
        &format!(
            "/api/v1/signals?cc=ZZ&asn=0&since={}",
            format_time(t0).replace(' ', "%20")
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"probes\":6"), "{body}");

    // Then the network goes dark: no heartbeat for longer than the silence, and each probe's
    // canary round fails (queued, and handed in by a way out the others lack).
    std::thread::sleep(Duration::from_secs(12));
    let at = now() - 1;
    let canaries: Vec<String> = probes
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let keys = serde_json::json!({"ok": 0, "total": 4, "checks": []});
            // A second apart: identical measurements would be one (their id is their hash).
            signed(key, "canary", ("IR", 64500), at - i as i64, keys)
        })
        .collect();
    let (status, body) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        canaries.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("accepted").count(), 6, "{body}");
    assert_eq!(
        detect(&dir, &db, t0),
        "vantage-aggregator: 1 events in the window"
    );
    assert!(timeline(&server, "ZZ", t0 - 3600).is_empty());
    let events = timeline(&server, "IR", t0 - 3600);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(
        (
            e["kind"].as_str(),
            e["scope"].as_str(),
            e["entity"]["asn"].as_str(),
            e["status"].as_str(),
            e["suspected"].as_bool(),
            e["probes"].as_u64(),
        ),
        (
            Some("shutdown"),
            Some("network"),
            Some("AS64500"),
            Some("ongoing"),
            Some(false),
            Some(6)
        ),
        "{e:#}"
    );
    assert_eq!(e["evidence"].as_array().map(Vec::len), Some(6), "{e:#}");
}

#[test]
fn a_fleet_moving_to_another_network_or_country_together_is_no_shutdown() {
    let (server, dir, db) = start("fleet-move");
    let t0 = (now() - 2 * 3600) / 60 * 60;
    let moved = t0 + 60 * 60;
    // Six probes renumbered from AS64501 to AS64502 of the same country, six others switching
    // a VPN on (AS64503 of IR, then AS64504 of NL), all at the same minute.
    let renumbered: Vec<Identity> = (0..6).map(|_| Identity::generate().expect("key")).collect();
    let tunnelled: Vec<Identity> = (0..6).map(|_| Identity::generate().expect("key")).collect();
    for (probes, before, after) in [
        (&renumbered, ("IR", 64501), ("IR", 64502)),
        (&tunnelled, ("IR", 64503), ("NL", 64504)),
    ] {
        beats(&server.base, probes, before, t0, moved);
        beats(&server.base, probes, after, moved, now());
        for key in probes {
            beat(&server.base, key, after, now());
        }
    }
    assert_eq!(
        detect(&dir, &db, t0),
        "vantage-aggregator: 0 events in the window"
    );
    for cc in ["IR", "NL"] {
        let events = timeline(&server, cc, t0 - 3600);
        assert!(events.is_empty(), "{cc}: {events:#?}");
    }
    // Had the renumbered fleet gone silent instead, its network would have gone dark: the
    // same six probes, heard from nowhere since the move.
    let gone: Vec<Identity> = (0..6).map(|_| Identity::generate().expect("key")).collect();
    beats(&server.base, &gone, ("IR", 64505), t0, moved);
    assert_eq!(
        detect(&dir, &db, t0),
        "vantage-aggregator: 1 events in the window"
    );
    let events = timeline(&server, "IR", t0 - 3600);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["entity"]["asn"], "AS64505", "{events:#?}");
}
