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
    /// Verdicts without a usable control: the measurement's `control_failure` (no helper, or
    /// one that refused or failed) or a helper answer that measured nothing of the site. The
    /// control never decides these (`docs/scoring.md`, "When the helper refuses or fails").
    pub no_control: usize,
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
    summary.no_control += usize::from(v.control_failure.is_some());
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
        "without a usable control (control_failure): {}",
        summary.no_control
    )?;
    writeln!(
        out,
        "same blocking and accessible as the input's own verdict: {} of {}",
        summary.same_as_input, summary.scored
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_fixtures::http::{HttpFixture, Response};
    use vantage_probe::engine::{EngineConfig, Resolver, TlsContext};
    use vantage_probe::th::{FAILED, REFUSED, UNUSABLE};
    use vantage_probe::verdict::rules::{OONI, VANTAGE};
    use vantage_probe::web_connectivity::{WebConnectivityPlan, measure};

    /// A page measured for real on loopback, then given each control the probe could have
    /// recorded: rescoring must leave every helper refusal or failure undetermined.
    #[tokio::test]
    async fn rescoring_never_blames_the_network_for_the_helper() {
        let site = HttpFixture::fixed(Response::html("<title>The real site</title>")).await;
        let url = format!("http://127.0.0.1:{}/", site.addr.port());
        let plan = WebConnectivityPlan::new(&url, vec![Resolver::System], EngineConfig::default())
            .expect("plan");
        let m = measure(&plan, &TlsContext::new(vec![]).expect("tls")).await;
        let base = serde_json::to_value(&m).expect("json");
        // The control this helper used to answer for a private address: its own refusal written
        // as the site's HTTP failure.
        let refusal = serde_json::json!({
            "tcp_connect": {},
            "http_request": {"body_length": -1, "failure": "dns_lookup_error", "title": "",
                             "headers": {}, "status_code": -1},
            "dns": {"failure": null, "addrs": ["127.0.0.1"]},
            "ip_info": {"127.0.0.1": {"asn": 0, "flags": 7}}
        });
        let with = |control: Value, failure: Option<String>| -> String {
            let mut v = base.clone();
            v["test_keys"]["control"] = control;
            v["test_keys"]["control_failure"] = failure.map_or(Value::Null, Value::String);
            v.to_string()
        };
        let kinds = [
            format!("{REFUSED} (HTTP 403): this test helper does not connect to private addresses"),
            format!("{REFUSED} (HTTP 400): lists 33 tcp_connect endpoints"),
            format!("{FAILED} (HTTP 503): too many requests in progress"),
            format!("{FAILED} (HTTP 429)"),
            "connection_refused".to_string(),
            "generic_timeout_error".to_string(),
            "json_parse_error".to_string(),
            format!("{UNUSABLE}: its HTTP result has neither a page nor a failure (status -1)"),
        ];
        let mut lines = Vec::new();
        for kind in &kinds {
            lines.push(with(Value::Null, Some(kind.clone())));
            lines.push(with(refusal.clone(), Some(kind.clone())));
        }
        let text = lines.join("\n");
        for rules in [VANTAGE, OONI] {
            let (mut out, mut errors) = (Vec::new(), Vec::new());
            let summary = score_text(
                &text,
                "t.jsonl",
                &rules,
                &Fingerprints::builtin(),
                false,
                &mut out,
                &mut errors,
            )
            .expect("score");
            assert!(errors.is_empty(), "{}", String::from_utf8_lossy(&errors));
            assert_eq!(summary.scored, lines.len());
            assert_eq!(
                summary.by_blocking,
                BTreeMap::from([("null".to_string(), lines.len())]),
                "{}: {}",
                rules.name,
                String::from_utf8_lossy(&out)
            );
            assert_eq!(summary.no_control, lines.len());
            let verdicts: Vec<Value> = String::from_utf8_lossy(&out)
                .lines()
                .map(|l| serde_json::from_str(l).expect("verdict"))
                .collect();
            for (v, kind) in verdicts.iter().zip(kinds.iter().flat_map(|k| [k, k])) {
                assert_eq!(v["control_failure"], kind.as_str(), "{v}");
                assert_eq!(v["accessible"], Value::Null, "{v}");
                assert_eq!(v["rule"], "no-control", "{v}");
            }
            let mut text = Vec::new();
            write_summary(&summary, &rules, &mut text).expect("summary");
            let text = String::from_utf8(text).expect("utf-8");
            assert!(
                text.contains(&format!(
                    "without a usable control (control_failure): {}",
                    lines.len()
                )),
                "{text}"
            );
        }

        // From a probe that did not check the answer: no control_failure, the refusal as
        // control. The vantage rules check it; OONI's use it, as OONI does.
        let unchecked = with(refusal.clone(), None);
        for (rules, blocking) in [(VANTAGE, "null"), (OONI, "http-diff")] {
            let (mut out, mut errors) = (Vec::new(), Vec::new());
            let summary = score_text(
                &unchecked,
                "t.jsonl",
                &rules,
                &Fingerprints::builtin(),
                false,
                &mut out,
                &mut errors,
            )
            .expect("score");
            assert_eq!(
                summary.by_blocking,
                BTreeMap::from([(blocking.to_string(), 1)]),
                "{}",
                rules.name
            );
            let v: Value = serde_json::from_slice(&out).expect("verdict");
            if rules.unusable_control_is_none {
                let why = v["control_failure"].as_str().unwrap_or_default();
                assert!(
                    why.starts_with(UNUSABLE) && why.contains("127.0.0.1"),
                    "{v}"
                );
            } else {
                assert_eq!(v["control_failure"], Value::Null, "{v}");
            }
        }

        // The same page with a control that measured it is accessible, so the above is not
        // undetermined for some other reason.
        let page = serde_json::json!({
            "tcp_connect": {site.addr.to_string(): {"status": true, "failure": null}},
            "http_request": {"body_length": 28, "failure": null, "title": "The real site",
                             "headers": {}, "status_code": 200},
            "dns": {"failure": null, "addrs": ["127.0.0.1"]}
        });
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        let summary = score_text(
            &with(page, None),
            "t.jsonl",
            &VANTAGE,
            &Fingerprints::builtin(),
            true,
            &mut out,
            &mut errors,
        )
        .expect("score");
        assert_eq!(
            summary.by_blocking,
            BTreeMap::from([("false".to_string(), 1)])
        );
        assert_eq!(summary.no_control, 0);
    }

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
