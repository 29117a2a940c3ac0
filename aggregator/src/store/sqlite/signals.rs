//! SQLite's signals: every stored measurement and heartbeat is added, in the transaction that
//! stores it, to its probe key's row of its 5-minute bin (`signal_probes`), which is what the
//! signals API and the shutdown detector read (README.md, `GET /api/v1/signals`).
//!
//! Bins are keyed by when a measurement was *made*, not when it arrived, so a probe's offline
//! backlog, uploaded after a shutdown, lands in the bins of the shutdown itself. Counters
//! saturate at [`COUNTER_MAX`] when written and are read back clamped whatever type or size
//! they hold ([`int`], [`counter`]), so no stored value (a database poisoned before these checks
//! existed, a file edited by hand) can make a query fail.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::store::Row;
use crate::store::model::{
    BIN_SECONDS, COUNTER_MAX, NO_KEY, ProbeBin, Vouches, bin_of, canary_counts, parse_time,
};

/// Migration 7: the counters per network, and which probes were heard from in a bin. Since
/// migration 10 the counters live per probe in `signal_probes` ([`VOTES_MIGRATION`]) and
/// `signal_bins` only says which networks were heard from in a bin.
pub const MIGRATION: &str = "
    CREATE TABLE signal_bins (
        cc TEXT NOT NULL,
        asn INTEGER NOT NULL,
        bin INTEGER NOT NULL,
        probes INTEGER NOT NULL DEFAULT 0,
        heartbeats INTEGER NOT NULL DEFAULT 0,
        canary_checks INTEGER NOT NULL DEFAULT 0,
        canary_ok INTEGER NOT NULL DEFAULT 0,
        measurements INTEGER NOT NULL DEFAULT 0,
        anomalies_dns INTEGER NOT NULL DEFAULT 0,
        anomalies_tcp INTEGER NOT NULL DEFAULT 0,
        anomalies_tls INTEGER NOT NULL DEFAULT 0,
        anomalies_http INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (cc, asn, bin)
    ) WITHOUT ROWID;
    CREATE TABLE signal_probes (
        cc TEXT NOT NULL,
        asn INTEGER NOT NULL,
        bin INTEGER NOT NULL,
        probe_key TEXT NOT NULL,
        PRIMARY KEY (cc, asn, bin, probe_key)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO signal_probes
        SELECT probe_cc, probe_asn, unixepoch(measured_at) / 300, probe_key FROM measurements
        WHERE probe_key IS NOT NULL AND unixepoch(measured_at) IS NOT NULL;
    INSERT OR IGNORE INTO signal_probes
        SELECT probe_cc, probe_asn, unixepoch(sent_at) / 300, probe_key FROM heartbeats
        WHERE unixepoch(sent_at) IS NOT NULL;
    INSERT INTO signal_bins (cc, asn, bin, measurements, anomalies_dns, anomalies_tcp,
        anomalies_tls, anomalies_http)
        SELECT probe_cc, probe_asn, unixepoch(measured_at) / 300,
            sum(test_name = 'web_connectivity'), sum(coalesce(blocking = '\"dns\"', 0)),
            sum(coalesce(blocking = '\"tcp_ip\"', 0)), sum(coalesce(blocking = '\"tls\"', 0)),
            sum(coalesce(blocking IN ('\"http-failure\"', '\"http-diff\"'), 0))
        FROM measurements WHERE unixepoch(measured_at) IS NOT NULL GROUP BY 1, 2, 3;
    INSERT INTO signal_bins (cc, asn, bin, heartbeats)
        SELECT probe_cc, probe_asn, unixepoch(sent_at) / 300, count(*) FROM heartbeats
        WHERE unixepoch(sent_at) IS NOT NULL GROUP BY 1, 2, 3
        ON CONFLICT DO UPDATE SET heartbeats = excluded.heartbeats;
    INSERT INTO signal_bins (cc, asn, bin, probes)
        SELECT cc, asn, bin, count(*) FROM signal_probes WHERE true GROUP BY 1, 2, 3
        ON CONFLICT DO UPDATE SET probes = excluded.probes;";

/// Migration 10: whether each measurement and heartbeat came from inside the network it claims
/// (`ingest::Origin`; rows stored before are `0`, unverified), the counters per probe key and
/// bin instead of per network (so that each key is one vote), and the days on which each key
/// had verified contact with each network ([`Vouches`]).
///
/// Heartbeats, measurements and anomalies are recounted per key from the rows themselves. A
/// canary's counts are inside its envelope, which compaction has compressed where SQL cannot
/// read it, so the old canary totals of each bin are carried over as one voice
/// ([`NO_KEY`]), clamped: a database poisoned before these checks existed (a total overflowed
/// into a REAL) migrates to sane values.
pub const VOTES_MIGRATION: &str = "
    ALTER TABLE measurements ADD COLUMN network_verified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE heartbeats ADD COLUMN network_verified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN heartbeats INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN canary_checks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN canary_ok INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN measurements INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN anomalies_dns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN anomalies_tcp INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN anomalies_tls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE signal_probes ADD COLUMN anomalies_http INTEGER NOT NULL DEFAULT 0;
    UPDATE signal_probes SET down = min(max(CAST(down AS INTEGER), 0), 1099511627776)
        WHERE typeof(down) <> 'integer' OR down < 0 OR down > 1099511627776;
    INSERT INTO signal_probes (cc, asn, bin, probe_key, heartbeats)
        SELECT probe_cc, probe_asn, unixepoch(sent_at) / 300, probe_key, count(*) FROM heartbeats
        WHERE unixepoch(sent_at) IS NOT NULL GROUP BY 1, 2, 3, 4
        ON CONFLICT DO UPDATE SET heartbeats = excluded.heartbeats;
    INSERT INTO signal_probes (cc, asn, bin, probe_key, measurements, anomalies_dns,
        anomalies_tcp, anomalies_tls, anomalies_http)
        SELECT probe_cc, probe_asn, unixepoch(measured_at) / 300, coalesce(probe_key, ''),
            count(*), sum(coalesce(blocking = '\"dns\"', 0)),
            sum(coalesce(blocking = '\"tcp_ip\"', 0)), sum(coalesce(blocking = '\"tls\"', 0)),
            sum(coalesce(blocking IN ('\"http-failure\"', '\"http-diff\"'), 0))
        FROM measurements
        WHERE test_name = 'web_connectivity' AND unixepoch(measured_at) IS NOT NULL
        GROUP BY 1, 2, 3, 4
        ON CONFLICT DO UPDATE SET measurements = excluded.measurements,
            anomalies_dns = excluded.anomalies_dns, anomalies_tcp = excluded.anomalies_tcp,
            anomalies_tls = excluded.anomalies_tls, anomalies_http = excluded.anomalies_http;
    INSERT INTO signal_probes (cc, asn, bin, probe_key, canary_checks, canary_ok)
        SELECT cc, asn, bin, '', min(max(CAST(canary_checks AS INTEGER), 0), 1099511627776),
            min(max(CAST(canary_ok AS INTEGER), 0), max(CAST(canary_checks AS INTEGER), 0),
                1099511627776)
        FROM signal_bins WHERE canary_checks <> 0
        ON CONFLICT DO UPDATE SET canary_checks = excluded.canary_checks,
            canary_ok = excluded.canary_ok;
    ALTER TABLE signal_bins DROP COLUMN probes;
    ALTER TABLE signal_bins DROP COLUMN heartbeats;
    ALTER TABLE signal_bins DROP COLUMN canary_checks;
    ALTER TABLE signal_bins DROP COLUMN canary_ok;
    ALTER TABLE signal_bins DROP COLUMN measurements;
    ALTER TABLE signal_bins DROP COLUMN anomalies_dns;
    ALTER TABLE signal_bins DROP COLUMN anomalies_tcp;
    ALTER TABLE signal_bins DROP COLUMN anomalies_tls;
    ALTER TABLE signal_bins DROP COLUMN anomalies_http;
    CREATE TABLE verified_contacts (
        cc TEXT NOT NULL,
        day INTEGER NOT NULL,
        asn INTEGER NOT NULL,
        probe_key TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        PRIMARY KEY (cc, day, asn, probe_key)
    ) WITHOUT ROWID;";

/// The anomaly columns, in the order of `detect::signals::LayerRatios`.
const LAYER_COLUMNS: [&str; 4] = [
    "anomalies_dns",
    "anomalies_tcp",
    "anomalies_tls",
    "anomalies_http",
];

/// The layer (index into [`LAYER_COLUMNS`]) a web_connectivity verdict's `blocking` (stored as
/// JSON text) counts on.
fn layer_index(blocking: Option<&str>) -> Option<usize> {
    match blocking? {
        "\"dns\"" => Some(0),
        "\"tcp_ip\"" => Some(1),
        "\"tls\"" => Some(2),
        "\"http-failure\"" | "\"http-diff\"" => Some(3),
        _ => None,
    }
}

/// What a submission says about its probe's connectivity when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Reach {
    /// It was online at this moment (epoch seconds): a heartbeat, or a canary round in which
    /// most targets answered.
    Up(i64),
    /// A canary round failed: it was cut off (and queued this for later).
    Down,
    /// Nothing either way.
    #[default]
    Unknown,
}

