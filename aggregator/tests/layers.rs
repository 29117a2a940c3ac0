//! The aggregator's layers import in one direction (`docs/architecture.md`):
//! `cli -> api -> detect -> store` and `api -> ingest -> store`. A store that reached up into
//! the detectors or the API could not be swapped for another, and a circle of imports is how
//! the layers came to be inseparable before. This test reads the sources, so that the rule
//! holds without anyone remembering it.

use std::path::{Path, PathBuf};

/// For each layer (a folder of `src/`), the layers above it that it must not name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("store", &["detect", "api", "ingest", "cli"]),
    ("detect", &["api", "ingest", "cli"]),
    ("ingest", &["api", "detect", "cli"]),
    ("log", &["api", "ingest", "detect", "cli"]),
    ("evidence", &["api", "ingest", "cli"]),
    ("api", &["cli"]),
];

/// The probe's modules the aggregator's library and binary must not reach into: they are the
/// probe's own run loop and queue, not a contract between the two (the shared wire types live
/// in `vantage_probe::wire`).
const PROBE_INTERNALS: &[&str] = &["vantage_probe::run", "vantage_probe::store"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments (a doc comment may name any layer).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<layer>` (or `super::super::<layer>` reaching the crate root) a file names.
fn violations(layer: &str, text: &str, above: &[&str]) -> Vec<String> {
    let code = code(text);
    let mut found = Vec::new();
    for up in above {
        for pattern in [format!("crate::{up}"), format!("vantage_aggregator::{up}")] {
            let mut rest = code.as_str();
            while let Some(i) = rest.find(&pattern) {
                let after = rest[i + pattern.len()..].chars().next();
                if !after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    found.push(format!("{layer} names {pattern}"));
                }
                rest = &rest[i + pattern.len()..];
            }
        }
    }
    found
}

#[test]
fn each_layer_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (layer, above) in FORBIDDEN {
        let mut files = Vec::new();
        sources(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no sources under src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            for v in violations(layer, &text, above) {
                problems.push(format!("{}: {v}", file.display()));
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} files read: is src/ laid out in layers?"
    );
    assert!(
        problems.is_empty(),
        "imports against the layers:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_aggregator_does_not_reach_into_the_probes_run_loop_or_queue() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let text = code(&std::fs::read_to_string(&file).expect("read"));
        for internal in PROBE_INTERNALS {
            if text.contains(&format!("{internal}::")) || text.contains(&format!("{internal};")) {
                problems.push(format!("{} names {internal}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import_and_ignores_comments() {
    let bad = "use crate::detect::Pass;\n// crate::api is only mentioned here\n";
    assert_eq!(
        violations("store", bad, &["detect", "api"]),
        ["store names crate::detect"]
    );
    assert!(violations("store", "use crate::detector_free::X;", &["detect"]).is_empty());
}
