//! The aggregator's storage layer: what ingest, the API and the detectors need from a store,
//! and the stores that provide it.
//!
//! [`Storage`] is the one interface; [`sqlite::Sqlite`] implements it with one embedded file
//! (the default: one binary is enough to start). Nothing here uses the detectors, the API or
//! ingest: the layers above depend on this one, never the other way (`docs/architecture.md`).

use std::collections::BTreeMap;

use serde::Serialize;

use model::{
    Event, Kind, ProbeBin, ProbeContacts, RateSample, ThrottlingObservation, TimelineQuery,
    VerdictRow, Vouches,
};

pub mod clickhouse;
pub mod compact;
pub mod log;
pub mod model;
pub mod sqlite;

pub use sqlite::Sqlite;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A paging cursor this store never gave (`Query::after`): the client's mistake, not the
    /// store's.
    #[error("cursor {0:?} is not one this server gave")]
    BadCursor(String),
    /// SQLite refused.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// A file from a newer aggregator.
    #[error("database {path} has schema version {found}, newer than this aggregator ({known})")]
    TooNew {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// ClickHouse refused (its HTTP status and message), answered what could not be read,
    /// could not be reached, or its address is not one the store takes.
    #[error("ClickHouse {at}: {op}: {message}")]
    ClickHouse {
        /// `HOST:PORT/DB` (the address as given when it could not be read).
        at: String,
        /// What the store was doing.
        op: String,
        /// The HTTP status and ClickHouse's message, or why there was no answer.
        message: String,
    },
    /// The transparency log lacks what it must hold (a stored hash or a leaf below its size):
    /// the database was altered.
    #[error("database {path}: the transparency log has no {what}")]
    LogMissing {
        /// The file.
        path: String,
        /// What is missing (`stored hash 12`, `leaf 3`).
        what: String,
    },
}

/// One measurement to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// SHA-256 of the measurement bytes.
    pub id: String,
    /// `vantage` (signed) or `ooni` (imported, unsigned).
    pub source: String,
    /// The signer, for signed measurements.
    pub probe_key: Option<String>,
    /// Country.
    pub probe_cc: String,
    /// ASN number.
    pub probe_asn: u32,
    /// Test name.
    pub test_name: String,
    /// URL.
    pub input: Option<String>,
    /// Host of the URL, for searching by domain.
    pub domain: Option<String>,
    /// `measurement_start_time`.
    pub measured_at: String,
    /// Verdict blocking as JSON text.
    pub blocking: Option<String>,
    /// Verdict accessible.
    pub accessible: Option<bool>,
    /// Whether a fingerprint confirmed it.
    pub confirmed: bool,
    /// Rule set version of the verdict.
    pub rule_set: Option<String>,
    /// The verdict as JSON.
    pub verdict: Option<String>,
    /// The envelope line (or the raw OONI measurement).
    pub envelope: String,
    /// Whether the address it was uploaded from belongs to the network it claims
    /// (`probe_cc`, `probe_asn`), as the aggregator's geolocation source says; false when it
    /// could not be checked (no source, an import, an upload through a proxy). See
    /// `ingest::Origin`.
    pub network_verified: bool,
    /// How it reached this aggregator (docs/carry.md). A duplicate keeps its first route.
    pub route: Route,
}

/// How a measurement reached the aggregator (docs/carry.md): so that a reader of an event
/// sees whether its evidence came out while a shutdown went on, and by which way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Route {
    /// A probe uploaded its own results (`POST /api/v1/measurements`); every row stored
    /// before routes were recorded.
    #[default]
    Upload,
    /// Another probe uploaded them with a valid `vantage-relay` header
    /// (`vantage_probe::relay_proof`): its public key, never an address.
    Relay {
        /// The relaying probe's base64 Ed25519 key.
        by: String,
    },
    /// An operator stored an export file (`vantage-aggregator ingest`).
    File,
    /// Read from OONI's data (`import-ooni`, the archive): no probe of ours carried it.
    Import,
}

