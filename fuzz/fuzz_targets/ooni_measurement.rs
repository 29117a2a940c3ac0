//! The OONI measurement parser and scoring: the text as `vantage-aggregator score` reads a file
//! (`vantage_aggregator::score::score_text`: one document, an array or JSONL, through
//! `serde_json::Value`), and as ingest reads one line (straight into
//! `vantage_probe::ooni::WebConnectivityMeasurement`), then `vantage_probe::verdict::score` with
//! the VANTAGE rules (which also runs OONI's, for `ooni_rules_blocking`) and the built-in
//! fingerprints.
//!
//! Invariants: never a panic; every item is either scored or reported; a verdict names its rule
//! set, is confirmed only by a fingerprint it lists, and serialises; a parsed measurement
//! serialises to JSON that parses again (the aggregator republishes what it stored).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vantage_aggregator::score::{items, score_text};
use vantage_probe::ooni::WebConnectivityMeasurement;
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::VANTAGE;
use vantage_probe::verdict::score;

fn fingerprints() -> &'static Fingerprints {
    static FP: OnceLock<Fingerprints> = OnceLock::new();
    FP.get_or_init(Fingerprints::builtin)
}

fuzz_target!(|data: &[u8]| {
    let text = vantage_fuzz::text(data);

    let (mut out, mut errors) = (Vec::new(), Vec::new());
    let summary = score_text(
        &text,
        "fuzz",
        &VANTAGE,
        fingerprints(),
        false,
        &mut out,
        &mut errors,
    )
    .expect("writing to memory cannot fail");
    assert_eq!(
        summary.scored + summary.failed,
        items(&text).len(),
        "every item is scored or reported"
    );
    assert_eq!(
        String::from_utf8_lossy(&out).lines().count(),
        summary.scored,
        "one verdict line per scored item"
    );

    let Ok(m) = serde_json::from_str::<WebConnectivityMeasurement>(&text) else {
        return;
    };
    let verdict = score(&m, &VANTAGE, fingerprints());
    assert_eq!(verdict.rule_set, VANTAGE.version);
    assert!(
        !verdict.confirmed || !verdict.fingerprints.is_empty(),
        "confirmed without a fingerprint: {verdict:?}"
    );
    serde_json::to_string(&verdict).expect("a verdict serialises");
    let written = serde_json::to_string(&m).expect("a measurement serialises");
    if let Err(e) = serde_json::from_str::<WebConnectivityMeasurement>(&written) {
        panic!("a parsed measurement does not parse again once written: {e}\n{written}");
    }
});
