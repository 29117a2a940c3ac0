//! SQLite's side of detection: what the detectors read (contacts per probe and bin, verdicts,
//! failed canaries, rate samples) and the stored events (README.md, "Timeline").

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{Connection, Transaction, params};

use super::signals::{counter, int};
use crate::store::model::{
    Contact, Event, Kind, NO_KEY, ProbeContacts, RateSample, Scope, ThrottlingObservation,
    TimelineQuery, VerdictRow, format_time,
};

/// Tables of migration 8: how each probe's contacts in a bin read (see `signals.rs`), and the
/// events.
pub const MIGRATION: &str = "
    ALTER TABLE signal_probes ADD COLUMN first_up INTEGER;
    ALTER TABLE signal_probes ADD COLUMN last_up INTEGER;
    ALTER TABLE signal_probes ADD COLUMN down INTEGER NOT NULL DEFAULT 0;
    UPDATE signal_probes SET
        first_up = (SELECT min(unixepoch(sent_at)) FROM heartbeats h
            WHERE h.probe_key = signal_probes.probe_key
            AND h.sent_at >= datetime(signal_probes.bin * 300, 'unixepoch')
            AND h.sent_at < datetime(signal_probes.bin * 300 + 300, 'unixepoch')),
        last_up = (SELECT max(unixepoch(sent_at)) FROM heartbeats h
            WHERE h.probe_key = signal_probes.probe_key
            AND h.sent_at >= datetime(signal_probes.bin * 300, 'unixepoch')
            AND h.sent_at < datetime(signal_probes.bin * 300 + 300, 'unixepoch'));
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        cc TEXT NOT NULL,
        kind TEXT NOT NULL,
        start INTEGER NOT NULL,
        end_at INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX events_cc_start ON events (cc, start);";

/// Countries heard from since a bin. Asked every minute: it must read only the recent bins,
/// and SQLite without statistics would rather scan the primary key for the `DISTINCT`.
const ACTIVE_COUNTRIES: &str =
    "SELECT DISTINCT cc FROM signal_bins INDEXED BY signal_bins_recent WHERE bin >= ?1 ORDER BY cc";

/// A country's networks heard from since a bin.
const RECENT_NETWORKS: &str = "SELECT DISTINCT asn FROM signal_bins INDEXED BY signal_bins_recent WHERE bin >= ?1 AND cc = ?2";

/// Countries with signals since `from_bin`.
pub fn active_countries(c: &Connection, from_bin: i64) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(ACTIVE_COUNTRIES)?
        .query_map([from_bin], |r| r.get(0))?
        .collect()
}

/// A country's networks heard from since `from_bin`.
pub fn recent_networks(c: &Connection, cc: &str, from_bin: i64) -> rusqlite::Result<Vec<u32>> {
    c.prepare_cached(RECENT_NETWORKS)?
        .query_map(params![from_bin, cc], |r| r.get(0))?
        .collect()
}

/// Events of `q`, oldest first.
pub fn timeline(c: &Connection, q: &TimelineQuery) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = c.prepare_cached(
        "SELECT body FROM events WHERE (?1 IS NULL OR cc = ?1) AND start < ?2
         AND (end_at IS NULL OR end_at >= ?3) AND (?4 IS NULL OR kind = ?4)
         ORDER BY start, id",
    )?;
    let rows = stmt.query_map(
        params![
            q.cc.as_deref().map(str::to_ascii_uppercase),
            q.until,
            q.since,
            q.kind.map(Kind::as_str)
        ],
        |r| r.get::<_, String>(0),
    )?;
    let asn = q.asn.map(|a| format!("AS{a}"));
    let mut out = Vec::new();
    for body in rows {
        let Ok(e) = serde_json::from_str::<Event>(&body?) else {
            continue;
        };
        let touches = match &asn {
            None => true,
            Some(a) => {
                e.scope == Scope::Full
                    || e.entity.asn.as_deref() == Some(a.as_str())
                    || e.entity.asns.contains(a)
            }
        };
        if touches {
            out.push(e);
        }
    }
    Ok(out)
}

