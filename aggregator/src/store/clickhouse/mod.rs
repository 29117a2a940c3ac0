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
//! Values are written into the SQL as quoted literals ([`quote`]): 18.16 has no `{p:Type}`
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

mod commit;
mod search;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::{
    BIN_SECONDS, COUNTER_MAX, Contact, Event, Kind, NO_KEY, ProbeBin, ProbeContacts, RateSample,
    Scope, ThrottlingObservation, TimelineQuery, VerdictRow, Vouches, canary_counts, format_time,
    parse_time,
};
use super::{DbError, Found, KeyState, Query, Redeemed, Row, Storage, StoredHeartbeat, now};

/// The numbered migrations. Every statement is idempotent (`IF NOT EXISTS`): several nodes may
/// open one database at once and run the same migration together.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the tables.
    &[
        // The columns of SQLite's `measurements`, less the envelope, plus the version that
        // makes the newest verdict win, and what SQLite keeps in its signal tables or reads
        // with JSON functions (18.16 has none), computed once at insert so that the signals
        // can be grouped from the rows at read time (`ClickHouse::bin_rows`):
        // `ts`, the epoch seconds of `measured_at` (`model::parse_time`; NULL when it does
        // not read, as SQLite then counts it in no bin); a canary's `model::canary_counts`;
        // the verdict's `goodput.probe_kbps` and `goodput.below_control`. Ordered for the searches by country and time; the id
        // last, and the country and time are the id's own, so two copies of one measurement
        // share the whole sorting key and merge into one. Granules of 1,024 rows, not 8,192: a
        // search reads at least one granule of every part (see `search`).
        "CREATE TABLE IF NOT EXISTS measurements (
            id String,
            source String,
            probe_key Nullable(String),
            probe_cc String,
            probe_asn UInt32,
            test_name String,
            input Nullable(String),
            domain Nullable(String),
            measured_at String,
            received_at Int64,
            blocking Nullable(String),
            accessible Nullable(UInt8),
            confirmed UInt8,
            rule_set Nullable(String),
            verdict Nullable(String),
            network_verified UInt8,
            version UInt64,
            ts Nullable(Int64),
            canary_ok Int64,
            canary_total Int64,
            goodput_kbps Nullable(Float64),
            below_control Nullable(UInt8)
        ) ENGINE = ReplacingMergeTree(version)
        PARTITION BY substring(measured_at, 1, 7)
        ORDER BY (probe_cc, measured_at, id)
        SETTINGS index_granularity = 1024",
        // The envelopes byte for byte, by id: what `GET /api/v1/measurements/<id>` reads, and
        // the index by id that ingest's duplicate check and verdict updates look up (with the
        // country and time, which find the row in `measurements` by its sorting key). Granules
        // of 256 rows: every read here looks up single ids, which SHA-256 scatters.
        "CREATE TABLE IF NOT EXISTS envelopes (
            id String,
            probe_cc String,
            measured_at String,
            envelope String
        ) ENGINE = ReplacingMergeTree
        PARTITION BY substring(measured_at, 1, 7)
        ORDER BY id
        SETTINGS index_granularity = 256",
        // A key's standing: the newest version wins; `first_seen` is carried from the first.
        "CREATE TABLE IF NOT EXISTS probe_keys (
            key String,
            state String,
            first_seen Int64,
            last_seen Int64,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY key",
        "CREATE TABLE IF NOT EXISTS heartbeats (
            probe_key String,
            probe_cc String,
            probe_asn UInt32,
            sent_at String,
            received_at Int64,
            network_verified UInt8,
            sent_ts Nullable(Int64)
        ) ENGINE = ReplacingMergeTree
        PARTITION BY substring(sent_at, 1, 7)
        ORDER BY (probe_key, sent_at)",
        // One-time enrolment tokens, kept as SHA-256 so a copy of the database enrols nobody.
        "CREATE TABLE IF NOT EXISTS enrolment_tokens (
            token_sha256 String,
            created_at Int64
        ) ENGINE = ReplacingMergeTree
        ORDER BY token_sha256",
        // Every attempt to spend a token: the earliest spent it (`redeem_token`). `at` is the
        // server's clock (seconds), `used_at` the node's (microseconds).
        "CREATE TABLE IF NOT EXISTS token_redemptions (
            token_sha256 String,
            key String,
            at UInt32,
            used_at UInt64
        ) ENGINE = MergeTree
        ORDER BY (token_sha256, at, used_at, key)",
        // Who runs the detectors: each node's latest claim; see `try_lease`.
        "CREATE TABLE IF NOT EXISTS lease (
            name String,
            node String,
            at Int64
        ) ENGINE = ReplacingMergeTree
        ORDER BY (name, node)",
        // The detectors' events (SQLite's `events`): a replaced event is a newer version with
        // `deleted = 1`.
        "CREATE TABLE IF NOT EXISTS events (
            id String,
            cc String,
            kind String,
            start Int64,
            end_at Nullable(Int64),
            body String,
            deleted UInt8,
            version UInt64
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY (cc, id)",
    ],
    // 2: the search's columns ordered by domain, so that a search by domain reads a page and
    // not the whole table (see `search`). Filled from what is already stored (`POPULATE`),
    // then by every insert into `measurements`, verdict updates included.
    &[search::BY_DOMAIN_VIEW],
];

/// How long a node waits after recording an attempt to spend a token before reading which
/// attempt came first: longer than the second of the server's clock that orders attempts,
/// plus the time an insert takes to land, so that every attempt stamped no later than this
/// one is visible by then (see [`ClickHouse::redeem_token`]).
const REDEEM_SETTLE: Duration = Duration::from_millis(1500);

/// The name of the detector lease in the `lease` table.
const DETECTOR_LEASE: &str = "detector";

/// How long to wait for a connection: the database is near (loopback or the same network).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may take, answer included: a search over billions of rows is
/// seconds; anything near this is a server in trouble.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

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
}

/// The parts of `clickhouse://HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    host: String,
    port: u16,
    db: String,
}

/// Parses `clickhouse://HOST:PORT/DB`: a host name or IP address (IPv6 in brackets), a port and
/// one database name of ASCII letters, digits and `_`; nothing else (no user, path, query or
/// fragment), so that what is not understood is refused rather than ignored.
fn parse_address(url: &str) -> Result<Address, String> {
    const FORM: &str = "expected clickhouse://HOST:PORT/DB";
    let rest = url
        .strip_prefix("clickhouse://")
        .ok_or_else(|| format!("{FORM}: the address must start with clickhouse://"))?;
    let (authority, db) = rest
        .split_once('/')
        .ok_or_else(|| format!("{FORM}: no database name"))?;
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{FORM}: no port after the host"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if !host_ok {
        return Err(format!("{FORM}: {host:?} is not a host name or IP address"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{FORM}: {port:?} is not a port (1 to 65535)"))?;
    if db.is_empty() || db.len() > 64 || !db.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "{FORM}: the database name {db:?} must be 1 to 64 ASCII letters, digits or _"
        ));
    }
    Ok(Address {
        host: host.to_string(),
        port,
        db: db.to_string(),
    })
}

/// `s` as a ClickHouse string literal: single quotes, with backslash escapes for the quote,
/// the backslash and the control characters (ClickHouse SQL "String literals").
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Lower-case hex of `bytes`, for cursors.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text of lower-case or upper-case hex, if it is hex of UTF-8.
fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The paging cursor of a row: its place in the search order, (`measured_at`, `id`), each in
/// hex so the cursor is one URL-safe word.
fn cursor_of(measured_at: &str, id: &str) -> String {
    format!("{}.{}", hex(measured_at.as_bytes()), hex(id.as_bytes()))
}

/// The (`measured_at`, `id`) of a cursor this store gave.
fn parse_cursor(cursor: &str) -> Result<(String, String), DbError> {
    let bad = || DbError::BadCursor(cursor.to_string());
    let (t, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((unhex(t).ok_or_else(bad)?, unhex(id).ok_or_else(bad)?))
}

/// Microseconds since the epoch: versions and the order of token redemptions.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// At most the first 500 characters of an answer, for an error message.
fn excerpt(text: &str) -> &str {
    let text = text.trim_end();
    match text.char_indices().nth(500) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// One row of `measurements` as inserted and read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRow {
    id: String,
    source: String,
    probe_key: Option<String>,
    probe_cc: String,
    probe_asn: u32,
    test_name: String,
    input: Option<String>,
    domain: Option<String>,
    measured_at: String,
    received_at: i64,
    blocking: Option<String>,
    accessible: Option<u8>,
    confirmed: u8,
    rule_set: Option<String>,
    verdict: Option<String>,
    network_verified: u8,
    version: u64,
    ts: Option<i64>,
    canary_ok: i64,
    canary_total: i64,
    goodput_kbps: Option<f64>,
    below_control: Option<u8>,
}

/// The verdict's `goodput.probe_kbps` and `goodput.below_control`, as SQLite's `json_extract`
/// reads them for `rate_samples` (a number, and a boolean or 0/1); anything else is absent.
fn goodput(verdict: Option<&str>) -> (Option<f64>, Option<u8>) {
    let Some(v) = verdict.and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok()) else {
        return (None, None);
    };
    let g = &v["goodput"];
    let below = match &g["below_control"] {
        serde_json::Value::Bool(b) => Some(u8::from(*b)),
        serde_json::Value::Number(n) => n.as_i64().map(|n| u8::from(n != 0)),
        _ => None,
    };
    (g["probe_kbps"].as_f64(), below)
}