impl Route {
    /// The names, as stored and as the API shows them.
    pub const NAMES: [&'static str; 4] = ["upload", "relay", "file", "import"];

    /// Its name (`upload`, `relay`, `file`, `import`).
    pub fn name(&self) -> &'static str {
        match self {
            Route::Upload => "upload",
            Route::Relay { .. } => "relay",
            Route::File => "file",
            Route::Import => "import",
        }
    }

    /// The relaying probe's key, for a relay.
    pub fn relayed_by(&self) -> Option<&str> {
        match self {
            Route::Relay { by } => Some(by),
            _ => None,
        }
    }

    /// The route stored as `name` and `relayed_by`; an unknown name (a newer aggregator's) or
    /// a relay without its key reads as an upload, the route that claims nothing.
    pub fn from_columns(name: &str, relayed_by: Option<String>) -> Route {
        match (name, relayed_by) {
            ("relay", Some(by)) => Route::Relay { by },
            ("file", _) => Route::File,
            ("import", _) => Route::Import,
            _ => Route::Upload,
        }
    }
}

/// The events `q` asks for, each with how its evidence arrived: one grouped query per event
/// ([`Storage::arrivals`]).
pub fn timeline_with_arrivals(
    storage: &dyn Storage,
    q: &model::TimelineQuery,
) -> Result<Vec<model::TimelineEvent>, DbError> {
    storage
        .timeline(q)?
        .into_iter()
        .map(|e| {
            let arrival = storage.arrivals(&e.evidence, e.end_secs())?;
            Ok(model::TimelineEvent::new(e, arrival))
        })
        .collect()
}

/// A probe key's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Accepted.
    Trusted,
    /// Refused from now on.
    Revoked,
}

impl KeyState {
    fn as_str(self) -> &'static str {
        match self {
            KeyState::Trusted => "trusted",
            KeyState::Revoked => "revoked",
        }
    }
}

/// Filters of the researcher interface.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Country.
    pub cc: Option<String>,
    /// ASN number.
    pub asn: Option<u32>,
    /// Test name.
    pub test_name: Option<String>,
    /// Host.
    pub domain: Option<String>,
    /// Exact URL.
    pub input: Option<String>,
    /// Blocking value as JSON text (`false`, `"dns"`, ...).
    pub blocking: Option<String>,
    /// Confirmed only, or not.
    pub confirmed: Option<bool>,
    /// `measured_at >= since`.
    pub since: Option<String>,
    /// `measured_at < until`.
    pub until: Option<String>,
    /// Continue after this row: the `cursor` of the last row of the previous page, as the
    /// store gave it (each store has its own; the API passes it through unread). Pages are in
    /// time order (`measured_at`, then storage order), which the indexes serve without sorting.
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// One row of a query answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Found {
    /// Measurement id.
    pub id: String,
    /// `vantage` or `ooni`.
    pub source: String,
    /// Country.
    pub probe_cc: String,
    /// `AS<n>`.
    pub probe_asn: String,
    /// Test name.
    pub test_name: String,
    /// URL.
    pub input: Option<String>,
    /// Start time.
    pub measured_at: String,
    /// Verdict blocking.
    pub blocking: Option<serde_json::Value>,
    /// Verdict accessible.
    pub accessible: Option<bool>,
    /// Confirmed by a fingerprint.
    pub confirmed: bool,
    /// Rule set version.
    pub rule_set: Option<String>,
    /// How it reached the aggregator: `upload`, `relay`, `file` or `import` ([`Route`]).
    pub route: String,
    /// The relaying probe's key, for a relayed measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<String>,
    /// Where the next page starts, for [`Query::after`].
    #[serde(skip)]
    pub cursor: String,
}

