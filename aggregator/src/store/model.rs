//! The data every store keeps and every layer above reads: times and bins, the signals' rows, the
//! verified contacts, the detectors' inputs and the events they make (README.md, the route
//! `GET /api/v1/signals` and "Timeline: shutdowns, blocking and throttling"). Plain types and
//! the few rules that define them; no storage and no detection.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Width of a bin. Five minutes: IODA's finest active-probing step is ten; half of it lets a
/// shutdown be opened within two bins of its start (README.md, `GET /api/v1/signals`).
pub const BIN_SECONDS: i64 = 300;

/// Where every stored counter saturates: 2^40, a trillion submissions of one key in one bin,
/// far beyond anything real and far below where sums of them could overflow an `i64`.
pub const COUNTER_MAX: i64 = 1 << 40;

/// The `probe_key` of a bin's rows that no probe key signed: OONI imports, and the canary
/// totals carried over from before migration 10. It is one voice, never a probe.
pub const NO_KEY: &str = "";

/// The bin of an OONI time (`YYYY-MM-DD HH:MM:SS`, UTC).
pub fn bin_of(time: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(time, format).ok()?;
    Some(t.assume_utc().unix_timestamp().div_euclid(BIN_SECONDS))
}

/// Seconds since the epoch of `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (UTC), as the API takes them.
pub fn parse_time(text: &str) -> Option<i64> {
    let day = time::macros::format_description!("[year]-[month]-[day]");
    let full = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, full)
        .ok()
        .or_else(|| {
            time::Date::parse(text, day)
                .ok()
                .map(|d| d.with_time(time::Time::MIDNIGHT))
        })
        .map(|t| t.assume_utc().unix_timestamp())
}

/// `YYYY-MM-DD HH:MM:SS` of epoch seconds.
pub fn format_time(secs: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// A canary's `test_keys.ok` and `.total`, read from its envelope, when `0 <= ok <= total`;
/// both saturate at [`COUNTER_MAX`] (ingest refuses anything a canary round cannot have, but
/// storage does not count on it).
pub fn canary_counts(envelope: &str) -> Option<(i64, i64)> {
    #[derive(serde::Deserialize)]
    struct Keys {
        ok: i64,
        total: i64,
    }
    #[derive(serde::Deserialize)]
    struct M {
        test_keys: Keys,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        measurement: M,
    }
    let e: Envelope = serde_json::from_str(envelope).ok()?;
    let Keys { ok, total } = e.measurement.test_keys;
    (0 <= ok && ok <= total).then_some((ok.min(COUNTER_MAX), total.min(COUNTER_MAX)))
}

/// Whether contacts must come from inside the network they claim to count, and how long a
/// verified contact vouches for its key's later ones (`DetectConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verification {
    /// Count only keys with verified contact in the network they claim.
    pub required: bool,
    /// How far back (seconds) from a contact a verified one may be.
    pub window_seconds: i64,
}

/// The days on which probe keys reached the aggregator from inside a network: for each key,
/// (network, first, last verified contact of the day), as loaded for one question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vouches {
    days: HashMap<String, Vec<(u32, i64, i64)>>,
}

impl Vouches {
    /// Adds one day of `key`'s verified contacts with `asn`, from `first` to `last`.
    pub fn add(&mut self, key: &str, asn: u32, first: i64, last: i64) {
        self.days
            .entry(key.to_string())
            .or_default()
            .push((asn, first, last));
    }

    /// Whether `key` had verified contact with `asn` within `window` seconds up to `at`.
    /// Exact, though only each day's first and last contacts are kept: a day spans less than
    /// any window worth having, so a day whose span overlaps `[at - window, at]` has its first
    /// or its last contact inside it.
    pub fn vouch(&self, key: &str, asn: u32, at: i64, window: i64) -> bool {
        self.days.get(key).is_some_and(|days| {
            days.iter().any(|&(a, first, last)| {
                a == asn && first <= at && last >= at.saturating_sub(window)
            })
        })
    }
}

