//! Simulated probe fleets: what real probes would have signed and sent, minute by minute,
//! through shutdowns, blocking and the noise of home networks, fed to the aggregator's own
//! ingest and detectors.
//!
//! Each probe has its own Ed25519 key and signs every heartbeat, canary round and
//! web_connectivity measurement as `vantage` does. Heartbeats go out only while the probe is
//! online; canaries are recorded whenever it is powered and queued; queued measurements are
//! uploaded every five minutes while online, so what was recorded offline arrives late, after
//! the reconnection. Noise: flaky home links (short outages of one probe), reboots, laptops
//! switched off at night, and one probe per fleet that moves to another network.
//!
//! Attackers ([`Scenario::attackers`]) are fresh keys of their own that lie about where they
//! are: during a real shutdown they keep the dark networks "online" (heartbeats and
//! successful canaries), and elsewhere they fake a shutdown (a burst of silence with failed
//! canaries) and a block (a category's hosts "blocked" every hour) in a quiet network. With
//! verification on (`DetectConfig::require_verified_network`, as `serve` runs with `--geoip`
//! or `--prefixes`), every real probe uploads from inside the network it is in, and the
//! attackers from elsewhere, as `ingest::Origin` tells the aggregator; without it nobody's
//! origin is known. The attackers draw from a generator of their own, so the real fleet is the
//! same with or without them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;
use vantage_aggregator::detect::blocking::Layer;
use vantage_aggregator::detect::{DetectConfig, Event, Pass, TimelineQuery, format_time};
use vantage_aggregator::ingest::{self, IngestConfig};
use vantage_aggregator::store::{Sqlite, Storage};
use vantage_probe::envelope::Identity;
use vantage_probe::verdict::fingerprints::Fingerprints;

use crate::truth::Reach;

/// A small deterministic generator (SplitMix64): the same seed, the same fleet.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo).max(1) as u64) as i64
    }

    /// Exponential with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// What really happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// These networks were cut off.
    Shutdown {
        /// The networks.
        asns: Vec<u32>,
        /// Full, regional or single-network.
        reach: Reach,
        /// Epoch seconds.
        start: i64,
        /// Epoch seconds.
        end: i64,
    },
    /// A category's hosts were blocked on one layer in one network.
    Block {
        /// The network.
        asn: u32,
        /// The category.
        category: String,
        /// The layer.
        layer: Layer,
        /// Epoch seconds.
        start: i64,
        /// Epoch seconds.
        end: i64,
    },
    /// A host was throttled to a rate in one network.
    Throttle {
        /// The network.
        asn: u32,
        /// The host.
        host: String,
        /// The policer's rate, kbit/s.
        kbps: f64,
        /// Epoch seconds.
        start: i64,
        /// Epoch seconds.
        end: i64,
    },
}

impl Truth {
    /// When it began.
    pub fn start(&self) -> i64 {
        match self {
            Truth::Shutdown { start, .. }
            | Truth::Block { start, .. }
            | Truth::Throttle { start, .. } => *start,
        }
    }
}

/// The hosts every simulated probe tests for throttling (`vantage run --test throttling`'s
/// default takes them from the list's GRP category), and how often.
pub const THROTTLING_HOSTS: [&str; 1] = ["grp1.example"];
/// A throttling test every three hours per probe.
pub const THROTTLING_EVERY_SECONDS: i64 = 3 * 3600;

