//! The probe's local store: every signed result, and an outbox of what still has to reach the
//! aggregator. One SQLite file (bundled SQLite, so the Pi's system library does not matter).
//!
//! WAL with `synchronous=FULL`: a result is written in one transaction, with its outbox row,
//! before the probe reports it, so a kill (or power cut) at any moment loses no completed
//! measurement (README.md, "Measuring a list"). Schema changes are numbered migrations keyed on
//! `PRAGMA user_version` ([`crate::migrate`]).
//!
//! Nothing here deletes a result. The outbox row of each result says where its upload stands:
//! `pending` (to send), `held` (the aggregator refused it for a reason that can change, such as
//! a key not enrolled yet or a rate limit: kept with the reason, and sent again when
//! `retry_at` comes, after an enrolment, or on request), `rejected` (refused for good for what
//! its bytes are: a bad signature or a malformed measurement; still kept here), `accepted` and
//! `duplicate` (the aggregator has it).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::migrate::{MigrateError, open_migrated};

/// Migrations, in order; entry `n` moves the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: results and the outbox.
    "CREATE TABLE results (
        id TEXT PRIMARY KEY,
        input TEXT,
        test_name TEXT NOT NULL,
        measured_at TEXT NOT NULL,
        blocking TEXT,
        accessible INTEGER,
        confirmed INTEGER NOT NULL DEFAULT 0,
        verdict TEXT NOT NULL,
        envelope TEXT NOT NULL,
        stored_at INTEGER NOT NULL
    );
    CREATE TABLE outbox (
        id TEXT PRIMARY KEY REFERENCES results(id),
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox(state);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: results the aggregator refused for a reason that can change are held, not dropped
    // from the outbox: `retry_at` (unix time) says when to send them again by themselves, NULL
    // for "after an enrolment or on request". Earlier versions marked every refusal
    // `rejected`; all but those about the bytes themselves (the reasons
    // `upload::classify` calls permanent) are held again here, so a probe refused before its
    // enrolment still gets its results through.
    "ALTER TABLE outbox ADD COLUMN retry_at INTEGER;
    UPDATE outbox SET state = 'held',
        retry_at = CASE WHEN reason IN ('unknown key', 'revoked key') THEN NULL ELSE 0 END
    WHERE state = 'rejected'
        AND coalesce(reason, '') NOT LIKE 'bad signature%'
        AND coalesce(reason, '') NOT LIKE 'malformed%';",
    // 3: the transparency log (docs/transparency.md, "The probe"). `log_leaves`: the leaf the
    // ingest answer gave an uploaded result and, once fetched and checked, its inclusion
    // proof (a JSON array of base64 hashes) and the checkpoint it was proven against.
    // `log_checkpoints`: every checkpoint whose signature verified, in the order first seen.
    // `log_forks`: what showed that the log is not append-only, with both checkpoints, kept
    // as evidence. Nothing here is ever deleted.
    "CREATE TABLE log_leaves (
        id TEXT PRIMARY KEY REFERENCES results(id),
        leaf_index INTEGER NOT NULL,
        proof TEXT,
        tree_size INTEGER,
        origin TEXT,
        proven_at INTEGER,
        asked_at INTEGER
    );
    CREATE INDEX log_leaves_unproven ON log_leaves(asked_at) WHERE proof IS NULL;
    CREATE TABLE log_checkpoints (
        seq INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        size INTEGER NOT NULL,
        root TEXT NOT NULL,
        note TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        UNIQUE (origin, size, root)
    );
    CREATE TABLE log_forks (
        seq INTEGER PRIMARY KEY,
        origin TEXT NOT NULL,
        old_note TEXT NOT NULL,
        new_note TEXT NOT NULL,
        reason TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        UNIQUE (old_note, new_note, reason)
    );",
    // 4: evidence carried by hand (docs/carry.md). `exported_at`: when a result was last
    // written to an export file, so that the next export holds only what this one did not;
    // the result stays queued until an aggregator answers. `relayed`: 1 for an envelope another
    // probe signed and this one imported to send on (it never signs them).
    "ALTER TABLE outbox ADD COLUMN exported_at INTEGER;
    ALTER TABLE results ADD COLUMN relayed INTEGER NOT NULL DEFAULT 0;",
];

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("local store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The file is from a newer Vantage.
    #[error(
        "local store {path} has schema version {found}, newer than this vantage ({known}); upgrade vantage"
    )]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// One stored result.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    /// Measurement id.
    pub id: String,
    /// The URL.
    pub input: Option<String>,
    /// `web_connectivity`, ...
    pub test_name: String,
    /// `measurement_start_time`.
    pub measured_at: String,
    /// The verdict's blocking value as JSON (`false`, `"dns"`, `null`).
    pub blocking: Option<String>,
    /// The verdict's accessible value.
    pub accessible: Option<bool>,
    /// Whether a fingerprint confirmed it.
    pub confirmed: bool,
    /// The verdict as JSON.
    pub verdict: String,
    /// The signed envelope line.
    pub envelope: String,
    /// Outbox state: `pending`, `held`, `accepted`, `duplicate`, `rejected`.
    pub upload_state: String,
    /// Why the aggregator refused it, when it did.
    pub upload_reason: Option<String>,
    /// Signed by another probe and imported to be sent on (docs/carry.md): not this probe's
    /// measurement.
    pub relayed: bool,
}

/// An envelope another probe signed, to be sent on ([`Store::insert_relayed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Its measurement id.
    pub id: String,
    /// `test_name`.
    pub test_name: String,
    /// `measurement_start_time`.
    pub measured_at: String,
    /// `input`, if any.
    pub input: Option<String>,
    /// The envelope line as signed, without newline.
    pub envelope: String,
}

