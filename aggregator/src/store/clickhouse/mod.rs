//! ClickHouse storage: several aggregator nodes on one database, for fleets and archives one
//! SQLite file cannot hold (`serve --store clickhouse://HOST:PORT/DB`).
//!
//! # The client
//! ClickHouse's HTTP interface (<https://clickhouse.com/docs/en/interfaces/http>) through
//! `ureq`, a small synchronous client without TLS: the storage trait is synchronous and the
//! server calls it from blocking threads, so an async client (the `clickhouse` crate) would
//! need a private runtime inside every call for nothing; and plain HTTP with JSONEachRow is
//! what every ClickHouse version speaks, Debian's 18.16 included, whose lack of
//! RowBinaryWithNamesAndTypes the `clickhouse` crate's validation trips on. Each statement is
//! one POST whose body is the SQL (and, for an insert, the rows after `FORMAT JSONEachRow`).
//! Values are written into the SQL as quoted literals ([`client::quote`]): 18.16 has no `{p:Type}`
//! query parameters.
//!
//! # What runs on 18.16 and on current ClickHouse
//! Only what both have: `ReplacingMergeTree`, `FINAL`, `argMax`, `Nullable`, `PARTITION BY`
//! an expression, JSONEachRow in and out; no `DateTime64`, `Map`, `Bool`, `TTL`, `CODEC`,
//! skip indexes, `DELETE FROM`, window functions, JSON functions or query parameters. Times stay
//! the OONI text (`YYYY-MM-DD HH:MM:SS`, UTC) they are in SQLite, which sorts as time does, so
//! the same `since`/`until` text compares the same way in both stores; tables are partitioned
//! by its month (`substring(measured_at, 1, 7)`, which a malformed time cannot make fail).
//!
//! # No transactions: what replaces them
//! - Duplicates: a measurement's id is the SHA-256 of its bytes, and every table keyed by an id
//!   is a `ReplacingMergeTree` ordered by columns that the id determines, so two copies of one
//!   measurement (two nodes that each found it new at once) are one row after a merge, and
//!   every read uses `FINAL` or groups by the key before that. Verdict changes insert a new
//!   version of the row (`version`): `ALTER ... UPDATE` is an asynchronous mutation.
//! - Filters on the columns a new version can change (verdicts) are applied outside the
//!   `FINAL` subquery: a filter inside may be evaluated before `FINAL` picks the newest
//!   version (`PREWHERE`) and find an old verdict.
//! - Enrolment tokens and the detector lease: insert, then read back who came first; see
//!   [`ClickHouse::redeem_token`] and [`ClickHouse::try_lease`] for what a race can do.
//! - Signals: SQLite adds each measurement and heartbeat to its probe's bin in the transaction
//!   that stores it; here the bins, contacts and verified contacts are grouped at read time from
//!   each measurement's newest version and each heartbeat once, with what SQL cannot read from
//!   the row (its time in seconds, a canary's counts, the verdict's goodput) stored beside it
//!   at insert. See `ClickHouse::bin_rows`.
//! - Events: a replaced event is a newer version with `deleted = 1`, written in the same
//!   INSERT as its replacements (`replace_events`), so a reader sees the old set or the new.
//! - The transparency log: stored entries are queued, and one node at a time (the log's
//!   lease) appends them to the tree; see `log`.

mod client;
mod commit;
mod lease;
mod log;
mod rows;
mod schema;
mod search;
mod signals;
#[cfg(test)]
mod test_support;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{
    COUNTER_MAX, Contact, Event, Kind, NO_KEY, ProbeBin, ProbeContacts, RateSample, Scope,
    ThrottlingObservation, TimelineQuery, VerdictRow, Vouches, format_time, parse_time,
};
use super::{
    DbError, Found, ImportedFile, KeyState, Query, Redeemed, Row, Storage, StoredHeartbeat,
    heartbeat_contact, now,
};
use client::{CONNECT_TIMEOUT, STATEMENT_TIMEOUT, parse_address, quote};
use lease::REDEEM_SETTLE;
use rows::{STORED_COLUMNS, StoredRow};
use signals::{
    EventRow, bin_sql, domain_measurements, domain_measurements_of, newest_measurements,
    unique_heartbeats,
};

/// The ClickHouse store: one database on one server (or a cluster's entry point), over HTTP.
#[derive(Debug)]
pub struct ClickHouse {
    agent: ureq::Agent,
    /// `http://HOST:PORT/`.
    endpoint: String,
    /// `HOST:PORT/DB`, for error messages.
    at: String,
    db: String,
    /// The uploads waiting to be written together.
    commits: commit::Commits,
    /// Whether stored entries are queued for the transparency log (not with `serve --no-log`).
    logging: bool,
    /// This process's name in the log's lease: random, so two nodes never share one.
    node: String,
    /// The log's sequencer, when this node runs it (`log`).
    sequencer: std::sync::Mutex<log::Sequencer>,
    /// The server's clock as this node reckons it, for the log's queue (`log`).
    clock: log::Clock,
}

