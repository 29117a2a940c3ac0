//! By which route evidence reached the aggregator (docs/carry.md), with a real `serve` on
//! loopback, real SQLite files and the real binaries: a direct upload is stored as `upload`,
//! an upload with a valid `vantage-relay` header as `relay` with the relayer's key, a file
//! given to `vantage-aggregator ingest` as `file`; a forged, mangled, doubled or huge relay
//! header refuses the whole request and stores nothing; a duplicate keeps its first route;
//! the timeline (`timeline` table, JSON and CSV, `GET /api/v1/timeline` in JSON and CSV)
//! says per route how much evidence came, when, and whether while the event went on; and the
//! event's evidence bundle says each envelope's route (`arrival.json`, the report, a note of
//! `vantage verify`).

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{AGGREGATOR, fresh_aggregator, http, serve, signed_in_ir};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::Storage as _;
use vantage_aggregator::store::model::{Entity, Event, Kind, Scope};
use vantage_probe::carry::{Item, write_export};
use vantage_probe::envelope::{Identity, verify};
use vantage_probe::relay_proof::{RELAY_HEADER, relay_header};

const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

fn now() -> i64 {
    vantage_aggregator::store::now()
}

/// `n` failed canary rounds of `key`, the `first`th minute on, an hour ago.
fn canaries(key: &Identity, first: i64, n: i64) -> Vec<String> {
    (first..first + n)
        .map(|i| {
            signed_in_ir(
                key,
                "canary",
                now() - 3600 + i * 60,
                0.1,
                serde_json::json!({"ok": 0, "total": 4, "checks": []}),
            )
        })
        .collect()
}

fn id(envelope: &str) -> String {
    verify(envelope).expect("verify").id.to_string()
}

fn body(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Every stored measurement's (route, relayed_by), from the search API.
fn routes(base: &str) -> HashMap<String, (String, Option<String>)> {
    common::search_results(base, "cc=IR&limit=100")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_string(),
                (
                    r["route"].as_str().expect("route").to_string(),
                    r["relayed_by"].as_str().map(str::to_string),
                ),
            )
        })
        .collect()
}

/// The rows of a timeline CSV by event id, each field by its header's name.
fn csv_rows(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let names: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let row: HashMap<String, String> = names
                .iter()
                .cloned()
                .zip(r.expect("a CSV record").iter().map(str::to_string))
                .collect();
            (row["id"].clone(), row)
        })
        .collect()
}

