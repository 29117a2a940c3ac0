//! Blocking detection from web_connectivity verdicts (README.md, "Timeline"), and
//! from the verdicts of OONI's service tests (`vantage_probe::verdict::services`), whose target
//! is the service (`whatsapp`, `telegram`, `tor`, ...) or their input's host: a run of
//! anomalous WhatsApp measurements in one network is an event "whatsapp blocked" on its layer,
//! as a host's would be.
//!
//! A stored verdict names a layer (`dns`, `tcp_ip`, `tls`, `http-*`) only when the test
//! helper reached the site, so every anomaly counted here already satisfies "while the
//! control reaches it" (OONI web_connectivity spec ts-017, "Assigning blocking"). What
//! this module adds is time: a target's, or a category's, anomaly ratio on one layer rising
//! against its own baseline. The baseline is a moving median of hourly ratios over the last
//! week, with the hours that were themselves evidence held out of it, as IODA inpaints its
//! history during outages (`MovingStat` in `CAIDA/watchtower-sentry`), so a long block does
//! not become the new normal.
//!
//! Each probe is one vote per bin: a bin's ratio on a layer is the mean of each probe's own
//! share of anomalous measurements there, and a probe's repeats of one host in one bin count
//! once towards the measurements a verdict needs. So one key sending a thousand "blocked"
//! measurements weighs what one honest probe's measurement weighs. Which probes count at all
//! is decided before (`signals::Admit`, in `events.rs`).
//!
//! This module is pure: the caller loads verdicts (see `events.rs`) and stores what it finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

pub use crate::store::model::Layer;

/// Thresholds of the blocking detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockingConfig {
    /// Width of the ratio's bins. A list runs every few hours per probe (6 h in the daemon by
    /// default, README.md "Unattended: `vantage daemon`"), so a
    /// target sees a handful of measurements an hour per network: hours, not five minutes.
    pub bin_seconds: i64,
    /// The ratio is pooled over this many bins ending at each bin, so that sparse targets
    /// still have enough measurements (OONI's detector works on hourly medians too, §5.3).
    pub window_bins: usize,
    /// Moving-median history: a week, as IODA's active-probing baseline (§1.4).
    pub history_bins: usize,
    /// With fewer bins of history than this, the baseline is taken as 0: a target nobody has
    /// seen blocked is presumed reachable.
    pub min_history_bins: usize,
    /// At least this many measurements in the window for a target ...
    pub min_measurements: usize,
    /// ... and this many for a category.
    pub min_category_measurements: usize,
    /// From at least this many probes, so one probe's broken resolver is not a block.
    pub min_probes: usize,
    /// The pooled ratio must reach this ...
    pub min_ratio: f64,
    /// ... and exceed the baseline by this much. OONI's change-point detector moves between
    /// means 0.0 and 0.7 (`mu_1 = 0.7`, §5.3): a block shows most measurements anomalous.
    pub min_rise: f64,
    /// Evidence must hold in this many consecutive bins before an event opens (IODA's
    /// `minduration`, §11.7: two bins).
    pub min_bins: usize,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            bin_seconds: 3600,
            window_bins: 6,
            history_bins: 168,
            min_history_bins: 12,
            min_measurements: 4,
            min_category_measurements: 6,
            min_probes: 2,
            min_ratio: 0.6,
            min_rise: 0.5,
            min_bins: 2,
        }
    }
}

/// One verdict: web_connectivity's, or a service test's.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Network.
    pub asn: u32,
    /// Host measured, or the service (`whatsapp`, ...).
    pub domain: String,
    /// Epoch seconds.
    pub at: i64,
    /// Layer of the anomaly; `None` when accessible or inconclusive.
    pub anomaly: Option<Layer>,
    /// Which probe (any stable number).
    pub probe: u32,
    /// Measurement id.
    pub id: String,
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// One host.
    Target(String),
    /// A test-list category code (`NEWS`, `HUMR`, ...).
    Category(String),
}

/// A rise of one layer's anomaly ratio for one subject in one network.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Network.
    pub asn: u32,
    /// Target or category.
    pub subject: Subject,
    /// The layer.
    pub layer: Layer,
    /// First anomalous measurement of the run.
    pub start: i64,
    /// Last anomalous measurement, once the ratio fell back; `None` while it holds.
    pub end: Option<i64>,
    /// Hosts with anomalies on the layer during the run.
    pub targets: Vec<String>,
    /// Distinct probes with anomalies.
    pub probes: usize,
    /// The anomalous measurements.
    pub evidence: Vec<String>,
    /// Highest pooled ratio during the run.
    pub peak_ratio: f64,
}

