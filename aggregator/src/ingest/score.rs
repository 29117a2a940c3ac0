//! `vantage-aggregator score`: rescoring OONI's measurements with our rules.
//!
//! Input is JSONL (one measurement per line, as OONI publishes them), a single JSON document
//! (one measurement, possibly indented), or an array of them, read as a stream
//! ([`crate::ingest::archive::each_measurement`]). A measurement that cannot be scored is
//! reported where it is, `SOURCE:LINE: reason` (`SOURCE:[INDEX]: reason` for the element of
//! an array, counted from 0), and skipped; the others are still scored. web_connectivity is
//! scored with [`vantage_probe::verdict::score`], OONI's service tests with
//! [`vantage_probe::verdict::services::score_service_with`], the probe's quic test with
//! [`crate::ingest::quic::service_verdict`]; a test with no rules (ndt, dash,
//! psiphon, ...) is reported as having no verdict, which is not a failure.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use vantage_probe::ooni::{Blocking, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::RuleSet;
use vantage_probe::verdict::services::{Meta, ServiceVerdict, score_service_with};
use vantage_probe::verdict::{Verdict, score};

use crate::ingest::archive::{At, Layout, MAX_MEASUREMENT_BYTES, Stop, each_measurement};

/// Counts over one run.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Measurements scored.
    pub scored: usize,
    /// Lines, elements or documents that could not be scored.
    pub failed: usize,
    /// Measurements of tests without rules (ndt, dash, psiphon, ...): read, and not scored.
    pub no_verdict: usize,
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

/// One measurement in a text, with where it is.
pub struct Item {
    /// Where it is: the line it starts on, or its index in an array.
    pub at: At,
    /// Its bytes as they are in the text, or why they are not a measurement.
    pub value: Result<String, String>,
}

/// Splits `text` into measurements as [`score_text`] reads them: one document, an array, or
/// JSONL. Whatever cannot be read after a break (a syntax error in an array) is one last item
/// with the reason.
pub fn items(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let end = each_measurement(text.as_bytes(), Layout::Any, text.len().max(1), |at, v| {
        items.push(Item {
            at,
            value: v.map(str::to_string),
        });
        Ok::<(), ()>(())
    });
    if let Err(Stop::Unreadable(u)) = end {
        items.push(Item {
            at: u.at.unwrap_or(At::Line(1)),
            value: Err(u.reason),
        });
    }
    items
}

/// The fields that say which rules score a measurement.
#[derive(Deserialize)]
struct Which<'a> {
    #[serde(default)]
    test_name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default, borrow)]
    test_keys: Option<&'a RawValue>,
    #[serde(default)]
    test_version: Option<String>,
    #[serde(default)]
    measurement_start_time: Option<String>,
    #[serde(default)]
    annotations: Option<Value>,
}

/// What one measurement came to.
enum Scored {
    Web(Box<Verdict>),
    Service(ServiceVerdict),
    NoVerdict(String),
}

