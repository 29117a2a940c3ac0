//! What `vantage-2` and `vantage-3` changed: every real web_connectivity measurement in the repository
//! (`tests/data/ooni/real`, `tests/data/ooni/webconnectivity`) and the templates the simulated
//! fleets are made of (`tests/eval`) scored with `vantage-1` and `vantage-2`, and with
//! `vantage-2` and today's, split as `score` splits them. Each changed verdict is printed with what OONI's data
//! and OONI's classic rules say, and a page that OONI and the data call accessible but that is
//! now blocked is a new false positive: there must be none. `docs/scoring.md` ("What vantage-2
//! changed" and "What vantage-3 changed") holds the tables this prints:
//!
//! `cargo test -p vantage-aggregator --test rules_change -- --nocapture`

use std::path::{Path, PathBuf};

use serde_json::Value;
use vantage_aggregator::ingest::score::items;
use vantage_probe::ooni::{Blocking, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::http_diff::compare_at;
use vantage_probe::verdict::rules::{OONI, VANTAGE, VANTAGE_1, VANTAGE_2};
use vantage_probe::verdict::{Verdict, score};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni")
        .join(path)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
        .collect();
    out.sort();
    out
}

/// `blocking/accessible` as OONI writes them.
fn show(blocking: &Option<Blocking>, accessible: Option<bool>) -> String {
    let b = match blocking {
        None => "null".to_string(),
        Some(Blocking::Flag(f)) => f.to_string(),
        Some(Blocking::Kind(k)) => k.clone(),
    };
    let a = accessible.map_or("null".to_string(), |a| a.to_string());
    format!("{b}/{a}")
}

fn ok(v: &Verdict) -> bool {
    v.blocking == Some(Blocking::Flag(false)) && v.accessible == Some(true)
}

/// Every web_connectivity measurement, named by file and place.
fn measurements() -> Vec<(String, WebConnectivityMeasurement)> {
    let mut out = Vec::new();
    let all = files(&data("real"))
        .into_iter()
        .chain(files(&data("webconnectivity")));
    for file in all {
        let text = std::fs::read_to_string(&file).expect("read");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for item in items(&text) {
            let Ok(raw) = item.value else { continue };
            let v: Value = serde_json::from_str(&raw).expect("JSON");
            if v["test_name"] != "web_connectivity" {
                continue;
            }
            let m = serde_json::from_str(&raw).expect("a web_connectivity measurement");
            out.push((format!("{name}:{}", item.at), m));
        }
    }
    out
}

/// The fleets' five templates, as `tests/eval` sends them: input on a simulated host.
fn templates() -> Vec<(String, WebConnectivityMeasurement)> {
    [
        "generated-successWithHTTPS.json",
        "generated-dnsBlockingNXDOMAIN.json",
        "generated-tcpBlockingConnectTimeout.json",
        "generated-tlsBlockingConnectionResetWithConsistentDNS.json",
        "generated-httpDiffWithConsistentDNS.json",
    ]
    .into_iter()
    .flat_map(|name| {
        let text = std::fs::read_to_string(data("webconnectivity").join(name)).expect("read");
        ["news1.example", "humr3.example", "grp4.example"].map(|host| {
            let mut v: Value = serde_json::from_str(&text).expect("JSON");
            let scheme = match v["input"].as_str() {
                Some(i) if i.starts_with("http://") => "http",
                _ => "https",
            };
            v["input"] = format!("{scheme}://{host}/").into();
            let m = serde_json::from_value(v).expect("a measurement");
            (format!("fleet template {name} as {host}"), m)
        })
    })
    .collect()
}

