//! Scoring a throttling measurement: is a target's goodput held at a flat ceiling far below the
//! control's, repetition after repetition?
//!
//! The method is that of "Throttling Twitter" (Xue et al., IMC 2021):
//! the same payload is downloaded from a server we control once with the target's SNI and once
//! with a control SNI. A policer keyed on the SNI holds the target to a near-constant rate (about
//! 130-150 kbit/s in Russia, 2021) while the control fills the link. Three properties together
//! separate that from a slow or noisy network:
//!
//! 1. **ratio**: the target's steady goodput is below `ratio` (default 0.3) times the control's
//!    in the same repetition (the two downloads run back to back, in alternating order);
//! 2. **flat**: within the download, the rate over equal time windows varies little (coefficient
//!    of variation at most `flat_cv`): a ceiling, not congestion;
//! 3. **consistent**: at least two thirds of the repetitions show 1 and 2, and their ceilings
//!    agree within a factor of `ceiling_spread`.
//!
//! The reported ceiling is the median steady goodput of the throttled repetitions.

use serde::{Deserialize, Serialize};

use super::Download;

/// Thresholds of the verdict; defaults documented on each field. Kept as data so that the
/// aggregator can rescore stored measurements with other values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// A target slower than this fraction of the control is suspect: 0.3 by default, `--ratio`
    /// (README.md, "Throttling"); Twitter's 150 kbit/s against a multi-megabit control is far
    /// below.
    pub ratio: f64,
    /// Largest coefficient of variation of the windowed rates for a flat ceiling. A shaper or a
    /// policer gives well under 0.2 over half-second windows; congestion and Wi-Fi swing more.
    pub flat_cv: f64,
    /// Fraction of the repetitions that must agree (two thirds: two of three).
    pub consistent: f64,
    /// Largest max/min of the throttled repetitions' ceilings.
    pub ceiling_spread: f64,
    /// A download shorter than this (after its first byte) is too quick to show a ceiling.
    pub min_duration_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            ratio: 0.3,
            flat_cv: 0.35,
            consistent: 2.0 / 3.0,
            ceiling_spread: 1.5,
            min_duration_ms: 400,
        }
    }
}

/// What the scoring concluded for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A flat ceiling far below the control, consistently.
    Throttled,
    /// The target downloads as fast as the control, or not consistently slower.
    NotThrottled,
    /// The target's downloads failed while the control's worked: blocking, not throttling
    /// (the failure strings say how).
    Failed,
    /// Too few repetitions where both downloads worked (e.g. the server was unreachable).
    Undetermined,
}

impl Verdict {
    /// The snake_case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Throttled => "throttled",
            Verdict::NotThrottled => "not_throttled",
            Verdict::Failed => "failed",
            Verdict::Undetermined => "undetermined",
        }
    }
}

/// One repetition's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// Repetition number.
    pub repetition: u32,
    /// Target steady goodput, kbit/s.
    pub target_kbps: f64,
    /// Control steady goodput, kbit/s.
    pub control_kbps: f64,
    /// target / control.
    pub ratio: f64,
    /// Coefficient of variation of the target's windowed rates; `None` when too short to tell.
    pub target_cv: Option<f64>,
    /// Whether this repetition alone looks throttled.
    pub throttled: bool,
}

/// The verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The conclusion.
    pub verdict: Verdict,
    /// Estimated rate ceiling in kbit/s, when throttled.
    pub ceiling_kbps: Option<f64>,
    /// Median target/control ratio over the repetitions where both worked.
    pub ratio: Option<f64>,
    /// Each repetition where both downloads worked.
    pub pairs: Vec<Pair>,
    /// In words, for people.
    pub reason: String,
}

/// Goodput after the first quarter of the bytes (slow start and any initial burst a token
/// bucket allows are left out), in bits per second; `None` for a failed or empty download.
/// A download too quick for that (under [`STEADY_MIN_MS`] after the quarter mark, as on a fast
/// link) is measured whole, from the request to its last byte.
pub fn steady_bps(d: &Download) -> Option<f64> {
    if d.failure.is_some() || d.bytes == 0 {
        return None;
    }
    let (t_a, b_a) = at_fraction(&d.samples, d.bytes, 0.25)?;
    let &(t_e, b_e) = d.samples.last()?;
    if t_e.saturating_sub(t_a) >= STEADY_MIN_MS && b_e > b_a {
        return Some((b_e - b_a) as f64 * 8.0 / ((t_e - t_a) as f64 / 1000.0));
    }
    let secs = d.ttlb_ms.unwrap_or(t_e).max(1) as f64 / 1000.0;
    Some(d.bytes as f64 * 8.0 / secs)
}

/// The shortest stretch over which a steady rate is taken.
pub const STEADY_MIN_MS: u64 = 100;