/// What one submission adds to its probe's row of a bin.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    reach: Reach,
    heartbeats: i64,
    /// Canary targets that answered, and checked.
    canary: (i64, i64),
    measurements: i64,
    anomalies: [i64; 4],
}

/// Adds a submission to its probe's row of a bin, every counter saturating at
/// [`COUNTER_MAX`], and marks the network heard from in the bin. Two statements, since this
/// runs for every measurement stored; a submission that changes nothing (a throttling test,
/// say) makes the row exist without rewriting it.
fn tally(
    tx: &Transaction<'_>,
    cc: &str,
    asn: u32,
    bin: i64,
    key: &str,
    t: &Tally,
) -> rusqlite::Result<()> {
    let (up, down) = match t.reach {
        Reach::Up(at) => (Some(at), 0),
        Reach::Down => (None, 1),
        Reach::Unknown => (None, 0),
    };
    let c = |n: i64| n.clamp(0, COUNTER_MAX);
    tx.prepare_cached(
        "INSERT INTO signal_probes (cc, asn, bin, probe_key, first_up, last_up, down, heartbeats,
            canary_ok, canary_checks, measurements, anomalies_dns, anomalies_tcp, anomalies_tls,
            anomalies_http)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT DO UPDATE SET
            first_up = coalesce(min(first_up, excluded.first_up), first_up, excluded.first_up),
            last_up = coalesce(max(last_up, excluded.last_up), last_up, excluded.last_up),
            down = min(down + excluded.down, ?15),
            heartbeats = min(heartbeats + excluded.heartbeats, ?15),
            canary_ok = min(canary_ok + excluded.canary_ok, ?15),
            canary_checks = min(canary_checks + excluded.canary_checks, ?15),
            measurements = min(measurements + excluded.measurements, ?15),
            anomalies_dns = min(anomalies_dns + excluded.anomalies_dns, ?15),
            anomalies_tcp = min(anomalies_tcp + excluded.anomalies_tcp, ?15),
            anomalies_tls = min(anomalies_tls + excluded.anomalies_tls, ?15),
            anomalies_http = min(anomalies_http + excluded.anomalies_http, ?15)
         WHERE excluded.first_up IS NOT NULL OR excluded.down > 0 OR excluded.heartbeats > 0
            OR excluded.canary_checks > 0 OR excluded.measurements > 0",
    )?
    .execute(params![
        cc,
        asn,
        bin,
        key,
        up,
        down,
        c(t.heartbeats),
        c(t.canary.0),
        c(t.canary.1),
        c(t.measurements),
        c(t.anomalies[0]),
        c(t.anomalies[1]),
        c(t.anomalies[2]),
        c(t.anomalies[3]),
        COUNTER_MAX
    ])?;
    tx.prepare_cached("INSERT OR IGNORE INTO signal_bins (cc, asn, bin) VALUES (?1, ?2, ?3)")?
        .execute(params![cc, asn, bin])?;
    Ok(())
}

