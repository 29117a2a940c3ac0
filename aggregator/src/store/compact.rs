//! Compaction: envelopes compressed at rest, after ingest has answered.
//!
//! A web_connectivity envelope is 3 to 8 KB of JSON and is kept byte for byte so anyone can
//! check its signature; stored as received, 10 million of them take about 78 GB. zstd brings a
//! measurement to about a third of that. Compressing inside ingest would put the cost in front of
//! every probe's upload, so ingest stores text and this pass compresses rows a minute later, in
//! small transactions, oldest first. Readers take either form ([`unpack`] gives back the exact
//! bytes), so a row is never unreadable while it waits.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{DbError, Storage, now};

/// zstd level: 3 is zstd's default, about 300 MB/s per core on this hardware, and within a few
/// percent of level 9's ratio on OONI JSON.
const LEVEL: i32 = 3;

/// Rows a transaction compacts; small enough that ingest never waits long for the database.
pub const BATCH: usize = 500;

/// Envelopes bigger than this once decompressed are refused as corrupt (ingest caps a line at
/// 1 MiB).
const MAX_UNPACKED: usize = 8 << 20;

/// Compresses an envelope for storage.
pub fn pack(text: &str) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(text.as_bytes(), LEVEL)
}

/// The exact envelope text back from [`pack`]'s output.
pub fn unpack(packed: &[u8]) -> std::io::Result<String> {
    let bytes = zstd::bulk::decompress(packed, MAX_UNPACKED)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Compacts every row received more than `age` ago; returns how many rows it went through.
pub fn compact_all(storage: &dyn Storage, age: Duration) -> Result<usize, DbError> {
    let before = now() - i64::try_from(age.as_secs()).unwrap_or(0);
    let mut total = 0;
    loop {
        let n = storage.compact(before, BATCH)?;
        total += n;
        if n < BATCH {
            return Ok(total);
        }
    }
}

/// The server's background pass: every `every`, compacts rows older than a minute.
pub async fn run(storage: Arc<dyn Storage>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let s = storage.clone();
        match tokio::task::spawn_blocking(move || compact_all(s.as_ref(), Duration::from_secs(60)))
            .await
        {
            Ok(Ok(n)) if n > 0 => tracing::debug!("compacted {n} measurements"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("compaction failed, will retry: {e}"),
            Err(e) => tracing::warn!("compaction task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Row, Sqlite};

    fn row(n: usize) -> Row {
        Row {
            id: format!("{n:064x}"),
            source: "vantage".into(),
            probe_key: None,
            probe_cc: "IT".into(),
            probe_asn: 1,
            test_name: "web_connectivity".into(),
            input: None,
            domain: None,
            measured_at: "2026-01-01 00:00:00".into(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: format!(
                "{{\"v\":1,\"measurement\":{{\"n\":{n},\"body\":\"{}\"}}}}",
                "<p>blocked é</p>".repeat(300)
            ),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    #[test]
    fn compacted_envelopes_read_back_byte_for_byte_and_take_less_room() {
        let dir = std::env::temp_dir().join(format!("vantage-compact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let rows: Vec<Row> = (0..1200).map(row).collect();
        db.insert(&rows).expect("insert");

        // Nothing is old enough yet.
        assert_eq!(
            compact_all(&db, Duration::from_secs(60)).expect("compact"),
            0
        );
        // All of it, in batches; a second pass finds nothing left.
        let later = now() + 1;
        assert_eq!(db.compact(later, BATCH).expect("batch"), BATCH);
        assert_eq!(db.compact(later, 10_000).expect("rest"), 700);
        assert_eq!(db.compact(later, BATCH).expect("none"), 0);
        for r in [&rows[0], &rows[777], &rows[1199]] {
            assert_eq!(db.envelope(&r.id).expect("read"), Some(r.envelope.clone()));
        }
        // Rows stored after compaction are compacted on the next pass, not skipped.
        db.insert(&[row(5000)]).expect("insert");
        assert_eq!(db.compact(now() + 1, BATCH).expect("new"), 1);
        assert_eq!(
            db.envelope(&row(5000).id).expect("read"),
            Some(row(5000).envelope)
        );

        let packed = pack(&rows[0].envelope).expect("pack");
        assert!(
            packed.len() * 10 < rows[0].envelope.len(),
            "{}",
            packed.len()
        );
        assert!(unpack(b"not zstd").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
