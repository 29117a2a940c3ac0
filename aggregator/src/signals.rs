//! Signals per network in 5-minute bins (DESIGN "Signals"; issue 6, step 2): probes heard from,
//! heartbeats, canary success, and web_connectivity anomalies by layer.
//!
//! Bins are keyed by when a measurement was *made*, not when it arrived, and are updated in the
//! same transaction that stores each measurement or heartbeat. So a query never recomputes
//! anything, and a probe's offline backlog, uploaded after a shutdown, lands in the bins of the
//! shutdown itself: the signals are revised as late evidence comes in. Country-wide signals are
//! the sum over the country's networks.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::db::Row;

/// Width of a bin. Five minutes: IODA's finest active-probing step is ten, and the research
/// note (`shutdown-detection.md` §11.11) puts the aggregator's bins at five so that a
/// shutdown can be opened within two bins of its start.
pub const BIN_SECONDS: i64 = 300;

/// Tables: the counters, and which probes were heard from in a bin. Since migration 8 the
/// number of probes is counted from `signal_probes` when asked, and `signal_bins.probes` is no
/// longer kept: one statement less for every measurement stored.
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

/// The bin of an OONI time (`YYYY-MM-DD HH:MM:SS`, UTC).
pub fn bin_of(time: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(time, format).ok()?;
    Some(t.assume_utc().unix_timestamp().div_euclid(BIN_SECONDS))
}

/// Seconds since the epoch of `YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS` (UTC), as the API takes them.
pub fn parse_time(text: &str) -> Option<i64> {
    let day = time::macros::format_description!("[year]-[month]-[day]");
    let full = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, full)
        .ok()
        .or_else(|| {
            time::Date::parse(text, day)
                .ok()
                .map(|d| d.with_time(time::Time::MIDNIGHT))
        })
        .map(|t| t.assume_utc().unix_timestamp())
}

/// The column a web_connectivity verdict's `blocking` (stored as JSON text) counts in.
fn layer_column(blocking: Option<&str>) -> Option<&'static str> {
    match blocking? {
        "\"dns\"" => Some("anomalies_dns"),
        "\"tcp_ip\"" => Some("anomalies_tcp"),
        "\"tls\"" => Some("anomalies_tls"),
        "\"http-failure\"" | "\"http-diff\"" => Some("anomalies_http"),
        _ => None,
    }
}

/// What a submission says about its probe's connectivity when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// It was online at this moment (epoch seconds): a heartbeat, or a canary round in which
    /// most targets answered.
    Up(i64),
    /// A canary round failed: it was cut off (and queued this for later).
    Down,
    /// Nothing either way.
    Unknown,
}

/// Counts `key` as heard from in a bin and records what its submission says about its
/// connectivity (the shutdown detector's input, `outage.rs`): one statement, since it runs for
/// every measurement stored.
fn count_probe(
    tx: &Transaction<'_>,
    cc: &str,
    asn: u32,
    bin: i64,
    key: &str,
    reach: Reach,
) -> rusqlite::Result<()> {
    let (up, down) = match reach {
        Reach::Up(at) => (Some(at), 0),
        Reach::Down => (None, 1),
        Reach::Unknown => (None, 0),
    };
    tx.prepare_cached(
        "INSERT INTO signal_probes (cc, asn, bin, probe_key, first_up, last_up, down)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
         ON CONFLICT DO UPDATE SET
            first_up = coalesce(min(first_up, excluded.first_up), first_up, excluded.first_up),
            last_up = coalesce(max(last_up, excluded.last_up), last_up, excluded.last_up),
            down = down + excluded.down
         WHERE excluded.first_up IS NOT NULL OR excluded.down > 0",
    )?
    .execute(params![cc, asn, bin, key, up, down])?;
    Ok(())
}

/// Adds `n` to one counter of a bin (`column` is one of this module's own column names).
fn add(
    tx: &Transaction<'_>,
    cc: &str,
    asn: u32,
    bin: i64,
    column: &str,
    n: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO signal_bins (cc, asn, bin, {column}) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET {column} = {column} + excluded.{column}"
        ),
        params![cc, asn, bin, n],
    )?;
    Ok(())
}