/// One probe key's row of one bin, every counter clamped as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeBin {
    /// Bin number.
    pub bin: i64,
    /// The network it claimed.
    pub asn: u32,
    /// The key ([`NO_KEY`] for rows no key signed).
    pub key: String,
    /// It showed connectivity in the bin.
    pub online: bool,
    /// Heartbeats.
    pub heartbeats: i64,
    /// Canary targets that answered.
    pub canary_ok: i64,
    /// Canary targets checked.
    pub canary_checks: i64,
    /// web_connectivity measurements.
    pub measurements: i64,
    /// Of those, anomalies on each layer (DNS, TCP, TLS, HTTP).
    pub anomalies: [i64; 4],
}

/// What one probe's bin says about its connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// Bin number (see `signals::BIN_SECONDS`).
    pub bin: i64,
    /// First and last moment (epoch seconds) it showed connectivity in the bin.
    pub up: Option<(i64, i64)>,
    /// Canary rounds that failed in the bin.
    pub down: u32,
}

/// One probe in one network, its contacts in bin order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeContacts {
    /// The probe's key.
    pub key: String,
    /// Its network.
    pub asn: u32,
    /// Contacts, oldest first.
    pub contacts: Vec<Contact>,
}

/// A layer of the measurement, as events name it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// DNS resolution.
    Dns,
    /// TCP connect.
    Tcp,
    /// TLS handshake.
    Tls,
    /// HTTP failure or a differing page.
    Http,
}

impl Layer {
    /// All layers, in protocol order.
    pub const ALL: [Layer; 4] = [Layer::Dns, Layer::Tcp, Layer::Tls, Layer::Http];

    /// The name in the API (`dns`, `tcp`, `tls`, `http`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Dns => "dns",
            Layer::Tcp => "tcp",
            Layer::Tls => "tls",
            Layer::Http => "http",
        }
    }

    /// The layer of a stored `blocking` value (JSON text), if it is an anomaly.
    pub fn of_blocking(blocking: &str) -> Option<Layer> {
        match blocking {
            "\"dns\"" => Some(Layer::Dns),
            "\"tcp_ip\"" => Some(Layer::Tcp),
            "\"tls\"" => Some(Layer::Tls),
            "\"http-failure\"" | "\"http-diff\"" => Some(Layer::Http),
            _ => None,
        }
    }
}

/// One web_connectivity verdict, as the blocking detector reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictRow {
    /// The network it claimed.
    pub asn: u32,
    /// The target host.
    pub domain: String,
    /// When it was measured, epoch seconds.
    pub at: i64,
    /// The verdict's `blocking`, as JSON text (`false`, `"dns"`, ...); `None` undetermined.
    pub blocking: Option<String>,
    /// The signer (`None`: an import).
    pub probe_key: Option<String>,
    /// The measurement id.
    pub id: String,
}

/// One scored throttling measurement, or one page the passive signal judged (`detect::throttling`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottlingObservation {
    /// The network.
    pub asn: u32,
    /// The target host.
    pub domain: String,
    /// Epoch seconds.
    pub at: i64,
    /// `Some(true)` throttled, `Some(false)` clean, `None` undetermined or failed.
    pub throttled: Option<bool>,
    /// The estimated ceiling, when throttled.
    pub kbps: Option<f64>,
    /// The probe's key.
    pub probe: String,
    /// The measurement id.
    pub id: String,
    /// Whether the verdict is the passive signal's rather than the active test's.
    pub passive: bool,
}

impl ThrottlingObservation {
    /// An active test's stored verdict: `blocking` `"throttling"` is throttled, `false`
    /// clean, anything else undetermined; the ceiling is the verdict's `ceiling_kbps`.
    pub fn of_verdict(
        asn: u32,
        domain: String,
        at: i64,
        blocking: Option<&str>,
        verdict: Option<&str>,
        probe: String,
        id: String,
    ) -> ThrottlingObservation {
        let throttled = match blocking {
            Some("\"throttling\"") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let kbps = verdict
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .and_then(|v| v["ceiling_kbps"].as_f64());
        ThrottlingObservation {
            asn,
            domain,
            at,
            throttled,
            kbps,
            probe,
            id,
            passive: false,
        }
    }
}

/// The goodput of one web_connectivity page, from its stored verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSample {
    /// The network.
    pub asn: u32,
    /// The page's host.
    pub domain: String,
    /// Epoch seconds.
    pub at: i64,
    /// The probe's key.
    pub probe: String,
    /// The measurement id.
    pub id: String,
    /// The probe's rate, kbit/s.
    pub kbps: f64,
    /// Whether it was far below the helper's; `None` without a helper rate.
    pub below_control: Option<bool>,
}

