//! Numbered SQLite migrations keyed on `PRAGMA user_version`, for every SQLite file Vantage
//! keeps: the probe's local store ([`crate::store`]) and the aggregator's database both open
//! their files here, so both get the same guarantees: each step in its own transaction, run once
//! even when several processes open a new file at the same moment, and a file from a newer
//! version refused rather than misread.
//!
//! Migration `n` (0-based) moves a file from version `n` to `n + 1`; a list only ever grows at
//! its end, since a file's version is the count of steps it has seen.

use std::path::Path;

use rusqlite::Connection;

/// Why a database could not be opened and brought up to date. The caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// SQLite refused (opening, switching to WAL, or running a migration).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file's schema is newer than the migrations this binary knows.
    #[error("schema version {found}, newer than the {known} migrations this version knows")]
    TooNew {
        /// The file's `user_version`.
        found: i64,
        /// How many migrations we know.
        known: i64,
    },
}

/// Opens a SQLite file in WAL mode with the given `synchronous` level and applies the
/// `migrations` above its `PRAGMA user_version`, each in its own transaction.
///
/// Several processes may open the same file at once (the daemon's tasks, `vantage status` run
/// beside it, the aggregator's server and its maintenance command), so each migration step
/// takes the write lock first (`BEGIN IMMEDIATE`) and reads the version again under it: the
/// one that waited sees the migration done and does not run it twice.
pub fn open_migrated(
    path: &Path,
    migrations: &[&str],
    synchronous: &str,
) -> Result<Connection, MigrateError> {
    // Switching a new file to WAL needs an exclusive lock, and openers racing on a new file
    // were seen to get "database is locked" despite the busy timeout (once in 40 runs of the
    // race test on a loaded machine). Such an opener starts again, for a bounded while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause_ms = 5;
    loop {
        match open_migrated_once(path, migrations, synchronous) {
            Err(MigrateError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                pause_ms = (pause_ms * 2).min(200);
            }
            other => return other,
        }
    }
}

fn open_migrated_once(
    path: &Path,
    migrations: &[&str],
    synchronous: &str,
) -> Result<Connection, MigrateError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let version = |c: &Connection| -> rusqlite::Result<i64> {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
    };
    let mut current = version(&conn)?;
    while current < known {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        current = version(&tx)?;
        let Some(sql) = usize::try_from(current)
            .ok()
            .and_then(|i| migrations.get(i))
        else {
            break;
        };
        tx.execute_batch(sql)?;
        current += 1;
        tx.pragma_update(None, "user_version", current)?;
        tx.commit()?;
    }
    if current > known {
        return Err(MigrateError::TooNew {
            found: current,
            known,
        });
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[&str] = &[
        "CREATE TABLE t (a INTEGER NOT NULL);",
        "ALTER TABLE t ADD COLUMN b TEXT; INSERT INTO t (a, b) VALUES (1, 'one');",
    ];

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vantage-migrate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("db.sqlite")
    }

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version")
    }

    fn rows(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn steps_run_in_order_once_and_later_steps_apply_to_an_older_file() {
        let path = temp("order");
        let conn = open_migrated(&path, &STEPS[..1], "FULL").expect("v1");
        assert_eq!(version(&conn), 1);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        drop(conn);
        let conn = open_migrated(&path, STEPS, "NORMAL").expect("v2");
        assert_eq!((version(&conn), rows(&conn)), (2, 1));
        drop(conn);
        // Opening again runs nothing: the insert of step 2 is not repeated.
        let conn = open_migrated(&path, STEPS, "NORMAL").expect("again");
        assert_eq!((version(&conn), rows(&conn)), (2, 1));
    }

    #[test]
    fn a_failing_step_leaves_the_file_at_the_last_good_version() {
        let path = temp("fail");
        let broken = [
            STEPS[0],
            "ALTER TABLE t ADD COLUMN b TEXT; INSERT INTO nowhere VALUES (1);",
        ];
        let err = open_migrated(&path, &broken, "FULL").expect_err("step 2 fails");
        assert!(matches!(err, MigrateError::Sqlite(_)), "{err:?}");
        assert!(err.to_string().contains("no such table: nowhere"), "{err}");
        // Step 2 was rolled back whole: its column is not there, and the good list applies.
        let conn = open_migrated(&path, STEPS, "FULL").expect("fixed");
        assert_eq!((version(&conn), rows(&conn)), (2, 1));
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused() {
        let path = temp("newer");
        drop(open_migrated(&path, STEPS, "FULL").expect("v2"));
        let err = open_migrated(&path, &STEPS[..1], "FULL").expect_err("too new");
        assert!(
            matches!(err, MigrateError::TooNew { found: 2, known: 1 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "schema version 2, newer than the 1 migrations this version knows"
        );
    }

    #[test]
    fn a_path_that_cannot_be_a_database_is_an_error() {
        let dir = temp("dir");
        let parent = dir.parent().expect("parent");
        // A directory is not a file SQLite can open.
        let err = open_migrated(parent, STEPS, "FULL").expect_err("a directory");
        assert!(matches!(err, MigrateError::Sqlite(_)), "{err:?}");
        let file = parent.join("not-sqlite");
        std::fs::write(&file, vec![b'x'; 4096]).expect("write");
        let err = open_migrated(&file, STEPS, "FULL").expect_err("not a database");
        assert!(err.to_string().contains("not a database"), "{err}");
    }
}