/// What `vantage status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Results stored.
    pub results: u64,
    /// Results waiting to be uploaded.
    pub pending: u64,
    /// Results the aggregator refused for a reason that can change, kept to be sent again.
    pub held: u64,
    /// How many are held for each reason, most first.
    pub held_reasons: Vec<(String, u64)>,
    /// Results the aggregator refused for good (a bad signature, a malformed measurement);
    /// still kept in the store.
    pub rejected: u64,
    /// How many were refused for good for each reason, most first.
    pub rejected_reasons: Vec<(String, u64)>,
    /// Unix time of the last successful upload.
    pub last_upload: Option<String>,
    /// The last upload error.
    pub last_error: Option<String>,
}

/// How far the uploaded results are proven in the aggregator's transparency log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStatus {
    /// Results the aggregator has (accepted or duplicate).
    pub uploaded: u64,
    /// Of those, the ones the ingest answer gave a leaf (the others are not logged: the
    /// aggregator keeps no log, or is older than the log).
    pub logged: u64,
    /// Of those, the ones whose inclusion proof was fetched and verified.
    pub proven: u64,
    /// The latest checkpoint seen (verified), and when it was first seen (unix time).
    pub checkpoint: Option<(crate::tlog::Checkpoint, i64)>,
    /// Every fork or rewrite seen, oldest first.
    pub forks: Vec<LogFork>,
}

/// Evidence that the aggregator's log is not append-only: two checkpoints (or a checkpoint
/// and the proof or answer that contradicts it) and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFork {
    /// The log's origin.
    pub origin: String,
    /// The earlier checkpoint, as served.
    pub old_note: String,
    /// The later checkpoint, as served.
    pub new_note: String,
    /// What was found.
    pub reason: String,
    /// When (unix time).
    pub seen_at: i64,
}

/// A result with a leaf and no proof yet: what the proof round asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unproven {
    /// Measurement id.
    pub id: String,
    /// The leaf the ingest answer gave it.
    pub leaf_index: u64,
    /// Its signed envelope line (its key makes the leaf's second half).
    pub envelope: String,
}

/// A new result to store.
#[derive(Debug, Clone)]
pub struct NewResult<'a> {
    /// Measurement id.
    pub id: &'a str,
    /// The URL.
    pub input: Option<&'a str>,
    /// Test name.
    pub test_name: &'a str,
    /// Start time.
    pub measured_at: &'a str,
    /// Blocking as JSON.
    pub blocking: Option<&'a str>,
    /// Accessible.
    pub accessible: Option<bool>,
    /// Confirmed.
    pub confirmed: bool,
    /// Verdict JSON.
    pub verdict: &'a str,
    /// Envelope line.
    pub envelope: &'a str,
}

/// The meta key `vantage enrol` sets (unix time) after an enrolment, so that a daemon sharing
/// the data directory sends again what the aggregator held back before it.
pub const ENROLLED: &str = "enrolled";

/// What the aggregator's answer means for one result's outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Stored by the aggregator now.
    Accepted,
    /// The aggregator already had it.
    Duplicate,
    /// Refused for a reason that can change: kept in the outbox with the reason, sent again
    /// after `retry_after` (never by itself when `None`: after an enrolment or on request).
    Held {
        /// The aggregator's reason.
        reason: String,
        /// When to send it again by itself.
        retry_after: Option<std::time::Duration>,
    },
    /// Refused for good for what its bytes are: out of the outbox, still in the store.
    Rejected {
        /// The aggregator's reason.
        reason: String,
    },
}

/// Which held results go back to the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Every one: after an enrolment, or when the volunteer asks.
    All,
    /// Those whose `retry_at` has come.
    Due,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The results an export holds, in outbox order ([`Store::each_exportable`]).