/// One bin of a subject's series, as its probes voted.
#[derive(Default, Clone)]
struct Bin {
    /// Measurements, a probe's repeats of one host counted once.
    n: usize,
    /// Probes that measured in the bin: each one vote.
    votes: usize,
    /// Per layer, the sum of the probes' votes: each its share of anomalous measurements.
    shares: [f64; 4],
    /// Probes with an anomaly on each layer.
    probes: [Vec<u32>; 4],
}

/// What one probe measured of a subject in one bin.
#[derive(Default)]
struct Tally<'a> {
    hosts: BTreeSet<&'a str>,
    n: usize,
    k: [usize; 4],
}

impl Bin {
    fn of(tallies: &BTreeMap<u32, Tally<'_>>) -> Bin {
        let mut bin = Bin::default();
        for (probe, t) in tallies {
            bin.n += t.hosts.len();
            bin.votes += 1;
            for (l, k) in t.k.iter().enumerate() {
                bin.shares[l] += *k as f64 / t.n.max(1) as f64;
                if *k > 0 {
                    bin.probes[l].push(*probe);
                }
            }
        }
        bin
    }
}

fn layer_index(l: Layer) -> usize {
    l as usize
}

/// Runs of evidence in one subject's series; `obs` are its observations, in time order.
fn runs(
    asn: u32,
    subject: &Subject,
    obs: &[&Observation],
    now: i64,
    min_measurements: usize,
    c: &BlockingConfig,
) -> Vec<Finding> {
    let (Some(first), Some(_)) = (obs.first(), obs.last()) else {
        return Vec::new();
    };
    let b0 = first.at.div_euclid(c.bin_seconds);
    let b1 = now.div_euclid(c.bin_seconds);
    let len = usize::try_from(b1 - b0 + 1).unwrap_or(0);
    let mut tallies: Vec<BTreeMap<u32, Tally>> = Vec::new();
    tallies.resize_with(len, BTreeMap::new);
    let index = |at: i64| usize::try_from(at.div_euclid(c.bin_seconds) - b0).ok();
    for o in obs {
        let Some(bin) = index(o.at).and_then(|i| tallies.get_mut(i)) else {
            continue;
        };
        let t = bin.entry(o.probe).or_default();
        t.hosts.insert(o.domain.as_str());
        t.n += 1;
        if let Some(l) = o.anomaly {
            t.k[layer_index(l)] += 1;
        }
    }
    let bins: Vec<Bin> = tallies.iter().map(Bin::of).collect();
    let mut out = Vec::new();
    for layer in Layer::ALL {
        let li = layer_index(layer);
        // History of hourly ratios, evidence hours replaced by the baseline (inpainting).
        let mut history: std::collections::VecDeque<f64> = Default::default();
        // (first evidence bin, last evidence bin, peak ratio, evidence bins)
        let mut run: Option<(usize, usize, f64, usize)> = None;
        let mut close = |from: usize, to: usize, peak: f64, ended: bool| {
            let lo = (b0 + from as i64) * c.bin_seconds;
            let hi = (b0 + to as i64 + 1) * c.bin_seconds;
            let hits: Vec<&&Observation> = obs
                .iter()
                .filter(|o| o.anomaly == Some(layer) && o.at >= lo && o.at < hi)
                .collect();
            let (Some(s), Some(e)) = (hits.first(), hits.last()) else {
                return;
            };
            let mut targets: Vec<String> = hits.iter().map(|o| o.domain.clone()).collect();
            targets.sort();
            targets.dedup();
            let mut probes: Vec<u32> = hits.iter().map(|o| o.probe).collect();
            probes.sort_unstable();
            probes.dedup();
            out.push(Finding {
                asn,
                subject: subject.clone(),
                layer,
                start: s.at,
                end: ended.then_some(e.at),
                targets,
                probes: probes.len(),
                evidence: hits.iter().map(|o| o.id.clone()).collect(),
                peak_ratio: peak,
            });
        };
        for i in 0..len {
            let lo = i.saturating_sub(c.window_bins.max(1) - 1);
            let (mut n, mut votes, mut k) = (0, 0, 0.0);
            for b in &bins[lo..=i] {
                n += b.n;
                votes += b.votes;
                k += b.shares[li];
            }
            let baseline = if history.len() < c.min_history_bins {
                0.0
            } else {
                let mut h: Vec<f64> = history.iter().copied().collect();
                h.sort_by(f64::total_cmp);
                h[h.len() / 2]
            };
            let probes_in_window = {
                let mut p: Vec<u32> = bins[lo..=i]
                    .iter()
                    .flat_map(|b| b.probes[li].iter().copied())
                    .collect();
                p.sort_unstable();
                p.dedup();
                p.len()
            };
            let ratio = if votes > 0 { k / votes as f64 } else { 0.0 };
            let evidence = n >= min_measurements
                && probes_in_window >= c.min_probes
                && ratio >= c.min_ratio
                && ratio - baseline >= c.min_rise;
            let bin = &bins[i];
            if bin.votes > 0 {
                let own = bin.shares[li] / bin.votes as f64;
                history.push_back(if evidence { baseline } else { own });
                if history.len() > c.history_bins {
                    history.pop_front();
                }
            }
            if evidence {
                run = Some(match run {
                    Some((f, _, p, count)) => (f, i, p.max(ratio), count + 1),
                    None => (i, i, ratio, 1),
                });
            } else if n >= min_measurements {
                // Enough measurements and no evidence: the block, if any, is over. With too
                // few, the run stays open: silence is not a return to normal.
                if let Some((f, last, peak, count)) = run.take()
                    && count >= c.min_bins
                {
                    close(f.saturating_sub(c.window_bins.max(1) - 1), last, peak, true);
                }
            }
        }
        if let Some((f, last, peak, count)) = run.take()
            && count >= c.min_bins
        {
            close(
                f.saturating_sub(c.window_bins.max(1) - 1),
                last,
                peak,
                false,
            );
        }
    }
    out
}

