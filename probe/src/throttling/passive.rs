//! The passive throttling signal: how fast web_connectivity's final page arrived at the probe,
//! against how fast the same page arrived at the test helper (README.md, "Throttling", the
//! passive signal).
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
    /// default as the active test's ratio, 0.3.
    pub ratio: f64,
    /// Smaller bodies arrive within TCP's first round trips, so their "rate" measures latency,
    /// not a ceiling. 32 KiB takes 1.7 s at Twitter's 2021 ceiling of 150 kbit/s.
    pub min_body_bytes: u64,
    /// When a body cut by the deadline was still arriving, and so is a rate too.
    pub cut: SteadyCut,
}

impl Default for PassiveRules {
    fn default() -> Self {
        PassiveRules {
            ratio: 0.3,
            min_body_bytes: 32 * 1024,
            cut: SteadyCut::default(),
        }
    }
}

/// A body the deadline cut (`x_transfer.cut_at_deadline`) was still arriving, steadily, when
/// every arrival over its last `window_ms` followed the one before within `max_gap_ms`, the last
/// one too was within `max_gap_ms` of the cut, and the bytes over the window came at
/// `min_kbps` or more. Such a page is slowed, not failed: a policer holds it to a rate, and the
/// rate is that window's (`docs/scoring.md`, "A page still arriving at the deadline").
///
/// A body that stopped (a censor's stall, a dropped path) has a silence before the cut far
/// longer than `max_gap_ms`, and a read shorter than the window is not judged: both stay the
/// failure they were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SteadyCut {
    /// How far back from the cut the body is looked at. Three seconds span many round trips
    /// and a policer's refills (a token bucket refills in well under a second at 128 kbit/s),
    /// and fit in the latest samples `x_transfer` keeps ([`Transfer::TAIL_MS`]); a longer
    /// window reaches where samples were dropped and reads as a gap.
    pub window_ms: u64,
    /// Longest time without a byte in the window. A policer that drops what exceeds its rate
    /// makes TCP retransmit after a timeout of 200 ms to 1 s (RFC 6298 sets the minimum RTO
    /// at 1 s; Linux uses 200 ms): a gap of up to a second is a policer at work, a longer one
    /// is a stall.
    pub max_gap_ms: u64,
    /// Below this rate over the window the body is a trickle, not a page being delivered:
    /// 1 kB/s.
    pub min_kbps: f64,
}

impl Default for SteadyCut {
    fn default() -> Self {
        SteadyCut {
            window_ms: 3_000,
            max_gap_ms: 1_000,
            min_kbps: 8.0,
        }
    }
}

/// The rate in kbit/s over the last `rules.window_ms` of a body the deadline cut while it was
/// still arriving steadily ([`SteadyCut`]); `None` for a body that was not cut, that stalled,
/// trickled, was read for less than the window, or whose record is inconsistent (samples out of
/// order, after the cut).
pub fn steady_cut_kbps(t: &Transfer, rules: &SteadyCut) -> Option<f64> {
    if !t.cut_at_deadline {
        return None;
    }
    let cut = t.cut_ms?;
    let window = rules.window_ms.max(Transfer::STEP_MS);
    let from = cut.checked_sub(window)?;
    if from < t.ttfb_ms {
        return None;
    }
    // The head is where the body started: no byte yet.
    let points: Vec<(u64, u64)> = std::iter::once((t.ttfb_ms, 0))
        .chain(t.samples.iter().copied())
        .collect();
    let ordered = points
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
    let &(last_t, last_bytes) = points.last()?;
    if !ordered || last_t > cut {
        return None;
    }
    // The last point at or before the window's start, and each arrival after it.
    let start = points.iter().rposition(|&(ms, _)| ms <= from)?;
    let mut arrived = points[start].0;
    for w in points[start..].windows(2) {
        if w[1].1 > w[0].1 {
            if w[1].0 - arrived > rules.max_gap_ms {
                return None;
            }
            arrived = w[1].0;
        }
    }
    if cut - arrived > rules.max_gap_ms {
        return None;
    }
    // Bytes by the window's start, between the two points around it.
    let (t0, b0) = points[start];
    let at_from = match points.get(start + 1) {
        Some(&(t1, b1)) if t1 > t0 => {
            b0 as f64 + (b1 - b0) as f64 * (from - t0) as f64 / (t1 - t0) as f64
        }
        _ => b0 as f64,
    };
    let kbps = (last_bytes as f64 - at_from) * 8.0 / window as f64;
    (kbps >= rules.min_kbps && kbps <= MAX_PLAUSIBLE_KBPS).then_some(kbps)
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
    /// Whether the probe's body was cut by the deadline while still arriving: its rate is then
    /// over the last [`SteadyCut::window_ms`] before the cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_at_deadline: bool,
}

