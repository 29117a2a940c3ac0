//! The ClickHouse store's transparency log (`docs/transparency.md`, "Where the log is kept").
//!
//! ClickHouse has no transactions and several `serve` nodes may store measurements at once, so
//! a leaf cannot be appended by the statement that stores its measurement, as SQLite does. The
//! log has instead one sequencer at a time, as Trillian and Sunlight have:
//!
//! - every node, as it stores a signed measurement (or records a heartbeat, or enrols a key),
//!   also inserts it into `log_queue`, stamped in microseconds with the server's clock as the
//!   node reckons it ([`Clock`]: its own clock corrected by the server's `now()`, read at
//!   least every [`CLOCK_REFRESH`]), so that nodes whose clocks disagree still stamp in one
//!   order;
//! - the node holding the log's lease (`lease` table, name [`LOG_LEASE`], the detectors'
//!   mechanism, [`ClickHouse::try_lease_named`]) reads, every [`crate::log::PUBLISH_EVERY`],
//!   the queued entries from a little before the last one it integrated
//!   ([`OVERLAP_MICROS`]: a late insert is not lost), leaves out those already logged (looked
//!   up by id in `log_ids`: one appended twice never is), orders them by (time, id) and appends
//!   them, a bounded batch per INSERT, then `crate::log::publish` signs the checkpoint.
//!
//! The tables:
//! - `log_leaves`: one row per leaf, as SQLite's `log_leaves` (index, the 64-byte leaf, the
//!   stored hashes appending it completed in `tlog_tiles::stored_hash_index` order, both hex),
//!   with what SQLite keeps in `log_entries` (the envelope id, its kind and, for a heartbeat,
//!   its envelope) and the queue time of the entry (the next batch starts near it). One
//!   INSERT of one block is one part, visible whole or not at all;
//! - `log_ids`: filled from `log_leaves` by a materialized view, ordered by id: a proof asked
//!   by id, and the check that an entry is not logged already;
//! - `log_checkpoints` and `log_cosignatures`, as SQLite's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tlog_tiles::{Hash, HashReader, stored_hash_index, stored_hashes_for_record_hash};

use super::client::{hex, quote};
use super::{ClickHouse, now_micros};
use crate::store::log::{
    Entry, EntryKind, LEAF_BYTES, LogStore, Stored, StoredCheckpoint, leaf, row_leaf,
};
use crate::store::{DbError, Redeemed, Row, Storage, StoredHeartbeat, now};

/// Migration 4: the log's tables.
pub(super) const MIGRATION: &[&str] = &[
    // What is to be logged, in the order nodes stored it (their clocks, microseconds).
    "CREATE TABLE IF NOT EXISTS log_queue (
        at UInt64,
        id String,
        key String,
        kind String,
        body String
    ) ENGINE = MergeTree
    ORDER BY (at, id)",
    "CREATE TABLE IF NOT EXISTS log_leaves (
        idx UInt64,
        leaf String,
        hashes String,
        id String,
        kind String,
        body String,
        at UInt64
    ) ENGINE = ReplacingMergeTree
    ORDER BY idx",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS log_ids
        ENGINE = ReplacingMergeTree
        ORDER BY (id, idx)
        AS SELECT id, idx, kind FROM log_leaves",
    "CREATE TABLE IF NOT EXISTS log_checkpoints (
        size UInt64,
        root String,
        note String,
        published_at Int64
    ) ENGINE = ReplacingMergeTree
    ORDER BY size",
    "CREATE TABLE IF NOT EXISTS log_cosignatures (
        size UInt64,
        witness String,
        timestamp UInt64,
        line String
    ) ENGINE = ReplacingMergeTree(timestamp)
    ORDER BY (size, witness)",
];

/// The log's lease in the `lease` table.
pub(super) const LOG_LEASE: &str = "log";

/// How long the log's lease lasts without renewal. Its holder renews it every
/// [`crate::log::PUBLISH_EVERY`] and appends only within half of it after renewing, so a
/// node that takes it over after it lapsed never appends beside a stalled holder.
const LOG_LEASE_SECONDS: i64 = 20;

/// How far before the last integrated entry's time each round reads the queue again: an entry
/// stamped earlier by a node whose clock is behind, or whose INSERT landed late, is still
/// integrated if it is within this. Nodes' clocks must agree within it (NTP), as for the
/// detectors' lease.
pub(super) const OVERLAP_MICROS: u64 = 10_000_000;