/// What the server needs from storage.
pub trait Storage: Send + Sync {
    /// A key's standing, `None` when never seen.
    fn key_state(&self, key: &str) -> Result<Option<KeyState>, DbError>;
    /// Records a key's standing (first use, allow, revoke).
    fn set_key(&self, key: &str, state: KeyState) -> Result<(), DbError>;
    /// Stores rows in one transaction; returns for each whether it was new (false: duplicate).
    fn insert(&self, rows: &[Row]) -> Result<Vec<bool>, DbError>;
    /// The stored envelope of `id`.
    fn envelope(&self, id: &str) -> Result<Option<String>, DbError>;
    /// Measurements matching `q`, in id order.
    fn query(&self, q: &Query) -> Result<Vec<Found>, DbError>;
    /// Every key with its state.
    fn keys(&self) -> Result<Vec<(String, String)>, DbError>;
    /// Up to `limit` rows that have rules to score them (web_connectivity and OONI's service
    /// tests, `vantage_probe::verdict::services::SERVICE_TESTS`) after `after` (id order):
    /// (id, source, envelope).
    fn page_for_rescore(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, DbError>;
    /// Replaces the stored verdict of one row, and sets its domain from `row.domain` when it
    /// has none (a service test's target, which rows imported before its rules lack).
    fn update_verdict(&self, row: &Row) -> Result<(), DbError>;
    /// The probe keys' rows of the signals of `cc` (one network, or all) in bins
    /// `[from_bin, to_bin)` (`detect::signals` turns them into the signals).
    fn probe_bins(
        &self,
        cc: &str,
        asn: Option<u32>,
        from_bin: i64,
        to_bin: i64,
    ) -> Result<Vec<ProbeBin>, DbError>;
    /// The verified contacts of `cc` (one network, or all) on days `[first_day, last_day]`
    /// (days since the epoch).
    fn vouches(
        &self,
        cc: &str,
        asn: Option<u32>,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vouches, DbError>;
    /// How the measurements `ids` (an event's evidence, at most
    /// [`model::MAX_ARRIVAL_IDS`] read) reached the aggregator: per route, how many, when the
    /// first and the last were received, and how many before `end` (epoch seconds; all of
    /// them when `None`). One grouped query, in route order.
    fn arrivals(&self, ids: &[String], end: Option<i64>) -> Result<Vec<model::Arrival>, DbError>;
    /// Countries heard from since a bin.
    fn active_countries(&self, from_bin: i64) -> Result<Vec<String>, DbError>;
    /// A country's networks heard from since a bin.
    fn recent_networks(&self, cc: &str, from_bin: i64) -> Result<Vec<u32>, DbError>;
    /// Every probe key's contacts with one network from `from_bin` on, by key, each key's in
    /// bin order. A stored row that makes no sense is left out rather than failing.
    fn contacts(&self, cc: &str, asn: u32, from_bin: i64) -> Result<Vec<ProbeContacts>, DbError>;
    /// Failed canary rounds of `cc` measured in `[from, to]` (epoch seconds), oldest first, at
    /// most 5,000: (measurement id, signer).
    fn failed_canaries(
        &self,
        cc: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Option<String>)>, DbError>;
    /// web_connectivity verdicts of `cc` measured since `from` that name a host.
    fn web_verdicts(&self, cc: &str, from: i64) -> Result<Vec<VerdictRow>, DbError>;
    /// Throttling verdicts of `cc` measured since `from`.
    fn throttling_verdicts(
        &self,
        cc: &str,
        from: i64,
    ) -> Result<Vec<ThrottlingObservation>, DbError>;
    /// The goodput of web_connectivity pages of `cc` measured since `from` (pages without one
    /// are left out).
    fn rate_samples(&self, cc: &str, from: i64) -> Result<Vec<RateSample>, DbError>;
    /// Stored events of `cc` of `kinds` that end at or after `from` or are ongoing.
    fn events_since(&self, cc: &str, from: i64, kinds: &[Kind]) -> Result<Vec<Event>, DbError>;
    /// Replaces the events of `cc` of `kinds` that start at or after `from` with `events`
    /// (whose ids are already set), at once: a reader sees the old set or the new one.
    fn replace_events(
        &self,
        cc: &str,
        from: i64,
        kinds: &[Kind],
        events: &[Event],
    ) -> Result<(), DbError>;
    /// Stored events of `q`, oldest first.
    fn timeline(&self, q: &TimelineQuery) -> Result<Vec<Event>, DbError>;
    /// Countries with signals: (cc, networks, events).
    fn countries(&self) -> Result<Vec<(String, i64, i64)>, DbError>;
    /// Records a heartbeat; false when the same one was already recorded. `verified`: it came
    /// from an address inside the network it claims (see `ingest::Origin`).
    fn heartbeat(
        &self,
        key: &str,
        cc: &str,
        asn: u32,
        sent_at: &str,
        verified: bool,
    ) -> Result<bool, DbError>;
    /// Heartbeats recorded for a country.
    fn heartbeat_count(&self, cc: &str) -> Result<u64, DbError>;
    /// Compresses the envelopes of up to `limit` rows received at or before `received_before`
    /// (seconds since the epoch), oldest first; returns how many it compressed (fewer than
    /// `limit`: nothing old enough is left).
    fn compact(&self, received_before: i64, limit: usize) -> Result<usize, DbError>;
    /// Takes or renews the detectors' lease for `node` at `now` (epoch seconds); true while
    /// `node` holds it. Another node's lease lapses `ttl_seconds` after its last renewal, so a
    /// node that dies hands over. A store that one process owns alone (SQLite) has no one to
    /// share with and always grants it.
    fn detector_lease(&self, node: &str, now: i64, ttl_seconds: i64) -> Result<bool, DbError> {
        let _ = (node, now, ttl_seconds);
        Ok(true)
    }
    /// Records a new one-time enrolment token by its SHA-256 (hex).
    fn add_token(&self, token_sha256: &str) -> Result<(), DbError>;
    /// Spends a token for `key` and trusts the key, in one transaction.
    fn redeem_token(&self, token_sha256: &str, key: &str) -> Result<Redeemed, DbError>;
    /// Up to `limit` stored measurements with ids after `after` (all when `None`), in id order,
    /// each as the [`Row`] it was stored from: the envelope byte for byte and the newest
    /// verdict. What copies one store into another (`vantage-aggregator migrate`) reads, a
    /// page at a time, so that no store is ever held in memory.
    fn rows_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Row>, DbError>;
    /// The stored measurements of `ids` (those that exist, in id order), as
    /// [`Storage::rows_page`] gives them: how a copy is checked against its source, one page
    /// of the source at a time.
    fn rows_of(&self, ids: &[&str]) -> Result<Vec<Row>, DbError>;
    /// When each of the stored measurements `ids` (those that exist) first reached this store,
    /// epoch seconds, as [`Storage::arrivals`] counts it. What a copy (`migrate`) carries with
    /// each page of [`Storage::rows_page`], so that an event's evidence keeps its arrival
    /// (docs/carry.md).
    fn received_of(&self, ids: &[&str]) -> Result<BTreeMap<String, i64>, DbError>;
    /// Stores rows as [`Storage::insert`] does, each received at `received[&row.id]` instead of
    /// now (now for one not there): how a copy keeps the source's times of
    /// [`Storage::received_of`]. A row already stored keeps its own.
    fn insert_received(
        &self,
        rows: &[Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<Vec<bool>, DbError>;
    /// How many measurements are stored (each once).
    fn measurement_count(&self) -> Result<u64, DbError>;
    /// Up to `limit` recorded heartbeats after `after` (key, `sent_at`) (all when `None`), in
    /// (key, `sent_at`) order, each once: what a copy replays through [`Storage::heartbeat`].
    fn heartbeats_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredHeartbeat>, DbError>;
    /// The record of the file `path` of `size` bytes imported by `import-ooni`, if there is
    /// one.
    fn imported_file(&self, path: &str, size: u64) -> Result<Option<ImportedFile>, DbError>;
    /// Records a file `import-ooni` read to its end (replacing an older record of it).
    fn record_imported_file(&self, file: &ImportedFile) -> Result<(), DbError>;
    /// Records heartbeats as [`Storage::heartbeat`] does, each skipped when already recorded;
    /// returns how many were new. For copying a store: a store that answers each statement
    /// over the network (ClickHouse) does a page in two, instead of two per heartbeat, and both
    /// stores keep each one's `received_at` (this default, for a store that cannot, does not).
    fn record_heartbeats(&self, beats: &[StoredHeartbeat]) -> Result<usize, DbError> {
        let mut new = 0;
        for b in beats {
            if self.heartbeat(&b.key, &b.cc, b.asn, &b.sent_at, b.verified)? {
                new += 1;
            }
        }
        Ok(new)
    }
    /// The store's transparency log (`docs/transparency.md`), or why it keeps none. A store
    /// that keeps one appends every signed measurement to it in the transaction that stores
    /// it, whichever method stores it.
    fn log(&self) -> Result<&dyn log::LogStore, log::NoLog> {
        Err(log::NoLog::NotInThisStore)
    }
}

/// A file `import-ooni` read to its end, as it records it so that the next import skips it:
/// the file's path relative to the tree it was found in (or as given, for a file named on its
/// own), its size, and what it held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportedFile {
    /// Path relative to the tree given (`raw/20240101/00/IT/webconnectivity/x.jsonl.gz`).
    pub path: String,
    /// Size in bytes as it is on disk (compressed): a file of the same path and another size
    /// is another file.
    pub size: u64,
    /// Measurements read from it.
    pub measurements: u64,
    /// Of those, stored for the first time.
    pub stored: u64,
    /// Of those, already stored.
    pub duplicate: u64,
    /// Lines, elements or documents that were not measurements.
    pub skipped: u64,
    /// Measurements per test name, as a JSON object (`{"web_connectivity":120}`).
    pub tests: String,
}

/// One recorded heartbeat, as [`Storage::heartbeat`] took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHeartbeat {
    /// The probe key.
    pub key: String,
    /// Country.
    pub cc: String,
    /// ASN number.
    pub asn: u32,
    /// When the probe sent it (`YYYY-MM-DD HH:MM:SS`).
    pub sent_at: String,
    /// It came from an address inside the network it claims.
    pub verified: bool,
    /// When it reached an aggregator (epoch seconds), as the store recorded it
    /// ([`Storage::heartbeats_page`]); `None` for one arriving now, which the store stamps with
    /// its clock. A copy (`migrate`) keeps the source's, so that a heartbeat that reached the
    /// source in flight counts at its arrival in the copy too ([`heartbeat_contact`]).
    pub received_at: Option<i64>,
}

/// What spending an enrolment token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The key is now trusted.
    Enrolled,
    /// The token was already spent by this same key (a retried request): still trusted.
    AlreadyEnrolled,
    /// The token was spent by another key.
    Spent,
    /// No such token.
    Unknown,
    /// The key is revoked; a token does not bring it back.
    Revoked,
}

/// The test names with rules: web_connectivity, OONI's service tests
/// (`vantage_probe::verdict::services`) and the probe's quic test (`ingest::quic`). `rescore`
/// rescores them, and the blocking detector reads their verdicts (a service test's row names
/// the service, `whatsapp`, `tor`, ..., or a host as its domain; a quic row names `quic`).
pub(crate) fn scored_tests() -> impl Iterator<Item = &'static str> {
    std::iter::once(vantage_probe::ooni::WEB_CONNECTIVITY)
        .chain(
            vantage_probe::verdict::services::SERVICE_TESTS
                .iter()
                .copied(),
        )
        .chain(std::iter::once(vantage_probe::quic::QUIC))
}

