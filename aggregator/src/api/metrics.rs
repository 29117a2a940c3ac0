//! The counters of `GET /metrics`, kept and written by the Prometheus project's own client
//! library (`prometheus-client`), so the exposition text follows the OpenMetrics text format
//! (label values escaped: `\\`, `\"`, `\n`) however a value reads.
//!
//! The names are those operators' dashboards already use (README "Researcher API"):
//! `vantage_ingest_lines_total{outcome}`, `vantage_ingest_rejected_total{reason}`,
//! `vantage_ingest_seconds` (now a histogram: `_sum`, `_count` and `_bucket`),
//! `vantage_heartbeats_total` and `vantage_store_bytes`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::ingest::{LineOutcome, Status};

/// The media type of the OpenMetrics text format (OpenMetrics 1.0, "Overall Structure"), which
/// Prometheus reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `outcome` of `vantage_ingest_lines_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `reason` of `vantage_ingest_rejected_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// Counters for `/metrics`, shared by every handler.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    lines: Family<OutcomeLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
    ingest_seconds: Histogram,
    heartbeats: Counter,
    store_bytes: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let lines = Family::<OutcomeLabel, Counter>::default();
        // Both outcomes from the start, at 0, so a dashboard's rate() has a series before the
        // first upload (a family only shows the label values it has seen).
        for outcome in [Status::Accepted, Status::Duplicate] {
            lines
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .inc_by(0);
        }
        let rejected = Family::<ReasonLabel, Counter>::default();
        // 1 ms to about 16 s: a small batch on an idle server to a full upload under load.
        let ingest_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 8));
        let heartbeats = Counter::default();
        let store_bytes = Gauge::<u64, AtomicU64>::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the encoder appends it (OpenMetrics,
        // "Counter").
        registry.register(
            "vantage_ingest_lines",
            "Lines received by outcome",
            lines.clone(),
        );
        registry.register(
            "vantage_ingest_rejected",
            "Lines rejected, by reason",
            rejected.clone(),
        );
        registry.register(
            "vantage_ingest_seconds",
            "Time spent handling ingest requests",
            ingest_seconds.clone(),
        );
        registry.register(
            "vantage_heartbeats",
            "Heartbeats recorded",
            heartbeats.clone(),
        );
        registry.register(
            "vantage_store_bytes",
            "Size of the database file and its WAL",
            store_bytes.clone(),
        );
        Metrics {
            registry,
            lines,
            rejected,
            ingest_seconds,
            heartbeats,
            store_bytes,
        }
    }
}

impl Metrics {
    /// Counts the outcomes of one upload and the time it took.
    pub fn record(&self, outcomes: &[LineOutcome], took: Duration) {
        for o in outcomes {
            match o.status {
                Status::Accepted | Status::Duplicate => {
                    self.lines
                        .get_or_create(&OutcomeLabel {
                            outcome: o.status.as_str(),
                        })
                        .inc();
                }
                _ => {
                    // The reason without its details, so the label set stays small.
                    let reason = o
                        .reason
                        .as_deref()
                        .unwrap_or("unknown")
                        .split(':')
                        .next()
                        .unwrap_or("unknown");
                    self.reject(reason);
                }
            }
        }
        self.ingest_seconds.observe(took.as_secs_f64());
    }

