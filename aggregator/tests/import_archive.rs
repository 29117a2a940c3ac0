//! `import-ooni` of a directory tree laid out as OONI publishes its archive, through the real
//! binary into a real SQLite file: every measurement of the repository's OONI data stored
//! once, broken files reported by name without stopping the import, and a second run that
//! skips every file already done. Also where `score` says an error is.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{AGGREGATOR, tempdir};
use serde_json::Value;
use vantage_aggregator::store::Storage;
use vantage_probe::envelope::MeasurementId;

/// A directory of the repository's test data (tests/data/SOURCES.md).
fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

/// Every measurement of the files in `dir` (JSONL, or one indented document), with its file.
fn measurements(dir: &Path) -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            out.push((f.clone(), v.expect("the test data is JSON")));
        }
    }
    out
}

fn gzip(path: &Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::default(),
    );
    gz.write_all(text).expect("gzip");
    gz.finish().expect("gzip");
}

fn run(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(AGGREGATOR)
        .args(args)
        .args(paths)
        .output()
        .expect("run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tree: OONI's S3 layout (`raw/YYYYMMDD/HH/CC/TESTNAME/*.jsonl.gz`), one gzipped JSONL
/// file per day, country and test, plus two measurements as plain indented `.json` files,
/// a `.jsonl.gz` that is not gzip, a truncated one, and a YAML report of ooniprobe 1.x.
/// Returns the measurements stored per test name, and the three broken files.
struct Tree {
    root: PathBuf,
    expected: BTreeMap<String, usize>,
    days: usize,
    countries: usize,
    corrupt: PathBuf,
    truncated: PathBuf,
    yaml: PathBuf,
    first_line: String,
}

fn build_tree(dir: &Path) -> Tree {
    let root = dir.join("archive");
    let mut all = measurements(&data("ooni/real"));
    all.extend(measurements(&data("ooni/webconnectivity")));
    assert!(all.len() > 100, "{}", all.len());
    // Two indented documents stay plain `.json` files, as they are in the repository.
    let plain: Vec<PathBuf> = [
        "ooni/real/ooni_probe-cli__internal_minipipeline_testdata_webconnectivity_manual_noipv6_measurement@72b2be9.json",
        "ooni/real/ooni_probe-cli__internal_cmd_minipipeline_testdata_measurement@ace6f28.json",
    ]
    .iter()
    .map(|p| data(p))
    .collect();
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut files: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (file, m) in &all {
        let test = m["test_name"].as_str().expect("test_name").to_string();
        if plain.contains(file) {
            *expected.entry(test).or_default() += 1;
            continue;
        }
        let day: String = m["measurement_start_time"].as_str().expect("time")[..10]
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        let cc = m["probe_cc"].as_str().unwrap_or("ZZ").to_string();
        let line = m.to_string();
        if seen.insert(line.clone()) {
            *expected.entry(test.clone()).or_default() += 1;
        }
        files
            .entry(
                root.join("raw")
                    .join(&day)
                    .join("00")
                    .join(&cc)
                    .join(test.replace('_', ""))
                    .join(format!("{day}_{cc}_{test}.n0.0.jsonl.gz")),
            )
            .or_default()
            .push(line);
    }
    let days = files
        .keys()
        .map(|p| p.iter().nth_back(4).map(|d| d.to_owned()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let countries = files
        .keys()
        .map(|p| p.iter().nth_back(2).map(|d| d.to_owned()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut longest: (usize, Vec<String>) = (0, Vec::new());
    for (path, lines) in &files {
        let body = lines.join("\n") + "\n";
        gzip(path, body.as_bytes());
        if body.len() > longest.0 {
            longest = (body.len(), lines.clone());
        }
    }
    for (i, p) in plain.iter().enumerate() {
        let to = root.join("extra").join(format!("measurement-{i}.json"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dir");
        std::fs::copy(p, &to).expect("copy");
    }
    // Not gzip, though named so.
    let corrupt = root.join("raw/20221111/00/IT/webconnectivity/corrupt.jsonl.gz");
    std::fs::create_dir_all(corrupt.parent().expect("parent")).expect("dir");
    std::fs::write(&corrupt, "{\"test_name\": \"web_connectivity\"}\n").expect("write");
    // The largest file again, cut in the middle: its whole lines are duplicates.
    let truncated = root.join("raw/20221111/00/IT/webconnectivity/truncated.jsonl.gz");
    let whole = dir.join("whole.jsonl.gz");
    gzip(&whole, (longest.1.join("\n") + "\n").as_bytes());
    let bytes = std::fs::read(&whole).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let yaml = root.join("legacy/2012-11-29/dns_consistency.yaml");
    std::fs::create_dir_all(yaml.parent().expect("parent")).expect("dir");
    std::fs::copy(
        data("ooni/real/yaml/ooni_probe-legacy__docs_source_tests_dnsconsistency.rst.yaml"),
        &yaml,
    )
    .expect("copy");
    let first_line = files
        .values()
        .next()
        .and_then(|l| l.first())
        .cloned()
        .expect("a line");
    Tree {
        first_line,
        root,
        expected,
        days,
        countries,
        corrupt,
        truncated,
        yaml,
    }
}

/// Rows stored per test name, as `query` finds them.
fn stored_by_test(db: &Path, tests: &[&String]) -> BTreeMap<String, usize> {
    tests
        .iter()
        .map(|t| {
            let out = Command::new(AGGREGATOR)
                .args(["query", "--limit", "100000", "--test-name", t, "--db"])
                .arg(db)
                .output()
                .expect("query");
            assert!(out.status.success(), "{}", text(&out.stderr));
            let n = text(&out.stdout).lines().count();
            ((*t).clone(), n)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn an_archive_tree_is_imported_once_and_broken_files_are_named() {
    let dir = tempdir("import-archive");
    let tree = build_tree(&dir);
    assert!(
        tree.days >= 10 && tree.countries >= 5 && tree.expected.len() >= 10,
        "{} days, {} countries, {:?}",
        tree.days,
        tree.countries,
        tree.expected
    );
    let total: usize = tree.expected.values().sum();
    let db = dir.join("agg.db");
    let db_arg = db.to_str().expect("utf-8");

    let first = run(&["import-ooni", "--db", db_arg], &[&tree.root]);
    let (out, err) = (text(&first.stdout), text(&first.stderr));
    assert_eq!(first.status.code(), Some(1), "{out}\n{err}");
    assert!(out.contains(", 3 refused"), "{out}");
    assert!(
        out.contains(&format!("measurements: {total} stored, ")),
        "{total} expected:\n{out}\n{err}"
    );
    assert!(out.contains(", 0 skipped"), "{out}\n{err}");
    for (test, n) in &tree.expected {
        assert!(
            out.contains(&format!("  {test}: {n} stored")),
            "{test}: {out}"
        );
    }
    // One message per broken file, naming it and what is wrong.
    for (file, says) in [
        (&tree.corrupt, "not gzip"),
        (&tree.truncated, "truncated"),
        (&tree.yaml, "a YAML report of ooniprobe 1.x (DNS tamper"),
    ] {
        let name = file.display().to_string();
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(&name)).collect();
        assert_eq!(lines.len(), 1, "{name}:\n{err}");
        assert!(
            lines[0].starts_with(&format!("{name}: {says}")),
            "{}",
            lines[0]
        );
    }
    // Nothing else on a standard error that is not a terminal: no progress bar.
    assert_eq!(err.lines().count(), 3, "{err}");
    let tests: Vec<&String> = tree.expected.keys().collect();
    assert_eq!(stored_by_test(&db, &tests), tree.expected);
    // Each measurement is stored as the bytes it has in its file, under their SHA-256: an
    // indented document as written, a JSONL line without its newline.
    let store = vantage_aggregator::store::Sqlite::open(&db).expect("open");
    let doc = std::fs::read_to_string(tree.root.join("extra/measurement-0.json")).expect("read");
    let line = tree.first_line.clone();
    for raw in [doc.trim(), line.as_str()] {
        let id = MeasurementId::of(raw.as_bytes()).to_string();
        assert_eq!(
            store.envelope(&id).expect("read").as_deref(),
            Some(raw),
            "{}",
            &raw[..80]
        );
    }
    drop(store);

    // Rescoring takes every row that has rules: web_connectivity and the service tests.
    let scored: usize = tree
        .expected
        .iter()
        .filter(|(t, _)| {
            *t == "web_connectivity"
                || vantage_probe::verdict::services::SERVICE_TESTS.contains(&t.as_str())
        })
        .map(|(_, n)| n)
        .sum();
    let out = run(&["rescore", "--db", db_arg], &[]);
    assert!(
        text(&out.stdout).starts_with(&format!("rescored {scored} measurements")),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The second run reads nothing it has already done.
    let second = run(&["import-ooni", "--db", db_arg], &[&tree.root]);
    let (out, err) = (text(&second.stdout), text(&second.stderr));
    assert_eq!(second.status.code(), Some(1), "{out}\n{err}");
    let imported: usize = first_number(&text(&first.stdout), "files: ");
    assert!(
        out.starts_with(&format!(
            "files: 0 imported, {imported} skipped as already imported, 3 refused"
        )),
        "{out}"
    );
    assert!(out.contains("measurements: 0 stored, "), "{out}");
    assert_eq!(stored_by_test(&db, &tests), tree.expected);

    // A dry run needs no store and stores nothing.
    let dry = run(&["import-ooni", "--dry-run"], &[&tree.root]);
    let out = text(&dry.stdout);
    assert_eq!(dry.status.code(), Some(1), "{out}");
    assert!(
        out.contains("read and scored, 0 skipped") && out.contains("(dry run: nothing stored)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn first_number(text: &str, after: &str) -> usize {
    text.split(after)
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {after:?} in {text}"))
}

#[test]
fn a_tree_of_good_files_exits_0_and_a_bad_line_is_named_with_its_file_and_line() {
    let dir = tempdir("import-lines");
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(data("ooni/webconnectivity/generated-successWithHTTP.json"))
            .expect("read"),
    )
    .expect("json");
    let good = dir.join("tree/raw/20240101/00/IT/webconnectivity/a.jsonl.gz");
    gzip(&good, format!("{m}\n").as_bytes());
    let db = dir.join("agg.db");
    let db_arg = db.to_str().expect("utf-8");
    let tree = dir.join("tree");
    let ok = run(&["import-ooni", "--db", db_arg], &[&tree]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("measurements: 1 stored, 0 already there, 0 skipped"));

    let mut other = m.clone();
    other["input"] = "https://www.example.org/".into();
    let bad = dir.join("tree/raw/20240102/00/IT/webconnectivity/b.jsonl.gz");
    gzip(
        &bad,
        format!("{other}\n{{oops\n\n{{\"test_name\":\"ndt\"}}\n").as_bytes(),
    );
    let out = run(&["import-ooni", "--db", db_arg], &[&tree]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    assert!(
        o.starts_with("files: 1 imported, 1 skipped as already imported, 0 refused"),
        "{o}"
    );
    assert!(
        o.contains("measurements: 1 stored, 0 already there, 2 skipped"),
        "{o}"
    );
    let b = bad.display();
    assert!(e.contains(&format!("{b}:2: not JSON")), "{e}");
    assert!(
        e.contains(&format!(
            "{b}:4: not an OONI measurement: no measurement_start_time"
        )),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn score_names_the_element_of_an_array_and_the_line_of_jsonl() {
    let dir = tempdir("score-where");
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(data("ooni/webconnectivity/generated-successWithHTTP.json"))
            .expect("read"),
    )
    .expect("json");
    let ndt = measurements(&data("ooni/real"))
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["test_name"] == "ndt")
        .expect("an ndt measurement");
    // Eight elements: 0-6 good (one of them ndt, which has no verdict), 7 not a measurement.
    let mut elements: Vec<Value> = vec![m.clone(); 6];
    elements.insert(3, ndt.clone());
    elements.push(serde_json::json!({"test_name": "web_connectivity", "test_keys": [1]}));
    let array = dir.join("array.json");
    std::fs::write(
        &array,
        serde_json::to_string_pretty(&elements).expect("json"),
    )
    .expect("write");
    let out = run(&["score"], &[&array]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(o.lines().count(), 6, "{o}");
    let a = array.display();
    assert!(
        e.contains(&format!("{a}:[7]: not an OONI measurement")),
        "{e}"
    );
    assert!(e.contains(&format!("{a}:[3]: no verdict for ndt")), "{e}");
    assert!(!e.contains(&format!("{a}:1:")), "{e}");
    assert!(
        e.contains("error: 1 of 8 measurements could not be scored"),
        "{e}"
    );

    // JSONL, gzipped: the line.
    let jsonl = dir.join("m.jsonl.gz");
    gzip(
        &jsonl,
        format!("{m}\n\n{m}\n{{\"test_name\":\n{ndt}\n").as_bytes(),
    );
    let out = run(&["score"], &[&jsonl]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(o.lines().count(), 2, "{o}");
    let j = jsonl.display();
    assert!(e.contains(&format!("{j}:4: not JSON")), "{e}");
    assert!(e.contains(&format!("{j}:5: no verdict for ndt")), "{e}");

    // Only tests without rules: not a failure.
    let only = dir.join("ndt.jsonl");
    std::fs::write(&only, format!("{ndt}\n")).expect("write");
    let out = run(&["score", "--summary"], &[&only]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no verdict (tests without rules): 1"));
    let _ = std::fs::remove_dir_all(&dir);
}