/// How noisy the fleet is.
#[derive(Debug, Clone)]
pub struct Noise {
    /// Home-link outages per probe per day.
    pub flaps_per_day: f64,
    /// Their mean length, seconds (exponential, 1 to 60 minutes).
    pub flap_mean_seconds: f64,
    /// Reboots per probe per day (1 to 3 minutes without power).
    pub reboots_per_day: f64,
    /// Share of probes that are laptops, off at night.
    pub laptop_share: f64,
    /// Share of web_connectivity measurements with an anomaly that is not censorship.
    pub stray_anomalies: f64,
    /// One probe moves to another network halfway through.
    pub mover: bool,
    /// Noise of the throttling tests.
    pub links: crate::throttle::LinkNoise,
    /// Whether the probes run the active throttling test; without it, throttling is seen only
    /// in the pages' goodput (the passive signal).
    pub active_throttling: bool,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            flaps_per_day: 3.0,
            flap_mean_seconds: 300.0,
            reboots_per_day: 0.5,
            laptop_share: 0.2,
            stray_anomalies: 0.02,
            mover: true,
            links: crate::throttle::LinkNoise::default(),
            active_throttling: true,
        }
    }
}

/// One simulated country.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Country code.
    pub cc: String,
    /// Networks and how many probes each has.
    pub networks: Vec<(u32, usize)>,
    /// Epoch seconds.
    pub from: i64,
    /// Epoch seconds.
    pub to: i64,
    /// What happens.
    pub truth: Vec<Truth>,
    /// The noise.
    pub noise: Noise,
    /// Seed of everything random.
    pub seed: u64,
    /// Fake probes (fresh keys elsewhere) attacking the scenario; see the module's comment.
    pub attackers: usize,
}

/// The test list every simulated probe runs: three categories of four hosts.
pub fn targets() -> Vec<(String, String)> {
    ["NEWS", "HUMR", "GRP"]
        .iter()
        .flat_map(|c| {
            (1..=4).map(move |i| (format!("{}{i}.example", c.to_lowercase()), c.to_string()))
        })
        .collect()
}

/// web_connectivity templates by verdict, from OONI's real measurements beside the
/// repository: each is re-scored by the aggregator when it arrives, as any upload is.
pub struct Templates {
    by_layer: HashMap<Option<Layer>, Value>,
}

impl Templates {
    /// Reads the five templates from `dir` (`tests/data/ooni/webconnectivity`).
    pub fn read(dir: &Path) -> Result<Templates> {
        let files = [
            (None, "generated-successWithHTTPS.json"),
            (Some(Layer::Dns), "generated-dnsBlockingNXDOMAIN.json"),
            (Some(Layer::Tcp), "generated-tcpBlockingConnectTimeout.json"),
            (
                Some(Layer::Tls),
                "generated-tlsBlockingConnectionResetWithConsistentDNS.json",
            ),
            (
                Some(Layer::Http),
                "generated-httpDiffWithConsistentDNS.json",
            ),
        ];
        let mut by_layer = HashMap::new();
        for (layer, name) in files {
            let path = dir.join(name);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
            by_layer.insert(layer, v);
        }
        Ok(Templates { by_layer })
    }

    fn measurement(&self, layer: Option<Layer>, host: &str, cc: &str, asn: u32, at: i64) -> Value {
        let mut v = self.by_layer[&layer].clone();
        let scheme = match v["input"].as_str() {
            Some(i) if i.starts_with("http://") => "http",
            _ => "https",
        };
        v["input"] = format!("{scheme}://{host}/").into();
        v["probe_cc"] = cc.into();
        v["probe_asn"] = format!("AS{asn}").into();
        v["probe_ip"] = "127.0.0.1".into();
        v["measurement_start_time"] = format_time(at).into();
        v["test_start_time"] = format_time(at).into();
        v
    }
}

/// A measurement as the probe writes it. Its id is the hash of these bytes, and real ones
/// differ in their timings; `runtime` plays that part here.
fn base(test_name: &str, cc: &str, asn: u32, at: i64, runtime: f64, keys: Value) -> String {
    let mut m = serde_json::to_value(vantage_probe::ooni::Measurement::vantage(
        test_name, "0.1.0", keys,
    ))
    .unwrap_or_default();
    m["probe_cc"] = cc.into();
    m["probe_asn"] = format!("AS{asn}").into();
    m["measurement_start_time"] = format_time(at).into();
    m["test_runtime"] = runtime.into();
    m.to_string()
}