impl StoredRow {
    /// The first version of a row received at `received_at`.
    fn new(r: &Row, received_at: i64) -> StoredRow {
        let mut stored = StoredRow {
            id: r.id.clone(),
            source: r.source.clone(),
            probe_key: r.probe_key.clone(),
            probe_cc: r.probe_cc.clone(),
            probe_asn: r.probe_asn,
            test_name: r.test_name.clone(),
            input: r.input.clone(),
            domain: r.domain.clone(),
            measured_at: r.measured_at.clone(),
            received_at,
            blocking: r.blocking.clone(),
            accessible: r.accessible.map(u8::from),
            confirmed: u8::from(r.confirmed),
            rule_set: r.rule_set.clone(),
            verdict: r.verdict.clone(),
            network_verified: u8::from(r.network_verified),
            version: 0,
            ts: parse_time(&r.measured_at),
            canary_ok: 0,
            canary_total: 0,
            goodput_kbps: None,
            below_control: None,
        };
        if r.test_name == "canary"
            && let Some((ok, total)) = canary_counts(&r.envelope)
        {
            (stored.canary_ok, stored.canary_total) = (ok, total);
        }
        stored.set_goodput();
        stored
    }

    /// The goodput columns of the row's verdict.
    fn set_goodput(&mut self) {
        (self.goodput_kbps, self.below_control) = goodput(self.verdict.as_deref());
    }
}

/// The columns of [`StoredRow`], in order, for SELECTs.
const STORED_COLUMNS: &str = "id, source, probe_key, probe_cc, probe_asn, test_name, input, \
    domain, measured_at, received_at, blocking, accessible, confirmed, rule_set, verdict, \
    network_verified, version, ts, canary_ok, canary_total, goodput_kbps, below_control";

/// One row of `envelopes`.
#[derive(Debug, Serialize)]
struct EnvelopeRow<'a> {
    id: &'a str,
    probe_cc: &'a str,
    measured_at: &'a str,
    envelope: &'a str,
}

impl ClickHouse {
    /// Connects to `clickhouse://HOST:PORT/DB`, creates the database if missing and runs the
    /// migrations it has not recorded yet.
    pub fn open(url: &str) -> Result<ClickHouse, DbError> {
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
        };
        db.migrate()?;
        Ok(db)
    }

    /// Creates the database and runs the missing migrations, recording each in
    /// `schema_migrations`. Two nodes opening one new database at once both run the same
    /// idempotent statements and both record the version: reads take the distinct versions.
    fn migrate(&self) -> Result<(), DbError> {
        self.post(
            "creating the database",
            false,
            &format!("CREATE DATABASE IF NOT EXISTS {}", self.db),
        )?;
        self.execute(
            "creating the migrations table",
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, applied_at Int64)
             ENGINE = MergeTree ORDER BY version",
        )?;
        #[derive(Deserialize)]
        struct Applied {
            v: u32,
        }
        let applied: Vec<u32> = self
            .rows::<Applied>(
                "reading the schema version",
                "SELECT DISTINCT version AS v FROM schema_migrations",
            )?
            .into_iter()
            .map(|a| a.v)
            .collect();
        let known = MIGRATIONS.len();
        if let Some(found) = applied.iter().copied().max()
            && usize::try_from(found).unwrap_or(usize::MAX) > known
        {
            return Err(DbError::TooNew {
                path: self.at.clone(),
                found: i64::from(found),
                known: i64::try_from(known).unwrap_or(i64::MAX),
            });
        }
        for (i, statements) in MIGRATIONS.iter().enumerate() {
            let version = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if applied.contains(&version) {
                continue;
            }
            let op = format!("migration {version}");
            for sql in *statements {
                self.execute(&op, sql)?;
            }
            self.execute(
                &op,
                &format!(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, {})",
                    now()
                ),
            )?;
        }
        Ok(())
    }

    /// One statement; the answer's body on success. `in_db`: run it in this store's database
    /// (everything but creating it).
    fn post(&self, op: &str, in_db: bool, body: &str) -> Result<String, DbError> {
        self.post_with(op, in_db, body, "")
    }

    /// [`Self::post`] with query settings (`&name=value...`) in the URL, where every version
    /// takes them (18.16 has no `SETTINGS` clause in a SELECT).
    fn post_with(
        &self,
        op: &str,
        in_db: bool,
        body: &str,
        settings: &str,
    ) -> Result<String, DbError> {
        // Unquoted 64-bit numbers in JSON whatever the server's profile says.
        let mut url = format!(
            "{}?output_format_json_quote_64bit_integers=0{settings}",
            self.endpoint
        );
        // Room for a long query, a duplicate check's list of ids: the default
        // `max_query_size` is 256 KiB. Not for an INSERT, whose rows after `FORMAT` are data
        // read as a stream, not query text; a larger limit would make the server copy the
        // whole body before parsing it.
        if body.len() > 200_000 && !body.starts_with("INSERT") {
            url.push_str(&format!("&max_query_size={}", body.len() + 1));
        }
        if in_db {
            url.push_str("&database=");
            url.push_str(&self.db);
        }
        let mut response = self
            .agent
            .post(&url)
            .send(body)
            .map_err(|e| self.error(op, format!("cannot reach the server: {e}")))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_string()
            .map_err(|e| self.error(op, format!("HTTP {status}, answer cut short: {e}")))?;
        if status != 200 {
            return Err(self.error(op, format!("HTTP {status}: {}", excerpt(&text))));
        }
        Ok(text)
    }

    /// A statement in this store's database.
    fn execute(&self, op: &str, sql: &str) -> Result<String, DbError> {
        self.post(op, true, sql)
    }

    /// The rows a SELECT answers, each read as `T` from JSONEachRow.
    fn rows<T: DeserializeOwned>(&self, op: &str, sql: &str) -> Result<Vec<T>, DbError> {
        self.rows_with(op, sql, "")
    }

    /// [`Self::rows`] with query settings (see [`Self::post_with`]).
    fn rows_with<T: DeserializeOwned>(
        &self,
        op: &str,
        sql: &str,
        settings: &str,
    ) -> Result<Vec<T>, DbError> {
        let text = self.post_with(op, true, &format!("{sql} FORMAT JSONEachRow"), settings)?;
        // An error raised after the answer began streaming arrives as text after the rows, with
        // status 200 already sent: it does not parse, and its text is the message.
        serde_json::Deserializer::from_str(&text)
            .into_iter::<T>()
            .collect::<Result<Vec<T>, _>>()
            .map_err(|e| self.error(op, format!("unreadable answer ({e}): {}", excerpt(&text))))
    }

    /// Inserts `rows` into `table` in one statement (one part on the server).
    fn insert_rows<T: Serialize>(&self, op: &str, table: &str, rows: &[T]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut body = format!("INSERT INTO {table} FORMAT JSONEachRow\n");
        for row in rows {
            let line = serde_json::to_string(row)
                .map_err(|e| self.error(op, format!("encoding a row: {e}")))?;
            body.push_str(&line);
            body.push('\n');
        }
        self.execute(op, &body).map(|_| ())
    }

    fn error(&self, op: &str, message: String) -> DbError {
        DbError::ClickHouse {
            at: self.at.clone(),
            op: op.to_string(),
            message,
        }
    }

    /// Stores rows; returns for each whether it was new (false: a duplicate, stored before or
    /// earlier in `rows`). Which ids exist is one query per batch on `envelopes` (ordered by
    /// id, within the batch's time range); the measurements are written before their envelopes, so a row whose envelope is
    /// missing (a node that died between the two) counts as new and is written again, and the
    /// copies merge. Two nodes inserting one new id at once both store it; every read shows
    /// it once.
    fn insert_now(&self, rows: &[Row]) -> Result<Vec<bool>, DbError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let list = ids.iter().map(|id| quote(id)).collect::<Vec<_>>().join(",");
        #[derive(Deserialize)]
        struct Id {
            id: String,
        }
        // A stored copy has the same time (the id fixes it): the time range lets the server
        // skip every part (and month) outside it, where a list of random ids alone would
        // touch nearly every granule of the id index.
        let (first, last) = rows
            .iter()
            .fold((&rows[0].measured_at, &rows[0].measured_at), |(a, b), r| {
                (a.min(&r.measured_at), b.max(&r.measured_at))
            });
        let existing: std::collections::HashSet<String> = self
            .rows::<Id>(
                "checking for duplicates",
                &format!(
                    "SELECT DISTINCT id FROM envelopes WHERE measured_at >= {} AND measured_at <= {}
                     AND id IN ({list})",
                    quote(first),
                    quote(last)
                ),
            )?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut seen = std::collections::HashSet::new();
        let added: Vec<bool> = rows
            .iter()
            .map(|r| !existing.contains(&r.id) && seen.insert(r.id.as_str()))
            .collect();
        let new_rows: Vec<&Row> = rows
            .iter()
            .zip(&added)
            .filter(|(_, new)| **new)
            .map(|(r, _)| r)
            .collect();
        self.store_new(&new_rows)?;
        Ok(added)
    }

    /// Writes rows found new: the measurements first, then their envelopes (see
    /// [`ClickHouse::insert`]).
    fn store_new(&self, rows: &[&Row]) -> Result<(), DbError> {
        let received_at = now();
        let stored: Vec<StoredRow> = rows
            .iter()
            .map(|r| StoredRow::new(r, received_at))
            .collect();
        self.insert_rows("storing measurements", "measurements", &stored)?;
        let envelopes: Vec<EnvelopeRow<'_>> = rows
            .iter()
            .map(|r| EnvelopeRow {
                id: &r.id,
                probe_cc: &r.probe_cc,
                measured_at: &r.measured_at,
                envelope: &r.envelope,
            })
            .collect();
        self.insert_rows("storing envelopes", "envelopes", &envelopes)
    }

    /// The key that spent a token first, if any: the earliest attempt by the server's clock,
    /// then by the node's, then the smaller key, so every node reads the same one.
    fn first_redeemer(&self, token_sha256: &str) -> Result<Option<String>, DbError> {
        #[derive(Deserialize)]
        struct K {
            key: String,
        }
        Ok(self
            .rows::<K>(
                "reading who spent a token",
                &format!(
                    "SELECT key FROM token_redemptions WHERE token_sha256 = {}
                     ORDER BY at, used_at, key LIMIT 1",
                    quote(token_sha256)
                ),
            )?
            .into_iter()
            .next()
            .map(|k| k.key))
    }

    /// Takes or renews the detector lease for `node` at `now` (seconds): true when `node`
    /// holds it now, false when another node renewed it within the last `ttl_seconds`.
    ///
    /// Each call that may hold it records (`node`, `now`); the holder is the latest record
    /// (ties to the greater node name). Without transactions, two nodes that both find the
    /// lease expired both record, and one reading back before the other's record lands
    /// believes it holds the lease for that pass, as the other does: at worst two detector
    /// passes run at once once. That is acceptable because a pass replaces the events of its
    /// window with what the stored measurements show, so two passes over the same data write
    /// the same events; from the next call on, every node reads the same holder.
    pub fn try_lease(&self, node: &str, now: i64, ttl_seconds: i64) -> Result<bool, DbError> {
        #[derive(Serialize, Deserialize)]
        struct L {
            name: String,
            node: String,
            at: i64,
        }
        let holder = |this: &Self| -> Result<Option<L>, DbError> {
            Ok(this
                .rows::<L>(
                    "reading the detector lease",
                    &format!(
                        "SELECT name, node, at FROM lease WHERE name = {}
                         ORDER BY at DESC, node DESC LIMIT 1",
                        quote(DETECTOR_LEASE)
                    ),
                )?
                .into_iter()
                .next())
        };
        let current = holder(self)?;
        if let Some(l) = &current
            && l.node != node
            && now.saturating_sub(l.at) <= ttl_seconds
        {
            return Ok(false);
        }
        self.insert_rows(
            "taking the detector lease",
            "lease",
            &[L {
                name: DETECTOR_LEASE.into(),
                node: node.into(),
                at: now,
            }],
        )?;
        if current.as_ref().is_some_and(|l| l.node == node) {
            return Ok(true);
        }
        Ok(holder(self)?.is_some_and(|l| l.node == node))
    }
}