/// Findings for every target and every category of `obs` (any order), as seen at `now`. A
/// target whose layer is covered by a finding of its category is folded into it.
pub fn detect(
    obs: &[Observation],
    categories: &HashMap<String, String>,
    now: i64,
    config: &BlockingConfig,
) -> Vec<Finding> {
    let mut groups: BTreeMap<(u32, Subject), Vec<&Observation>> = BTreeMap::new();
    for o in obs {
        groups
            .entry((o.asn, Subject::Target(o.domain.clone())))
            .or_default()
            .push(o);
        if let Some(cat) = categories.get(&o.domain) {
            groups
                .entry((o.asn, Subject::Category(cat.clone())))
                .or_default()
                .push(o);
        }
    }
    let mut categories_found = Vec::new();
    let mut targets_found = Vec::new();
    for ((asn, subject), mut list) in groups {
        list.sort_by_key(|o| o.at);
        match &subject {
            Subject::Category(_) => {
                // A category needs two targets behind it, or it is one target's block.
                let found = runs(
                    asn,
                    &subject,
                    &list,
                    now,
                    config.min_category_measurements,
                    config,
                );
                categories_found.extend(found.into_iter().filter(|f| f.targets.len() >= 2));
            }
            Subject::Target(_) => {
                targets_found.extend(runs(
                    asn,
                    &subject,
                    &list,
                    now,
                    config.min_measurements,
                    config,
                ));
            }
        }
    }
    let overlaps = |a: &Finding, b: &Finding| {
        a.start <= b.end.unwrap_or(i64::MAX) && b.start <= a.end.unwrap_or(i64::MAX)
    };
    targets_found.retain(|t| {
        let Subject::Target(domain) = &t.subject else {
            return true;
        };
        !categories_found.iter().any(|c| {
            c.asn == t.asn && c.layer == t.layer && c.targets.contains(domain) && overlaps(c, t)
        })
    });
    categories_found.extend(targets_found);
    categories_found
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const T0: i64 = 1_700_000_000 / H * H;

    /// Each of `domains` measured once an hour by alternating probes for `hours`; anomalies on
    /// `layer` during `[from, to)` hours, and a few stray anomalies elsewhere.
    fn series(domains: &[&str], hours: i64, block: Option<(Layer, i64, i64)>) -> Vec<Observation> {
        let mut out = Vec::new();
        for (d, domain) in domains.iter().enumerate() {
            for h in 0..hours {
                for half in 0..2 {
                    let at = T0 + h * H + half * 1800 + d as i64 * 60;
                    let blocked = block.is_some_and(|(_, a, b)| h >= a && h < b);
                    let stray = (h * 7 + d as i64 + half) % 53 == 0;
                    out.push(Observation {
                        asn: 64500,
                        domain: domain.to_string(),
                        at,
                        anomaly: if blocked {
                            block.map(|b| b.0)
                        } else if stray {
                            Some(Layer::Http)
                        } else {
                            None
                        },
                        probe: (h + half) as u32 % 3,
                        id: format!("{domain}-{h}-{half}"),
                    });
                }
            }
        }
        out
    }

    fn cats(domains: &[&str], cat: &str) -> HashMap<String, String> {
        domains
            .iter()
            .map(|d| (d.to_string(), cat.to_string()))
            .collect()
    }

    #[test]
    fn a_blocked_category_is_one_event_on_its_layer_with_its_targets() {
        let news = ["a.example", "b.example", "c.example"];
        let obs = series(&news, 72, Some((Layer::Dns, 40, 52)));
        let found = detect(&obs, &cats(&news, "NEWS"), T0 + 72 * H, &Default::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.subject, Subject::Category("NEWS".into()));
        assert_eq!(f.layer, Layer::Dns);
        assert_eq!(f.targets, news.map(String::from).to_vec());
        assert!((f.start - (T0 + 40 * H)).abs() <= H, "start");
        assert!((f.end.expect("ended") - (T0 + 52 * H)).abs() <= H, "end");
        assert_eq!(f.evidence.len(), 3 * 12 * 2);
    }

    #[test]
    fn one_blocked_target_is_its_own_event_and_an_ongoing_block_has_no_end() {
        let news = ["a.example", "b.example", "c.example"];
        let mut obs = series(&news[..2], 72, None);
        obs.extend(series(&news[2..], 72, Some((Layer::Tls, 60, 100))));
        let found = detect(&obs, &cats(&news, "NEWS"), T0 + 72 * H, &Default::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject, Subject::Target("c.example".into()));
        assert_eq!((found[0].layer, found[0].end), (Layer::Tls, None));
    }

    #[test]
    fn stray_anomalies_and_a_target_always_broken_are_not_blocking() {
        let obs = series(&["a.example", "b.example"], 240, None);
        assert!(detect(&obs, &HashMap::new(), T0 + 240 * H, &Default::default()).is_empty());
        // Broken for ten days: after a day of history, its baseline is the anomaly itself.
        let broken = series(&["x.example"], 240, Some((Layer::Http, 0, 240)));
        let found = detect(&broken, &HashMap::new(), T0 + 240 * H, &Default::default());
        assert!(
            found.iter().all(|f| f.start < T0 + 24 * H),
            "only the first day may look like a rise: {found:#?}"
        );
    }

    #[test]
    fn a_week_long_block_stays_one_event_because_its_hours_are_held_out() {
        let obs = series(&["a.example"], 24 * 12, Some((Layer::Tcp, 48, 48 + 24 * 7)));
        let found = detect(&obs, &HashMap::new(), T0 + 24 * 12 * H, &Default::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!((found[0].end.expect("ended") - (T0 + (48 + 24 * 7) * H)).abs() <= H);
    }

    #[test]
    fn two_keys_flooding_a_host_with_anomalies_weigh_two_probes() {
        // Three probes measure a.example once an hour, always reachable. From hour 24, two
        // keys send a thousand DNS anomalies of it each hour.
        let mut obs = Vec::new();
        for h in 0..48 {
            for p in 0..3 {
                obs.push(Observation {
                    asn: 64500,
                    domain: "a.example".into(),
                    at: T0 + h * H + p as i64 * 60,
                    anomaly: None,
                    probe: p,
                    id: format!("real-{h}-{p}"),
                });
            }
            if h < 24 {
                continue;
            }
            for p in [7, 8] {
                obs.extend((0..1000).map(|i| Observation {
                    asn: 64500,
                    domain: "a.example".into(),
                    at: T0 + h * H + 600 + i,
                    anomaly: Some(Layer::Dns),
                    probe: p,
                    id: format!("fake-{h}-{p}-{i}"),
                }));
            }
        }
        // Pooled, 2,000 of 2,003 measurements an hour would be a block; as votes it is 2 of 5.
        let found = detect(&obs, &HashMap::new(), T0 + 48 * H, &Default::default());
        assert!(found.is_empty(), "{found:#?}");
        // The same two keys with one measurement an hour each and the honest probes gone
        // quiet would be a block: the vote, not the count, is what holds them back.
        let alone: Vec<Observation> = obs
            .iter()
            .filter(|o| o.probe >= 7 && o.id.ends_with("-0"))
            .cloned()
            .collect();
        assert_eq!(
            detect(&alone, &HashMap::new(), T0 + 48 * H, &Default::default()).len(),
            1
        );
    }

    #[test]
    fn blocking_values_map_to_layers() {
        assert_eq!(Layer::of_blocking("\"tcp_ip\""), Some(Layer::Tcp));
        assert_eq!(Layer::of_blocking("\"http-diff\""), Some(Layer::Http));
        assert_eq!(Layer::of_blocking("false"), None);
        assert_eq!(Layer::of_blocking("null"), None);
    }
}