/// What the attackers of a scenario do.
#[derive(Debug, Clone, PartialEq)]
enum Attack {
    /// Keep the dark networks "online" around a real shutdown, from `from` to `to`.
    Hide { asns: Vec<u32>, from: i64, to: i64 },
    /// Fake a shutdown of `dark` (online before `cut`, silent with failed canaries until
    /// `back`, online for an hour after) and a block of `category` on DNS in `blocked` over
    /// `block`.
    Invent {
        dark: u32,
        cut: i64,
        back: i64,
        blocked: u32,
        category: String,
        block: (i64, i64),
    },
}

/// The attack on `s`, from what really happens in it.
fn attack(s: &Scenario) -> Option<Attack> {
    if s.attackers == 0 {
        return None;
    }
    if let Some((asns, start, end)) = s.truth.iter().find_map(|t| match t {
        Truth::Shutdown {
            asns, start, end, ..
        } => Some((asns.clone(), *start, *end)),
        _ => None,
    }) {
        return Some(Attack::Hide {
            asns,
            from: start - 2 * 3600,
            to: end + 3600,
        });
    }
    // Networks nothing real happens in.
    let busy: Vec<u32> = s
        .truth
        .iter()
        .map(|t| match t {
            Truth::Block { asn, .. } | Truth::Throttle { asn, .. } => *asn,
            Truth::Shutdown { .. } => 0,
        })
        .collect();
    let quiet: Vec<u32> = s
        .networks
        .iter()
        .map(|n| n.0)
        .filter(|a| !busy.contains(a))
        .collect();
    let (&dark, &blocked) = (quiet.first()?, quiet.get(1).or(quiet.first())?);
    let cut = s.from + 36 * 3600;
    Some(Attack::Invent {
        dark,
        cut,
        back: cut + 2 * 3600,
        blocked,
        category: "HUMR".into(),
        block: (cut + 4 * 3600, cut + 28 * 3600),
    })
}

/// One fake probe.
struct Attacker {
    key: Identity,
    /// Which minute of five it sends its canary in.
    slot: i64,
    /// Where it really connects from.
    origin: ingest::Origin,
    queue: Vec<String>,
}

struct Probe {
    key: Identity,
    asn: u32,
    moved: Option<(i64, u32)>,
    offset: i64,
    canary_slot: i64,
    list_offset: i64,
    link_kbps: f64,
    off: Vec<(i64, i64)>,
    flaps: Vec<(i64, i64)>,
    queue: Vec<String>,
}

impl Probe {
    fn asn_at(&self, t: i64) -> u32 {
        match self.moved {
            Some((at, asn)) if t >= at => asn,
            _ => self.asn,
        }
    }
}

fn within(spans: &[(i64, i64)], t: i64) -> bool {
    spans.iter().any(|(a, b)| t >= *a && t < *b)
}

/// Random spans at `per_day` over `[from, to)`, lengths from `len`.
fn spans(
    rng: &mut Rng,
    from: i64,
    to: i64,
    per_day: f64,
    mut len: impl FnMut(&mut Rng) -> i64,
) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    if per_day <= 0.0 {
        return out;
    }
    let mut t = from as f64;
    loop {
        t += rng.exp(86_400.0 / per_day);
        if t >= to as f64 {
            return out;
        }
        let a = t as i64;
        out.push((a, a + len(rng)));
    }
}

/// When a detected event was first seen, and the event as last seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Simulated time of the first detection run that reported it.
    pub first: i64,
    /// The event at the last run that reported it.
    pub event: Event,
}

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// Events after every late upload arrived, from a final detection run.
    pub events: Vec<Event>,
    /// Every event any detection run reported, by id.
    pub seen: BTreeMap<String, Seen>,
    /// Probes of each network powered and online a minute before each truth began
    /// (`truth index -> asn -> probes`).
    pub live_at_truth: Vec<BTreeMap<u32, usize>>,
    /// Signed submissions fed to the aggregator.
    pub submissions: usize,
    /// Of those, the attackers'.
    pub attacker_submissions: usize,
}