/// Every [`SWEEP_EVERY_ROUNDS`] rounds (a minute), the round reads the queue from this far
/// before the last leaf's time instead of [`OVERLAP_MICROS`]: an INSERT that landed later than
/// the overlap (a node stalled between stamping and storing) is still appended, within ten
/// minutes, rather than left out of the log for good.
const SWEEP_MICROS: u64 = 600_000_000;

/// How many rounds between two sweeps ([`SWEEP_MICROS`]).
const SWEEP_EVERY_ROUNDS: u64 = 12;

/// How long a node that has just taken the lease waits before reading who holds it again and
/// appending: a rival that took it at the same moment has recorded its claim by then, so
/// both read the same holder (see [`ClickHouse::try_lease_named`]).
const TAKE_SETTLE: Duration = Duration::from_millis(1500);

/// Entries appended per INSERT (one block: visible whole or not at all).
const BATCH: usize = 10_000;

/// How far back a proof asked for an id not yet in the log looks in the queue to answer "not
/// integrated yet" (503) rather than "not in the log" (404): longer than a takeover of the
/// lease ([`LOG_LEASE_SECONDS`]) plus a round and the overlap, and short because the queue is
/// ordered by time, not id, so this is what such a request (anyone's, for any id) reads.
const QUEUED_LOOKBACK_MICROS: u64 = 60_000_000;

/// How often a node reads the server's clock again to correct its own ([`Clock`]).
const CLOCK_REFRESH: Duration = Duration::from_secs(60);

/// How far ahead of the sequencer's reckoning of the server's clock a queued entry may be
/// stamped and still be integrated this round: one stamped further ahead waits until then,
/// rather than carrying the next round's start (the last leaf's time) past entries other
/// nodes are still stamping.
const AHEAD_MICROS: u64 = 2_000_000;

/// A node's reckoning of the server's clock: the difference between the server's `now()` and
/// its own clock, and when it was measured.
#[derive(Debug, Default)]
pub(super) struct Clock {
    offset: std::sync::Mutex<Option<(Instant, i64)>>,
}

/// What the sequencer remembers between rounds.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    /// Whether this node held the log's lease at its last round.
    held: bool,
    /// Rounds this node has run holding the lease: every [`SWEEP_EVERY_ROUNDS`]th sweeps.
    rounds: u64,
}

/// One queued entry, as `log_queue` has it.
#[derive(Debug, Serialize, Deserialize)]
struct Queued {
    at: u64,
    id: String,
    key: String,
    kind: String,
    body: String,
}

/// One leaf, as `log_leaves` has it.
#[derive(Debug, Serialize)]
struct LeafRow<'a> {
    idx: u64,
    leaf: String,
    hashes: String,
    id: &'a str,
    kind: &'a str,
    body: &'a str,
    at: u64,
}

/// Reads earlier hashes for `tlog_tiles` while appending: those of this batch from memory, the
/// rest from the store in one query per call (and remembered). The store's error is kept aside
/// (the trait's error type cannot carry it).
struct BatchReader<'a> {
    store: &'a ClickHouse,
    known: RefCell<HashMap<u64, Hash>>,
    failed: RefCell<Option<DbError>>,
}