/// [`scored_tests`] as an SQL list of string literals (constant names, quoted here once for
/// both stores).
pub(crate) fn scored_tests_sql() -> String {
    scored_tests()
        .map(|t| format!("'{}'", t.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds since the epoch: the one clock of received_at, compaction and signal defaults.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// How late a heartbeat may reach us and still be a probe's heartbeat in flight rather than one
/// from a probe whose clock is off: the daemon gives each heartbeat its upload timeout, capped
/// at the heartbeat interval (probe/src/daemon/mod.rs; 30 s and 60 s by default), and sends none
/// later.
pub const HEARTBEAT_IN_FLIGHT_SECONDS: i64 = 60;

/// The moment heartbeat stamped `sent` (the probe's clock) and received at `received` (ours)
/// shows its probe connected: when it reached us. A heartbeat signed during a cut whose
/// connection got through only when the link came back (TCP retries its SYN for seconds)
/// proves nothing about the cut; stamped with its signing time, it closed the probe's gap
/// seconds early, so a cut just longer than `min_gap_seconds` lost that probe, and with it
/// its failed canaries from the shutdown's evidence (docs/detection.md). A heartbeat that
/// arrives later than [`HEARTBEAT_IN_FLIGHT_SECONDS`] after its stamp, or before it, comes from
/// a probe whose clock is off (or is copied by `migrate`): its stamp stands, as before.
pub fn heartbeat_contact(sent: i64, received: i64) -> i64 {
    if (0..=HEARTBEAT_IN_FLIGHT_SECONDS).contains(&received.saturating_sub(sent)) {
        received
    } else {
        sent
    }
}

/// Where the data lives, as `serve --store` and `migrate --from/--to` name it:
/// `sqlite:FILE` (or a bare file path) or `clickhouse://HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One embedded SQLite file.
    Sqlite(std::path::PathBuf),
    /// A ClickHouse database over its HTTP interface, shareable by several nodes.
    ClickHouse(String),
}

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(text: &str) -> Result<Location, String> {
        if text.starts_with("clickhouse://") {
            Ok(Location::ClickHouse(text.to_string()))
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a file, as in sqlite:/var/lib/vantage/agg.db".into());
            }
            Ok(Location::Sqlite(path.into()))
        } else if text.contains("://") {
            Err(format!(
                "{text:?}: the stores are sqlite:FILE and clickhouse://HOST:PORT/DB"
            ))
        } else if text.is_empty() {
            Err("an empty store location".into())
        } else {
            Ok(Location::Sqlite(text.into()))
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::ClickHouse(url) => f.write_str(url),
        }
    }
}

