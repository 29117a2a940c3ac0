//! The throttling detector: a target held to a flat low ceiling in one network, measurement
//! after measurement (README.md, "Throttling"; the verdicts come from `ingest::apply_throttling`).
//!
//! One throttling measurement already compares the target with a control several times over,
//! so a single throttled verdict is strong evidence. The detector still asks for
//! `min_measurements` of them (by default two, from any probes of the network) before it opens
//! an event, so that one probe's bad afternoon is not a timeline entry. As for blocking, start
//! and end are the first and last measurements in which the evidence holds: `min_clean` clean
//! measurements in a row of the same target in the same network end the event (one alone may
//! be a probe whose own link was slow for both downloads), and so does a silence longer than
//! `max_gap_hours`.
//!
//! The passive signal joins the same runs. Every web_connectivity page large enough to time
//! carries the probe's and the helper's goodput (`vantage_probe::throttling::passive`), and so
//! does a page the probe's deadline cut while it was still arriving steadily, with its rate over
//! the last seconds before the cut (`docs/scoring.md`, "A page still arriving at the
//! deadline"); a page that stalled carries none. A home
//! link is nearly always far below a helper in a data centre, so that comparison alone says
//! little; what a policer adds is a drop below the target's own baseline, the median rate of
//! the same target from the same probe over the previous week. A page is passively throttled
//! when it is both far below the helper and under `baseline_drop` times that baseline while the
//! probe's other pages kept their rates (else its own link was slow), and clean when it is back
//! above it. Passive verdicts are weaker than the active test's, which
//! compares two downloads over the same path, so a run made of them alone needs
//! `passive_min_measurements`.
//!
//! Each probe is at most one vote per target, kind and verdict within an hour
//! ([`VOTE_SECONDS`]), so one key sending a thousand throttled verdicts is one verdict, and a
//! thousand alternating ones two. Which probes count at all is decided before ([`events`],
//! `signals::Admit`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Deserialize;

use super::signals::Admit;
use crate::store::model::{Entity, Event, Kind, Scope, format_time};
pub use crate::store::model::{RateSample, ThrottlingObservation as Observation};
use crate::store::{DbError, Storage};

/// A probe's verdicts of one target within this long are one vote. The daemon tests every few
/// hours (README.md, "Unattended: `vantage daemon`"), so an honest probe casts one anyway.
pub const VOTE_SECONDS: i64 = 3600;

/// Thresholds of the throttling detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlingConfig {
    /// Throttled measurements an event needs.
    pub min_measurements: usize,
    /// Throttled measurements further apart than this start a new event: the daemon tests
    /// every few hours, so a longer silence means nobody was looking.
    pub max_gap_hours: i64,
    /// Clean measurements in a row that end an event.
    pub min_clean: usize,
    /// Passively throttled pages an event needs when no active test is among them, with rates
    /// within `passive_spread` of their median and no clean page between them.
    pub passive_min_measurements: usize,
    /// How far a passively throttled page's rate may be from the run's median (a factor), as
    /// the active test's `ceiling_spread`.
    pub passive_spread: f64,
    /// How far back a target's baseline rate reaches, in days.
    pub baseline_days: i64,
    /// Earlier rate samples a baseline needs (same probe, same target).
    pub baseline_min: usize,
    /// A page slower than this fraction of its baseline has dropped: a policer cuts a rate by
    /// an order of magnitude, the evening peak by well under half.
    pub baseline_drop: f64,
}

impl Default for ThrottlingConfig {
    fn default() -> Self {
        ThrottlingConfig {
            min_measurements: 2,
            max_gap_hours: 12,
            min_clean: 2,
            passive_min_measurements: 3,
            passive_spread: 1.5,
            baseline_days: 7,
            baseline_min: 3,
            baseline_drop: 0.5,
        }
    }
}

impl ThrottlingConfig {
    /// Why the values make no sense together, if they do not.
    pub fn check(&self) -> Result<(), String> {
        if !(self.baseline_drop > 0.0 && self.baseline_drop < 1.0) {
            return Err(format!(
                "baseline_drop {} must be between 0 and 1 (a fraction of the baseline)",
                self.baseline_drop
            ));
        }
        if self.passive_spread.is_nan() || self.passive_spread < 1.0 {
            return Err(format!(
                "passive_spread {} must be at least 1 (a factor)",
                self.passive_spread
            ));
        }
        if self.baseline_days < 1 || self.max_gap_hours < 1 {
            return Err("baseline_days and max_gap_hours must be at least 1".into());
        }
        Ok(())
    }
}

