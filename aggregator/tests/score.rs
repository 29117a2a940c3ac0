//! Scoring OONI's own measurements: agreement with OONI's verdicts, the differences Vantage's
//! fixes make (and only those), fingerprints, and bad input through the real binary.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use vantage_probe::ooni::{Blocking, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::{OONI, VANTAGE};
use vantage_probe::verdict::{Verdict, score};

/// The repository's test data (tests/data/SOURCES.md): OONI's measurements, and fingerprints in
/// OONI's format written for these tests. `VANTAGE_SHARED_DIR` names another directory laid out
/// the same way.
fn data() -> PathBuf {
    match std::env::var_os("VANTAGE_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data"),
    }
}

fn measurements() -> Vec<(String, WebConnectivityMeasurement)> {
    let dir = data().join("ooni/webconnectivity");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let m =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("parse");
            (name, m)
        })
        .collect()
}

/// Fingerprints in OONI's CSV format (`ooni/blocking-fingerprints`), as `--fingerprints DIR`
/// reads them; the test files use every scope, location and pattern type OONI's files use, and
/// every row must load.
fn ooni_fingerprints() -> Fingerprints {
    let (set, problems) = Fingerprints::load_dir(&data().join("ooni/fingerprints")).expect("load");
    assert!(problems.is_empty(), "{problems:?}");
    set
}

/// Where our OONI rule set disagrees with the verdict OONI's probe wrote, and why. Both are
/// OONI 0.5.26-0.5.28 runs from before the `classic` tag; see docs/scoring.md.
const OONI_MISSES: [&str; 2] = ["manual-8844.json", "manual-dnsgoogle80.json"];

#[test]
fn ooni_rules_reproduce_oonis_verdicts() {
    let all = measurements();
    assert_eq!(all.len(), 56);
    let fps = Fingerprints::builtin();
    let mut misses = Vec::new();
    for (name, m) in &all {
        let v = score(m, &OONI, &fps);
        if (v.blocking.clone(), v.accessible)
            != (m.test_keys.blocking.clone(), m.test_keys.accessible)
        {
            misses.push(format!(
                "{name}: ours {:?}/{:?} by {}, OONI {:?}/{:?}",
                v.blocking, v.accessible, v.rule, m.test_keys.blocking, m.test_keys.accessible
            ));
        }
    }
    let agree = all.len() - misses.len();
    assert!(
        agree >= 54,
        "only {agree} of 56 agree:\n{}",
        misses.join("\n")
    );
    let missed: Vec<&str> = misses
        .iter()
        .map(|m| m.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        missed,
        OONI_MISSES,
        "misses changed:\n{}",
        misses.join("\n")
    );
}

/// Each file where the two rule sets differ, with the fix that explains it (docs/scoring.md).
const VANTAGE_DIFFERENCES: [(&str, &str); 10] = [
    (
        "generated-cloudflareCAPTCHAWithHTTP.json",
        "false-positive-page",
    ),
    (
        "generated-dnsHijackingToProxyWithHTTPSURL.json",
        "tls-proves-address",
    ),
    (
        "generated-dnsHijackingToProxyWithHTTPURL.json",
        "tls-proves-address",
    ),
    (
        "generated-httpDiffWithInconsistentDNS.json",
        "tls-proves-address",
    ),
    ("generated-localhostWithHTTP.json", "helper-refused"),
    ("generated-localhostWithHTTPS.json", "helper-refused"),
    (
        "generated-redirectWithConsistentDNSAndThenConnectionResetForHTTPS.json",
        "tls",
    ),
    (
        "generated-redirectWithConsistentDNSAndThenEOFForHTTPS.json",
        "tls",
    ),
    (
        "generated-redirectWithConsistentDNSAndThenTimeoutForHTTPS.json",
        "tls",
    ),
    (
        "generated-tlsBlockingConnectionResetWithConsistentDNS.json",
        "tls",
    ),
];