/// Coefficient of variation of the rate over four equal windows after the first quarter of the
/// bytes; `None` when that stretch is shorter than `min_ms`.
pub fn windowed_cv(d: &Download, min_ms: u64) -> Option<f64> {
    let (t_a, _) = at_fraction(&d.samples, d.bytes, 0.25)?;
    let &(t_e, _) = d.samples.last()?;
    if t_e.saturating_sub(t_a) < min_ms {
        return None;
    }
    const WINDOWS: u64 = 4;
    let width = (t_e - t_a) as f64 / WINDOWS as f64;
    let rates: Vec<f64> = (0..WINDOWS)
        .map(|i| {
            let from = t_a as f64 + width * i as f64;
            let to = from + width;
            (bytes_at(&d.samples, to) - bytes_at(&d.samples, from)) / width
        })
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    if mean <= 0.0 {
        return None;
    }
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
    Some(var.sqrt() / mean)
}

/// The first sample at which `fraction` of `total` bytes had arrived.
fn at_fraction(samples: &[(u64, u64)], total: u64, fraction: f64) -> Option<(u64, u64)> {
    let want = (total as f64 * fraction) as u64;
    samples.iter().copied().find(|&(_, b)| b >= want)
}

/// Bytes received by `t_ms`, linearly interpolated between samples.
fn bytes_at(samples: &[(u64, u64)], t_ms: f64) -> f64 {
    let mut prev = (0.0, 0.0);
    for &(t, b) in samples {
        let (t, b) = (t as f64, b as f64);
        if t >= t_ms {
            if t <= prev.0 {
                return b;
            }
            return prev.1 + (b - prev.1) * (t_ms - prev.0) / (t - prev.0);
        }
        prev = (t, b);
    }
    prev.1
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Scores one target's downloads against the control downloads of the same repetitions.
pub fn assess(target: &[Download], control: &[Download], rules: &Rules) -> Assessment {
    let mut pairs = Vec::new();
    for t in target {
        let Some(c) = control.iter().find(|c| c.repetition == t.repetition) else {
            continue;
        };
        let (Some(tb), Some(cb)) = (steady_bps(t), steady_bps(c)) else {
            continue;
        };
        let ratio = tb / cb.max(1.0);
        let target_cv = windowed_cv(t, rules.min_duration_ms);
        pairs.push(Pair {
            repetition: t.repetition,
            target_kbps: tb / 1000.0,
            control_kbps: cb / 1000.0,
            ratio,
            target_cv,
            throttled: ratio < rules.ratio && target_cv.is_some_and(|cv| cv <= rules.flat_cv),
        });
    }
    let control_ok = control.iter().any(|c| steady_bps(c).is_some());
    let target_failures: Vec<&str> = target.iter().filter_map(|t| t.failure.as_deref()).collect();
    let ratio = median(pairs.iter().map(|p| p.ratio).collect());
    let needed = ((target.len() as f64) * rules.consistent).ceil().max(2.0) as usize;
    if pairs.len() < needed {
        let (verdict, reason) = if control_ok && target_failures.len() >= needed {
            (
                Verdict::Failed,
                format!(
                    "the target's downloads failed ({}) while the control's worked",
                    target_failures.join(", ")
                ),
            )
        } else {
            (
                Verdict::Undetermined,
                format!(
                    "{} of {} repetitions had both downloads working; {needed} needed",
                    pairs.len(),
                    target.len()
                ),
            )
        };
        return Assessment {
            verdict,
            ceiling_kbps: None,
            ratio,
            pairs,
            reason,
        };
    }
    let throttled: Vec<f64> = pairs
        .iter()
        .filter(|p| p.throttled)
        .map(|p| p.target_kbps)
        .collect();
    let lo = throttled.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = throttled.iter().copied().fold(0.0, f64::max);
    let agree = lo > 0.0 && hi / lo <= rules.ceiling_spread;
    if throttled.len() >= needed && agree {
        let ceiling = median(throttled.clone());
        let reason = format!(
            "{} of {} repetitions held at a flat {:.0} kbit/s, {:.0}% of the control",
            throttled.len(),
            pairs.len(),
            ceiling.unwrap_or_default(),
            ratio.unwrap_or_default() * 100.0
        );
        return Assessment {
            verdict: Verdict::Throttled,
            ceiling_kbps: ceiling,
            ratio,
            pairs,
            reason,
        };
    }
    let reason = if throttled.len() >= needed {
        format!(
            "slow repetitions disagree on a ceiling ({lo:.0} to {hi:.0} kbit/s): no fixed limit"
        )
    } else {
        format!(
            "{} of {} repetitions slow and flat; {needed} needed (median ratio {:.2})",
            throttled.len(),
            pairs.len(),
            ratio.unwrap_or_default()
        )
    };
    Assessment {
        verdict: Verdict::NotThrottled,
        ceiling_kbps: None,
        ratio,
        pairs,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttling::Role;

    /// A download of `ms` sampled every 50 ms, arriving at `kbps(t_ms)`.
    fn shaped(repetition: u32, role: Role, ms: u64, kbps: impl Fn(u64) -> f64) -> Download {
        let mut samples = Vec::new();
        let mut bytes = 0.0;
        for i in 1..=ms / 50 {
            bytes += kbps(i * 50) * 1000.0 / 8.0 * 0.05;
            samples.push((i * 50, bytes as u64));
        }
        Download {
            sni: "x".into(),
            role,
            repetition,
            bytes: bytes as u64,
            samples,
            ..Download::default()
        }
    }

    /// A constant `kbps` with `jitter` (a fraction) added to every other sample.
    fn steady(repetition: u32, role: Role, kbps: f64, ms: u64, jitter: f64) -> Download {
        shaped(repetition, role, ms, |t| {
            if (t / 50) % 2 == 0 {
                kbps * (1.0 + jitter)
            } else {
                kbps * (1.0 - jitter)
            }
        })
    }

    fn failed(repetition: u32) -> Download {
        Download {
            repetition,
            role: Role::Target,
            failure: Some("connection_reset".into()),
            ..Download::default()
        }
    }

    #[test]
    fn steady_goodput_and_flatness_of_a_constant_rate() {
        let d = steady(0, Role::Target, 400.0, 4000, 0.0);
        let bps = steady_bps(&d).expect("rate");
        assert!((bps / 1000.0 - 400.0).abs() < 8.0, "{bps}");
        assert!(windowed_cv(&d, 400).expect("cv") < 0.01);
        // Too short to judge.
        let quick = steady(0, Role::Control, 50_000.0, 100, 0.0);
        assert_eq!(windowed_cv(&quick, 400), None);
        // Whole in one read, 2 ms after the request (a fast link): the rate of the whole.
        let burst = Download {
            bytes: 160_000,
            ttlb_ms: Some(2),
            samples: vec![(2, 160_000)],
            ..Download::default()
        };
        assert_eq!(steady_bps(&burst), Some(160_000.0 * 8.0 / 0.002));
    }

    #[test]
    fn a_flat_ceiling_far_below_the_control_is_throttling_with_its_rate() {
        let target: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Target, 150.0, 6000, 0.05))
            .collect();
        let control: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Control, 8000.0, 1000, 0.3))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::Throttled, "{}", a.reason);
        let ceiling = a.ceiling_kbps.expect("ceiling");
        assert!((ceiling - 150.0).abs() < 10.0, "{ceiling}");
        assert!(a.reason.contains("3 of 3 repetitions"), "{}", a.reason);
    }

    #[test]
    fn the_same_speed_as_the_control_is_not_throttling() {
        let target: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Target, 2000.0, 2000, 0.05))
            .collect();
        let control: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Control, 2100.0, 2000, 0.05))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::NotThrottled, "{}", a.reason);
        assert_eq!(a.ceiling_kbps, None);
    }

    #[test]
    fn slow_but_erratic_or_once_only_is_not_throttling() {
        // Slow but swinging from 50 to 250 kbit/s within each download: congestion, not a
        // ceiling.
        let target: Vec<_> = (0..3)
            .map(|r| {
                shaped(r, Role::Target, 6000, |t| {
                    if (t / 1500) % 2 == 0 { 50.0 } else { 250.0 }
                })
            })
            .collect();
        let control: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Control, 8000.0, 1000, 0.0))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::NotThrottled, "{}", a.reason);

        // Slow in one repetition of three.
        let mut target: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Target, 8000.0, 1000, 0.0))
            .collect();
        target[1] = steady(1, Role::Target, 150.0, 6000, 0.0);
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::NotThrottled, "{}", a.reason);
        assert!(a.reason.contains("1 of 3"), "{}", a.reason);
    }

    #[test]
    fn ceilings_that_disagree_are_not_one_limit() {
        let target = vec![
            steady(0, Role::Target, 100.0, 6000, 0.0),
            steady(1, Role::Target, 400.0, 6000, 0.0),
            steady(2, Role::Target, 900.0, 6000, 0.0),
        ];
        let control: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Control, 20_000.0, 1000, 0.0))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::NotThrottled, "{}", a.reason);
        assert!(a.reason.contains("disagree"), "{}", a.reason);
    }

    #[test]
    fn failed_targets_with_a_working_control_are_blocking_and_no_control_is_undetermined() {
        let target: Vec<_> = (0..3).map(failed).collect();
        let control: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Control, 8000.0, 1000, 0.0))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::Failed);
        assert!(a.reason.contains("connection_reset"), "{}", a.reason);

        let control: Vec<_> = (0..3)
            .map(|r| Download {
                repetition: r,
                failure: Some("generic_timeout_error".into()),
                ..Download::default()
            })
            .collect();
        let target: Vec<_> = (0..3)
            .map(|r| steady(r, Role::Target, 150.0, 6000, 0.0))
            .collect();
        let a = assess(&target, &control, &Rules::default());
        assert_eq!(a.verdict, Verdict::Undetermined);
    }
}
