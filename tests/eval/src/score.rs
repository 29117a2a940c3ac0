//! Scenarios drawn from the outage list, and the scores of what the detectors found against
//! what was injected.

use std::collections::BTreeSet;

use vantage_aggregator::detect::blocking::Layer;
use vantage_aggregator::detect::{Event, Kind, Scope};

use crate::sim::{Noise, Outcome, Rng, Scenario, Truth, targets};
use crate::truth::{Outages, Reach};

/// 2026-01-05 00:00:00 UTC: simulated time is in the past, as late uploads are.
pub const EPOCH: i64 = 1_767_571_200;
/// Longest simulated shutdown; the list's longest (206 days) would dwarf everything else.
pub const MAX_SHUTDOWN_SECONDS: i64 = 48 * 3600;
/// Shortest simulated block: a list run every 6 hours per probe cannot see less.
pub const MIN_BLOCK_SECONDS: i64 = 12 * 3600;

/// How many scenarios of each kind.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shutdown scenarios (three networks each).
    pub shutdowns: usize,
    /// Blocking scenarios (two networks each).
    pub blocks: usize,
    /// Quiet weeks (four networks each, noise only).
    pub quiet_weeks: usize,
    /// Throttling scenarios (two networks each, one host throttled in one).
    pub throttles: usize,
    /// Seed.
    pub seed: u64,
    /// The noise of every fleet.
    pub noise: Noise,
    /// Fake probes attacking each scenario, up to its number of real probes
    /// (`sim::Scenario::attackers`).
    pub attackers: usize,
}

fn cc(i: usize) -> String {
    let a = (b'A' + (i / 26 % 26) as u8) as char;
    let b = (b'A' + (i % 26) as u8) as char;
    format!("{a}{b}")
}

/// The scenarios of `plan`, outages drawn from `list`.
pub fn scenarios(plan: &Plan, list: &Outages) -> Vec<Scenario> {
    let mut rng = Rng::new(plan.seed);
    let mut out = Vec::new();
    let mut n = 0;
    for _ in 0..plan.shutdowns {
        let o = list.rows[rng.range(0, list.rows.len() as i64) as usize];
        let networks: Vec<(u32, usize)> = (0..3)
            .map(|k| (64500 + k, rng.range(6, 11) as usize))
            .collect();
        let start = EPOCH + 86_400 + o.start_of_day;
        let end = start + o.duration.min(MAX_SHUTDOWN_SECONDS);
        let asns = match o.reach {
            Reach::Country => vec![64500, 64501, 64502],
            Reach::Region => vec![64500, 64501],
            Reach::Network => vec![64500 + rng.range(0, 3) as u32],
        };
        out.push(Scenario {
            cc: cc(n),
            networks,
            from: start - 6 * 3600,
            to: end + 3 * 3600,
            truth: vec![Truth::Shutdown {
                asns,
                reach: o.reach,
                start,
                end,
            }],
            noise: plan.noise.clone(),
            seed: rng.next_u64(),
            attackers: plan.attackers,
        });
        n += 1;
    }
    let categories = ["NEWS", "HUMR", "GRP"];
    for i in 0..plan.blocks {
        let o = list.rows[rng.range(0, list.rows.len() as i64) as usize];
        let start = EPOCH + 2 * 86_400 + o.start_of_day;
        let end = start + o.duration.clamp(MIN_BLOCK_SECONDS, 72 * 3600);
        out.push(Scenario {
            cc: cc(n),
            networks: vec![(64500, 6), (64501, 6)],
            from: EPOCH,
            to: end + 12 * 3600,
            truth: vec![Truth::Block {
                asn: 64500,
                category: categories[i % 3].into(),
                layer: Layer::ALL[i % 4],
                start,
                end,
            }],
            noise: plan.noise.clone(),
            seed: rng.next_u64(),
            attackers: plan.attackers,
        });
        n += 1;
    }
    for _ in 0..plan.quiet_weeks {
        out.push(Scenario {
            cc: cc(n),
            networks: (0..4)
                .map(|k| (64500 + k, rng.range(6, 11) as usize))
                .collect(),
            from: EPOCH,
            to: EPOCH + 7 * 86_400,
            truth: Vec::new(),
            noise: plan.noise.clone(),
            seed: rng.next_u64(),
            attackers: plan.attackers,
        });
        n += 1;
    }
    for i in 0..plan.throttles {
        let o = list.rows[rng.range(0, list.rows.len() as i64) as usize];
        let start = EPOCH + 2 * 86_400 + o.start_of_day;
        let end = start + o.duration.clamp(MIN_BLOCK_SECONDS, 72 * 3600);
        // 100 to 400 kbit/s: Russia's 2021 Twitter policer was 130-150 kbit/s.
        let kbps = (100 + 25 * (i % 13)) as f64;
        out.push(Scenario {
            cc: cc(n),
            networks: vec![(64500, 6), (64501, 6)],
            from: EPOCH,
            to: end + 12 * 3600,
            truth: vec![Truth::Throttle {
                asn: 64500,
                host: crate::sim::THROTTLING_HOSTS[0].into(),
                kbps,
                start,
                end,
            }],
            noise: plan.noise.clone(),
            seed: rng.next_u64(),
            attackers: plan.attackers,
        });
        n += 1;
    }
    out
}