/// The newest version of each measurement of one country: the `FINAL` subquery every signal
/// read groups from. It selects the whole sorting key and the version (see [`search_sql`]);
/// `extra` is a filter on what a measurement's id fixes (never on a verdict, which goes outside
/// it: see the module's docs).
fn newest_measurements(cc: &str, extra: &str) -> String {
    format!(
        "(SELECT id, probe_key, probe_cc, probe_asn, test_name, domain, measured_at, accessible,
             blocking, verdict, network_verified, ts, canary_ok, canary_total, goodput_kbps,
             below_control, version
         FROM measurements FINAL WHERE probe_cc = {}{extra})",
        quote(cc)
    )
}

/// Each heartbeat of one country once (a key and `sent_at`; two nodes racing may both have
/// stored it), as SQLite's primary key keeps it.
fn unique_heartbeats(cc: &str) -> String {
    format!(
        "(SELECT probe_key, sent_at, any(probe_asn) AS probe_asn, any(sent_ts) AS sent_ts,
             any(network_verified) AS network_verified
         FROM heartbeats WHERE probe_cc = {} GROUP BY probe_key, sent_at)",
        quote(cc)
    )
}

/// The bin of epoch seconds `expr` (a `Nullable(Int64)` known not to be NULL), as
/// `model::bin_of` makes it: `div_euclid`, exact below 2^53 seconds.
fn bin_sql(expr: &str, width: i64) -> String {
    format!("toInt64(floor(ifNull({expr}, 0) / {width}))")
}

/// One probe key's row of one bin, grouped from the measurements and heartbeats as SQLite's
/// `signal_probes` adds them up one at a time (`store/sqlite/signals.rs`).
#[derive(Debug, Deserialize)]
struct BinRow {
    bin: i64,
    asn: u32,
    key: String,
    first_up: Option<i64>,
    last_up: Option<i64>,
    down: i64,
    hb: i64,
    cok: i64,
    cchk: i64,
    m: i64,
    a0: i64,
    a1: i64,
    a2: i64,
    a3: i64,
}

/// One version of one stored event.
#[derive(Debug, Serialize, Deserialize)]
struct EventRow {
    id: String,
    cc: String,
    kind: String,
    start: i64,
    end_at: Option<i64>,
    body: String,
    deleted: u8,
    version: u64,
}

impl ClickHouse {
    /// Every probe key's row of the bins of `cc` (one network, or all) whose start is in
    /// `[from, to)` (epoch seconds).
    ///
    /// # Signals
    /// SQLite adds each stored measurement and heartbeat to its key's row of its bin in the
    /// transaction that stores it; ClickHouse has no transactions, so the same rows are grouped
    /// here from the measurements (each id once, its newest verdict) and the heartbeats (each
    /// key and `sent_at` once), adding what `signals::record_row` and `record_heartbeat` add:
    /// every submission with a readable time makes its key's row exist (a keyless one the
    /// [`NO_KEY`] row); a web_connectivity measurement counts, with its verdict's layer; a
    /// keyed canary whose targets mostly answered (`accessible`) shows the key up, one whose
    /// targets did not counts down; a canary's counts; a heartbeat shows the key up. Counters
    /// saturate at [`COUNTER_MAX`]. The constants of a `UNION ALL` branch are `materialize`d:
    /// 18.16 refuses a column constant in one branch and not in the other.
    fn bin_rows(
        &self,
        cc: &str,
        asn: Option<u32>,
        from: i64,
        to: i64,
    ) -> Result<Vec<BinRow>, DbError> {
        let asn_filter = asn.map_or(String::new(), |a| format!(" AND probe_asn = {a}"));
        let layer = |values: &str| {
            format!(
                "toInt64(test_name = 'web_connectivity' AND ifNull(blocking, '') IN ({values}))"
            )
        };
        let sql = format!(
            "SELECT bin, asn, key, min(up) AS first_up, max(up) AS last_up,
                 least(sum(dn), {max}) AS down, least(sum(hb), {max}) AS hb,
                 least(sum(cok), {max}) AS cok, least(sum(cchk), {max}) AS cchk,
                 least(sum(m), {max}) AS m, least(sum(a0), {max}) AS a0,
                 least(sum(a1), {max}) AS a1, least(sum(a2), {max}) AS a2,
                 least(sum(a3), {max}) AS a3
             FROM (
                 SELECT {mbin} AS bin, probe_asn AS asn, ifNull(probe_key, '') AS key,
                     if(test_name = 'canary' AND isNotNull(probe_key)
                         AND ifNull(accessible, 2) = 1, ts, CAST(NULL AS Nullable(Int64))) AS up,
                     toInt64(test_name = 'canary' AND isNotNull(probe_key)
                         AND ifNull(accessible, 2) = 0) AS dn,
                     materialize(toInt64(0)) AS hb, toInt64(canary_ok) AS cok, toInt64(canary_total) AS cchk,
                     toInt64(test_name = 'web_connectivity') AS m,
                     {l0} AS a0, {l1} AS a1, {l2} AS a2, {l3} AS a3
                 FROM {meas} WHERE isNotNull(ts) AND ts >= {from} AND ts < {to}{asn_filter}
                 UNION ALL
                 SELECT {hbin} AS bin, probe_asn AS asn, probe_key AS key,
                     sent_ts AS up, materialize(toInt64(0)) AS dn, materialize(toInt64(1)) AS hb, materialize(toInt64(0)) AS cok,
                     materialize(toInt64(0)) AS cchk, materialize(toInt64(0)) AS m, materialize(toInt64(0)) AS a0, materialize(toInt64(0)) AS a1,
                     materialize(toInt64(0)) AS a2, materialize(toInt64(0)) AS a3
                 FROM {hbs} WHERE isNotNull(sent_ts) AND sent_ts >= {from} AND sent_ts < {to}
                     {asn_filter}
             ) GROUP BY bin, asn, key ORDER BY bin, asn, key",
            max = COUNTER_MAX,
            mbin = bin_sql("ts", BIN_SECONDS),
            hbin = bin_sql("sent_ts", BIN_SECONDS),
            l0 = layer("'\"dns\"'"),
            l1 = layer("'\"tcp_ip\"'"),
            l2 = layer("'\"tls\"'"),
            l3 = layer("'\"http-failure\"', '\"http-diff\"'"),
            meas = newest_measurements(cc, ""),
            hbs = unique_heartbeats(cc),
        );
        self.rows("reading the signals' bins", &sql)
    }