/// The middle value (the upper one of an even count), as every rate here is summarised.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Most recent samples a baseline keeps.
const BASELINE_SAMPLES: usize = 20;

/// The probe's other pages within this long of a slow one tell whether its whole link was slow.
const LINK_WINDOW_SECONDS: i64 = 3600;

/// Judges each sample against the baseline of its probe and target: the median of the earlier
/// samples within `baseline_days` that had not dropped. Without enough of them the verdict is
/// `None`; so a target throttled since before its first measurement is left to the active test,
/// which needs no history. While a probe's target stays dropped its baseline is not aged, so an
/// episode longer than `baseline_days` is still measured against the rate from before it.
///
/// A drop counts only when it is the target's alone: the same probe's other pages within
/// [`LINK_WINDOW_SECONDS`] must be, by their median, at or above their own baselines' fraction.
/// When they dropped too, the probe's link was slow (Wi-Fi, a neighbour's download), and when
/// there are none, nobody can tell; both leave the verdict `None`.
pub fn judge(mut samples: Vec<RateSample>, config: &ThrottlingConfig) -> Vec<Observation> {
    samples.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let reach = config.baseline_days * 86_400;
    // Each sample's rate as a fraction of its baseline, in time order.
    let mut ratios: Vec<Option<f64>> = Vec::with_capacity(samples.len());
    // Per (network, probe, target): the baseline samples, and whether the last one dropped.
    type Baseline = (VecDeque<(i64, f64)>, bool);
    let mut baselines: HashMap<(u32, &str, &str), Baseline> = HashMap::new();
    for s in &samples {
        let (base, in_episode) = baselines
            .entry((s.asn, s.probe.as_str(), s.domain.as_str()))
            .or_default();
        while !*in_episode && base.front().is_some_and(|&(at, _)| s.at - at > reach) {
            base.pop_front();
        }
        let usual = (base.len() >= config.baseline_min.max(1))
            .then(|| median(base.iter().map(|&(_, k)| k).collect()))
            .flatten();
        let ratio = usual.map(|m| s.kbps / m.max(f64::MIN_POSITIVE));
        *in_episode = ratio.is_some_and(|r| r < config.baseline_drop);
        if !*in_episode {
            if base.len() == BASELINE_SAMPLES {
                base.pop_front();
            }
            base.push_back((s.at, s.kbps));
        }
        ratios.push(ratio);
    }
    // Per (network, probe): (time, target, ratio) of every sample with a baseline.
    type Near<'a> = Vec<(i64, &'a str, f64)>;
    let mut by_probe: HashMap<(u32, &str), Near> = HashMap::new();
    for (s, r) in samples.iter().zip(&ratios) {
        if let Some(r) = r {
            by_probe
                .entry((s.asn, s.probe.as_str()))
                .or_default()
                .push((s.at, s.domain.as_str(), *r));
        }
    }
    let link_fine = |s: &RateSample| {
        let near = by_probe.get(&(s.asn, s.probe.as_str()))?;
        let lo = near.partition_point(|&(at, _, _)| at < s.at - LINK_WINDOW_SECONDS);
        let others = near[lo..]
            .iter()
            .take_while(|&&(at, _, _)| at <= s.at + LINK_WINDOW_SECONDS)
            .filter(|&&(_, d, _)| d != s.domain)
            .map(|&(_, _, r)| r)
            .collect();
        median(others).map(|m| m >= config.baseline_drop)
    };
    let verdicts: Vec<Option<bool>> = samples
        .iter()
        .zip(&ratios)
        .map(|(s, r)| {
            let dropped = r.map(|r| r < config.baseline_drop)?;
            match (dropped, s.below_control) {
                // Back at its usual rate, or slow at the helper too (the site, not the path).
                (false, _) | (true, Some(false)) => Some(false),
                (true, None) => None,
                (true, Some(true)) => link_fine(s).and_then(|fine| fine.then_some(true)),
            }
        })
        .collect();
    samples
        .into_iter()
        .zip(verdicts)
        .map(|(s, throttled)| Observation {
            asn: s.asn,
            kbps: (throttled == Some(true)).then_some(s.kbps),
            domain: s.domain,
            at: s.at,
            throttled,
            probe: s.probe,
            id: s.id,
            passive: true,
        })
        .collect()
}

