//! The timeline end to end: five probes of one network sign heartbeats and canaries through
//! the real ingest, go dark for an hour, and upload the canaries they recorded offline after
//! coming back. The real `vantage-aggregator` then finds one shutdown, in its background
//! detection and with `detect`, and shows it through `timeline` (table, JSON, CSV) and
//! `GET /api/v1/timeline`; bad parameters get a clear error.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{AGGREGATOR, http, serve, tempdir};
use serde_json::Value;
use vantage_aggregator::detect::format_time;
use vantage_aggregator::ingest;
use vantage_aggregator::store::Sqlite;
use vantage_probe::envelope::Identity;

/// Three hours of five probes, dark during `[cut, back)`; returns the database path.
fn seed(dir: &std::path::Path, t0: i64, cut: i64, back: i64) -> std::path::PathBuf {
    let path = dir.join("agg.db");
    let db = Sqlite::open(&path).expect("db");
    let probes: Vec<(Identity, ingest::Origin)> = (0..5)
        .map(|_| (Identity::generate().expect("key"), ingest::Origin::UNKNOWN))
        .collect();
    let end = (t0 + 3 * 3600).min(vantage_aggregator::store::now());
    common::seed_probes(&db, &probes, t0, end, cut, back);
    path
}

fn aggregator(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AGGREGATOR).args(args).output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_hour_of_darkness_uploaded_late_is_one_shutdown_in_every_view() {
    let dir = tempdir("timeline");
    let now = vantage_aggregator::store::now();
    // The probes report up to now: had they stopped earlier, all five falling silent at once
    // would rightly be a (suspected) shutdown of its own.
    let t0 = (now - 3 * 3600) / 60 * 60;
    let (cut, back) = (t0 + 3600, t0 + 7200);
    let db = seed(&dir, t0, cut, back);
    let db_arg = db.to_str().expect("utf-8");
    let since = format_time(t0 - 3600);

    // The server's own detection finds it, without being asked.
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let server = serve(&ca, &db, &["--detect-every", "1"]).await;
    let path = format!("/api/v1/timeline?cc=ir&since={}", since.replace(' ', "%20"));
    let started = Instant::now();
    let events = loop {
        let base = server.base.clone();
        let p = path.clone();
        let (status, body) = tokio::task::spawn_blocking(move || http(&base, "GET", &p, &[], b""))
            .await
            .expect("join");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let events = v["events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(
        (
            e["kind"].as_str(),
            e["scope"].as_str(),
            e["entity"]["asn"].as_str()
        ),
        (Some("shutdown"), Some("network"), Some("AS64500"))
    );
    assert_eq!(
        (e["status"].as_str(), e["suspected"].as_bool()),
        (Some("ended"), Some(false))
    );
    assert_eq!(e["probes"], 5);
    let start = vantage_aggregator::store::model::parse_time(e["start"].as_str().expect("start"))
        .expect("time");
    let end = vantage_aggregator::store::model::parse_time(e["end"].as_str().expect("end"))
        .expect("time");
    assert!(
        (start - cut).abs() <= 120,
        "start {} vs {}",
        e["start"],
        format_time(cut)
    );
    assert!(
        (end - back).abs() <= 120,
        "end {} vs {}",
        e["end"],
        format_time(back)
    );
    // The evidence: the canaries that failed while the network was dark, each retrievable.
    let evidence: Vec<String> = e["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    assert!(evidence.len() >= 5 * 11, "{}", evidence.len());
    let (status, envelope) = {
        let (base, p) = (
            server.base.clone(),
            format!("/api/v1/measurements/{}", evidence[0]),
        );
        tokio::task::spawn_blocking(move || http(&base, "GET", &p, &[], b""))
            .await
            .expect("join")
    };
    assert_eq!(status, 200);
    assert!(envelope.contains("\"test_name\":\"canary\"") && envelope.contains("\"ok\":0"));

    // CSV from the API; bad parameters are refused with the reason.
    let get = |p: String| {
        let base = server.base.clone();
        tokio::task::spawn_blocking(move || http(&base, "GET", &p, &[], b""))
    };
    let (status, csv) = get(format!("{path}&format=csv")).await.expect("join");
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("id,cc,asn,asns,kind,scope,layer"));
    assert!(
        lines[1].contains(",IR,AS64500,,shutdown,network,,"),
        "{}",
        lines[1]
    );
    for (query, reason) in [
        ("kind=outage", "kind \\\"outage\\\" is not one of"),
        ("cc=IRN", "not a two-letter country code"),
        ("since=yesterday", "is not YYYY-MM-DD"),
        (
            "since=2026-02-02&until=2026-02-01",
            "since must be before until",
        ),
        ("asn=ASx", "asn"),
        ("format=xml", "is not json or csv"),
    ] {
        let (status, body) = get(format!("/api/v1/timeline?{query}"))
            .await
            .expect("join");
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(reason), "{query}: {body}");
    }
    let (status, page) = get("/".into()).await.expect("join");
    assert_eq!(status, 200);
    assert!(page.contains("<svg") || page.contains("id=\"chart\""));
    let (_, countries) = get("/api/v1/countries".into()).await.expect("join");
    assert!(countries.contains("\"cc\":\"IR\""), "{countries}");
    drop(server);

    // The same from the command line, after recomputing from scratch.
    let (ok, _, err) = aggregator(&["detect", "--db", db_arg, "--since", &since]);
    assert!(ok, "{err}");
    assert!(err.contains("1 events in the window"), "{err}");
    let (ok, table, err) =
        aggregator(&["timeline", "--db", db_arg, "--cc", "IR", "--since", &since]);
    assert!(ok, "{err}");
    assert!(
        table.contains("shutdown")
            && table.contains("AS64500")
            && table.contains("canaries failed"),
        "{table}"
    );
    let (ok, json_lines, _) = aggregator(&[
        "timeline", "--db", db_arg, "--cc", "IR", "--since", &since, "--json",
    ]);
    assert!(ok);
    let again: Value = serde_json::from_str(json_lines.trim()).expect("one JSON line");
    assert_eq!(
        again["id"], e["id"],
        "an event keeps its id when recomputed"
    );
    let (ok, csv_cli, _) = aggregator(&[
        "timeline", "--db", db_arg, "--cc", "IR", "--since", &since, "--csv",
    ]);
    assert!(ok);
    assert_eq!(csv_cli.trim_end(), csv.trim_end());
    let (ok, _, err) = aggregator(&["timeline", "--db", db_arg, "--kind", "outage"]);
    assert!(
        !ok && err.contains("kind \"outage\" is not one of"),
        "{err}"
    );

    // Thresholds from a file: unknown keys and bad values are refused, naming the file.
    let bad = dir.join("detect.toml");
    std::fs::write(&bad, "[outage]\nmin_probe = 3\n").expect("write");
    let (ok, _, err) = aggregator(&[
        "detect",
        "--db",
        db_arg,
        "--detect-config",
        bad.to_str().expect("utf-8"),
    ]);
    assert!(
        !ok && err.contains("detect.toml") && err.contains("min_probe"),
        "{err}"
    );
    // Six probes needed: the five of this network are too few, and the event goes away.
    std::fs::write(&bad, "[outage]\nmin_probes = 6\n").expect("write");
    let (ok, _, err) = aggregator(&[
        "detect",
        "--db",
        db_arg,
        "--since",
        &since,
        "--detect-config",
        bad.to_str().expect("utf-8"),
    ]);
    assert!(ok && err.contains("0 events in the window"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