/// Networks an event covers.
fn covered(e: &Event, s: &Scenario) -> Vec<u32> {
    let parse = |a: &str| a.trim_start_matches("AS").parse::<u32>().ok();
    match e.scope {
        Scope::Full => s.networks.iter().map(|n| n.0).collect(),
        Scope::Regional => e.entity.asns.iter().filter_map(|a| parse(a)).collect(),
        _ => e
            .entity
            .asn
            .as_deref()
            .and_then(parse)
            .into_iter()
            .collect(),
    }
}

fn overlaps(e: &Event, start: i64, end: i64) -> bool {
    e.start_secs() < end && e.end_secs().is_none_or(|x| x > start)
}

/// Whether `e` matches something that happened.
fn is_true(e: &Event, s: &Scenario) -> bool {
    let hosts: std::collections::HashMap<String, String> = targets().into_iter().collect();
    s.truth.iter().any(|t| match (t, e.kind) {
        (
            Truth::Shutdown {
                asns, start, end, ..
            },
            Kind::Shutdown,
        ) => overlaps(e, *start, *end) && covered(e, s).iter().any(|a| asns.contains(a)),
        (
            Truth::Block {
                asn,
                category,
                start,
                end,
                ..
            },
            Kind::Blocking,
        ) => {
            let same_category = e.category.as_ref() == Some(category)
                || e.targets.iter().all(|h| hosts.get(h) == Some(category));
            overlaps(e, *start, *end) && covered(e, s).contains(asn) && same_category
        }
        (
            Truth::Throttle {
                asn,
                host,
                start,
                end,
                ..
            },
            Kind::Throttling,
        ) => overlaps(e, *start, *end) && covered(e, s).contains(asn) && e.targets.contains(host),
        _ => false,
    })
}

/// The scores.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// (network, shutdown) pairs where the network had at least 5 probes online.
    pub units: usize,
    /// Of those, found by a shutdown event covering the network.
    pub found: usize,
    /// (network, event) pairs of detected shutdowns.
    pub detected_units: usize,
    /// Of those, matching a real shutdown of that network.
    pub detected_true: usize,
    /// Detection delays, seconds after the shutdown began.
    pub delays: Vec<i64>,
    /// |start error|, seconds.
    pub start_errors: Vec<i64>,
    /// |end error|, seconds (`i64::MAX` when still open at the end).
    pub end_errors: Vec<i64>,
    /// Shutdowns whose scope was right, and shutdowns found.
    pub scope_right: (usize, usize),
    /// Pairs excluded for having fewer than 5 probes online.
    pub thin_units: usize,
    /// Injected blocks.
    pub blocks: usize,
    /// Found as a category event of the right category.
    pub blocks_found: usize,
    /// Of those, on the right layer.
    pub blocks_right_layer: usize,
    /// Blocking events detected, and how many match an injected block.
    pub blocking_events: (usize, usize),
    /// Injected throttling.
    pub throttles: usize,
    /// Found by a throttling event of its host in its network.
    pub throttles_found: usize,
    /// |event rate - policer rate| / policer rate of each found throttling.
    pub rate_errors: Vec<f64>,
    /// Throttling events detected, and how many match an injected throttling.
    pub throttling_events: (usize, usize),
    /// Events reported at any time that match nothing (transient ones included).
    pub false_events: usize,
    /// Network-weeks simulated.
    pub network_weeks: f64,
    /// False events and network-weeks of the quiet scenarios alone.
    pub quiet: (usize, f64),
    /// Signed submissions fed to the aggregator.
    pub submissions: usize,
    /// Of those, the attackers'.
    pub attacker_submissions: usize,
}

