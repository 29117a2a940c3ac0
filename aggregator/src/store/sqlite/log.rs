//! The SQLite store's transparency log (`docs/transparency.md`), written by the transaction
//! that stores the measurements:
//!
//! - `log_leaves`: one row per leaf: its index, its 64 bytes ([`crate::store::log::leaf`]),
//!   which begin with the measurement id, and the Merkle tree's stored hashes that appending
//!   it completed (RFC 6962 section 2.1 hashing, in Crosby and Wallach's order as `tlog_tiles`
//!   computes them): the leaf's hash and the root of each subtree it closed (1 + the trailing
//!   one bits of its index). Stored hash `(level, k)` is therefore hash `level` of leaf
//!   `((k + 1) << level) - 1`'s row;
//! - `measurements.leaf`: the index of the measurement's leaf, found through the id's own
//!   index (a proof asked by id, a duplicate's leaf);
//! - `log_checkpoints`: the signed checkpoints published;
//! - `log_cosignatures`: the witnesses' cosignatures of checkpoints (C2SP tlog-cosignature),
//!   one per witness and checkpoint;
//! - `log_entries`: the leaves that are not measurements, by envelope id: heartbeats, with
//!   their envelope byte for byte (a heartbeat row keeps only key, network and time), and
//!   enrolments, without theirs (it carries the one-time token, which the store keeps only as
//!   a SHA-256: a copy of the file must enrol nobody).
//!
//! A measurement adds one row at the end of a rowid table and one column to its own row, with
//! no other index to update: the log costs ingest little more than the bytes it writes
//! (`benches/log.sh`). Appending leaf
//! `n` reads at most log2(n) earlier hashes (the roots of the complete subtrees to its left);
//! those written in the same transaction come from memory, the others from one lookup each.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tlog_tiles::{Hash, HashReader, stored_hash_index, stored_hashes_for_record_hash};

use super::Sqlite;
use crate::store::log::{
    Entry, EntryKind, LEAF_BYTES, LogStore, Stored, StoredCheckpoint, row_leaf,
};
use crate::store::{DbError, Redeemed, Row, StoredHeartbeat};

/// Migration 12: the log's tables.
pub(super) const MIGRATION: &str = "CREATE TABLE log_leaves (
        idx INTEGER PRIMARY KEY,
        leaf BLOB NOT NULL,
        hashes BLOB NOT NULL
    );
    ALTER TABLE measurements ADD COLUMN leaf INTEGER;
    CREATE TABLE log_checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        published_at INTEGER NOT NULL
    );";

/// Migration 13: the leaves of heartbeats and enrolments, by envelope id, with a heartbeat's
/// envelope (`body`; NULL for an enrolment).
pub(super) const ENTRIES_MIGRATION: &str = "CREATE TABLE log_entries (
        leaf INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        body TEXT
    );";

/// Migration 14: the witnesses' cosignatures, one per witness (`NAME+KEYID`) and checkpoint.
pub(super) const COSIGNATURES_MIGRATION: &str = "CREATE TABLE log_cosignatures (
        size INTEGER NOT NULL,
        witness TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (size, witness)
    );";

/// Signed rows appended per transaction when catching up on rows stored without the log.
const CATCH_UP_BATCH: usize = 10_000;

/// Appends leaves inside one transaction.
pub(super) struct Appender {
    /// The index the next leaf gets.
    next: u64,
    /// Hashes written by this transaction, by stored hash index.
    written: HashMap<u64, Hash>,
}

/// Reads earlier hashes for `tlog_tiles`: this transaction's from memory, the rest from the
/// table. An SQL error is kept aside (the trait's error type cannot carry it).
struct TxReader<'a> {
    tx: &'a Transaction<'a>,
    written: &'a HashMap<u64, Hash>,
    failed: RefCell<Option<rusqlite::Error>>,
}

impl HashReader for TxReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(indexes.len());
        for &i in indexes {
            if let Some(h) = self.written.get(&i) {
                out.push(*h);
                continue;
            }
            match read_hash(self.tx, i) {
                Ok(Some(h)) => out.push(h),
                Ok(None) => return Err(tlog_tiles::Error::IndexesNotInTree),
                Err(e) => {
                    *self.failed.borrow_mut() = Some(e);
                    return Err(tlog_tiles::Error::IndexesNotInTree);
                }
            }
        }
        Ok(out)
    }
}