/// A canary's `test_keys.ok` and `.total`, read from its envelope.
pub fn canary_counts(envelope: &str) -> Option<(i64, i64)> {
    #[derive(serde::Deserialize)]
    struct Keys {
        ok: i64,
        total: i64,
    }
    #[derive(serde::Deserialize)]
    struct M {
        test_keys: Keys,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        measurement: M,
    }
    let e: Envelope = serde_json::from_str(envelope).ok()?;
    (e.measurement.test_keys.total >= e.measurement.test_keys.ok && e.measurement.test_keys.ok >= 0)
        .then_some((e.measurement.test_keys.ok, e.measurement.test_keys.total))
}

/// Adds a newly stored measurement to its bin.
pub fn record_row(tx: &Transaction<'_>, row: &Row) -> rusqlite::Result<()> {
    let Some(at) = parse_time(&row.measured_at) else {
        return Ok(());
    };
    let bin = at.div_euclid(BIN_SECONDS);
    let (cc, asn) = (row.probe_cc.as_str(), row.probe_asn);
    if let Some(key) = &row.probe_key {
        // A canary's `accessible` says whether most of its targets answered (ingest). Other
        // measurements say nothing here: a probe that can measure sends heartbeats and runs
        // canaries, which say it more cheaply than a write for every measurement stored.
        let reach = match (row.test_name.as_str(), row.accessible) {
            ("canary", Some(true)) => Reach::Up(at),
            ("canary", Some(false)) => Reach::Down,
            _ => Reach::Unknown,
        };
        count_probe(tx, cc, asn, bin, key, reach)?;
    }
    match row.test_name.as_str() {
        "web_connectivity" => {
            add(tx, cc, asn, bin, "measurements", 1)?;
            if let Some(column) = layer_column(row.blocking.as_deref()) {
                add(tx, cc, asn, bin, column, 1)?;
            }
        }
        "canary" => {
            if let Some((ok, total)) = canary_counts(&row.envelope) {
                add(tx, cc, asn, bin, "canary_checks", total)?;
                add(tx, cc, asn, bin, "canary_ok", ok)?;
            }
        }
        // Counts nothing (the counters are web_connectivity's and the canary's), but makes the
        // bin exist: the network was heard from, so detection runs for its country even when
        // only throttling tests arrive from it.
        "throttling" => add(tx, cc, asn, bin, "measurements", 0)?,
        _ => {}
    }
    Ok(())
}

/// Adds a newly recorded heartbeat to its bin.
pub fn record_heartbeat(
    tx: &Transaction<'_>,
    key: &str,
    cc: &str,
    asn: u32,
    sent_at: &str,
) -> rusqlite::Result<()> {
    let Some(at) = parse_time(sent_at) else {
        return Ok(());
    };
    let bin = at.div_euclid(BIN_SECONDS);
    count_probe(tx, cc, asn, bin, key, Reach::Up(at))?;
    add(tx, cc, asn, bin, "heartbeats", 1)
}

/// Moves a rescored measurement's anomaly from its old layer to its new one.
pub fn rescored(
    tx: &Transaction<'_>,
    id: &str,
    new_blocking: Option<&str>,
) -> rusqlite::Result<()> {
    let old: Option<(String, u32, String, Option<String>)> = tx
        .query_row(
            "SELECT probe_cc, probe_asn, measured_at, blocking FROM measurements WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((cc, asn, at, old_blocking)) = old else {
        return Ok(());
    };
    let Some(bin) = bin_of(&at) else {
        return Ok(());
    };
    let (before, after) = (
        layer_column(old_blocking.as_deref()),
        layer_column(new_blocking),
    );
    if before != after {
        if let Some(column) = before {
            add(tx, &cc, asn, bin, column, -1)?;
        }
        if let Some(column) = after {
            add(tx, &cc, asn, bin, column, 1)?;
        }
    }
    Ok(())
}

