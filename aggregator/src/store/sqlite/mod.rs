//! The aggregator's storage: measurements (the signed envelope kept byte for byte, plus the
//! columns researchers filter on and the stored verdict) and probe keys.
//!
//! [`Storage`] is the interface the server uses; [`Sqlite`] implements it with one embedded file
//! (bundled SQLite, WAL, numbered migrations), so one binary is enough to start. A server database
//! can implement the same trait later. No table holds an IP address.
//!
//! One connection writes; a small pool of read-only connections answers the searches. In WAL
//! mode a reader works from the last committed snapshot beside a writer in the middle of a
//! transaction (<https://sqlite.org/wal.html>, "Concurrency"), so a researcher's search never
//! waits for an upload's batch to commit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use vantage_probe::migrate::{MigrateError, open_migrated};

use super::log::{LogStore, NoLog};
use super::model::{
    Arrival, Event, Kind, ProbeBin, ProbeContacts, RateSample, ThrottlingObservation,
    TimelineQuery, VerdictRow, Vouches,
};
use super::{
    DbError, Found, ImportedFile, KeyState, Query, Redeemed, Route, Row, Storage, StoredHeartbeat,
    now,
};

mod detect;
mod log;
mod signals;

const MIGRATIONS: &[&str] = &[
    // 1: measurements and keys.
    "CREATE TABLE measurements (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        probe_key TEXT,
        probe_cc TEXT NOT NULL,
        probe_asn INTEGER NOT NULL,
        test_name TEXT NOT NULL,
        input TEXT,
        domain TEXT,
        measured_at TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        blocking TEXT,
        accessible INTEGER,
        confirmed INTEGER NOT NULL DEFAULT 0,
        rule_set TEXT,
        verdict TEXT,
        envelope TEXT NOT NULL
    );
    CREATE INDEX measurements_cc_time ON measurements(probe_cc, measured_at);
    CREATE INDEX measurements_domain ON measurements(domain, measured_at);
    CREATE TABLE probe_keys (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );",
    // 2: heartbeats, the "probe alive" signal.
    "CREATE TABLE heartbeats (
        probe_key TEXT NOT NULL,
        probe_cc TEXT NOT NULL,
        probe_asn INTEGER NOT NULL,
        sent_at TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (probe_key, sent_at)
    );
    CREATE INDEX heartbeats_network ON heartbeats(probe_cc, probe_asn, sent_at);",
    // 3: one-time enrolment tokens, kept as SHA-256 so a copy of the file enrols nobody.
    "CREATE TABLE enrolment_tokens (
        token_sha256 TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        used_by TEXT,
        used_at INTEGER
    );",
    // 4: pages come in time order (measured_at, then rowid), which these indexes give without
    // sorting, for searches by time alone or by network.
    "CREATE INDEX measurements_time ON measurements(measured_at);
    CREATE INDEX measurements_asn_time ON measurements(probe_asn, measured_at);",
    // 5: how far compaction had got (replaced by 6).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 6: envelopes move out of `measurements` into a table of their own while they wait for
    // compaction and another once compressed. Compacting a row then deletes it from the first
    // (whole pages return to the free list, for the next inserts) and appends it to the second
    // (densely packed), instead of leaving a hole in a page nothing would fill again. `seq`
    // makes the link a declared INTEGER PRIMARY KEY, which VACUUM cannot renumber.
    "CREATE TABLE measurements_v6 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        probe_key TEXT,
        probe_cc TEXT NOT NULL,
        probe_asn INTEGER NOT NULL,
        test_name TEXT NOT NULL,
        input TEXT,
        domain TEXT,
        measured_at TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        blocking TEXT,
        accessible INTEGER,
        confirmed INTEGER NOT NULL DEFAULT 0,
        rule_set TEXT,
        verdict TEXT
    );
    CREATE TABLE envelopes_raw (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE envelopes_packed (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
    INSERT INTO measurements_v6 (seq, id, source, probe_key, probe_cc, probe_asn, test_name,
        input, domain, measured_at, received_at, blocking, accessible, confirmed, rule_set, verdict)
        SELECT rowid, id, source, probe_key, probe_cc, probe_asn, test_name, input, domain,
        measured_at, received_at, blocking, accessible, confirmed, rule_set, verdict
        FROM measurements;
    INSERT INTO envelopes_raw SELECT rowid, envelope FROM measurements
        WHERE typeof(envelope) = 'text';
    INSERT INTO envelopes_packed SELECT rowid, envelope FROM measurements
        WHERE typeof(envelope) = 'blob';
    DROP TABLE measurements;
    ALTER TABLE measurements_v6 RENAME TO measurements;
    CREATE INDEX measurements_cc_time ON measurements(probe_cc, measured_at);
    CREATE INDEX measurements_domain ON measurements(domain, measured_at);
    CREATE INDEX measurements_time ON measurements(measured_at);
    CREATE INDEX measurements_asn_time ON measurements(probe_asn, measured_at);
    DELETE FROM meta WHERE key = 'compacted_rowid';",
    // 7: signals in 5-minute bins, filled from what is already stored.
    signals::MIGRATION,
    // 8: what each probe's contacts say about its connectivity, and the events.
    detect::MIGRATION,
    // 9: detection asks every minute which countries and networks were heard from recently.
    "CREATE INDEX signal_bins_recent ON signal_bins (bin, cc, asn);",
    // 10: whether each contact came from inside the network it claims, and the signals per
    // probe key, so that each key is one vote.
    signals::VOTES_MIGRATION,
    // 11: the files `import-ooni` read to their end, so that the next import skips them.
    "CREATE TABLE imported_files (
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        measurements INTEGER NOT NULL,
        stored INTEGER NOT NULL,
        duplicate INTEGER NOT NULL,
        skipped INTEGER NOT NULL,
        tests TEXT NOT NULL,
        imported_at INTEGER NOT NULL,
        PRIMARY KEY (path, size)
    );",
    // 12: the transparency log: leaves, stored hashes and checkpoints (`log.rs`).
    log::MIGRATION,
    // 13: the logged heartbeats' and enrolments' leaves, and a heartbeat's envelope (`log.rs`).
    log::ENTRIES_MIGRATION,
    // 14: the witnesses' cosignatures of checkpoints (`log.rs`).
    log::COSIGNATURES_MIGRATION,
    // 15: how each measurement arrived (`store::Route`, docs/carry.md): rows stored before
    // were uploads, or imports when no probe signed them; a relay keeps the relayer's key,
    // never an address.
    "ALTER TABLE measurements ADD COLUMN route TEXT NOT NULL DEFAULT 'upload';
    ALTER TABLE measurements ADD COLUMN relayed_by TEXT;
    UPDATE measurements SET route = 'import' WHERE probe_key IS NULL;",
];