    /// Counts one line rejected for `reason` (already without its details).
    fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one heartbeat stored.
    pub fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// The exposition text, with the store's size as it is now.
    pub fn render(&self, store_bytes: u64) -> String {
        self.store_bytes.set(store_bytes);
        let mut out = String::new();
        // Writing into a String cannot fail; an Err would be a bug in the encoder, and the
        // text so far is still what it is.
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("encoding /metrics failed: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample line: its name, its labels (name, value unescaped) and its value.
    type Sample = (String, Vec<(String, String)>, String);

    /// The sample lines (name, labels, value) of an exposition, read as a scraper reads them:
    /// a label value is a quoted string in which only `\\`, `\"` and `\n` are escapes, so an
    /// unescaped quote or a raw newline inside a value breaks the line apart and fails here.
    fn samples(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut chars = line.chars();
            let mut name = String::new();
            let mut labels = Vec::new();
            let mut next = chars.next();
            while let Some(c) = next.filter(|c| *c != '{' && *c != ' ') {
                name.push(c);
                next = chars.next();
            }
            if next == Some('{') {
                loop {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                other => panic!("\\{other:?} is no escape in {line:?}"),
                            },
                            Some('"') => break,
                            Some(c) => value.push(c),
                            None => panic!("a label value runs past the line: {line:?}"),
                        }
                    }
                    labels.push((key, value));
                    match chars.next() {
                        Some(',') => continue,
                        Some('}') => break,
                        other => panic!("{other:?} after a label value in {line:?}"),
                    }
                }
                next = chars.next();
            }
            assert_eq!(next, Some(' '), "{line:?}");
            let value: String = chars.collect();
            assert!(
                value.parse::<f64>().is_ok(),
                "{value:?} is not a number in {line:?}"
            );
            out.push((name, labels, value));
        }
        out
    }

    #[test]
    fn names_and_values_are_those_dashboards_read() {
        let m = Metrics::default();
        m.record(
            &[
                LineOutcome::stored(1, "a".repeat(64), true),
                LineOutcome::stored(2, "a".repeat(64), false),
                LineOutcome::rejected(3, None, "malformed: expected value".into()),
                LineOutcome::rejected(4, None, "bad signature".into()),
                LineOutcome::rejected(5, None, "malformed: trailing comma".into()),
            ],
            Duration::from_millis(20),
        );
        m.heartbeat();
        let text = m.render(4096);
        for want in [
            "vantage_ingest_lines_total{outcome=\"accepted\"} 1\n",
            "vantage_ingest_lines_total{outcome=\"duplicate\"} 1\n",
            "vantage_ingest_rejected_total{reason=\"malformed\"} 2\n",
            "vantage_ingest_rejected_total{reason=\"bad signature\"} 1\n",
            "vantage_ingest_seconds_count 1\n",
            "vantage_ingest_seconds_bucket{le=\"0.064\"} 1\n",
            "vantage_heartbeats_total 1\n",
            "vantage_store_bytes 4096\n",
            "# TYPE vantage_ingest_seconds histogram\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            samples(&text).len(),
            text.lines().filter(|l| !l.starts_with('#')).count()
        );
    }

    #[test]
    fn a_label_value_with_a_quote_a_backslash_and_a_newline_stays_one_valid_sample() {
        let m = Metrics::default();
        let nasty = "say \"hi\" \\ then\nvantage_heartbeats_total 999";
        m.reject(nasty);
        let text = m.render(0);
        for zero in [
            "vantage_ingest_lines_total{outcome=\"accepted\"} 0\n",
            "vantage_ingest_lines_total{outcome=\"duplicate\"} 0\n",
        ] {
            assert!(text.contains(zero), "{zero:?} missing from:\n{text}");
        }
        assert!(
            text.contains(
                "vantage_ingest_rejected_total{reason=\"say \\\"hi\\\" \\\\ then\\nvantage_heartbeats_total 999\"} 1\n"
            ),
            "{text}"
        );
        // Read back as a scraper would: the value comes back whole, and the forged line
        // inside it did not become a sample of its own.
        let all = samples(&text);
        let rejected: Vec<_> = all
            .iter()
            .filter(|(name, _, _)| name == "vantage_ingest_rejected_total")
            .collect();
        assert_eq!(rejected.len(), 1, "{text}");
        assert_eq!(rejected[0].1, [("reason".to_string(), nasty.to_string())]);
        let heartbeats: Vec<_> = all
            .iter()
            .filter(|(name, _, _)| name == "vantage_heartbeats_total")
            .map(|(_, _, v)| v.as_str())
            .collect();
        assert_eq!(heartbeats, ["0"], "{text}");
    }

    /// The reader above is strict enough to catch what escaping prevents: the same value
    /// written raw splits its line.
    #[test]
    #[should_panic(expected = "after a label value")]
    fn the_reader_refuses_a_raw_quote() {
        samples("vantage_ingest_rejected_total{reason=\"say \"hi\"\"} 1\n");
    }

    #[test]
    #[should_panic(expected = "runs past the line")]
    fn the_reader_refuses_a_raw_newline() {
        samples("vantage_ingest_rejected_total{reason=\"one\ntwo\"} 1\n");
    }
}