/// Runs `s`: detection every `tick_seconds`, and every minute during the half hour after
/// each shutdown begins (where a first detection can happen), into the database at `db_path`
/// (removed afterwards unless `keep`).
pub fn simulate(
    s: &Scenario,
    templates: &Templates,
    config: &DetectConfig,
    tick_seconds: i64,
    db_path: &Path,
    keep: bool,
) -> Result<Outcome> {
    let mut rng = Rng::new(s.seed);
    let _ = std::fs::remove_file(db_path);
    let storage = Sqlite::open(db_path)?;
    let ingest_config = IngestConfig::default();
    let fingerprints = Fingerprints::builtin();
    let list = targets();
    let categories: HashMap<String, String> = list.iter().cloned().collect();
    let noise = &s.noise;
    // As `serve` with a geolocation source: each upload's origin is known, so claims are
    // checked. Without one, nobody's is.
    let verifying = config.require_verified_network;
    let origin = |asn: u32| {
        if verifying {
            ingest::Origin::observed(asn, &s.cc)
        } else {
            ingest::Origin::UNKNOWN
        }
    };

    let mut probes = Vec::new();
    for (asn, n) in &s.networks {
        for _ in 0..*n {
            let laptop = rng.unit() < noise.laptop_share;
            let mut off = spans(&mut rng, s.from, s.to, noise.reboots_per_day, |r| {
                r.range(60, 180)
            });
            if laptop {
                // Off from about 22:00 to about 07:00, give or take an hour each.
                let mut day = s.from.div_euclid(86_400) * 86_400 - 86_400;
                while day < s.to {
                    let a = day + 22 * 3600 + rng.range(-3600, 3600);
                    let b = day + 86_400 + 7 * 3600 + rng.range(-3600, 3600);
                    off.push((a, b));
                    day += 86_400;
                }
            }
            let mean = noise.flap_mean_seconds;
            let flaps = spans(&mut rng, s.from, s.to, noise.flaps_per_day, |r| {
                (r.exp(mean) as i64).clamp(60, 3600)
            });
            probes.push(Probe {
                key: Identity::generate()?,
                asn: *asn,
                moved: None,
                offset: rng.range(0, 60),
                canary_slot: rng.range(0, 5),
                list_offset: rng.range(0, 6 * 3600),
                link_kbps: 5_000.0 + 45_000.0 * rng.unit(),
                off,
                flaps,
                queue: Vec::new(),
            });
        }
    }
    if noise.mover && s.networks.len() >= 2 && !probes.is_empty() {
        let i = rng.range(0, probes.len() as i64) as usize;
        let to = s
            .networks
            .iter()
            .map(|n| n.0)
            .find(|a| *a != probes[i].asn)
            .unwrap_or(probes[i].asn);
        probes[i].moved = Some(((s.from + s.to) / 2, to));
    }

    let down = |asn: u32, t: i64| {
        s.truth.iter().any(|tr| match tr {
            Truth::Shutdown {
                asns, start, end, ..
            } => asns.contains(&asn) && t >= *start && t < *end,
            Truth::Block { .. } | Truth::Throttle { .. } => false,
        })
    };
    let policer = |asn: u32, host: &str, t: i64| {
        s.truth.iter().find_map(|tr| match tr {
            Truth::Throttle {
                asn: a,
                host: h,
                kbps,
                start,
                end,
            } if *a == asn && h == host && t >= *start && t < *end => Some(*kbps),
            _ => None,
        })
    };
    let blocked = |asn: u32, category: &str, t: i64| {
        s.truth.iter().find_map(|tr| match tr {
            Truth::Block {
                asn: a,
                category: c,
                layer,
                start,
                end,
            } if *a == asn && c == category && t >= *start && t < *end => Some(*layer),
            _ => None,
        })
    };
    let live_at_truth: Vec<BTreeMap<u32, usize>> = s
        .truth
        .iter()
        .map(|tr| {
            let t = tr.start() - 60;
            let mut m = BTreeMap::new();
            for p in &probes {
                if !within(&p.off, t) && !within(&p.flaps, t) {
                    *m.entry(p.asn_at(t)).or_insert(0) += 1;
                }
            }
            m
        })
        .collect();
    let fine: Vec<(i64, i64)> = s
        .truth
        .iter()
        .filter_map(|tr| match tr {
            Truth::Shutdown { start, .. } => Some((start - 300, start + 1800)),
            Truth::Block { .. } | Truth::Throttle { .. } => None,
        })
        .collect();

    let attack = attack(s);
    let mut attackers = Vec::new();
    let mut arng = Rng::new(s.seed ^ 0xa77a_c4e5);
    if let Some(a) = &attack {
        // As many as asked, up to the real probes of the scenario.
        let real: usize = s.networks.iter().map(|n| n.1).sum();
        // Abroad to hide a cut (a dark network has no way out), from a sibling network of the
        // same country to invent one.
        let (cc, asn) = match a {
            Attack::Hide { .. } => ("XX".to_string(), 64_999),
            Attack::Invent { dark, blocked, .. } => (
                s.cc.clone(),
                s.networks
                    .iter()
                    .map(|n| n.0)
                    .find(|n| n != dark && n != blocked)
                    .unwrap_or(64_998),
            ),
        };
        for _ in 0..s.attackers.min(real) {
            attackers.push(Attacker {
                key: Identity::generate()?,
                slot: arng.range(0, 5),
                origin: if verifying {
                    ingest::Origin::observed(asn, &cc)
                } else {
                    ingest::Origin::UNKNOWN
                },
                queue: Vec::new(),
            });
        }
    }
    let mut attacker_submissions = 0;

    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut submissions = 0;
    let everything = TimelineQuery {
        cc: Some(s.cc.clone()),
        asn: None,
        since: s.from - 86_400,
        until: s.to + 86_400,
        kind: None,
    };
    let mut t = s.from;
    while t < s.to {
        let minute = t / 60;
        for p in probes.iter_mut() {
            let at = t + p.offset;
            let asn = p.asn_at(at);
            let powered = !within(&p.off, at);
            let online = powered && !within(&p.flaps, at) && !down(asn, at);
            if online {
                let line = p
                    .key
                    .seal(&base(
                        "heartbeat",
                        &s.cc,
                        asn,
                        at,
                        rng.unit(),
                        serde_json::json!({}),
                    ))?
                    .1;
                if let Err(reason) =
                    ingest::heartbeat(&storage, &line, &ingest_config, &origin(asn))?
                {
                    anyhow::bail!("heartbeat refused: {reason}");
                }
                submissions += 1;
            }
            if powered && minute.rem_euclid(5) == p.canary_slot {
                let ok = if online { 4 } else { 0 };
                let keys = serde_json::json!({"ok": ok, "total": 4, "checks": []});
                p.queue.push(
                    p.key
                        .seal(&base("canary", &s.cc, asn, at, rng.unit(), keys))?
                        .1,
                );
            }
            if online && (at - p.list_offset).rem_euclid(6 * 3600) < 60 {
                let slow_link = rng.unit() < noise.links.slow_link;
                for (i, (host, category)) in list.iter().enumerate() {
                    let when = at + i as i64 * 2;
                    let layer = match blocked(asn, category, when) {
                        Some(l) => Some(l),
                        None if rng.unit() < noise.stray_anomalies => {
                            Some(Layer::ALL[rng.range(0, 4) as usize])
                        }
                        None => None,
                    };
                    let mut m = templates.measurement(layer, host, &s.cc, asn, when);
                    if layer.is_none() {
                        let (probe, helper) = crate::throttle::page_transfers(
                            &mut rng,
                            crate::throttle::page_bytes(host),
                            p.link_kbps,
                            slow_link,
                            policer(asn, host, when),
                            &noise.links,
                        );
                        let tk = &mut m["test_keys"];
                        tk["requests"][0]["response"]["x_transfer"] = probe;
                        tk["control"]["http_request"]["x_transfer"] = helper;
                    }
                    m["test_runtime"] = rng.unit().into();
                    p.queue.push(p.key.seal(&m.to_string())?.1);
                }
            }
            if noise.active_throttling
                && online
                && (at - p.list_offset).rem_euclid(THROTTLING_EVERY_SECONDS) < 60
            {
                for host in THROTTLING_HOSTS {
                    let d = crate::throttle::downloads(
                        &mut rng,
                        host,
                        p.link_kbps,
                        policer(asn, host, at),
                        &noise.links,
                    );
                    let mut m = crate::throttle::measurement(&s.cc, asn, at + 30, host, d);
                    m["test_runtime"] = rng.unit().into();
                    p.queue.push(p.key.seal(&m.to_string())?.1);
                }
            }
            if online && minute.rem_euclid(5) == (p.canary_slot + 1) % 5 && !p.queue.is_empty() {
                let body = p.queue.join("\n");
                submissions += p.queue.len();
                p.queue.clear();
                for o in
                    ingest::ingest(&storage, &body, &ingest_config, &fingerprints, &origin(asn))?
                {
                    if o.status != ingest::Status::Accepted {
                        anyhow::bail!(
                            "upload refused: line {}: {} {:?}",
                            o.line,
                            o.status,
                            o.reason
                        );
                    }
                }
            }
        }
        if let Some(a) = &attack {
            for (i, x) in attackers.iter_mut().enumerate() {
                let at = t + (i as i64 * 7) % 60;
                let lines = act(a, x, i, t, at, &s.cc, templates, &mut arng)?;
                attacker_submissions += lines.beats.len() + lines.upload.len();
                for beat in &lines.beats {
                    if let Err(reason) =
                        ingest::heartbeat(&storage, beat, &ingest_config, &x.origin)?
                    {
                        anyhow::bail!("attacker's heartbeat refused: {reason}");
                    }
                }
                if !lines.upload.is_empty() {
                    for o in ingest::ingest(
                        &storage,
                        &lines.upload.join("\n"),
                        &ingest_config,
                        &fingerprints,
                        &x.origin,
                    )? {
                        if o.status != ingest::Status::Accepted {
                            anyhow::bail!(
                                "attacker's upload refused: line {}: {} {:?}",
                                o.line,
                                o.status,
                                o.reason
                            );
                        }
                    }
                }
            }
        }
        // As `serve` runs them: the recent shutdown pass every minute where a first detection
        // can happen, full passes at the regular ticks.
        let now = t + 59;
        let pass = if (t - s.from) % tick_seconds == 0 {
            Some(Pass::Full(None))
        } else if within(&fine, t) {
            Some(Pass::Recent)
        } else {
            None
        };
        if let Some(pass) = pass {
            vantage_aggregator::detect::detect(
                &storage,
                Some(&s.cc),
                pass,
                now,
                &categories,
                config,
            )?;
            for e in storage.timeline(&everything)? {
                seen.entry(e.id.clone())
                    .and_modify(|x| x.event = e.clone())
                    .or_insert(Seen {
                        first: now,
                        event: e,
                    });
            }
        }
        t += 60;
    }
    // Whatever is still queued would go out at the next upload; deliver it, then detect once
    // more over the whole scenario.
    for p in probes.iter_mut() {
        if !p.queue.is_empty() {
            submissions += p.queue.len();
            ingest::ingest(
                &storage,
                &p.queue.join("\n"),
                &ingest_config,
                &fingerprints,
                &origin(p.asn_at(s.to)),
            )?;
            p.queue.clear();
        }
    }
    vantage_aggregator::detect::detect(
        &storage,
        Some(&s.cc),
        Pass::Full(Some(s.from - 3600)),
        s.to,
        &categories,
        config,
    )?;
    let events = storage.timeline(&everything)?;
    drop(storage);
    if !keep {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
        }
    }
    Ok(Outcome {
        scenario: s.clone(),
        events,
        seen,
        live_at_truth,
        submissions: submissions + attacker_submissions,
        attacker_submissions,
    })
}