/// What an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Networks went dark.
    Shutdown,
    /// Targets blocked.
    Blocking,
    /// Targets slowed down (README.md, "Throttling").
    Throttling,
}

impl Kind {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shutdown => "shutdown",
            Kind::Blocking => "blocking",
            Kind::Throttling => "throttling",
        }
    }
}

/// How far an event reached (README.md, "Timeline"). A shutdown of several networks of a
/// country (`regional`) and one of a single network (`network`) are told apart rather than
/// both called `partial`: a region cut off and one ISP's customers cut off are different
/// events, and a researcher needs to see which it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every network of the country with enough probes.
    Full,
    /// Several networks, not all.
    Regional,
    /// One network.
    Network,
    /// Some services in one network.
    Service,
}

/// Where an event happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entity {
    /// Country.
    pub cc: String,
    /// The network, for single-network events.
    pub asn: Option<String>,
    /// The networks of a regional event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asns: Vec<String>,
}

/// One event of the timeline (README.md, "Timeline: shutdowns, blocking and throttling").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Stable id (16 hex digits).
    pub id: String,
    /// Where.
    pub entity: Entity,
    /// What.
    pub kind: Kind,
    /// How far.
    pub scope: Scope,
    /// The layer of a blocking event.
    pub layer: Option<Layer>,
    /// The category of a category-wide block.
    pub category: Option<String>,
    /// Hosts affected.
    pub targets: Vec<String>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub start: String,
    /// `None` while ongoing.
    pub end: Option<String>,
    /// `ongoing` or `ended`.
    pub status: String,
    /// Only probe silence so far: no offline canary confirms it yet.
    pub suspected: bool,
    /// 0 to 1.
    pub confidence: f64,
    /// Probes whose data shows it.
    pub probes: usize,
    /// Ids of the measurements that show it (each verifiable at `/api/v1/measurements/<id>`).
    pub evidence: Vec<String>,
    /// The estimated rate ceiling of a throttling event, kbit/s (median of its measurements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbps: Option<f64>,
}

impl Event {
    /// Start, in epoch seconds.
    pub fn start_secs(&self) -> i64 {
        parse_time(&self.start).unwrap_or(0)
    }

    /// End, in epoch seconds.
    pub fn end_secs(&self) -> Option<i64> {
        self.end.as_deref().and_then(parse_time)
    }

    /// What the event is about, apart from time: two detections with the same subject that
    /// overlap are the same event.
    pub fn subject(&self) -> String {
        format!(
            "{}|{}|{:?}|{:?}|{:?}|{:?}|{}",
            self.entity.cc,
            self.kind.as_str(),
            self.entity.asn,
            self.entity.asns,
            self.layer,
            self.category,
            if self.category.is_none() && self.kind != Kind::Shutdown {
                self.targets.join(",")
            } else {
                String::new()
            }
        )
    }

    /// Whether the two spans of time share a moment (an ongoing event has no end).
    pub fn overlaps(&self, other: &Event) -> bool {
        self.start_secs() <= other.end_secs().unwrap_or(i64::MAX)
            && other.start_secs() <= self.end_secs().unwrap_or(i64::MAX)
    }
}

/// How an event's evidence reached the aggregator by one route (docs/carry.md): so that a
/// reader sees whether it came out while the shutdown went on, and by which way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Arrival {
    /// `upload`, `relay`, `file` or `import` (`store::Route`).
    pub route: String,
    /// Evidence measurements that came this way.
    pub count: u64,
    /// When the first of them was received, `YYYY-MM-DD HH:MM:SS` UTC.
    pub first: String,
    /// When the last of them was received.
    pub last: String,
    /// How many were received before the event's end (all of them while it is ongoing).
    pub while_ongoing: u64,
    /// Distinct probes that relayed them (only for `relay`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub relayers: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An event of the timeline with how its evidence arrived (`GET /api/v1/timeline`, the