/// A throttling episode found in the observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The network.
    pub asn: u32,
    /// The target.
    pub domain: String,
    /// First throttled measurement.
    pub start: i64,
    /// Last throttled measurement, once it is over.
    pub end: Option<i64>,
    /// Median of the measured ceilings.
    pub kbps: Option<f64>,
    /// Throttled measurements in the episode.
    pub measurements: usize,
    /// Distinct probes with a throttled measurement.
    pub probes: usize,
    /// The throttled measurements.
    pub evidence: Vec<String>,
}

/// One observation per probe, network, target, kind (active or passive) and verdict within
/// each [`VOTE_SECONDS`]: the first of them, its ceiling the median of theirs. A probe
/// repeating a verdict is one vote however often it repeats it, and a flood of alternating
/// verdicts is two; a probe whose verdict changes within the hour casts one of each, in the
/// order it saw them, so a probe that saw a target throttled and then clean both supports an
/// event and helps end it.
fn votes(obs: &[Observation]) -> Vec<Observation> {
    type Slot<'a> = (u32, &'a str, &'a str, bool, i64, Option<bool>);
    let mut slots: BTreeMap<Slot, Vec<&Observation>> = BTreeMap::new();
    for o in obs.iter().filter(|o| o.throttled.is_some()) {
        slots
            .entry((
                o.asn,
                o.domain.as_str(),
                o.probe.as_str(),
                o.passive,
                o.at.div_euclid(VOTE_SECONDS),
                o.throttled,
            ))
            .or_default()
            .push(o);
    }
    slots
        .into_values()
        .map(|mut same| {
            same.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
            let mut vote = same[0].clone();
            if vote.throttled == Some(true) {
                vote.kbps = median(same.iter().filter_map(|o| o.kbps).collect());
            }
            vote
        })
        .collect()
}

/// Runs of throttled verdicts per network and target, each probe one vote per target and
/// [`VOTE_SECONDS`].
pub fn detect(obs: &[Observation], now: i64, config: &ThrottlingConfig) -> Vec<Finding> {
    let obs = votes(obs);
    let mut groups: BTreeMap<(u32, &str), Vec<&Observation>> = BTreeMap::new();
    for o in &obs {
        if o.throttled.is_some() {
            groups
                .entry((o.asn, o.domain.as_str()))
                .or_default()
                .push(o);
        }
    }
    let gap = config.max_gap_hours * 3600;
    let mut out = Vec::new();
    for ((asn, domain), mut g) in groups {
        g.sort_by_key(|o| o.at);
        let mut run: Vec<&Observation> = Vec::new();
        let mut close = |run: &mut Vec<&Observation>, ended: bool| {
            let kbps = median(run.iter().filter_map(|o| o.kbps).collect());
            // Passive verdicts join an event as evidence but do not stand in for active ones:
            // a run needs `min_measurements` active verdicts, or enough passive ones alone. A
            // policer holds every probe to the same ceiling while congestion slows each page
            // to its own fraction of its own link, so only the passive pages near their median
            // rate count.
            let active = run.iter().filter(|o| !o.passive).count();
            let passive: Vec<f64> = run
                .iter()
                .filter(|o| o.passive)
                .filter_map(|o| o.kbps)
                .collect();
            let agreeing = median(passive.clone()).map_or(0, |m| {
                let spread = config.passive_spread;
                passive
                    .iter()
                    .filter(|&&k| k * spread >= m && k <= m * spread)
                    .count()
            });
            let enough = active >= config.min_measurements.max(1)
                || agreeing >= config.passive_min_measurements.max(1);
            if enough {
                let probes: BTreeSet<&str> = run.iter().map(|o| o.probe.as_str()).collect();
                let start = run[0].at;
                let last = run[run.len() - 1].at;
                out.push(Finding {
                    asn,
                    domain: domain.to_string(),
                    start,
                    end: ended.then_some(last),
                    kbps,
                    measurements: run.len(),
                    probes: probes.len(),
                    evidence: run.iter().map(|o| o.id.clone()).take(200).collect(),
                });
            }
            run.clear();
        };
        let mut clean = 0usize;
        for o in g {
            let last = run.last().map(|r| r.at);
            match (o.throttled, last) {
                (Some(true), Some(l)) if o.at - l > gap => {
                    close(&mut run, true);
                    clean = 0;
                    run.push(o);
                }
                (Some(true), _) => {
                    clean = 0;
                    run.push(o);
                }
                (Some(false), Some(_)) => {
                    clean += 1;
                    // A policer slows every probe's page; one clean page breaks a run of
                    // passive verdicts alone.
                    let enough = if run.iter().all(|o| o.passive) {
                        1
                    } else {
                        config.min_clean.max(1)
                    };
                    if clean >= enough {
                        close(&mut run, true);
                        clean = 0;
                    }
                }
                _ => {}
            }
        }
        let ended = run.last().is_some_and(|l| now - l.at > gap);
        close(&mut run, ended);
    }
    out
}