const EXPORTABLE: &str = "SELECT o.rowid, r.id, r.measured_at, r.envelope
     FROM outbox o JOIN results r ON r.id = o.id
     WHERE o.rowid <= ?3
       AND (?1 OR (o.state IN ('pending', 'held') AND o.exported_at IS NULL))
       AND (?2 IS NULL OR r.measured_at >= ?2)
     ORDER BY o.rowid";

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let display = path.display().to_string();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = open_migrated(path, MIGRATIONS, "FULL").map_err(|e| match e {
            MigrateError::Sqlite(source) => StoreError::Sqlite {
                path: display.clone(),
                source,
            },
            MigrateError::TooNew { found, known } => StoreError::TooNew {
                path: display.clone(),
                found,
                known,
            },
        })?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|source| StoreError::Sqlite {
                path: display.clone(),
                source,
            })?;
        Ok(Store {
            conn,
            path: display,
        })
    }

    /// The directory the store is in: the probe's data directory (where the aggregator's
    /// pinned key is, `upload::PIN_FILE`).
    pub fn dir(&self) -> std::path::PathBuf {
        Path::new(&self.path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a result and queues it for upload, in one transaction. Storing the same id again
    /// changes nothing.
    pub fn insert(&mut self, r: &NewResult<'_>) -> Result<bool, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let added = tx
            .execute(
                "INSERT OR IGNORE INTO results (id, input, test_name, measured_at, blocking, accessible,
                 confirmed, verdict, envelope, stored_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                params![
                    r.id,
                    r.input,
                    r.test_name,
                    r.measured_at,
                    r.blocking,
                    r.accessible,
                    r.confirmed,
                    r.verdict,
                    r.envelope,
                    now()
                ],
            )
            .and_then(|n| {
                if n > 0 {
                    tx.execute(
                        "INSERT INTO outbox (id, updated_at) VALUES (?1, ?2)",
                        params![r.id, now()],
                    )?;
                }
                Ok(n > 0)
            })
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(added)
    }

    const SELECT: &'static str =
        "SELECT r.id, r.input, r.test_name, r.measured_at, r.blocking, r.accessible,
        r.confirmed, r.verdict, r.envelope, o.state, o.reason, r.relayed
        FROM results r JOIN outbox o ON o.id = r.id";

    fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResult> {
        Ok(StoredResult {
            id: row.get(0)?,
            input: row.get(1)?,
            test_name: row.get(2)?,
            measured_at: row.get(3)?,
            blocking: row.get(4)?,
            accessible: row.get(5)?,
            confirmed: row.get(6)?,
            verdict: row.get(7)?,
            envelope: row.get(8)?,
            upload_state: row.get(9)?,
            upload_reason: row.get(10)?,
            relayed: row.get(11)?,
        })
    }

    /// The most recent results first, at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<StoredResult>, StoreError> {
        let sql = format!("{} ORDER BY r.rowid DESC LIMIT ?1", Self::SELECT);
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], Self::row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// The result whose id starts with `prefix`, if exactly one does.
    pub fn find(&self, prefix: &str) -> Result<Vec<StoredResult>, StoreError> {
        let sql = format!(
            "{} WHERE r.id LIKE ?1 || '%' ORDER BY r.rowid LIMIT 2",
            Self::SELECT
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let prefix: String = prefix
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_lowercase();
        stmt.query_map([prefix], Self::row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` results waiting for upload, oldest first: (id, envelope line).
    pub fn pending(&self, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT o.id, r.envelope FROM outbox o JOIN results r ON r.id = o.id
                 WHERE o.state = 'pending' ORDER BY o.rowid LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` results waiting for upload, oldest first, of this probe's own (`relayed`
    /// false) or relayed for others (true): the two go in separate requests, the relayed ones
    /// with the relay header (docs/carry.md, "Upload routes").
    pub fn pending_of(
        &self,
        limit: usize,
        relayed: bool,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT o.id, r.envelope FROM outbox o JOIN results r ON r.id = o.id
                 WHERE o.state = 'pending' AND r.relayed = ?2 ORDER BY o.rowid LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map(params![limit, relayed], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Relayed results not yet delivered (pending or held): what a relay's queue holds.
    pub fn relayed_waiting(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox o JOIN results r ON r.id = o.id
                 WHERE r.relayed = 1 AND o.state IN ('pending', 'held')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// Runs `f` in one read transaction: everything it reads is the same snapshot of the
    /// store, while the daemon's tasks go on writing on their own connections (WAL: "readers
    /// do not block writers", <https://sqlite.org/wal.html>). An export reads its results
    /// twice, once for the manifest and once to write them, and both must see the same rows.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        // Deferred: the snapshot starts at `f`'s first read. Nothing is written in it, so
        // ending it with a rollback (on an error, by drop) loses nothing.
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let out = f(self)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Hands `each` the results an export holds (docs/carry.md), oldest first, one row at a
    /// time, so that an export of any size is read in the memory of one envelope: every stored
    /// one when `all`, else those still waiting for the aggregator (pending or held) that no
    /// export holds yet; only those measured at or after `since` (OONI's `YYYY-MM-DD
    /// HH:MM:SS`) when given, and only those up to outbox row `upto` (the last an earlier pass
    /// saw) when given. Returns that last row of this pass, `None` when there was none.
    ///
    /// The rows come from one statement that walks the outbox in rowid order, with no sort
    /// to hold them (a test checks the query plan). Run it in [`Store::snapshot`] to read the
    /// same rows twice.
    pub fn each_exportable<E: From<StoreError>>(
        &self,
        all: bool,
        since: Option<&str>,
        upto: Option<i64>,
        each: &mut dyn FnMut(&crate::carry::Item) -> Result<(), E>,
    ) -> Result<Option<i64>, E> {
        let mut stmt = self
            .conn
            .prepare_cached(EXPORTABLE)
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![all, since, upto.unwrap_or(i64::MAX)])
            .map_err(|e| self.err(e))?;
        let mut last = None;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<_> {
                Ok((
                    row.get::<_, i64>(0)?,
                    crate::carry::Item {
                        id: row.get(1)?,
                        measured_at: row.get(2)?,
                        envelope: row.get(3)?,
                    },
                ))
            };
            let (rowid, item) = read(row).map_err(|e| self.err(e))?;
            each(&item)?;
            last = Some(rowid);
        }
        Ok(last)
    }

    /// Remembers that the results an export holds are in a file, in one statement: those
    /// [`Store::each_exportable`] would give for the same `all` and `since`, up to outbox row
    /// `upto`, the last the export wrote. Their upload state is left alone: a file may never
    /// arrive.
    ///
    /// This is the file's rows without a list of them. Rows after `upto` are newer than the
    /// export. Of those up to it, a row the file holds is left unmarked only if the aggregator
    /// answered it meanwhile (no longer pending or held, so never exported again without
    /// `--all`); and a row the file does not hold cannot be marked, since nothing puts a row
    /// back to pending or held except from held, clears `exported_at`, or deletes a row.
    pub fn mark_exported(
        &mut self,
        all: bool,
        since: Option<&str>,
        upto: i64,
    ) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET exported_at = ?4
                 WHERE rowid <= ?3
                   AND (?1 OR (state IN ('pending', 'held') AND exported_at IS NULL))
                   AND (?2 IS NULL OR EXISTS
                        (SELECT 1 FROM results r WHERE r.id = outbox.id AND r.measured_at >= ?2))",
                params![all, since, upto, now()],
            )
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .map_err(|e| self.err(e))
    }

    /// Queues envelopes another probe signed, read from a carried file, to be uploaded with
    /// their own signatures (docs/carry.md, "`vantage import FILE`: relaying"), in one
    /// transaction (one sync of the store for a batch, not one per line). Returns how many were
    /// new; one already stored changes nothing.
    pub fn insert_relayed(&mut self, batch: &[Relayed]) -> Result<u64, StoreError> {
        let added = self.insert_relayed_each(batch)?;
        Ok(added.iter().filter(|a| **a).count() as u64)
    }

    /// [`Store::insert_relayed`], saying for each envelope whether it was new (a relay answers
    /// `accepted` or `duplicate` per line).
    pub fn insert_relayed_each(&mut self, batch: &[Relayed]) -> Result<Vec<bool>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let now = now();
        let tx = self.conn.transaction().map_err(err)?;
        let mut added = Vec::with_capacity(batch.len());
        for r in batch {
            let n = tx
                .execute(
                    "INSERT OR IGNORE INTO results (id, input, test_name, measured_at, confirmed,
                     verdict, envelope, stored_at, relayed)
                     VALUES (?1,?2,?3,?4,0,'{\"relayed\":true}',?5,?6,1)",
                    params![r.id, r.input, r.test_name, r.measured_at, r.envelope, now],
                )
                .map_err(err)?;
            if n > 0 {
                tx.execute(
                    "INSERT INTO outbox (id, updated_at) VALUES (?1, ?2)",
                    params![r.id, now],
                )
                .map_err(err)?;
            }
            added.push(n > 0);
        }
        tx.commit().map_err(err)?;
        Ok(added)
    }

    /// Records the aggregator's answer for each id. Only the outbox row changes: the result
    /// itself is never touched, whatever the answer.
    pub fn record_outcomes(&mut self, outcomes: &[(String, Delivery)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let now = now();
        let tx = self.conn.transaction().map_err(err)?;
        for (id, delivery) in outcomes {
            let (state, reason, retry_at) = match delivery {
                Delivery::Accepted => ("accepted", None, None),
                Delivery::Duplicate => ("duplicate", None, None),
                Delivery::Held {
                    reason,
                    retry_after,
                } => (
                    "held",
                    Some(reason.as_str()),
                    retry_after.map(|d| {
                        now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    }),
                ),
                Delivery::Rejected { reason } => ("rejected", Some(reason.as_str()), None),
            };
            tx.execute(
                "UPDATE outbox SET state = ?2, reason = ?3, retry_at = ?4,
                 attempts = attempts + 1, updated_at = ?5 WHERE id = ?1",
                params![id, state, reason, retry_at, now],
            )
            .map_err(err)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('last_upload', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [now.to_string()],
        )
        .map_err(err)?;
        tx.execute("DELETE FROM meta WHERE key = 'last_error'", [])
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Puts held results back in the outbox (all of them, or those whose time has come);
    /// returns how many. Their reason stays until the aggregator answers again.
    pub fn requeue_held(&self, which: Requeue) -> Result<u64, StoreError> {
        let sql = match which {
            Requeue::All => {
                "UPDATE outbox SET state = 'pending', updated_at = ?1 WHERE state = 'held'"
            }
            Requeue::Due => {
                "UPDATE outbox SET state = 'pending', updated_at = ?1
                 WHERE state = 'held' AND retry_at IS NOT NULL AND retry_at <= ?1"
            }
        };
        self.conn
            .execute(sql, [now()])
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .map_err(|e| self.err(e))
    }

    /// Remembers why the last upload attempt failed.
    pub fn record_error(&mut self, error: &str) -> Result<(), StoreError> {
        self.set_meta("last_error", error)
    }

    /// Keeps a small value across restarts: the daemon's last canary and run, the traffic it
    /// spent today, where it last found itself.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A value kept with [`Store::set_meta`].
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Keeps the leaf the ingest answer gave each result. A result keeps its first leaf; a
    /// later answer giving another is returned, `(id, kept, given)`: the log moved it.
    pub fn record_leaves(
        &mut self,
        leaves: &[(String, u64)],
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut moved = Vec::new();
        for (id, index) in leaves {
            let Ok(index_sql) = i64::try_from(*index) else {
                continue;
            };
            tx.execute(
                "INSERT INTO log_leaves (id, leaf_index) SELECT ?1, ?2
                 WHERE EXISTS (SELECT 1 FROM results WHERE id = ?1)
                 ON CONFLICT(id) DO NOTHING",
                params![id, index_sql],
            )
            .map_err(err)?;
            let kept: Option<i64> = tx
                .query_row(
                    "SELECT leaf_index FROM log_leaves WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            if let Some(kept) = kept
                && kept != index_sql
            {
                moved.push((id.clone(), u64::try_from(kept).unwrap_or(0), *index));
            }
        }
        tx.commit().map_err(err)?;
        Ok(moved)
    }

    /// Up to `limit` results with a leaf and no proof, those never asked about (or asked
    /// about longest ago) first.
    pub fn unproven(&self, limit: usize) -> Result<Vec<Unproven>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT l.id, l.leaf_index, r.envelope FROM log_leaves l
                 JOIN results r ON r.id = l.id
                 WHERE l.proof IS NULL
                 ORDER BY coalesce(l.asked_at, 0), l.leaf_index LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map([limit], |r| {
            Ok(Unproven {
                id: r.get(0)?,
                leaf_index: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                envelope: r.get(2)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.err(e))
    }

    /// Notes that a proof of `id` was asked for now (so that the next round asks for others
    /// first).
    pub fn mark_asked(&self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE log_leaves SET asked_at = ?2 WHERE id = ?1",
                params![id, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Keeps the verified inclusion proof of `id` against `checkpoint`.
    pub fn record_proof(
        &self,
        id: &str,
        proof: &[crate::tlog::Hash],
        checkpoint: &crate::tlog::Checkpoint,
    ) -> Result<(), StoreError> {
        use base64::Engine as _;
        let hashes: Vec<String> = proof
            .iter()
            .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
            .collect();
        let json = serde_json::to_string(&hashes).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "UPDATE log_leaves SET proof = ?2, tree_size = ?3, origin = ?4, proven_at = ?5
                 WHERE id = ?1",
                params![
                    id,
                    json,
                    i64::try_from(checkpoint.size).unwrap_or(i64::MAX),
                    checkpoint.origin,
                    now()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The stored proof of `id`: its leaf index, the hashes, and the size of the checkpoint
    /// they lead to.
    pub fn proof(
        &self,
        id: &str,
    ) -> Result<Option<(u64, Vec<crate::tlog::Hash>, u64)>, StoreError> {
        use base64::Engine as _;
        let row: Option<(i64, String, i64)> = self
            .conn
            .query_row(
                "SELECT leaf_index, proof, tree_size FROM log_leaves
                 WHERE id = ?1 AND proof IS NOT NULL",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.map(|(index, json, size)| {
            let hashes = serde_json::from_str::<Vec<String>>(&json)
                .unwrap_or_default()
                .iter()
                .filter_map(|h| {
                    base64::engine::general_purpose::STANDARD
                        .decode(h)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                })
                .collect();
            (
                u64::try_from(index).unwrap_or(0),
                hashes,
                u64::try_from(size).unwrap_or(0),
            )
        }))
    }

    /// Keeps a verified checkpoint; `false` when it was already kept.
    pub fn add_checkpoint(&self, c: &crate::tlog::Checkpoint) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "INSERT INTO log_checkpoints (origin, size, root, note, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![
                    c.origin,
                    i64::try_from(c.size).unwrap_or(i64::MAX),
                    c.root_b64(),
                    c.note,
                    now()
                ],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The checkpoint of log `origin` kept last, and when it was first seen: the one the next
    /// must extend.
    pub fn latest_checkpoint(
        &self,
        origin: &str,
    ) -> Result<Option<(crate::tlog::Checkpoint, i64)>, StoreError> {
        self.checkpoint_where(Some(origin))
    }

    /// The checkpoint kept last, of `origin`'s log or of any.
    fn checkpoint_where(
        &self,
        origin: Option<&str>,
    ) -> Result<Option<(crate::tlog::Checkpoint, i64)>, StoreError> {
        use base64::Engine as _;
        let row: Option<(String, i64, String, String, i64)> = self
            .conn
            .query_row(
                "SELECT origin, size, root, note, first_seen FROM log_checkpoints
                 WHERE ?1 IS NULL OR origin = ?1 ORDER BY seq DESC LIMIT 1",
                [origin],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(origin, size, root, note, seen)| {
            let root = base64::engine::general_purpose::STANDARD
                .decode(root)
                .ok()?
                .try_into()
                .ok()?;
            Some((
                crate::tlog::Checkpoint {
                    origin,
                    size: u64::try_from(size).ok()?,
                    root,
                    note,
                },
                seen,
            ))
        }))
    }

    /// Keeps evidence that the log is not append-only; `false` when the same was kept before.
    pub fn add_fork(&self, fork: &LogFork) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "INSERT INTO log_forks (origin, old_note, new_note, reason, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![
                    fork.origin,
                    fork.old_note,
                    fork.new_note,
                    fork.reason,
                    fork.seen_at
                ],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// How far the uploaded results are proven, the latest checkpoint and every fork seen.
    pub fn log_status(&self) -> Result<LogStatus, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| self.err(e))
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT origin, old_note, new_note, reason, seen_at FROM log_forks ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let forks = stmt
            .query_map([], |r| {
                Ok(LogFork {
                    origin: r.get(0)?,
                    old_note: r.get(1)?,
                    new_note: r.get(2)?,
                    reason: r.get(3)?,
                    seen_at: r.get(4)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))?;
        Ok(LogStatus {
            uploaded: count(
                "SELECT count(*) FROM outbox WHERE state IN ('accepted', 'duplicate')",
            )?,
            logged: count("SELECT count(*) FROM log_leaves")?,
            proven: count("SELECT count(*) FROM log_leaves WHERE proof IS NOT NULL")?,
            checkpoint: self.checkpoint_where(None)?,
            forks,
        })
    }

    /// Counts and the last upload's outcome.
    pub fn status(&self) -> Result<Status, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
                .map_err(|e| self.err(e))
        };
        let meta = |key: &str| self.meta(key);
        let reasons = |state: &str| -> Result<Vec<(String, u64)>, StoreError> {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT coalesce(reason, 'no reason given'), count(*) FROM outbox
                     WHERE state = ?1 GROUP BY 1 ORDER BY 2 DESC, 1",
                )
                .map_err(|e| self.err(e))?;
            stmt.query_map([state], |r| {
                Ok((r.get(0)?, u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
        };
        let held_reasons = reasons("held")?;
        let rejected_reasons = reasons("rejected")?;
        Ok(Status {
            results: count("SELECT count(*) FROM results")?,
            pending: count("SELECT count(*) FROM outbox WHERE state = 'pending'")?,
            held: held_reasons.iter().map(|r| r.1).sum(),
            held_reasons,
            rejected: rejected_reasons.iter().map(|r| r.1).sum(),
            rejected_reasons,
            last_upload: meta("last_upload")?,
            last_error: meta("last_error")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("vantage.db")
    }

    fn result(id: &str) -> NewResult<'_> {
        NewResult {
            id,
            input: Some("https://example.org/"),
            test_name: "web_connectivity",
            measured_at: "2026-01-01 00:00:00",
            blocking: Some("\"dns\""),
            accessible: Some(false),
            confirmed: false,
            verdict: "{}",
            envelope: "{\"v\":1}",
        }
    }

    #[test]
    fn results_are_queued_once_and_outcomes_recorded() {
        let path = temp("queue");
        let mut store = Store::open(&path).expect("open");
        assert!(store.insert(&result("aa01")).expect("insert"));
        assert!(store.insert(&result("bb02")).expect("insert"));
        assert!(
            !store.insert(&result("aa01")).expect("again"),
            "same id twice"
        );
        let pending = store.pending(10).expect("pending");
        assert_eq!(
            pending.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["aa01", "bb02"]
        );
        store
            .record_outcomes(&[
                ("aa01".into(), Delivery::Accepted),
                (
                    "bb02".into(),
                    Delivery::Rejected {
                        reason: "bad signature".into(),
                    },
                ),
            ])
            .expect("record");
        assert!(
            store.pending(10).expect("pending").is_empty(),
            "rejected is not retried"
        );
        let status = store.status().expect("status");
        assert_eq!((status.results, status.pending, status.rejected), (2, 0, 1));
        assert!(status.last_upload.is_some());
        store.record_error("connection_refused").expect("error");
        assert_eq!(
            store.status().expect("s").last_error.as_deref(),
            Some("connection_refused")
        );
        assert_eq!(store.find("AA").expect("find")[0].upload_state, "accepted");
        let refused = &store.find("bb").expect("find")[0];
        assert_eq!(
            (
                refused.upload_state.as_str(),
                refused.upload_reason.as_deref()
            ),
            ("rejected", Some("bad signature")),
            "refused for good, and still stored"
        );
        assert_eq!(status.rejected_reasons, [("bad signature".to_string(), 1)]);
    }

    #[test]
    fn held_results_stay_out_of_the_queue_until_due_or_requeued() {
        let path = temp("held");
        let mut store = Store::open(&path).expect("open");
        for id in ["a1", "b2", "c3", "d4"] {
            store.insert(&result(id)).expect("insert");
        }
        let held = |reason: &str, secs: Option<u64>| Delivery::Held {
            reason: reason.into(),
            retry_after: secs.map(std::time::Duration::from_secs),
        };
        store
            .record_outcomes(&[
                ("a1".into(), held("unknown key", None)),
                ("b2".into(), held("unknown key", None)),
                ("c3".into(), held("rate limited: 10 lines an hour", Some(0))),
                ("d4".into(), held("time in the future", Some(3600))),
            ])
            .expect("record");
        assert!(store.pending(10).expect("pending").is_empty());
        let status = store.status().expect("status");
        assert_eq!((status.results, status.pending, status.held), (4, 0, 4));
        assert_eq!(
            status.held_reasons,
            [
                ("unknown key".to_string(), 2),
                ("rate limited: 10 lines an hour".to_string(), 1),
                ("time in the future".to_string(), 1),
            ]
        );
        // Only the one whose time has come goes back by itself.
        assert_eq!(store.requeue_held(Requeue::Due).expect("due"), 1);
        let ids = |store: &Store| -> Vec<String> {
            store
                .pending(10)
                .expect("pending")
                .into_iter()
                .map(|p| p.0)
                .collect()
        };
        assert_eq!(ids(&store), ["c3"]);
        // The reason stays visible until the aggregator answers again.
        assert_eq!(
            store.find("c3").expect("find")[0].upload_reason.as_deref(),
            Some("rate limited: 10 lines an hour")
        );
        // An enrolment (or `upload --retry-rejected`) sends the rest.
        assert_eq!(store.requeue_held(Requeue::All).expect("all"), 3);
        assert_eq!(ids(&store), ["a1", "b2", "c3", "d4"]);
        assert_eq!(store.list(10).expect("list").len(), 4, "nothing deleted");
    }

    #[test]
    fn migration_holds_what_older_versions_dropped_for_a_fixable_reason() {
        let path = temp("migrate");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        // A store as version 1 left it: every refusal `rejected`.
        let conn = open_migrated(&path, &MIGRATIONS[..1], "FULL").expect("v1");
        for (id, state, reason) in [
            ("0a01", "rejected", Some("unknown key")),
            ("0a02", "rejected", Some("revoked key")),
            ("0b01", "rejected", Some("time in the future")),
            ("0c01", "rejected", Some("bad signature")),
            ("0d01", "rejected", Some("malformed: missing field `input`")),
            ("0e01", "rejected", None),
            ("0f01", "accepted", None),
        ] {
            conn.execute(
                "INSERT INTO results (id, test_name, measured_at, verdict, envelope, stored_at)
                 VALUES (?1, 'canary', '2026-01-01 00:00:00', '{}', '{}', 0)",
                [id],
            )
            .expect("result");
            conn.execute(
                "INSERT INTO outbox (id, state, reason, updated_at) VALUES (?1, ?2, ?3, 0)",
                params![id, state, reason],
            )
            .expect("outbox");
        }
        drop(conn);
        let store = Store::open(&path).expect("migrated");
        let state = |id: &str| store.find(id).expect("find")[0].upload_state.clone();
        for id in ["0a01", "0a02", "0b01", "0e01"] {
            assert_eq!(state(id), "held", "{id}");
        }
        for id in ["0c01", "0d01"] {
            assert_eq!(state(id), "rejected", "{id}");
        }
        assert_eq!(state("0f01"), "accepted");
        // Those not about the key are due at once; the key's wait for an enrolment.
        assert_eq!(store.requeue_held(Requeue::Due).expect("due"), 2);
        assert_eq!(store.requeue_held(Requeue::All).expect("all"), 2);
        assert_eq!(store.status().expect("status").pending, 4);
    }

    #[test]
    fn many_processes_opening_a_new_store_at_once_migrate_it_once() {
        for round in 0..5 {
            let path = temp(&format!("race-{round}"));
            std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
            let opened: Vec<Result<Store, StoreError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..6).map(|_| scope.spawn(|| Store::open(&path))).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread"))
                    .collect()
            });
            for store in opened {
                let store = store.expect("every opener succeeds");
                assert_eq!(store.status().expect("status").results, 0);
            }
        }
    }

    #[test]
    fn leaves_proofs_checkpoints_and_forks_are_kept_and_counted() {
        let path = temp("log");
        let mut store = Store::open(&path).expect("open");
        for id in ["a1", "b2", "c3", "d4"] {
            store.insert(&result(id)).expect("insert");
        }
        store
            .record_outcomes(&[
                ("a1".into(), Delivery::Accepted),
                ("b2".into(), Delivery::Duplicate),
                ("c3".into(), Delivery::Accepted),
            ])
            .expect("outcomes");
        // Leaves of results not stored are not kept; a leaf given again is kept once, and
        // another one is reported.
        let moved = store
            .record_leaves(&[("a1".into(), 7), ("b2".into(), 3), ("zz".into(), 9)])
            .expect("leaves");
        assert!(moved.is_empty());
        let moved = store
            .record_leaves(&[("a1".into(), 7), ("b2".into(), 4)])
            .expect("leaves");
        assert_eq!(moved, [("b2".to_string(), 3, 4)]);
        let unproven = store.unproven(10).expect("unproven");
        assert_eq!(
            unproven
                .iter()
                .map(|u| (u.id.as_str(), u.leaf_index))
                .collect::<Vec<_>>(),
            [("b2", 3), ("a1", 7)]
        );
        assert_eq!(unproven[0].envelope, "{\"v\":1}");
        // Asked once, a result goes after those never asked about.
        store.mark_asked("b2").expect("asked");
        assert_eq!(store.unproven(1).expect("unproven")[0].id, "a1");

        let log = crate::tlog::StaticLog::from_leaves(&[[1u8; 64], [2u8; 64]]).expect("log");
        let key = crate::tlog::LogSigner::from_seed(&[5; 32]).expect("key");
        let note = key.sign(log.size, &log.root).expect("sign");
        let cp = crate::tlog::verify_checkpoint(&note, key.public()).expect("verify");
        assert!(store.add_checkpoint(&cp).expect("add"));
        assert!(!store.add_checkpoint(&cp).expect("again"), "kept once");
        let proof = log.prove(1, 2).expect("proof");
        store.record_proof("a1", &proof, &cp).expect("proof");
        assert_eq!(store.proof("a1").expect("read"), Some((7, proof, 2)));
        assert_eq!(store.proof("b2").expect("read"), None);
        assert_eq!(
            store
                .latest_checkpoint(&cp.origin)
                .expect("latest")
                .map(|c| c.0),
            Some(cp.clone())
        );
        assert_eq!(store.latest_checkpoint("other").expect("latest"), None);

        let fork = LogFork {
            origin: cp.origin.clone(),
            old_note: note.clone(),
            new_note: "another".into(),
            reason: "the log shrank".into(),
            seen_at: 1,
        };
        assert!(store.add_fork(&fork).expect("fork"));
        assert!(!store.add_fork(&fork).expect("again"), "kept once");
        let status = store.log_status().expect("status");
        assert_eq!(
            (status.uploaded, status.logged, status.proven),
            (3, 2, 1),
            "d4 was not uploaded, c3 has no leaf"
        );
        assert_eq!(status.checkpoint.map(|c| c.0), Some(cp));
        assert_eq!(status.forks, [fork]);
        assert_eq!(store.unproven(10).expect("unproven").len(), 1);
        assert_eq!(store.dir(), path.parent().expect("dir"));
    }

    #[test]
    fn a_store_of_the_previous_version_gains_the_log_tables_and_keeps_its_results() {
        let path = temp("migrate-log");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
        let conn = open_migrated(&path, &MIGRATIONS[..2], "FULL").expect("v2");
        conn.execute(
            "INSERT INTO results (id, test_name, measured_at, verdict, envelope, stored_at)
             VALUES ('e5', 'canary', '2026-01-01 00:00:00', '{}', '{}', 0)",
            [],
        )
        .expect("result");
        conn.execute(
            "INSERT INTO outbox (id, state, updated_at) VALUES ('e5', 'accepted', 0)",
            [],
        )
        .expect("outbox");
        drop(conn);
        let store = Store::open(&path).expect("migrated");
        let status = store.log_status().expect("status");
        assert_eq!((status.uploaded, status.logged), (1, 0), "not logged");
        assert_eq!(store.list(10).expect("list").len(), 1);
    }

    #[test]
    fn reopening_keeps_everything_and_newer_schemas_are_refused() {
        let path = temp("reopen");
        {
            let mut store = Store::open(&path).expect("open");
            store.insert(&result("cc03")).expect("insert");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.list(10).expect("list").len(), 1);
        drop(store);
        let conn = Connection::open(&path).expect("raw");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        let err = Store::open(&path).expect_err("too new");
        assert!(
            err.to_string()
                .contains("schema version 99, newer than this vantage"),
            "{err}"
        );
    }

    #[test]
    fn exports_are_incremental_and_leave_the_outbox_alone() {
        let path = temp("export");
        let mut store = Store::open(&path).expect("open");
        for id in ["e1", "e2"] {
            store.insert(&result(id)).expect("insert");
        }
        let ids = |store: &Store, all: bool, since: Option<&str>| exportable(store, all, since).0;
        assert_eq!(ids(&store, false, None), ["e1", "e2"]);
        assert_eq!(store.mark_exported(false, None, 1).expect("mark"), 1);
        assert_eq!(ids(&store, false, None), ["e2"]);
        assert_eq!(ids(&store, true, None), ["e1", "e2"]);
        // Still waiting for upload: export marks nothing sent.
        let pending: Vec<String> = store
            .pending(10)
            .expect("pending")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(pending, ["e1", "e2"]);
        // An accepted result is no longer exported, except with --all.
        store
            .record_outcomes(&[("e2".to_string(), Delivery::Accepted)])
            .expect("outcome");
        assert!(ids(&store, false, None).is_empty());
        assert_eq!(ids(&store, true, None).len(), 2);
        assert!(ids(&store, true, Some("2100-01-01 00:00:00")).is_empty());
        // A relayed envelope is queued once, and goes out like our own.
        let relayed = Relayed {
            id: "r1".into(),
            test_name: "canary".into(),
            measured_at: "2026-01-01 00:00:00".into(),
            input: None,
            envelope: "{}".into(),
        };
        assert_eq!(
            store
                .insert_relayed(&[relayed.clone(), relayed.clone()])
                .expect("relay"),
            1
        );
        assert_eq!(
            store
                .insert_relayed(std::slice::from_ref(&relayed))
                .expect("again"),
            0
        );
        assert_eq!(store.pending(10).expect("pending").len(), 2);
        // Own and relayed are asked for apart; a relay counts what it holds for others.
        let ids = |rows: Vec<(String, String)>| -> Vec<String> {
            rows.into_iter().map(|(id, _)| id).collect()
        };
        assert_eq!(ids(store.pending_of(10, false).expect("own")), ["e1"]);
        assert_eq!(ids(store.pending_of(10, true).expect("relayed")), ["r1"]);
        assert_eq!(store.relayed_waiting().expect("waiting"), 1);
        let mut other = relayed.clone();
        other.id = "r2".into();
        assert_eq!(
            store.insert_relayed_each(&[relayed, other]).expect("each"),
            [false, true]
        );
        store
            .record_outcomes(&[("r1".to_string(), Delivery::Accepted)])
            .expect("outcome");
        assert_eq!(store.relayed_waiting().expect("waiting"), 1);
    }

    /// The ids [`Store::each_exportable`] gives, and the last outbox row.
    fn exportable(store: &Store, all: bool, since: Option<&str>) -> (Vec<String>, Option<i64>) {
        let mut ids = Vec::new();
        let last = store
            .each_exportable(all, since, None, &mut |item| {
                ids.push(item.id.clone());
                Ok::<_, StoreError>(())
            })
            .expect("exportable");
        (ids, last)
    }

    /// The export reads its rows from one statement twice; a plan with a sort (`USE TEMP
    /// B-TREE FOR ORDER BY`) would hold every envelope in SQLite's sorter before the first row.
    #[test]
    fn the_export_walks_the_outbox_in_order_without_a_sort() {
        let store = Store::open(&temp("plan")).expect("open");
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {EXPORTABLE}"))
            .expect("plan");
        let plan: Vec<String> = stmt
            .query_map(params![false, None::<String>, i64::MAX], |r| r.get(3))
            .and_then(Iterator::collect)
            .expect("rows");
        assert!(
            plan.iter().all(|step| !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        assert!(
            plan[0].starts_with("SEARCH o USING INTEGER PRIMARY KEY")
                || plan[0].starts_with("SCAN o"),
            "{plan:?}"
        );
    }

    /// Two passes in a snapshot see the same rows while another connection stores more, and
    /// marking up to the last row seen leaves the newer ones for the next export.
    #[test]
    fn a_snapshot_keeps_its_rows_while_others_are_stored() {
        let path = temp("snapshot");
        let mut store = Store::open(&path).expect("open");
        let mut other = Store::open(&path).expect("second connection");
        for id in ["s1", "s2", "s3"] {
            store.insert(&result(id)).expect("insert");
        }
        let (first, second, upto) = store
            .snapshot(|store| {
                let (first, upto) = exportable(store, false, None);
                other.insert(&result("s4"))?;
                let (second, _) = exportable(store, false, None);
                Ok::<_, StoreError>((first, second, upto))
            })
            .expect("snapshot");
        assert_eq!(first, ["s1", "s2", "s3"]);
        assert_eq!(second, first, "the new row is not in the snapshot");
        assert_eq!(exportable(&store, false, None).0.len(), 4, "it is after");
        assert_eq!(
            store
                .mark_exported(false, None, upto.expect("rows"))
                .expect("mark"),
            3
        );
        assert_eq!(exportable(&store, false, None).0, ["s4"]);
        // --since marks only what it selected.
        assert_eq!(
            store
                .mark_exported(true, Some("2100-01-01 00:00:00"), i64::MAX)
                .expect("mark"),
            0
        );
        assert_eq!(exportable(&store, false, None).0, ["s4"]);
    }
}