impl HashReader for BatchReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let missing: Vec<u64> = {
            let known = self.known.borrow();
            indexes
                .iter()
                .copied()
                .filter(|i| !known.contains_key(i))
                .collect()
        };
        if !missing.is_empty() {
            match LogStore::hashes(self.store, &missing) {
                Ok(found) => {
                    let mut known = self.known.borrow_mut();
                    for (i, h) in missing.into_iter().zip(found) {
                        known.insert(i, Hash(h));
                    }
                }
                Err(e) => {
                    *self.failed.borrow_mut() = Some(e);
                    return Err(tlog_tiles::Error::IndexesNotInTree);
                }
            }
        }
        let known = self.known.borrow();
        indexes
            .iter()
            .map(|i| {
                known
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// Hex of `bytes` as bytes, or `None` when it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

impl ClickHouse {
    fn log_missing(&self, what: String) -> DbError {
        DbError::LogMissing {
            path: self.at.clone(),
            what,
        }
    }

    /// The server's clock now, in microseconds, as this node reckons it: its own clock plus
    /// the offset measured at most [`CLOCK_REFRESH`] ago. The server's `now()` has whole
    /// seconds, so the reckoning is within about half a second and the time of one query.
    pub(super) fn server_micros(&self) -> Result<u64, DbError> {
        let cached = *self
            .clock
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let offset = match cached {
            Some((measured, offset)) if measured.elapsed() < CLOCK_REFRESH => offset,
            _ => {
                #[derive(Deserialize)]
                struct S {
                    s: u64,
                }
                let before = now_micros();
                let server = self
                    .rows::<S>("reading the server's clock", "SELECT toUInt64(now()) AS s")?
                    .first()
                    .map(|s| s.s)
                    .ok_or_else(|| self.error("reading the server's clock", "no answer".into()))?;
                let after = now_micros();
                let mid = i128::from(before) + (i128::from(after) - i128::from(before)) / 2;
                let offset = i128::from(server) * 1_000_000 + 500_000 - mid;
                let offset = i64::try_from(offset).unwrap_or(0);
                *self
                    .clock
                    .offset
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((Instant::now(), offset));
                offset
            }
        };
        Ok(now_micros().saturating_add_signed(offset))
    }

    /// Queues `entries` (id, key, kind, body) for the sequencer, stamped now; nothing when the
    /// store keeps no log.
    fn queue(&self, entries: &[(&str, &str, EntryKind, &str)]) -> Result<(), DbError> {
        if !self.logging || entries.is_empty() {
            return Ok(());
        }
        let at = self.server_micros()?;
        let rows: Vec<Queued> = entries
            .iter()
            .map(|(id, key, kind, body)| Queued {
                at,
                id: (*id).to_string(),
                key: (*key).to_string(),
                kind: kind.as_str().to_string(),
                body: (*body).to_string(),
            })
            .collect();
        self.insert_rows(
            "queueing entries for the transparency log",
            "log_queue",
            &rows,
        )
    }

    /// Queues the signed rows of `rows` (each once), new or not: a row whose first queueing
    /// failed after it was stored is queued again by the probe's retry, and the sequencer
    /// logs each id once whatever the queue holds.
    pub(super) fn queue_rows(&self, rows: &[Row]) -> Result<(), DbError> {
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<(&str, &str, EntryKind, &str)> = rows
            .iter()
            .filter(|r| row_leaf(r).is_some() && seen.insert(r.id.as_str()))
            .filter_map(|r| {
                let key = r.probe_key.as_deref()?;
                Some((r.id.as_str(), key, EntryKind::Measurement, ""))
            })
            .collect();
        self.queue(&entries)
    }

    /// One round of the sequencer: takes or renews the log's lease and, holding it, appends
    /// what was queued since the last round. Returns whether this node holds the lease (and so
    /// publishes the checkpoint).
    pub(super) fn sequence_round(&self) -> Result<bool, DbError> {
        let mut state = self
            .sequencer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut held = self.try_lease_named(LOG_LEASE, &self.node, now(), LOG_LEASE_SECONDS)?;
        if held && !state.held {
            // Just taken: let a rival that took it at the same moment be seen first.
            std::thread::sleep(TAKE_SETTLE);
            held = self.try_lease_named(LOG_LEASE, &self.node, now(), LOG_LEASE_SECONDS)?;
        }
        state.held = held;
        if !held {
            return Ok(false);
        }
        let renewed = Instant::now();
        let deadline = Duration::from_secs(u64::try_from(LOG_LEASE_SECONDS / 2).unwrap_or(10));
        let lookback = if state.rounds.is_multiple_of(SWEEP_EVERY_ROUNDS) {
            SWEEP_MICROS
        } else {
            OVERLAP_MICROS
        };
        state.rounds += 1;
        while self.integrate(renewed, deadline, lookback)? == BATCH {
            if renewed.elapsed() >= deadline {
                break;
            }
        }
        Ok(true)
    }

    /// Appends up to [`BATCH`] queued entries not yet logged, in (time, id) order, in one
    /// INSERT; returns how many entries it read (fewer than [`BATCH`]: the queue is drained).
    /// Nothing is written once `deadline` has passed since the lease was renewed at `renewed`.
    /// `lookback`: how far before the last leaf's time the queue is read again.
    fn integrate(
        &self,
        renewed: Instant,
        deadline: Duration,
        lookback: u64,
    ) -> Result<usize, DbError> {
        let op = "integrating queued entries into the transparency log";
        let size = LogStore::tree_size(self)?;
        #[derive(Deserialize)]
        struct At {
            at: u64,
        }
        let last_at = if size == 0 {
            0
        } else {
            self.rows::<At>(
                op,
                &format!("SELECT at FROM log_leaves WHERE idx = {} LIMIT 1", size - 1),
            )?
            .first()
            .map_or(0, |a| a.at)
        };
        let from = last_at.saturating_sub(lookback);
        let until = self.server_micros()?.saturating_add(AHEAD_MICROS);
        let queued: Vec<Queued> = self.rows(
            op,
            &format!(
                "SELECT at, id, key, kind, body FROM log_queue
                 WHERE at >= {from} AND at <= {until} AND id NOT IN (
                     SELECT id FROM log_ids WHERE id IN (
                         SELECT id FROM log_queue WHERE at >= {from}))
                 ORDER BY at, id LIMIT {BATCH}"
            ),
        )?;
        let read = queued.len();
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(read);
        for q in &queued {
            if !seen.insert(q.id.as_str()) {
                continue;
            }
            let (Some(l), Some(kind)) = (leaf(&q.id, &q.key), EntryKind::parse(&q.kind)) else {
                continue;
            };
            entries.push((q, l, kind));
        }
        if entries.is_empty() {
            return Ok(read);
        }
        let reader = BatchReader {
            store: self,
            known: RefCell::new(HashMap::new()),
            failed: RefCell::new(None),
        };
        let mut rows = Vec::with_capacity(entries.len());
        for (n, (q, l, kind)) in (size..).zip(&entries) {
            let hashes =
                match stored_hashes_for_record_hash(n, tlog_tiles::record_hash(l), &reader) {
                    Ok(h) => h,
                    Err(e) => {
                        return Err(reader.failed.into_inner().unwrap_or_else(|| {
                            self.error(op, format!("appending leaf {n}: {e}"))
                        }));
                    }
                };
            let mut stored = String::with_capacity(hashes.len() * 64);
            {
                let mut known = reader.known.borrow_mut();
                for (i, h) in (stored_hash_index(0, n)..).zip(hashes) {
                    stored.push_str(&hex(&h.0));
                    known.insert(i, h);
                }
            }
            rows.push(LeafRow {
                idx: n,
                leaf: hex(l),
                hashes: stored,
                id: &q.id,
                kind: kind.as_str(),
                body: if *kind == EntryKind::Heartbeat {
                    &q.body
                } else {
                    ""
                },
                at: q.at,
            });
        }
        // Only the lease's holder appends, and only while its lease surely holds; and never
        // over leaves another node appended meanwhile.
        if renewed.elapsed() >= deadline {
            return Ok(0);
        }
        if LogStore::tree_size(self)? != size {
            return Err(self.error(
                op,
                format!("the log grew past {size} leaves while this node held its lease"),
            ));
        }
        self.insert_rows(op, "log_leaves", &rows)?;
        Ok(read)
    }

    /// Whether `id` was queued for the log in the last [`QUEUED_LOOKBACK_MICROS`].
    fn queued_recently(&self, id: &str) -> Result<bool, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
        }
        let from = self.server_micros()?.saturating_sub(QUEUED_LOOKBACK_MICROS);
        Ok(self
            .rows::<N>(
                "reading the transparency log's queue",
                &format!(
                    "SELECT count() AS n FROM log_queue WHERE at >= {from} AND id = {}",
                    quote(id)
                ),
            )?
            .first()
            .is_some_and(|n| n.n > 0))
    }

    /// The leaf index and kind of envelope `id`, if logged.
    fn logged(&self, id: &str) -> Result<Option<(u64, String)>, DbError> {
        #[derive(Deserialize)]
        struct I {
            idx: u64,
            kind: String,
        }
        Ok(self
            .rows::<I>(
                "reading a leaf by id",
                &format!(
                    "SELECT idx, kind FROM log_ids WHERE id = {} ORDER BY idx LIMIT 1",
                    quote(id)
                ),
            )?
            .into_iter()
            .next()
            .map(|i| (i.idx, i.kind)))
    }

    fn checkpoint_where(&self, filter: &str) -> Result<Option<StoredCheckpoint>, DbError> {
        #[derive(Deserialize)]
        struct C {
            size: u64,
            root: String,
            note: String,
            published_at: i64,
        }
        let Some(c) = self
            .rows::<C>(
                "reading a checkpoint",
                &format!(
                    "SELECT size, root, note, published_at FROM log_checkpoints {filter}
                     ORDER BY size DESC, published_at LIMIT 1"
                ),
            )?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let root = from_hex(&c.root)
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| self.log_missing(format!("32-byte root in checkpoint {}", c.size)))?;
        Ok(Some(StoredCheckpoint {
            size: c.size,
            root,
            note: c.note,
            published_at: c.published_at,
        }))
    }
}