/// Throttling events of a country over `[from, now]`, from the probes `admit` admits.
pub fn events(
    storage: &dyn Storage,
    cc: &str,
    from: i64,
    now: i64,
    config: &ThrottlingConfig,
    admit: &Admit,
) -> Result<Vec<Event>, DbError> {
    let counts = |probe: &str, asn: u32, at: i64| {
        admit.counts((!probe.is_empty()).then_some(probe), asn, at)
    };
    let mut obs = storage.throttling_verdicts(cc, from)?;
    obs.retain(|o| counts(&o.probe, o.asn, o.at));
    let mut samples = storage.rate_samples(cc, from - config.baseline_days * 86_400)?;
    samples.retain(|s| counts(&s.probe, s.asn, s.at));
    obs.extend(judge(samples, config).into_iter().filter(|o| o.at >= from));
    Ok(detect(&obs, now, config)
        .into_iter()
        .map(|f| Event {
            id: String::new(),
            entity: Entity {
                cc: cc.to_string(),
                asn: Some(format!("AS{}", f.asn)),
                asns: Vec::new(),
            },
            kind: Kind::Throttling,
            scope: Scope::Service,
            layer: None,
            category: None,
            targets: vec![f.domain],
            start: format_time(f.start),
            end: f.end.map(format_time),
            status: if f.end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected: false,
            // Half from how often it was seen (four times is plenty), half from how many
            // probes saw it (two independent ones rule out one probe's own link).
            confidence: ((f.measurements.min(4) as f64 / 8.0 + f.probes.min(2) as f64 / 4.0)
                * 100.0)
                .round()
                / 100.0,
            probes: f.probes,
            evidence: f.evidence,
            rate_kbps: f.kbps.map(|k| k.round()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(at_h: i64, throttled: Option<bool>, probe: &str) -> Observation {
        Observation {
            asn: 64500,
            domain: "twitter.com".into(),
            at: at_h * 3600,
            throttled,
            kbps: throttled.and_then(|t| t.then_some(150.0)),
            probe: probe.into(),
            id: format!("m{at_h}{probe}"),
            passive: false,
        }
    }

    fn sample(at_h: i64, kbps: f64, below_control: Option<bool>, probe: &str) -> RateSample {
        RateSample {
            asn: 64500,
            domain: "twitter.com".into(),
            at: at_h * 3600,
            probe: probe.into(),
            id: format!("p{at_h}{probe}"),
            kbps,
            below_control,
        }
    }

    /// `hours` samples of probe "a" at its usual 4,000 kbit/s, one an hour from hour 0.
    fn baseline(hours: i64) -> Vec<RateSample> {
        (0..hours)
            .map(|h| sample(h, 4_000.0, Some(true), "a"))
            .collect()
    }

    /// Judges `s` with, beside each sample, one of another page by the same probe at the same
    /// time at `other` kbit/s (a list run measures many pages); returns the target's verdicts.
    fn judge_beside(s: Vec<RateSample>, other: impl Fn(&RateSample) -> f64) -> Vec<Observation> {
        let mut all = Vec::new();
        for x in s {
            all.push(RateSample {
                domain: "news.example".into(),
                id: format!("{}-news", x.id),
                kbps: other(&x),
                ..x.clone()
            });
            all.push(x);
        }
        judge(all, &ThrottlingConfig::default())
            .into_iter()
            .filter(|o| o.domain == "twitter.com")
            .collect()
    }

    #[test]
    fn a_run_of_throttled_verdicts_is_one_episode_ended_by_a_clean_one() {
        let o = vec![
            obs(1, Some(false), "a"),
            obs(3, Some(true), "a"),
            obs(4, None, "b"),
            obs(5, Some(true), "b"),
            obs(7, Some(true), "a"),
            obs(9, Some(false), "b"),
        ];
        let f = detect(&o, 100 * 3600, &ThrottlingConfig::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (3 * 3600, Some(7 * 3600)));
        assert_eq!(f[0].kbps, Some(150.0));
        assert_eq!(f[0].probes, 2);
        assert_eq!(f[0].evidence.len(), 3);
    }

    #[test]
    fn one_clean_verdict_inside_an_episode_does_not_split_it_two_end_it() {
        let o = vec![
            obs(1, Some(true), "a"),
            obs(2, Some(true), "b"),
            obs(3, Some(false), "c"),
            obs(4, Some(true), "a"),
            obs(5, Some(false), "a"),
            obs(6, Some(false), "b"),
        ];
        let f = detect(&o, 7 * 3600, &ThrottlingConfig::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (3600, Some(4 * 3600)));
        // One clean verdict at the end: still ongoing.
        let f = detect(&o[..5], 6 * 3600, &ThrottlingConfig::default());
        assert_eq!(f[0].end, None);
    }

    #[test]
    fn a_thousand_throttled_verdicts_of_one_probe_in_an_hour_are_one_vote() {
        let config = ThrottlingConfig::default();
        let flood: Vec<Observation> = (0..1000)
            .map(|i| Observation {
                at: 5 * 3600 + i,
                id: format!("f{i}"),
                ..obs(5, Some(true), "f")
            })
            .collect();
        assert!(detect(&flood, 10 * 3600, &config).is_empty());
        // A second probe's verdict makes two votes: an event, with one piece of evidence each.
        let mut two = flood.clone();
        two.push(obs(6, Some(true), "g"));
        let f = detect(&two, 10 * 3600, &config);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].measurements, f[0].probes), (2, 2));
        // The same probe an hour later is another vote; a tie within an hour is none.
        let mut later = flood.clone();
        later.push(obs(6, Some(true), "f"));
        assert_eq!(detect(&later, 10 * 3600, &config).len(), 1);
        // A change of verdict is a new vote, in its place in time ...
        let change = vec![obs(5, Some(true), "f"), obs(5, Some(false), "f")];
        assert_eq!(votes(&change).len(), 2);
        // ... but a thousand changes within the hour are two votes, not a thousand, and no
        // event.
        let alternating: Vec<Observation> = (0..1000)
            .map(|i| Observation {
                at: 5 * 3600 + i,
                id: format!("a{i}"),
                ..obs(5, Some(i % 2 == 0), "f")
            })
            .collect();
        assert_eq!(votes(&alternating).len(), 2);
        assert!(detect(&alternating, 10 * 3600, &config).is_empty());
    }

    #[test]
    fn one_throttled_verdict_alone_or_a_long_silence_splits_or_drops() {
        let config = ThrottlingConfig::default();
        // One stray verdict between clean ones: no event.
        let o = vec![
            obs(1, Some(false), "a"),
            obs(2, Some(true), "a"),
            obs(3, Some(false), "a"),
        ];
        assert!(detect(&o, 10 * 3600, &config).is_empty());
        // Two runs 20 h apart are two events; the last is ongoing while recent.
        let o = vec![
            obs(1, Some(true), "a"),
            obs(2, Some(true), "a"),
            obs(22, Some(true), "a"),
            obs(23, Some(true), "b"),
        ];
        let f = detect(&o, 24 * 3600, &config);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].end, Some(2 * 3600));
        assert_eq!(f[1].end, None);
    }

    #[test]
    fn a_drop_below_the_probes_own_baseline_and_the_helper_is_passive_throttling() {
        let config = ThrottlingConfig::default();
        // Probe "a" on 8 Mbit/s, "b" on a 1 Mbit/s line: both always far below the helper.
        let mut s = Vec::new();
        for h in 0..4 {
            s.push(sample(h, 8_000.0, Some(true), "a"));
            s.push(sample(h, 1_000.0, Some(true), "b"));
        }
        // From hour 10 the target is held to 150 kbit/s, for both.
        for h in 10..13 {
            s.push(sample(h, 150.0, Some(true), "a"));
            s.push(sample(h, 150.0, Some(true), "b"));
        }
        // Then back.
        s.push(sample(20, 7_500.0, Some(true), "a"));
        s.push(sample(21, 900.0, Some(true), "b"));
        let o = judge_beside(s, |_| 4_000.0);
        let verdicts: Vec<(i64, &str, Option<bool>)> = o
            .iter()
            .map(|o| (o.at / 3600, o.probe.as_str(), o.throttled))
            .collect();
        // No baseline yet for the first three of each probe.
        assert!(verdicts[..6].iter().all(|v| v.2.is_none()), "{verdicts:?}");
        assert!(
            verdicts[6..8].iter().all(|v| v.2 == Some(false)),
            "{verdicts:?}"
        );
        assert!(
            verdicts[8..14].iter().all(|v| v.2 == Some(true)),
            "{verdicts:?}"
        );
        assert!(
            verdicts[14..].iter().all(|v| v.2 == Some(false)),
            "{verdicts:?}"
        );
        let f = detect(&o, 22 * 3600, &config);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (10 * 3600, Some(12 * 3600)));
        assert_eq!((f[0].kbps, f[0].probes), (Some(150.0), 2));
    }

    #[test]
    fn a_slow_line_the_evening_peak_or_a_slow_site_is_not_passive_throttling() {
        let config = ThrottlingConfig::default();
        fn base(probe: &str) -> impl Iterator<Item = RateSample> + '_ {
            (0..5).map(move |h| sample(h, 4_000.0, Some(true), probe))
        }
        // A line that is always slow, however far below the helper.
        let slow: Vec<_> = (0..10).map(|h| sample(h, 300.0, Some(true), "a")).collect();
        // The evening peak: a third off the usual rate.
        let peak: Vec<_> = base("b")
            .chain((5..10).map(|h| sample(h, 2_700.0, Some(true), "b")))
            .collect();
        // The site itself slow: the helper was slow too.
        let site: Vec<_> = base("c")
            .chain((5..10).map(|h| sample(h, 200.0, Some(false), "c")))
            .collect();
        // No helper rate: undecided, never throttled.
        let blind: Vec<_> = base("d")
            .chain((5..10).map(|h| sample(h, 200.0, None, "d")))
            .collect();
        for (name, s) in [
            ("slow", slow),
            ("peak", peak),
            ("site", site),
            ("blind", blind),
        ] {
            let o = judge_beside(s, |_| 4_000.0);
            assert!(o.iter().all(|o| o.throttled != Some(true)), "{name}: {o:?}");
            assert!(detect(&o, 20 * 3600, &config).is_empty(), "{name}");
        }
    }

    #[test]
    fn a_drop_on_every_page_of_the_probe_at_once_is_its_link_not_throttling() {
        let config = ThrottlingConfig::default();
        let mut s = baseline(4);
        s.extend((10..14).map(|h| sample(h, 300.0, Some(true), "a")));
        // The other page dropped too at hours 10 to 13: a slow link, no verdict.
        let o = judge_beside(
            s.clone(),
            |x| if x.at >= 10 * 3600 { 350.0 } else { 4_000.0 },
        );
        assert!(o[4..].iter().all(|o| o.throttled.is_none()), "{o:?}");
        assert!(detect(&o, 20 * 3600, &config).is_empty());
        // Alone, with nothing else measured near it, nobody can tell either.
        let o = judge(s.clone(), &config);
        assert!(o[4..].iter().all(|o| o.throttled.is_none()), "{o:?}");
        // The other page at its usual rate: the drop is the target's.
        let o = judge_beside(s, |_| 4_000.0);
        assert!(o[4..].iter().all(|o| o.throttled == Some(true)), "{o:?}");
    }

    #[test]
    fn passive_runs_need_agreeing_rates_and_no_clean_page_between() {
        let config = ThrottlingConfig::default();
        let page = |at_h: i64, kbps: Option<f64>, probe: &str| Observation {
            asn: 64500,
            domain: "twitter.com".into(),
            at: at_h * 3600,
            throttled: Some(kbps.is_some()),
            kbps,
            probe: probe.into(),
            id: format!("q{at_h}{probe}"),
            passive: true,
        };
        // Three probes' pages held near 150 kbit/s: an event.
        let agree = [
            page(1, Some(150.0), "a"),
            page(2, Some(145.0), "b"),
            page(3, Some(156.0), "c"),
        ];
        let f = detect(&agree, 10 * 3600, &config);
        assert_eq!((f.len(), f[0].kbps), (1, Some(150.0)), "{f:?}");
        // Congestion: each page at its own fraction of its own link.
        let scattered = [
            page(1, Some(400.0), "a"),
            page(2, Some(2_000.0), "b"),
            page(3, Some(900.0), "c"),
        ];
        assert!(detect(&scattered, 10 * 3600, &config).is_empty());
        // One clean page between breaks a run of passive verdicts.
        let broken = [
            page(1, Some(150.0), "a"),
            page(2, Some(150.0), "b"),
            page(3, None, "c"),
            page(4, Some(150.0), "a"),
        ];
        assert!(detect(&broken, 10 * 3600, &config).is_empty());
    }

    #[test]
    fn passive_verdicts_join_active_ones_but_do_not_stand_in_for_them() {
        let config = ThrottlingConfig::default();
        let mut s = baseline(3);
        s.push(sample(5, 150.0, Some(true), "a"));
        s.push(sample(6, 150.0, Some(true), "a"));
        let passive = judge_beside(s, |_| 4_000.0);
        assert!(detect(&passive, 10 * 3600, &config).is_empty());
        // Nor do they make up for a missing active one: one active verdict among them is not
        // an event, two are, with the passive pages as evidence too.
        let mut o = passive.clone();
        o.push(obs(7, Some(true), "b"));
        assert!(detect(&o, 8 * 3600, &config).is_empty());
        o.push(obs(8, Some(true), "c"));
        let f = detect(&o, 9 * 3600, &config);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].measurements), (5 * 3600, 4));
    }

    #[test]
    fn the_baseline_forgets_samples_older_than_a_week() {
        let config = ThrottlingConfig::default();
        let mut s = baseline(3);
        // Nine days later the old samples are out of reach: no baseline, no verdict.
        s.push(sample(9 * 24, 150.0, Some(true), "a"));
        let o = judge_beside(s, |_| 4_000.0);
        assert_eq!(o[3].throttled, None, "{o:?}");
        // But not while the target stays throttled: a ten-day episode is one event.
        let mut s = baseline(3);
        s.extend((0..20).map(|i| sample(10 + 12 * i, 150.0, Some(true), "a")));
        let o = judge_beside(s, |_| 4_000.0);
        assert!(o[3..].iter().all(|o| o.throttled == Some(true)), "{o:?}");
        let f = detect(&o, 250 * 3600, &config);
        assert_eq!((f.len(), f[0].measurements), (1, 20), "{f:?}");
    }

    #[test]
    fn timeline_configs_with_senseless_throttling_values_are_refused_by_name() {
        let path = std::env::temp_dir().join(format!("vantage-thr-{}.toml", std::process::id()));
        let read = |text: &str| {
            std::fs::write(&path, text).expect("write");
            crate::detect::DetectConfig::read(&path)
        };
        let ok = read("[throttling]\nbaseline_drop = 0.4\nbaseline_days = 3\n").expect("valid");
        assert_eq!(
            (ok.throttling.baseline_drop, ok.throttling.baseline_days),
            (0.4, 3)
        );
        for (text, want) in [
            (
                "[throttling]\nbaseline_drop = 1.5\n",
                "baseline_drop 1.5 must be between 0 and 1",
            ),
            (
                "[throttling]\nbaseline_days = 0\n",
                "baseline_days and max_gap_hours",
            ),
            (
                "[throttling]\nbaseline_dorp = 0.5\n",
                "unknown field `baseline_dorp`",
            ),
        ] {
            let err = read(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        let _ = std::fs::remove_file(&path);
    }
}