/// Which signals to read.
#[derive(Debug, Clone)]
pub struct SignalQuery {
    /// Country.
    pub cc: String,
    /// One network, or the whole country.
    pub asn: Option<u32>,
    /// First bin.
    pub from_bin: i64,
    /// Bin after the last.
    pub to_bin: i64,
}

/// Share of measurements with an anomaly on each layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerRatios {
    /// DNS.
    pub dns: f64,
    /// TCP.
    pub tcp: f64,
    /// TLS.
    pub tls: f64,
    /// HTTP (failure or diff).
    pub http: f64,
}

/// One bin of signals. Bins in which nothing was heard are absent: silence is the signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalBin {
    /// Start of the bin, `YYYY-MM-DD HH:MM:SS` UTC.
    pub start: String,
    /// Probes heard from (any signed submission made in the bin).
    pub probes: i64,
    /// Of those, probes whose heartbeat, canaries or measurements showed them online. A probe
    /// cut off is heard from later, through the failed canaries it queued, but not online.
    pub probes_online: i64,
    /// Heartbeats sent in the bin.
    pub heartbeats: i64,
    /// Canary targets that answered, over those checked; `None` without canaries.
    pub canary_success: Option<f64>,
    /// web_connectivity measurements made in the bin.
    pub measurements: i64,
    /// Anomaly ratio by layer; `None` without measurements.
    pub anomaly_ratio: Option<LayerRatios>,
}