/// Read-only connections opened beside the writer: enough for the server's concurrent searches
/// on a small machine; a search beyond that waits for a reader, never for the writer.
const READERS: usize = 4;

/// SQLite storage.
#[derive(Debug)]
pub struct Sqlite {
    /// Read-only connections for the methods that only read (see [`Sqlite::read`]). Declared
    /// before the writer so that they close first (fields drop in order): the last connection
    /// to close checkpoints the WAL into the file and deletes it
    /// (<https://sqlite.org/wal.html>, "Persistence of WAL mode"), which a read-only one cannot.
    readers: Vec<Mutex<Connection>>,
    /// The one connection that writes (inserts, keys, verdicts, compaction, tokens, events).
    conn: Mutex<Connection>,
    /// Where the next read starts looking for a free reader.
    next_reader: AtomicUsize,
    path: String,
    /// Whether stored signed measurements are appended to the transparency log (`log.rs`);
    /// false only for `serve --no-log`.
    logging: bool,
}

impl Sqlite {
    /// Opens or creates the database at `path`, appending to the transparency log every signed
    /// measurement stored without it since the last leaf (`log::catch_up`).
    pub fn open(path: &Path) -> Result<Sqlite, DbError> {
        let mut db = Self::open_without_log(path)?;
        db.with(log::catch_up)?;
        db.logging = true;
        Ok(db)
    }

    /// Opens or creates the database at `path` without the transparency log: nothing stored
    /// through it is appended, and [`Storage::log`] says so (`serve --no-log`).
    pub fn open_without_log(path: &Path) -> Result<Sqlite, DbError> {
        let display = path.display().to_string();
        let mut conn = open_migrated(path, MIGRATIONS, "NORMAL").map_err(|e| match e {
            MigrateError::Sqlite(source) => DbError::Sqlite {
                path: display.clone(),
                source,
            },
            MigrateError::TooNew { found, known } => DbError::TooNew {
                path: display.clone(),
                found,
                known,
            },
        })?;
        // Another process may write the same file: `ingest`, `timeline` or `query` beside a
        // running `serve` (docs/carry.md). A transaction that reads before it writes (the log's
        // next leaf, then the append) cannot wait for the other writer once it has read: SQLite
        // answers "database is locked" at once (<https://sqlite.org/lang_transaction.html>,
        // "Read transactions"). Taking the write lock at BEGIN makes it wait its turn instead,
        // for the busy timeout, and nothing it read can change before it writes.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        // Opened only once the writer has migrated the file and switched it to WAL: a
        // read-only connection can neither migrate nor change the journal mode.
        let readers = (0..READERS)
            .map(|_| open_reader(path).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|source| DbError::Sqlite {
                path: display.clone(),
                source,
            })?;
        Ok(Sqlite {
            readers,
            conn: Mutex::new(conn),
            next_reader: AtomicUsize::new(0),
            path: display,
            logging: false,
        })
    }

    /// Runs `f` on the writer connection, the only one that may change the file.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn).map_err(|source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` on a free read-only connection; it sees every transaction committed before it
    /// starts and never waits for the writer. When every reader is busy it waits for one of
    /// them (in turn), not for the writer. `f` gets a shared reference, so it cannot open a
    /// transaction, and the connection is opened read-only, so it cannot write either.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, DbError> {
        let conn = self.reader();
        f(&conn).map_err(|source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(conn) => return conn,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stores measurement rows inside one transaction (`log::Sqlite::insert_rows` adds their leaves).
struct Inserter<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    row: rusqlite::CachedStatement<'t>,
    body: rusqlite::CachedStatement<'t>,
    received: i64,
}

impl<'t> Inserter<'t> {
    fn new(tx: &'t rusqlite::Transaction<'t>) -> rusqlite::Result<Self> {
        Ok(Inserter {
            tx,
            row: tx.prepare_cached(
                "INSERT OR IGNORE INTO measurements (id, source, probe_key, probe_cc, probe_asn,
                 test_name, input, domain, measured_at, received_at, blocking, accessible,
                 confirmed, rule_set, verdict, network_verified, leaf, route, relayed_by)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
            )?,
            body: tx.prepare_cached("INSERT INTO envelopes_raw (seq, body) VALUES (?1, ?2)")?,
            received: now(),
        })
    }

    /// Stores `r` with its envelope and signals, naming its transparency log leaf `leaf`
    /// (which the caller appends when it is new), as received at `received` (now when `None`);
    /// false when its id was already stored.
    fn row(&mut self, r: &Row, leaf: Option<u64>, received: Option<i64>) -> rusqlite::Result<bool> {
        let leaf = leaf
            .map(i64::try_from)
            .transpose()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
        let n = self.row.execute(params![
            r.id,
            r.source,
            r.probe_key,
            r.probe_cc,
            r.probe_asn,
            r.test_name,
            r.input,
            r.domain,
            r.measured_at,
            received.unwrap_or(self.received),
            r.blocking,
            r.accessible,
            r.confirmed,
            r.rule_set,
            r.verdict,
            r.network_verified,
            leaf,
            r.route.name(),
            r.route.relayed_by()
        ])?;
        if n > 0 {
            self.body
                .execute(params![self.tx.last_insert_rowid(), r.envelope])?;
            signals::record_row(self.tx, r)?;
        }
        Ok(n > 0)
    }
}

/// Records a heartbeat and its signals inside `tx`; false when the same one (key and sending
/// time) was already recorded. The log's `heartbeat_logged` appends its leaf in the same
/// transaction.
fn record_heartbeat(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    cc: &str,
    asn: u32,
    (sent_at, received): (&str, Option<i64>),
    verified: bool,
) -> rusqlite::Result<bool> {
    let received = received.unwrap_or_else(now);
    let new = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO heartbeats (probe_key, probe_cc, probe_asn, sent_at,
             received_at, network_verified) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![key, cc, asn, sent_at, received, verified])?
        > 0;
    if new {
        signals::record_heartbeat(tx, key, cc, asn, (sent_at, received), verified)?;
    }
    Ok(new)
}