fn event(id: &str, kind: Kind, start: i64, end: Option<i64>, evidence: &[String]) -> Event {
    Event {
        id: id.into(),
        entity: Entity {
            cc: "IR".into(),
            asn: Some("AS64500".into()),
            asns: Vec::new(),
        },
        kind,
        scope: Scope::Network,
        layer: None,
        category: None,
        targets: Vec::new(),
        start: format_time(start),
        end: end.map(format_time),
        status: if end.is_some() { "ended" } else { "ongoing" }.into(),
        suspected: false,
        confidence: 0.9,
        probes: 2,
        evidence: evidence.to_vec(),
        rate_kbps: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_measurement_keeps_the_route_it_came_by() {
    let (server, dir, db) = fresh_aggregator("arrival").await;
    let base = server.base.clone();
    let (probe, relayer, other) = (
        Identity::generate().expect("key"),
        Identity::generate().expect("key"),
        Identity::generate().expect("key"),
    );
    let uploaded = canaries(&probe, 0, 2);
    let relayed = canaries(&probe, 2, 2);
    let filed = canaries(&probe, 4, 2);
    let refused = canaries(&probe, 6, 2);

    // A direct upload.
    let (status, text) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON],
        body(&uploaded).as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("\"accepted\"").count(), 2, "{text}");

    // A relay: the relaying probe signs the exact body with its own key.
    let relayed_body = body(&relayed);
    let header = relay_header(&relayer, relayed_body.as_bytes());
    let (status, text) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON, (RELAY_HEADER, &header)],
        relayed_body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("\"accepted\"").count(), 2, "{text}");

    // Bad relay headers: the whole request is refused with the reason, nothing is stored.
    let refused_body = body(&refused);
    let for_another_body = relay_header(&relayer, relayed_body.as_bytes());
    let key_swapped = relay_header(&relayer, refused_body.as_bytes())
        .replace(&relayer.public_key(), &other.public_key());
    let huge = format!("v1.{}", "A".repeat(4000));
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![NDJSON, (RELAY_HEADER, &for_another_body)],
            "bad signature",
        ),
        (vec![NDJSON, (RELAY_HEADER, &key_swapped)], "bad signature"),
        (vec![NDJSON, (RELAY_HEADER, "v1.garbage")], "malformed"),
        (
            vec![NDJSON, (RELAY_HEADER, "v9.a.b")],
            "unsupported version",
        ),
        (vec![NDJSON, (RELAY_HEADER, "v1.AAAA.AAAA")], "bad key"),
        (vec![NDJSON, (RELAY_HEADER, &huge)], "too long"),
        (
            vec![NDJSON, (RELAY_HEADER, &header), (RELAY_HEADER, &header)],
            "more than once",
        ),
    ];
    for (headers, want) in &cases {
        let (status, text) = http(
            &base,
            "POST",
            "/api/v1/measurements",
            headers,
            refused_body.as_bytes(),
        );
        assert_eq!(status, 400, "{want}: {text}");
        assert!(
            text.contains("vantage-relay header") && text.contains(want),
            "{want}: {text}"
        );
    }

    // The relayed body sent again as a plain upload: duplicates, still relayed.
    let (status, text) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON],
        relayed_body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("\"duplicate\"").count(), 2, "{text}");

    let stored = routes(&base);
    for e in &uploaded {
        assert_eq!(stored[&id(e)], ("upload".into(), None));
    }
    for e in &relayed {
        assert_eq!(stored[&id(e)], ("relay".into(), Some(relayer.public_key())));
    }
    for e in &refused {
        assert!(
            !stored.contains_key(&id(e)),
            "a refused relay stored {}",
            id(e)
        );
    }
    drop(server);

    // A file, holding one measurement an upload already brought: that one stays an upload.
    let file = dir.join("carried.vantage.gz");
    let items: Vec<Item> = filed
        .iter()
        .chain(&uploaded[..1])
        .map(|e| Item {
            id: id(e),
            measured_at: serde_json::from_str::<serde_json::Value>(e).expect("json")["measurement"]
                ["measurement_start_time"]
                .as_str()
                .expect("time")
                .into(),
            envelope: e.clone(),
        })
        .collect();
    write_export(&file, &probe, &items, now()).expect("export");
    let db_arg = db.to_str().expect("path");
    let out = Command::new(AGGREGATOR)
        .args(["ingest", "--db", db_arg])
        .arg(&file)
        .output()
        .expect("ingest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 accepted, 1 duplicate"), "{stdout}");

    // Two events: one ongoing, with all the evidence; one that ended before any of it came.
    let all: Vec<String> = [&uploaded, &relayed, &filed]
        .into_iter()
        .flatten()
        .map(|e| id(e))
        .collect();
    let filed_ids: Vec<String> = filed.iter().map(|e| id(e)).collect();
    // A minute before the first canary, so that the shutdown's bundle below holds it.
    let start = now() - 3600 - 60;
    {
        let store = vantage_aggregator::store::Sqlite::open(&db).expect("open");
        store
            .replace_events(
                "IR",
                start - 86_400,
                &[Kind::Shutdown, Kind::Blocking],
                &[
                    event("00000000000000aa", Kind::Shutdown, start, None, &all),
                    event(
                        "00000000000000bb",
                        Kind::Blocking,
                        start,
                        Some(start + 600),
                        &filed_ids,
                    ),
                ],
            )
            .expect("events");
    }

    let since = format_time(start - 60);
    let out = Command::new(AGGREGATOR)
        .args([
            "timeline", "--db", db_arg, "--cc", "IR", "--since", &since, "--json",
        ])
        .output()
        .expect("timeline");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let events: HashMap<String, serde_json::Value> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (v["id"].as_str().expect("id").to_string(), v)
        })
        .collect();
    let arrival = |event: &serde_json::Value| -> HashMap<String, (u64, u64, u64)> {
        event["arrival"]
            .as_array()
            .expect("arrival")
            .iter()
            .map(|a| {
                assert!(a["first"].as_str().expect("first") <= a["last"].as_str().expect("last"));
                (
                    a["route"].as_str().expect("route").to_string(),
                    (
                        a["count"].as_u64().expect("count"),
                        a["while_ongoing"].as_u64().expect("while_ongoing"),
                        a["relayers"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    };
    let shutdown = &events["00000000000000aa"];
    assert_eq!(
        arrival(shutdown),
        HashMap::from([
            ("upload".to_string(), (2, 2, 0)),
            ("relay".to_string(), (2, 2, 1)),
            ("file".to_string(), (2, 2, 0)),
        ]),
        "{shutdown}"
    );
    assert_eq!(shutdown["arrived_while_ongoing"], true);
    let ended = &events["00000000000000bb"];
    assert_eq!(
        arrival(ended),
        HashMap::from([("file".to_string(), (2, 0, 0))]),
        "{ended}"
    );
    assert_eq!(ended["arrived_while_ongoing"], false);

    // The table says it in words.
    let out = Command::new(AGGREGATOR)
        .args(["timeline", "--db", db_arg, "--cc", "IR", "--since", &since])
        .output()
        .expect("timeline");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("Evidence arrived: 2 by file ("), "{table}");
    assert!(table.contains("2 relayed by 1 probe ("), "{table}");
    assert!(table.contains("while the shutdown went on)"), "{table}");

    // The CSV carries it in its last columns, the older columns in their places.
    let out = Command::new(AGGREGATOR)
        .args([
            "timeline", "--db", db_arg, "--cc", "IR", "--since", &since, "--csv",
        ])
        .output()
        .expect("timeline");
    let csv_cli = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{csv_cli}");
    let rows = csv_rows(&csv_cli);
    let shutdown_row = &rows["00000000000000aa"];
    let columns = |row: &HashMap<String, String>| -> Vec<String> {
        [
            "arrival_upload",
            "arrival_relay",
            "arrival_file",
            "arrival_import",
            "arrival_relayers",
            "arrival_while_ongoing",
        ]
        .iter()
        .map(|c| row[*c].clone())
        .collect()
    };
    assert_eq!(
        columns(shutdown_row),
        ["2", "2", "2", "0", "1", "6"],
        "{csv_cli}"
    );
    assert_eq!(shutdown_row["kind"], "shutdown");
    assert!(
        shutdown_row["arrival_first"] <= shutdown_row["arrival_last"]
            && shutdown_row["arrival_first"].len() == 19,
        "{csv_cli}"
    );
    assert_eq!(
        columns(&rows["00000000000000bb"]),
        ["0", "0", "2", "0", "0", "0"],
        "{csv_cli}"
    );
    assert!(
        csv_cli.starts_with(
            "id,cc,asn,asns,kind,scope,layer,category,targets,start,end,status,suspected,confidence,probes,evidence,rate_kbps,arrival_upload,"
        ),
        "{csv_cli}"
    );

    // And so does the API, from a server that runs no detector to replace the events.
    let ca = dir.join("ca.pem");
    let server = serve(&ca, &db, &["--no-detect"]).await;
    let path = format!("/api/v1/timeline?cc=IR&since={}", since.replace(' ', "%20"));
    let (status, text) = http(&server.base, "GET", &path, &[], b"");
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let api_shutdown = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["id"] == "00000000000000aa")
        .expect("the shutdown");
    assert_eq!(arrival(api_shutdown), arrival(shutdown));
    let (status, csv_api) = http(&server.base, "GET", &format!("{path}&format=csv"), &[], b"");
    assert_eq!(status, 200, "{csv_api}");
    assert_eq!(csv_api, csv_cli, "the API's CSV is the command's");

    // The shutdown's evidence bundle says how each envelope arrived, as information: in
    // arrival.json, the report and a note of `vantage verify`, which still verifies it all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = http(&server.base, "GET", "/log/checkpoint", &[], b"");
        let size: u64 = body
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if status == 200 && size >= all.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let zip = dir.join("shutdown.zip");
    let out = Command::new(AGGREGATOR)
        .args(["evidence", "00000000000000aa", "--db", db_arg, "--out"])
        .arg(&zip)
        .output()
        .expect("evidence");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = unzip(&zip);
    let arrival_json: serde_json::Value =
        serde_json::from_slice(&files["evidence-00000000000000aa/arrival.json"]).expect("json");
    let said: HashMap<String, (String, Option<String>)> = arrival_json["envelopes"]
        .as_array()
        .expect("envelopes")
        .iter()
        .map(|e| {
            (
                e["id"].as_str().expect("id").to_string(),
                (
                    e["route"].as_str().expect("route").to_string(),
                    e["relayed_by"].as_str().map(str::to_string),
                ),
            )
        })
        .collect();
    assert_eq!(said.len(), 6, "{arrival_json}");
    for (envelopes, route, by) in [
        (&uploaded, "upload", None),
        (&relayed, "relay", Some(relayer.public_key())),
        (&filed, "file", None),
    ] {
        for e in envelopes {
            assert_eq!(
                said[&id(e)],
                (route.to_string(), by.clone()),
                "{arrival_json}"
            );
        }
    }
    let report =
        String::from_utf8_lossy(&files["evidence-00000000000000aa/report.html"]).into_owned();
    assert!(
        report.contains(&format!(
            "<td>relay by <code>{}</code></td>",
            relayer.public_key()
        )),
        "{report}"
    );
    assert!(
        report.contains(
            "This bundle holds 6 measurements: 2 uploaded by the probes that made them, 2 relayed by 1 other probe, 2 carried in an export file."
        ),
        "{report}"
    );
    let out = Command::new(common::vantage())
        .arg("verify")
        .arg(&zip)
        .output()
        .expect("vantage verify");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(
            "note arrival: of the 6 envelopes: 2 by upload, 2 relayed by 1 probe, 2 by file (as the aggregator recorded it"
        ),
        "{said}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file of a zip by name.
fn unzip(path: &std::path::Path) -> HashMap<String, Vec<u8>> {
    use std::io::Read as _;
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(path).expect("open")).expect("a zip");
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).expect("entry");
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).expect("read");
            (f.name().expect("name").to_string(), bytes)
        })
        .collect()
}
