//! The schema of the ClickHouse store: its numbered migrations and the run that applies the
//! missing ones when a node opens the database.

use serde::Deserialize;

use super::super::{DbError, now};
use super::client::quote;
use super::{ClickHouse, search};

/// The numbered migrations. Every statement is idempotent (`IF NOT EXISTS`): several nodes may
/// open one database at once and run the same migration together. 18.16 has no `IF NOT
/// EXISTS` for `ADD COLUMN`: such a statement is skipped when the column is there, and another
/// node adding it first is no error ([`added_column`]).
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
    // 3: the files `import-ooni` read to their end, so that the next import skips them; the
    // newest record of a file wins.
    &["CREATE TABLE IF NOT EXISTS imported_files (
        path String,
        size UInt64,
        measurements UInt64,
        stored UInt64,
        duplicate UInt64,
        skipped UInt64,
        tests String,
        imported_at UInt64
    ) ENGINE = ReplacingMergeTree(imported_at)
    ORDER BY (path, size)"],
    // 4: the transparency log (`log`).
    super::log::MIGRATION,
    // 5: how each measurement arrived (`store::Route`, docs/carry.md). Rows stored before
    // read the default: an upload, or an import when no probe signed it. A relay keeps the
    // relayer's key, never an address.
    &[
        "ALTER TABLE measurements ADD COLUMN route String
            DEFAULT if(isNull(probe_key), 'import', 'upload')",
        "ALTER TABLE measurements ADD COLUMN relayed_by Nullable(String)",
    ],
];

impl ClickHouse {
    /// Creates the database and runs the missing migrations, recording each in
    /// `schema_migrations`. Two nodes opening one new database at once both run the same
    /// idempotent statements and both record the version: reads take the distinct versions.
    pub(super) fn migrate(&self) -> Result<(), DbError> {
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
                let Some((table, column)) = added_column(sql) else {
                    self.execute(&op, sql)?;
                    continue;
                };
                if self.has_column(table, column)? {
                    continue;
                }
                match self.execute(&op, sql) {
                    Err(e) if e.to_string().contains("already exists") => {}
                    other => {
                        other?;
                    }
                }
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
}

/// The table and column of an `ALTER TABLE t ADD COLUMN c ...` statement.
fn added_column(sql: &str) -> Option<(&str, &str)> {
    let words: Vec<&str> = sql.split_whitespace().take(6).collect();
    match words.as_slice() {
        ["ALTER", "TABLE", table, "ADD", "COLUMN", column] => Some((table, column)),
        _ => None,
    }
}

impl ClickHouse {
    /// Whether `table` of this database has `column`.
    fn has_column(&self, table: &str, column: &str) -> Result<bool, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let n = self
            .rows::<N>(
                "reading the columns",
                &format!(
                    "SELECT count() AS n FROM system.columns
                     WHERE database = {} AND table = {} AND name = {}",
                    quote(&self.db),
                    quote(table),
                    quote(column)
                ),
            )?
            .first()
            .map_or(0, |r| r.n);
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;

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
            "5\n"
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
                    known: 5,
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

    /// Routes (migration 5): stored, searched (by country and through the by-domain view),
    /// grouped for an event's evidence; a database made before reads its signed rows as
    /// uploads and its unsigned ones as imports.
    #[test]
    fn routes_are_stored_searched_and_grouped() {
        use crate::store::Route;
        let server = server();
        let url = server.url("r");
        let db = ClickHouse::open(&url).expect("open");
        let mut unsigned = row("m0", "IR", "2026-01-01 00:00:00");
        unsigned.probe_key = None;
        db.insert(&[unsigned, row("m1", "IR", "2026-01-01 00:01:00")])
            .expect("insert");
        for sql in [
            "ALTER TABLE r.measurements DROP COLUMN route",
            "ALTER TABLE r.measurements DROP COLUMN relayed_by",
            "DROP TABLE r.schema_migrations",
            "CREATE TABLE r.schema_migrations (version UInt32, applied_at Int64)
             ENGINE = MergeTree ORDER BY version",
            "INSERT INTO r.schema_migrations VALUES (1, 0), (2, 0), (3, 0), (4, 0)",
        ] {
            server.query(sql).expect(sql);
        }
        // Another open puts the columns back, once, even when a node races it.
        let db = ClickHouse::open(&url).expect("reopen runs migration 5");
        ClickHouse::open(&url).expect("and again");
        let mut relayed = row("m2", "IR", "2026-01-01 00:02:00");
        relayed.route = Route::Relay {
            by: "relayer".into(),
        };
        let mut filed = row("m3", "IR", "2026-01-01 00:03:00");
        filed.route = Route::File;
        db.insert(&[relayed, filed]).expect("insert");
        let routes = |found: Vec<Found>| -> Vec<(String, String, Option<String>)> {
            found
                .into_iter()
                .map(|f| (f.id, f.route, f.relayed_by))
                .collect()
        };
        assert_eq!(
            routes(db.query(&query()).expect("search")),
            [
                ("m0".into(), "import".into(), None),
                ("m1".into(), "upload".into(), None),
                ("m2".into(), "relay".into(), Some("relayer".into())),
                ("m3".into(), "file".into(), None),
            ]
        );
        let by_domain = Query {
            domain: Some("m2.example".into()),
            ..query()
        };
        assert_eq!(
            routes(db.query(&by_domain).expect("search")),
            [("m2".into(), "relay".into(), Some("relayer".into()))]
        );
        let ids: Vec<String> = ["m1", "m2", "m3", "none"].map(String::from).to_vec();
        let arrivals = db.arrivals(&ids, None).expect("arrivals");
        let grouped: Vec<(&str, u64, u64, u64)> = arrivals
            .iter()
            .map(|a| (a.route.as_str(), a.count, a.while_ongoing, a.relayers))
            .collect();
        assert_eq!(
            grouped,
            [("file", 1, 1, 0), ("relay", 1, 1, 1), ("upload", 1, 1, 0)]
        );
        let ended = db.arrivals(&ids, Some(0)).expect("arrivals");
        assert!(ended.iter().all(|a| a.while_ongoing == 0), "{ended:?}");
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
}