/// Records that `key` reached the aggregator from inside `asn` (in `cc`) at `at`: its day's
/// first and last verified contact ([`Vouches`]).
fn vouch(tx: &Transaction<'_>, key: &str, cc: &str, asn: u32, at: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO verified_contacts (cc, day, asn, probe_key, first_at, last_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT DO UPDATE SET first_at = min(first_at, excluded.first_at),
            last_at = max(last_at, excluded.last_at)
         WHERE excluded.first_at < first_at OR excluded.last_at > last_at",
    )?
    .execute(params![cc, at.div_euclid(86_400), asn, key, at])?;
    Ok(())
}

/// Adds a newly stored measurement to its probe's row of its bin, and, when it came from
/// inside the network it claims, to its key's verified contacts.
pub fn record_row(tx: &Transaction<'_>, row: &Row) -> rusqlite::Result<()> {
    let Some(at) = parse_time(&row.measured_at) else {
        return Ok(());
    };
    let bin = at.div_euclid(BIN_SECONDS);
    let (cc, asn) = (row.probe_cc.as_str(), row.probe_asn);
    let mut t = Tally::default();
    match row.test_name.as_str() {
        "web_connectivity" => {
            t.measurements = 1;
            if let Some(i) = layer_index(row.blocking.as_deref()) {
                t.anomalies[i] = 1;
            }
        }
        "canary" => {
            // A canary's `accessible` says whether most of its targets answered (ingest). Other
            // measurements say nothing of connectivity: a probe that can measure sends
            // heartbeats and runs canaries, which say it more cheaply.
            t.reach = match row.accessible {
                Some(true) => Reach::Up(at),
                Some(false) => Reach::Down,
                None => Reach::Unknown,
            };
            if let Some(counts) = canary_counts(&row.envelope) {
                t.canary = counts;
            }
        }
        _ => {}
    }
    match &row.probe_key {
        Some(key) => {
            tally(tx, cc, asn, bin, key, &t)?;
            if row.network_verified {
                vouch(tx, key, cc, asn, at)?;
            }
        }
        // Without a key there is no probe to count as heard from or online, only counters.
        None => {
            t.reach = Reach::Unknown;
            tally(tx, cc, asn, bin, NO_KEY, &t)?;
        }
    }
    Ok(())
}

