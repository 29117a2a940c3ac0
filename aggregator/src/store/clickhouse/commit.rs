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

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::super::{DbError, Row};
use super::ClickHouse;

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
    waiting: Vec<(u64, Vec<Row>)>,
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
        state.waiting.push((ticket, rows.to_vec()));
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
            while let Some((_, rows)) = state.waiting.first() {
                if !group.is_empty() && size + rows.len() > GROUP_ROWS {
                    break;
                }
                size += rows.len();
                group.push(state.waiting.remove(0));
            }
            state.writing = true;
            drop(state);
            let mut writing = Writing {
                commits,
                tickets: group.iter().map(|(t, _)| *t).collect(),
                finished: false,
            };
            let all: Vec<Row> = group.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
            let result = self.insert_now(&all);
            state = commits.lock();
            let mut at = 0;
            for (t, rows) in &group {
                let answer = match &result {
                    Ok(new) => Ok(new[at..at + rows.len()].to_vec()),
                    Err(e) => Err(message_of(e)),
                };
                at += rows.len();
                state.answers.insert(*t, answer);
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