fn score_one(raw: &str, rules: &RuleSet, fingerprints: &Fingerprints) -> Result<Scored, String> {
    let which: Which<'_> = serde_json::from_str(raw).map_err(|e| {
        if e.is_data() {
            format!("not an OONI measurement: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })?;
    let name = which
        .test_name
        .ok_or("not an OONI measurement: no test_name")?;
    if name == WEB_CONNECTIVITY {
        let m = serde_json::from_str::<WebConnectivityMeasurement>(raw)
            .map_err(|e| format!("not an OONI measurement: {e}"))?;
        return Ok(Scored::Web(Box::new(score(&m, rules, fingerprints))));
    }
    let keys = which
        .test_keys
        .and_then(|k| serde_json::from_str(k.get()).ok())
        .unwrap_or(Value::Null);
    let input = which.input.as_ref().and_then(Value::as_str);
    if name == vantage_probe::quic::QUIC {
        return crate::ingest::quic::service_verdict(input, &keys).map(Scored::Service);
    }
    let annotation = |k: &str| {
        which
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let meta = Meta {
        test_version: which.test_version.clone(),
        measurement_start_time: which.measurement_start_time.clone(),
        engine_name: annotation("engine_name"),
        engine_version: annotation("engine_version"),
    };
    Ok(match score_service_with(&name, input, &keys, &meta) {
        Some(v) => Scored::Service(v),
        None => Scored::NoVerdict(name),
    })
}

/// Scores every measurement in `text`; see [`score_reader`].
pub fn score_text(
    text: &str,
    source: &str,
    rules: &RuleSet,
    fingerprints: &Fingerprints,
    quiet: bool,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> io::Result<Summary> {
    score_reader(
        text.as_bytes(),
        Layout::Any,
        source,
        rules,
        fingerprints,
        quiet,
        out,
        errors,
    )
}

/// Scores every measurement read from `reader`, writing one JSON line per verdict to `out`
/// (unless `quiet`) and one line per problem to `errors`, prefixed with `SOURCE:LINE:` or
/// `SOURCE:[INDEX]:`. A web_connectivity verdict is a [`Verdict`], a service test's a
/// [`ServiceVerdict`]; a test without rules gets the note `no verdict for TEST_NAME`.
#[allow(clippy::too_many_arguments)]
pub fn score_reader(
    reader: impl BufRead,
    layout: Layout,
    source: &str,
    rules: &RuleSet,
    fingerprints: &Fingerprints,
    quiet: bool,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let end = each_measurement(reader, layout, MAX_MEASUREMENT_BYTES, |at, item| {
        let scored = match item.and_then(|raw| score_one(raw, rules, fingerprints)) {
            Ok(s) => s,
            Err(reason) => {
                summary.failed += 1;
                return writeln!(errors, "{source}:{at}: {reason}");
            }
        };
        let line = match scored {
            Scored::Web(verdict) => {
                tally(&mut summary, &verdict);
                serde_json::to_string(&verdict).map_err(io::Error::other)?
            }
            Scored::Service(verdict) => {
                summary.scored += 1;
                *summary
                    .by_blocking
                    .entry(blocking_key(verdict.blocking.as_ref()))
                    .or_default() += 1;
                serde_json::to_string(&verdict).map_err(io::Error::other)?
            }
            Scored::NoVerdict(name) => {
                summary.no_verdict += 1;
                return writeln!(errors, "{source}:{at}: no verdict for {name}");
            }
        };
        if !quiet {
            writeln!(out, "{line}")?;
        }
        Ok(())
    });
    match end {
        Ok(()) => {}
        Err(Stop::Caller(e)) => return Err(e),
        Err(Stop::Unreadable(u)) => {
            summary.failed += 1;
            writeln!(errors, "{}", u.located(source))?;
        }
    }
    Ok(summary)
}

fn blocking_key(b: Option<&Blocking>) -> String {
    match b {
        None => "null".to_string(),
        Some(Blocking::Flag(b)) => b.to_string(),
        Some(Blocking::Kind(k)) => k.clone(),
    }
}

fn tally(summary: &mut Summary, v: &Verdict) {
    summary.scored += 1;
    *summary
        .by_blocking
        .entry(blocking_key(v.blocking.as_ref()))
        .or_default() += 1;
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
    if summary.no_verdict > 0 {
        writeln!(
            out,
            "no verdict (tests without rules): {}",
            summary.no_verdict
        )?;
    }
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
        assert_eq!(bad[1].at, At::Line(2));
        assert_eq!(bad[1].value.as_deref(), Ok("not json"));
        assert_eq!(bad[2].at, At::Line(4));
    }

    /// Errors name the element of an array by its index and the line of JSONL by its number;
    /// a test without rules is noted, not failed.
    #[test]
    fn errors_say_where_and_tests_without_rules_are_not_failures() {
        let ndt =
            r#"{"test_name":"ndt","measurement_start_time":"2022-11-10 10:50:28","test_keys":{}}"#;
        let text = format!("[{ndt}, 3, {{\"test_name\":\"web_connectivity\",\"test_keys\":[1]}}]");
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        let s = score_text(
            &text,
            "a.json",
            &vantage_probe::verdict::rules::VANTAGE,
            &Fingerprints::builtin(),
            false,
            &mut out,
            &mut errors,
        )
        .expect("score");
        let errors = String::from_utf8_lossy(&errors);
        assert!(
            errors.contains("a.json:[0]: no verdict for ndt"),
            "{errors}"
        );
        assert!(
            errors.contains("a.json:[1]: not an OONI measurement"),
            "{errors}"
        );
        assert!(
            errors.contains("a.json:[2]: not an OONI measurement"),
            "{errors}"
        );
        assert_eq!((s.scored, s.failed, s.no_verdict), (0, 2, 1));
    }
}
