//! The timeline: events built by the detectors from the signals, stored, and served
//! (README.md, "Timeline: shutdowns, blocking and throttling").
//!
//! Detection runs per country over a lookback window ([`DetectConfig::lookback_hours`]): the
//! shutdown detector (`outage.rs`) per network, then networks that went dark together are
//! merged into one event whose scope says how far it reached; the blocking detector
//! (`blocking.rs`) per network, target and category. Each run replaces the country's events
//! that start inside the window, so late uploads revise them; an event keeps its id across runs
//! as long as it overlaps its earlier self, so links to it stay valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use ring::digest::{SHA256, digest};
use serde::Deserialize;

pub mod blocking;
pub mod outage;
pub mod signals;
pub mod throttling;

use crate::store::model::{BIN_SECONDS, NO_KEY, Verification};
pub use crate::store::model::{Entity, Event, Kind, Scope, TimelineQuery, format_time};
use crate::store::{DbError, Storage};
use blocking::{BlockingConfig, Layer, Observation, Subject};
use outage::{NetworkOutage, OutageConfig, ProbeContacts, Whereabouts};
use signals::{Admit, known_network};

/// Every threshold of detection, readable from a TOML file (`serve --detect-config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// How far back each run looks. Eight days: the blocking baseline's week of history plus
    /// a day, and longer than all but the longest 1 % of IODA's investigated outages
    /// (`datasets/ioda-investigated-outages.csv`: p99 of durations is 6,815 minutes).
    pub lookback_hours: i64,
    /// Between full runs, `serve` runs only the shutdown detector over this recent window:
    /// it is what must react within minutes, and the hour of contact it needs (`live_seconds`)
    /// plus the burst fit in two hours. Blocking works on hourly bins and waits for the full run.
    pub recent_hours: i64,
    /// `serve` makes every this many runs a full one (over `lookback_hours`, both detectors):
    /// every ten minutes with the default `--detect-every 60`.
    pub full_every: u32,
    /// The shutdown detector.
    pub outage: OutageConfig,
    /// The blocking detector.
    pub blocking: BlockingConfig,
    /// The throttling detector.
    pub throttling: throttling::ThrottlingConfig,
    /// Count a probe key for a network only with verified contact in it: a heartbeat or an
    /// upload whose connecting address the geolocation source places in the network it claims
    /// (`signals::Admit` has the whole rule, and what it does with uploads through proxies).
    /// `serve` turns this on whenever it has a geolocation source (`--geoip`, `--prefixes`),
    /// whatever the file says; without one nothing could ever be verified.
    pub require_verified_network: bool,
    /// How long a verified contact vouches for its key's later contacts in that network, in
    /// hours. A week: canaries recorded offline during a cut inherit the heartbeats from
    /// before it, and a week covers all but the longest 1 % of IODA's investigated outages
    /// (p99 of their durations is 6,815 minutes, about 4.7 days; BENCHMARKS.md's evaluation
    /// draws its shutdowns from the same list). A probe that uploads through a proxy for a
    /// while keeps counting for as long; a key that leaves the network speaks for it no longer
    /// than that.
    pub verified_window_hours: i64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            lookback_hours: 192,
            recent_hours: 2,
            full_every: 10,
            outage: OutageConfig::default(),
            blocking: BlockingConfig::default(),
            throttling: throttling::ThrottlingConfig::default(),
            require_verified_network: false,
            verified_window_hours: 168,
        }
    }
}

impl DetectConfig {
    /// Reads a TOML file; absent keys keep their defaults, unknown keys are refused.
    pub fn read(path: &Path) -> Result<DetectConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: DetectConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .throttling
            .check()
            .map_err(|e| format!("{}: [throttling] {e}", path.display()))?;
        if config.verified_window_hours < 1 {
            return Err(format!(
                "{}: verified_window_hours {} must be at least 1",
                path.display(),
                config.verified_window_hours
            ));
        }
        Ok(config)
    }

    /// Which contacts count, for the signals and every detector.
    pub fn verification(&self) -> Verification {
        Verification {
            required: self.require_verified_network,
            window_seconds: self.verified_window_hours.saturating_mul(3600),
        }
    }
}

/// Which detectors a run covers, and over what window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Both detectors, from the given time (default: the configured lookback).
    Full(Option<i64>),
    /// The shutdown detector over [`DetectConfig::recent_hours`].
    Recent,
}