/// Spends a token for `key` and trusts the key inside `tx`. The log's `redeem_logged` appends
/// the enrolment's leaf in the same transaction.
fn redeem(
    tx: &rusqlite::Transaction<'_>,
    token_sha256: &str,
    key: &str,
) -> rusqlite::Result<Redeemed> {
    let used_by: Option<Option<String>> = tx
        .query_row(
            "SELECT used_by FROM enrolment_tokens WHERE token_sha256 = ?1",
            [token_sha256],
            |r| r.get(0),
        )
        .optional()?;
    let state: Option<String> = tx
        .query_row("SELECT state FROM probe_keys WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    let outcome = match used_by {
        None => Redeemed::Unknown,
        Some(_) if state.as_deref() == Some(KeyState::Revoked.as_str()) => Redeemed::Revoked,
        Some(Some(by)) if by == key => Redeemed::AlreadyEnrolled,
        Some(Some(_)) => Redeemed::Spent,
        Some(None) => {
            tx.execute(
                "UPDATE enrolment_tokens SET used_by = ?2, used_at = ?3
                     WHERE token_sha256 = ?1",
                params![token_sha256, key, now()],
            )?;
            tx.execute(
                "INSERT INTO probe_keys (key, state, first_seen, last_seen)
                     VALUES (?1, 'trusted', ?2, ?2)
                     ON CONFLICT(key) DO UPDATE SET state = 'trusted', last_seen = ?2",
                params![key, now()],
            )?;
            Redeemed::Enrolled
        }
    };
    Ok(outcome)
}

/// One read-only connection to the migrated file at `path`, waiting as the writer does when
/// the file is briefly locked (a checkpoint, the recovery of a WAL left by a crash).
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// An envelope column as stored: text as received, or a zstd frame once compacted.
fn stored_envelope(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    match r.get::<_, rusqlite::types::Value>(i)? {
        rusqlite::types::Value::Text(t) => Ok(t),
        rusqlite::types::Value::Blob(b) => super::compact::unpack(&b).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e))
        }),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "envelope".into(),
            other.data_type(),
        )),
    }
}