/// Faster than this (10 Gbit/s) no page arrives: such a record is broken, or forged, and a
/// baseline built on it would make every later page look throttled.
const MAX_PLAUSIBLE_KBPS: f64 = 10_000_000.0;

/// A usable rate from `t`, with the body bytes read. A complete body counts when it has at least
/// the minimum, at a plausible rate; a read too quick to time counts as
/// [`Transfer::MIN_TIMED_MS`] long, a lower bound on the rate, which is the safe side for both
/// the helper (it makes the probe look less far below) and the baseline. A body the deadline cut
/// counts only when it was still arriving steadily ([`steady_cut_kbps`]), whatever its size:
/// its rate is timed over the window, not over a few round trips.
fn rate(t: Option<&Transfer>, rules: &PassiveRules) -> Option<(f64, u64)> {
    let t = t?;
    let &(_, bytes) = t.samples.last()?;
    if t.cut_at_deadline {
        return steady_cut_kbps(t, &rules.cut).map(|kbps| (kbps, bytes));
    }
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
    let cut_at_deadline = last.x_transfer.as_ref().is_some_and(|t| t.cut_at_deadline);
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
        cut_at_deadline,
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

    /// A body read as the engine reads it: `chunk` bytes every `every_ms` from the head at
    /// 20 ms until `until_ms`, then nothing until the deadline cuts it at `cut_ms`.
    fn cut_body(chunk: u64, every_ms: f64, until_ms: u64, cut_ms: u64) -> Transfer {
        let mut t = Transfer {
            ttfb_ms: 20,
            ..Transfer::default()
        };
        let mut bytes = 0;
        let mut i = 1.0;
        loop {
            let ms = 20 + (i * every_ms) as u64;
            if ms > until_ms {
                break;
            }
            bytes += chunk;
            t.record(ms, bytes);
            i += 1.0;
        }
        t.finish(bytes);
        t.cut(cut_ms);
        t
    }

    #[test]
    fn a_body_arriving_steadily_at_the_cut_has_the_rate_of_its_last_window() {
        let rules = SteadyCut::default();
        // 16 KiB/s (131 kbit/s), 1 KiB every 62.5 ms, until the deadline at 10 s.
        let t = cut_body(1024, 62.5, 10_000, 10_000);
        assert_eq!(t.samples.len(), Transfer::MAX_SAMPLES);
        let kbps = steady_cut_kbps(&t, &rules).expect("steady");
        assert!((kbps - 131.1).abs() < 131.1 * 0.05, "{kbps}");
        // Its JSON round trip keeps the cut and the rate.
        let back: Transfer =
            serde_json::from_value(serde_json::to_value(&t).expect("json")).expect("back");
        assert_eq!(steady_cut_kbps(&back, &rules), Some(kbps));
        // A policer's retransmissions: 8 KiB every 500 ms is still steady.
        let bursty = cut_body(8 * 1024, 500.0, 10_000, 10_000);
        let kbps = steady_cut_kbps(&bursty, &rules).expect("steady");
        assert!((kbps - 131.1).abs() < 131.1 * 0.2, "{kbps}");
        // The same body, not cut: no cut rate (its rate is the complete body's).
        let mut whole = t.clone();
        whole.cut_at_deadline = false;
        whole.cut_ms = None;
        assert_eq!(steady_cut_kbps(&whole, &rules), None);
    }

    #[test]
    fn stalled_trickling_short_or_broken_cut_bodies_have_no_rate() {
        let rules = SteadyCut::default();
        // Head and 40 kB at once, then nothing for 9 s.
        let stalled = cut_body(40_000, 100.0, 150, 10_000);
        assert_eq!(steady_cut_kbps(&stalled, &rules), None);
        // Steady until 1.5 s before the cut.
        let late_stall = cut_body(1024, 62.5, 8_500, 10_000);
        assert_eq!(steady_cut_kbps(&late_stall, &rules), None);
        // A silence of 1.5 s inside the window, then bytes again up to the cut.
        let mut gap = cut_body(1024, 62.5, 7_500, 10_000);
        let mut bytes = gap.samples.last().expect("samples").1;
        for ms in (9_000..=10_000).step_by(100) {
            bytes += 1600;
            gap.record(ms, bytes);
        }
        gap.finish(bytes);
        assert_eq!(steady_cut_kbps(&gap, &rules), None);
        // 100 bytes every 200 ms (4 kbit/s): a trickle.
        let trickle = cut_body(100, 200.0, 10_000, 10_000);
        assert_eq!(steady_cut_kbps(&trickle, &rules), None);
        // The head came 2 s before the deadline: shorter than the window, not judged.
        let mut late = cut_body(1024, 62.5, 10_000, 10_000);
        late.ttfb_ms = 8_000;
        late.samples.retain(|&(ms, _)| ms >= 8_000);
        assert_eq!(steady_cut_kbps(&late, &rules), None);
        // Records no engine writes: a cut before the last sample, samples out of order, a cut
        // without its time, times near u64::MAX.
        let steady = cut_body(1024, 62.5, 10_000, 10_000);
        let mut early = steady.clone();
        early.cut_ms = Some(9_000);
        assert_eq!(steady_cut_kbps(&early, &rules), None);
        let mut shuffled = steady.clone();
        shuffled.samples.swap(40, 41);
        assert_eq!(steady_cut_kbps(&shuffled, &rules), None);
        let mut untimed = steady.clone();
        untimed.cut_ms = None;
        assert_eq!(steady_cut_kbps(&untimed, &rules), None);
        let huge = Transfer {
            ttfb_ms: 0,
            ttlb_ms: Some(u64::MAX),
            samples: vec![(u64::MAX - 10, u64::MAX), (u64::MAX, u64::MAX)],
            cut_at_deadline: true,
            cut_ms: Some(u64::MAX),
        };
        assert_eq!(steady_cut_kbps(&huge, &rules), None);
    }

    #[test]
    fn a_cut_body_is_a_goodput_only_when_it_was_still_arriving() {
        let rules = PassiveRules::default();
        let with_probe = |t: &Transfer| {
            let mut m = serde_json::to_value(measurement(100_000, 5_000, Some(100))).expect("json");
            m["test_keys"]["requests"][0]["response"]["x_transfer"] =
                serde_json::to_value(t).expect("transfer");
            serde_json::from_value::<WebConnectivityMeasurement>(m).expect("measurement")
        };
        // 2 kB/s (16 kbit/s) for 10 s: 20 kB, under the minimum for a complete body, and still a
        // rate, timed over the window.
        let slow = cut_body(200, 100.0, 10_000, 10_000);
        assert!(slow.samples.last().expect("samples").1 < rules.min_body_bytes);
        let g = goodput(&with_probe(&slow), &rules).expect("goodput");
        assert!(g.cut_at_deadline);
        assert!((g.probe_kbps - 16.0).abs() < 1.0, "{g:?}");
        assert_eq!(g.below_control, Some(true));
        let json = serde_json::to_value(&g).expect("json");
        assert_eq!(json["cut_at_deadline"], true);
        // A stalled body of 100 kB was a rate before the cut was recorded; it is none now.
        let stalled = cut_body(100_000, 100.0, 150, 10_000);
        assert_eq!(goodput(&with_probe(&stalled), &rules), None);
        // A complete body's goodput does not say cut.
        let g = goodput(&measurement(100_000, 5_000, Some(100)), &rules).expect("goodput");
        assert!(!g.cut_at_deadline);
        assert!(
            serde_json::to_value(&g)
                .expect("json")
                .get("cut_at_deadline")
                .is_none()
        );
    }
}