/// Adds a newly recorded heartbeat, stamped `sent_at` and received at `received` (epoch
/// seconds), to its probe's row of the bin of the moment it shows the probe connected
/// ([`crate::store::heartbeat_contact`]), and, when it came from inside the network it claims,
/// to its key's verified contacts.
pub fn record_heartbeat(
    tx: &Transaction<'_>,
    key: &str,
    cc: &str,
    asn: u32,
    (sent_at, received): (&str, i64),
    verified: bool,
) -> rusqlite::Result<()> {
    let Some(sent) = parse_time(sent_at) else {
        return Ok(());
    };
    let at = crate::store::heartbeat_contact(sent, received);
    let t = Tally {
        reach: Reach::Up(at),
        heartbeats: 1,
        ..Tally::default()
    };
    tally(tx, cc, asn, at.div_euclid(BIN_SECONDS), key, &t)?;
    if verified {
        vouch(tx, key, cc, asn, at)?;
    }
    Ok(())
}

/// Moves a rescored measurement's anomaly from its old layer to its new one, in its probe's
/// row.
pub fn rescored(
    tx: &Transaction<'_>,
    id: &str,
    new_blocking: Option<&str>,
) -> rusqlite::Result<()> {
    type Old = (String, u32, String, Option<String>, Option<String>);
    let old: Option<Old> = tx
        .query_row(
            "SELECT probe_cc, probe_asn, measured_at, blocking, probe_key FROM measurements
             WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((cc, asn, at, old_blocking, key)) = old else {
        return Ok(());
    };
    let Some(bin) = bin_of(&at) else {
        return Ok(());
    };
    let (before, after) = (
        layer_index(old_blocking.as_deref()),
        layer_index(new_blocking),
    );
    if before == after {
        return Ok(());
    }
    let key = key.unwrap_or_default();
    let mut set = Vec::new();
    if let Some(i) = before {
        set.push(format!("{0} = max({0} - 1, 0)", LAYER_COLUMNS[i]));
    }
    if let Some(i) = after {
        set.push(format!(
            "{0} = min({0} + 1, {COUNTER_MAX})",
            LAYER_COLUMNS[i]
        ));
    }
    tx.execute(
        &format!(
            "UPDATE signal_probes SET {} WHERE cc = ?1 AND asn = ?2 AND bin = ?3 AND probe_key = ?4",
            set.join(", ")
        ),
        params![cc, asn, bin, key],
    )?;
    Ok(())
}

/// A stored integer as one, whatever was stored: a REAL (what SQLite makes of an overflowed
/// sum) is truncated, NaN, text, blobs and NULL are nothing.
pub fn int(v: Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(i),
        // `as` saturates at the ends of i64.
        Value::Real(f) if f.is_finite() => Some(f as i64),
        _ => None,
    }
}