fn start_of(bin: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(bin * BIN_SECONDS)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// The bins of `q`, oldest first.
pub fn query(c: &Connection, q: &SignalQuery) -> rusqlite::Result<Vec<SignalBin>> {
    let mut stmt = c.prepare_cached(
        "SELECT bin, 0, sum(heartbeats), sum(canary_checks), sum(canary_ok),
            sum(measurements), sum(anomalies_dns), sum(anomalies_tcp), sum(anomalies_tls),
            sum(anomalies_http)
         FROM signal_bins
         WHERE cc = ?1 AND (?2 IS NULL OR asn = ?2) AND bin >= ?3 AND bin < ?4
         GROUP BY bin ORDER BY bin",
    )?;
    let cc = q.cc.to_ascii_uppercase();
    // Probes heard from, and of those online, per bin: counted from the probes' own rows.
    let mut probes: std::collections::HashMap<i64, (i64, i64)> = Default::default();
    {
        let mut count = c.prepare_cached(
            "SELECT bin, count(*), count(first_up) FROM signal_probes
             WHERE cc = ?1 AND (?2 IS NULL OR asn = ?2) AND bin >= ?3 AND bin < ?4 GROUP BY bin",
        )?;
        for row in count.query_map(params![cc, q.asn, q.from_bin, q.to_bin], |r| {
            Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?)))
        })? {
            let (bin, n) = row?;
            probes.insert(bin, n);
        }
    }
    let rows = stmt.query_map(params![cc, q.asn, q.from_bin, q.to_bin], |r| {
        let (checks, ok): (i64, i64) = (r.get(3)?, r.get(4)?);
        let n: i64 = r.get(5)?;
        let ratio = |k: i64| k as f64 / n as f64;
        let bin: i64 = r.get(0)?;
        Ok(SignalBin {
            start: start_of(bin),
            probes: probes.get(&bin).map_or(0, |p| p.0),
            probes_online: probes.get(&bin).map_or(0, |p| p.1),
            heartbeats: r.get(2)?,
            canary_success: (checks > 0).then(|| ok as f64 / checks as f64),
            measurements: n,
            anomaly_ratio: (n > 0).then(|| LayerRatios {
                dns: ratio(r.get(6).unwrap_or(0)),
                tcp: ratio(r.get(7).unwrap_or(0)),
                tls: ratio(r.get(8).unwrap_or(0)),
                http: ratio(r.get(9).unwrap_or(0)),
            }),
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_five_minutes_of_utc() {
        assert_eq!(bin_of("1970-01-01 00:04:59"), Some(0));
        assert_eq!(bin_of("1970-01-01 00:05:00"), Some(1));
        assert_eq!(
            start_of(bin_of("2026-11-23 15:57:12").expect("bin")),
            "2026-11-23 15:55:00"
        );
        assert_eq!(bin_of("2026-11-23T15:57:12Z"), None);
    }

    use crate::db::{Sqlite, Storage};

    fn row(id: &str, key: &str, asn: u32, at: &str, test: &str, blocking: Option<&str>) -> Row {
        Row {
            id: id.into(),
            source: "vantage".into(),
            probe_key: Some(key.into()),
            probe_cc: "IR".into(),
            probe_asn: asn,
            test_name: test.into(),
            input: None,
            domain: None,
            measured_at: at.into(),
            blocking: blocking.map(String::from),
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: r#"{"v":1,"measurement":{"test_keys":{"ok":2,"total":8}}}"#.into(),
            network_verified: false,
        }
    }

    #[test]
    fn late_measurements_heartbeats_and_rescores_land_in_the_bins_they_belong_to() {
        let dir = std::env::temp_dir().join(format!("vantage-signals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let wc = "web_connectivity";
        db.insert(&[
            row("1", "a", 1, "2026-03-01 10:01:00", wc, Some("\"dns\"")),
            row("2", "a", 1, "2026-03-01 10:02:00", wc, Some("false")),
            row("3", "b", 2, "2026-03-01 10:04:59", wc, Some("\"tls\"")),
            row("4", "b", 2, "2026-03-01 10:06:00", "canary", None),
        ])
        .expect("insert");
        db.heartbeat("a", "IR", 1, "2026-03-01 10:03:00", true)
            .expect("beat");
        db.heartbeat("c", "IR", 1, "2026-03-01 10:03:30", true)
            .expect("beat");
        // A probe's offline backlog arrives later and fills the earlier bin.
        db.insert(&[row(
            "5",
            "c",
            1,
            "2026-03-01 10:00:30",
            wc,
            Some("\"tcp_ip\""),
        )])
        .expect("late");
        let q = |asn| SignalQuery {
            cc: "ir".into(),
            asn,
            from_bin: bin_of("2026-03-01 10:00:00").expect("bin"),
            to_bin: bin_of("2026-03-01 10:10:00").expect("bin"),
        };
        let bins = db.signals(&q(None)).expect("signals");
        assert_eq!(bins.len(), 2, "{bins:?}");
        let first = &bins[0];
        assert_eq!(first.start, "2026-03-01 10:00:00");
        assert_eq!(
            (first.probes, first.heartbeats, first.measurements),
            (3, 2, 4)
        );
        // b was only heard through an anomaly, which says nothing of its connectivity.
        assert_eq!(first.probes_online, 2);
        assert_eq!(
            first.anomaly_ratio,
            Some(LayerRatios {
                dns: 0.25,
                tcp: 0.25,
                tls: 0.25,
                http: 0.0
            })
        );
        assert_eq!(first.canary_success, None);
        assert_eq!(bins[1].canary_success, Some(0.25));
        assert_eq!(bins[1].anomaly_ratio, None);
        let network = db.signals(&q(Some(2))).expect("signals");
        assert_eq!((network[0].probes, network[0].measurements), (1, 1));

        // Rescoring moves the anomaly to its new layer.
        let mut r = row(
            "1",
            "a",
            1,
            "2026-03-01 10:01:00",
            wc,
            Some("\"http-diff\""),
        );
        db.update_verdict(&r).expect("rescore");
        r.blocking = Some("\"http-diff\"".into());
        db.update_verdict(&r).expect("again, no change");
        let ratio = db.signals(&q(None)).expect("signals")[0]
            .anomaly_ratio
            .clone();
        assert_eq!(
            ratio,
            Some(LayerRatios {
                dns: 0.0,
                tcp: 0.25,
                tls: 0.25,
                http: 0.25
            })
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn blocking_types_count_on_their_layer() {
        assert_eq!(layer_column(Some("\"tcp_ip\"")), Some("anomalies_tcp"));
        assert_eq!(layer_column(Some("\"http-diff\"")), Some("anomalies_http"));
        assert_eq!(layer_column(Some("false")), None);
        assert_eq!(layer_column(None), None);
    }
}
