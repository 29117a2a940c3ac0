//! Data-format compatibility with OONI: real web_connectivity measurements from OONI's own test
//! data (`tests/data/ooni/webconnectivity/`, tests/data/SOURCES.md) and OONI's measurements of
//! every probe generation (`tests/data/ooni/real/`) must read into our types and write back
//! without losing anything or adding anything, and our own output must round-trip through the
//! same types.

use std::path::PathBuf;

use serde_json::Value;
use vantage_fixtures::http::{BLOCKPAGE, HttpFixture, Response};
use vantage_probe::engine::{EngineConfig, Resolver, TlsContext};
use vantage_probe::ooni::{Blocking, Measurement, WebConnectivityMeasurement};
use vantage_probe::web_connectivity::{WebConnectivityPlan, measure};

/// The repository's test data, `tests/data/`; `VANTAGE_SHARED_DIR` names another directory laid
/// out the same way.
fn data_dir() -> PathBuf {
    match std::env::var_os("VANTAGE_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data"),
    }
}

/// Asserts `ours` carries everything `original` does and nothing more. A `null` may be left
/// out (missing and `null` are the same to OONI's consumers, df-000), but a key that was absent
/// must stay absent, even as `null`; `0` and `0.0` are the same number.
fn assert_lossless(original: &Value, ours: &Value, path: &str) {
    match (original, ours) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => assert_lossless(value, other, &here),
                    None => assert!(value.is_null(), "{here} was dropped: {value}"),
                }
            }
            for (key, value) in b {
                assert!(a.contains_key(key), "{path}.{key} was added: {value}");
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: array length changed");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_lossless(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path}: number changed");
        }
        (a, b) => assert_eq!(a, b, "{path}: value changed"),
    }
}

#[test]
fn every_ooni_measurement_reads_into_our_types_without_loss() {
    let dir = data_dir().join("ooni/webconnectivity");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("OONI fixtures not found at {} ({e})", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        56,
        "the 56 measurements of tests/data/ooni/webconnectivity"
    );

    let mut blocking_kinds = std::collections::BTreeSet::new();
    for path in &files {
        let name = path.display();
        let raw = std::fs::read_to_string(path).expect("readable fixture");
        let original: Value = serde_json::from_str(&raw).expect("fixture is JSON");
        let m: WebConnectivityMeasurement =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));

        // The fields we model land in typed fields, not in the catch-all.
        let tk = &m.test_keys;
        for key in [
            "queries",
            "tcp_connect",
            "tls_handshakes",
            "requests",
            "control",
            "blocking",
        ] {
            assert!(!tk.extra.contains_key(key), "{name}: {key} not modelled");
        }
        let count = |key: &str| original["test_keys"][key].as_array().map_or(0, Vec::len);
        assert_eq!(
            tk.queries.as_ref().map_or(0, Vec::len),
            count("queries"),
            "{name}"
        );
        assert_eq!(
            tk.tcp_connect.as_ref().map_or(0, Vec::len),
            count("tcp_connect"),
            "{name}"
        );
        assert_eq!(
            tk.requests.as_ref().map_or(0, Vec::len),
            count("requests"),
            "{name}"
        );
        assert_eq!(m.probe_asn.to_string(), original["probe_asn"], "{name}");
        assert_eq!(m.probe_cc.as_str(), original["probe_cc"], "{name}");
        if let Some(Blocking::Kind(kind)) = &tk.blocking {
            blocking_kinds.insert(kind.clone());
        }

        let ours = serde_json::to_value(&m).expect("serialise");
        assert_lossless(
            &original,
            &ours,
            &path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    // OONI's verdict vocabulary is read, not flattened.
    for kind in ["dns", "http-diff", "http-failure", "tcp_ip"] {
        assert!(
            blocking_kinds.contains(kind),
            "no {kind} verdict read; got {blocking_kinds:?}"
        );
    }
}