/// Microseconds since the epoch: versions and the order of token redemptions.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl ClickHouse {
    /// Connects to `clickhouse://HOST:PORT/DB`, creates the database if missing and runs the
    /// migrations it has not recorded yet.
    pub fn open(url: &str) -> Result<ClickHouse, DbError> {
        ClickHouse::open_logging(url, true)
    }

    /// [`ClickHouse::open`] for a node that keeps no transparency log (`serve --no-log`):
    /// what it stores is not queued for the log, and its routes answer that there is none.
    pub fn open_without_log(url: &str) -> Result<ClickHouse, DbError> {
        ClickHouse::open_logging(url, false)
    }

    fn open_logging(url: &str, logging: bool) -> Result<ClickHouse, DbError> {
        let address = parse_address(url).map_err(|message| DbError::ClickHouse {
            at: url.to_string(),
            op: "reading the store address".into(),
            message,
        })?;
        let config = ureq::Agent::config_builder()
            // A ClickHouse error is an HTTP status with the message in the body: read it.
            .http_status_as_error(false)
            // The database is reached directly; a proxy from the environment is not for it.
            .proxy(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(STATEMENT_TIMEOUT))
            .build();
        let db = ClickHouse {
            agent: ureq::Agent::new_with_config(config),
            endpoint: format!("http://{}:{}/", address.host, address.port),
            at: format!("{}:{}/{}", address.host, address.port, address.db),
            db: address.db,
            commits: commit::Commits::default(),
            logging,
            node: node_name(),
            sequencer: std::sync::Mutex::default(),
            clock: log::Clock::default(),
        };
        db.migrate()?;
        Ok(db)
    }

    /// The `(probe_cc, measured_at, id)` tuples of the stored ids, as a list for `IN (...)`,
    /// read from `envelopes` (its primary index) so that the reads of `measurements` after it
    /// go by that table's whole sorting key; `None` when none of the ids is stored.
    fn sorting_keys(&self, op: &str, ids: &[impl AsRef<str>]) -> Result<Option<String>, DbError> {
        #[derive(Deserialize)]
        struct K {
            id: String,
            cc: String,
            at: String,
        }
        let list = ids
            .iter()
            .map(|id| quote(id.as_ref()))
            .collect::<Vec<_>>()
            .join(",");
        let keys: Vec<K> = self.rows(
            op,
            &format!(
                "SELECT id, any(probe_cc) AS cc, any(measured_at) AS at
                 FROM envelopes WHERE id IN ({list}) GROUP BY id"
            ),
        )?;
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            keys.iter()
                .map(|k| format!("({},{},{})", quote(&k.cc), quote(&k.at), quote(&k.id)))
                .collect::<Vec<_>>()
                .join(","),
        ))
    }
}

/// A random name for this process in the log's lease.
fn node_name() -> String {
    let mut random = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!("{}-{}", std::process::id(), client::hex(&random))
}

/// Every method of the trait is the inherent one of the same name above, or, for what the
/// signals and the detectors read, grouped from the stored rows here with the semantics of
/// SQLite's (`store/sqlite/signals.rs`, `store/sqlite/detect.rs`).
impl Storage for ClickHouse {
    /// A key's standing, `None` when never seen.
    fn key_state(&self, key: &str) -> Result<Option<KeyState>, DbError> {
        #[derive(Deserialize)]
        struct S {
            st: String,
        }
        let rows: Vec<S> = self.rows(
            "reading a key's state",
            &format!(
                "SELECT argMax(state, version) AS st FROM probe_keys WHERE key = {} GROUP BY key",
                quote(key)
            ),
        )?;
        Ok(rows.into_iter().next().map(|s| {
            if s.st == KeyState::Revoked.as_str() {
                KeyState::Revoked
            } else {
                KeyState::Trusted
            }
        }))
    }