/// What an attacker sends in one minute.
struct Sent {
    beats: Vec<String>,
    upload: Vec<String>,
}

/// Attacker `x` (the `i`-th) at simulated minute `t`, its clock at `at`.
#[allow(clippy::too_many_arguments)]
fn act(
    a: &Attack,
    x: &mut Attacker,
    i: usize,
    t: i64,
    at: i64,
    cc: &str,
    templates: &Templates,
    rng: &mut Rng,
) -> Result<Sent> {
    let mut sent = Sent {
        beats: Vec::new(),
        upload: Vec::new(),
    };
    let canary_minute = (t / 60).rem_euclid(5) == x.slot;
    // One key may claim several networks at once, each claim a second apart (a key's
    // heartbeats are one a moment).
    let beat = |x: &Attacker, asn: u32, j: i64, rng: &mut Rng| -> Result<String> {
        let m = base(
            "heartbeat",
            cc,
            asn,
            at + j,
            rng.unit(),
            serde_json::json!({}),
        );
        Ok(x.key.seal(&m)?.1)
    };
    let canary = |x: &Attacker, asn: u32, j: i64, ok: u32, rng: &mut Rng| -> Result<String> {
        let keys = serde_json::json!({"ok": ok, "total": 4, "checks": []});
        Ok(x.key
            .seal(&base("canary", cc, asn, at + j, rng.unit(), keys))?
            .1)
    };
    match a {
        Attack::Hide { asns, from, to } => {
            if t < *from || t >= *to {
                return Ok(sent);
            }
            // Every key speaks for every dark network: K keys outnumber each network's own.
            for (j, asn) in asns.iter().enumerate() {
                sent.beats.push(beat(x, *asn, j as i64, rng)?);
                if canary_minute {
                    sent.upload.push(canary(x, *asn, j as i64, 4, rng)?);
                }
            }
        }
        Attack::Invent {
            dark,
            cut,
            back,
            blocked,
            category,
            block,
        } => {
            let (cut, back) = (*cut, *back);
            if t >= cut - 2 * 3600 && t < back + 3600 {
                let online = t < cut || t >= back;
                if online {
                    sent.beats.push(beat(x, *dark, 0, rng)?);
                }
                if canary_minute {
                    let c = canary(x, *dark, 0, if online { 4 } else { 0 }, rng)?;
                    if online {
                        sent.upload.push(c);
                    } else {
                        // "Recorded offline", uploaded once "back".
                        x.queue.push(c);
                    }
                }
                if online && !x.queue.is_empty() {
                    sent.upload.append(&mut x.queue);
                }
            }
            // Every hour, each host of the category "blocked", far more often than a real
            // probe runs its list.
            if t >= block.0 && t < block.1 && (t / 60).rem_euclid(60) == (i as i64 * 7) % 60 {
                for (host, c) in targets() {
                    if &c == category {
                        let mut m =
                            templates.measurement(Some(Layer::Dns), &host, cc, *blocked, at);
                        m["test_runtime"] = rng.unit().into();
                        sent.upload.push(x.key.seal(&m.to_string())?.1);
                    }
                }
            }
        }
    }
    Ok(sent)
}