/// Which fix explains a difference, read from the two verdicts; `None` if none does.
fn fix(ooni: &Verdict, ours: &Verdict) -> Option<&'static str> {
    if ours.rule.starts_with("false-positive-page") {
        Some("false-positive-page")
    } else if ours.rule.starts_with("dns-injected-answers") {
        Some("injected-answers")
    } else if ours.blocking == Some(Blocking::Kind("tls".into()))
        && ooni.blocking == Some(Blocking::Kind("http-failure".into()))
    {
        Some("tls")
    } else if ours.rule == "no-control"
        && ours.control_failure.is_some()
        && ooni.control_failure.is_none()
    {
        // The helper connected to none of the site's addresses, all private: no control.
        Some("helper-refused")
    } else if ooni.dns_consistency == Some("inconsistent")
        && ours.dns_consistency == Some("consistent")
    {
        Some("tls-proves-address")
    } else {
        None
    }
}

#[test]
fn vantage_rules_differ_only_where_a_fix_applies() {
    let fps = Fingerprints::builtin();
    let mut found = Vec::new();
    for (name, m) in measurements() {
        let ooni = score(&m, &OONI, &fps);
        let ours = score(&m, &VANTAGE, &fps);
        let key = |v: &Verdict| (v.blocking.clone(), v.accessible, v.dns_consistency);
        if key(&ooni) != key(&ours) {
            let why = fix(&ooni, &ours)
                .unwrap_or_else(|| panic!("{name}: unexplained difference {ooni:?} vs {ours:?}"));
            if ours.blocking != ooni.blocking {
                assert_eq!(
                    ours.ooni_rules_blocking,
                    Some(ooni.blocking.clone()),
                    "{name}"
                );
            }
            found.push((name, why));
        }
    }
    let found: Vec<(&str, &str)> = found.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    assert_eq!(found, VANTAGE_DIFFERENCES);
}

fn load(name: &str) -> WebConnectivityMeasurement {
    let path = data().join("ooni/webconnectivity").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("parse")
}

#[test]
fn iranian_blockpage_address_is_confirmed() {
    let mut m = load("generated-dnsBlockingBOGON.json");
    m.probe_cc = "IR".parse().expect("cc");
    for q in m.test_keys.queries.iter_mut().flatten() {
        for a in q.answers.iter_mut().flatten() {
            if a.ipv4.as_deref() == Some("10.10.34.35") {
                a.ipv4 = Some("10.10.34.34".into());
            }
        }
    }
    let v = score(&m, &VANTAGE, &ooni_fingerprints());
    assert!(v.confirmed);
    assert!(
        v.fingerprints.contains(&"vt.ir_dns_1".to_string()),
        "{:?}",
        v.fingerprints
    );
    assert_eq!(v.blocking, Some(Blocking::Kind("dns".into())));
    // The same answer seen from Italy is an anomaly, not a confirmed Iranian block.
    m.probe_cc = "IT".parse().expect("cc");
    let v = score(&m, &VANTAGE, &ooni_fingerprints());
    assert!(!v.confirmed);
    assert!(v.anomaly());
}

#[test]
fn known_blockpage_string_is_confirmed() {
    let mut m = load("generated-successWithHTTP.json");
    let response = m.test_keys.requests.as_mut().expect("requests")[0]
        .response
        .as_mut()
        .expect("response");
    response.body = Some(vantage_probe::ooni::MaybeBinary::Text(
        "<html><body><h1>GdF Stop Page</h1></body></html>".into(),
    ));
    let v = score(&m, &VANTAGE, &ooni_fingerprints());
    assert!(v.confirmed, "{v:?}");
    assert_eq!(v.fingerprints, vec!["vt.it_body_gdf".to_string()]);
    assert_eq!(v.blocking, Some(Blocking::Kind("http-diff".into())));
    assert_eq!(v.accessible, Some(false));
}