/// The SQL and arguments of a search. Every filter combination the API offers is served by an
/// index in `(…, measured_at)` order, so a page costs the same on 10 million rows as on ten.
fn search_sql(q: &Query) -> Result<(String, Vec<rusqlite::types::Value>), DbError> {
    let mut sql = String::from(
        "SELECT id, source, probe_cc, probe_asn, test_name, input, measured_at, blocking,
             accessible, confirmed, rule_set, rowid, route, relayed_by FROM measurements WHERE 1=1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, value: rusqlite::types::Value| {
        sql.push_str(&format!(" AND {clause} ?{}", args.len() + 1));
        args.push(value);
    };
    use rusqlite::types::Value as V;
    if let Some(v) = &q.cc {
        add("probe_cc =", V::Text(v.to_ascii_uppercase()));
    }
    if let Some(v) = q.asn {
        add("probe_asn =", V::Integer(i64::from(v)));
    }
    if let Some(v) = &q.test_name {
        add("test_name =", V::Text(v.clone()));
    }
    if let Some(v) = &q.domain {
        add("domain =", V::Text(v.to_ascii_lowercase()));
    }
    if let Some(v) = &q.input {
        add("input =", V::Text(v.clone()));
    }
    if let Some(v) = &q.blocking {
        // An undetermined verdict is stored as SQL NULL; `IS` matches it and uses the index.
        if v == "null" {
            add("blocking IS", V::Null);
        } else {
            add("blocking =", V::Text(v.clone()));
        }
    }
    if let Some(v) = q.confirmed {
        add("confirmed =", V::Integer(i64::from(v)));
    }
    if let Some(v) = &q.since {
        add("measured_at >=", V::Text(v.clone()));
    }
    if let Some(v) = &q.until {
        add("measured_at <", V::Text(v.clone()));
    }
    if let Some(cursor) = &q.after {
        // The cursor is the rowid of the page's last row.
        let v: i64 = cursor
            .parse()
            .map_err(|_| DbError::BadCursor(cursor.clone()))?;
        args.push(V::Integer(v));
        let n = args.len();
        sql.push_str(&format!(
            " AND (measured_at, rowid) > \
                 ((SELECT measured_at FROM measurements WHERE rowid = ?{n}), ?{n})"
        ));
    }
    sql.push_str(&format!(" ORDER BY measured_at, rowid LIMIT {}", q.limit));
    Ok((sql, args))
}

impl Storage for Sqlite {
    fn key_state(&self, key: &str) -> Result<Option<KeyState>, DbError> {
        let state: Option<String> = self.read(|c| {
            c.query_row("SELECT state FROM probe_keys WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
        })?;
        Ok(state.map(|s| {
            if s == "revoked" {
                KeyState::Revoked
            } else {
                KeyState::Trusted
            }
        }))
    }

    fn set_key(&self, key: &str, state: KeyState) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO probe_keys (key, state, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(key) DO UPDATE SET state = excluded.state, last_seen = excluded.last_seen",
                params![key, state.as_str(), now()],
            )
            .map(|_| ())
        })
    }

    fn insert(&self, rows: &[Row]) -> Result<Vec<bool>, DbError> {
        Ok(self.insert_rows(rows)?.into_iter().map(|s| s.new).collect())
    }

    fn insert_received(
        &self,
        rows: &[Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<Vec<bool>, DbError> {
        Ok(self
            .insert_rows_received(rows, received)?
            .into_iter()
            .map(|s| s.new)
            .collect())
    }

    fn envelope(&self, id: &str) -> Result<Option<String>, DbError> {
        self.read(|c| {
            c.query_row(
                "SELECT coalesce(p.body, r.body) FROM measurements m
                 LEFT JOIN envelopes_packed p ON p.seq = m.seq
                 LEFT JOIN envelopes_raw r ON r.seq = m.seq
                 WHERE m.id = ?1",
                [id],
                |r| stored_envelope(r, 0),
            )
            .optional()
        })
    }

    fn query(&self, q: &Query) -> Result<Vec<Found>, DbError> {
        let (sql, args) = search_sql(q)?;
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            stmt.query_map(params_from_iter(args.iter()), |r| {
                let blocking: Option<String> = r.get(7)?;
                let asn: i64 = r.get(3)?;
                Ok(Found {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    probe_cc: r.get(2)?,
                    probe_asn: format!("AS{asn}"),
                    test_name: r.get(4)?,
                    input: r.get(5)?,
                    measured_at: r.get(6)?,
                    blocking: blocking.and_then(|b| serde_json::from_str(&b).ok()),
                    accessible: r.get(8)?,
                    confirmed: r.get(9)?,
                    rule_set: r.get(10)?,
                    cursor: r.get::<_, i64>(11)?.to_string(),
                    route: r.get(12)?,
                    relayed_by: r.get(13)?,
                })
            })?
            .collect()
        })
    }

    fn page_for_rescore(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>, DbError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT m.id, m.source, coalesce(p.body, r.body) FROM measurements m
                 LEFT JOIN envelopes_packed p ON p.seq = m.seq
                 LEFT JOIN envelopes_raw r ON r.seq = m.seq
                 WHERE m.test_name IN ({}) AND m.id > ?1 ORDER BY m.id LIMIT ?2",
                super::scored_tests_sql()
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            stmt.query_map(params![after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, stored_envelope(r, 2)?))
            })?
            .collect()
        })
    }

    fn update_verdict(&self, row: &Row) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            signals::rescored(&tx, &row.id, row.blocking.as_deref())?;
            tx.execute(
                "UPDATE measurements SET blocking = ?2, accessible = ?3, confirmed = ?4,
                 rule_set = ?5, verdict = ?6, domain = coalesce(domain, ?7) WHERE id = ?1",
                params![
                    row.id,
                    row.blocking,
                    row.accessible,
                    row.confirmed,
                    row.rule_set,
                    row.verdict,
                    row.domain
                ],
            )?;
            tx.commit()
        })
    }

    fn probe_bins(
        &self,
        cc: &str,
        asn: Option<u32>,
        from_bin: i64,
        to_bin: i64,
    ) -> Result<Vec<ProbeBin>, DbError> {
        self.read(|c| signals::probe_bins(c, cc, asn, from_bin, to_bin))
    }

    fn vouches(
        &self,
        cc: &str,
        asn: Option<u32>,
        first_day: i64,
        last_day: i64,
    ) -> Result<Vouches, DbError> {
        self.read(|c| signals::vouches(c, cc, asn, first_day, last_day))
    }

    fn active_countries(&self, from_bin: i64) -> Result<Vec<String>, DbError> {
        self.read(|c| detect::active_countries(c, from_bin))
    }

    fn recent_networks(&self, cc: &str, from_bin: i64) -> Result<Vec<u32>, DbError> {
        self.read(|c| detect::recent_networks(c, cc, from_bin))
    }

    fn contacts(&self, cc: &str, asn: u32, from_bin: i64) -> Result<Vec<ProbeContacts>, DbError> {
        self.read(|c| detect::contacts(c, cc, asn, from_bin))
    }

    fn failed_canaries(
        &self,
        cc: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(String, Option<String>)>, DbError> {
        self.read(|c| detect::failed_canaries(c, cc, from, to))
    }

    fn web_verdicts(&self, cc: &str, from: i64) -> Result<Vec<VerdictRow>, DbError> {
        self.read(|c| detect::web_verdicts(c, cc, from))
    }

    fn throttling_verdicts(
        &self,
        cc: &str,
        from: i64,
    ) -> Result<Vec<ThrottlingObservation>, DbError> {
        self.read(|c| detect::throttling_verdicts(c, cc, from))
    }

    fn rate_samples(&self, cc: &str, from: i64) -> Result<Vec<RateSample>, DbError> {
        self.read(|c| detect::rate_samples(c, cc, from))
    }

    fn events_since(&self, cc: &str, from: i64, kinds: &[Kind]) -> Result<Vec<Event>, DbError> {
        self.read(|c| detect::events_since(c, cc, from, kinds))
    }

    fn replace_events(
        &self,
        cc: &str,
        from: i64,
        kinds: &[Kind],
        events: &[Event],
    ) -> Result<(), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            detect::replace_events(&tx, cc, from, kinds, events)?;
            tx.commit()
        })
    }

    fn timeline(&self, q: &TimelineQuery) -> Result<Vec<Event>, DbError> {
        self.read(|c| detect::timeline(c, q))
    }

    fn countries(&self) -> Result<Vec<(String, i64, i64)>, DbError> {
        self.read(detect::countries)
    }

    fn heartbeat(
        &self,
        key: &str,
        cc: &str,
        asn: u32,
        sent_at: &str,
        verified: bool,
    ) -> Result<bool, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let new = record_heartbeat(&tx, key, cc, asn, (sent_at, None), verified)?;
            tx.commit()?;
            Ok(new)
        })
    }

    fn heartbeat_count(&self, cc: &str) -> Result<u64, DbError> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*) FROM heartbeats WHERE probe_cc = ?1",
                [cc],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }

    fn compact(&self, received_before: i64, limit: usize) -> Result<usize, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let rows: Vec<(i64, i64, String)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT r.seq, m.received_at, r.body FROM envelopes_raw r
                     JOIN measurements m ON m.seq = r.seq ORDER BY r.seq LIMIT ?1",
                )?;
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let mut done = 0;
            {
                let mut packed =
                    tx.prepare_cached("INSERT INTO envelopes_packed (seq, body) VALUES (?1, ?2)")?;
                let mut raw = tx.prepare_cached("DELETE FROM envelopes_raw WHERE seq = ?1")?;
                for (seq, received_at, text) in rows {
                    // Rows are received in seq order: stop at the first one still too new.
                    if received_at > received_before {
                        break;
                    }
                    let body = super::compact::pack(&text)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    packed.execute(params![seq, body])?;
                    raw.execute([seq])?;
                    done += 1;
                }
            }
            tx.commit()?;
            Ok(done)
        })
    }

    fn add_token(&self, token_sha256: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO enrolment_tokens (token_sha256, created_at) VALUES (?1, ?2)",
                params![token_sha256, now()],
            )
            .map(|_| ())
        })
    }

    fn redeem_token(&self, token_sha256: &str, key: &str) -> Result<Redeemed, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let outcome = redeem(&tx, token_sha256, key)?;
            tx.commit()?;
            Ok(outcome)
        })
    }

    fn keys(&self) -> Result<Vec<(String, String)>, DbError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT key, state FROM probe_keys ORDER BY first_seen, key")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    fn rows_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Row>, DbError> {
        // `id` is UNIQUE, so its index gives the pages in order without sorting.
        let sql = format!("{ROW_SELECT} WHERE m.id > ?1 ORDER BY m.id LIMIT ?2");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map(params![after.unwrap_or(""), limit], stored_row)?
                .collect()
        })
    }

    fn rows_of(&self, ids: &[&str]) -> Result<Vec<Row>, DbError> {
        let sql = format!("{ROW_SELECT} WHERE m.id = ?1");
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        self.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let mut rows = Vec::with_capacity(sorted.len());
            for id in sorted {
                if let Some(row) = stmt.query_row([id], stored_row).optional()? {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
    }

    fn received_of(&self, ids: &[&str]) -> Result<BTreeMap<String, i64>, DbError> {
        self.read(|c| {
            // `id` is unique and indexed: one lookup per id.
            let mut stmt =
                c.prepare_cached("SELECT received_at FROM measurements WHERE id = ?1")?;
            let mut out = BTreeMap::new();
            for id in ids {
                if let Some(at) = stmt.query_row([id], |r| r.get(0)).optional()? {
                    out.insert((*id).to_string(), at);
                }
            }
            Ok(out)
        })
    }

    fn arrivals(&self, ids: &[String], end: Option<i64>) -> Result<Vec<Arrival>, DbError> {
        let ids = super::model::arrival_ids(ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // `id` is unique and indexed: one lookup per id, grouped in one statement.
        let marks = (2..ids.len() + 2)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT route, count(*), min(received_at), max(received_at),
                 sum(received_at < ?1), count(DISTINCT relayed_by)
             FROM measurements WHERE id IN ({marks}) GROUP BY route ORDER BY route"
        );
        let end = end.unwrap_or(i64::MAX);
        let mut args: Vec<rusqlite::types::Value> = vec![end.into()];
        args.extend(
            ids.iter()
                .map(|id| rusqlite::types::Value::Text(id.to_string())),
        );
        self.read(|c| {
            let mut stmt = c.prepare(&sql)?;
            stmt.query_map(params_from_iter(args.iter()), |r| {
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
                };
                Ok(Arrival {
                    route: r.get(0)?,
                    count: count(1)?,
                    first: super::model::format_time(r.get(2)?),
                    last: super::model::format_time(r.get(3)?),
                    while_ongoing: count(4)?,
                    relayers: count(5)?,
                })
            })?
            .collect()
        })
    }

    fn measurement_count(&self) -> Result<u64, DbError> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM measurements", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
        })
    }

    fn imported_file(&self, path: &str, size: u64) -> Result<Option<ImportedFile>, DbError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.read(|c| {
            c.query_row(
                "SELECT path, size, measurements, stored, duplicate, skipped, tests
                 FROM imported_files WHERE path = ?1 AND size = ?2",
                params![path, size],
                |r| {
                    let n = |i: usize| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok(ImportedFile {
                        path: r.get(0)?,
                        size: n(1)?,
                        measurements: n(2)?,
                        stored: n(3)?,
                        duplicate: n(4)?,
                        skipped: n(5)?,
                        tests: r.get(6)?,
                    })
                },
            )
            .optional()
        })
    }

    fn record_imported_file(&self, f: &ImportedFile) -> Result<(), DbError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO imported_files (path, size, measurements, stored,
                 duplicate, skipped, tests, imported_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                params![
                    f.path,
                    n(f.size),
                    n(f.measurements),
                    n(f.stored),
                    n(f.duplicate),
                    n(f.skipped),
                    f.tests,
                    now()
                ],
            )
            .map(|_| ())
        })
    }

    fn log(&self) -> Result<&dyn LogStore, NoLog> {
        if self.logging {
            Ok(self)
        } else {
            Err(NoLog::Disabled)
        }
    }

    /// A page in one transaction, each heartbeat at the time it reached the store it is copied
    /// from, so that its signals here are the source's.
    fn record_heartbeats(&self, beats: &[StoredHeartbeat]) -> Result<usize, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut new = 0;
            for b in beats {
                let at = (b.sent_at.as_str(), b.received_at);
                if record_heartbeat(&tx, &b.key, &b.cc, b.asn, at, b.verified)? {
                    new += 1;
                }
            }
            tx.commit()?;
            Ok(new)
        })
    }

    fn heartbeats_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredHeartbeat>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The primary key (probe_key, sent_at) serves the row-value comparison and the order.
        let (filter, key, sent_at) = match after {
            Some((key, sent_at)) => ("(probe_key, sent_at) > (?1, ?2)", key, sent_at),
            None => ("?1 = ?2", "", ""),
        };
        let sql = format!(
            "SELECT probe_key, probe_cc, probe_asn, sent_at, network_verified, received_at
             FROM heartbeats WHERE {filter} ORDER BY probe_key, sent_at LIMIT ?3"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map(params![key, sent_at, limit], |r| {
                    Ok(StoredHeartbeat {
                        key: r.get(0)?,
                        cc: r.get(1)?,
                        asn: r.get(2)?,
                        sent_at: r.get(3)?,
                        verified: r.get(4)?,
                        received_at: r.get(5)?,
                    })
                })?
                .collect()
        })
    }
}

