//! No stored value reaches a researcher's spreadsheet as a formula (OWASP "CSV Injection";
//! README.md, "Timeline"): a measurement whose target a probe chose to start with `=`, `+`,
//! `-` or `@`, and an event naming such targets, come out of both CSVs (`GET /api/v1/export`
//! and `export --format csv`; `GET /api/v1/timeline` and `timeline --csv`) with a `'` before
//! the cell, read back with the `csv` crate, while an ordinary row is written as before. A
//! real `serve` on loopback, a real SQLite file and the real binaries.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{AGGREGATOR, fresh_aggregator, http};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::model::{Entity, Event, Kind, Scope};
use vantage_probe::envelope::Identity;

/// Targets a probe can submit that a spreadsheet would run.
const HOSTILE: [&str; 4] = ["=HYPERLINK(\"http://x\",\"y\")", "+1", "@SUM(A1)", "-2+3"];

const ORDINARY: &str = "http://a.example/";

/// A measurement of `input` by `key` in IR / AS64500 at `at`, sealed.
fn measurement(key: &Identity, input: &str, at: i64) -> String {
    let mut m = serde_json::to_value(vantage_probe::ooni::Measurement::vantage(
        "ndt",
        "0.1.0",
        serde_json::json!({}),
    ))
    .expect("json");
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["input"] = input.into();
    m["measurement_start_time"] = format_time(at).into();
    key.seal(&m.to_string()).expect("seal").1
}

/// The records of a CSV with a header, each field by its header's name.
fn records(text: &str) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let names: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.expect("a record");
            assert_eq!(r.len(), names.len(), "{text}");
            names
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn run(args: &[&str]) -> String {
    let out = Command::new(AGGREGATOR).args(args).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_target_opens_as_text_in_both_csvs_and_an_ordinary_row_is_unchanged() {
    let (server, dir, db) = fresh_aggregator("csv-guard").await;
    let db_arg = db.to_str().expect("utf-8");
    let key = Identity::generate().expect("key");
    let at = vantage_aggregator::store::now() - 3600;
    let lines: Vec<String> = HOSTILE
        .iter()
        .chain([&ORDINARY])
        .enumerate()
        .map(|(i, input)| measurement(&key, input, at + i as i64))
        .collect();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (status, answer) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        &[("Content-Type", "application/x-ndjson")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");

    // The export: the API's and the command's are the same bytes.
    let (status, api) = http(
        &server.base,
        "GET",
        "/api/v1/export?format=csv&cc=IR",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{api}");
    let cli = run(&["export", "--db", db_arg, "--format", "csv", "--cc", "IR"]);
    assert_eq!(api, cli, "the API's CSV is the command's");
    let rows = records(&cli);
    let inputs: Vec<&str> = rows.iter().map(|r| r["input"].as_str()).collect();
    for hostile in HOSTILE {
        let guarded = format!("'{hostile}");
        assert!(
            inputs.contains(&guarded.as_str()),
            "{guarded:?} in {inputs:?}"
        );
        assert!(
            !inputs.contains(&hostile),
            "{hostile:?} unguarded in {inputs:?}"
        );
    }
    let ordinary = rows
        .iter()
        .find(|r| r["input"] == ORDINARY)
        .expect("the ordinary row");
    // Byte for byte what a writer without the guard wrote: nothing in it needs quoting.
    let header = vantage_aggregator::api::export::CSV_HEADER;
    let unguarded: Vec<&str> = header.split(',').map(|n| ordinary[n].as_str()).collect();
    assert!(
        cli.lines().any(|l| l == unguarded.join(",")),
        "{unguarded:?} in:\n{cli}"
    );
    assert_eq!(ordinary["probe_asn"], "AS64500");

    // The timeline: an event naming the hostile targets and one naming an ordinary one.
    let event = |id: &str, category: &str, targets: &[&str]| Event {
        id: id.into(),
        entity: Entity {
            cc: "IR".into(),
            asn: Some("AS64500".into()),
            asns: Vec::new(),
        },
        kind: Kind::Blocking,
        scope: Scope::Service,
        layer: None,
        category: Some(category.into()),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        start: format_time(at),
        end: None,
        status: "ongoing".into(),
        suspected: false,
        confidence: 0.9,
        probes: 2,
        evidence: Vec::new(),
        rate_kbps: None,
    };
    {
        let store = vantage_aggregator::store::Sqlite::open(&db).expect("open");
        vantage_aggregator::store::Storage::replace_events(
            &store,
            "IR",
            at - 86_400,
            &[Kind::Blocking],
            &[
                event("00000000000000aa", "@cmd", &HOSTILE),
                event("00000000000000bb", "NEWS", &["a.example", "b.example"]),
            ],
        )
        .expect("events");
    }
    let since = format_time(at - 60);
    let cli = run(&[
        "timeline", "--db", db_arg, "--cc", "IR", "--since", &since, "--csv",
    ]);
    let (status, api) = http(
        &server.base,
        "GET",
        &format!(
            "/api/v1/timeline?cc=IR&since={}&format=csv",
            since.replace(' ', "%20")
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{api}");
    assert_eq!(api, cli, "the API's CSV is the command's");
    let rows: HashMap<String, HashMap<String, String>> = records(&cli)
        .into_iter()
        .map(|r| (r["id"].clone(), r))
        .collect();
    let hostile = &rows["00000000000000aa"];
    assert_eq!(
        hostile["targets"],
        format!("'{}", HOSTILE.join(" ")),
        "{cli}"
    );
    assert_eq!(hostile["category"], "'@cmd", "{cli}");
    assert_eq!(hostile["confidence"], "0.9");
    let ordinary = &rows["00000000000000bb"];
    assert_eq!(ordinary["targets"], "a.example b.example");
    let header = vantage_aggregator::api::csv_line::CSV_HEADER;
    let unguarded: Vec<&str> = header.split(',').map(|n| ordinary[n].as_str()).collect();
    assert!(
        cli.lines().any(|l| l == unguarded.join(",")),
        "{unguarded:?} in:\n{cli}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