/// Countries with data, for the web page's picker: (cc, networks, events).
pub fn countries(c: &Connection) -> rusqlite::Result<Vec<(String, i64, i64)>> {
    c.prepare_cached(
        "SELECT cc, count(DISTINCT asn), (SELECT count(*) FROM events e WHERE e.cc = s.cc)
         FROM signal_bins s GROUP BY cc ORDER BY cc",
    )?
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
    .collect()
}

/// Every probe key's contacts with one network from `from_bin` on. Every stored value is read
/// whatever it holds ([`int`], [`counter`]): a row that makes no sense is left out rather than
/// failing detection.
pub fn contacts(
    c: &Connection,
    cc: &str,
    asn: u32,
    from_bin: i64,
) -> rusqlite::Result<Vec<ProbeContacts>> {
    let mut stmt = c.prepare_cached(
        "SELECT probe_key, bin, first_up, last_up, down FROM signal_probes
         WHERE cc = ?1 AND asn = ?2 AND bin >= ?3 AND probe_key <> ?4 ORDER BY bin",
    )?;
    let mut by_probe: BTreeMap<String, Vec<Contact>> = BTreeMap::new();
    let rows = stmt.query_map(params![cc, asn, from_bin, NO_KEY], |r| {
        let (Value::Text(key), Some(bin)) = (r.get(0)?, int(r.get(1)?)) else {
            return Ok(None);
        };
        let (first, last) = (int(r.get(2)?), int(r.get(3)?));
        Ok(Some((
            key,
            Contact {
                bin,
                up: first.zip(last),
                down: u32::try_from(counter(r.get(4)?)).unwrap_or(u32::MAX),
            },
        )))
    })?;
    for row in rows {
        if let Some((key, contact)) = row? {
            by_probe.entry(key).or_default().push(contact);
        }
    }
    Ok(by_probe
        .into_iter()
        .map(|(key, contacts)| ProbeContacts { key, asn, contacts })
        .collect())
}

/// Failed canary rounds of `cc` during `[from, to]`: (id, signer), at most 5,000.
pub fn failed_canaries(
    c: &Connection,
    cc: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<(String, Option<String>)>> {
    c.prepare_cached(
        "SELECT id, probe_key FROM measurements WHERE probe_cc = ?1 AND measured_at >= ?2
         AND measured_at <= ?3 AND test_name = 'canary' AND accessible = 0
         ORDER BY measured_at LIMIT 5000",
    )?
    .query_map(params![cc, format_time(from), format_time(to)], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?
    .collect()
}

/// Verdicts of `cc` since `from` that name a target, of web_connectivity and of the service
/// tests ([`crate::store::scored_tests`]); a row whose time SQLite cannot read is left out.
pub fn web_verdicts(c: &Connection, cc: &str, from: i64) -> rusqlite::Result<Vec<VerdictRow>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT probe_asn, domain, unixepoch(measured_at), blocking, probe_key, id
         FROM measurements WHERE probe_cc = ?1 AND measured_at >= ?2
         AND test_name IN ({}) AND domain IS NOT NULL",
        crate::store::scored_tests_sql()
    ))?;
    let rows = stmt.query_map(params![cc, format_time(from)], |r| {
        let Some(at) = r.get::<_, Option<i64>>(2)? else {
            return Ok(None);
        };
        Ok(Some(VerdictRow {
            asn: r.get(0)?,
            domain: r.get(1)?,
            at,
            blocking: r.get(3)?,
            probe_key: r.get(4)?,
            id: r.get(5)?,
        }))
    })?;
    rows.filter_map(Result::transpose).collect()
}