impl LogStore for ClickHouse {
    /// Stores rows as [`Storage::insert`] does; each stored signed row is queued for the
    /// sequencer ([`ClickHouse::queue_rows`]) and gets its leaf at its next round, so the
    /// answer gives no leaf index.
    fn insert_logged(&self, rows: &[Row]) -> Result<Vec<Stored>, DbError> {
        Ok(self
            .insert(rows)?
            .into_iter()
            .map(|new| Stored {
                new,
                leaf_index: None,
            })
            .collect())
    }

    /// Records the heartbeat and, when it is new, queues it with its envelope.
    fn heartbeat_logged(
        &self,
        beat: &StoredHeartbeat,
        id: &str,
        envelope: &str,
    ) -> Result<Stored, DbError> {
        let new = self.heartbeat(&beat.key, &beat.cc, beat.asn, &beat.sent_at, beat.verified)?;
        if new && leaf(id, &beat.key).is_some() {
            self.queue(&[(id, &beat.key, EntryKind::Heartbeat, envelope)])?;
        }
        Ok(Stored {
            new,
            leaf_index: None,
        })
    }

    /// Spends the token and, when that enrols the key now, queues the enrolment (without its
    /// envelope, which carries the token).
    fn redeem_logged(
        &self,
        token_sha256: &str,
        key: &str,
        id: &str,
    ) -> Result<(Redeemed, Option<u64>), DbError> {
        let outcome = self.redeem_token(token_sha256, key)?;
        if outcome == Redeemed::Enrolled && leaf(id, key).is_some() {
            self.queue(&[(id, key, EntryKind::Enrolment, "")])?;
        }
        Ok((outcome, None))
    }

