//! Operator jobs on the database: importing OONI's measurements and rescoring history.

use std::io::Read;
use std::path::Path;

use url::Url;
use vantage_probe::envelope::{MeasurementId, verify};
use vantage_probe::ooni::{Measurement, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;

use crate::ingest::apply_verdict;
use crate::ingest::score::items;
use crate::store::{DbError, Row, Storage};

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// New rows.
    pub stored: usize,
    /// Already there.
    pub duplicate: usize,
    /// Problems, as `FILE:LINE: reason`.
    pub problems: Vec<String>,
}

/// Reads a file, gunzipping `*.gz`.
pub fn read_text(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = if path.extension().is_some_and(|x| x == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| format!("{}: bad gzip: {e}", path.display()))?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| format!("{} is not UTF-8: {e}", path.display()))
}

/// Stores OONI measurements (JSONL, one document, or an array) as unsigned rows marked `ooni`,
/// scored with the current rules. The id is the SHA-256 of the compact JSON, so importing the
/// same data twice stores it once.
pub fn import_ooni(
    storage: &dyn Storage,
    source: &str,
    text: &str,
    fingerprints: &Fingerprints,
) -> Result<ImportReport, DbError> {
    let mut report = ImportReport::default();
    let mut rows = Vec::new();
    for item in items(text) {
        let problem = |reason: String| format!("{source}:{}: {reason}", item.line);
        let value = match item.value {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(problem(e));
                continue;
            }
        };
        let compact = value.to_string();
        let m: Measurement<serde_json::Value> = match serde_json::from_value(value) {
            Ok(m) => m,
            Err(e) => {
                report
                    .problems
                    .push(problem(format!("not an OONI measurement: {e}")));
                continue;
            }
        };
        let mut row = Row {
            id: MeasurementId::of(compact.as_bytes()).to_string(),
            source: "ooni".into(),
            probe_key: None,
            probe_cc: m.probe_cc.to_string(),
            probe_asn: m.probe_asn.0,
            test_name: m.test_name.clone(),
            domain: m
                .input
                .as_deref()
                .and_then(|i| Url::parse(i).ok())
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
            input: m.input.clone(),
            measured_at: m.measurement_start_time.clone(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: compact.clone(),
            network_verified: false,
        };
        if m.test_name == WEB_CONNECTIVITY {
            match serde_json::from_str::<WebConnectivityMeasurement>(&compact) {
                Ok(wc) => apply_verdict(&mut row, &wc, fingerprints),
                Err(e) => {
                    report
                        .problems
                        .push(problem(format!("not an OONI measurement: {e}")));
                    continue;
                }
            }
        }
        rows.push(row);
    }
    for added in storage.insert(&rows)? {
        if added {
            report.stored += 1;
        } else {
            report.duplicate += 1;
        }
    }
    Ok(report)
}

/// Recomputes every stored web_connectivity verdict with the current rules and `fingerprints`,
/// after a rule or fingerprint change. Returns how many rows were rescored.
pub fn rescore(storage: &dyn Storage, fingerprints: &Fingerprints) -> Result<usize, DbError> {
    let mut after = String::new();
    let mut done = 0;
    loop {
        let page = storage.page_for_rescore(&after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        for (id, source, stored) in page {
            // Signed rows hold the envelope; imported OONI rows hold the measurement itself.
            let text = if source == "ooni" {
                Some(stored.clone())
            } else {
                verify(&stored).ok().map(|v| v.measurement.to_string())
            };
            let Some(m) =
                text.and_then(|t| serde_json::from_str::<WebConnectivityMeasurement>(&t).ok())
            else {
                continue;
            };
            let mut row = Row {
                id,
                source,
                probe_key: None,
                probe_cc: String::new(),
                probe_asn: 0,
                test_name: String::new(),
                input: None,
                domain: None,
                measured_at: String::new(),
                blocking: None,
                accessible: None,
                confirmed: false,
                rule_set: None,
                verdict: None,
                envelope: String::new(),
                network_verified: false,
            };
            apply_verdict(&mut row, &m, fingerprints);
            storage.update_verdict(&row)?;
            done += 1;
        }
    }
    Ok(done)
}