/// Throttling verdicts of `cc` since `from`.
pub fn throttling_verdicts(
    c: &Connection,
    cc: &str,
    from: i64,
) -> rusqlite::Result<Vec<ThrottlingObservation>> {
    let mut stmt = c.prepare_cached(
        "SELECT probe_asn, domain, unixepoch(measured_at), blocking, verdict, probe_key, id
         FROM measurements WHERE probe_cc = ?1 AND measured_at >= ?2
         AND test_name = 'throttling' AND domain IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![cc, format_time(from)], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (asn, domain, at, blocking, verdict, probe, id) = row?;
        let Some(at) = at else { continue };
        out.push(ThrottlingObservation::of_verdict(
            asn,
            domain,
            at,
            blocking.as_deref(),
            verdict.as_deref(),
            probe.unwrap_or_default(),
            id,
        ));
    }
    Ok(out)
}

/// web_connectivity rate samples of `cc` since `from`.
pub fn rate_samples(c: &Connection, cc: &str, from: i64) -> rusqlite::Result<Vec<RateSample>> {
    let mut stmt = c.prepare_cached(
        "SELECT probe_asn, domain, unixepoch(measured_at), probe_key, id, kbps, below
         FROM (SELECT probe_asn, domain, measured_at, probe_key, id,
               json_extract(verdict, '$.goodput.probe_kbps') AS kbps,
               json_extract(verdict, '$.goodput.below_control') AS below
               FROM measurements WHERE probe_cc = ?1 AND measured_at >= ?2
               AND test_name = 'web_connectivity' AND domain IS NOT NULL)
         WHERE kbps IS NOT NULL",
    )?;
    // A row whose time SQLite cannot read is left out, as in `throttling_verdicts`.
    let rows = stmt.query_map(params![cc, format_time(from)], |r| {
        let Some(at) = r.get::<_, Option<i64>>(2)? else {
            return Ok(None);
        };
        Ok(Some(RateSample {
            asn: r.get(0)?,
            domain: r.get(1)?,
            at,
            probe: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            id: r.get(4)?,
            kbps: r.get(5)?,
            below_control: r.get(6)?,
        }))
    })?;
    rows.filter_map(Result::transpose).collect()
}

/// Stored events of `cc` of `kinds` that end at or after `from` or are ongoing; a body that no
/// longer reads as an event is left out.
pub fn events_since(
    c: &Connection,
    cc: &str,
    from: i64,
    kinds: &[Kind],
) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = c.prepare_cached(
        "SELECT body FROM events WHERE cc = ?1 AND kind = ?3
         AND (end_at IS NULL OR end_at >= ?2)",
    )?;
    let mut out = Vec::new();
    for kind in kinds {
        let rows = stmt.query_map(params![cc, from, kind.as_str()], |r| r.get::<_, String>(0))?;
        for body in rows {
            if let Ok(e) = serde_json::from_str::<Event>(&body?) {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Replaces the events of `cc` of `kinds` that start at or after `from` with `events`, in
/// the caller's transaction.
pub fn replace_events(
    tx: &Transaction<'_>,
    cc: &str,
    from: i64,
    kinds: &[Kind],
    events: &[Event],
) -> rusqlite::Result<()> {
    for kind in kinds {
        tx.execute(
            "DELETE FROM events WHERE cc = ?1 AND start >= ?2 AND kind = ?3",
            params![cc, from, kind.as_str()],
        )?;
    }
    for e in events {
        let body = serde_json::to_string(e).unwrap_or_default();
        tx.execute(
            "INSERT OR REPLACE INTO events (id, cc, kind, start, end_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.id,
                cc,
                e.kind.as_str(),
                e.start_secs(),
                e.end_secs(),
                body
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_by_minute_questions_read_only_recent_bins() {
        let dir = std::env::temp_dir().join(format!("vantage-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        drop(crate::store::Sqlite::open(&path).expect("migrate"));
        let c = Connection::open(&path).expect("open");
        for (sql, args) in [
            (ACTIVE_COUNTRIES, params![1]),
            (RECENT_NETWORKS, params![1, "IR"]),
        ] {
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan")
                .query_map(args, |r| r.get::<_, String>(3))
                .expect("rows")
                .collect::<rusqlite::Result<_>>()
                .expect("plan rows");
            assert!(
                plan.iter()
                    .any(|p| p.contains("signal_bins_recent (bin>?)")),
                "{sql}: {plan:?}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