/// The leaf whose row holds stored hash `index`, and the hash's place in the row: stored hash
/// `(level, k)` was written by leaf `((k + 1) << level) - 1`, as its hash number `level`.
pub(super) fn hash_place(index: u64) -> Option<(i64, usize)> {
    let (level, k) = tlog_tiles::split_stored_hash_index(index);
    let leaf = ((u128::from(k) + 1) << level) - 1;
    Some((i64::try_from(leaf).ok()?, usize::from(level)))
}

fn read_hash(c: &Connection, index: u64) -> rusqlite::Result<Option<Hash>> {
    let Some((leaf, place)) = hash_place(index) else {
        return Ok(None);
    };
    let row: Option<Vec<u8>> = c
        .prepare_cached("SELECT hashes FROM log_leaves WHERE idx = ?1")?
        .query_row([leaf], |r| r.get(0))
        .optional()?;
    Ok(row
        .and_then(|b| b.get(place * 32..place * 32 + 32).map(<[u8]>::to_vec))
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(Hash))
}

/// A failure that is not SQLite's, carried through rusqlite's error type to [`Sqlite::with`].
fn other(message: String) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(message.into())
}

impl Appender {
    /// Starts appending after the last committed leaf.
    pub(super) fn start(tx: &Transaction<'_>) -> rusqlite::Result<Appender> {
        let next: i64 = tx.query_row(
            "SELECT coalesce(max(idx) + 1, 0) FROM log_leaves",
            [],
            |r| r.get(0),
        )?;
        Ok(Appender {
            next: u64::try_from(next).unwrap_or(0),
            written: HashMap::new(),
        })
    }

    /// The index the next leaf gets.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// Appends `leaf` as leaf [`Appender::next`] (whose measurement row names it); returns
    /// its index.
    pub(super) fn append(
        &mut self,
        tx: &Transaction<'_>,
        leaf: &[u8; LEAF_BYTES],
    ) -> rusqlite::Result<u64> {
        let n = self.next;
        let hashes = {
            let reader = TxReader {
                tx,
                written: &self.written,
                failed: RefCell::new(None),
            };
            match stored_hashes_for_record_hash(n, tlog_tiles::record_hash(leaf), &reader) {
                Ok(h) => h,
                Err(e) => {
                    return Err(reader
                        .failed
                        .into_inner()
                        .unwrap_or_else(|| other(format!("appending leaf {n}: {e}"))));
                }
            }
        };
        let index = i64::try_from(n).map_err(|e| other(e.to_string()))?;
        let mut row = Vec::with_capacity(hashes.len() * 32);
        for (i, h) in (stored_hash_index(0, n)..).zip(hashes) {
            row.extend_from_slice(&h.0);
            self.written.insert(i, h);
        }
        tx.prepare_cached("INSERT INTO log_leaves (idx, leaf, hashes) VALUES (?1, ?2, ?3)")?
            .execute(params![index, &leaf[..], row])?;
        self.next = n + 1;
        Ok(n)
    }
}

