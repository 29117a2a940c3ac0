//! Envelope verification and ingest of one upload body (`vantage_aggregator::ingest::ingest`)
//! into a real SQLite database, twice per input: the input as it came (almost always refused at
//! the signature, which exercises the envelope parser), and the input sealed with the fixed test
//! key (so the measurement parser, the time check, the scoring of web_connectivity, canary and
//! throttling measurements, and the insert behind the signature get it too).
//!
//! Invariants: never a panic or a database error; exactly one outcome per non-empty line (up to
//! `IngestConfig::max_lines`), in line order; an accepted or duplicate line has an id and no reason, a rejected one a reason;
//! and a line accepted once is never accepted again (uploads are idempotent on the id:
//! README.md, "Upload protocol").

#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use vantage_aggregator::db::Sqlite;
use vantage_aggregator::ingest::{IngestConfig, LineOutcome, Origin, ingest};
use vantage_probe::verdict::fingerprints::Fingerprints;

/// Executions on one database file before a fresh one replaces it, so a long run neither fills
/// the disk nor slows down as the tables grow.
const ROTATE_AFTER: u32 = 20_000;

struct Db {
    sqlite: Sqlite,
    runs: u32,
    generation: u32,
}

fn open(generation: u32) -> Sqlite {
    let path = vantage_fuzz::scratch_dir().join(format!("ingest-{generation}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Sqlite::open(&path).expect("open the fuzz database")
}

fn db() -> &'static Mutex<Db> {
    static DB: OnceLock<Mutex<Db>> = OnceLock::new();
    DB.get_or_init(|| {
        Mutex::new(Db {
            sqlite: open(0),
            runs: 0,
            generation: 0,
        })
    })
}

fn fingerprints() -> &'static Fingerprints {
    static FP: OnceLock<Fingerprints> = OnceLock::new();
    FP.get_or_init(Fingerprints::builtin)
}

fn config() -> &'static IngestConfig {
    static CONFIG: OnceLock<IngestConfig> = OnceLock::new();
    CONFIG.get_or_init(IngestConfig::default)
}

fn run(db: &Db, body: &str) -> Vec<LineOutcome> {
    let outcomes = ingest(&db.sqlite, body, config(), fingerprints(), &Origin::UNKNOWN)
        .unwrap_or_else(|e| panic!("ingest failed with a database error: {e}"));
    let expected: Vec<usize> = body
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1)
        .take(config().max_lines)
        .collect();
    let got: Vec<usize> = outcomes.iter().map(|o| o.line).collect();
    assert_eq!(got, expected, "one outcome per non-empty line, in order");
    for o in &outcomes {
        match o.status {
            "accepted" | "duplicate" => {
                assert!(o.id.is_some(), "stored line {} without an id", o.line);
                assert!(o.reason.is_none(), "stored line {} with a reason", o.line);
            }
            "rejected" => assert!(
                o.reason.is_some(),
                "line {} rejected without reason",
                o.line
            ),
            other => panic!("line {}: unknown status {other:?}", o.line),
        }
    }
    outcomes
}

fuzz_target!(|data: &[u8]| {
    let text = vantage_fuzz::text(data);
    let signed = vantage_fuzz::seal(&text);
    let mut guard = db()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.runs += 1;
    if guard.runs >= ROTATE_AFTER {
        guard.generation += 1;
        guard.runs = 0;
        let old = guard.generation - 1;
        guard.sqlite = open(guard.generation);
        let path = vantage_fuzz::scratch_dir().join(format!("ingest-{old}.db"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    run(&guard, &text);
    if let Some(line) = signed {
        let first = run(&guard, &line);
        let again = run(&guard, &line);
        assert_eq!(first.len(), 1, "a sealed measurement is one line");
        assert_ne!(
            again[0].status, "accepted",
            "the same signed line was stored twice: first {:?}",
            first[0]
        );
        if first[0].status != "rejected" {
            assert_eq!(again[0].id, first[0].id, "one measurement, one id");
        }
    }
});