    /// The epoch seconds where bin `bin` starts, saturating: a bound of "every bin" stays one.
    fn bin_start(bin: i64) -> i64 {
        bin.saturating_mul(BIN_SECONDS)
    }

    /// The live (newest, not deleted) events of `cc` (or all), each once, filtered by `filter`
    /// (on the newest version's columns), in `start`, `id` order.
    fn live_events(&self, cc: Option<&str>, filter: &str) -> Result<Vec<EventRow>, DbError> {
        let inner = cc.map_or(String::new(), |cc| format!(" WHERE cc = {}", quote(cc)));
        self.rows(
            "reading events",
            &format!(
                "SELECT id, cc, kind, start, end_at, body, deleted, version
                 FROM (SELECT id, cc, kind, start, end_at, body, deleted, version
                       FROM events FINAL{inner})
                 WHERE deleted = 0{filter} ORDER BY start, id"
            ),
        )
    }
}

/// What copying a store reads (`vantage-aggregator migrate`).
impl ClickHouse {
    /// The measurements of `ids` that have an envelope, in id order, each its newest version:
    /// the envelopes by id (their primary index), then the rows by their whole sorting key
    /// (country, time, id), which the envelope gives, so neither read scans a table.
    pub fn stored_rows(&self, ids: &[&str]) -> Result<Vec<Row>, DbError> {
        let op = "reading measurements by id";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct E {
            id: String,
            cc: String,
            at: String,
            env: String,
        }
        let list = ids.iter().map(|id| quote(id)).collect::<Vec<_>>().join(",");
        let envelopes: Vec<E> = self.rows(
            op,
            &format!(
                "SELECT id, any(probe_cc) AS cc, any(measured_at) AS at, any(envelope) AS env
                 FROM envelopes WHERE id IN ({list}) GROUP BY id"
            ),
        )?;
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let keys = envelopes
            .iter()
            .map(|e| format!("({},{},{})", quote(&e.cc), quote(&e.at), quote(&e.id)))
            .collect::<Vec<_>>()
            .join(",");
        let mut newest: std::collections::HashMap<String, StoredRow> =
            std::collections::HashMap::new();
        for row in self.rows::<StoredRow>(
            op,
            &format!(
                "SELECT {STORED_COLUMNS} FROM measurements FINAL
                 WHERE (probe_cc, measured_at, id) IN ({keys})"
            ),
        )? {
            match newest.get(&row.id) {
                Some(kept) if kept.version >= row.version => {}
                _ => {
                    newest.insert(row.id.clone(), row);
                }
            }
        }
        let mut rows: Vec<Row> = envelopes
            .into_iter()
            .filter_map(|e| {
                let m = newest.remove(&e.id)?;
                Some(Row {
                    id: m.id,
                    source: m.source,
                    probe_key: m.probe_key,
                    probe_cc: m.probe_cc,
                    probe_asn: m.probe_asn,
                    test_name: m.test_name,
                    input: m.input,
                    domain: m.domain,
                    measured_at: m.measured_at,
                    blocking: m.blocking,
                    accessible: m.accessible.map(|a| a != 0),
                    confirmed: m.confirmed != 0,
                    rule_set: m.rule_set,
                    verdict: m.verdict,
                    envelope: e.env,
                    network_verified: m.network_verified != 0,
                })
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }
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
                 WHERE test_name = 'web_connectivity' AND id > {} GROUP BY id ORDER BY id LIMIT {limit}",
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
                newest_measurements(
                    cc,
                    &format!(
                        " AND measured_at >= {} AND test_name = 'web_connectivity'
                         AND isNotNull(domain) AND isNotNull(ts)",
                        quote(&format_time(from))
                    )
                )
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
                newest_measurements(
                    cc,
                    &format!(
                        " AND measured_at >= {} AND test_name = 'throttling'
                         AND isNotNull(domain) AND isNotNull(ts)",
                        quote(&format_time(from))
                    )
                )
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
                newest_measurements(
                    cc,
                    &format!(
                        " AND measured_at >= {} AND test_name = 'web_connectivity'
                         AND isNotNull(domain) AND isNotNull(ts)",
                        quote(&format_time(from))
                    )
                )
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
        self.insert_rows(
            "recording a heartbeat",
            "heartbeats",
            &[H {
                probe_key: key,
                probe_cc: cc,
                probe_asn: asn,
                sent_at,
                received_at: now(),
                network_verified: u8::from(verified),
                sent_ts: parse_time(sent_at),
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
                     any(network_verified) AS verified
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
        let received_at = now();
        let fresh: Vec<H<'_>> = beats
            .iter()
            // Inserting into `seen` also keeps a heartbeat given twice in `beats` once.
            .filter(|b| seen.insert((b.key.clone(), b.sent_at.clone())))
            .map(|b| H {
                probe_key: &b.key,
                probe_cc: &b.cc,
                probe_asn: b.asn,
                sent_at: &b.sent_at,
                received_at,
                network_verified: u8::from(b.verified),
                sent_ts: parse_time(&b.sent_at),
            })
            .collect();
        self.insert_rows("recording heartbeats", "heartbeats", &fresh)?;
        Ok(fresh.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_fixtures::clickhouse::{CLUSTER, Cluster, Server};

    fn server() -> Server {
        Server::start().expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)")
    }

    fn row(id: &str, cc: &str, at: &str) -> Row {
        Row {
            id: id.into(),
            source: "vantage".into(),
            probe_key: Some("key-1".into()),
            probe_cc: cc.into(),
            probe_asn: 3269,
            test_name: "web_connectivity".into(),
            input: Some(format!("https://{id}.example/")),
            domain: Some(format!("{id}.example")),
            measured_at: at.into(),
            blocking: Some("false".into()),
            accessible: Some(true),
            confirmed: false,
            rule_set: Some("1".into()),
            verdict: Some("{}".into()),
            envelope: format!("{{\"id\":\"{id}\"}}"),
            network_verified: true,
        }
    }

    fn query() -> Query {
        Query {
            limit: 100,
            ..Query::default()
        }
    }

    fn ids(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn addresses_are_parsed_strictly() {
        assert_eq!(
            parse_address("clickhouse://127.0.0.1:8123/vantage_1"),
            Ok(Address {
                host: "127.0.0.1".into(),
                port: 8123,
                db: "vantage_1".into()
            })
        );
        assert_eq!(
            parse_address("clickhouse://[::1]:9000/v").map(|a| a.host),
            Ok("[::1]".into())
        );
        for (bad, why) in [
            ("http://127.0.0.1:8123/db", "must start with clickhouse://"),
            ("clickhouse://127.0.0.1:8123", "no database name"),
            ("clickhouse://127.0.0.1/db", "no port"),
            ("clickhouse://127.0.0.1:99999/db", "is not a port"),
            ("clickhouse://127.0.0.1:0/db", "is not a port"),
            ("clickhouse://127.0.0.1:8123/", "database name \"\""),
            ("clickhouse://127.0.0.1:8123/db;DROP", "database name"),
            ("clickhouse://127.0.0.1:8123/db/more", "database name"),
            ("clickhouse://127.0.0.1:8123/db?x=1", "database name"),
            ("clickhouse://user:pw@127.0.0.1:8123/db", "not a host name"),
            ("clickhouse://ho st:8123/db", "not a host name"),
            ("clickhouse://[zz]:8123/db", "not a host name"),
        ] {
            let err = parse_address(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = cursor_of("2026-01-01 00:00:00", "ab'c");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'), "{c}");
        assert_eq!(
            parse_cursor(&c).expect("ours"),
            ("2026-01-01 00:00:00".into(), "ab'c".into())
        );
        for bad in ["17", "zz.00", "0.00", "", "ff.ff"] {
            assert!(
                matches!(parse_cursor(bad), Err(DbError::BadCursor(ref c)) if c == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bad_address_is_refused_before_any_connection() {
        let err = ClickHouse::open("clickhouse://127.0.0.1:8123/db;drop").expect_err("bad");
        assert_eq!(
            err.to_string(),
            "ClickHouse clickhouse://127.0.0.1:8123/db;drop: reading the store address: \
             expected clickhouse://HOST:PORT/DB: the database name \"db;drop\" must be 1 to 64 \
             ASCII letters, digits or _"
        );
    }

    #[test]
    fn an_unreachable_server_is_named_in_the_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let err = ClickHouse::open(&format!("clickhouse://127.0.0.1:{port}/v"))
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "ClickHouse 127.0.0.1:{port}/v: creating the database: cannot reach the server:"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_server_answering_500_gives_its_status_and_message() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "Code: 243, e.displayText() = DB::Exception: Cannot reserve 1.00 MiB, not enough space";
            let _ = write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        let err = ClickHouse::open(&format!("clickhouse://127.0.0.1:{port}/v")).expect_err("500");
        answer.join().expect("fake server");
        assert_eq!(
            err.to_string(),
            format!(
                "ClickHouse 127.0.0.1:{port}/v: creating the database: HTTP 500: Code: 243, \
                 e.displayText() = DB::Exception: Cannot reserve 1.00 MiB, not enough space"
            )
        );
    }

    #[test]
    fn a_missing_table_is_a_clear_error() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        server.query("DROP TABLE v.envelopes").expect("drop");
        let err = db.envelope("x").expect_err("no table");
        let text = err.to_string();
        assert!(
            text.contains("reading an envelope: HTTP 404: Code: 60")
                && text.contains("v.envelopes doesn't exist"),
            "{text}"
        );
    }

    #[test]
    fn migrations_run_once_and_a_newer_database_is_refused() {
        let server = server();
        let url = server.url("v");
        ClickHouse::open(&url).expect("first open");
        ClickHouse::open(&url).expect("second open");
        assert_eq!(
            server
                .query("SELECT count() FROM v.schema_migrations")
                .expect("count"),
            "2\n"
        );
        server
            .query("INSERT INTO v.schema_migrations VALUES (99, 0)")
            .expect("future");
        let err = ClickHouse::open(&url).expect_err("too new");
        assert!(
            matches!(
                err,
                DbError::TooNew {
                    found: 99,
                    known: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A database made before the by-domain view (migration 1 only, with rows): opening it
    /// adds the view with what was stored, so a search by domain still finds the old rows.
    #[test]
    fn the_domain_view_is_added_with_the_rows_already_stored() {
        let server = server();
        let url = server.url("v");
        let db = ClickHouse::open(&url).expect("open");
        db.insert(&[row("m1", "IT", "2026-01-02 00:00:00")])
            .expect("insert");
        for sql in [
            "DROP TABLE v.measurements_by_domain",
            "DROP TABLE v.schema_migrations",
            "CREATE TABLE v.schema_migrations (version UInt32, applied_at Int64)
             ENGINE = MergeTree ORDER BY version",
            "INSERT INTO v.schema_migrations VALUES (1, 0)",
        ] {
            server.query(sql).expect(sql);
        }
        let db = ClickHouse::open(&url).expect("reopen runs migration 2");
        let by_domain = Query {
            domain: Some("m1.example".into()),
            ..query()
        };
        assert_eq!(ids(&db.query(&by_domain).expect("search")), ["m1"]);
        db.insert(&[row("m2", "IR", "2026-01-01 00:00:00")])
            .expect("insert");
        let m2 = Query {
            domain: Some("m2.example".into()),
            ..query()
        };
        assert_eq!(ids(&db.query(&m2).expect("search")), ["m2"]);
    }

    /// Searches by country and by domain read a page from a stream (see `search`): over many
    /// parts inserted out of order, with copies of rows and newer verdicts, every page is the
    /// one a full sort gives, whatever the filters.
    #[test]
    fn pages_by_country_and_domain_are_those_of_a_full_sort() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        // 1,200 rows in 24 inserts (24 parts), times on a few seconds so that many rows share
        // one, ids in no order; a third in IR, the rest in IT; domains d0 to d4.
        let mut all: Vec<Row> = (0..1200u32)
            .map(|i| {
                let id = format!("{:08x}", i.wrapping_mul(2_654_435_761));
                let cc = if i % 3 == 0 { "IR" } else { "IT" };
                let mut r = row(&id, cc, &format!("2026-01-01 00:00:0{}", (i / 5) % 5));
                r.domain = Some(format!("d{}.example", i % 5));
                r
            })
            .collect();
        for chunk in all.chunks(50).rev() {
            db.insert(chunk).expect("insert");
        }
        // Copies of 100 rows through another "node" (they were stored: not new), written
        // as fresh parts anyway, and newer verdicts for every seventh row.
        db.store_new(&all[..100].iter().collect::<Vec<_>>())
            .expect("copies");
        for r in all.iter_mut().step_by(7) {
            r.blocking = Some("\"dns\"".into());
            db.update_verdict(r).expect("update");
        }
        let expect = |keep: &dyn Fn(&Row) -> bool| {
            let mut v: Vec<&Row> = all.iter().filter(|r| keep(r)).collect();
            v.sort_by(|a, b| (&a.measured_at, &a.id).cmp(&(&b.measured_at, &b.id)));
            v.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        };
        let paged = |q: Query| {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = db
                    .query(&Query {
                        after: after.clone(),
                        limit: 13,
                        ..q.clone()
                    })
                    .expect("search");
                after = page.last().map(|f| f.cursor.clone());
                out.extend(page.iter().map(|f| f.id.clone()));
                if page.len() < 13 {
                    return out;
                }
            }
        };
        type Keep = Box<dyn Fn(&Row) -> bool>;
        let cases: Vec<(Query, Keep)> = vec![
            (
                Query {
                    cc: Some("IT".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.probe_cc == "IT"),
            ),
            (
                Query {
                    domain: Some("d2.example".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.domain.as_deref() == Some("d2.example")),
            ),
            (
                Query {
                    cc: Some("IR".into()),
                    blocking: Some("\"dns\"".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.probe_cc == "IR" && r.blocking.as_deref() == Some("\"dns\"")),
            ),
            (
                Query {
                    domain: Some("d3.example".into()),
                    cc: Some("IT".into()),
                    blocking: Some("false".into()),
                    since: Some("2026-01-01 00:00:02".into()),
                    ..query()
                },
                Box::new(|r: &Row| {
                    r.domain.as_deref() == Some("d3.example")
                        && r.probe_cc == "IT"
                        && r.blocking.as_deref() == Some("false")
                        && r.measured_at.as_str() >= "2026-01-01 00:00:02"
                }),
            ),
        ];
        for (q, keep) in cases {
            let want = expect(keep.as_ref());
            assert!(want.len() > 13, "{q:?}: more than one page");
            assert_eq!(paged(q.clone()), want, "{q:?}");
        }
    }

    /// Uploads that arrive together are written together (`commit`): every upload is
    /// answered with its own rows' fate, an id sent by two uploads is new for exactly one,
    /// and the server sees far fewer inserts than there were uploads.
    #[test]
    fn concurrent_uploads_share_inserts_and_each_gets_its_answer() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        let inserts = || -> u64 {
            server
                .query("SELECT value FROM system.events WHERE event = 'InsertQuery'")
                .expect("events")
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let before = inserts();
        const UPLOADS: usize = 24;
        let barrier = std::sync::Barrier::new(UPLOADS);
        let answers: Vec<Vec<bool>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..UPLOADS)
                .map(|u| {
                    let (db, barrier) = (&db, &barrier);
                    s.spawn(move || {
                        // 20 rows of its own and one, "shared", that every upload sends.
                        let mut rows: Vec<Row> = (0..20)
                            .map(|i| row(&format!("u{u}-{i}"), "IT", "2026-01-01 00:00:00"))
                            .collect();
                        rows.push(row("shared", "IT", "2026-01-01 00:00:00"));
                        barrier.wait();
                        db.insert(&rows).expect("insert")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for a in &answers {
            assert_eq!(a.len(), 21);
            assert!(a[..20].iter().all(|new| *new), "own rows are new: {a:?}");
        }
        let shared_new = answers.iter().filter(|a| a[20]).count();
        assert_eq!(shared_new, 1, "the shared row is new for one upload");
        assert_eq!(db.measurement_count().expect("count"), 20 * 24 + 1);
        let used = inserts() - before;
        assert!(
            used < UPLOADS as u64,
            "{used} inserts for {UPLOADS} uploads (two tables each)"
        );
    }

    #[test]
    fn two_nodes_opening_a_new_database_at_once_both_work() {
        let server = server();
        let url = server.url("race");
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || ClickHouse::open(&url).map(|_| ()))
            })
            .collect();
        for o in opens {
            o.join().expect("thread").expect("open");
        }
        let db = ClickHouse::open(&url).expect("open");
        assert_eq!(
            db.insert(&[row("a", "IT", "2026-01-01 00:00:00")])
                .expect("insert"),
            [true]
        );
    }

    #[test]
    fn inserts_report_duplicates_and_keep_envelopes_byte_for_byte() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        let mut tricky = row("t", "IT", "2026-01-01 00:00:00");
        tricky.envelope = "{\"m\":\"Ünïcödé ✓ 𝄞 中文\",\"q\":\"it's \\\"quoted\\\"\",\
                           \"b\":\"back\\\\slash\",\"tab\":\"a\tb\",\"nl\":\"x\\ny\",\"s\":\"</script>\u{2028}\"}\r\n\u{1}'\\"
            .into();
        let a = row("a", "IT", "2026-01-01 00:00:01");
        assert_eq!(
            db.insert(&[tricky.clone(), a.clone(), a.clone()])
                .expect("insert"),
            [true, true, false],
            "the second copy in one batch is a duplicate"
        );
        assert_eq!(
            db.insert(&[a.clone(), row("b", "IT", "2026-01-01 00:00:02")])
                .expect("again"),
            [false, true]
        );
        assert_eq!(db.insert(&[]).expect("empty"), Vec::<bool>::new());
        assert_eq!(
            db.envelope("t").expect("read").as_deref(),
            Some(tricky.envelope.as_str())
        );
        assert_eq!(db.envelope("a").expect("read"), Some(a.envelope));
        assert_eq!(db.envelope("nope").expect("read"), None);
        assert_eq!(db.envelope("x' OR '1'='1").expect("read"), None);
        assert_eq!(ids(&db.query(&query()).expect("search")), ["t", "a", "b"]);
    }

    #[test]
    fn a_batch_whose_id_list_exceeds_the_default_query_size_is_checked() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        // 5,000 SHA-256-long ids: a duplicate check of about 340 KB, over the 256 KiB default.
        let rows: Vec<Row> = (0..5000)
            .map(|i| row(&format!("{i:064x}"), "IT", "2026-01-01 00:00:00"))
            .collect();
        let first = db.insert(&rows).expect("insert");
        assert!(first.iter().all(|n| *n), "all new");
        let again = db.insert(&rows).expect("insert again");
        assert!(again.iter().all(|n| !*n), "all duplicates");
        assert_eq!(
            server
                .query("SELECT count() FROM v.envelopes")
                .expect("count"),
            "5000\n"
        );
    }

    #[test]
    fn searches_filter_and_page_in_time_order() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        let mut rows = vec![
            row("m1", "IT", "2026-01-02 00:00:00"),
            row("m2", "IT", "2026-01-01 00:00:00"),
            row("m3", "IR", "2026-01-01 12:00:00"),
            row("m4", "IT", "2026-02-01 00:00:00"),
            row("m5", "IT", "2026-01-01 00:00:00"),
        ];
        rows[2].probe_asn = 197207;
        rows[2].blocking = Some("\"dns\"".into());
        rows[2].confirmed = true;
        rows[3].blocking = None;
        rows[3].accessible = None;
        rows[4].test_name = "canary".into();
        rows[4].input = None;
        rows[4].domain = None;
        db.insert(&rows).expect("insert");
        let search = |q: Query| ids(&db.query(&q).expect("search")).join(" ");
        assert_eq!(search(query()), "m2 m5 m3 m1 m4");
        assert_eq!(
            search(Query {
                cc: Some("it".into()),
                ..query()
            }),
            "m2 m5 m1 m4"
        );
        assert_eq!(
            search(Query {
                asn: Some(197207),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                test_name: Some("canary".into()),
                ..query()
            }),
            "m5"
        );
        assert_eq!(
            search(Query {
                domain: Some("M1.EXAMPLE".into()),
                ..query()
            }),
            "m1"
        );
        assert_eq!(
            search(Query {
                input: Some("https://m4.example/".into()),
                ..query()
            }),
            "m4"
        );
        assert_eq!(
            search(Query {
                blocking: Some("\"dns\"".into()),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                blocking: Some("null".into()),
                ..query()
            }),
            "m4"
        );
        assert_eq!(
            search(Query {
                confirmed: Some(true),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                since: Some("2026-01-01 12:00:00".into()),
                until: Some("2026-02-01 00:00:00".into()),
                ..query()
            }),
            "m3 m1"
        );
        assert_eq!(
            search(Query {
                cc: Some("IT' OR '1'='1".into()),
                ..query()
            }),
            ""
        );
        let found = db.query(&query()).expect("all");
        let m3 = &found[2];
        assert_eq!(
            (
                m3.probe_asn.as_str(),
                &m3.blocking,
                m3.accessible,
                m3.confirmed
            ),
            (
                "AS197207",
                &Some(serde_json::json!("dns")),
                Some(true),
                true
            )
        );
        assert_eq!(found[4].accessible, None);
        // Pages of two, each starting after the previous page's last row.
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = db
                .query(&Query {
                    limit: 2,
                    after: after.clone(),
                    ..query()
                })
                .expect("page");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|f| f.cursor.clone());
            pages.push(ids(&page).join(" "));
        }
        assert_eq!(pages, ["m2 m5", "m3 m1", "m4"]);
        let err = db
            .query(&Query {
                after: Some("12".into()),
                ..query()
            })
            .expect_err("a cursor of another store");
        assert_eq!(err.to_string(), "cursor \"12\" is not one this server gave");
    }

    #[test]
    fn the_same_measurement_through_two_nodes_shows_once() {
        let server = server();
        let one = ClickHouse::open(&server.url("v")).expect("node 1");
        let two = ClickHouse::open(&server.url("v")).expect("node 2");
        let r = row("dup", "IT", "2026-01-01 00:00:00");
        // Both nodes check before either writes: both find it new and both store it (what
        // `insert` does after finding it new), one of them with a different verdict.
        let mut other = r.clone();
        other.network_verified = false;
        other.blocking = Some("\"dns\"".into());
        one.store_new(&[&r]).expect("node 1 writes");
        two.store_new(&[&other]).expect("node 2 writes");
        assert_eq!(
            server
                .query("SELECT count() FROM v.measurements")
                .expect("count"),
            "2\n",
            "two copies on disk"
        );
        assert_eq!(ids(&one.query(&query()).expect("search")), ["dup"]);
        assert_eq!(ids(&two.query(&query()).expect("search")), ["dup"]);
        // Whichever verdict the search shows, it is one row, under either filter at most once.
        let by = |v: &str| {
            two.query(&Query {
                blocking: Some(v.into()),
                ..query()
            })
            .expect("search")
            .len()
        };
        assert_eq!(by("false") + by("\"dns\""), 1);
        assert_eq!(one.envelope("dup").expect("read"), Some(r.envelope.clone()));
        assert_eq!(two.page_for_rescore("", 10).expect("page").len(), 1);
        // From now on every node finds it stored.
        assert_eq!(
            one.insert(std::slice::from_ref(&r)).expect("insert"),
            [false]
        );
        assert_eq!(
            two.insert(std::slice::from_ref(&r)).expect("insert"),
            [false]
        );
        // And after the server merges the copies, one is left.
        server
            .query("OPTIMIZE TABLE v.measurements FINAL")
            .expect("merge");
        assert_eq!(
            server
                .query("SELECT count() FROM v.measurements")
                .expect("count"),
            "1\n"
        );
        assert_eq!(ids(&two.query(&query()).expect("search")), ["dup"]);
    }

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
    fn a_token_is_spent_once_even_through_two_nodes() {
        let server = server();
        let one = ClickHouse::open(&server.url("v")).expect("node 1");
        let two = ClickHouse::open(&server.url("v")).expect("node 2");
        one.add_token("t1").expect("token");
        assert_eq!(
            two.redeem_token("nope", "a").expect("redeem"),
            Redeemed::Unknown
        );
        assert_eq!(
            two.redeem_token("t1", "a").expect("redeem"),
            Redeemed::Enrolled
        );
        assert_eq!(one.key_state("a").expect("state"), Some(KeyState::Trusted));
        assert_eq!(
            one.redeem_token("t1", "a").expect("retry"),
            Redeemed::AlreadyEnrolled
        );
        assert_eq!(
            one.redeem_token("t1", "b").expect("redeem"),
            Redeemed::Spent
        );
        assert_eq!(one.key_state("b").expect("state"), None);
        one.set_key("r", KeyState::Revoked).expect("revoke");
        one.add_token("t2").expect("token");
        assert_eq!(
            two.redeem_token("t2", "r").expect("redeem"),
            Redeemed::Revoked
        );
        assert_eq!(one.key_state("r").expect("state"), Some(KeyState::Revoked));
        // Eight keys try one token at once through two nodes: one is enrolled.
        one.add_token("t3").expect("token");
        let one = std::sync::Arc::new(one);
        let two = std::sync::Arc::new(two);
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let node = if i % 2 == 0 { one.clone() } else { two.clone() };
                std::thread::spawn(move || node.redeem_token("t3", &format!("k{i}")))
            })
            .collect();
        let outcomes: Vec<Redeemed> = tries
            .into_iter()
            .map(|t| t.join().expect("thread").expect("redeem"))
            .collect();
        let enrolled = outcomes
            .iter()
            .filter(|o| **o == Redeemed::Enrolled)
            .count();
        assert_eq!(enrolled, 1, "{outcomes:?}");
        let trusted = one.keys().expect("keys");
        assert_eq!(
            trusted.iter().filter(|(k, _)| k.starts_with('k')).count(),
            1,
            "{trusted:?}"
        );
    }

    #[test]
    fn the_detector_lease_is_taken_renewed_and_taken_over_after_its_ttl() {
        let server = server();
        let a = ClickHouse::open(&server.url("v")).expect("node a");
        let b = ClickHouse::open(&server.url("v")).expect("node b");
        assert!(a.try_lease("a", 1000, 60).expect("take"));
        assert!(!b.try_lease("b", 1010, 60).expect("held"));
        assert!(a.try_lease("a", 1050, 60).expect("renew"));
        assert!(!b.try_lease("b", 1100, 60).expect("renewed at 1050"));
        // a stops renewing; 61 s after its last renewal b takes over.
        assert!(!b.try_lease("b", 1110, 60).expect("exactly the ttl"));
        assert!(b.try_lease("b", 1111, 60).expect("take over"));
        assert!(
            !a.try_lease("a", 1120, 60)
                .expect("a is back but b holds it")
        );
        assert!(b.try_lease("b", 1150, 60).expect("renew"));
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
            let sql = search::sorted_sql(q, "measurements_all", None).expect("sql");
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

    /// A measurement of `test` by `key` (or an import) for the comparison with SQLite.
    #[allow(clippy::too_many_arguments)]
    fn measured(
        id: &str,
        key: Option<&str>,
        asn: u32,
        test: &str,
        at: &str,
        blocking: Option<&str>,
        accessible: Option<bool>,
        verdict: Option<&str>,
        envelope: &str,
        verified: bool,
    ) -> Row {
        Row {
            id: id.into(),
            source: if key.is_some() { "vantage" } else { "ooni" }.into(),
            probe_key: key.map(Into::into),
            probe_cc: "IR".into(),
            probe_asn: asn,
            test_name: test.into(),
            input: Some(format!("https://{id}.example/")),
            domain: (test != "canary").then(|| format!("{id}.example")),
            measured_at: at.into(),
            blocking: blocking.map(Into::into),
            accessible,
            confirmed: false,
            rule_set: Some("1".into()),
            verdict: verdict.map(Into::into),
            envelope: envelope.into(),
            network_verified: verified,
        }
    }

    fn event(id: &str, kind: Kind, asn: Option<&str>, start: &str, end: Option<&str>) -> Event {
        Event {
            id: id.into(),
            entity: crate::store::model::Entity {
                cc: "IR".into(),
                asn: asn.map(Into::into),
                asns: Vec::new(),
            },
            kind,
            scope: if asn.is_some() {
                Scope::Network
            } else {
                Scope::Full
            },
            layer: None,
            category: None,
            targets: vec![format!("{id}.example")],
            start: start.into(),
            end: end.map(Into::into),
            status: if end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected: false,
            confidence: 0.9,
            probes: 3,
            evidence: vec![format!("m-{id}")],
            rate_kbps: None,
        }
    }

    fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v = v.to_vec();
        v.sort_by_key(|x| key(x));
        v
    }

    /// The signals and the detectors' inputs grouped at read time from ClickHouse's rows answer
    /// what SQLite's tables, added up at insert, answer for the same rows: measurements of
    /// every kind (keyed and imported, a time that does not read, a rescored verdict, a copy
    /// stored twice as two racing nodes would), heartbeats (verified or not, one repeated), and
    /// events replaced twice.
    #[test]
    fn the_signals_and_the_detectors_inputs_answer_as_sqlite_does() {
        let server = server();
        let ch = ClickHouse::open(&server.url("same")).expect("open clickhouse");
        let dir = std::env::temp_dir().join(format!("vantage-ch-same-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let lite = crate::store::Sqlite::open(&dir.join("agg.db")).expect("open sqlite");
        let stores: [&dyn Storage; 2] = [&lite, &ch];

        let canary = |ok: i64, total: i64| {
            format!("{{\"measurement\":{{\"test_keys\":{{\"ok\":{ok},\"total\":{total}}}}}}}")
        };
        let fast = Some("{\"goodput\":{\"probe_kbps\":812.5,\"below_control\":false}}");
        let slow = Some("{\"goodput\":{\"probe_kbps\":40,\"below_control\":true}}");
        let no_control = Some("{\"goodput\":{\"probe_kbps\":99.0}}");
        let throttled = Some("{\"ceiling_kbps\":128.0}");
        let rows = vec![
            measured(
                "w1",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-03-01 10:00:10",
                Some("\"dns\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "w2",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-03-01 10:01:00",
                Some("\"tcp_ip\""),
                Some(false),
                slow,
                "{}",
                true,
            ),
            measured(
                "w3",
                Some("k2"),
                3269,
                "web_connectivity",
                "2026-03-01 10:02:00",
                Some("\"tls\""),
                Some(false),
                None,
                "{}",
                false,
            ),
            measured(
                "w4",
                Some("k2"),
                3269,
                "web_connectivity",
                "2026-03-01 10:07:00",
                Some("\"http-diff\""),
                Some(false),
                no_control,
                "{}",
                false,
            ),
            measured(
                "w5",
                Some("k2"),
                44244,
                "web_connectivity",
                "2026-03-01 10:08:00",
                Some("false"),
                Some(true),
                fast,
                "{}",
                true,
            ),
            measured(
                "w6",
                None,
                44244,
                "web_connectivity",
                "2026-03-01 10:09:00",
                None,
                None,
                None,
                "{}",
                false,
            ),
            measured(
                "w7",
                Some("k1"),
                3269,
                "web_connectivity",
                "not a time",
                Some("\"dns\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "w8",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-02-28 23:59:59",
                Some("\"http-failure\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "c1",
                Some("k1"),
                3269,
                "canary",
                "2026-03-01 10:03:00",
                Some("false"),
                Some(true),
                None,
                &canary(5, 5),
                true,
            ),
            measured(
                "c2",
                Some("k1"),
                3269,
                "canary",
                "2026-03-01 10:20:00",
                Some("\"canary\""),
                Some(false),
                None,
                &canary(0, 5),
                false,
            ),
            measured(
                "c3",
                Some("k2"),
                3269,
                "canary",
                "2026-03-01 10:21:00",
                Some("\"canary\""),
                Some(false),
                None,
                &canary(1, 5),
                true,
            ),
            measured(
                "c4",
                None,
                3269,
                "canary",
                "2026-03-01 10:22:00",
                Some("false"),
                Some(true),
                None,
                &canary(4, 5),
                false,
            ),
            measured(
                "c5",
                Some("k3"),
                3269,
                "canary",
                "2026-03-01 10:23:00",
                None,
                None,
                None,
                "not json",
                true,
            ),
            measured(
                "t1",
                Some("k1"),
                3269,
                "throttling",
                "2026-03-01 10:04:00",
                Some("\"throttling\""),
                Some(false),
                throttled,
                "{}",
                true,
            ),
            measured(
                "t2",
                Some("k3"),
                44244,
                "throttling",
                "2026-03-01 10:30:00",
                Some("false"),
                Some(true),
                None,
                "{}",
                false,
            ),
        ];
        let beats = [
            ("k1", 3269, "2026-03-01 10:00:30", true),
            ("k1", 3269, "2026-03-01 10:04:59", false),
            ("k1", 3269, "2026-03-01 10:04:59", false),
            ("k2", 3269, "2026-03-01 10:06:00", true),
            ("k3", 44244, "2026-03-01 10:31:00", true),
            ("k3", 44244, "2026-03-02 09:00:00", true),
            ("k4", 3269, "garbage", true),
        ];
        for db in stores {
            let added = db.insert(&rows).expect("insert");
            assert!(added.iter().all(|a| *a));
            for (key, asn, at, verified) in beats {
                db.heartbeat(key, "IR", asn, at, verified)
                    .expect("heartbeat");
            }
            let mut rescored = rows[0].clone();
            rescored.blocking = Some("\"tls\"".into());
            rescored.verdict = slow.map(Into::into);
            db.update_verdict(&rescored).expect("rescore");
        }
        // Two nodes that both found a measurement and a heartbeat new stored them twice.
        let first: Vec<&Row> = rows.iter().take(3).collect();
        ch.store_new(&first).expect("a racing node's copy");
        ch.execute(
            "a racing node's heartbeat",
            "INSERT INTO heartbeats (probe_key, probe_cc, probe_asn, sent_at, received_at,
             network_verified, sent_ts) VALUES ('k2', 'IR', 3269, '2026-03-01 10:06:00', 0, 1, 1772359560)",
        )
        .expect("copy");

        let by_bin = |b: &ProbeBin| (b.bin, b.asn, b.key.clone());
        let answers = |db: &dyn Storage| {
            (
                sorted(
                    &db.probe_bins("IR", None, 0, i64::MAX).expect("bins"),
                    by_bin,
                ),
                sorted(
                    &db.probe_bins("IR", Some(3269), 0, i64::MAX).expect("bins"),
                    by_bin,
                ),
                sorted(
                    &db.probe_bins(
                        "IR",
                        None,
                        bin_of_test("2026-03-01 10:05:00"),
                        bin_of_test("2026-03-01 10:25:00"),
                    )
                    .expect("bins"),
                    by_bin,
                ),
                db.probe_bins("IT", None, 0, i64::MAX).expect("bins"),
                db.contacts("IR", 3269, 0).expect("contacts"),
                db.contacts("IR", 44244, bin_of_test("2026-03-01 10:20:00"))
                    .expect("contacts"),
            )
        };
        let (l, c) = (answers(&lite), answers(&ch));
        assert!(
            !l.0.is_empty() && !l.4.is_empty(),
            "the test has data: {l:?}"
        );
        assert_eq!(c, l);
        // What the counters hold, not only that they agree.
        let k1 =
            l.0.iter()
                .find(|b| b.key == "k1" && b.bin == bin_of_test("2026-03-01 10:00:00"))
                .expect("k1's bin");
        assert_eq!(
            (
                k1.online,
                k1.heartbeats,
                k1.canary_ok,
                k1.canary_checks,
                k1.measurements,
                k1.anomalies
            ),
            (true, 2, 5, 5, 2, [0, 1, 1, 0]),
            "w1 rescored from dns to tls: {k1:?}"
        );

        let verdicts = |db: &dyn Storage| {
            let from = parse_time("2026-03-01 00:00:00").expect("time");
            (
                sorted(&db.web_verdicts("IR", from).expect("web"), |v| v.id.clone()),
                sorted(
                    &db.throttling_verdicts("IR", from).expect("throttling"),
                    |v| v.id.clone(),
                ),
                sorted(&db.rate_samples("IR", 0).expect("rates"), |v| v.id.clone()),
                sorted(
                    &db.failed_canaries("IR", from, from + 86_400)
                        .expect("canaries"),
                    |v| v.clone(),
                ),
                db.failed_canaries("IR", from, parse_time("2026-03-01 10:20:30").expect("t"))
                    .expect("canaries"),
                db.active_countries(bin_of_test("2026-03-01 10:30:00"))
                    .expect("active"),
                sorted(&db.recent_networks("IR", 0).expect("networks"), |a| *a),
                db.countries().expect("countries"),
            )
        };
        let (l, c) = (verdicts(&lite), verdicts(&ch));
        assert_eq!(l.0.len(), 6, "w1..w6 with a time since the 1st: {:?}", l.0);
        assert_eq!(
            l.2.iter().filter(|r| r.below_control == Some(true)).count(),
            2
        );
        assert_eq!(l.4, vec![("c2".to_string(), Some("k1".to_string()))]);
        assert_eq!(c, l);

        let grid = ["k1", "k2", "k3", "k4"];
        for key in grid {
            for asn in [3269, 44244] {
                for at in [
                    "2026-03-01 10:00:00",
                    "2026-03-01 10:10:00",
                    "2026-03-02 12:00:00",
                ] {
                    let at = parse_time(at).expect("t");
                    for window in [0, 600, 86_400] {
                        let day = at.div_euclid(86_400);
                        let ask = |db: &dyn Storage| {
                            db.vouches("IR", None, day - 1, day)
                                .expect("vouches")
                                .vouch(key, asn, at, window)
                        };
                        assert_eq!(
                            ask(&ch),
                            ask(&lite),
                            "{key} AS{asn} at {at} within {window}"
                        );
                    }
                }
            }
        }
        let one = |db: &dyn Storage| db.vouches("IR", Some(44244), 0, 30_000).expect("vouches");
        assert!(one(&lite).vouch(
            "k3",
            44244,
            parse_time("2026-03-02 09:00:00").expect("t"),
            0
        ));
        assert!(one(&ch).vouch(
            "k3",
            44244,
            parse_time("2026-03-02 09:00:00").expect("t"),
            0
        ));
        assert!(!one(&ch).vouch("k1", 3269, parse_time("2026-03-01 10:00:30").expect("t"), 0));

        // Events: a first pass, then a second that replaces those from 10:00 on.
        let old = event(
            "e-old",
            Kind::Shutdown,
            None,
            "2026-02-27 08:00:00",
            Some("2026-02-27 09:00:00"),
        );
        let a = event(
            "e-a",
            Kind::Shutdown,
            Some("AS3269"),
            "2026-03-01 10:20:00",
            None,
        );
        let b = event(
            "e-b",
            Kind::Blocking,
            Some("AS44244"),
            "2026-03-01 10:00:00",
            Some("2026-03-01 11:00:00"),
        );
        let a2 = event(
            "e-a",
            Kind::Shutdown,
            Some("AS3269"),
            "2026-03-01 10:20:00",
            Some("2026-03-01 10:40:00"),
        );
        let c2 = event(
            "e-c",
            Kind::Shutdown,
            Some("AS44244"),
            "2026-03-01 10:30:00",
            None,
        );
        let ask = |db: &dyn Storage| {
            let all = TimelineQuery {
                cc: Some("ir".into()),
                since: 0,
                until: i64::MAX,
                ..TimelineQuery::default()
            };
            (
                db.timeline(&all).expect("timeline"),
                db.timeline(&TimelineQuery {
                    asn: Some(44244),
                    ..all.clone()
                })
                .expect("timeline"),
                db.timeline(&TimelineQuery {
                    kind: Some(Kind::Blocking),
                    ..all.clone()
                })
                .expect("timeline"),
                db.timeline(&TimelineQuery {
                    since: parse_time("2026-03-01 10:50:00").expect("t"),
                    ..all.clone()
                })
                .expect("timeline"),
                db.events_since(
                    "IR",
                    parse_time("2026-03-01 10:45:00").expect("t"),
                    &[Kind::Blocking, Kind::Shutdown],
                )
                .expect("since"),
                db.countries().expect("countries"),
            )
        };
        let mut first_pass = Vec::new();
        for db in stores {
            db.replace_events(
                "IR",
                0,
                &[Kind::Shutdown, Kind::Blocking],
                &[old.clone(), a.clone(), b.clone()],
            )
            .expect("first pass");
            first_pass.push(ask(db));
        }
        assert_eq!(first_pass[0].0, vec![old.clone(), b.clone(), a.clone()]);
        assert_eq!(first_pass[1], first_pass[0]);
        let mut second_pass = Vec::new();
        for db in stores {
            let from = parse_time("2026-03-01 10:00:00").expect("t");
            db.replace_events("IR", from, &[Kind::Shutdown], &[a2.clone(), c2.clone()])
                .expect("second pass");
            second_pass.push(ask(db));
        }
        // The shutdowns from 10:00 are replaced; the old one and the blocking event stay.
        assert_eq!(second_pass[0].0, vec![old, b.clone(), a2, c2.clone()]);
        assert_eq!(second_pass[0].4, vec![b, c2]);
        assert_eq!(second_pass[1], second_pass[0]);
        // Replacing with nothing empties the window.
        for db in stores {
            db.replace_events("IR", 0, &[Kind::Shutdown, Kind::Blocking], &[])
                .expect("third pass");
        }
        assert_eq!(ask(&ch), ask(&lite));
        assert!(ask(&ch).0.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn bin_of_test(at: &str) -> i64 {
        crate::store::model::bin_of(at).expect("a time")
    }

    /// What `migrate` reads: every measurement once in id order across pages (copies two
    /// racing nodes both stored included), each with its envelope and newest verdict, the same
    /// rows when asked by id, and every heartbeat once in (key, time) order.
    #[test]
    fn a_store_is_read_whole_a_page_at_a_time() {
        let server = server();
        let db = ClickHouse::open(&server.url("pages")).expect("open");
        let rows: Vec<Row> = (0..7)
            .map(|i| {
                row(
                    &format!("m{i}"),
                    ["IR", "IT"][i % 2],
                    &format!("2026-01-0{} 10:00:00", i + 1),
                )
            })
            .collect();
        db.insert(&rows).expect("insert");
        // A racing copy of m3, and a newer verdict for m5.
        db.store_new(&[&rows[3]]).expect("racing copy");
        let mut rescored = rows[5].clone();
        rescored.blocking = Some("\"dns\"".into());
        rescored.verdict = Some("{\"again\":1}".into());
        db.update_verdict(&rescored).expect("rescore");
        let mut want = rows.clone();
        want[5] = rescored.clone();
        let mut got: Vec<Row> = Vec::new();
        loop {
            let page = db
                .rows_page(got.last().map(|r| r.id.as_str()), 3)
                .expect("page");
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            got.extend(page);
        }
        assert_eq!(got, want);
        assert_eq!(db.measurement_count().expect("count"), 7);
        assert_eq!(
            db.stored_rows(&["m5", "nothing", "m3", "m5"])
                .expect("by id"),
            vec![want[3].clone(), rescored]
        );
        assert!(db.stored_rows(&[]).expect("none").is_empty());

        for (key, at) in [("k2", "2026-01-01 10:00:00"), ("k1", "2026-01-02 10:00:00")] {
            assert!(db.heartbeat(key, "IR", 7, at, key == "k1").expect("beat"));
        }
        // A copy of one, as two racing nodes may leave.
        server
            .query(
                "INSERT INTO pages.heartbeats (probe_key, probe_cc, probe_asn, sent_at,
                 received_at, network_verified) VALUES ('k2', 'IR', 7, '2026-01-01 10:00:00', 0, 0)",
            )
            .expect("racing copy");
        let first = db.heartbeats_page(None, 1).expect("page");
        let rest = db
            .heartbeats_page(Some(("k1", "2026-01-02 10:00:00")), 10)
            .expect("page");
        let beat = |key: &str, at: &str, verified| StoredHeartbeat {
            key: key.into(),
            cc: "IR".into(),
            asn: 7,
            sent_at: at.into(),
            verified,
        };
        assert_eq!(first, [beat("k1", "2026-01-02 10:00:00", true)]);
        assert_eq!(rest, [beat("k2", "2026-01-01 10:00:00", false)]);
        // A page recorded at once: the ones already there (and a repeat) are skipped, and
        // what is new counts in the signals as one recorded alone does.
        let page = [
            beat("k1", "2026-01-02 10:00:00", true),
            beat("k3", "2026-01-03 10:00:00", true),
            beat("k3", "2026-01-03 10:00:00", true),
        ];
        assert_eq!(db.record_heartbeats(&page).expect("page"), 1);
        assert_eq!(db.record_heartbeats(&page).expect("again"), 0);
        assert_eq!(db.heartbeat_count("IR").expect("count"), 3);
        let day = bin_of_test("2026-01-03 10:00:00") * BIN_SECONDS / 86_400;
        assert!(db.vouches("IR", None, day, day).expect("vouches").vouch(
            "k3",
            7,
            parse_time("2026-01-03 10:00:00").expect("t"),
            0
        ));
    }
}