fn percentile(v: &[i64], p: f64) -> Option<i64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize])
}

impl Report {
    /// Adds one scenario's outcome.
    pub fn add(&mut self, o: &Outcome) {
        let s = &o.scenario;
        self.submissions += o.submissions;
        self.attacker_submissions += o.attacker_submissions;
        let weeks = s.networks.len() as f64 * (s.to - s.from) as f64 / 604_800.0;
        self.network_weeks += weeks;
        for (i, t) in s.truth.iter().enumerate() {
            match t {
                Truth::Shutdown {
                    asns,
                    reach,
                    start,
                    end,
                } => {
                    let mut scope_counted = false;
                    for asn in asns {
                        if o.live_at_truth[i].get(asn).copied().unwrap_or(0) < 5 {
                            self.thin_units += 1;
                            continue;
                        }
                        self.units += 1;
                        let hit = o.events.iter().find(|e| {
                            e.kind == Kind::Shutdown
                                && overlaps(e, *start, *end)
                                && covered(e, s).contains(asn)
                        });
                        let Some(e) = hit else { continue };
                        self.found += 1;
                        self.start_errors.push((e.start_secs() - start).abs());
                        let end_error = e.end_secs().map_or(i64::MAX, |x| (x - end).abs());
                        if end_error > 300 && std::env::var_os("VANTAGE_EVAL_DEBUG").is_some() {
                            eprintln!(
                                "\n{} AS{asn}: truth {}..{}, event {}..{:?} {:?}",
                                s.cc,
                                vantage_aggregator::detect::format_time(*start),
                                vantage_aggregator::detect::format_time(*end),
                                e.start,
                                e.end,
                                e.scope
                            );
                        }
                        self.end_errors.push(end_error);
                        let first = o
                            .seen
                            .values()
                            .filter(|x| {
                                x.event.kind == Kind::Shutdown
                                    && overlaps(&x.event, *start, *end)
                                    && covered(&x.event, s).contains(asn)
                            })
                            .map(|x| x.first)
                            .min();
                        if let Some(first) = first {
                            self.delays.push((first - start).max(0));
                        }
                        if !scope_counted {
                            scope_counted = true;
                            self.scope_right.1 += 1;
                            let right = matches!(
                                (reach, e.scope),
                                (Reach::Country, Scope::Full)
                                    | (Reach::Region, Scope::Regional)
                                    | (Reach::Network, Scope::Network)
                            );
                            self.scope_right.0 += usize::from(right);
                            if !right && std::env::var_os("VANTAGE_EVAL_DEBUG").is_some() {
                                eprintln!(
                                    "\nscope in {}: truth {reach:?} over {asns:?}, event {:?}, live {:?}",
                                    s.cc, e.scope, o.live_at_truth[i]
                                );
                            }
                        }
                    }
                }
                Truth::Block {
                    asn,
                    category,
                    layer,
                    start,
                    end,
                } => {
                    self.blocks += 1;
                    let hit = o.events.iter().find(|e| {
                        e.kind == Kind::Blocking
                            && e.category.as_ref() == Some(category)
                            && overlaps(e, *start, *end)
                            && covered(e, s).contains(asn)
                    });
                    if let Some(e) = hit {
                        self.blocks_found += 1;
                        self.blocks_right_layer += usize::from(e.layer == Some(*layer));
                    }
                }
                Truth::Throttle {
                    asn,
                    host,
                    kbps,
                    start,
                    end,
                } => {
                    self.throttles += 1;
                    let hit = o.events.iter().find(|e| {
                        e.kind == Kind::Throttling
                            && e.targets.contains(host)
                            && overlaps(e, *start, *end)
                            && covered(e, s).contains(asn)
                    });
                    if let Some(e) = hit {
                        self.throttles_found += 1;
                        if let Some(r) = e.rate_kbps {
                            self.rate_errors.push((r - kbps).abs() / kbps);
                        }
                    }
                }
            }
        }
        for e in &o.events {
            match e.kind {
                Kind::Shutdown => {
                    for asn in covered(e, s) {
                        self.detected_units += 1;
                        let real = s.truth.iter().any(|t| match t {
                            Truth::Shutdown {
                                asns, start, end, ..
                            } => asns.contains(&asn) && overlaps(e, *start, *end),
                            Truth::Block { .. } | Truth::Throttle { .. } => false,
                        });
                        self.detected_true += usize::from(real);
                    }
                }
                Kind::Blocking => {
                    self.blocking_events.0 += 1;
                    self.blocking_events.1 += usize::from(is_true(e, s));
                }
                Kind::Throttling => {
                    self.throttling_events.0 += 1;
                    self.throttling_events.1 += usize::from(is_true(e, s));
                }
            }
        }
        // False alarms: anything ever reported that matches nothing, counted once each.
        let finals: BTreeSet<&str> = o.events.iter().map(|e| e.id.as_str()).collect();
        let transient = o
            .seen
            .values()
            .filter(|x| !finals.contains(x.event.id.as_str()))
            .map(|x| &x.event);
        let false_events: Vec<&Event> = o
            .events
            .iter()
            .chain(transient)
            .filter(|e| !is_true(e, s))
            .collect();
        if std::env::var_os("VANTAGE_EVAL_DEBUG").is_some() {
            for e in &false_events {
                eprintln!(
                    "\nfalse event in {}: {}",
                    s.cc,
                    serde_json::to_string(e).unwrap_or_default()
                );
            }
        }
        let false_events = false_events.len();
        self.false_events += false_events;
        if s.truth.is_empty() {
            self.quiet.0 += false_events;
            self.quiet.1 += weeks;
        }
    }

