//! `vantage-aggregator score`: rescoring OONI web_connectivity measurements with our rules.
//!
//! Input is JSONL (one measurement per line, as OONI publishes them) or a single JSON document
//! (one measurement, possibly indented, or an array of them). A line that is not a measurement
//! is reported with its line number and skipped; the others are still scored.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::Value;
use vantage_probe::ooni::{Blocking, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::RuleSet;
use vantage_probe::verdict::{Verdict, score};

/// Counts over one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Measurements scored.
    pub scored: usize,
    /// Lines or documents that could not be scored.
    pub failed: usize,
    /// Verdicts by `blocking` value (`false`, `null`, or the type).
    pub by_blocking: BTreeMap<String, usize>,
    /// Verdicts confirmed by a fingerprint.
    pub confirmed: usize,
    /// Verdicts whose blocking and accessible equal the input's own.
    pub same_as_input: usize,
}

/// One measurement in a file, with the line it starts on.
pub struct Item {
    /// 1-based line.
    pub line: usize,
    /// The JSON value, or why the line is not JSON.
    pub value: Result<Value, String>,
}

/// Splits `text` into measurements: one document or an array when the whole text is one JSON
/// value, else JSONL.
pub fn items(text: &str) -> Vec<Item> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let lead = text.len() - text.trim_start().len();
        let line = text[..lead].matches('\n').count() + 1;
        let values = match value {
            Value::Array(values) => values,
            v => vec![v],
        };
        return values
            .into_iter()
            .map(|v| Item { line, value: Ok(v) })
            .collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| Item {
            line: i + 1,
            value: serde_json::from_str(l).map_err(|e| format!("not JSON: {e}")),
        })
        .collect()
}

/// Scores every measurement in `text`, writing one JSON line per verdict to `out` (unless
/// `quiet`) and one line per problem to `errors`, prefixed with `source:LINE:`.
pub fn score_text(
    text: &str,
    source: &str,
    rules: &RuleSet,
    fingerprints: &Fingerprints,
    quiet: bool,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for item in items(text) {
        let measurement = item.value.and_then(|v| {
            let name = v
                .get("test_name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if name != WEB_CONNECTIVITY {
                return Err(format!(
                    "test_name is {name:?}; only web_connectivity measurements can be scored"
                ));
            }
            serde_json::from_value::<WebConnectivityMeasurement>(v)
                .map_err(|e| format!("not an OONI measurement: {e}"))
        });
        let m = match measurement {
            Ok(m) => m,
            Err(reason) => {
                summary.failed += 1;
                writeln!(errors, "{source}:{}: {reason}", item.line)?;
                continue;
            }
        };
        let verdict = score(&m, rules, fingerprints);
        tally(&mut summary, &verdict);
        if !quiet {
            let line = serde_json::to_string(&verdict).map_err(io::Error::other)?;
            writeln!(out, "{line}")?;
        }
    }
    Ok(summary)
}

fn tally(summary: &mut Summary, v: &Verdict) {
    summary.scored += 1;
    let key = match &v.blocking {
        None => "null".to_string(),
        Some(Blocking::Flag(b)) => b.to_string(),
        Some(Blocking::Kind(k)) => k.clone(),
    };
    *summary.by_blocking.entry(key).or_default() += 1;
    summary.confirmed += usize::from(v.confirmed);
    summary.same_as_input += usize::from(
        v.blocking == v.input_verdict.blocking && v.accessible == v.input_verdict.accessible,
    );
}

/// The `--summary` text.
pub fn write_summary(summary: &Summary, rules: &RuleSet, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "rule set: {}", rules.version)?;
    writeln!(
        out,
        "measurements: {} scored, {} failed",
        summary.scored, summary.failed
    )?;
    writeln!(out, "blocking:")?;
    for (k, n) in &summary.by_blocking {
        writeln!(out, "  {k}: {n}")?;
    }
    writeln!(out, "confirmed by a fingerprint: {}", summary.confirmed)?;
    writeln!(
        out,
        "same blocking and accessible as the input's own verdict: {} of {}",
        summary.same_as_input, summary.scored
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_and_documents_are_told_apart() {
        assert_eq!(items("{\"a\":1}\n{\"a\":2}\n").len(), 2);
        assert_eq!(items("{\n  \"a\": 1\n}\n").len(), 1);
        assert_eq!(items("[{\"a\":1},{\"a\":2}]").len(), 2);
        let bad = items("{\"a\":1}\nnot json\n\n{\"a\":3}\n");
        assert_eq!(bad.len(), 3);
        assert_eq!(bad[1].line, 2);
        assert!(bad[1].value.is_err());
        assert_eq!(bad[2].line, 4);
    }
}