    fn entry(&self, id: &str) -> Result<Option<Entry>, DbError> {
        let Some((leaf_index, kind)) = self.logged(id)? else {
            return Ok(None);
        };
        let kind = EntryKind::parse(&kind)
            .ok_or_else(|| self.log_missing(format!("known kind of entry {id} ({kind:?})")))?;
        let envelope = match kind {
            EntryKind::Measurement => self.envelope(id)?,
            EntryKind::Enrolment => None,
            EntryKind::Heartbeat => {
                #[derive(Deserialize)]
                struct B {
                    body: String,
                }
                self.rows::<B>(
                    "reading a heartbeat's envelope",
                    &format!("SELECT body FROM log_leaves WHERE idx = {leaf_index} LIMIT 1"),
                )?
                .into_iter()
                .next()
                .map(|b| b.body)
            }
        };
        Ok(Some(Entry {
            leaf_index,
            kind,
            envelope,
        }))
    }

    fn tree_size(&self) -> Result<u64, DbError> {
        #[derive(Deserialize)]
        struct N {
            n: u64,
            top: u64,
        }
        Ok(self
            .rows::<N>(
                "reading the log's size",
                "SELECT count() AS n, max(idx) AS top FROM log_leaves",
            )?
            .first()
            .map_or(0, |r| if r.n == 0 { 0 } else { r.top.saturating_add(1) }))
    }