    /// The figures, as Markdown, with PASS or FAIL against each measure's target (the table's
    /// `target` column, which BENCHMARKS.md, "Timeline detection quality", reports).
    pub fn markdown(&self) -> String {
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                a as f64 / b as f64
            }
        };
        let mins = |v: Option<i64>| {
            v.map_or("-".into(), |s| {
                if s == i64::MAX {
                    "open".into()
                } else {
                    format!("{:.1} min", s as f64 / 60.0)
                }
            })
        };
        let within5 = |v: &[i64]| ratio(v.iter().filter(|x| **x <= 300).count(), v.len());
        let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let recall = ratio(self.found, self.units);
        let precision = ratio(self.detected_true, self.detected_units);
        let delay = percentile(&self.delays, 0.5);
        let start_med = percentile(&self.start_errors, 0.5);
        let end_med = percentile(&self.end_errors, 0.5);
        let b_recall = ratio(self.blocks_found, self.blocks);
        let b_precision = ratio(self.blocking_events.1, self.blocking_events.0);
        let b_layer = ratio(self.blocks_right_layer, self.blocks_found);
        let fpw = self.false_events as f64 / self.network_weeks;
        let quiet_fpw = self.quiet.0 as f64 / self.quiet.1;
        let mut out = String::new();
        out.push_str("| measure | result | target | |\n|---|---|---|---|\n");
        let mut line = |m: &str, r: String, t: &str, ok: Option<bool>| {
            out.push_str(&format!("| {m} | {r} | {t} | {} |\n", ok.map_or("", pass)));
        };
        line(
            "shutdowns, recall (network, ≥ 5 probes online)",
            format!("{recall:.3} ({} of {})", self.found, self.units),
            "≥ 0.95",
            Some(recall >= 0.95),
        );
        line(
            "shutdowns, precision (network, event)",
            format!(
                "{precision:.3} ({} of {})",
                self.detected_true, self.detected_units
            ),
            "≥ 0.95",
            Some(precision >= 0.95),
        );
        line(
            "shutdowns, median detection delay",
            mins(delay),
            "≤ 5 min",
            Some(delay.is_some_and(|d| d <= 300)),
        );
        line(
            "shutdowns, p95 detection delay",
            mins(percentile(&self.delays, 0.95)),
            "",
            None,
        );
        line(
            "shutdowns, start error: median; share ≤ 5 min",
            format!("{}; {:.3}", mins(start_med), within5(&self.start_errors)),
            "≤ 5 min",
            Some(start_med.is_some_and(|d| d <= 300)),
        );
        line(
            "shutdowns, end error: median; share ≤ 5 min",
            format!("{}; {:.3}", mins(end_med), within5(&self.end_errors)),
            "≤ 5 min",
            Some(end_med.is_some_and(|d| d <= 300)),
        );
        line(
            "shutdowns, scope right (full / regional / network)",
            format!(
                "{:.3} ({} of {})",
                ratio(self.scope_right.0, self.scope_right.1),
                self.scope_right.0,
                self.scope_right.1
            ),
            "",
            None,
        );
        line(
            "shutdown pairs left out (< 5 probes online)",
            self.thin_units.to_string(),
            "",
            None,
        );
        line(
            "category blocking, recall",
            format!("{b_recall:.3} ({} of {})", self.blocks_found, self.blocks),
            "≥ 0.9",
            Some(b_recall >= 0.9),
        );
        line(
            "category blocking, precision",
            format!(
                "{b_precision:.3} ({} of {})",
                self.blocking_events.1, self.blocking_events.0
            ),
            "≥ 0.9",
            Some(b_precision >= 0.9),
        );
        line(
            "category blocking, right layer",
            format!(
                "{b_layer:.3} ({} of {})",
                self.blocks_right_layer, self.blocks_found
            ),
            "≥ 0.9",
            Some(b_layer >= 0.9),
        );
        if self.throttles > 0 {
            let t_recall = ratio(self.throttles_found, self.throttles);
            let t_precision = ratio(self.throttling_events.1, self.throttling_events.0);
            let mut errors = self.rate_errors.clone();
            errors.sort_by(f64::total_cmp);
            let median = errors.get(errors.len().saturating_sub(1) / 2).copied();
            line(
                "throttling, recall",
                format!(
                    "{t_recall:.3} ({} of {})",
                    self.throttles_found, self.throttles
                ),
                "≥ 0.9",
                Some(t_recall >= 0.9),
            );
            line(
                "throttling, precision",
                format!(
                    "{t_precision:.3} ({} of {})",
                    self.throttling_events.1, self.throttling_events.0
                ),
                "≥ 0.9",
                Some(t_precision >= 0.9),
            );
            line(
                "throttling, estimated rate: median error",
                median.map_or("-".into(), |m| format!("{:.1}%", m * 100.0)),
                "≤ 25%",
                Some(median.is_some_and(|m| m <= 0.25)),
            );
        }
        if self.quiet.1 > 0.0 {
            line(
                "false events per network-week, quiet fleets",
                format!("{quiet_fpw:.3} ({} in {:.1})", self.quiet.0, self.quiet.1),
                "≤ 0.1",
                Some(quiet_fpw <= 0.1),
            );
        }
        line(
            "false events per network-week, all scenarios",
            format!(
                "{fpw:.3} ({} in {:.1})",
                self.false_events, self.network_weeks
            ),
            "",
            None,
        );
        line(
            "signed submissions fed to the aggregator",
            self.submissions.to_string(),
            "",
            None,
        );
        if self.attacker_submissions > 0 {
            line(
                "of those, from attackers",
                self.attacker_submissions.to_string(),
                "",
                None,
            );
        }
        out
    }

    /// Whether every target of [`Self::markdown`]'s table is met.
    pub fn passes(&self) -> bool {
        !self.markdown().contains("FAIL")
    }
}