impl Location {
    /// Opens (creating and migrating as needed) the store.
    pub fn open(&self) -> Result<std::sync::Arc<dyn Storage>, DbError> {
        self.open_with_log(true)
    }

    /// [`Location::open`], keeping the transparency log or not (`serve --no-log`: the SQLite
    /// store then appends nothing, and catches up on the next start with the log).
    pub fn open_with_log(&self, log: bool) -> Result<std::sync::Arc<dyn Storage>, DbError> {
        Ok(match self {
            Location::Sqlite(path) if log => std::sync::Arc::new(Sqlite::open(path)?),
            Location::Sqlite(path) => std::sync::Arc::new(Sqlite::open_without_log(path)?),
            Location::ClickHouse(url) if log => {
                std::sync::Arc::new(clickhouse::ClickHouse::open(url)?)
            }
            Location::ClickHouse(url) => {
                std::sync::Arc::new(clickhouse::ClickHouse::open_without_log(url)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_shows_its_probe_connected_when_it_reached_us_unless_the_clock_is_off() {
        let sent = 1_767_571_200;
        // In flight: signed during a cut, through when the link came back.
        assert_eq!(heartbeat_contact(sent, sent + 7), sent + 7);
        assert_eq!(heartbeat_contact(sent, sent), sent);
        assert_eq!(
            heartbeat_contact(sent, sent + HEARTBEAT_IN_FLIGHT_SECONDS),
            sent + HEARTBEAT_IN_FLIGHT_SECONDS
        );
        // Later than any heartbeat is in flight, or stamped ahead of our clock: the probe's
        // clock is off, and its stamp stands.
        assert_eq!(
            heartbeat_contact(sent, sent + HEARTBEAT_IN_FLIGHT_SECONDS + 1),
            sent
        );
        assert_eq!(heartbeat_contact(sent, sent - 5), sent);
        // Stamps at the ends of time do not overflow.
        assert_eq!(heartbeat_contact(i64::MIN, i64::MAX), i64::MIN);
        assert_eq!(heartbeat_contact(i64::MAX, i64::MIN), i64::MAX);
    }
}
