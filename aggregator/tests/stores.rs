//! One story, told on both stores: the same test body runs against SQLite (`--store
//! sqlite:FILE`) and against a real ClickHouse server (`--store clickhouse://HOST:PORT/DB`),
//! through the real `vantage-aggregator serve` over HTTP and the real command line. A probe
//! key's signed measurements are uploaded (a repeat is a duplicate), found by a search paged
//! with `next`, fetched byte for byte and exported; heartbeats and canaries of five probes that
//! go dark for an hour show in the signals, `detect` finds the shutdown and both the API and
//! `timeline` show it; a revoked key's later uploads are refused. What a user sees must be the
//! same whichever store holds the data (`docs/architecture.md`).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::{AGGREGATOR, Server, http, spawn_server, tempdir};
use serde_json::{Value, json};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::model::parse_time;
use vantage_probe::envelope::Identity;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];
const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

/// Where one run of the story keeps its data: a directory of its own and the `--store` URL,
/// with the ClickHouse server (one per test, stopped on drop) when the store is ClickHouse.
struct Store {
    dir: PathBuf,
    url: String,
    _clickhouse: Option<vantage_fixtures::clickhouse::Server>,
}

#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite() {
    let dir = tempdir("stores-sqlite");
    let url = format!("sqlite:{}", dir.join("agg.db").display());
    let store = Store {
        dir,
        url,
        _clickhouse: None,
    };
    story(&store).await;
    // The SQLite file is where --store said, not somewhere --db-like.
    assert!(store.dir.join("agg.db").exists());
    std::fs::remove_dir_all(&store.dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn on_clickhouse() {
    let server = vantage_fixtures::clickhouse::Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let store = Store {
        dir: tempdir("stores-clickhouse"),
        url: server.url("vantage"),
        _clickhouse: Some(server),
    };
    story(&store).await;
    // Nothing went to a SQLite file beside the node's key.
    assert!(!store.dir.join("node").exists());
    std::fs::remove_dir_all(&store.dir).ok();
}

/// `vantage-aggregator ARGS --store URL`: (success, stdout, stderr).
fn cli(store: &Store, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AGGREGATOR)
        .args(args)
        .args(["--store", &store.url])
        .output()
        .expect("run vantage-aggregator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `serve --store URL` on a free port, without its own detectors, so that the events the story
/// sees are the ones `detect` made.
fn serve(store: &Store) -> Server {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--no-detect", "--db"])
        .arg(store.dir.join("node"))
        .args(["--store", &store.url]);
    spawn_server(serve)
}

/// A query string's value: everything but letters, digits and `-_.` percent-encoded.
fn enc(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// OONI's own successWithHTTP measurement, as the probe `key` signs it, made at `at` in `cc`.
fn page(key: &Identity, n: usize, cc: &str, at: i64) -> (String, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni/webconnectivity/generated-successWithHTTP.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    v["input"] = format!("http://www.example.com/page/{n}").into();
    v["probe_cc"] = cc.into();
    v["probe_asn"] = "AS3269".into();
    v["measurement_start_time"] = format_time(at).into();
    let (id, line) = key.seal(&v.to_string()).expect("seal");
    (id.to_string(), line)
}

/// The statuses of an upload's answer, in line order: (status, reason).
fn outcomes(body: &str) -> Vec<(String, Option<String>)> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|o| {
            (
                o["status"].as_str().unwrap_or_default().to_string(),
                o["reason"].as_str().map(String::from),
            )
        })
        .collect()
}

/// One probe of IR over `[from, to)`, dark during `[cut, back)`: a heartbeat a minute while
/// online, a canary round every five minutes (failing while dark, queued and uploaded once
/// back), all through the server as the probe would send them.
fn probe_life(base: &str, key: &Identity, p: i64, (from, to): (i64, i64), (cut, back): (i64, i64)) {
    let mut queue = Vec::new();
    let mut t = from + p * 7;
    while t < to {
        let online = !(cut..back).contains(&t);
        if online {
            let beat = common::signed_in_ir(key, "heartbeat", t, 0.0, json!({}));
            let (status, body) = http(base, "POST", "/api/v1/heartbeat", JSON, beat.as_bytes());
            assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
        }
        if (t - from) % 300 < 60 {
            let ok = if online { 4 } else { 0 };
            let keys = json!({"ok": ok, "total": 4, "checks": []});
            queue.push(common::signed_in_ir(
                key,
                "canary",
                t,
                p as f64 / 10.0,
                keys,
            ));
        }
        if online && !queue.is_empty() {
            let body = queue.join("\n");
            let (status, reply) = http(
                base,
                "POST",
                "/api/v1/measurements",
                NDJSON,
                body.as_bytes(),
            );
            assert_eq!(status, 200, "{reply}");
            assert!(
                outcomes(&reply).iter().all(|(s, _)| s == "accepted"),
                "{reply}"
            );
            queue.clear();
        }
        t += 60;
    }
}

async fn story(store: &Store) {
    let server = serve(store);
    let base = server.base.clone();
    let now = vantage_aggregator::store::now();

    // A probe key uploads 30 measurements: 24 of Italy, 6 of Germany, two at each minute (so
    // the search's order has ties to page through).
    let alice = Identity::generate().expect("key");
    let first = (now - 20 * 3600) / 60 * 60;
    let mut italy = Vec::new();
    let mut lines = Vec::new();
    for n in 0..30 {
        let cc = if n % 5 == 4 { "DE" } else { "IT" };
        let at = first + i64::try_from(n / 2).expect("small") * 60;
        let (id, line) = page(&alice, n, cc, at);
        if cc == "IT" {
            italy.push((id.clone(), line.clone()));
        }
        lines.push((id, line));
    }
    assert_eq!(italy.len(), 24);
    let body: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let (status, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        body.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    let o = outcomes(&reply);
    assert_eq!(o.len(), 30, "{reply}");
    assert!(o.iter().all(|(s, _)| s == "accepted"), "{reply}");
    // The same two again, and one of them twice in one body: duplicates, stored once.
    let again = format!("{}\n{}\n{}", lines[0].1, lines[1].1, lines[0].1);
    let (status, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        again.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    let statuses: Vec<String> = outcomes(&reply).into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses, ["duplicate", "duplicate", "duplicate"], "{reply}");

    // The search, filtered and paged with `next`: every Italian measurement once, in time
    // order, and nothing of Germany.
    let italy_ids: BTreeSet<String> = italy.iter().map(|(id, _)| id.clone()).collect();
    let filters = format!(
        "cc=it&test_name=web_connectivity&since={}&until={}&limit=5",
        enc(&format_time(first)),
        enc(&format_time(first + 3600))
    );
    let mut paged: Vec<Value> = Vec::new();
    let mut path = format!("/api/v1/measurements?{filters}");
    let mut pages = 0;
    loop {
        let (status, body) = http(&base, "GET", &path, &[], b"");
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let rows = v["results"].as_array().expect("results");
        assert!(rows.len() <= 5, "{body}");
        paged.extend(rows.iter().cloned());
        pages += 1;
        assert!(pages <= 10, "paging does not end: {body}");
        match v["next"].as_str() {
            Some(next) => path = format!("/api/v1/measurements?{filters}&cursor={}", enc(next)),
            None => break,
        }
    }
    assert_eq!(pages, 5, "24 rows by 5");
    let paged_ids: Vec<String> = paged
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(paged_ids.len(), 24, "no row twice: {paged_ids:?}");
    assert_eq!(
        paged_ids.iter().cloned().collect::<BTreeSet<_>>(),
        italy_ids
    );
    let times: Vec<&str> = paged
        .iter()
        .filter_map(|r| r["measured_at"].as_str())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for r in &paged {
        assert_eq!(
            (
                r["probe_cc"].as_str(),
                r["probe_asn"].as_str(),
                r["source"].as_str()
            ),
            (Some("IT"), Some("AS3269"), Some("vantage")),
            "{r}"
        );
        assert_eq!(r["blocking"], false, "{r}");
    }
    // The same search from the command line.
    let (ok, out, err) = cli(store, &["query", "--cc", "IT", "--limit", "1000"]);
    assert!(ok, "{err}");
    let queried: BTreeSet<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(queried, italy_ids);
    let (ok, out, err) = cli(store, &["query", "--cc", "DE", "--limit", "1000"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 6, "{out}");

    // One envelope, byte for byte as it was signed, before and after compaction.
    let (id, line) = &italy[7];
    let (status, body) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements/{id}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("{line}\n"));
    let (ok, out, err) = cli(store, &["compact"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("compacted ") && out.trim_end().ends_with(" measurements"),
        "{out}"
    );
    let (status, body) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements/{id}"),
        &[],
        b"",
    );
    assert_eq!((status, body), (200, format!("{line}\n")));
    let (status, body) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements/{}", "0".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(status, 404, "{body}");

    // Exports: JSONL is the signed lines themselves, CSV a row per measurement; the same ids
    // as the search, from the command line and from the API.
    let (ok, jsonl, err) = cli(
        store,
        &[
            "export", "--cc", "IT", "--format", "jsonl", "--limit", "1000",
        ],
    );
    assert!(ok, "{err}");
    let exported: BTreeSet<&str> = jsonl.lines().collect();
    let signed: BTreeSet<&str> = italy.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(jsonl.lines().count(), 24);
    assert_eq!(exported, signed);
    let (ok, csv, err) = cli(
        store,
        &["export", "--cc", "IT", "--format", "csv", "--limit", "1000"],
    );
    assert!(ok, "{err}");
    let mut rows = csv.lines();
    assert!(
        rows.next()
            .is_some_and(|h| h.starts_with("id,source,probe_cc,probe_asn")),
        "{csv}"
    );
    let csv_ids: Vec<&str> = rows
        .map(|r| r.split(',').next().unwrap_or_default())
        .collect();
    assert_eq!(csv_ids.len(), 24, "{csv}");
    assert_eq!(
        csv_ids
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        italy_ids
    );
    let (status, api_csv) = http(&base, "GET", "/api/v1/export?format=csv&cc=IT", &[], b"");
    assert_eq!(status, 200, "{api_csv}");
    assert_eq!(api_csv.lines().count(), 25, "header and 24 rows: {api_csv}");
    let (status, api_jsonl) = http(&base, "GET", "/api/v1/export?format=jsonl&cc=IT", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(api_jsonl.lines().collect::<BTreeSet<_>>(), signed);

    // Five probes of IR / AS64500 report for three hours up to now, dark for the middle hour,
    // through the server (heartbeats and canaries), each probe from its own thread.
    let t0 = (now - 3 * 3600) / 60 * 60;
    let (cut, back) = (t0 + 3600, t0 + 7200);
    let probes: Vec<Identity> = (0..5).map(|_| Identity::generate().expect("key")).collect();
    std::thread::scope(|s| {
        for (p, key) in probes.iter().enumerate() {
            let base = base.as_str();
            let p = i64::try_from(p).expect("small");
            s.spawn(move || probe_life(base, key, p, (t0, now), (cut, back)));
        }
    });

    // The signals show the five probes, and none of them online in the dark hour.
    let (status, body) = http(&base, "GET", "/api/v1/signals?cc=ir", &[], b"");
    assert_eq!(status, 200, "{body}");
    let signals: Value = serde_json::from_str(&body).expect("json");
    let bins = signals["bins"].as_array().expect("bins").clone();
    assert!(bins.len() >= 30, "{body}");
    assert_eq!(
        bins.iter().filter_map(|b| b["probes"].as_i64()).max(),
        Some(5),
        "{body}"
    );
    assert!(
        bins.iter()
            .any(|b| b["heartbeats"] == 25 && b["probes_online"] == 5),
        "{body}"
    );
    let bin_at = |t: i64| {
        bins.iter()
            .find(|b| b["start"].as_str().and_then(parse_time) == Some(t / 300 * 300))
            .unwrap_or_else(|| panic!("no bin at {}: {body}", format_time(t)))
    };
    let dark = bin_at(cut + 1800);
    assert_eq!(
        (dark["heartbeats"].as_i64(), dark["probes_online"].as_i64()),
        (Some(0), Some(0)),
        "{dark}"
    );
    assert_eq!(dark["canary_success"], 0.0, "{dark}");
    let light = bin_at(back + 1800);
    assert_eq!(light["canary_success"], 1.0, "{light}");
    let (ok, out, err) = cli(store, &["signals", "--cc", "IR", "--json"]);
    assert!(ok, "{err}");
    let cli_bins: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(cli_bins, bins, "the command line's bins are the API's");

    // Nothing detected yet (the server runs no detectors); `detect` finds the one shutdown.
    let since = format_time(t0 - 3600);
    let timeline_path = format!("/api/v1/timeline?cc=ir&since={}", enc(&since));
    let (status, body) = http(&base, "GET", &timeline_path, &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0), "{body}");
    let (ok, _, err) = cli(store, &["detect", "--cc", "IR", "--since", &since]);
    assert!(ok, "{err}");
    assert!(err.contains("1 events in the window"), "{err}");
    let (status, body) = http(&base, "GET", &timeline_path, &[], b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{body}");
    let e = &events[0];
    assert_eq!(
        (
            e["kind"].as_str(),
            e["scope"].as_str(),
            e["entity"]["asn"].as_str(),
            e["status"].as_str(),
            e["suspected"].as_bool(),
            e["probes"].as_i64()
        ),
        (
            Some("shutdown"),
            Some("network"),
            Some("AS64500"),
            Some("ended"),
            Some(false),
            Some(5)
        ),
        "{e}"
    );
    let at = |v: &Value| v.as_str().and_then(parse_time).expect("a time");
    assert!(
        (at(&e["start"]) - cut).abs() <= 120,
        "start {} vs {}",
        e["start"],
        format_time(cut)
    );
    assert!(
        (at(&e["end"]) - back).abs() <= 120,
        "end {} vs {}",
        e["end"],
        format_time(back)
    );
    let (ok, out, err) = cli(
        store,
        &["timeline", "--cc", "IR", "--since", &since, "--json"],
    );
    assert!(ok, "{err}");
    let from_cli: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(&from_cli, e, "the command line shows the API's event");
    let (ok, table, err) = cli(store, &["timeline", "--cc", "IR", "--since", &since]);
    assert!(ok, "{err}");
    assert!(
        table.contains("shutdown")
            && table.contains("AS64500")
            && table.contains("canaries failed"),
        "{table}"
    );
    // Detection again recomputes the same event, not a second one.
    let (ok, _, err) = cli(store, &["detect", "--cc", "IR", "--since", &since]);
    assert!(ok && err.contains("1 events in the window"), "{err}");
    let (_, body) = http(&base, "GET", &timeline_path, &[], b"");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(v["events"][0]["id"], e["id"], "{body}");

    // Revoking a key: listed as revoked, and its later uploads and heartbeats are refused
    // while the others' still go in.
    let key = alice.public_key();
    let (ok, out, err) = cli(store, &["keys", "revoke", &key]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("revoked {key}: its later submissions will be refused")
    );
    let (ok, out, err) = cli(store, &["keys", "list"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == format!("{key} revoked")), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" trusted")).count(),
        5,
        "{out}"
    );
    let (late_id, late) = page(&alice, 99, "IT", first + 3000);
    let (status, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        late.as_bytes(),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        outcomes(&reply),
        [("rejected".to_string(), Some("revoked key".to_string()))],
        "{reply}"
    );
    let beat = common::signed_in_ir(&alice, "heartbeat", now, 0.0, json!({}));
    let (status, body) = http(&base, "POST", "/api/v1/heartbeat", JSON, beat.as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("revoked key"), "{body}");
    let (status, _) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements/{late_id}"),
        &[],
        b"",
    );
    assert_eq!(status, 404, "a refused measurement is not stored");
    let (_, other) = page(&probes[0], 100, "IT", first + 3000);
    let (_, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        other.as_bytes(),
    );
    assert_eq!(
        outcomes(&reply),
        [("accepted".to_string(), None)],
        "{reply}"
    );
    let (ok, out, err) = cli(store, &["keys", "allow", "not a key"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("\"not a key\" is not a base64 Ed25519 public key"),
        "{err}"
    );

    // OONI's measurements imported beside them (once: a second import finds them there), and
    // every web_connectivity verdict recomputed.
    let ooni = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni/webconnectivity/generated-successWithHTTP.json");
    let ooni = ooni.to_str().expect("utf-8");
    let (ok, out, err) = cli(store, &["import-ooni", ooni]);
    assert!(ok, "{err}");
    assert!(
        out.contains("files: 1 imported, 0 skipped as already imported, 0 refused\n")
            && out.contains("measurements: 1 stored, 0 already there, 0 skipped\n"),
        "{out}"
    );
    // Read again (--again: the file is recorded as imported), the measurement is there.
    let (ok, out, err) = cli(store, &["import-ooni", "--again", ooni]);
    assert!(ok, "{err}");
    assert!(
        out.contains("measurements: 0 stored, 1 already there, 0 skipped\n"),
        "{out}"
    );
    let (ok, out, err) = cli(store, &["import-ooni", ooni]);
    assert!(ok, "{err}");
    assert!(
        out.contains("files: 0 imported, 1 skipped as already imported, 0 refused\n"),
        "{out}"
    );
    let (ok, out, err) = cli(
        store,
        &[
            "query",
            "--cc",
            "IT",
            "--since",
            "2024-02-12",
            "--until",
            "2024-02-13",
        ],
    );
    assert!(ok, "{err}");
    let imported: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(
        (imported["source"].as_str(), imported["probe_asn"].as_str()),
        (Some("ooni"), Some("AS137")),
        "{imported}"
    );
    let (ok, out, err) = cli(store, &["rescore"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "rescored 32 measurements with vantage-3",
        "30, 1 and 1"
    );
    drop(server);
}

/// `vantage-aggregator ARGS` as given: (exit code, stderr).
fn bare(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(AGGREGATOR)
        .args(args)
        .output()
        .expect("run vantage-aggregator");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_data_command_takes_one_store() {
    let dir = tempdir("stores-arguments");
    let db = dir.join("agg.db");
    let db = db.to_str().expect("utf-8");
    let sqlite = format!("sqlite:{db}");
    for command in [
        &["query"][..],
        &["export"],
        &["signals", "--cc", "IR"],
        &["timeline"],
        &["detect"],
        &["import-ooni", "x.json"],
        &["rescore"],
        &["compact"],
    ] {
        let (code, err) = bare(command);
        assert_eq!(code, Some(2), "{command:?}: {err}");
        // import-ooni needs no store for --dry-run, so it says so itself.
        assert!(
            err.contains("<--db <FILE>|--store <URL>>")
                || (command[0] == "import-ooni"
                    && err.contains("give --db FILE or --store URL (or --dry-run")),
            "{command:?}: {err}"
        );
        let both = [command, &["--db", db, "--store", &sqlite]].concat();
        let (code, err) = bare(&both);
        assert_eq!(code, Some(2), "{command:?}: {err}");
        assert!(
            err.contains("the argument '--db <FILE>' cannot be used with '--store <URL>'"),
            "{command:?}: {err}"
        );
    }
    let (code, err) = bare(&["keys", "list"]);
    assert_eq!(
        (code, err.trim()),
        (Some(2), "error: --db FILE or --store URL is required")
    );
    let (code, err) = bare(&["keys", "list", "--db", db, "--store", &sqlite]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");

    // A store that is not one, a read of a file that is not there (not created), and a
    // ClickHouse that does not answer: each says so.
    let (code, err) = bare(&["query", "--store", "postgres://127.0.0.1/v"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the stores are sqlite:FILE and clickhouse://HOST:PORT/DB"),
        "{err}"
    );
    let (code, err) = bare(&["query", "--store", "sqlite:"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sqlite: needs a file"), "{err}");
    for args in [
        ["query", "--store", &sqlite],
        ["export", "--store", &sqlite],
    ] {
        let (code, err) = bare(&args);
        assert_eq!(
            (code, err.trim()),
            (Some(2), format!("error: no database at {db}").as_str())
        );
    }
    assert!(!dir.join("agg.db").exists(), "a read created the database");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "clickhouse://127.0.0.1:{}/vantage",
        closed.local_addr().expect("addr").port()
    );
    drop(closed);
    for command in [&["query"][..], &["keys", "list"], &["detect"]] {
        let (code, err) = bare(&[command, &["--store", &url]].concat());
        assert_eq!(code, Some(2), "{command:?}: {err}");
        assert!(
            err.starts_with(&format!("error: cannot open the store {url}: ClickHouse ")),
            "{command:?}: {err}"
        );
    }
    // The --store sqlite: file is the one written.
    let (code, err) = bare(&["keys", "list", "--store", &sqlite]);
    assert_eq!(code, Some(0), "{err}");
    assert!(dir.join("agg.db").exists());
    std::fs::remove_dir_all(&dir).ok();
}