/// The leaf already appended for measurement `id`.
pub(super) fn leaf_index(c: &Connection, id: &str) -> rusqlite::Result<Option<u64>> {
    let idx: Option<Option<i64>> = c
        .prepare_cached("SELECT leaf FROM measurements WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(idx.flatten().and_then(|i| u64::try_from(i).ok()))
}

/// The `meta` key under which [`catch_up`] remembers the last measurement row (`seq`) it has
/// looked at, so that the next start begins after it.
const CAUGHT_UP: &str = "log_caught_up_seq";

/// Appends the signed measurements stored without the log (`serve --no-log`, or before the log
/// existed), oldest first, a bounded batch per transaction; returns how many. Every signed row
/// stored after the last leaf's row is looked at, and any that has no leaf appended: rows
/// stored by a server with the log are appended as they are stored, so none is left behind.
/// How far it has looked is remembered ([`CAUGHT_UP`]; `seq` only grows, since measurements
/// are never deleted), so the rows of a large OONI import after the last leaf are read once,
/// not at every start.
pub(super) fn catch_up(c: &mut Connection) -> rusqlite::Result<u64> {
    let mut appended = 0;
    loop {
        let tx = c.transaction()?;
        // The last measurement's leaf, found by the id its leaf begins with, walking back
        // over the heartbeats' and enrolments' leaves after it.
        let after: i64 = tx
            .query_row(
                "SELECT m.seq FROM log_leaves l
                 JOIN measurements m ON m.id = lower(hex(substr(l.leaf, 1, 32)))
                 ORDER BY l.idx DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let looked: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [CAUGHT_UP], |r| {
                r.get(0)
            })
            .optional()?;
        let after = after.max(looked.unwrap_or(0));
        let rows: Vec<(i64, String, String)> = tx
            .prepare(
                "SELECT seq, id, probe_key FROM measurements
                 WHERE seq > ?1 AND probe_key IS NOT NULL AND leaf IS NULL
                 ORDER BY seq LIMIT ?2",
            )?
            .query_map(
                params![after, i64::try_from(CATCH_UP_BATCH).unwrap_or(i64::MAX)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let mut appender = Appender::start(&tx)?;
        let mut logged = 0;
        for (seq, id, key) in &rows {
            // A row whose id or key is not a verified envelope's (ingest stores none) has no
            // leaf, and is passed over.
            if let Some(leaf) = crate::store::log::leaf(id, key) {
                let n = appender.append(&tx, &leaf)?;
                let n = i64::try_from(n).map_err(|e| other(e.to_string()))?;
                tx.prepare_cached("UPDATE measurements SET leaf = ?1 WHERE seq = ?2")?
                    .execute(params![n, seq])?;
                logged += 1;
            }
        }
        // A short batch was the last: every row stored so far has been looked at.
        let done = rows.len() < CATCH_UP_BATCH;
        let reached: i64 = match rows.last() {
            Some((seq, _, _)) if !done => *seq,
            _ => tx.query_row("SELECT coalesce(max(seq), 0) FROM measurements", [], |r| {
                r.get(0)
            })?,
        };
        if looked != Some(reached) {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![CAUGHT_UP, reached],
            )?;
        }
        tx.commit()?;
        appended += logged;
        if done {
            return Ok(appended);
        }
    }
}

/// Appends the leaf of envelope `id` signed by `key` (a heartbeat or an enrolment) and records
/// it in `log_entries`, inside `tx`; `None` when `id` is already logged (the same envelope
/// again) or the id or key is not a verified envelope's.
fn append_entry(
    tx: &Transaction<'_>,
    id: &str,
    key: &str,
    kind: EntryKind,
    body: Option<&str>,
) -> rusqlite::Result<Option<u64>> {
    let Some(leaf) = crate::store::log::leaf(id, key) else {
        return Ok(None);
    };
    let mut appender = Appender::start(tx)?;
    let next = i64::try_from(appender.next()).map_err(|e| other(e.to_string()))?;
    let recorded = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO log_entries (leaf, id, kind, body) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![next, id, kind.as_str(), body])?;
    if recorded == 0 {
        return Ok(None);
    }
    appender.append(tx, &leaf).map(Some)
}

/// The leaf already appended for the heartbeat or enrolment `id`.
fn entry_leaf(c: &Connection, id: &str) -> rusqlite::Result<Option<u64>> {
    let idx: Option<i64> = c
        .prepare_cached("SELECT leaf FROM log_entries WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(idx.and_then(|i| u64::try_from(i).ok()))
}

impl Sqlite {
    /// Stores rows in one transaction, appending each new signed one to the log when this store
    /// keeps it.
    pub(super) fn insert_rows(&self, rows: &[Row]) -> Result<Vec<Stored>, DbError> {
        self.insert_rows_received(rows, &BTreeMap::new())
    }

    /// [`Sqlite::insert_rows`], each row received at `received[&row.id]` (now when absent):
    /// a copy (`migrate`) keeps when each reached the store it came from.
    pub(super) fn insert_rows_received(
        &self,
        rows: &[Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<Vec<Stored>, DbError> {
        let logging = self.logging;
        self.with(|c| {
            let tx = c.transaction()?;
            let mut stored = Vec::with_capacity(rows.len());
            {
                let mut appender = if logging {
                    Some(Appender::start(&tx)?)
                } else {
                    None
                };
                let mut insert = super::Inserter::new(&tx)?;
                for r in rows {
                    // A new signed row is stored naming the leaf it is about to get.
                    let leaf = appender.as_ref().and_then(|_| row_leaf(r));
                    let next = appender.as_ref().map(Appender::next);
                    let new = insert.row(r, leaf.and(next), received.get(&r.id).copied())?;
                    let leaf_index = match (&mut appender, new, leaf) {
                        (Some(a), true, Some(leaf)) => Some(a.append(&tx, &leaf)?),
                        (Some(_), false, Some(_)) => leaf_index(&tx, &r.id)?,
                        _ => None,
                    };
                    stored.push(Stored { new, leaf_index });
                }
            }
            tx.commit()?;
            Ok(stored)
        })
    }

    fn log_missing(&self, what: String) -> DbError {
        DbError::LogMissing {
            path: self.path.clone(),
            what,
        }
    }
}

impl LogStore for Sqlite {
    fn insert_logged(&self, rows: &[Row]) -> Result<Vec<Stored>, DbError> {
        self.insert_rows(rows)
    }

    fn heartbeat_logged(
        &self,
        beat: &StoredHeartbeat,
        id: &str,
        envelope: &str,
    ) -> Result<Stored, DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let new = super::record_heartbeat(
                &tx,
                &beat.key,
                &beat.cc,
                beat.asn,
                (&beat.sent_at, beat.received_at),
                beat.verified,
            )?;
            let leaf_index = if new {
                match append_entry(&tx, id, &beat.key, EntryKind::Heartbeat, Some(envelope))? {
                    Some(n) => Some(n),
                    None => entry_leaf(&tx, id)?,
                }
            } else {
                entry_leaf(&tx, id)?
            };
            tx.commit()?;
            Ok(Stored { new, leaf_index })
        })
    }

    fn redeem_logged(
        &self,
        token_sha256: &str,
        key: &str,
        id: &str,
    ) -> Result<(Redeemed, Option<u64>), DbError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let outcome = super::redeem(&tx, token_sha256, key)?;
            let leaf_index = match outcome {
                Redeemed::Enrolled => {
                    match append_entry(&tx, id, key, EntryKind::Enrolment, None)? {
                        Some(n) => Some(n),
                        None => entry_leaf(&tx, id)?,
                    }
                }
                Redeemed::AlreadyEnrolled => entry_leaf(&tx, id)?,
                _ => None,
            };
            tx.commit()?;
            Ok((outcome, leaf_index))
        })
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, DbError> {
        let found: Option<(i64, String, Option<String>)> = self.read(|c| {
            c.prepare_cached("SELECT leaf, kind, body FROM log_entries WHERE id = ?1")?
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })?;
        if let Some((leaf, kind, body)) = found {
            let kind = EntryKind::parse(&kind)
                .ok_or_else(|| self.log_missing(format!("known kind of entry {id} ({kind:?})")))?;
            return Ok(Some(Entry {
                leaf_index: u64::try_from(leaf).unwrap_or(0),
                kind,
                envelope: body,
            }));
        }
        let Some(leaf_index) = self.read(|c| leaf_index(c, id))? else {
            return Ok(None);
        };
        let envelope = crate::store::Storage::envelope(self, id)?;
        Ok(Some(Entry {
            leaf_index,
            kind: EntryKind::Measurement,
            envelope,
        }))
    }

    fn tree_size(&self) -> Result<u64, DbError> {
        let n: i64 = self.read(|c| {
            c.query_row(
                "SELECT coalesce(max(idx) + 1, 0) FROM log_leaves",
                [],
                |r| r.get(0),
            )
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, DbError> {
        let found: Vec<Option<Hash>> = self.read(|c| {
            indexes
                .iter()
                .map(|&i| read_hash(c, i))
                .collect::<rusqlite::Result<_>>()
        })?;
        found
            .into_iter()
            .zip(indexes)
            .map(|(h, i)| {
                h.map(|h| h.0)
                    .ok_or_else(|| self.log_missing(format!("stored hash {i}")))
            })
            .collect()
    }

    fn leaves(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, DbError> {
        let bound = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>)> = self.read(|c| {
            c.prepare_cached(
                "SELECT idx, leaf FROM log_leaves WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )?
            .query_map([bound(from), bound(from.saturating_add(count))], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect()
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (want, (idx, leaf)) in (from..).zip(rows) {
            if u64::try_from(idx).ok() != Some(want) {
                return Err(self.log_missing(format!("leaf {want}")));
            }
            out.push(leaf);
        }
        match u64::try_from(out.len()) {
            Ok(n) if n == count => Ok(out),
            _ => Err(self.log_missing(format!(
                "leaf {}",
                from.saturating_add(u64::try_from(out.len()).unwrap_or(0))
            ))),
        }
    }

    fn leaf_of(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, DbError> {
        let found: Option<(i64, Vec<u8>)> = self.read(|c| {
            let measurement = c
                .query_row(
                    "SELECT l.idx, l.leaf FROM measurements m JOIN log_leaves l ON l.idx = m.leaf
                     WHERE m.id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match measurement {
                Some(found) => Ok(Some(found)),
                None => c
                    .query_row(
                        "SELECT l.idx, l.leaf FROM log_entries e JOIN log_leaves l ON l.idx = e.leaf
                         WHERE e.id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional(),
            }
        })?;
        Ok(found.and_then(|(i, leaf)| Some((u64::try_from(i).ok()?, leaf))))
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, DbError> {
        let found: Option<(i64, Vec<u8>, String, i64)> = self.read(|c| {
            c.query_row(
                "SELECT size, root, note, published_at FROM log_checkpoints
                 ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
        })?;
        let Some((size, root, note, published_at)) = found else {
            return Ok(None);
        };
        let root = <[u8; 32]>::try_from(root)
            .map_err(|_| self.log_missing(format!("32-byte root in checkpoint {size}")))?;
        Ok(Some(StoredCheckpoint {
            size: u64::try_from(size).unwrap_or(0),
            root,
            note,
            published_at,
        }))
    }

    fn checkpoint_of(&self, size: u64) -> Result<Option<StoredCheckpoint>, DbError> {
        let Ok(at) = i64::try_from(size) else {
            return Ok(None);
        };
        let found: Option<(Vec<u8>, String, i64)> = self.read(|c| {
            c.query_row(
                "SELECT root, note, published_at FROM log_checkpoints WHERE size = ?1",
                [at],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })?;
        let Some((root, note, published_at)) = found else {
            return Ok(None);
        };
        let root = <[u8; 32]>::try_from(root)
            .map_err(|_| self.log_missing(format!("32-byte root in checkpoint {size}")))?;
        Ok(Some(StoredCheckpoint {
            size,
            root,
            note,
            published_at,
        }))
    }

    fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> Result<bool, DbError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let timestamp = i64::try_from(timestamp).unwrap_or(i64::MAX);
        self.with(|c| {
            c.execute(
                "INSERT INTO log_cosignatures (size, witness, timestamp, line)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (size, witness) DO UPDATE
                 SET timestamp = excluded.timestamp, line = excluded.line
                 WHERE excluded.timestamp > log_cosignatures.timestamp",
                params![size, witness, timestamp, line],
            )
            .map(|n| n > 0)
        })
    }

    fn cosignatures(&self, size: u64) -> Result<Vec<String>, DbError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached("SELECT line FROM log_cosignatures WHERE size = ?1 ORDER BY witness")?
                .query_map([size], |r| r.get(0))?
                .collect()
        })
    }

    fn add_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), DbError> {
        let size = i64::try_from(cp.size).unwrap_or(i64::MAX);
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO log_checkpoints (size, root, note, published_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![size, &cp.root[..], cp.note, cp.published_at],
            )
            .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Storage;

    fn row(n: u8, signed: bool) -> Row {
        use base64::Engine as _;
        Row {
            id: format!("{n:02x}").repeat(32),
            source: if signed { "vantage" } else { "ooni" }.into(),
            probe_key: signed.then(|| base64::engine::general_purpose::STANDARD.encode([n; 32])),
            probe_cc: "IT".into(),
            probe_asn: 3269,
            test_name: "web_connectivity".into(),
            input: None,
            domain: None,
            measured_at: "2026-01-01 00:00:00".into(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: format!("{{\"n\":{n}}}"),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("agg.db")
    }

    /// The database of [`temp`] `name`, as it was left.
    fn temp_keep(name: &str) -> std::path::PathBuf {
        std::env::temp_dir()
            .join(format!("vantage-log-{}-{name}", std::process::id()))
            .join("agg.db")
    }

    /// The root of the first `n` leaves, computed from the leaves alone (RFC 6962 MTH).
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => tlog_tiles::EMPTY_HASH,
            1 => tlog_tiles::record_hash(&leaves[0]),
            n => {
                let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
                tlog_tiles::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    struct Reader<'a>(&'a Sqlite);
    impl HashReader for Reader<'_> {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            self.0
                .hashes(indexes)
                .map(|v| v.into_iter().map(Hash).collect())
                .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
        }
    }

    #[test]
    fn each_stored_hash_is_found_in_the_row_of_the_leaf_that_completed_it() {
        for n in 0..2000u64 {
            let count = 1 + (n + 1).trailing_zeros() as usize;
            for j in 0..count {
                let i = stored_hash_index(0, n) + j as u64;
                assert_eq!(hash_place(i), Some((n as i64, j)), "leaf {n}, hash {j}");
            }
        }
        let far = (1u64 << 62) - 1;
        assert_eq!(
            hash_place(stored_hash_index(62, 0)),
            Some((i64::try_from(far).expect("fits"), 62))
        );
    }

    #[test]
    fn a_duplicate_is_not_appended_twice_and_gets_its_first_leaf() {
        let db = Sqlite::open(&temp("dup")).expect("open");
        let first = db
            .insert_logged(&[row(1, true), row(2, false), row(3, true)])
            .expect("insert");
        let leaves: Vec<_> = first.iter().map(|s| (s.new, s.leaf_index)).collect();
        assert_eq!(leaves, [(true, Some(0)), (true, None), (true, Some(1))]);
        let again = db
            .insert_logged(&[row(3, true), row(4, true), row(1, true)])
            .expect("insert");
        let leaves: Vec<_> = again.iter().map(|s| (s.new, s.leaf_index)).collect();
        assert_eq!(
            leaves,
            [(false, Some(1)), (true, Some(2)), (false, Some(0))]
        );
        assert_eq!(db.tree_size().expect("size"), 3);
        // Storage::insert appends too: an import of signed rows or a copy is logged.
        assert_eq!(db.insert(&[row(5, true)]).expect("insert"), [true]);
        assert_eq!(db.tree_size().expect("size"), 4);
        let (index, leaf) = db.leaf_of(&row(5, true).id).expect("read").expect("logged");
        assert_eq!(index, 3);
        assert_eq!(
            leaf,
            crate::store::log::row_leaf(&row(5, true)).expect("leaf")
        );
        assert!(db.leaf_of(&row(2, false).id).expect("read").is_none());
        assert!(
            db.envelope(&row(2, false).id).expect("read").is_some(),
            "the import is stored"
        );
    }

    #[test]
    fn the_stored_hashes_give_the_root_of_the_leaves_at_every_size() {
        let db = Sqlite::open(&temp("roots")).expect("open");
        // Batches of uneven sizes: hashes come from memory and from the table.
        let mut n = 0u8;
        for batch in [1usize, 2, 5, 1, 13, 40] {
            let rows: Vec<Row> = (0..batch)
                .map(|_| {
                    n += 1;
                    row(n, true)
                })
                .collect();
            db.insert_logged(&rows).expect("insert");
        }
        let size = db.tree_size().expect("size");
        assert_eq!(size, 62);
        let leaves = db.leaves(0, size).expect("leaves");
        for s in 0..=size {
            let root = tlog_tiles::tree_hash(s, &Reader(&db)).expect("root");
            let want = mth(&leaves[..usize::try_from(s).expect("small")]);
            assert_eq!(root, want, "size {s}");
        }
        assert!(db.leaves(60, 3).is_err(), "leaf 62 does not exist");
        assert!(db.hashes(&[10_000]).is_err());
    }

    #[test]
    fn a_heartbeat_and_an_enrolment_get_a_leaf_once_and_only_the_heartbeat_keeps_its_envelope() {
        use crate::store::Storage;
        let db = Sqlite::open(&temp("entries")).expect("open");
        let key = |n: u8| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode([n; 32])
        };
        let beat = StoredHeartbeat {
            key: key(7),
            cc: "IT".into(),
            asn: 3269,
            sent_at: "2026-01-01 00:00:00".into(),
            verified: false,
            received_at: None,
        };
        let (hb, en) = ("aa".repeat(32), "bb".repeat(32));
        let first = db.heartbeat_logged(&beat, &hb, "{\"hb\":1}").expect("beat");
        assert_eq!(
            first,
            Stored {
                new: true,
                leaf_index: Some(0)
            }
        );
        let again = db.heartbeat_logged(&beat, &hb, "{\"hb\":1}").expect("beat");
        assert_eq!(
            again,
            Stored {
                new: false,
                leaf_index: Some(0)
            },
            "not appended twice"
        );
        assert_eq!(db.heartbeat_count("IT").expect("count"), 1);
        db.insert_logged(&[row(1, true)]).expect("insert");
        db.add_token("t1").expect("token");
        assert_eq!(
            db.redeem_logged("t1", &key(7), &en).expect("redeem"),
            (Redeemed::Enrolled, Some(2))
        );
        assert_eq!(
            db.redeem_logged("t1", &key(7), &en).expect("redeem"),
            (Redeemed::AlreadyEnrolled, Some(2))
        );
        assert_eq!(
            db.redeem_logged("t1", &key(8), &"cc".repeat(32))
                .expect("redeem"),
            (Redeemed::Spent, None)
        );
        assert_eq!(
            db.redeem_logged("t2", &key(8), &"cc".repeat(32))
                .expect("redeem"),
            (Redeemed::Unknown, None)
        );
        assert_eq!(db.tree_size().expect("size"), 3);
        let entry = |id: &str| db.entry(id).expect("read");
        assert_eq!(
            entry(&hb),
            Some(Entry {
                leaf_index: 0,
                kind: EntryKind::Heartbeat,
                envelope: Some("{\"hb\":1}".into())
            })
        );
        assert_eq!(
            entry(&row(1, true).id),
            Some(Entry {
                leaf_index: 1,
                kind: EntryKind::Measurement,
                envelope: Some(row(1, true).envelope)
            })
        );
        assert_eq!(
            entry(&en),
            Some(Entry {
                leaf_index: 2,
                kind: EntryKind::Enrolment,
                envelope: None
            })
        );
        assert_eq!(entry(&"cc".repeat(32)), None);
        let (index, leaf) = db.leaf_of(&en).expect("read").expect("logged");
        assert_eq!(index, 2);
        assert_eq!(leaf, crate::store::log::leaf(&en, &key(7)).expect("leaf"));
        // Stored hashes of leaves of all kinds give the root of the leaves.
        let leaves = db.leaves(0, 3).expect("leaves");
        assert_eq!(
            tlog_tiles::tree_hash(3, &Reader(&db)).expect("root"),
            mth(&leaves)
        );
        // With an enrolment's leaf last, the next start's catch-up appends nothing.
        drop(db);
        let db = Sqlite::open(&temp_keep("entries")).expect("open");
        assert_eq!(db.tree_size().expect("size"), 3);
    }

    #[test]
    fn one_cosignature_is_kept_per_witness_and_checkpoint_the_latest() {
        let db = Sqlite::open(&temp("cosignatures")).expect("open");
        let checkpoint = StoredCheckpoint {
            size: 0,
            root: [0; 32],
            note: "n\n".into(),
            published_at: 1,
        };
        db.add_checkpoint(&checkpoint).expect("add");
        assert_eq!(db.checkpoint_of(0).expect("read"), Some(checkpoint));
        assert_eq!(db.checkpoint_of(1).expect("read"), None);
        assert_eq!(db.checkpoint_of(u64::MAX).expect("read"), None);
        assert!(db.add_cosignature(0, "w2+01", 10, "— w2 b\n").expect("add"));
        assert!(db.add_cosignature(0, "w1+01", 10, "— w1 a\n").expect("add"));
        assert!(
            !db.add_cosignature(0, "w1+01", 9, "— w1 older\n")
                .expect("add")
        );
        assert!(
            !db.add_cosignature(0, "w1+01", 10, "— w1 same\n")
                .expect("add")
        );
        assert!(
            db.add_cosignature(0, "w1+01", 11, "— w1 newer\n")
                .expect("add")
        );
        assert!(
            db.add_cosignature(5, "w1+01", 1, "— w1 other\n")
                .expect("add")
        );
        assert_eq!(
            db.cosignatures(0).expect("read"),
            ["— w1 newer\n", "— w2 b\n"]
        );
        assert_eq!(db.cosignatures(1).expect("read"), Vec::<String>::new());
    }

    #[test]
    fn rows_stored_without_the_log_are_appended_at_the_next_start_with_it() {
        let path = temp("catch-up");
        {
            let db = Sqlite::open(&path).expect("open");
            db.insert(&[row(1, true)]).expect("insert");
        }
        {
            let db = Sqlite::open_without_log(&path).expect("open");
            assert!(db.log().is_err(), "no log with --no-log");
            let stored = db
                .insert_rows(&[row(2, true), row(3, false), row(4, true)])
                .expect("insert");
            assert!(stored.iter().all(|s| s.new && s.leaf_index.is_none()));
        }
        let db = Sqlite::open(&path).expect("open");
        assert_eq!(db.tree_size().expect("size"), 3);
        let index = |n| db.leaf_of(&row(n, true).id).expect("read").map(|l| l.0);
        assert_eq!([index(1), index(2), index(4)], [Some(0), Some(1), Some(2)]);
        drop(db);
        // Nothing is left to catch up: the next start appends nothing.
        let db = Sqlite::open(&path).expect("open");
        assert_eq!(db.tree_size().expect("size"), 3);
    }

    #[test]
    fn catching_up_remembers_how_far_it_looked_and_passes_over_rows_it_cannot_log() {
        let path = temp("caught-up");
        let looked = |db: &Sqlite| -> (Option<i64>, i64) {
            db.read(|c| {
                let looked = c
                    .query_row("SELECT value FROM meta WHERE key = ?1", [CAUGHT_UP], |r| {
                        r.get(0)
                    })
                    .optional()?;
                let last = c.query_row("SELECT max(seq) FROM measurements", [], |r| r.get(0))?;
                Ok((looked, last))
            })
            .expect("read")
        };
        Sqlite::open(&path)
            .expect("open")
            .insert(&[row(1, true)])
            .expect("insert");
        // Stored without the log: more than a batch of rows whose key is not a verified
        // envelope's, OONI imports, then one signed measurement.
        {
            let db = Sqlite::open_without_log(&path).expect("open");
            let mut rows: Vec<Row> = (0..CATCH_UP_BATCH + 5)
                .map(|i| Row {
                    id: format!("{i:064x}"),
                    probe_key: Some("not a key".into()),
                    ..row(0, true)
                })
                .collect();
            rows.extend([row(7, false), row(8, false), row(2, true)]);
            db.insert_rows(&rows).expect("insert");
        }
        let db = Sqlite::open(&path).expect("open");
        assert_eq!(
            db.leaf_of(&row(2, true).id).expect("read").map(|l| l.0),
            Some(1),
            "found past a whole batch of rows without a leaf"
        );
        let (at, last) = looked(&db);
        assert_eq!(at, Some(last), "every row looked at is remembered");
        drop(db);
        // An import stored since is looked at once; a signed row stored without the log after
        // it is still appended.
        Sqlite::open(&path)
            .expect("open")
            .insert(&[row(9, false)])
            .expect("insert");
        Sqlite::open_without_log(&path)
            .expect("open")
            .insert_rows(&[row(3, true)])
            .expect("insert");
        let db = Sqlite::open(&path).expect("open");
        assert_eq!(db.tree_size().expect("size"), 3);
        let (at, last) = looked(&db);
        assert_eq!(at, Some(last));
        drop(db);
        // What remembering saves: rows up to the remembered one are not read again (here a
        // signed row planted before it, which no real store has, is passed over).
        Sqlite::open_without_log(&path)
            .expect("open")
            .insert_rows(&[row(4, true)])
            .expect("insert");
        let c = Connection::open(&path).expect("open");
        c.execute(
            "UPDATE meta SET value = (SELECT max(seq) FROM measurements) WHERE key = ?1",
            [CAUGHT_UP],
        )
        .expect("plant");
        drop(c);
        let db = Sqlite::open(&path).expect("open");
        assert_eq!(db.tree_size().expect("size"), 3, "row 4 was not read");
    }
}