/// A measurement's columns and its envelope (wherever compaction left it), as [`stored_row`]
/// reads them.
const ROW_SELECT: &str = "SELECT m.id, m.source, m.probe_key, m.probe_cc, m.probe_asn,
    m.test_name, m.input, m.domain, m.measured_at, m.blocking, m.accessible, m.confirmed,
    m.rule_set, m.verdict, coalesce(p.body, r.body), m.network_verified, m.route, m.relayed_by
    FROM measurements m
    LEFT JOIN envelopes_packed p ON p.seq = m.seq
    LEFT JOIN envelopes_raw r ON r.seq = m.seq";

/// One row of [`ROW_SELECT`] as the [`Row`] it was stored from.
fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        source: r.get(1)?,
        probe_key: r.get(2)?,
        probe_cc: r.get(3)?,
        probe_asn: r.get(4)?,
        test_name: r.get(5)?,
        input: r.get(6)?,
        domain: r.get(7)?,
        measured_at: r.get(8)?,
        blocking: r.get(9)?,
        accessible: r.get(10)?,
        confirmed: r.get(11)?,
        rule_set: r.get(12)?,
        verdict: r.get(13)?,
        envelope: stored_envelope(r, 14)?,
        network_verified: r.get(15)?,
        route: Route::from_columns(&r.get::<_, String>(16)?, r.get(17)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::COUNTER_MAX;

    fn plan(db: &Sqlite, q: &Query) -> String {
        let (sql, args) = search_sql(q).expect("a query of the test");
        db.with(|c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let rows = stmt.query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))?;
            rows.collect::<Result<Vec<_>, _>>().map(|v| v.join("; "))
        })
        .expect("plan")
    }

    fn query() -> Query {
        Query {
            cc: None,
            asn: None,
            test_name: None,
            domain: None,
            input: None,
            blocking: None,
            confirmed: None,
            since: None,
            until: None,
            after: None,
            limit: 100,
        }
    }

    /// Rows stored before routes read as uploads, or imports when no probe signed them; new
    /// rows keep the route they came by, a duplicate its first one, and the evidence of an
    /// event is grouped by route with its times.
    #[test]
    fn routes_are_kept_and_grouped_and_older_rows_read_as_uploads_or_imports() {
        let dir = std::env::temp_dir().join(format!("vantage-db-routes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        {
            let c = open_migrated(&path, &MIGRATIONS[..14], "NORMAL").expect("v14");
            for (id, key) in [("old-signed", Some("k")), ("old-ooni", None)] {
                c.execute(
                    "INSERT INTO measurements (id, source, probe_key, probe_cc, probe_asn,
                     test_name, measured_at, received_at)
                     VALUES (?1, 'vantage', ?2, 'IR', 7, 'web_connectivity', '2026-01-01 00:00:00', 100)",
                    params![id, key],
                )
                .expect("v14 row");
            }
        }
        let db = Sqlite::open(&path).expect("migrate");
        let relayed = Row {
            route: Route::Relay {
                by: "relayer".into(),
            },
            ..stored("relayed")
        };
        let filed = Row {
            route: Route::File,
            ..stored("filed")
        };
        db.insert(&[relayed.clone(), filed]).expect("insert");
        let again = Row {
            route: Route::Upload,
            ..relayed.clone()
        };
        assert_eq!(db.insert(&[again]).expect("duplicate"), [false]);
        let found: std::collections::HashMap<String, (String, Option<String>)> = db
            .query(&Query {
                limit: 100,
                ..Query::default()
            })
            .expect("search")
            .into_iter()
            .map(|f| (f.id, (f.route, f.relayed_by)))
            .collect();
        assert_eq!(found["old-signed"], ("upload".into(), None));
        assert_eq!(found["old-ooni"], ("import".into(), None));
        assert_eq!(found["relayed"], ("relay".into(), Some("relayer".into())));
        assert_eq!(found["filed"], ("file".into(), None));
        assert_eq!(
            db.rows_of(&["relayed"]).expect("row")[0].route,
            relayed.route
        );
        let ids: Vec<String> = ["old-signed", "relayed", "filed", "unknown"]
            .map(String::from)
            .to_vec();
        let arrivals = db.arrivals(&ids, Some(1000)).expect("arrivals");
        let routes: Vec<(&str, u64, u64, u64)> = arrivals
            .iter()
            .map(|a| (a.route.as_str(), a.count, a.while_ongoing, a.relayers))
            .collect();
        // The old row came at 100, before the end at 1000; the new ones now, after it.
        assert_eq!(
            routes,
            [("file", 1, 0, 0), ("relay", 1, 0, 1), ("upload", 1, 1, 0)]
        );
        assert_eq!(arrivals[2].first, "1970-01-01 00:01:40");
        assert!(db.arrivals(&[], None).expect("none").is_empty());
        let ongoing = db.arrivals(&ids, None).expect("ongoing");
        assert!(
            ongoing.iter().all(|a| a.while_ongoing == a.count),
            "{ongoing:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A copied row keeps the time it reached its source, and so its event's arrival; a row
    /// already stored keeps its own, and an id never stored has none.
    #[test]
    fn a_copied_row_keeps_when_it_was_received() {
        let dir = std::env::temp_dir().join(format!("vantage-db-received-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let before = now();
        db.insert(&[stored("here")]).expect("insert");
        let times: BTreeMap<String, i64> = [("here".into(), 100), ("copied".into(), 200)].into();
        assert_eq!(
            db.insert_received(&[stored("here"), stored("copied")], &times)
                .expect("copy"),
            [false, true]
        );
        let got = db
            .received_of(&["here", "copied", "never"])
            .expect("received");
        assert!(got["here"] >= before, "{got:?}");
        assert_eq!((got.get("copied"), got.get("never")), (Some(&200), None));
        let ids = vec!["copied".to_string()];
        let arrival = db.arrivals(&ids, Some(201)).expect("arrivals");
        assert_eq!(
            (arrival[0].first.as_str(), arrival[0].while_ongoing),
            ("1970-01-01 00:03:20", 1)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn migrating_a_version_5_file_keeps_every_envelope() {
        let dir = std::env::temp_dir().join(format!("vantage-db-v5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        {
            let c = open_migrated(&path, &MIGRATIONS[..5], "NORMAL").expect("v5");
            for (id, envelope) in [
                ("a", rusqlite::types::Value::Text("{\"v\":1}".into())),
                (
                    "b",
                    rusqlite::types::Value::Blob(
                        crate::store::compact::pack("{\"v\":2}").expect("pack"),
                    ),
                ),
            ] {
                c.execute(
                    "INSERT INTO measurements (id, source, probe_cc, probe_asn, test_name,
                     measured_at, received_at, envelope)
                     VALUES (?1, 'vantage', 'IT', 1, 'web_connectivity', '2026-01-01 00:00:00', 0, ?2)",
                    params![id, envelope],
                )
                .expect("v5 row");
            }
        }
        let db = Sqlite::open(&path).expect("migrate");
        // Migration 7 derived the signals of what was stored.
        let rows = db.probe_bins("IT", None, 0, i64::MAX).expect("signals");
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].measurements, 2);
        assert_eq!(db.envelope("a").expect("a").as_deref(), Some("{\"v\":1}"));
        assert_eq!(db.envelope("b").expect("b").as_deref(), Some("{\"v\":2}"));
        assert_eq!(db.query(&query()).expect("query").len(), 2);
        assert_eq!(db.compact(i64::MAX, 10).expect("compact"), 1);
        assert_eq!(db.envelope("a").expect("a").as_deref(), Some("{\"v\":1}"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_version_9_file_poisoned_by_overflowed_counters_migrates_to_sane_signals() {
        let dir = std::env::temp_dir().join(format!("vantage-db-v9-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        let bin = crate::store::model::bin_of("2026-03-01 10:00:00").expect("bin");
        {
            let c = open_migrated(&path, &MIGRATIONS[..9], "NORMAL").expect("v9");
            c.execute_batch(&format!(
                "INSERT INTO measurements (id, source, probe_key, probe_cc, probe_asn, test_name,
                    measured_at, received_at, blocking)
                 VALUES ('m', 'vantage', 'k', 'IR', 1, 'web_connectivity',
                    '2026-03-01 10:01:00', 0, '\"dns\"');
                 INSERT INTO envelopes_raw (seq, body) VALUES (1, '{{}}');
                 INSERT INTO heartbeats (probe_key, probe_cc, probe_asn, sent_at, received_at)
                    VALUES ('k', 'IR', 1, '2026-03-01 10:02:00', 0);
                 INSERT INTO signal_probes (cc, asn, bin, probe_key, first_up, last_up)
                    VALUES ('IR', 1, {bin}, 'k', {t}, {t});
                 -- What two canaries claiming ok = 2^63 - 1 left behind: REAL counters.
                 INSERT INTO signal_bins (cc, asn, bin, heartbeats, canary_checks, canary_ok,
                    measurements, anomalies_dns)
                    VALUES ('IR', 1, {bin}, 1, 1.8446744073709552e19, 1.8446744073709552e19, 1, 1);",
                t = bin * crate::store::model::BIN_SECONDS + 120
            ))
            .expect("v9 rows");
        }
        let db = Sqlite::open(&path).expect("migrate");
        let rows = db
            .probe_bins("IR", None, bin, bin + 1)
            .expect("the signals answer");
        let key = rows.iter().find(|r| r.key == "k").expect("the key's row");
        assert!(key.online, "{rows:?}");
        assert_eq!(
            (key.heartbeats, key.measurements, key.anomalies[0]),
            (1, 1, 1)
        );
        // The overflowed canary totals are carried over as one voice, clamped, and sane.
        let keyless = rows.iter().find(|r| r.key.is_empty()).expect("no-key row");
        assert_eq!(
            (keyless.canary_ok, keyless.canary_checks),
            (COUNTER_MAX, COUNTER_MAX)
        );
        let (checks, verified): (rusqlite::types::Value, i64) = db
            .with(|c| {
                c.query_row(
                    "SELECT (SELECT canary_checks FROM signal_probes WHERE probe_key = ''),
                        (SELECT network_verified FROM measurements)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .expect("columns");
        assert_eq!(checks, rusqlite::types::Value::Integer(COUNTER_MAX));
        assert_eq!(verified, 0, "rows stored before are unverified");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn whether_a_contact_came_from_its_network_is_stored_with_it() {
        let dir = std::env::temp_dir().join(format!("vantage-db-verified-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let row = |id: &str, verified: bool| Row {
            id: id.into(),
            source: "vantage".into(),
            probe_key: Some("k".into()),
            probe_cc: "IR".into(),
            probe_asn: 7,
            test_name: "web_connectivity".into(),
            input: None,
            domain: None,
            measured_at: "2026-03-01 10:00:00".into(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: "{}".into(),
            network_verified: verified,
            route: crate::store::Route::Upload,
        };
        db.insert(&[row("a", true), row("b", false)])
            .expect("insert");
        db.heartbeat("k", "IR", 7, "2026-03-02 10:00:00", false)
            .expect("beat");
        db.heartbeat("k", "IR", 7, "2026-03-02 11:00:00", true)
            .expect("beat");
        let stored = db
            .with(|c| {
                let measurements: Vec<(String, bool)> = c
                    .prepare("SELECT id, network_verified FROM measurements ORDER BY id")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let beats: Vec<(String, bool)> = c
                    .prepare("SELECT sent_at, network_verified FROM heartbeats ORDER BY sent_at")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let days: Vec<(i64, i64, i64)> = c
                    .prepare("SELECT day, first_at, last_at FROM verified_contacts ORDER BY day")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok((measurements, beats, days))
            })
            .expect("read");
        assert_eq!(
            stored.0,
            vec![("a".to_string(), true), ("b".to_string(), false)]
        );
        assert_eq!(
            stored.1,
            vec![
                ("2026-03-02 10:00:00".to_string(), false),
                ("2026-03-02 11:00:00".to_string(), true)
            ]
        );
        let t = crate::store::model::parse_time("2026-03-01 10:00:00").expect("time");
        // Only the verified ones vouch: the upload of the first day, the 11:00 heartbeat.
        assert_eq!(
            stored.2,
            vec![
                (t / 86_400, t, t),
                (t / 86_400 + 1, t + 86_400 + 3600, t + 86_400 + 3600)
            ]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    fn stored(id: &str) -> Row {
        Row {
            id: id.into(),
            source: "vantage".into(),
            probe_key: Some("k".into()),
            probe_cc: "IR".into(),
            probe_asn: 7,
            test_name: "web_connectivity".into(),
            input: Some(format!("https://{id}.example/")),
            domain: Some(format!("{id}.example")),
            measured_at: "2026-03-01 10:00:00".into(),
            blocking: Some("false".into()),
            accessible: Some(true),
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: format!("{{\"id\":\"{id}\"}}"),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    /// A search is answered while an upload's transaction holds the writer, from what was
    /// committed before it: the writer is held for `HELD` and the answers must come well
    /// before it is let go (before the pool of readers, they waited for all of it).
    #[test]
    fn reads_are_answered_while_the_writer_is_in_a_transaction() {
        const HELD: Duration = Duration::from_secs(3);
        let dir = std::env::temp_dir().join(format!("vantage-db-readers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        db.insert(&[stored("committed")]).expect("insert");
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                db.with(|c| {
                    let tx = c.transaction()?;
                    tx.execute(
                        "INSERT INTO measurements (id, source, probe_cc, probe_asn, test_name,
                         measured_at, received_at) VALUES ('pending', 'vantage', 'IR', 7,
                         'web_connectivity', '2026-03-01 11:00:00', 0)",
                        [],
                    )?;
                    held_tx.send(()).expect("tell");
                    std::thread::sleep(HELD);
                    tx.commit()
                })
            });
            held_rx.recv().expect("the writer holds its transaction");
            let t = std::time::Instant::now();
            let found = db
                .query(&Query {
                    cc: Some("ir".into()),
                    ..query()
                })
                .expect("query");
            let envelope = db.envelope("committed").expect("envelope");
            let keys = db.keys().expect("keys");
            let waited = t.elapsed();
            assert!(
                waited < HELD / 3,
                "reads waited {waited:?} for a writer held {HELD:?}"
            );
            let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
            assert_eq!(ids, ["committed"], "only what was committed is seen");
            assert_eq!(envelope.as_deref(), Some("{\"id\":\"committed\"}"));
            assert!(keys.is_empty(), "{keys:?}");
            writer.join().expect("writer").expect("commit");
        });
        // Once committed, the next read sees it.
        let found = db.query(&query()).expect("query");
        assert_eq!(found.len(), 2, "{found:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The readers are opened read-only: a write through one is refused by SQLite itself.
    #[test]
    fn a_reader_cannot_write() {
        let dir = std::env::temp_dir().join(format!("vantage-db-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        db.insert(&[stored("a")]).expect("insert");
        let err = db
            .read(|c| c.execute("DELETE FROM measurements", []))
            .expect_err("a read-only connection refuses a write");
        assert!(err.to_string().contains("readonly"), "{err}");
        assert_eq!(db.query(&query()).expect("query").len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Closing the storage leaves one file, as with the single connection before the readers:
    /// the writer closes last and folds the WAL back into the database.
    #[test]
    fn closing_folds_the_wal_back_into_the_file() {
        let dir = std::env::temp_dir().join(format!("vantage-db-close-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        let db = Sqlite::open(&path).expect("open");
        db.insert(&[stored("a")]).expect("insert");
        assert_eq!(db.query(&query()).expect("query").len(), 1);
        let wal = dir.join("agg.db-wal");
        assert!(wal.exists(), "WAL mode writes beside the file");
        drop(db);
        assert!(!wal.exists(), "the WAL is left behind after close");
        let db = Sqlite::open(&path).expect("reopen");
        assert_eq!(
            db.envelope("a").expect("a").as_deref(),
            Some("{\"id\":\"a\"}")
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The searches the API offers never scan the table or sort it: each is one index range,
    /// already in page order. (A plan that sorts would be fine on ten rows and take seconds on
    /// ten million; BENCHMARKS.md has the timings.)
    #[test]
    fn every_search_is_an_index_range_in_page_order() {
        let dir = std::env::temp_dir().join(format!("vantage-db-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let since = Some("2026-01-01".to_string());
        let until = Some("2026-02-01".to_string());
        let cases = [
            (
                Query {
                    cc: Some("IR".into()),
                    since: since.clone(),
                    until: until.clone(),
                    ..query()
                },
                "measurements_cc_time",
            ),
            (
                Query {
                    domain: Some("example.org".into()),
                    after: Some("42".into()),
                    ..query()
                },
                "measurements_domain",
            ),
            (
                Query {
                    asn: Some(197207),
                    blocking: Some("\"dns\"".into()),
                    ..query()
                },
                "measurements_asn_time",
            ),
            (
                Query {
                    asn: Some(197207),
                    blocking: Some("null".into()),
                    ..query()
                },
                "measurements_asn_time",
            ),
            (
                Query {
                    since,
                    until,
                    test_name: Some("web_connectivity".into()),
                    ..query()
                },
                "measurements_time",
            ),
        ];
        for (q, index) in cases {
            let p = plan(&db, &q);
            assert!(p.contains(&format!("USING INDEX {index}")), "{q:?}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{q:?} sorts: {p}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// What `migrate` reads: every measurement once in id order across pages, its envelope
    /// byte for byte whether compacted or not and its newest verdict, the same rows when asked
    /// by id, and every heartbeat in (key, time) order.
    #[test]
    fn a_store_is_read_whole_a_page_at_a_time() {
        let dir = std::env::temp_dir().join(format!("vantage-db-pages-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let rows: Vec<Row> = ["b", "a", "e", "c", "d"].into_iter().map(stored).collect();
        db.insert(&rows[..3]).expect("insert");
        assert_eq!(db.compact(i64::MAX, 10).expect("compact"), 3);
        db.insert(&rows[3..]).expect("insert");
        let mut rescored = stored("c");
        rescored.blocking = Some("\"dns\"".into());
        rescored.verdict = Some("{\"again\":1}".into());
        db.update_verdict(&rescored).expect("rescore");
        let mut want = rows.clone();
        want[3] = rescored.clone();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        let first = db.rows_page(None, 2).expect("page");
        let second = db.rows_page(Some("b"), 2).expect("page");
        let last = db.rows_page(Some("d"), 2).expect("page");
        assert_eq!([first, second, last].concat(), want);
        assert!(db.rows_page(Some("e"), 2).expect("page").is_empty());
        assert_eq!(db.measurement_count().expect("count"), 5);
        assert_eq!(
            db.rows_of(&["c", "nothing", "a", "c"]).expect("by id"),
            vec![want[0].clone(), rescored]
        );

        let before = now();
        for (key, at) in [("k2", "2026-01-01 10:00:00"), ("k1", "2026-01-02 10:00:00")] {
            assert!(db.heartbeat(key, "IR", 7, at, key == "k1").expect("beat"));
        }
        // Each with when it reached us: now, for these.
        let beat = |key: &str, at: &str, verified| StoredHeartbeat {
            key: key.into(),
            cc: "IR".into(),
            asn: 7,
            sent_at: at.into(),
            verified,
            received_at: None,
        };
        let unstamped = |page: Vec<StoredHeartbeat>| -> Vec<StoredHeartbeat> {
            page.into_iter()
                .map(|b| {
                    assert!(
                        b.received_at.is_some_and(|t| (before..=now()).contains(&t)),
                        "{b:?}"
                    );
                    StoredHeartbeat {
                        received_at: None,
                        ..b
                    }
                })
                .collect()
        };
        assert_eq!(
            unstamped(db.heartbeats_page(None, 1).expect("page")),
            [beat("k1", "2026-01-02 10:00:00", true)]
        );
        assert_eq!(
            unstamped(
                db.heartbeats_page(Some(("k1", "2026-01-02 10:00:00")), 10)
                    .expect("page")
            ),
            [beat("k2", "2026-01-01 10:00:00", false)]
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