    /// One query for all of `indexes`: each is in the row of the leaf that completed it.
    fn hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, DbError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let places: Vec<(u64, usize)> = indexes
            .iter()
            .map(|&i| {
                let (level, k) = tlog_tiles::split_stored_hash_index(i);
                let leaf = u64::try_from(((u128::from(k) + 1) << level) - 1).unwrap_or(u64::MAX);
                (leaf, usize::from(level))
            })
            .collect();
        let mut wanted: Vec<u64> = places.iter().map(|(l, _)| *l).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let list = wanted
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        #[derive(Deserialize)]
        struct H {
            idx: u64,
            hashes: String,
        }
        let rows: HashMap<u64, String> = self
            .rows::<H>(
                "reading the log's hashes",
                &format!("SELECT idx, hashes FROM log_leaves WHERE idx IN ({list})"),
            )?
            .into_iter()
            .map(|h| (h.idx, h.hashes))
            .collect();
        places
            .iter()
            .zip(indexes)
            .map(|((leaf, place), i)| {
                rows.get(leaf)
                    .and_then(|h| h.get(place * 64..place * 64 + 64))
                    .and_then(from_hex)
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| self.log_missing(format!("stored hash {i}")))
            })
            .collect()
    }

    fn leaves(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, DbError> {
        #[derive(Deserialize)]
        struct L {
            idx: u64,
            leaf: String,
        }
        let rows: Vec<L> = self.rows(
            "reading the log's leaves",
            &format!(
                "SELECT idx, any(leaf) AS leaf FROM log_leaves
                 WHERE idx >= {from} AND idx < {} GROUP BY idx ORDER BY idx",
                from.saturating_add(count)
            ),
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (want, row) in (from..).zip(rows) {
            let bytes = from_hex(&row.leaf).filter(|b| b.len() == LEAF_BYTES);
            match bytes {
                Some(b) if row.idx == want => out.push(b),
                _ => return Err(self.log_missing(format!("leaf {want}"))),
            }
        }
        let got = u64::try_from(out.len()).unwrap_or(0);
        if got == count {
            Ok(out)
        } else {
            Err(self.log_missing(format!("leaf {}", from.saturating_add(got))))
        }
    }

    fn leaf_of(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, DbError> {
        let Some((idx, _)) = self.logged(id)? else {
            return Ok(None);
        };
        let leaf = self
            .leaves(idx, 1)?
            .into_iter()
            .next()
            .ok_or_else(|| self.log_missing(format!("leaf {idx}")))?;
        Ok(Some((idx, leaf)))
    }

    fn queued(&self, id: &str) -> Result<bool, DbError> {
        self.queued_recently(id)
    }

    fn sequence(&self) -> Result<bool, DbError> {
        self.sequence_round()
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, DbError> {
        self.checkpoint_where("")
    }

    fn add_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), DbError> {
        #[derive(Serialize)]
        struct C<'a> {
            size: u64,
            root: String,
            note: &'a str,
            published_at: i64,
        }
        self.insert_rows(
            "recording a checkpoint",
            "log_checkpoints",
            &[C {
                size: c.size,
                root: hex(&c.root),
                note: &c.note,
                published_at: c.published_at,
            }],
        )
    }

    fn checkpoint_of(&self, size: u64) -> Result<Option<StoredCheckpoint>, DbError> {
        self.checkpoint_where(&format!("WHERE size = {size}"))
    }

    fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> Result<bool, DbError> {
        #[derive(Deserialize)]
        struct T {
            t: u64,
        }
        let newest = self
            .rows::<T>(
                "reading a cosignature",
                &format!(
                    "SELECT max(timestamp) AS t FROM log_cosignatures
                     WHERE size = {size} AND witness = {} GROUP BY witness",
                    quote(witness)
                ),
            )?
            .first()
            .map(|t| t.t);
        if newest.is_some_and(|t| t >= timestamp) {
            return Ok(false);
        }
        #[derive(Serialize)]
        struct C<'a> {
            size: u64,
            witness: &'a str,
            timestamp: u64,
            line: &'a str,
        }
        self.insert_rows(
            "recording a cosignature",
            "log_cosignatures",
            &[C {
                size,
                witness,
                timestamp,
                line,
            }],
        )?;
        Ok(true)
    }

    fn cosignatures(&self, size: u64) -> Result<Vec<String>, DbError> {
        #[derive(Deserialize)]
        struct L {
            line: String,
        }
        Ok(self
            .rows::<L>(
                "reading cosignatures",
                &format!(
                    "SELECT witness, argMax(line, timestamp) AS line FROM log_cosignatures
                     WHERE size = {size} GROUP BY witness ORDER BY witness"
                ),
            )?
            .into_iter()
            .map(|l| l.line)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::log::{LogKey, Proven};
    use base64::Engine as _;

    /// A signed row: a 64-hex-digit id and a 32-byte base64 key, as ingest stores.
    fn signed(n: u16) -> Row {
        let mut r = row(&format!("{n:04x}").repeat(16), "IT", "2026-01-01 00:00:00");
        r.probe_key = Some(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
        r
    }

    fn key() -> LogKey {
        LogKey::from_seed(&[9u8; 32]).expect("a key")
    }

    #[test]
    fn the_holder_integrates_each_entry_once_and_the_other_node_appends_nothing() {
        let server = server();
        let a = ClickHouse::open(&server.url("v")).expect("node a");
        let b = ClickHouse::open(&server.url("v")).expect("node b");
        let rows: Vec<Row> = (0..300).map(signed).collect();
        let stored = a.insert_logged(&rows[..200]).expect("insert through a");
        assert!(stored.iter().all(|s| s.new && s.leaf_index.is_none()));
        b.insert_logged(&rows[150..])
            .expect("insert through b, 50 duplicates");
        // Not integrated yet: a proof is "not yet", not "not in the log".
        match crate::log::prove(&a, &rows[0].id).expect("prove") {
            Proven::Pending {
                leaf_index: None,
                checkpoint_size: None,
            } => {}
            other => panic!("{other:?}"),
        }
        let beat = StoredHeartbeat {
            key: rows[0].probe_key.clone().expect("key"),
            cc: "IT".into(),
            asn: 3269,
            sent_at: "2026-01-01 00:05:00".into(),
            verified: true,
            received_at: None,
        };
        let beat_id = "ab".repeat(32);
        assert!(
            b.heartbeat_logged(&beat, &beat_id, "{\"hb\":1}")
                .expect("hb")
                .new
        );
        assert!(
            !b.heartbeat_logged(&beat, &beat_id, "{\"hb\":1}")
                .expect("hb")
                .new
        );
        // An enrolment is queued when it enrols its key, not when the key retries.
        let enrolment_id = "ef".repeat(32);
        let enrolled_key = base64::engine::general_purpose::STANDARD.encode([8u8; 32]);
        a.add_token("t1").expect("token");
        assert_eq!(
            a.redeem_logged("t1", &enrolled_key, &enrolment_id)
                .expect("redeem"),
            (Redeemed::Enrolled, None)
        );
        assert_eq!(
            b.redeem_logged("t1", &enrolled_key, &enrolment_id)
                .expect("retry"),
            (Redeemed::AlreadyEnrolled, None)
        );
        assert!(a.sequence().expect("a takes the lease"));
        assert!(!b.sequence().expect("b does not"));
        assert_eq!(a.tree_size().expect("size"), 302);
        assert_eq!(b.tree_size().expect("size"), 302, "b reads the same log");
        let enrolment = b.entry(&enrolment_id).expect("entry").expect("logged");
        assert_eq!(
            (enrolment.kind, enrolment.envelope),
            (EntryKind::Enrolment, None),
            "an enrolment's envelope, which carries its token, is not kept"
        );
        // Sent again and queued again: nothing is appended twice.
        a.insert_logged(&rows).expect("again");
        assert!(a.sequence().expect("a renews"));
        assert_eq!(a.tree_size().expect("size"), 302);
        let published = crate::log::publish(&b, &key())
            .expect("publish")
            .expect("one");
        assert_eq!(published.size, 302);
        assert_eq!(
            crate::log::audit(&a).expect("audit").map(|c| c.size),
            Some(302),
            "the stored hashes are those of the leaves"
        );
        let mut indexes: Vec<u64> = rows
            .iter()
            .map(|r| match crate::log::prove(&b, &r.id).expect("prove") {
                Proven::Included(p) => p.leaf_index,
                other => panic!("{}: {other:?}", r.id),
            })
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), 300, "each measurement has its own leaf");
        let entry = a.entry(&beat_id).expect("entry").expect("logged");
        assert_eq!(
            (entry.kind, entry.envelope.as_deref()),
            (EntryKind::Heartbeat, Some("{\"hb\":1}"))
        );
        let m = a.entry(&rows[3].id).expect("entry").expect("logged");
        assert_eq!(m.envelope, Some(rows[3].envelope.clone()));
        assert!(matches!(
            crate::log::prove(&a, &"cd".repeat(32)).expect("prove"),
            Proven::NotLogged
        ));
    }

    #[test]
    fn an_entry_queued_late_within_the_overlap_is_integrated_and_one_before_it_waits_for_the_sweep()
    {
        let server = server();
        let a = ClickHouse::open(&server.url("v")).expect("open");
        a.insert_logged(&[signed(1)]).expect("insert");
        assert!(a.sequence().expect("sequence"));
        assert_eq!(a.tree_size().expect("size"), 1);
        let last: u64 = server
            .query("SELECT at FROM v.log_leaves WHERE idx = 0")
            .expect("at")
            .trim()
            .parse()
            .expect("a number");
        let key = signed(2).probe_key.expect("key");
        for (n, at) in [
            (2u16, last - OVERLAP_MICROS / 2),
            (3, last - OVERLAP_MICROS * 2),
        ] {
            server
                .query(&format!(
                    "INSERT INTO v.log_queue VALUES ({at}, '{}', '{key}', 'measurement', '')",
                    signed(n).id
                ))
                .expect("a late entry");
        }
        assert!(a.sequence().expect("sequence"));
        assert_eq!(a.tree_size().expect("size"), 2);
        assert_eq!(
            a.leaf_of(&signed(2).id).expect("leaf").map(|l| l.0),
            Some(1)
        );
        assert_eq!(a.leaf_of(&signed(3).id).expect("leaf"), None);
        // The sweep, once a minute, reads further back: the entry that landed too late for
        // the overlap is appended then, after the ones already logged.
        for _ in 2..SWEEP_EVERY_ROUNDS {
            assert!(a.sequence().expect("sequence"));
        }
        assert_eq!(a.tree_size().expect("size"), 2, "not before the sweep");
        assert!(a.sequence().expect("the sweep"));
        assert_eq!(
            a.leaf_of(&signed(3).id).expect("leaf").map(|l| l.0),
            Some(2)
        );
    }

    #[test]
    fn a_node_appends_only_while_it_holds_the_log_s_lease() {
        let server = server();
        let a = ClickHouse::open(&server.url("v")).expect("open");
        let t = now();
        // A rival that last renewed 25 s ago (the lease lasts 20): a takes it over.
        server
            .query(&format!(
                "INSERT INTO v.lease VALUES ('{LOG_LEASE}', 'rival', {})",
                t - 25
            ))
            .expect("rival");
        a.insert_logged(&[signed(1)]).expect("insert");
        assert!(a.sequence().expect("takes over"));
        assert_eq!(a.tree_size().expect("size"), 1);
        // The rival renews after a: a has lost the lease and appends nothing.
        server
            .query(&format!(
                "INSERT INTO v.lease VALUES ('{LOG_LEASE}', 'rival', {})",
                t + 5
            ))
            .expect("rival");
        a.insert_logged(&[signed(2)]).expect("insert");
        assert!(!a.sequence().expect("lost"));
        assert_eq!(a.tree_size().expect("size"), 1);
        assert!(matches!(
            crate::log::prove(&a, &signed(2).id).expect("prove"),
            Proven::Pending {
                leaf_index: None,
                ..
            }
        ));
        // On another database: an entry stamped far ahead of the server's clock waits for its
        // time, rather than carry the next round's start past the entries stamped meanwhile.
        let ahead = a.server_micros().expect("clock") + 60_000_000;
        let b = ClickHouse::open(&server.url("w")).expect("another database");
        let key = signed(3).probe_key.expect("key");
        server
            .query(&format!(
                "INSERT INTO w.log_queue VALUES ({ahead}, '{}', '{key}', 'measurement', '')",
                signed(3).id
            ))
            .expect("an entry from the future");
        b.insert_logged(&[signed(4)]).expect("insert");
        assert!(b.sequence().expect("sequence"));
        assert_eq!(b.tree_size().expect("size"), 1);
        assert_eq!(b.leaf_of(&signed(3).id).expect("leaf"), None);
    }

    #[test]
    fn without_the_log_nothing_is_queued() {
        let server = server();
        let a = ClickHouse::open_without_log(&server.url("v")).expect("open");
        assert_eq!(
            Storage::log(&a).err(),
            Some(crate::store::log::NoLog::Disabled)
        );
        a.insert(&[signed(1)]).expect("insert");
        assert_eq!(
            server
                .query("SELECT count() FROM v.log_queue")
                .expect("count"),
            "0\n"
        );
    }
}