impl Pass {
    /// The window's start and the kinds of event it recomputes.
    pub fn window(self, now: i64, config: &DetectConfig) -> (i64, &'static [Kind]) {
        match self {
            Pass::Full(from) => (
                from.unwrap_or(now - config.lookback_hours * 3600),
                &[Kind::Shutdown, Kind::Blocking, Kind::Throttling],
            ),
            Pass::Recent => (now - config.recent_hours * 3600, &[Kind::Shutdown]),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn new_id(subject: &str, start: i64) -> String {
    hex_prefix(digest(&SHA256, format!("{subject}|{start}").as_bytes()).as_ref())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Host → category code, from the aggregator's lists: the built-in ones, then the operator's
/// `--lists-dir` (which wins).
pub fn categories(lists_dir: Option<&Path>) -> HashMap<String, String> {
    let mut texts: Vec<(String, String)> = vantage_probe::test_lists::BUILTIN_LISTS
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    if let Some(dir) = lists_dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "csv")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                texts.push((path.display().to_string(), text));
            }
        }
    }
    let mut map = HashMap::new();
    for (name, text) in texts {
        let Ok((list, _)) = vantage_probe::test_lists::TestList::parse(&name, text.as_bytes())
        else {
            continue;
        };
        for entry in list.entries {
            if let Some(host) = url::Url::parse(&entry.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            {
                map.insert(host, entry.category_code);
            }
        }
    }
    map
}

/// Failed canary rounds of `keys` during `[from, to]`: the evidence of a shutdown.
fn failed_canaries(
    storage: &dyn Storage,
    cc: &str,
    keys: &[String],
    from: i64,
    to: i64,
) -> Result<Vec<String>, DbError> {
    let keys: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    let mut out: Vec<String> = storage
        .failed_canaries(cc, from, to)?
        .into_iter()
        .filter(|(_, key)| key.as_deref().is_some_and(|k| keys.contains(k)))
        .map(|(id, _)| id)
        .collect();
    out.truncate(200);
    Ok(out)
}

/// Verdicts of a country since `from` (epoch seconds), of web_connectivity and of the service
/// tests, of the probes `admit` admits.
///
/// Each key is one probe. A row no key signed is an imported OONI measurement: OONI publishes
/// no probe identity (df-000-base has none, and `report_id` changes with every run), so each
/// such measurement is its own witness; otherwise an imported archive, all of it "one probe",
/// could never reach the detector's two probes and would produce no timeline. Keyless rows
/// never count when networks must be verified ([`Admit::Verified`]).
fn observations(
    storage: &dyn Storage,
    cc: &str,
    from: i64,
    admit: &Admit,
) -> Result<Vec<Observation>, DbError> {
    let mut probes: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::new();
    for row in storage.web_verdicts(cc, from)? {
        if !known_network(cc, row.asn) || !admit.counts(row.probe_key.as_deref(), row.asn, row.at) {
            continue;
        }
        let next = probes.len() as u32;
        let voter = match row.probe_key {
            Some(key) if key != NO_KEY => key,
            _ => format!("import:{}", row.id),
        };
        let probe = *probes.entry(voter).or_insert(next);
        out.push(Observation {
            asn: row.asn,
            domain: row.domain,
            at: row.at,
            anomaly: row.blocking.as_deref().and_then(Layer::of_blocking),
            probe,
            id: row.id,
        });
    }
    Ok(out)
}

/// Network outages that started together, merged into one event each, with the scope their
/// reach gives them: every network with enough live probes is `full`, several `regional`,
/// one `network`.
fn shutdown_events(
    storage: &dyn Storage,
    cc: &str,
    networks: &BTreeMap<u32, Vec<ProbeContacts>>,
    found: Vec<NetworkOutage>,
    now: i64,
    config: &OutageConfig,
) -> Result<Vec<Event>, DbError> {
    let mut found = found;
    found.sort_by_key(|o| o.start);
    let mut groups: Vec<Vec<NetworkOutage>> = Vec::new();
    for o in found {
        // Cuts ordered together start within minutes of each other; a quarter of an hour
        // keeps two independent outages of one day apart.
        match groups.last_mut() {
            Some(g) if o.start - g[0].start <= 900 && !g.iter().any(|m| m.asn == o.asn) => {
                g.push(o)
            }
            _ => groups.push(vec![o]),
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let at = g[0].start;
        let covered: BTreeSet<u32> = networks
            .iter()
            .filter(|(_, probes)| outage::live(probes, at, config) >= config.min_probes)
            .map(|(asn, _)| *asn)
            .collect();
        let hit: BTreeSet<u32> = g.iter().map(|o| o.asn).collect();
        let (scope, asn, asns) = if hit.len() >= 2 && hit.is_superset(&covered) {
            (Scope::Full, None, Vec::new())
        } else if hit.len() >= 2 {
            (
                Scope::Regional,
                None,
                hit.iter().map(|a| format!("AS{a}")).collect(),
            )
        } else {
            (Scope::Network, Some(format!("AS{}", g[0].asn)), Vec::new())
        };
        let mut starts: Vec<i64> = g.iter().map(|o| o.start).collect();
        starts.sort_unstable();
        let start = starts[(starts.len() - 1) / 2];
        let end = if g.iter().all(|o| o.end.is_some()) {
            let mut ends: Vec<i64> = g.iter().filter_map(|o| o.end).collect();
            ends.sort_unstable();
            Some(ends[(ends.len() - 1) / 2])
        } else {
            None
        };
        let probes: usize = g.iter().map(|o| o.probes.len()).sum();
        let live: usize = g.iter().map(|o| o.live).sum();
        let confirming: usize = g.iter().map(|o| o.confirming).sum();
        let suspected = confirming * 2 < probes;
        let keys: Vec<String> = g.iter().flat_map(|o| o.probes.clone()).collect();
        let evidence = failed_canaries(storage, cc, &keys, start, end.unwrap_or(now))?;
        // Share of live probes that went dark, discounted while only silence shows it.
        let share = probes as f64 / live.max(1) as f64;
        let confidence = round2(share.min(1.0) * if suspected { 0.6 } else { 0.95 });
        out.push(Event {
            id: String::new(),
            entity: Entity {
                cc: cc.to_string(),
                asn,
                asns,
            },
            kind: Kind::Shutdown,
            scope,
            layer: None,
            category: None,
            targets: Vec::new(),
            start: format_time(start),
            end: end.map(format_time),
            status: if end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected,
            confidence,
            probes,
            evidence,
            rate_kbps: None,
        });
    }
    Ok(out)
}

fn blocking_event(cc: &str, f: blocking::Finding) -> Event {
    let (category, targets) = match f.subject {
        Subject::Category(c) => (Some(c), f.targets),
        Subject::Target(t) => (None, vec![t]),
    };
    let confidence = round2(f.peak_ratio.min(1.0) * (f.probes.min(3) as f64 / 3.0));
    Event {
        id: String::new(),
        entity: Entity {
            cc: cc.to_string(),
            asn: Some(format!("AS{}", f.asn)),
            asns: Vec::new(),
        },
        kind: Kind::Blocking,
        scope: Scope::Service,
        layer: Some(f.layer),
        category,
        targets,
        start: format_time(f.start),
        end: f.end.map(format_time),
        status: if f.end.is_some() { "ended" } else { "ongoing" }.into(),
        suspected: false,
        confidence,
        probes: f.probes,
        evidence: f.evidence.into_iter().take(200).collect(),
        rate_kbps: None,
    }
}

/// Runs the detectors of `kinds` for one country over `[from, now]`. The unknown country
/// (`signals::known_country`) has no events, and in a known one the unknown network feeds none.
pub fn detect_country(
    storage: &dyn Storage,
    cc: &str,
    (from, kinds): (i64, &[Kind]),
    now: i64,
    categories: &HashMap<String, String>,
    config: &DetectConfig,
) -> Result<Vec<Event>, DbError> {
    if !signals::known_country(cc) {
        return Ok(Vec::new());
    }
    // Who counts (`signals::Admit`): read once, back to the earliest contact any detector of
    // the pass reads (the shutdown detector's hour before the window, the throttling
    // baselines' week).
    let mut earliest = from - config.outage.live_seconds;
    if kinds.contains(&Kind::Throttling) {
        earliest = earliest.min(from - config.throttling.baseline_days * 86_400);
    }
    let admit = Admit::load(storage, cc, None, earliest, now, config.verification())?;
    let mut events = Vec::new();
    if kinds.contains(&Kind::Shutdown) {
        events = shutdowns(storage, cc, from, now, config, &admit)?;
    }
    if kinds.contains(&Kind::Blocking) {
        let obs = observations(storage, cc, from, &admit)?;
        events.extend(
            blocking::detect(&obs, categories, now, &config.blocking)
                .into_iter()
                .map(|f| blocking_event(cc, f)),
        );
    }
    if kinds.contains(&Kind::Throttling) {
        // The throttling detector judges each network apart (its baselines and groups are per
        // network), so leaving out the unknown network's findings leaves out all it fed.
        events.extend(
            throttling::events(storage, cc, from, now, &config.throttling, &admit)?
                .into_iter()
                .filter(|e| {
                    e.entity
                        .asn
                        .as_deref()
                        .and_then(|a| a.strip_prefix("AS"))
                        .and_then(|a| a.parse::<u32>().ok())
                        .is_some_and(|asn| known_network(cc, asn))
                }),
        );
    }
    Ok(events)
}

fn shutdowns(
    storage: &dyn Storage,
    cc: &str,
    from: i64,
    now: i64,
    config: &DetectConfig,
    admit: &Admit,
) -> Result<Vec<Event>, DbError> {
    // Who was live at the start of the window depends on the hour before it: read that too,
    // but report only outages that start inside the window (the others are a wider pass's).
    let from_bin = (from - config.outage.live_seconds).div_euclid(BIN_SECONDS);
    let mut networks = BTreeMap::new();
    let mut seen = Whereabouts::default();
    for asn in storage.recent_networks(cc, from_bin)? {
        if !known_network(cc, asn) {
            continue;
        }
        let probes = outage::admitted(storage.contacts(cc, asn, from_bin)?, admit);
        seen.add(cc, &probes);
        networks.insert(asn, probes);
    }
    let find = |seen: &Whereabouts| -> Vec<NetworkOutage> {
        networks
            .values()
            .flat_map(|probes| outage::detect_in(cc, probes, seen, now, &config.outage))
            .filter(|o| o.start >= from)
            .collect()
    };
    let mut found = find(&seen);
    if !found.is_empty() {
        // A probe may have moved to another country (a VPN switched on, a roaming phone).
        // Knowing that only removes disconnections, so a country with no outage among its own
        // networks has none at all, and the other countries are read only when it has one.
        for other in storage.active_countries(from_bin)? {
            if other.eq_ignore_ascii_case(cc) || !signals::known_country(&other) {
                continue;
            }
            let theirs = Admit::load(
                storage,
                &other,
                None,
                from - config.outage.live_seconds,
                now,
                config.verification(),
            )?;
            for asn in storage.recent_networks(&other, from_bin)? {
                if known_network(&other, asn) {
                    let probes =
                        outage::admitted(storage.contacts(&other, asn, from_bin)?, &theirs);
                    seen.add(&other, &probes);
                }
            }
        }
        found = find(&seen);
    }
    shutdown_events(storage, cc, &networks, found, now, &config.outage)
}

/// Gives each fresh event its id: the id of the stored event of the same subject it overlaps
/// (and that event's start, if it began before the window `from`), else a new one from its
/// subject and start. So links to an event stay valid while late uploads revise it.
pub fn assign_ids(stored: &[Event], from: i64, fresh: Vec<Event>) -> Vec<Event> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::with_capacity(fresh.len());
    for mut e in fresh {
        let subject = e.subject();
        if let Some(old) = stored
            .iter()
            .find(|o| !taken.contains(&o.id) && o.subject() == subject && o.overlaps(&e))
        {
            e.id = old.id.clone();
            if old.start_secs() < from {
                e.start = old.start.clone();
            }
        } else {
            e.id = new_id(&subject, e.start_secs());
        }
        taken.insert(e.id.clone());
        out.push(e);
    }
    out
}

/// Replaces a country's events of `kinds` that start at or after `from` with `fresh`, keeping
/// the ids of the stored events they continue ([`assign_ids`]).
pub fn store(
    storage: &dyn Storage,
    cc: &str,
    (from, kinds): (i64, &[Kind]),
    fresh: Vec<Event>,
) -> Result<(), DbError> {
    let stored = storage.events_since(cc, from, kinds)?;
    let events = assign_ids(&stored, from, fresh);
    storage.replace_events(cc, from, kinds, &events)
}

/// Runs the detectors of `pass` for `cc` (every country with recent signals when `None`) and
/// stores the events; returns how many events the window now holds. It reads through the
/// store's readers and writes each country's events in one short transaction, so uploads
/// are not held up while it thinks.
pub fn detect(
    storage: &dyn Storage,
    cc: Option<&str>,
    pass: Pass,
    now: i64,
    categories: &HashMap<String, String>,
    config: &DetectConfig,
) -> Result<usize, DbError> {
    let window = pass.window(now, config);
    let countries = match cc {
        Some(cc) => vec![cc.to_ascii_uppercase()],
        None => storage.active_countries(window.0.div_euclid(BIN_SECONDS))?,
    };
    let mut n = 0;
    for cc in countries {
        let found = detect_country(storage, &cc, window, now, categories, config)?;
        n += found.len();
        store(storage, &cc, window, found)?;
    }
    Ok(n)
}

/// Who runs the detectors among the `serve` nodes of one store: exactly one at a time, by a
/// lease kept in the store ([`Storage::detector_lease`]). Renewed every third of its term, on
/// its own timer, so that a long detection pass does not let it lapse.
#[derive(Debug)]
pub struct Lease {
    /// This node's name in the lease (unique per process).
    pub node: String,
    /// How long a lease lasts without renewal: a dead holder's lease is taken over after at
    /// most this plus a third of it.
    pub ttl: std::time::Duration,
    held: std::sync::atomic::AtomicBool,
}

impl Lease {
    /// A lease for `node`, not yet held.
    pub fn new(node: String, ttl: std::time::Duration) -> Lease {
        Lease {
            node,
            ttl,
            held: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this node held the lease at its last renewal.
    pub fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps asking for the lease every third of its term, for as long as the server runs.
    pub async fn keep(self: std::sync::Arc<Self>, storage: std::sync::Arc<dyn Storage>) {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(3);
        loop {
            let (s, me) = (storage.clone(), self.clone());
            let got = tokio::task::spawn_blocking(move || {
                s.detector_lease(&me.node, crate::store::now(), ttl)
            })
            .await;
            let held = match got {
                Ok(Ok(held)) => held,
                Ok(Err(e)) => {
                    tracing::warn!("detector lease: {e}");
                    false
                }
                Err(e) => {
                    tracing::warn!("detector lease task failed: {e}");
                    false
                }
            };
            let was = self.held.swap(held, std::sync::atomic::Ordering::Relaxed);
            if held && !was {
                eprintln!(
                    "vantage-aggregator: node {} now runs the detectors",
                    self.node
                );
            } else if was && !held {
                eprintln!(
                    "vantage-aggregator: node {} no longer runs the detectors",
                    self.node
                );
            }
            tokio::time::sleep(self.ttl / 3).await;
        }
    }
}

/// Runs the detectors every `every` over every country with recent signals, as `serve` does
/// (`--detect-every`), while this node holds `lease`: the shutdown detector over the recent
/// window each time, and both over the whole lookback every [`DetectConfig::full_every`] runs,
/// starting with the first after the lease is taken (a node taking over recomputes the whole
/// window). Silence is a signal, so this runs whether or not anything arrived.
pub async fn run(
    storage: std::sync::Arc<dyn Storage>,
    categories: std::sync::Arc<HashMap<String, String>>,
    config: std::sync::Arc<DetectConfig>,
    every: std::time::Duration,
    lease: std::sync::Arc<Lease>,
) {
    let mut runs: u32 = 0;
    loop {
        tokio::time::sleep(every).await;
        if !lease.held() {
            runs = 0;
            continue;
        }
        let pass = if runs.is_multiple_of(config.full_every.max(1)) {
            Pass::Full(None)
        } else {
            Pass::Recent
        };
        runs = runs.wrapping_add(1);
        let (s, cats, cfg) = (storage.clone(), categories.clone(), config.clone());
        let done = tokio::task::spawn_blocking(move || {
            detect(&*s, None, pass, crate::store::now(), &cats, &cfg)
        })
        .await;
        match done {
            Ok(Ok(n)) => tracing::debug!("detection: {n} events in the window"),
            Ok(Err(e)) => tracing::warn!("detection failed, will retry: {e}"),
            Err(e) => tracing::warn!("detection task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, start: i64, end: Option<i64>) -> Event {
        Event {
            id: String::new(),
            entity: Entity {
                cc: "IR".into(),
                asn: Some("AS64500".into()),
                asns: Vec::new(),
            },
            kind,
            scope: if kind == Kind::Shutdown {
                Scope::Network
            } else {
                Scope::Service
            },
            layer: (kind == Kind::Blocking).then_some(Layer::Dns),
            category: None,
            targets: if kind == Kind::Blocking {
                vec!["a.example".into()]
            } else {
                Vec::new()
            },
            start: format_time(start),
            end: end.map(format_time),
            status: if end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected: false,
            confidence: 0.9,
            probes: 5,
            evidence: Vec::new(),
            rate_kbps: None,
        }
    }

    #[test]
    fn a_recent_pass_replaces_only_recent_shutdowns_and_keeps_ids() {
        let dir = std::env::temp_dir().join(format!("vantage-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        let db = crate::store::Sqlite::open(&path).expect("open");
        let t = 1_767_571_200;
        let config = DetectConfig::default();
        let full = Pass::Full(Some(t - 86_400)).window(t, &config);
        store(
            &db,
            "IR",
            full,
            vec![
                event(Kind::Blocking, t - 3600, None),
                event(Kind::Shutdown, t - 1800, None),
            ],
        )
        .expect("store");
        let all = || {
            db.timeline(&TimelineQuery {
                since: t - 86_400,
                until: t + 86_400,
                ..Default::default()
            })
            .expect("timeline")
        };
        let before = all();
        assert_eq!(before.len(), 2);
        let shutdown_id = before
            .iter()
            .find(|e| e.kind == Kind::Shutdown)
            .map(|e| e.id.clone());

        // The shutdown ended, seen by a recent pass; the blocking event is not its business.
        let recent = Pass::Recent.window(t + 600, &config);
        assert_eq!(recent, (t + 600 - 7200, &[Kind::Shutdown][..]));
        store(
            &db,
            "IR",
            recent,
            vec![event(Kind::Shutdown, t - 1790, Some(t + 300))],
        )
        .expect("store");
        let after = all();
        assert_eq!(after.len(), 2, "{after:#?}");
        let shutdown = after
            .iter()
            .find(|e| e.kind == Kind::Shutdown)
            .expect("kept");
        assert_eq!(
            Some(shutdown.id.clone()),
            shutdown_id,
            "same event, same id"
        );
        assert_eq!(shutdown.status, "ended");
        assert!(after.iter().any(|e| e.kind == Kind::Blocking));

        // A later recent pass that no longer sees it (nothing in the window) removes it.
        store(&db, "IR", recent, Vec::new()).expect("store");
        assert_eq!(all().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Five real probes of AS64500 beat from inside it for four hours, one of them measuring
    /// a.example every ten minutes; six keys elsewhere claim AS64500 too, beat for an hour,
    /// then fall silent with failed canaries and send "blocked" measurements of a.example.
    fn attacked(dir: &Path) -> crate::store::Sqlite {
        attacked_from(dir, ("IR", 64500))
    }

    /// [`attacked`], with the six other keys claiming `(fake_cc, fake_asn)`.
    fn attacked_from(dir: &Path, (fake_cc, fake_asn): (&str, u32)) -> crate::store::Sqlite {
        use crate::store::{Row, Sqlite, Storage};
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let t0 = 1_767_571_200;
        let measurement = |key: &str, at: i64, test: &str, verified: bool, blocked: bool| Row {
            id: format!("{key}-{test}-{at}"),
            source: "vantage".into(),
            probe_key: Some(key.into()),
            probe_cc: if key.starts_with("fake") {
                fake_cc
            } else {
                "IR"
            }
            .into(),
            probe_asn: if key.starts_with("fake") {
                fake_asn
            } else {
                64500
            },
            test_name: test.into(),
            input: Some("https://a.example/".into()),
            domain: Some("a.example".into()),
            measured_at: format_time(at),
            blocking: Some(if blocked { "\"dns\"" } else { "false" }.into()),
            accessible: Some(!blocked),
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: r#"{"v":1,"measurement":{"test_keys":{"ok":0,"total":4}}}"#.into(),
            network_verified: verified,
            route: crate::store::Route::Upload,
        };
        let mut rows = Vec::new();
        for m in 0..240 {
            let at = t0 + m * 60;
            for p in 0..5 {
                db.heartbeat(&format!("real{p}"), "IR", 64500, &format_time(at + p), true)
                    .expect("beat");
            }
            if m % 10 == 0 {
                rows.push(measurement("real0", at, "web_connectivity", true, false));
            }
            for f in 0..6 {
                let key = format!("fake{f}");
                if m < 60 {
                    db.heartbeat(&key, fake_cc, fake_asn, &format_time(at + 10 + f), false)
                        .expect("beat");
                } else if m % 5 == 0 {
                    rows.push(measurement(&key, at + f, "canary", false, true));
                }
                if m >= 60 && m % 10 == 0 {
                    rows.push(measurement(&key, at + f, "web_connectivity", false, true));
                }
            }
        }
        db.insert(&rows).expect("insert");
        db
    }

    #[test]
    fn with_verification_keys_claiming_a_network_from_elsewhere_make_no_event() {
        use crate::store::Storage;
        let dir = std::env::temp_dir().join(format!("vantage-attacked-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = attacked(&dir);
        let now = 1_767_571_200 + 4 * 3600;
        let q = TimelineQuery {
            cc: Some("IR".into()),
            since: now - 86_400,
            until: now + 86_400,
            ..Default::default()
        };
        let mut config = DetectConfig::default();
        let cats = HashMap::new();
        detect(&db, Some("IR"), Pass::Full(None), now, &cats, &config).expect("detect");
        let kinds: BTreeSet<&str> = db
            .timeline(&q)
            .expect("timeline")
            .iter()
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            BTreeSet::from(["shutdown", "blocking"]),
            "unchecked, the fakes invent both"
        );
        config.require_verified_network = true;
        detect(&db, Some("IR"), Pass::Full(None), now, &cats, &config).expect("detect");
        let events = db.timeline(&q).expect("timeline");
        assert!(events.is_empty(), "{events:#?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn keys_in_the_unknown_network_going_dark_with_blocked_pages_make_no_event() {
        use crate::store::Storage;
        let now = 1_767_571_200 + 4 * 3600;
        let q = |cc: &str| TimelineQuery {
            cc: Some(cc.into()),
            since: now - 86_400,
            until: now + 86_400,
            ..Default::default()
        };
        let (config, cats) = (DetectConfig::default(), HashMap::new());
        // The six keys that fall silent with failed canaries and "blocked" pages claim IR's
        // AS0, then ZZ's AS0, then ZZ with a real ASN: no shutdown and no blocking anywhere,
        // though, claiming IR's AS64500, they make both (the test above).
        for (i, fake) in [("IR", 0), ("ZZ", 0), ("ZZ", 64500)]
            .into_iter()
            .enumerate()
        {
            let dir = std::env::temp_dir()
                .join(format!("vantage-unknown-net-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("dir");
            let db = attacked_from(&dir, fake);
            assert!(
                db.active_countries(0)
                    .expect("countries")
                    .contains(&fake.0.to_string())
            );
            let n = detect(&db, None, Pass::Full(None), now, &cats, &config).expect("detect");
            assert_eq!(n, 0, "{fake:?}");
            for cc in ["IR", "ZZ"] {
                let events = db.timeline(&q(cc)).expect("timeline");
                assert!(events.is_empty(), "{fake:?} {cc}: {events:#?}");
            }
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn verification_settings_read_from_the_detection_file_and_refuse_a_window_of_nothing() {
        let path = std::env::temp_dir().join(format!("vantage-verify-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "require_verified_network = true\nverified_window_hours = 24\n",
        )
        .expect("write");
        let config = DetectConfig::read(&path).expect("valid");
        assert_eq!(
            config.verification(),
            Verification {
                required: true,
                window_seconds: 86_400
            }
        );
        assert!(!DetectConfig::default().verification().required);
        std::fs::write(&path, "verified_window_hours = 0\n").expect("write");
        let err = DetectConfig::read(&path).expect_err("a window of nothing");
        assert!(
            err.contains("verified_window_hours 0 must be at least 1"),
            "{err}"
        );
        let _ = std::fs::remove_file(&path);
    }
}
