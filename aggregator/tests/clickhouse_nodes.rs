//! Two `vantage-aggregator serve` nodes on one ClickHouse (`--store clickhouse://`): a
//! measurement uploaded through both shows once in either node's search; exactly one node runs
//! the detectors and the shutdown it finds is in both nodes' timelines; when that node is
//! killed, the other takes the detectors' lease over and the timeline continues with a second
//! shutdown uploaded after the kill.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, Server, http, spawn_server, tempdir};
use serde_json::{Value, json};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::ingest;
use vantage_aggregator::store::Location;
use vantage_probe::envelope::Identity;

/// A node serving `url`, its stderr lines collected as they come.
fn node(dir: &std::path::Path, name: &str, url: &str) -> (Server, Arc<Mutex<Vec<String>>>) {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--th-local-addr",
            "127.0.0.2",
        ])
        .args(["--th-allow-private", "--th-timeout", "3", "--ca-file"])
        .arg(dir.join("ca.pem"))
        .arg("--db")
        .arg(dir.join(name))
        .args([
            "--store",
            url,
            "--lease-seconds",
            "6",
            "--detect-every",
            "1",
        ])
        .stderr(Stdio::piped());
    let mut server = spawn_server(serve);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = server.child.stderr.take().expect("stderr");
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("lines").push(line);
        }
    });
    (server, lines)
}

fn runs_detectors(lines: &Mutex<Vec<String>>) -> bool {
    lines
        .lock()
        .expect("lines")
        .iter()
        .any(|l| l.contains("now runs the detectors"))
}

/// The shutdowns of IR in a node's timeline since `since`.
fn shutdowns(base: &str, since: i64) -> Vec<Value> {
    let path = format!(
        "/api/v1/timeline?cc=ir&kind=shutdown&since={}",
        format_time(since).replace(' ', "%20")
    );
    let (status, body) = http(base, "GET", &path, &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["events"].as_array().cloned().unwrap_or_default()
}

/// Whether `events` hold an ended, confirmed shutdown of AS64500 from about `cut` to `back`.
fn has_cut(events: &[Value], cut: i64, back: i64) -> bool {
    let at = |v: &Value| {
        v.as_str()
            .and_then(vantage_aggregator::store::model::parse_time)
    };
    events.iter().any(|e| {
        e["entity"]["asn"] == "AS64500"
            && e["status"] == "ended"
            && e["suspected"] == false
            && at(&e["start"]).is_some_and(|s| (s - cut).abs() <= 120)
            && at(&e["end"]).is_some_and(|s| (s - back).abs() <= 120)
    })
}

/// Waits up to `limit` for `done`, every 300 ms.
fn wait(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    done()
}

#[test]
fn two_nodes_share_one_clickhouse_and_the_detectors_move_when_their_node_dies() {
    let clickhouse = vantage_fixtures::clickhouse::Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let url = clickhouse.url("vantage");
    let dir = tempdir("clickhouse-nodes");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&dir.join("ca.pem"));
    let store = Location::ClickHouse(url.clone())
        .open()
        .expect("open the store");

    // Four hours of five probes: a first cut now, a second in data uploaded after the kill.
    let now = vantage_aggregator::store::now();
    let t0 = (now - 4 * 3600) / 60 * 60;
    let (cut1, back1) = (t0 + 3600, t0 + 5400);
    let (split, cut2, back2) = (t0 + 9000, t0 + 10_800, t0 + 12_600);
    let probes: Vec<(Identity, ingest::Origin)> = (0..5)
        .map(|_| (Identity::generate().expect("key"), ingest::Origin::UNKNOWN))
        .collect();
    common::seed_probes(&*store, &probes, t0, split, cut1, back1);

    let (a, a_err) = node(&dir, "node-a", &url);
    let (b, b_err) = node(&dir, "node-b", &url);

    // One measurement uploaded through both nodes is stored once.
    let line = common::signed_in_ir(
        &probes[0].0,
        "canary",
        t0 + 30,
        0.0,
        json!({"ok": 4, "total": 4, "checks": []}),
    );
    let ndjson = [("Content-Type", "application/x-ndjson")];
    for server in [&a, &b] {
        let (status, body) = http(
            &server.base,
            "POST",
            "/api/v1/measurements",
            &ndjson,
            line.as_bytes(),
        );
        assert_eq!(status, 200, "{body}");
    }
    let search = format!(
        "/api/v1/measurements?cc=IR&test_name=canary&since={}&until={}&limit=100",
        format_time(t0 + 30).replace(' ', "%20"),
        format_time(t0 + 31).replace(' ', "%20")
    );
    for server in [&a, &b] {
        let (status, body) = http(&server.base, "GET", &search, &[], b"");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), 1, "{body}");
    }

    // Exactly one node takes the detectors; the first shutdown shows in both timelines.
    assert!(
        wait(Duration::from_secs(20), || runs_detectors(&a_err)
            || runs_detectors(&b_err)),
        "no node runs the detectors: {:?} {:?}",
        a_err.lock().expect("lines"),
        b_err.lock().expect("lines")
    );
    let found = wait(Duration::from_secs(60), || {
        has_cut(&shutdowns(&a.base, t0), cut1, back1)
    });
    assert!(found, "{:#?}", shutdowns(&a.base, t0));
    assert!(has_cut(&shutdowns(&b.base, t0), cut1, back1));
    // Give a second node every chance to claim the lease too.
    std::thread::sleep(Duration::from_secs(3));
    let (a_runs, b_runs) = (runs_detectors(&a_err), runs_detectors(&b_err));
    assert!(a_runs != b_runs, "both or neither run the detectors");

    // Kill the node that runs them; upload the second cut; the other takes over.
    let (mut holder, survivor, survivor_err) = if a_runs { (a, b, b_err) } else { (b, a, a_err) };
    holder.child.kill().expect("kill");
    holder.child.wait().expect("wait");
    let killed = Instant::now();
    common::seed_probes(&*store, &probes, split, now, cut2, back2);
    assert!(
        wait(Duration::from_secs(60), || runs_detectors(&survivor_err)),
        "the survivor never took the detectors over: {:?}",
        survivor_err.lock().expect("lines")
    );
    let found = wait(
        Duration::from_secs(60).saturating_sub(killed.elapsed()),
        || has_cut(&shutdowns(&survivor.base, t0), cut2, back2),
    );
    let events = shutdowns(&survivor.base, t0);
    assert!(
        found,
        "no second shutdown within a minute of the kill: {events:#?}"
    );
    assert!(has_cut(&events, cut1, back1), "{events:#?}");
    drop(survivor);
    drop(holder);
    std::fs::remove_dir_all(&dir).ok();
}