#[test]
fn false_positive_fingerprint_raises_no_anomaly() {
    let m = load("generated-cloudflareCAPTCHAWithHTTP.json");
    let v = score(&m, &VANTAGE, &ooni_fingerprints());
    assert!(
        v.fingerprints.contains(&"vt.fp_just_a_moment".to_string()),
        "{:?}",
        v.fingerprints
    );
    assert!(!v.anomaly(), "{v:?}");
    assert!(!v.confirmed);
    assert_eq!(v.blocking, Some(Blocking::Flag(false)));
    // OONI's rules, which ignore fp fingerprints, call the same page a blockpage.
    assert_eq!(
        score(&m, &OONI, &ooni_fingerprints()).blocking,
        Some(Blocking::Kind("http-diff".into()))
    );
}

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_vantage-aggregator");

#[test]
fn score_cli_reports_bad_lines_with_numbers_and_fails() {
    let dir = std::env::temp_dir().join(format!("vantage-score-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good =
        std::fs::read_to_string(data().join("ooni/webconnectivity/generated-successWithHTTP.json"))
            .expect("read");
    let good: Value = serde_json::from_str(&good).expect("json");
    let line = serde_json::to_string(&good).expect("line");
    let input = format!(
        "{line}\n{{not json\n{{\"test_name\":\"web_connectivity\"}}\n\n{}\n{line}\n",
        serde_json::json!({"test_name": "ndt"})
    );
    let path = dir.join("mixed.jsonl");
    std::fs::write(&path, input).expect("write");
    let out = Command::new(AGGREGATOR)
        .args(["score", "--rules", "ooni"])
        .arg(&path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "the two good lines are scored: {stdout}"
    );
    let p = path.display();
    assert!(stderr.contains(&format!("{p}:2: not JSON")), "{stderr}");
    assert!(
        stderr.contains(&format!("{p}:3: not an OONI measurement: missing field")),
        "{stderr}"
    );
    // A test without rules is noted, not failed.
    assert!(
        stderr.contains(&format!("{p}:5: no verdict for ndt")),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 2 of 5 measurements could not be scored"),
        "{stderr}"
    );
    for l in stdout.lines() {
        let v: Value = serde_json::from_str(l).expect("verdict line");
        assert_eq!(v["blocking"], false);
        assert_eq!(v["accessible"], true);
        assert_eq!(v["rule_set"], "ooni-classic-0.5.28");
        assert_eq!(v["input_verdict"]["blocking"], false);
    }
}

#[test]
fn score_cli_reads_a_document_and_summarises() {
    let path = data().join("ooni/webconnectivity/generated-dnsBlockingNXDOMAIN.json");
    let out = Command::new(AGGREGATOR)
        .arg("score")
        .arg(&path)
        .arg("--summary")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rule set: vantage-3"), "{text}");
    assert!(text.contains("measurements: 1 scored, 0 failed"), "{text}");
    assert!(text.contains("  dns: 1"), "{text}");

    let out = Command::new(AGGREGATOR)
        .args(["score", "/nonexistent.jsonl"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: cannot read /nonexistent.jsonl")
    );
}

#[test]
fn injected_duplicate_answer_is_dns_tampering() {
    let mut m = load("generated-successWithHTTP.json");
    let udp_a = m
        .test_keys
        .queries
        .iter()
        .flatten()
        .find(|q| q.engine() == "udp" && q.query_type == "A")
        .cloned()
        .expect("a UDP A query");
    let mut late = udp_a.clone();
    late.t = late.t.map(|t| t + 0.1);
    for a in late.answers.iter_mut().flatten() {
        a.ipv4 = Some("10.10.34.34".into());
    }
    m.test_keys.x_dns_duplicate_responses = Some(vec![late]);
    let fps = Fingerprints::builtin();
    let ours = score(&m, &VANTAGE, &fps);
    assert_eq!(ours.blocking, Some(Blocking::Kind("dns".into())));
    assert_eq!(ours.rule, "dns-injected-answers");
    assert_eq!(
        ours.ooni_rules_blocking,
        Some(Some(Blocking::Flag(false))),
        "OONI's rules miss it"
    );
    // A duplicate that repeats the same answer is a retransmission, not an injection.
    let mut same = m.clone();
    same.test_keys.x_dns_duplicate_responses = Some(vec![udp_a]);
    assert_eq!(
        score(&same, &VANTAGE, &fps).blocking,
        Some(Blocking::Flag(false))
    );
}