/// Every measurement in `tests/data/ooni/real/` with its place: `(file, line, JSON text)`. A
/// `.json` file holds one measurement, or one per line (measurement-kit and `oonireport` wrote
/// JSONL under that name); `.jsonl` holds one per line. The YAML reports of ooniprobe 0.x/1.x
/// (`yaml/`) are not JSON and are left to the importer.
fn real_measurements() -> Vec<(String, usize, String)> {
    let dir = data_dir().join("ooni/real");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        42,
        "the JSON and JSONL files of tests/data/ooni/real"
    );
    let mut out = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let raw = std::fs::read_to_string(&path).expect("readable");
        if serde_json::from_str::<Value>(&raw).is_ok() {
            out.push((name, 1, raw));
            continue;
        }
        for (i, line) in raw.lines().enumerate() {
            if !line.trim().is_empty() {
                out.push((name.clone(), i + 1, line.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_real_measurement_of_every_generation_reads_as_the_base_format_without_loss() {
    let all = real_measurements();
    let mut tests = std::collections::BTreeSet::new();
    for (file, line, raw) in &all {
        let here = format!("{file}:{line}");
        let original: Value = serde_json::from_str(raw).unwrap_or_else(|e| panic!("{here}: {e}"));
        let m: Measurement<Value> =
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("{here}: {e}"));
        assert_eq!(m.test_name, original["test_name"], "{here}");
        assert_eq!(m.probe_cc.as_str(), original["probe_cc"], "{here}");
        assert_eq!(m.test_keys, original["test_keys"], "{here}");
        tests.insert(m.test_name.clone());
        let ours = serde_json::to_value(&m).expect("serialise");
        assert_lossless(&original, &ours, &here);
    }
    // 40 files of one measurement (miniooni's JSONL has one line), measurement-kit's 9 lines
    // and oonireport's 2; 16 test names, from `dash` to `whatsapp`.
    assert_eq!(all.len(), 51);
    assert_eq!(tests.len(), 16, "{tests:?}");
}

#[test]
fn every_real_web_connectivity_measurement_reads_into_our_types_without_loss() {
    let mut count = 0;
    for (file, line, raw) in real_measurements() {
        let original: Value = serde_json::from_str(&raw).expect("JSON");
        if original["test_name"] != "web_connectivity" {
            continue;
        }
        let here = format!("{file}:{line}");
        let m: WebConnectivityMeasurement =
            serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{here}: {e}"));
        let tk = &m.test_keys;
        for key in ["queries", "tcp_connect", "requests", "control", "blocking"] {
            assert!(!tk.extra.contains_key(key), "{here}: {key} not modelled");
        }
        let count_of = |key: &str| original["test_keys"][key].as_array().map_or(0, Vec::len);
        assert_eq!(tk.queries.as_ref().map_or(0, Vec::len), count_of("queries"));
        assert_eq!(
            tk.requests.as_ref().map_or(0, Vec::len),
            count_of("requests")
        );
        let ours = serde_json::to_value(&m).expect("serialise");
        assert_lossless(&original, &ours, &here);
        count += 1;
    }
    assert_eq!(
        count, 15,
        "the 15 web_connectivity measurements of tests/data/ooni/real"
    );
}

#[test]
fn a_key_added_on_the_way_back_is_caught() {
    // The check above is not vacuous: a `null` written for an absent key fails it.
    let original = serde_json::json!({"a": {"b": 1}});
    let added = serde_json::json!({"a": {"b": 1, "c": null}});
    let caught = std::panic::catch_unwind(|| assert_lossless(&original, &added, "m"));
    assert!(caught.is_err());
    let dropped_null = serde_json::json!({"a": {"b": 1, "c": null}});
    assert_lossless(&dropped_null, &original, "m");
}

#[test]
fn malformed_measurements_are_rejected_with_a_reason() {
    let err = serde_json::from_str::<WebConnectivityMeasurement>("{\"test_keys\": {}}")
        .expect_err("missing fields");
    assert!(err.to_string().contains("missing field"), "{err}");
    let bad_asn = r#"{"data_format_version":"0.2.0","input":null,"measurement_start_time":"2024-01-01 00:00:00",
        "probe_asn":"ASX","probe_cc":"IT","probe_ip":"127.0.0.1","software_name":"x","software_version":"1",
        "test_keys":{},"test_name":"web_connectivity","test_runtime":0,"test_version":"0.5.28"}"#;
    let err = serde_json::from_str::<WebConnectivityMeasurement>(bad_asn).expect_err("bad asn");
    assert!(err.to_string().contains("invalid ASN \"ASX\""), "{err}");
}

#[tokio::test]
async fn our_output_round_trips_through_the_same_types() {
    let server = HttpFixture::fixed(Response::html(BLOCKPAGE)).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let plan = WebConnectivityPlan::new(&url, vec![Resolver::System], EngineConfig::default())
        .expect("plan");
    let m = measure(&plan, &TlsContext::new(vec![]).expect("tls")).await;

    let text = serde_json::to_string(&m).expect("serialise");
    let back: WebConnectivityMeasurement =
        serde_json::from_str(&text).expect("read our own output");
    assert_eq!(back, m);
    assert_eq!(
        serde_json::to_string(&back).expect("again"),
        text,
        "byte-identical"
    );

    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["data_format_version"], "0.2.0");
    assert_eq!(v["probe_ip"], "127.0.0.1");
    assert_eq!(v["probe_asn"], "AS0");
    assert_eq!(v["probe_cc"], "ZZ");
    assert_eq!(v["software_name"], "vantage");
    assert_eq!(v["test_name"], "web_connectivity");
    assert_eq!(v["input"], url);
    assert_eq!(v["annotations"]["engine_name"], "vantage");
    assert_eq!(v["test_keys"]["control"], Value::Null);
    assert_eq!(
        v["test_keys"]["control_failure"],
        "test_helper_not_configured"
    );
    let start = v["measurement_start_time"].as_str().expect("start time");
    assert_eq!(start.len(), 19, "YYYY-MM-DD HH:MM:SS: {start}");
    assert_eq!(&start[10..11], " ");
}

/// Citizen Lab's category codes and descriptions (`00-LEGEND-new_category_codes.csv` of
/// citizenlab/test-lists), some of which hold a comma and so are quoted.
const CATEGORIES: [(&str, &str); 6] = [
    ("NEWS", "News Media"),
    ("HUMR", "Human Rights Issues"),
    ("GMB", "Gambling"),
    ("ALDR", "Alcohol & Drugs"),
    ("COMT", "Communication Tools"),
    ("LGBT", "LGBTQ+"),
];

/// A directory of lists in Citizen Lab's format, made for this test (Citizen Lab's own lists are
/// CC BY-NC-SA and not in the repository; tests/data/SOURCES.md): 150 lists of 70 rows like
/// theirs (quoted fields, commas and doubled quotes in notes, the category legend beside the
/// lists), one list with a byte-order mark and CRLF line ends, and three unusable rows at known
/// lines. Returns the directory and the problems each list must report, as `(file, line)`.
fn citizen_lab_style_lists() -> (PathBuf, Vec<(String, usize)>) {
    let dir = std::env::temp_dir().join(format!("vantage-lists-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("00-LEGEND-new_category_codes.csv"),
        "Category Description,New Code,Replaces old code(s),Description\n\
         News Media,NEWS,NEWS,\"Major news outlets (BBC, CNN, etc.) as well as regional news outlets.\"\n",
    )
    .expect("legend");
    let mut names = vec!["global".to_string()];
    names.extend(
        (0..149u8).map(|i| format!("{}{}", (b'a' + i / 26) as char, (b'a' + i % 26) as char)),
    );
    let mut expected = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let file = format!("{name}.csv");
        let mut rows =
            vec!["url,category_code,category_description,date_added,source,notes".to_string()];
        for i in 0..70 {
            let (code, description) = CATEGORIES[(n + i) % CATEGORIES.len()];
            rows.push(format!(
                "https://site{i}.{name}.example/path/{n}?q={i},{code},\"{description}\",2017-0{}-1{},citizenlab,\"{}\"",
                1 + i % 9,
                i % 10,
                match i % 3 {
                    0 => "",
                    1 => "Blocked, then unblocked",
                    _ => "The \"\"official\"\" site",
                }
            ));
        }
        let mut eol = "\n";
        let mut bom = "";
        match name.as_str() {
            "aa" => {
                rows[10] = "https://short.aa.example/,NEWS,News Media,2017-01-01,citizenlab".into();
                expected.push((file.clone(), 11));
            }
            "ab" => {
                rows[25] =
                    "ftp://files.ab.example/,FILE,File-sharing,2017-01-01,citizenlab,".into();
                expected.push((file.clone(), 26));
            }
            "ac" => {
                rows[70] = "not a url,NEWS,News Media,2017-01-01,citizenlab,".into();
                expected.push((file.clone(), 71));
            }
            "ad" => {
                eol = "\r\n";
                bom = "\u{feff}";
            }
            _ => {}
        }
        std::fs::write(dir.join(&file), format!("{bom}{}{eol}", rows.join(eol))).expect("list");
    }
    (dir, expected)
}

#[test]
fn citizen_lab_lists_read_with_every_problem_located() {
    use vantage_probe::test_lists::TestList;
    let (dir, expected) = citizen_lab_style_lists();
    let mut lists = 0;
    let mut urls = 0;
    let mut found = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("00-LEGEND") {
            // The legends are CSV of another shape: refused as test lists, with the reason.
            let err = TestList::read(&path).expect_err("legend is not a list");
            assert!(err.to_string().contains(":1: not a test list"), "{err}");
            continue;
        }
        let (list, problems) = TestList::read(&path).unwrap_or_else(|e| panic!("{e}"));
        for p in &problems {
            let text = p.to_string();
            let (line, _) = text
                .strip_prefix(&format!("{}:", path.display()))
                .and_then(|rest| rest.split_once(':'))
                .unwrap_or_else(|| panic!("problem not located in its file: {text}"));
            found.push((name.clone(), line.parse::<usize>().expect("a line number")));
        }
        if name == "ad.csv" {
            assert_eq!(list.entries.len(), 70, "byte-order mark and CRLF");
            assert_eq!(list.entries[0].category_description, CATEGORIES[4].1);
            assert_eq!(list.entries[69].line, 71);
        }
        if name == "global.csv" {
            assert_eq!(list.entries[1].notes, "Blocked, then unblocked");
            assert_eq!(list.entries[2].notes, "The \"official\" site");
        }
        lists += 1;
        urls += list.entries.len();
    }
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(lists, 150);
    assert_eq!(urls, 150 * 70 - expected.len());
    assert_eq!(found, expected);
}
