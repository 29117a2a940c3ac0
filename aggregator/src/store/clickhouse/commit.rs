//! Group commit: the uploads that arrive while a node is writing are written together, in one
//! duplicate check and one INSERT per table.
//!
//! Every INSERT makes a part on the server, which it must later merge, and ClickHouse's own
//! advice is fewer, larger inserts (<https://clickhouse.com/docs/en/optimize/bulk-inserts>).
//! Fifty probes uploading 100-line batches at once made 35 inserts a second into each table,
//! and the merges took most of the machine (BENCHMARKS.md, "SQLite and ClickHouse side by
//! side"). Here the first upload to arrive writes at once, alone; the uploads that arrive
//! meanwhile wait, and the next of them writes all of them together. No timer: an idle node
//! adds no latency, and the busier it is, the larger its inserts. Each upload is answered only
//! once its rows are written (or with the error that stopped them), as before.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::Deserialize;

use super::super::{DbError, Row, now};
use super::ClickHouse;
use super::client::quote;
use super::rows::{EnvelopeRow, StoredRow};

/// At most this many rows in one group, so that one INSERT stays a bounded size in memory on
/// both sides (about 8 KB a row: 80 MB). Uploads beyond it wait for the next group.
const GROUP_ROWS: usize = 10_000;

/// The uploads waiting to be written, and the answers of those written.
#[derive(Debug, Default)]
pub(super) struct Commits {
    state: Mutex<State>,
    /// Wakes the waiting uploads when a group is written.
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    next_ticket: u64,
    /// In arrival order.
    waiting: VecDeque<(u64, Vec<Row>)>,
    /// Whether an upload is writing a group now.
    writing: bool,
    /// The answer of each written upload until it takes it: which rows were new, or the error.
    answers: HashMap<u64, Result<Vec<bool>, String>>,
}

impl Commits {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A writer that panicked left the state consistent (see `Writing`): carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Clears `writing` and answers the group with an error if the writer unwinds, so that the
/// uploads waiting on it never wait forever.
struct Writing<'a> {
    commits: &'a Commits,
    tickets: Vec<u64>,
    finished: bool,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut state = self.commits.lock();
        if !self.finished {
            for t in &self.tickets {
                state
                    .answers
                    .insert(*t, Err("the writer of this group stopped".into()));
            }
        }
        state.writing = false;
        drop(state);
        self.commits.done.notify_all();
    }
}

impl ClickHouse {
    /// Stores `rows` with the uploads that arrive beside it (see the module's docs); for each
    /// row, whether it was new (false: stored before, or earlier in this or another upload of
    /// the same group).
    pub(super) fn insert_grouped(&self, rows: &[Row]) -> Result<Vec<bool>, DbError> {
        let commits = &self.commits;
        let mut state = commits.lock();
        let ticket = state.next_ticket;
        state.next_ticket = state.next_ticket.wrapping_add(1);
        state.waiting.push_back((ticket, rows.to_vec()));
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer.map_err(|message| self.error("storing measurements", message));
            }
            if state.writing {
                state = commits.done.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody is writing: this upload writes every waiting one it can (its own among
            // them, as it is waiting and not answered), oldest first.
            let mut group = Vec::new();
            let mut size = 0;
            while let Some((_, rows)) = state.waiting.front() {
                if !group.is_empty() && size + rows.len() > GROUP_ROWS {
                    break;
                }
                size += rows.len();
                group.extend(state.waiting.pop_front());
            }
            state.writing = true;
            drop(state);
            let mut writing = Writing {
                commits,
                tickets: group.iter().map(|(t, _)| *t).collect(),
                finished: false,
            };
            // The uploads' rows, moved (not copied again) into one batch.
            let counts: Vec<(u64, usize)> = group.iter().map(|(t, r)| (*t, r.len())).collect();
            let all: Vec<Row> = group.into_iter().flat_map(|(_, r)| r).collect();
            let result = self.insert_now(&all, &BTreeMap::new());
            drop(all);
            state = commits.lock();
            let mut at = 0;
            for (t, n) in counts {
                let answer = match &result {
                    Ok(new) => new.get(at..at + n).map(<[bool]>::to_vec).ok_or_else(|| {
                        "the store answered for fewer rows than it was given".into()
                    }),
                    Err(e) => Err(message_of(e)),
                };
                at += n;
                state.answers.insert(t, answer);
            }
            writing.finished = true;
            drop(state);
            // Clears `writing` and wakes the others; this upload's own answer is now there.
            drop(writing);
            state = commits.lock();
        }
    }
}

/// What an error says, for each upload of the group (the store's address and operation are
/// added back by the one that takes it).
fn message_of(e: &DbError) -> String {
    match e {
        DbError::ClickHouse { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl ClickHouse {
    /// Stores rows; returns for each whether it was new (false: a duplicate, stored before or
    /// earlier in `rows`). Which ids exist is one query per batch on `envelopes` (ordered by
    /// id, within the batch's time range); the measurements are written before their envelopes, so a row whose envelope is
    /// missing (a node that died between the two) counts as new and is written again, and the
    /// copies merge. Two nodes inserting one new id at once both store it; every read shows
    /// it once. Each new row is received at `received[&row.id]`, or now when absent.
    pub(super) fn insert_now(
        &self,
        rows: &[Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<Vec<bool>, DbError> {
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
        self.store_new_received(&new_rows, received)?;
        // Every signed row, new or not, is queued for the transparency log after it is stored
        // (`log`): a row stored by an attempt whose queueing failed is queued by its retry.
        self.queue_rows(rows)?;
        Ok(added)
    }

    /// [`ClickHouse::store_new_received`], each row received now: how the tests write what a
    /// racing node wrote.
    #[cfg(test)]
    pub(super) fn store_new(&self, rows: &[&Row]) -> Result<(), DbError> {
        self.store_new_received(rows, &BTreeMap::new())
    }

    /// Writes rows found new: the measurements first, then their envelopes (see
    /// [`ClickHouse::insert_now`]), each received at `received[&row.id]` (now when absent: a
    /// copy, `migrate`, keeps when each reached the store it came from).
    fn store_new_received(
        &self,
        rows: &[&Row],
        received: &BTreeMap<String, i64>,
    ) -> Result<(), DbError> {
        let now = now();
        let stored: Vec<StoredRow> = rows
            .iter()
            .map(|r| StoredRow::new(r, received.get(&r.id).copied().unwrap_or(now)))
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;

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
}