#[test]
fn vantage_2_adds_no_false_positive_on_real_measurements_or_the_fleets() {
    let fp = Fingerprints::builtin();
    let real = measurements();
    assert!(real.len() >= 60, "{} measurements", real.len());
    let fleet = templates();
    let mut changed = Vec::new();
    let mut new_false_positives = Vec::new();
    let mut pages = 0;
    println!(
        "| measurement | vantage-1 | vantage-2 | OONI's data | OONI's rules | new false positive |"
    );
    println!("|---|---|---|---|---|---|");
    for (at, m) in real.iter().chain(&fleet) {
        let old = score(m, &VANTAGE_1, &fp);
        let new = score(m, &VANTAGE_2, &fp);
        assert_eq!(old.rule_set, "vantage-1");
        assert_eq!(new.rule_set, "vantage-2");
        let ooni = score(m, &OONI, &fp);
        let data_ok = m.test_keys.blocking == Some(Blocking::Flag(false))
            && m.test_keys.accessible == Some(true);
        if new.rule.contains("same-page") || new.rule.contains("different-page") {
            pages += 1;
        }
        if (
            &old.blocking,
            old.accessible,
            &old.rule,
            old.dns_consistency,
        ) == (
            &new.blocking,
            new.accessible,
            &new.rule,
            new.dns_consistency,
        ) {
            continue;
        }
        // Data without OONI's verdict (the fleets' templates, generated measurements) is
        // judged by OONI's classic rules alone.
        let accessible_for_ooni =
            ok(&ooni) && (data_ok || m.test_keys.accessible.is_none() || at.contains("fleet"));
        let false_positive = ok(&old) && new.anomaly() && accessible_for_ooni;
        println!(
            "| {at} ({}) | {} `{}` | {} `{}` | {} | {} | {} |",
            m.input.as_deref().unwrap_or("-"),
            show(&old.blocking, old.accessible),
            old.rule,
            show(&new.blocking, new.accessible),
            new.rule,
            show(&m.test_keys.blocking, m.test_keys.accessible),
            show(&ooni.blocking, ooni.accessible),
            if false_positive { "yes" } else { "no" },
        );
        changed.push(at.clone());
        if false_positive {
            new_false_positives.push(at.clone());
        }
    }
    println!(
        "\n{} real measurements and {} fleet measurements; {} decided by the page comparison; \
         {} verdicts or rules changed; {} new false positives",
        real.len(),
        fleet.len(),
        pages,
        changed.len(),
        new_false_positives.len()
    );
    assert!(
        new_false_positives.is_empty(),
        "new false positives: {new_false_positives:?}"
    );
    // The comparison is not vacuous: some pages were compared, and the generated http-diff
    // measurement is now decided by the new rule.
    assert!(pages >= 5, "{pages} pages compared");
    assert!(
        changed
            .iter()
            .any(|c| c.starts_with("generated-httpDiffWithConsistentDNS.json")),
        "{changed:?}"
    );
}

/// `vantage-3` reads a body the deadline cut while it was still arriving as throttled. Only
/// Vantage's engine records such a cut (`x_transfer.cut_at_deadline`), so no measurement in
/// OONI's data, nor any fleet template, may change: the rule set is new, the verdicts are not.
/// The rule itself is proven on loopback (`tests/slow_body.rs`).
#[test]
fn vantage_3_changes_no_verdict_of_ooni_data_or_the_fleets() {
    let fp = Fingerprints::builtin();
    let real = measurements();
    let fleet = templates();
    let mut failures = 0;
    for (at, m) in real.iter().chain(&fleet) {
        let old = score(m, &VANTAGE_2, &fp);
        let new = score(m, &VANTAGE, &fp);
        assert_eq!(old.rule_set, "vantage-2");
        assert_eq!(new.rule_set, "vantage-3");
        if old.rule.starts_with("http-failure") {
            failures += 1;
        }
        assert_eq!(
            (
                &old.blocking,
                old.accessible,
                &old.rule,
                old.dns_consistency
            ),
            (
                &new.blocking,
                new.accessible,
                &new.rule,
                new.dns_consistency
            ),
            "{at}"
        );
        assert_eq!(old.goodput, new.goodput, "{at}");
    }
    println!(
        "{} real and {} fleet measurements: no verdict changed ({failures} HTTP failures stay so)",
        real.len(),
        fleet.len()
    );
    assert!(failures > 0, "some HTTP failures were looked at");
}

/// How far each page OONI's data calls accessible is from the new rule's thresholds: its
/// titles' similarity and the share of the control's title found in the probe's body (the
/// rule needs both below 0.5).
#[test]
fn accessible_pages_stay_clear_of_the_different_page_thresholds() {
    println!("| measurement | title similarity | control title in body | site headers match |");
    println!("|---|---|---|---|");
    let mut seen = 0;
    for (at, m) in measurements() {
        if m.test_keys.accessible != Some(true) {
            continue;
        }
        let Some(http) = m.test_keys.control.as_ref().and_then(|c| c.http()) else {
            continue;
        };
        let host = m
            .input
            .as_deref()
            .and_then(|i| url::Url::parse(i).ok())
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        for r in m.test_keys.requests.iter().flatten() {
            // Only a page: a redirect is compared with nothing.
            let Some(resp) = r
                .response
                .as_ref()
                .filter(|x| r.failure.is_none() && (200..300).contains(&x.status()))
            else {
                continue;
            };
            let d = compare_at(&host, resp, http);
            let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
            println!(
                "| {at} {} | {} | {} | {:?} |",
                r.request.url,
                f(d.title_similarity),
                f(d.control_title_in_body),
                d.site_headers_match
            );
            seen += 1;
            assert!(!d.different_page(), "{at}: {d:?}");
        }
    }
    assert!(seen > 0);
}
