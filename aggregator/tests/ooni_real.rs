//! OONI's real measurements of every generation, through the real binary: `score` reads every
//! one (a verdict for each test with rules, "no verdict" for the others, nothing refused), and
//! an archive imported with `import-ooni` makes a timeline: WhatsApp blocked in one network is
//! an event, as a researcher importing OONI's data would see it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{AGGREGATOR, tempdir};
use serde_json::Value;
use vantage_probe::verdict::services::SERVICE_TESTS;

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni")
        .join(path)
}

/// The JSON and JSONL files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    out.sort();
    out
}

fn measurements(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).expect("read");
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.expect("the test data is JSON"))
        .collect()
}

fn has_rules(test_name: &str) -> bool {
    test_name == "web_connectivity" || SERVICE_TESTS.contains(&test_name)
}

#[test]
fn score_reads_every_real_measurement_and_gives_a_verdict_wherever_there_are_rules() {
    let mut per_test: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let all: Vec<PathBuf> = files(&data("real"))
        .into_iter()
        .chain(files(&data("webconnectivity")))
        .collect();
    assert!(all.len() >= 98, "{} files", all.len());
    for file in &all {
        let out = Command::new(AGGREGATOR)
            .arg("score")
            .arg(file)
            .output()
            .expect("run score");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", file.display());
        let verdicts: Vec<Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a verdict line is JSON"))
            .collect();
        let ms = measurements(file);
        let scored: Vec<&Value> = ms
            .iter()
            .filter(|m| has_rules(m["test_name"].as_str().unwrap_or_default()))
            .collect();
        assert_eq!(verdicts.len(), scored.len(), "{}: {stdout}", file.display());
        for (m, v) in scored.iter().zip(&verdicts) {
            let name = m["test_name"].as_str().unwrap_or_default();
            // A web_connectivity verdict names its input; a service verdict its test.
            if name == "web_connectivity" {
                assert_eq!(v["input"], m["input"], "{}", file.display());
            } else {
                assert_eq!(v["test_name"], name, "{}", file.display());
            }
            assert!(
                v.get("blocking").is_some() && v.get("rule").is_some(),
                "{v}"
            );
            per_test.entry(name.to_string()).or_default().0 += 1;
        }
        // Tests without rules are said once each, as such, and are not failures.
        let no_verdict = stderr
            .lines()
            .filter(|l| l.contains(": no verdict for "))
            .count();
        assert_eq!(no_verdict, ms.len() - scored.len(), "{stderr}");
        assert_eq!(stderr.lines().count(), no_verdict, "{stderr}");
        for m in ms
            .iter()
            .filter(|m| !has_rules(m["test_name"].as_str().unwrap_or_default()))
        {
            per_test
                .entry(m["test_name"].as_str().unwrap_or_default().to_string())
                .or_default()
                .1 += 1;
        }
    }
    // Every generation of web_connectivity, and each service test the corpus has.
    assert_eq!(per_test["web_connectivity"].0, 71);
    for name in [
        "whatsapp",
        "telegram",
        "signal",
        "facebook_messenger",
        "tor",
        "vanilla_tor",
        "http_header_field_manipulation",
        "http_invalid_request_line",
        "urlgetter",
    ] {
        assert!(per_test[name].0 >= 1, "{name}: {per_test:?}");
    }
    for name in ["ndt", "dash", "psiphon", "tcp_connect", "http_requests"] {
        assert_eq!(per_test[name].0, 0, "{name} has no rules");
        assert!(per_test[name].1 >= 1, "{name}: {per_test:?}");
    }
}

/// The real WhatsApp measurements: one from a network whose resolver sinkholed WhatsApp's names
/// (JP, ooniprobe-android 3.7.1), one where everything worked (US).
fn whatsapp() -> (Value, Value) {
    let blocked = data(
        "real/ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221105223930.168194_JP_whatsapp_e3e891f975f0d5ef_full-true.json",
    );
    let working = data(
        "real/ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110103854.762862_US_whatsapp_cb48f652956e71e0_full-true.json",
    );
    (
        measurements(&blocked).remove(0),
        measurements(&working).remove(0),
    )
}

#[test]
fn an_imported_archive_of_blocked_whatsapp_is_an_event_on_the_timeline() {
    let dir = tempdir("ooni-real-timeline");
    let (blocked, working) = whatsapp();
    // Three runs an hour from AS64500 in IR for 48 hours, as OONI's archive would hold them;
    // from hour 20 to hour 31 every run finds WhatsApp's names sinkholed.
    let start = time::macros::datetime!(2026-03-01 00:00:00 UTC).unix_timestamp();
    let mut days: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hour in 0..48 {
        for run in 0..3 {
            let mut m = if (20..32).contains(&hour) {
                blocked.clone()
            } else {
                working.clone()
            };
            let at = time::OffsetDateTime::from_unix_timestamp(start + hour * 3600 + run * 600)
                .expect("time");
            let when = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
            m["measurement_start_time"] = when.clone().into();
            m["probe_cc"] = "IR".into();
            m["probe_asn"] = "AS64500".into();
            m["report_id"] = format!("20260301T000000Z_whatsapp_IR_64500_n1_{hour}x{run}").into();
            let day = when[..10].replace('-', "");
            days.entry(day)
                .or_default()
                .push(serde_json::to_string(&m).expect("json"));
        }
    }
    for (day, lines) in &days {
        let path = dir
            .join("archive/raw")
            .join(day)
            .join("00/IR/whatsapp")
            .join(format!("{day}00_IR_whatsapp.n1.0.jsonl"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    }
    let db = dir.join("agg.db");
    let db = db.to_str().expect("utf-8");
    let import = Command::new(AGGREGATOR)
        .args(["import-ooni", "--db", db])
        .arg(dir.join("archive"))
        .output()
        .expect("import");
    let said = String::from_utf8_lossy(&import.stdout);
    assert!(
        import.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(said.contains("144 stored"), "{said}");

    let detect = Command::new(AGGREGATOR)
        .args(["detect", "--db", db, "--cc", "IR", "--since", "2026-02-28"])
        .output()
        .expect("detect");
    assert!(
        detect.status.success(),
        "{}",
        String::from_utf8_lossy(&detect.stderr)
    );
    let timeline = Command::new(AGGREGATOR)
        .args([
            "timeline",
            "--db",
            db,
            "--cc",
            "IR",
            "--since",
            "2026-02-28",
            "--until",
            "2026-03-04",
            "--json",
        ])
        .output()
        .expect("timeline");
    let out = String::from_utf8_lossy(&timeline.stdout);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event is JSON"))
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    let e = &events[0];
    assert_eq!(e["kind"], "blocking", "{e}");
    assert_eq!(e["targets"], serde_json::json!(["whatsapp"]), "{e}");
    assert_eq!(e["layer"], "dns", "{e}");
    assert_eq!(e["status"], "ended", "{e}");
    assert!(e.to_string().contains("AS64500"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