/// A stored counter, clamped to `0..=COUNTER_MAX` whatever was stored (nothing counts as 0).
pub fn counter(v: Value) -> i64 {
    int(v).map_or(0, |n| n.clamp(0, COUNTER_MAX))
}

/// The probes' rows of `cc` (one network or all) in `[from_bin, to_bin)`.
pub fn probe_bins(
    c: &Connection,
    cc: &str,
    asn: Option<u32>,
    from_bin: i64,
    to_bin: i64,
) -> rusqlite::Result<Vec<ProbeBin>> {
    let mut stmt = c.prepare_cached(
        "SELECT bin, asn, probe_key, first_up, heartbeats, canary_ok, canary_checks,
            measurements, anomalies_dns, anomalies_tcp, anomalies_tls, anomalies_http
         FROM signal_probes
         WHERE cc = ?1 AND (?2 IS NULL OR asn = ?2) AND bin >= ?3 AND bin < ?4",
    )?;
    let rows = stmt.query_map(params![cc, asn, from_bin, to_bin], |r| {
        let (Some(bin), Some(asn), Value::Text(key)) = (
            int(r.get(0)?),
            int(r.get(1)?).and_then(|a| u32::try_from(a).ok()),
            r.get::<_, Value>(2)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(ProbeBin {
            bin,
            asn,
            key,
            online: int(r.get(3)?).is_some(),
            heartbeats: counter(r.get(4)?),
            canary_ok: counter(r.get(5)?),
            canary_checks: counter(r.get(6)?),
            measurements: counter(r.get(7)?),
            anomalies: [
                counter(r.get(8)?),
                counter(r.get(9)?),
                counter(r.get(10)?),
                counter(r.get(11)?),
            ],
        }))
    })?;
    rows.filter_map(Result::transpose).collect()
}

/// The verified contacts of `cc` (one network, or all) on the days `[first_day, last_day]`.
pub fn vouches(
    c: &Connection,
    cc: &str,
    asn: Option<u32>,
    first_day: i64,
    last_day: i64,
) -> rusqlite::Result<Vouches> {
    let mut stmt = c.prepare_cached(
        "SELECT probe_key, asn, first_at, last_at FROM verified_contacts
         WHERE cc = ?1 AND day >= ?2 AND day <= ?3 AND (?4 IS NULL OR asn = ?4)",
    )?;
    let mut vouches = Vouches::default();
    let rows = stmt.query_map(params![cc, first_day, last_day, asn], |r| {
        Ok((
            r.get::<_, Value>(0)?,
            int(r.get(1)?),
            int(r.get(2)?),
            int(r.get(3)?),
        ))
    })?;
    for row in rows {
        if let (Value::Text(key), Some(asn), Some(first), Some(last)) = row?
            && let Ok(asn) = u32::try_from(asn)
        {
            vouches.add(&key, asn, first, last);
        }
    }
    Ok(vouches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_types_count_on_their_layer() {
        assert_eq!(layer_index(Some("\"tcp_ip\"")), Some(1));
        assert_eq!(layer_index(Some("\"http-diff\"")), Some(3));
        assert_eq!(layer_index(Some("false")), None);
        assert_eq!(layer_index(None), None);
    }
}
