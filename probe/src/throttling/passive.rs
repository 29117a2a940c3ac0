//! The passive throttling signal: how fast web_connectivity's final page arrived at the probe,
//! against how fast the same page arrived at the test helper (issue 8, items 1 and 3).
//!
//! OONI records only that a throttled page loaded; its speed samples were left to a pipeline
//! that does not exist (ooni/probe#1680). Every web_connectivity response here carries
//! `x_transfer` (time to head, time to last byte, body progress), and so does the helper's
//! fetch, so each measurement yields a goodput for both sides.
//!
//! One measurement alone decides little: the helper sits in a data centre, so almost any home
//! link is "far below the control" on a large page. The verdict needs history too, the target's
//! own baseline as seen by the same probe, which only the aggregator has; it lives in the
//! aggregator's throttling detector. What the probe's library fixes here is what counts as a
//! usable rate, so that both sides apply the same rule.

use serde::{Deserialize, Serialize};

use crate::ooni::{Transfer, WebConnectivityMeasurement};

/// What makes a page's download a usable rate sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveRules {
    /// The probe's rate is "far below the control's" under this fraction of it: the same
    /// default as the active test's ratio (issue 8: 0.3).
    pub ratio: f64,
    /// Smaller bodies arrive within TCP's first round trips, so their "rate" measures latency,
    /// not a ceiling. 32 KiB takes 1.7 s at Twitter's 2021 ceiling of 150 kbit/s.
    pub min_body_bytes: u64,
}

impl Default for PassiveRules {
    fn default() -> Self {
        PassiveRules {
            ratio: 0.3,
            min_body_bytes: 32 * 1024,
        }
    }
}

/// The goodput of one web_connectivity measurement, stored with its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The probe's rate over the final response body, kbit/s.
    pub probe_kbps: f64,
    /// Body bytes the probe read.
    pub body_bytes: u64,
    /// The helper's rate over its copy of the page, kbit/s, when it had a usable one.
    pub control_kbps: Option<f64>,
    /// Whether the probe's rate is below `ratio` times the helper's; `None` without a control
    /// rate.
    pub below_control: Option<bool>,
}

/// Faster than this (10 Gbit/s) no page arrives: such a record is broken, or forged, and a
/// baseline built on it would make every later page look throttled.
const MAX_PLAUSIBLE_KBPS: f64 = 10_000_000.0;

/// A usable rate from `t`: a body of at least the minimum, at a plausible rate. A read too quick to time counts as
/// [`Transfer::MIN_TIMED_MS`] long, a lower bound on the rate, which is the safe side for both
/// the helper (it makes the probe look less far below) and the baseline.
fn rate(t: Option<&Transfer>, rules: &PassiveRules) -> Option<(f64, u64)> {
    let t = t?;
    let &(_, bytes) = t.samples.last()?;
    if bytes < rules.min_body_bytes {
        return None;
    }
    let kbps = t.kbps().filter(|&k| k <= MAX_PLAUSIBLE_KBPS)?;
    Some((kbps, bytes))
}

/// The goodput of `m`'s final page (the first entry of `requests`, df-001's reverse order), or
/// `None` when the probe got no body large enough to tell.
pub fn goodput(m: &WebConnectivityMeasurement, rules: &PassiveRules) -> Option<Goodput> {
    let tk = &m.test_keys;
    let last = tk.requests.as_ref()?.first()?.response.as_ref()?;
    let (probe_kbps, body_bytes) = rate(last.x_transfer.as_ref(), rules)?;
    let control_kbps = tk
        .control
        .as_ref()
        .and_then(|c| rate(c.http()?.x_transfer.as_ref(), rules))
        .map(|(kbps, _)| kbps);
    Some(Goodput {
        probe_kbps: round(probe_kbps),
        body_bytes,
        control_kbps: control_kbps.map(round),
        below_control: control_kbps.map(|c| probe_kbps < rules.ratio * c),
    })
}

/// Rates to 0.1 kbit/s: more digits are noise, and stored verdicts stay short.
fn round(kbps: f64) -> f64 {
    (kbps * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real measurement of a page that loaded (OONI's `successWithHTTP`, from
    /// `tests/data/ooni/webconnectivity/`), whose final page took `probe_ms` at the probe and
    /// `control_ms` at the helper for `bytes` body bytes after a 20 ms head.
    fn measurement(
        bytes: u64,
        probe_ms: u64,
        control_ms: Option<u64>,
    ) -> WebConnectivityMeasurement {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/ooni/webconnectivity/generated-successWithHTTP.json"
        );
        let text = std::fs::read_to_string(path).expect("OONI measurement in tests/data");
        let mut m: serde_json::Value = serde_json::from_str(&text).expect("json");
        let transfer = |ms: u64| {
            serde_json::json!({"ttfb_ms": 20, "ttlb_ms": 20 + ms,
                "samples": [[120, bytes / 4], [20 + ms, bytes]]})
        };
        m["test_keys"]["requests"][0]["response"]["x_transfer"] = transfer(probe_ms);
        match control_ms {
            Some(ms) => m["test_keys"]["control"]["http_request"]["x_transfer"] = transfer(ms),
            None => m["test_keys"]["control"] = serde_json::Value::Null,
        }
        serde_json::from_value(m).expect("measurement")
    }

    #[test]
    fn a_large_page_gives_both_rates_and_compares_them() {
        let rules = PassiveRules::default();
        // 100 kB in 5 s (160 kbit/s) at the probe, in 100 ms (8,000 kbit/s) at the helper.
        let g = goodput(&measurement(100_000, 5_000, Some(100)), &rules).expect("goodput");
        assert_eq!(g.probe_kbps, 160.0);
        assert_eq!(g.control_kbps, Some(8_000.0));
        assert_eq!(g.below_control, Some(true));
        assert_eq!(g.body_bytes, 100_000);
        // As fast as the helper: not below.
        let g = goodput(&measurement(100_000, 150, Some(100)), &rules).expect("goodput");
        assert_eq!(g.below_control, Some(false));
    }

    #[test]
    fn small_pages_quick_reads_and_missing_controls_are_not_rates() {
        let rules = PassiveRules::default();
        assert_eq!(
            goodput(&measurement(10_000, 5_000, Some(100)), &rules),
            None
        );
        let g = goodput(&measurement(100_000, 5_000, None), &rules).expect("goodput");
        assert_eq!((g.control_kbps, g.below_control), (None, None));
        // A helper read too quick to time is timed as 50 ms: at least 16,000 kbit/s.
        let g = goodput(&measurement(100_000, 5_000, Some(10)), &rules).expect("goodput");
        assert_eq!(g.control_kbps, Some(16_000.0));
        assert_eq!(g.below_control, Some(true));
        // 18 EB in 5 s is a broken or forged record, not a rate.
        assert_eq!(goodput(&measurement(u64::MAX, 5_000, None), &rules), None);
    }
}
