//! Two processes on one SQLite file: `vantage-aggregator ingest` (or `timeline`, `query`) run
//! beside a running `serve` (docs/carry.md, "`vantage-aggregator ingest`"). Each opens its own
//! writer connection; both append to the same transparency log, whose next leaf is read in
//! the transaction that appends it. Two `Sqlite` handles stand for the two processes here:
//! SQLite's locks are the file's, the same between two connections of one process as between
//! two processes.

use std::sync::{Arc, Barrier};

use base64::Engine as _;
use vantage_aggregator::store::log::LogStore;
use vantage_aggregator::store::{Route, Row, Sqlite, Storage};

fn row(writer: u8, n: u32) -> Row {
    let id = format!("{writer:02x}{n:06x}").repeat(8);
    Row {
        id,
        source: "vantage".into(),
        probe_key: Some(base64::engine::general_purpose::STANDARD.encode([writer; 32])),
        probe_cc: "IR".into(),
        probe_asn: 64500,
        test_name: "canary".into(),
        input: None,
        domain: None,
        measured_at: "2026-12-01 04:00:00".into(),
        blocking: None,
        accessible: Some(false),
        confirmed: false,
        rule_set: None,
        verdict: None,
        envelope: format!("{{\"writer\":{writer},\"n\":{n}}}"),
        network_verified: false,
        route: if writer == 1 {
            Route::Upload
        } else {
            Route::File
        },
    }
}

#[test]
fn two_writers_on_one_file_store_everything_and_the_log_stays_one_tree() {
    let dir = std::env::temp_dir().join(format!("vantage-shared-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("aggregator.db");
    // `serve`'s handle, open first, and `ingest`'s, opened beside it.
    let serve = Arc::new(Sqlite::open(&path).expect("serve opens"));
    let ingest = Arc::new(Sqlite::open(&path).expect("ingest opens beside it"));
    const BATCHES: u32 = 60;
    const PER_BATCH: u32 = 20;
    let start = Arc::new(Barrier::new(2));
    let writers: Vec<_> = [(1u8, serve.clone()), (2u8, ingest.clone())]
        .into_iter()
        .map(|(w, db)| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut failures = Vec::new();
                for b in 0..BATCHES {
                    let rows: Vec<Row> =
                        (0..PER_BATCH).map(|i| row(w, b * PER_BATCH + i)).collect();
                    // Each batch reads the log's size, then appends: the interleaving that a
                    // deferred transaction cannot upgrade (SQLITE_BUSY without waiting).
                    if let Err(e) = db.insert_logged(&rows) {
                        failures.push(format!("writer {w}, batch {b}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = writers
        .into_iter()
        .flat_map(|h| h.join().expect("writer thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} batches failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let want = u64::from(2 * BATCHES * PER_BATCH);
    assert_eq!(serve.measurement_count().expect("count"), want);
    assert_eq!(serve.tree_size().expect("size"), want);
    // Every leaf once: no index given twice, none skipped.
    let leaves = serve.leaves(0, want).expect("every leaf");
    let mut ids: Vec<&[u8]> = leaves.iter().map(|l| &l[..32]).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, want);
    // The stored hashes give one tree: a checkpoint signs it, and the next check (what `serve`
    // does before each checkpoint) finds nothing altered.
    let key = vantage_aggregator::log::LogKey::from_seed(&[7; 32]).expect("key");
    let signed = vantage_aggregator::log::publish(serve.as_ref(), &key)
        .expect("publish")
        .expect("a checkpoint");
    assert_eq!(signed.size, want);
    vantage_aggregator::log::check(ingest.as_ref()).expect("the other writer sees the same tree");
    drop((serve, ingest));
    let _ = std::fs::remove_dir_all(&dir);
}