    /// Records a key's standing (first use, allow, revoke), keeping when it was first seen.
    fn set_key(&self, key: &str, state: KeyState) -> Result<(), DbError> {
        #[derive(Deserialize)]
        struct Prev {
            fs: i64,
            v: u64,
        }
        let prev: Option<Prev> = self
            .rows(
                "reading a key's state",
                &format!(
                    "SELECT argMax(first_seen, version) AS fs, max(version) AS v FROM probe_keys
                     WHERE key = {} GROUP BY key",
                    quote(key)
                ),
            )?
            .into_iter()
            .next();
        #[derive(Serialize)]
        struct K<'a> {
            key: &'a str,
            state: &'a str,
            first_seen: i64,
            last_seen: i64,
            version: u64,
        }
        let t = now();
        let row = K {
            key,
            state: state.as_str(),
            first_seen: prev.as_ref().map_or(t, |p| p.fs),
            last_seen: t,
            version: prev.map_or(0, |p| p.v.saturating_add(1)).max(now_micros()),
        };
        self.insert_rows("recording a key's state", "probe_keys", &[row])
    }

    /// Stores rows; returns for each whether it was new (false: a duplicate, stored before or
    /// earlier in `rows`). Uploads that arrive together are written together (`commit`).
    fn insert(&self, rows: &[Row]) -> Result<Vec<bool>, DbError> {
        self.insert_grouped(rows)
    }

    /// Stores rows at once, without waiting to join other uploads (`commit`): a copy
    /// (`migrate`) is the only writer of its process, and its pages are already large.
    fn insert_received(
        &self,
        rows: &[Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<Vec<bool>, DbError> {
        self.insert_now(rows, received)
    }

    /// The stored envelope of `id`, byte for byte.
    fn envelope(&self, id: &str) -> Result<Option<String>, DbError> {
        #[derive(Deserialize)]
        struct E {
            envelope: String,
        }
        let rows: Vec<E> = self.rows(
            "reading an envelope",
            &format!(
                "SELECT envelope FROM envelopes WHERE id = {} LIMIT 1",
                quote(id)
            ),
        )?;
        Ok(rows.into_iter().next().map(|e| e.envelope))
    }

    /// The researcher search: the filters of SQLite's, in time order (`measured_at`, then id),
    /// each measurement once (its newest verdict), paged by [`Found::cursor`]. See [`search`].
    fn query(&self, q: &Query) -> Result<Vec<Found>, DbError> {
        self.search(q)
    }

    /// Every key with its state, oldest first.
    fn keys(&self) -> Result<Vec<(String, String)>, DbError> {
        #[derive(Deserialize)]
        struct K {
            key: String,
            st: String,
        }
        let rows: Vec<K> = self.rows(
            "listing keys",
            "SELECT key, argMax(state, version) AS st, argMax(first_seen, version) AS fs
             FROM probe_keys GROUP BY key ORDER BY fs, key",
        )?;
        Ok(rows.into_iter().map(|k| (k.key, k.st)).collect())
    }

    /// Up to `limit` web_connectivity rows after `after` (id order): (id, source, envelope).
    fn page_for_rescore(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, DbError> {
        #[derive(Deserialize)]
        struct M {
            id: String,
            src: String,
        }
        #[derive(Deserialize)]
        struct E {
            id: String,
            env: String,
        }
        let page: Vec<M> = self.rows(
            "reading measurements to rescore",
            &format!(
                "SELECT id, any(source) AS src FROM measurements
                 WHERE test_name IN ({}) AND id > {} GROUP BY id ORDER BY id LIMIT {limit}",
                super::scored_tests_sql(),
                quote(after)
            ),
        )?;
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let list = page
            .iter()
            .map(|m| quote(&m.id))
            .collect::<Vec<_>>()
            .join(",");
        let mut envelopes: std::collections::HashMap<String, String> = self
            .rows::<E>(
                "reading envelopes to rescore",
                &format!(
                    "SELECT id, any(envelope) AS env FROM envelopes WHERE id IN ({list}) GROUP BY id"
                ),
            )?
            .into_iter()
            .map(|e| (e.id, e.env))
            .collect();
        Ok(page
            .into_iter()
            .filter_map(|m| {
                let env = envelopes.remove(&m.id)?;
                Some((m.id, m.src, env))
            })
            .collect())
    }

    /// Replaces the stored verdict of one row (`blocking`, `accessible`, `confirmed`,
    /// `rule_set`, `verdict` of `row`; the rest is kept): a new version of the stored row.
    fn update_verdict(&self, row: &Row) -> Result<(), DbError> {
        let op = "updating a verdict";
        #[derive(Deserialize)]
        struct Place {
            probe_cc: String,
            measured_at: String,
        }
        let Some(place) = self
            .rows::<Place>(
                op,
                &format!(
                    "SELECT probe_cc, measured_at FROM envelopes WHERE id = {} LIMIT 1",
                    quote(&row.id)
                ),
            )?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let Some(mut stored) = self
            .rows::<StoredRow>(
                op,
                &format!(
                    "SELECT {STORED_COLUMNS} FROM measurements FINAL
                     WHERE probe_cc = {} AND measured_at = {} AND id = {}",
                    quote(&place.probe_cc),
                    quote(&place.measured_at),
                    quote(&row.id)
                ),
            )?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        stored.blocking = row.blocking.clone();
        stored.accessible = row.accessible.map(u8::from);
        stored.confirmed = u8::from(row.confirmed);
        stored.rule_set = row.rule_set.clone();
        stored.verdict = row.verdict.clone();
        if stored.domain.is_none() {
            stored.domain = row.domain.clone();
        }
        stored.set_goodput();
        stored.version = stored.version.saturating_add(1).max(now_micros());
        self.insert_rows(op, "measurements", &[stored])
    }

    fn probe_bins(
        &self,
        cc: &str,
        asn: Option<u32>,
        from_bin: i64,
        to_bin: i64,
    ) -> Result<Vec<ProbeBin>, DbError> {
        let rows = self.bin_rows(
            cc,
            asn,
            ClickHouse::bin_start(from_bin),
            ClickHouse::bin_start(to_bin),
        )?;
        Ok(rows
            .into_iter()
            .map(|r| ProbeBin {
                bin: r.bin,
                asn: r.asn,
                key: r.key,
                online: r.first_up.is_some(),
                heartbeats: r.hb,
                canary_ok: r.cok,
                canary_checks: r.cchk,
                measurements: r.m,
                anomalies: [r.a0, r.a1, r.a2, r.a3],
            })
            .collect())
    }

    fn vouches(
        &self,
        cc: &str,
        asn: Option<u32>,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vouches, DbError> {
        #[derive(Deserialize)]
        struct V {
            key: String,
            asn: u32,
            first_at: i64,
            last_at: i64,
        }
        let asn_filter = asn.map_or(String::new(), |a| format!(" AND asn = {a}"));
        let rows: Vec<V> = self.rows(
            "reading verified contacts",
            &format!(
                "SELECT key, asn, {day} AS day, min(at) AS first_at, max(at) AS last_at FROM (
                     SELECT assumeNotNull(probe_key) AS key, probe_asn AS asn,
                         ifNull(ts, 0) AS at
                     FROM {meas} WHERE isNotNull(probe_key) AND network_verified = 1
                         AND isNotNull(ts)
                     UNION ALL
                     SELECT probe_key AS key, probe_asn AS asn, ifNull(sent_ts, 0) AS at
                     FROM {hbs} WHERE network_verified = 1 AND isNotNull(sent_ts)
                 ) WHERE day >= {first_day} AND day <= {last_day}{asn_filter}
                 GROUP BY key, asn, day",
                day = bin_sql("at", 86_400),
                meas = newest_measurements(cc, ""),
                hbs = unique_heartbeats(cc),
            ),
        )?;
        let mut vouches = Vouches::default();
        for v in rows {
            vouches.add(&v.key, v.asn, v.first_at, v.last_at);
        }
        Ok(vouches)
    }

    fn active_countries(&self, from_bin: i64) -> Result<Vec<String>, DbError> {
        #[derive(Deserialize)]
        struct C {
            cc: String,
        }
        let from = ClickHouse::bin_start(from_bin);
        let rows: Vec<C> = self.rows(
            "listing active countries",
            &format!(
                "SELECT DISTINCT cc FROM (
                     SELECT probe_cc AS cc FROM measurements WHERE isNotNull(ts) AND ts >= {from}
                     UNION ALL
                     SELECT probe_cc AS cc FROM heartbeats
                     WHERE isNotNull(sent_ts) AND sent_ts >= {from}
                 ) ORDER BY cc"
            ),
        )?;
        Ok(rows.into_iter().map(|c| c.cc).collect())
    }

    fn recent_networks(&self, cc: &str, from_bin: i64) -> Result<Vec<u32>, DbError> {
        #[derive(Deserialize)]
        struct A {
            asn: u32,
        }
        let from = ClickHouse::bin_start(from_bin);
        let rows: Vec<A> = self.rows(
            "listing a country's recent networks",
            &format!(
                "SELECT DISTINCT asn FROM (
                     SELECT probe_asn AS asn FROM measurements
                     WHERE probe_cc = {cc} AND isNotNull(ts) AND ts >= {from}
                     UNION ALL
                     SELECT probe_asn AS asn FROM heartbeats
                     WHERE probe_cc = {cc} AND isNotNull(sent_ts) AND sent_ts >= {from}
                 ) ORDER BY asn",
                cc = quote(cc)
            ),
        )?;
        Ok(rows.into_iter().map(|a| a.asn).collect())
    }

    fn contacts(&self, cc: &str, asn: u32, from_bin: i64) -> Result<Vec<ProbeContacts>, DbError> {
        let rows = self.bin_rows(cc, Some(asn), ClickHouse::bin_start(from_bin), i64::MAX)?;
        let mut by_probe: std::collections::BTreeMap<String, Vec<Contact>> =
            std::collections::BTreeMap::new();
        for r in rows {
            if r.key == NO_KEY {
                continue;
            }
            by_probe.entry(r.key).or_default().push(Contact {
                bin: r.bin,
                up: r.first_up.zip(r.last_up),
                down: u32::try_from(r.down.clamp(0, COUNTER_MAX)).unwrap_or(u32::MAX),
            });
        }
        // Each key's contacts are in bin order: the rows are ordered by bin.
        Ok(by_probe
            .into_iter()
            .map(|(key, contacts)| ProbeContacts { key, asn, contacts })
            .collect())
    }

    fn failed_canaries(
        &self,
        cc: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Option<String>)>, DbError> {
        #[derive(Deserialize)]
        struct F {
            id: String,
            probe_key: Option<String>,
        }
        let rows: Vec<F> = self.rows(
            "reading failed canaries",
            &format!(
                "SELECT id, probe_key FROM {}
                 WHERE ifNull(accessible, 2) = 0 ORDER BY measured_at, id LIMIT 5000",
                newest_measurements(
                    cc,
                    &format!(
                        " AND measured_at >= {} AND measured_at <= {} AND test_name = 'canary'",
                        quote(&format_time(from)),
                        quote(&format_time(to))
                    )
                )
            ),
        )?;
        Ok(rows.into_iter().map(|f| (f.id, f.probe_key)).collect())
    }

    fn web_verdicts(&self, cc: &str, from: i64) -> Result<Vec<VerdictRow>, DbError> {
        #[derive(Deserialize)]
        struct W {
            probe_asn: u32,
            domain: String,
            at: i64,
            blocking: Option<String>,
            probe_key: Option<String>,
            id: String,
        }
        let rows: Vec<W> = self.rows(
            "reading web verdicts",
            &format!(
                "SELECT probe_asn, assumeNotNull(domain) AS domain, ifNull(ts, 0) AS at,
                     blocking, probe_key, id
                 FROM {} ORDER BY measured_at, id",
                domain_measurements_of(cc, &crate::store::scored_tests().collect::<Vec<_>>(), from)
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|w| VerdictRow {
                asn: w.probe_asn,
                domain: w.domain,
                at: w.at,
                blocking: w.blocking,
                probe_key: w.probe_key,
                id: w.id,
            })
            .collect())
    }

    fn throttling_verdicts(
        &self,
        cc: &str,
        from: i64,
    ) -> Result<Vec<ThrottlingObservation>, DbError> {
        #[derive(Deserialize)]
        struct T {
            probe_asn: u32,
            domain: String,
            at: i64,
            blocking: Option<String>,
            verdict: Option<String>,
            probe_key: Option<String>,
            id: String,
        }
        let rows: Vec<T> = self.rows(
            "reading throttling verdicts",
            &format!(
                "SELECT probe_asn, assumeNotNull(domain) AS domain, ifNull(ts, 0) AS at,
                     blocking, verdict, probe_key, id
                 FROM {} ORDER BY measured_at, id",
                domain_measurements(cc, "throttling", from)
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|t| {
                ThrottlingObservation::of_verdict(
                    t.probe_asn,
                    t.domain,
                    t.at,
                    t.blocking.as_deref(),
                    t.verdict.as_deref(),
                    t.probe_key.unwrap_or_default(),
                    t.id,
                )
            })
            .collect())
    }

    fn rate_samples(&self, cc: &str, from: i64) -> Result<Vec<RateSample>, DbError> {
        #[derive(Deserialize)]
        struct S {
            probe_asn: u32,
            domain: String,
            at: i64,
            probe_key: Option<String>,
            id: String,
            kbps: f64,
            below: Option<u8>,
        }
        let rows: Vec<S> = self.rows(
            "reading rate samples",
            &format!(
                "SELECT probe_asn, assumeNotNull(domain) AS domain, ifNull(ts, 0) AS at,
                     probe_key, id, assumeNotNull(goodput_kbps) AS kbps, below_control AS below
                 FROM {} WHERE isNotNull(goodput_kbps) ORDER BY measured_at, id",
                domain_measurements(cc, "web_connectivity", from)
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|s| RateSample {
                asn: s.probe_asn,
                domain: s.domain,
                at: s.at,
                probe: s.probe_key.unwrap_or_default(),
                id: s.id,
                kbps: s.kbps,
                below_control: s.below.map(|b| b != 0),
            })
            .collect())
    }

    fn events_since(&self, cc: &str, from: i64, kinds: &[Kind]) -> Result<Vec<Event>, DbError> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let names = kinds
            .iter()
            .map(|k| quote(k.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let rows = self.live_events(
            Some(cc),
            &format!(" AND kind IN ({names}) AND ifNull(end_at, {from}) >= {from}"),
        )?;
        // Kind by kind, as SQLite answers; a body that no longer reads as an event is left out.
        let mut out = Vec::new();
        for kind in kinds {
            for r in rows.iter().filter(|r| r.kind == kind.as_str()) {
                if let Ok(e) = serde_json::from_str::<Event>(&r.body) {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Without transactions, the replacement is one INSERT (one part, which a reader sees
    /// whole or not at all): a deleted version of each replaced event and the new events one
    /// version above it, both above every version stored for the country, so the newest
    /// version of each id is the new set's.
    fn replace_events(
        &self,
        cc: &str,
        from: i64,
        kinds: &[Kind],
        events: &[Event],
    ) -> Result<(), DbError> {
        let op = "replacing events";
        let stored: Vec<EventRow> = self.rows(
            op,
            &format!(
                "SELECT id, cc, kind, start, end_at, '' AS body, deleted, version
                 FROM events FINAL WHERE cc = {}",
                quote(cc)
            ),
        )?;
        let top = stored.iter().map(|r| r.version).max().unwrap_or(0);
        let version = top.saturating_add(1).max(now_micros());
        let mut rows: Vec<EventRow> = stored
            .into_iter()
            .filter(|r| {
                r.deleted == 0 && r.start >= from && kinds.iter().any(|k| k.as_str() == r.kind)
            })
            .map(|r| EventRow {
                deleted: 1,
                version,
                ..r
            })
            .collect();
        for e in events {
            let body = serde_json::to_string(e)
                .map_err(|err| self.error(op, format!("encoding event {}: {err}", e.id)))?;
            rows.push(EventRow {
                id: e.id.clone(),
                cc: cc.to_string(),
                kind: e.kind.as_str().to_string(),
                start: e.start_secs(),
                end_at: e.end_secs(),
                body,
                deleted: 0,
                version: version.saturating_add(1),
            });
        }
        self.insert_rows(op, "events", &rows)
    }

    fn timeline(&self, q: &TimelineQuery) -> Result<Vec<Event>, DbError> {
        let mut filter = format!(
            " AND start < {} AND ifNull(end_at, {since}) >= {since}",
            q.until,
            since = q.since
        );
        if let Some(kind) = q.kind {
            filter.push_str(&format!(" AND kind = {}", quote(kind.as_str())));
        }
        let cc = q.cc.as_deref().map(str::to_ascii_uppercase);
        let rows = self.live_events(cc.as_deref(), &filter)?;
        let asn = q.asn.map(|a| format!("AS{a}"));
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_str::<Event>(&r.body).ok())
            .filter(|e| match &asn {
                None => true,
                Some(a) => {
                    e.scope == Scope::Full
                        || e.entity.asn.as_deref() == Some(a.as_str())
                        || e.entity.asns.contains(a)
                }
            })
            .collect())
    }

    fn countries(&self) -> Result<Vec<(String, i64, i64)>, DbError> {
        #[derive(Deserialize)]
        struct C {
            cc: String,
            n: u64,
        }
        let networks: Vec<C> = self.rows(
            "listing countries",
            "SELECT cc, uniqExact(asn) AS n FROM (
                 SELECT probe_cc AS cc, probe_asn AS asn FROM measurements WHERE isNotNull(ts)
                 UNION ALL
                 SELECT probe_cc AS cc, probe_asn AS asn FROM heartbeats WHERE isNotNull(sent_ts)
             ) GROUP BY cc ORDER BY cc",
        )?;
        let mut events: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for e in self.live_events(None, "")? {
            *events.entry(e.cc).or_default() += 1;
        }
        Ok(networks
            .into_iter()
            .map(|c| {
                let n = events.get(&c.cc).copied().unwrap_or(0);
                (c.cc, i64::try_from(c.n).unwrap_or(i64::MAX), n)
            })
            .collect())
    }

    /// Records a heartbeat; false when the same one (key, `sent_at`) was already recorded.
    fn heartbeat(
        &self,
        key: &str,
        cc: &str,
        asn: u32,
        sent_at: &str,
        verified: bool,
    ) -> Result<bool, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let seen = self
            .rows::<N>(
                "checking a heartbeat",
                &format!(
                    "SELECT count() AS n FROM heartbeats WHERE probe_key = {} AND sent_at = {}",
                    quote(key),
                    quote(sent_at)
                ),
            )?
            .first()
            .is_some_and(|r| r.n > 0);
        if seen {
            return Ok(false);
        }
        #[derive(Serialize)]
        struct H<'a> {
            probe_key: &'a str,
            probe_cc: &'a str,
            probe_asn: u32,
            sent_at: &'a str,
            received_at: i64,
            network_verified: u8,
            sent_ts: Option<i64>,
        }
        let received_at = now();
        self.insert_rows(
            "recording a heartbeat",
            "heartbeats",
            &[H {
                probe_key: key,
                probe_cc: cc,
                probe_asn: asn,
                sent_at,
                received_at,
                network_verified: u8::from(verified),
                // The moment it shows the key connected, which every reader of `sent_ts`
                // (signals, vouches, active networks) wants: as SQLite's signals record it.
                sent_ts: parse_time(sent_at).map(|s| heartbeat_contact(s, received_at)),
            }],
        )?;
        Ok(true)
    }

    /// Heartbeats recorded for a country, each (key, `sent_at`) once.
    fn heartbeat_count(&self, cc: &str) -> Result<u64, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        Ok(self
            .rows::<N>(
                "counting heartbeats",
                &format!(
                    "SELECT uniqExact(probe_key, sent_at) AS n FROM heartbeats WHERE probe_cc = {}",
                    quote(cc)
                ),
            )?
            .first()
            .map_or(0, |r| r.n))
    }

    /// Nothing to do: ClickHouse compresses every column itself (LZ4 by default), envelopes
    /// included, as it writes them.
    fn compact(&self, _received_before: i64, _limit: usize) -> Result<usize, DbError> {
        Ok(0)
    }

    fn detector_lease(&self, node: &str, now: i64, ttl_seconds: i64) -> Result<bool, DbError> {
        self.try_lease(node, now, ttl_seconds)
    }

    /// The log, whose leaves the node holding the log's lease appends (`log`).
    fn log(&self) -> Result<&dyn super::log::LogStore, super::log::NoLog> {
        if self.logging {
            Ok(self)
        } else {
            Err(super::log::NoLog::Disabled)
        }
    }

    /// Records a new one-time enrolment token by its SHA-256 (hex).
    fn add_token(&self, token_sha256: &str) -> Result<(), DbError> {
        #[derive(Serialize)]
        struct T<'a> {
            token_sha256: &'a str,
            created_at: i64,
        }
        self.insert_rows(
            "recording an enrolment token",
            "enrolment_tokens",
            &[T {
                token_sha256,
                created_at: now(),
            }],
        )
    }

    /// Spends a token for `key` and trusts the key.
    ///
    /// Without transactions, spending is: record this key's attempt stamped with the server's
    /// clock, wait [`REDEEM_SETTLE`], then read back the earliest attempt; the key whose
    /// attempt is earliest spent the token, and every other one finds it spent. The wait is
    /// what makes two attempts at once agree: an attempt stamped in the same second as ours or
    /// before has landed by the time we read, so both read the same earliest one. Only an
    /// insert that takes longer than the wait to land after the server stamped it (a server
    /// stalled for seconds) could let two keys be enrolled by one token; both were trusted by
    /// a token their owner did hold, and from then on every node names the same first key.
    /// A node that dies between recording and trusting leaves the key untrusted; the probe's
    /// retry finds its own attempt first and trusts it then.
    fn redeem_token(&self, token_sha256: &str, key: &str) -> Result<Redeemed, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let exists = self
            .rows::<N>(
                "reading an enrolment token",
                &format!(
                    "SELECT count() AS n FROM enrolment_tokens WHERE token_sha256 = {}",
                    quote(token_sha256)
                ),
            )?
            .first()
            .is_some_and(|r| r.n > 0);
        if !exists {
            return Ok(Redeemed::Unknown);
        }
        let state = self.key_state(key)?;
        if state == Some(KeyState::Revoked) {
            return Ok(Redeemed::Revoked);
        }
        let outcome_for = |first: &str, just_now: bool| {
            if first != key {
                Redeemed::Spent
            } else if just_now {
                Redeemed::Enrolled
            } else {
                Redeemed::AlreadyEnrolled
            }
        };
        let outcome = match self.first_redeemer(token_sha256)? {
            Some(first) => outcome_for(&first, false),
            None => {
                // INSERT ... SELECT, so that `now()` is evaluated by the server.
                self.execute(
                    "spending an enrolment token",
                    &format!(
                        "INSERT INTO token_redemptions (token_sha256, key, at, used_at)
                         SELECT {}, {}, toUInt32(now()), {}",
                        quote(token_sha256),
                        quote(key),
                        now_micros()
                    ),
                )?;
                std::thread::sleep(REDEEM_SETTLE);
                match self.first_redeemer(token_sha256)? {
                    Some(first) => outcome_for(&first, true),
                    None => {
                        return Err(self.error(
                            "spending an enrolment token",
                            "the redemption just stored is not there".into(),
                        ));
                    }
                }
            }
        };
        if matches!(outcome, Redeemed::Enrolled | Redeemed::AlreadyEnrolled)
            && state != Some(KeyState::Trusted)
        {
            self.set_key(key, KeyState::Trusted)?;
        }
        Ok(outcome)
    }

    /// A page of ids from `envelopes` (ordered by id, so `id > after` is a range of its primary
    /// index), then [`ClickHouse::stored_rows`] of them. Before read-in-order (ClickHouse
    /// 19.14) the server sorts the ids after `after` to take the first `limit`, so paging a
    /// whole archive out of 18.16 costs more with each page; copying into ClickHouse never
    /// pages it (the copy is checked with [`ClickHouse::stored_rows`], by id).
    fn rows_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Row>, DbError> {
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        let ids: Vec<Id> = self.rows(
            "paging measurements",
            &format!(
                "SELECT DISTINCT id FROM envelopes WHERE id > {} ORDER BY id LIMIT {limit}",
                quote(after.unwrap_or(""))
            ),
        )?;
        let ids: Vec<&str> = ids.iter().map(|i| i.id.as_str()).collect();
        self.stored_rows(&ids)
    }

    fn rows_of(&self, ids: &[&str]) -> Result<Vec<Row>, DbError> {
        self.stored_rows(ids)
    }

    /// The ids' countries and times from `envelopes` (its primary index), then the earliest
    /// `received_at` of each id's rows by the whole sorting key, as [`Storage::arrivals`]
    /// reads it.
    fn received_of(&self, ids: &[&str]) -> Result<BTreeMap<String, i64>, DbError> {
        let op = "reading when measurements were received";
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        #[derive(Deserialize)]
        struct R {
            id: String,
            received_at: i64,
        }
        let Some(keys) = self.sorting_keys(op, ids)? else {
            return Ok(BTreeMap::new());
        };
        let rows: Vec<R> = self.rows(
            op,
            &format!(
                "SELECT id, min(received_at) AS received_at FROM measurements
                 WHERE (probe_cc, measured_at, id) IN ({keys}) GROUP BY id"
            ),
        )?;
        Ok(rows.into_iter().map(|r| (r.id, r.received_at)).collect())
    }

    /// The evidence's routes: the ids' countries and times from `envelopes` (its primary
    /// index), then one grouped read of their rows by the whole sorting key, each id once.
    fn arrivals(
        &self,
        ids: &[String],
        end: Option<i64>,
    ) -> Result<Vec<super::model::Arrival>, DbError> {
        let op = "reading how evidence arrived";
        let ids = super::model::arrival_ids(ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let Some(keys) = self.sorting_keys(op, &ids)? else {
            return Ok(Vec::new());
        };
        #[derive(Deserialize)]
        struct A {
            route: String,
            n: u64,
            first: i64,
            last: i64,
            during: u64,
            /// 18.16 counts no distinct value of a column holding only NULLs as NULL.
            relayers: Option<u64>,
        }
        let end = end.unwrap_or(i64::MAX);
        let rows: Vec<A> = self.rows(
            op,
            &format!(
                "SELECT route, count() AS n, min(received_at) AS first, max(received_at) AS last,
                     sum(received_at < {end}) AS during, uniqExact(relayed_by) AS relayers
                 FROM (SELECT id, any(route) AS route, min(received_at) AS received_at,
                         any(relayed_by) AS relayed_by
                     FROM measurements WHERE (probe_cc, measured_at, id) IN ({keys}) GROUP BY id)
                 GROUP BY route ORDER BY route"
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|a| super::model::Arrival {
                route: a.route,
                count: a.n,
                first: format_time(a.first),
                last: format_time(a.last),
                while_ongoing: a.during,
                relayers: a.relayers.unwrap_or(0),
            })
            .collect())
    }

    /// Measurements with an envelope, each once.
    fn measurement_count(&self) -> Result<u64, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        Ok(self
            .rows::<N>(
                "counting measurements",
                "SELECT uniqExact(id) AS n FROM envelopes",
            )?
            .first()
            .map_or(0, |r| r.n))
    }

    fn imported_file(&self, path: &str, size: u64) -> Result<Option<ImportedFile>, DbError> {
        #[derive(Deserialize)]
        struct F {
            path: String,
            size: u64,
            measurements: u64,
            stored: u64,
            duplicate: u64,
            skipped: u64,
            tests: String,
        }
        Ok(self
            .rows::<F>(
                "reading an imported file",
                &format!(
                    "SELECT path, size, measurements, stored, duplicate, skipped, tests
                     FROM imported_files FINAL WHERE path = {} AND size = {size} LIMIT 1",
                    quote(path)
                ),
            )?
            .into_iter()
            .next()
            .map(|f| ImportedFile {
                path: f.path,
                size: f.size,
                measurements: f.measurements,
                stored: f.stored,
                duplicate: f.duplicate,
                skipped: f.skipped,
                tests: f.tests,
            }))
    }

    fn record_imported_file(&self, f: &ImportedFile) -> Result<(), DbError> {
        #[derive(Serialize)]
        struct F<'a> {
            path: &'a str,
            size: u64,
            measurements: u64,
            stored: u64,
            duplicate: u64,
            skipped: u64,
            tests: &'a str,
            imported_at: u64,
        }
        self.insert_rows(
            "recording an imported file",
            "imported_files",
            &[F {
                path: &f.path,
                size: f.size,
                measurements: f.measurements,
                stored: f.stored,
                duplicate: f.duplicate,
                skipped: f.skipped,
                tests: &f.tests,
                imported_at: now_micros(),
            }],
        )
    }

    /// Heartbeats in (key, `sent_at`) order, the table's sorting key, each once.
    fn heartbeats_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredHeartbeat>, DbError> {
        #[derive(Deserialize)]
        struct H {
            probe_key: String,
            cc: String,
            asn: u32,
            sent_at: String,
            verified: u8,
            received_at: i64,
        }
        let filter = after.map_or(String::new(), |(key, sent_at)| {
            format!(
                " WHERE probe_key > {k} OR (probe_key = {k} AND sent_at > {s})",
                k = quote(key),
                s = quote(sent_at)
            )
        });
        let rows: Vec<H> = self.rows(
            "paging heartbeats",
            &format!(
                "SELECT probe_key, any(probe_cc) AS cc, any(probe_asn) AS asn, sent_at,
                     any(network_verified) AS verified, min(received_at) AS received_at
                 FROM heartbeats{filter} GROUP BY probe_key, sent_at
                 ORDER BY probe_key, sent_at LIMIT {limit}"
            ),
        )?;
        Ok(rows
            .into_iter()
            .map(|h| StoredHeartbeat {
                key: h.probe_key,
                cc: h.cc,
                asn: h.asn,
                sent_at: h.sent_at,
                verified: h.verified != 0,
                received_at: Some(h.received_at),
            })
            .collect())
    }

    /// [`ClickHouse::heartbeat`] for a page: one query for which (key, `sent_at`) are already
    /// there (the table's sorting key), one INSERT for the rest.
    fn record_heartbeats(&self, beats: &[StoredHeartbeat]) -> Result<usize, DbError> {
        if beats.is_empty() {
            return Ok(0);
        }
        #[derive(Deserialize)]
        struct Seen {
            probe_key: String,
            sent_at: String,
        }
        let list = beats
            .iter()
            .map(|b| format!("({},{})", quote(&b.key), quote(&b.sent_at)))
            .collect::<Vec<_>>()
            .join(",");
        let mut seen: std::collections::HashSet<(String, String)> = self
            .rows::<Seen>(
                "checking heartbeats",
                &format!(
                    "SELECT DISTINCT probe_key, sent_at FROM heartbeats
                     WHERE (probe_key, sent_at) IN ({list})"
                ),
            )?
            .into_iter()
            .map(|s| (s.probe_key, s.sent_at))
            .collect();
        #[derive(Serialize)]
        struct H<'a> {
            probe_key: &'a str,
            probe_cc: &'a str,
            probe_asn: u32,
            sent_at: &'a str,
            received_at: i64,
            network_verified: u8,
            sent_ts: Option<i64>,
        }
        let now = now();
        let fresh: Vec<H<'_>> = beats
            .iter()
            // Inserting into `seen` also keeps a heartbeat given twice in `beats` once.
            .filter(|b| seen.insert((b.key.clone(), b.sent_at.clone())))
            .map(|b| {
                // When it reached the store it is copied from, and the moment that shows its
                // probe connected, as `heartbeat` records one arriving now.
                let received_at = b.received_at.unwrap_or(now);
                H {
                    probe_key: &b.key,
                    probe_cc: &b.cc,
                    probe_asn: b.asn,
                    sent_at: &b.sent_at,
                    received_at,
                    network_verified: u8::from(b.verified),
                    sent_ts: parse_time(&b.sent_at).map(|s| heartbeat_contact(s, received_at)),
                }
            })
            .collect();
        self.insert_rows("recording heartbeats", "heartbeats", &fresh)?;
        Ok(fresh.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::search::cursor_of;
    use super::test_support::*;
    use super::*;
    use vantage_fixtures::clickhouse::{CLUSTER, Cluster};

    #[test]
    fn a_new_verdict_replaces_the_old_in_searches_and_rescoring_pages() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        let mut canary = row("c", "IT", "2026-01-01 00:00:03");
        canary.test_name = "canary".into();
        db.insert(&[
            row("w2", "IT", "2026-01-01 00:00:01"),
            row("w1", "IR", "2026-01-01 00:00:02"),
            canary,
        ])
        .expect("insert");
        let page = db.page_for_rescore("", 10).expect("page");
        assert_eq!(
            page,
            [
                (
                    "w1".to_string(),
                    "vantage".to_string(),
                    "{\"id\":\"w1\"}".to_string()
                ),
                (
                    "w2".to_string(),
                    "vantage".to_string(),
                    "{\"id\":\"w2\"}".to_string()
                )
            ]
        );
        assert_eq!(db.page_for_rescore("w1", 10).expect("page").len(), 1);
        assert_eq!(db.page_for_rescore("w1", 0).expect("page").len(), 0);
        let mut rescored = row("w2", "", "");
        rescored.blocking = Some("\"http-diff\"".into());
        rescored.accessible = Some(false);
        rescored.confirmed = true;
        rescored.rule_set = Some("2".into());
        db.update_verdict(&rescored).expect("rescore");
        db.update_verdict(&rescored).expect("again");
        let blocked = |v: &str| {
            ids(&db
                .query(&Query {
                    blocking: Some(v.into()),
                    ..query()
                })
                .expect("search"))
            .join(" ")
        };
        assert_eq!(blocked("\"http-diff\""), "w2");
        assert_eq!(blocked("false"), "w1 c", "the old verdict of w2 is gone");
        let all = db.query(&query()).expect("all");
        assert_eq!(ids(&all), ["w2", "w1", "c"]);
        assert_eq!(
            (
                all[0].confirmed,
                all[0].rule_set.as_deref(),
                all[0].accessible
            ),
            (true, Some("2"), Some(false))
        );
        // The envelope and the rest of the row are kept.
        assert_eq!(
            db.envelope("w2").expect("read").as_deref(),
            Some("{\"id\":\"w2\"}")
        );
        assert_eq!(all[0].input.as_deref(), Some("https://w2.example/"));
        // Rescoring an id never stored changes nothing.
        db.update_verdict(&row("nope", "", "")).expect("no row");
        assert_eq!(db.query(&query()).expect("all").len(), 3);
        assert_eq!(db.compact(i64::MAX, 100).expect("compact"), 0);
    }

    #[test]
    fn keys_are_trusted_revoked_and_listed_oldest_first() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        assert_eq!(db.key_state("k1").expect("state"), None);
        db.set_key("k1", KeyState::Trusted).expect("trust");
        std::thread::sleep(Duration::from_millis(1100));
        db.set_key("k2", KeyState::Trusted).expect("trust");
        db.set_key("k1", KeyState::Revoked).expect("revoke");
        assert_eq!(db.key_state("k1").expect("state"), Some(KeyState::Revoked));
        assert_eq!(db.key_state("k2").expect("state"), Some(KeyState::Trusted));
        let other = ClickHouse::open(&server.url("v")).expect("node 2");
        assert_eq!(
            other.key_state("k1").expect("state"),
            Some(KeyState::Revoked)
        );
        // k1 keeps its place (first seen) after the revocation.
        assert_eq!(
            db.keys().expect("keys"),
            [
                ("k1".to_string(), "revoked".to_string()),
                ("k2".to_string(), "trusted".to_string())
            ]
        );
        db.set_key("k1", KeyState::Trusted).expect("allow again");
        assert_eq!(
            other.key_state("k1").expect("state"),
            Some(KeyState::Trusted)
        );
    }

    #[test]
    fn an_imported_file_is_found_by_path_and_size_and_its_newest_record_wins() {
        let server = server();
        let db = ClickHouse::open(&server.url("files")).expect("open");
        assert_eq!(db.imported_file("raw/a.jsonl.gz", 10).expect("read"), None);
        let mut f = ImportedFile {
            path: "raw/a.jsonl.gz".into(),
            size: 10,
            measurements: 3,
            stored: 2,
            duplicate: 1,
            skipped: 0,
            tests: "{\"ndt\":3}".into(),
        };
        db.record_imported_file(&f).expect("record");
        f.stored = 0;
        f.duplicate = 3;
        db.record_imported_file(&f).expect("record again");
        assert_eq!(
            db.imported_file("raw/a.jsonl.gz", 10).expect("read"),
            Some(f)
        );
        assert_eq!(db.imported_file("raw/a.jsonl.gz", 11).expect("read"), None);
    }

    #[test]
    fn heartbeats_count_once() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        assert!(
            db.heartbeat("k", "IT", 1, "2026-01-01 00:00:00", true)
                .expect("hb")
        );
        assert!(
            !db.heartbeat("k", "IT", 1, "2026-01-01 00:00:00", true)
                .expect("hb")
        );
        assert!(
            db.heartbeat("k", "IT", 1, "2026-01-01 00:05:00", false)
                .expect("hb")
        );
        assert!(
            db.heartbeat("k2", "IR", 2, "2026-01-01 00:00:00", false)
                .expect("hb")
        );
        assert_eq!(db.heartbeat_count("IT").expect("count"), 2);
        assert_eq!(db.heartbeat_count("IR").expect("count"), 1);
        assert_eq!(db.heartbeat_count("DE").expect("count"), 0);
    }

    #[test]
    fn a_distributed_table_over_two_shards_returns_every_row_once() {
        let cluster = Cluster::start(2).expect("two clickhouse-servers");
        let shards: Vec<ClickHouse> = cluster
            .shards
            .iter()
            .map(|s| ClickHouse::open(&s.url("v")).expect("open shard"))
            .collect();
        // Sharded by id, so both copies of one measurement land on the same shard, where they
        // merge like any duplicate.
        shards[0]
            .execute(
                "test",
                &format!(
                    "CREATE TABLE measurements_all AS measurements
                     ENGINE = Distributed({CLUSTER}, v, measurements, sipHash64(id))"
                ),
            )
            .expect("distributed table");
        let rows: Vec<StoredRow> = (0..40)
            .map(|i| StoredRow::new(&row(&format!("m{i:02}"), "IT", "2026-01-01 00:00:00"), 0))
            .collect();
        for copy in [&rows[..], &rows[..10]] {
            let mut body = String::from("INSERT INTO measurements_all FORMAT JSONEachRow\n");
            for r in copy {
                body.push_str(&serde_json::to_string(r).expect("json"));
                body.push('\n');
            }
            let url = format!(
                "{}?database=v&insert_distributed_sync=1",
                shards[0].endpoint
            );
            let mut answer = shards[0].agent.post(&url).send(&body).expect("insert");
            let text = answer.body_mut().read_to_string().expect("answer");
            assert_eq!(answer.status().as_u16(), 200, "{text}");
        }
        let local: Vec<u64> = cluster
            .shards
            .iter()
            .map(|s| {
                s.query("SELECT count() FROM v.measurements")
                    .expect("count")
                    .trim()
                    .parse()
                    .expect("a number")
            })
            .collect();
        assert_eq!(local.iter().sum::<u64>(), 50, "{local:?}");
        assert!(
            local.iter().all(|n| *n > 0),
            "both shards hold rows: {local:?}"
        );
        // The store's own search, over the Distributed table: every row once, in order, and
        // pages that neither skip nor repeat one.
        let search = |q: &Query| {
            let sql = search::sorted_sql(q, search::Table::distributed("measurements_all"), None)
                .expect("sql");
            shards[0]
                .rows::<search::SearchRow>("test", &sql)
                .expect("search")
        };
        let read: Vec<String> = search(&query()).into_iter().map(|r| r.id).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
        assert_eq!(read, expected);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = search(&Query {
                limit: 7,
                after: after.clone(),
                ..query()
            });
            let Some(last) = page.last() else { break };
            after = Some(cursor_of(&last.measured_at, &last.id));
            paged.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(paged, expected);
    }
}