/// `timeline` command, the web page's event view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEvent {
    /// The event, its fields inline.
    #[serde(flatten)]
    pub event: Event,
    /// Per route (`upload`, `relay`, `file`, `import`), how its evidence came.
    pub arrival: Vec<Arrival>,
    /// Whether any of its evidence was received before it ended (or while it is ongoing):
    /// the evidence came out while the event went on.
    pub arrived_while_ongoing: bool,
}

impl TimelineEvent {
    /// `event` with its `arrival` as the store read it.
    pub fn new(event: Event, arrival: Vec<Arrival>) -> TimelineEvent {
        let arrived_while_ongoing = arrival.iter().any(|a| a.while_ongoing > 0);
        TimelineEvent {
            event,
            arrival,
            arrived_while_ongoing,
        }
    }

    /// The arrival in plain words: `Evidence arrived: 41 by upload (12:03-12:07), 8 by file
    /// (12:05, while the shutdown went on).` Times are UTC, the date shown when it is not the
    /// event's start date.
    pub fn arrival_words(&self) -> String {
        if self.arrival.is_empty() {
            return "No evidence stored.".into();
        }
        let day = self.event.start.get(..10).unwrap_or("");
        let short = |t: &str| match t.split_once(' ') {
            Some((d, hm)) if d == day => hm.get(..5).unwrap_or(hm).to_string(),
            _ => t.get(..16).unwrap_or(t).to_string(),
        };
        let parts: Vec<String> = self
            .arrival
            .iter()
            .map(|a| {
                let when = if a.first == a.last {
                    short(&a.first)
                } else {
                    format!("{}-{}", short(&a.first), short(&a.last))
                };
                let by = match (a.route.as_str(), a.relayers) {
                    ("relay", 1) => "relayed by 1 probe".to_string(),
                    ("relay", n) => format!("relayed by {n} probes"),
                    (r, _) => format!("by {r}"),
                };
                let during = match (a.while_ongoing, a.count) {
                    (0, _) => String::new(),
                    (n, c) if n == c => format!(", while the {} went on", self.event.kind.as_str()),
                    (n, _) => format!(", {n} while the {} went on", self.event.kind.as_str()),
                };
                format!("{} {by} ({when}{during})", a.count)
            })
            .collect();
        format!("Evidence arrived: {}.", parts.join(", "))
    }
}

/// The most evidence ids whose arrival is looked up for one event: detection keeps a few
/// hundred per event, and the lookup stays one bounded query.
pub const MAX_ARRIVAL_IDS: usize = 1000;

/// The distinct ids whose arrival both stores look up, sorted, at most [`MAX_ARRIVAL_IDS`]:
/// an event's evidence may name an id twice, and the lookup is one bounded query.
pub fn arrival_ids(ids: &[String]) -> Vec<&str> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(MAX_ARRIVAL_IDS);
    ids
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct TimelineQuery {
    /// Country; `None` for all.
    pub cc: Option<String>,
    /// Events touching this network (its own, regional ones naming it, and full ones).
    pub asn: Option<u32>,
    /// Events that end at or after this (epoch seconds) ...
    pub since: i64,
    /// ... and start before this.
    pub until: i64,
    /// One kind only.
    pub kind: Option<Kind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_ids_are_looked_up_once_each_and_at_most_the_cap() {
        let ids: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(arrival_ids(&ids), ["a", "b"]);
        let many: Vec<String> = (0..MAX_ARRIVAL_IDS + 5)
            .map(|i| format!("{i:05}"))
            .collect();
        let kept = arrival_ids(&many);
        assert_eq!(kept.len(), MAX_ARRIVAL_IDS);
        assert_eq!(
            kept.last().copied(),
            Some(format!("{:05}", MAX_ARRIVAL_IDS - 1).as_str())
        );
    }
}
