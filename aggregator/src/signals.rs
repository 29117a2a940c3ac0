//! Signals per network in 5-minute bins (DESIGN "Signals"): probes heard from, heartbeats,
//! canary success, and web_connectivity anomalies by layer.
//!
//! Bins are keyed by when a measurement was *made*, not when it arrived, and are updated in the
//! same transaction that stores each measurement or heartbeat. So a probe's offline backlog,
//! uploaded after a shutdown, lands in the bins of the shutdown itself: the signals are revised
//! as late evidence comes in.
//!
//! Every counter is kept per probe key and bin (`signal_probes`), not per network, because a
//! network's signal is read as a vote of its probes: one key counts at most once per bin as
//! heard from or online, and gives at most one vote to the bin's canary success and to each
//! layer's anomaly ratio (its own ratio in that bin), however many submissions it sends. A
//! handful of keys flooding a bin weigh what a handful of probes weigh. Which keys count at all
//! is [`Admit`]'s question: with a geolocation source, only keys with verified contact in the
//! network they claim.
//!
//! Nothing stored is trusted to be sane: counters saturate at [`COUNTER_MAX`] when written,
//! and are read back clamped whatever type or size they hold, so no stored value (a database
//! poisoned before these checks existed, a file edited by hand) can make a query fail.

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use crate::store::Row;

/// Width of a bin. Five minutes: IODA's finest active-probing step is ten, and the research
/// note (`shutdown-detection.md` §11.11) puts the aggregator's bins at five so that a
/// shutdown can be opened within two bins of its start.
pub const BIN_SECONDS: i64 = 300;

/// Where every stored counter saturates: 2^40, a trillion submissions of one key in one bin,
/// far beyond anything real and far below where sums of them could overflow an `i64`.
pub const COUNTER_MAX: i64 = 1 << 40;

/// The `probe_key` of a bin's rows that no probe key signed: OONI imports, and the canary
/// totals carried over from before migration 10. It is one voice, never a probe.
pub const NO_KEY: &str = "";

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

/// The anomaly columns, in [`LayerRatios`] order.
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

/// A canary's `test_keys.ok` and `.total`, read from its envelope, when `0 <= ok <= total`;
/// both saturate at [`COUNTER_MAX`] (ingest refuses anything a canary round cannot have, but
/// storage does not count on it).
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
    let Keys { ok, total } = e.measurement.test_keys;
    (0 <= ok && ok <= total).then_some((ok.min(COUNTER_MAX), total.min(COUNTER_MAX)))
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

/// Adds a newly recorded heartbeat to its probe's row of its bin, and, when it came from
/// inside the network it claims, to its key's verified contacts.
pub fn record_heartbeat(
    tx: &Transaction<'_>,
    key: &str,
    cc: &str,
    asn: u32,
    sent_at: &str,
    verified: bool,
) -> rusqlite::Result<()> {
    let Some(at) = parse_time(sent_at) else {
        return Ok(());
    };
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

/// Whether contacts must come from inside the network they claim to count, and how long a
/// verified contact vouches for its key's later ones (`DetectConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verification {
    /// Count only keys with verified contact in the network they claim.
    pub required: bool,
    /// How far back (seconds) from a contact a verified one may be.
    pub window_seconds: i64,
}

/// The days on which probe keys reached the aggregator from inside a network: for each key,
/// (network, first, last verified contact of the day), as loaded for one question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vouches {
    days: HashMap<String, Vec<(u32, i64, i64)>>,
}

impl Vouches {
    /// Adds one day of `key`'s verified contacts with `asn`, from `first` to `last`.
    pub fn add(&mut self, key: &str, asn: u32, first: i64, last: i64) {
        self.days
            .entry(key.to_string())
            .or_default()
            .push((asn, first, last));
    }

    /// Whether `key` had verified contact with `asn` within `window` seconds up to `at`.
    /// Exact, though only each day's first and last contacts are kept: a day spans less than
    /// any window worth having, so a day whose span overlaps `[at - window, at]` has its first
    /// or its last contact inside it.
    pub fn vouch(&self, key: &str, asn: u32, at: i64, window: i64) -> bool {
        self.days.get(key).is_some_and(|days| {
            days.iter().any(|&(a, first, last)| {
                a == asn && first <= at && last >= at.saturating_sub(window)
            })
        })
    }
}

/// Which probes count for the network they claim.
///
/// Any key can sign anything, and a measurement's `probe_cc` and `probe_asn` are whatever it
/// says, so without a check a few keys anywhere could hide a shutdown (heartbeats "from" the
/// dark network) or invent one. With a geolocation source (`serve --geoip` or `--prefixes`),
/// the aggregator marks each heartbeat and upload whose connecting address lies in the network
/// it claims (`ingest::Origin`), and a key counts for a network at a given moment only if it
/// had such a verified contact with that network within the window before it
/// (`DetectConfig::verified_window_hours`, a week). So:
/// - a heartbeat from elsewhere vouches for nothing, and a key that was never inside a network
///   never counts for it;
/// - canaries recorded offline during a cut and uploaded afterwards inherit their key's
///   verified heartbeats from before the cut;
/// - uploads through Tor or another proxy cannot be checked (the address is the proxy's):
///   they count exactly when their key is already verified directly, by contact from inside
///   the network within the window, and not otherwise. A probe that only ever reaches us
///   through a proxy is not counted, which is the price of not letting anyone who can reach
///   a proxy speak for a network.
///
/// This checks where a key connects from, not who holds it: a censor with addresses inside
/// its own networks verifies like anyone there. The per-key cap (one key, one vote per bin)
/// and the rate limits on new keys bound what each such key can do.
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// Every key counts for the network it claims: no geolocation source, nothing to check.
    Everyone,
    /// Only keys with verified contact in the network within `window` seconds before.
    Verified {
        /// The verified contacts loaded.
        vouches: Vouches,
        /// Seconds.
        window: i64,
    },
}

impl Admit {
    /// Whether a contact at `at` of `key` (`None`: no key, an import) claiming `asn` counts.
    /// With verification, keyless rows never count: nothing vouches for them.
    pub fn counts(&self, key: Option<&str>, asn: u32, at: i64) -> bool {
        match self {
            Admit::Everyone => true,
            Admit::Verified { vouches, window } => {
                key.is_some_and(|k| k != NO_KEY && vouches.vouch(k, asn, at, *window))
            }
        }
    }

    /// What counts for contacts in `cc` (one network, or all) between `from` and `to`.
    pub fn load(
        c: &Connection,
        cc: &str,
        asn: Option<u32>,
        from: i64,
        to: i64,
        v: Verification,
    ) -> rusqlite::Result<Admit> {
        if !v.required {
            return Ok(Admit::Everyone);
        }
        let window = v.window_seconds.max(0);
        let mut stmt = c.prepare_cached(
            "SELECT probe_key, asn, first_at, last_at FROM verified_contacts
             WHERE cc = ?1 AND day >= ?2 AND day <= ?3 AND (?4 IS NULL OR asn = ?4)",
        )?;
        let first_day = from.saturating_sub(window).div_euclid(86_400);
        let last_day = to.div_euclid(86_400);
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
        Ok(Admit::Verified { vouches, window })
    }
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
    /// Canary success: the mean over probes of each one's share of targets that answered in
    /// the bin (one vote per probe); `None` without canaries.
    pub canary_success: Option<f64>,
    /// web_connectivity measurements made in the bin.
    pub measurements: i64,
    /// Anomaly ratio by layer: the mean over probes of each one's share of anomalous
    /// measurements in the bin (one vote per probe); `None` without measurements.
    pub anomaly_ratio: Option<LayerRatios>,
}

fn start_of(bin: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(bin.saturating_mul(BIN_SECONDS))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// One probe key's row of one bin, every counter clamped as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeBin {
    /// Bin number.
    pub bin: i64,
    /// The network it claimed.
    pub asn: u32,
    /// The key ([`NO_KEY`] for rows no key signed).
    pub key: String,
    /// It showed connectivity in the bin.
    pub online: bool,
    /// Heartbeats.
    pub heartbeats: i64,
    /// Canary targets that answered.
    pub canary_ok: i64,
    /// Canary targets checked.
    pub canary_checks: i64,
    /// web_connectivity measurements.
    pub measurements: i64,
    /// Of those, anomalies on each layer (DNS, TCP, TLS, HTTP).
    pub anomalies: [i64; 4],
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

/// One key's voice in one bin (its rows of every network of the question, merged).
#[derive(Default)]
struct Voice {
    online: bool,
    heartbeats: i64,
    canary: (i64, i64),
    measurements: i64,
    anomalies: [i64; 4],
}

/// The bins of `rows`, oldest first, counting only what `admit` admits. Each key is one
/// probe per bin and one vote in each ratio: its own share of canary targets that answered,
/// and of anomalous measurements on each layer, so that a key sending a thousand canaries in a
/// bin weighs what a key sending one does. Rows no key signed ([`NO_KEY`]) are one voice
/// but no probe.
pub fn aggregate(rows: &[ProbeBin], admit: &Admit) -> Vec<SignalBin> {
    let mut bins: BTreeMap<i64, BTreeMap<&str, Voice>> = BTreeMap::new();
    for r in rows {
        let end = r
            .bin
            .saturating_mul(BIN_SECONDS)
            .saturating_add(BIN_SECONDS - 1);
        let key = (r.key != NO_KEY).then_some(r.key.as_str());
        if !admit.counts(key, r.asn, end) {
            continue;
        }
        let v = bins
            .entry(r.bin)
            .or_default()
            .entry(r.key.as_str())
            .or_default();
        v.online |= r.online;
        v.heartbeats = v.heartbeats.saturating_add(r.heartbeats);
        v.canary.0 = v.canary.0.saturating_add(r.canary_ok);
        v.canary.1 = v.canary.1.saturating_add(r.canary_checks);
        v.measurements = v.measurements.saturating_add(r.measurements);
        for (sum, n) in v.anomalies.iter_mut().zip(r.anomalies) {
            *sum = sum.saturating_add(n);
        }
    }
    bins.into_iter()
        .map(|(bin, voices)| {
            let (mut probes, mut online, mut heartbeats, mut measurements) = (0, 0, 0i64, 0i64);
            let (mut canary, mut canary_votes) = (0.0, 0usize);
            let (mut anomaly, mut anomaly_votes) = ([0.0f64; 4], 0usize);
            for (key, v) in &voices {
                if *key != NO_KEY {
                    probes += 1;
                    online += i64::from(v.online);
                }
                heartbeats = heartbeats.saturating_add(v.heartbeats);
                measurements = measurements.saturating_add(v.measurements);
                let (ok, checks) = v.canary;
                if checks > 0 {
                    canary += ok.min(checks) as f64 / checks as f64;
                    canary_votes += 1;
                }
                if v.measurements > 0 {
                    for (share, k) in anomaly.iter_mut().zip(v.anomalies) {
                        *share += k.min(v.measurements) as f64 / v.measurements as f64;
                    }
                    anomaly_votes += 1;
                }
            }
            let mean = |sum: f64, votes: usize| sum / votes as f64;
            SignalBin {
                start: start_of(bin),
                probes,
                probes_online: online,
                heartbeats,
                canary_success: (canary_votes > 0).then(|| mean(canary, canary_votes)),
                measurements,
                anomaly_ratio: (anomaly_votes > 0).then(|| LayerRatios {
                    dns: mean(anomaly[0], anomaly_votes),
                    tcp: mean(anomaly[1], anomaly_votes),
                    tls: mean(anomaly[2], anomaly_votes),
                    http: mean(anomaly[3], anomaly_votes),
                }),
            }
        })
        .collect()
}

/// The bins of `q`, oldest first, counting probes as the detectors do (`verification`).
pub fn query(
    c: &Connection,
    q: &SignalQuery,
    verification: Verification,
) -> rusqlite::Result<Vec<SignalBin>> {
    let cc = q.cc.to_ascii_uppercase();
    let rows = probe_bins(c, &cc, q.asn, q.from_bin, q.to_bin)?;
    let admit = Admit::load(
        c,
        &cc,
        q.asn,
        q.from_bin.saturating_mul(BIN_SECONDS),
        q.to_bin.saturating_mul(BIN_SECONDS),
        verification,
    )?;
    Ok(aggregate(&rows, &admit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Sqlite, Storage};

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

    fn open(name: &str) -> (std::path::PathBuf, Sqlite) {
        let dir =
            std::env::temp_dir().join(format!("vantage-signals-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        (dir, db)
    }

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

    fn canary(id: &str, key: &str, at: &str, ok: i64, total: i64) -> Row {
        Row {
            accessible: Some(ok.saturating_mul(2) >= total),
            envelope: format!(
                r#"{{"v":1,"measurement":{{"test_keys":{{"ok":{ok},"total":{total}}}}}}}"#
            ),
            ..row(id, key, 1, at, "canary", None)
        }
    }

    fn q(asn: Option<u32>) -> SignalQuery {
        SignalQuery {
            cc: "ir".into(),
            asn,
            from_bin: bin_of("2026-03-01 10:00:00").expect("bin"),
            to_bin: bin_of("2026-03-01 10:10:00").expect("bin"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn late_measurements_heartbeats_and_rescores_land_in_the_bins_they_belong_to() {
        let (dir, db) = open("late");
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
        // One vote per probe: a's half of DNS anomalies, b's and c's whole TLS and TCP ones.
        let r = first.anomaly_ratio.clone().expect("ratios");
        assert!(close(r.dns, 0.5 / 3.0), "{r:?}");
        assert!(close(r.tcp, 1.0 / 3.0) && close(r.tls, 1.0 / 3.0) && r.http == 0.0);
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
        let r = db.signals(&q(None)).expect("signals")[0]
            .anomaly_ratio
            .clone()
            .expect("ratios");
        assert!(close(r.dns, 0.0) && close(r.http, 0.5 / 3.0), "{r:?}");
        assert!(close(r.tcp, 1.0 / 3.0) && close(r.tls, 1.0 / 3.0), "{r:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn blocking_types_count_on_their_layer() {
        assert_eq!(layer_index(Some("\"tcp_ip\"")), Some(1));
        assert_eq!(layer_index(Some("\"http-diff\"")), Some(3));
        assert_eq!(layer_index(Some("false")), None);
        assert_eq!(layer_index(None), None);
    }

    #[test]
    fn one_key_with_a_thousand_canaries_in_a_bin_weighs_one() {
        let (dir, db) = open("flood");
        let wc = "web_connectivity";
        // Key f sends a thousand failed canary rounds and a thousand DNS anomalies in one bin;
        // key h one successful round and one clean measurement.
        let mut rows: Vec<Row> = (0..1000)
            .map(|i| canary(&format!("c{i}"), "f", "2026-03-01 10:01:00", 0, 4))
            .collect();
        rows.extend((0..1000).map(|i| {
            row(
                &format!("w{i}"),
                "f",
                1,
                "2026-03-01 10:02:00",
                wc,
                Some("\"dns\""),
            )
        }));
        rows.push(canary("h1", "h", "2026-03-01 10:03:00", 4, 4));
        rows.push(row("h2", "h", 1, "2026-03-01 10:03:00", wc, Some("false")));
        db.insert(&rows).expect("insert");
        let bins = db.signals(&q(None)).expect("signals");
        assert_eq!(bins.len(), 1, "{bins:?}");
        let b = &bins[0];
        assert_eq!((b.probes, b.measurements), (2, 1001));
        assert_eq!(b.canary_success, Some(0.5), "pooled it would be 4 of 4,004");
        assert_eq!(b.anomaly_ratio.as_ref().map(|r| r.dns), Some(0.5));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn canaries_claiming_i64_max_saturate_instead_of_overflowing() {
        let (dir, db) = open("overflow");
        let max = i64::MAX;
        db.insert(&[
            canary("x1", "x", "2026-03-01 10:01:00", max, max),
            canary("x2", "x", "2026-03-01 10:02:00", max, max),
            canary("x3", "x", "2026-03-01 10:03:00", max, max),
        ])
        .expect("stored without overflow");
        let (ok, checks): (Value, Value) = db
            .with(|c| {
                c.query_row(
                    "SELECT canary_ok, canary_checks FROM signal_probes WHERE probe_key = 'x'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .expect("row");
        assert_eq!(
            (ok, checks),
            (Value::Integer(COUNTER_MAX), Value::Integer(COUNTER_MAX))
        );
        let bins = db.signals(&q(None)).expect("the signals still answer");
        assert_eq!(bins[0].canary_success, Some(1.0));
        // Counts a canary cannot have are not counted at all.
        assert_eq!(
            canary_counts(r#"{"measurement":{"test_keys":{"ok":5,"total":4}}}"#),
            None
        );
        assert_eq!(
            canary_counts(r#"{"measurement":{"test_keys":{"ok":-1,"total":4}}}"#),
            None
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_poisoned_database_still_answers_with_clamped_signals() {
        let (dir, db) = open("poisoned");
        db.insert(&[
            canary("p1", "p", "2026-03-01 10:01:00", 4, 4),
            row(
                "p2",
                "p",
                1,
                "2026-03-01 10:01:00",
                "web_connectivity",
                Some("\"dns\""),
            ),
        ])
        .expect("insert");
        db.heartbeat("p", "IR", 1, "2026-03-01 10:01:30", false)
            .expect("beat");
        // What an overflowed sum leaves (a REAL), a negative count, text, a blob, a huge
        // number, and a connectivity time that is not an integer, written straight in SQL.
        db.with(|c| {
            c.execute(
                "UPDATE signal_probes SET canary_ok = 1.8446744073709552e19,
                 canary_checks = 9.3e18, heartbeats = -5, measurements = 'many',
                 anomalies_dns = x'00ff', anomalies_tls = 9223372036854775807,
                 down = 1e300, first_up = 1.5e9, last_up = 'noon'",
                [],
            )
        })
        .expect("poison");
        let bins = db.signals(&q(None)).expect("the signals still answer");
        assert_eq!(bins.len(), 1);
        let b = &bins[0];
        assert_eq!((b.probes, b.probes_online, b.heartbeats), (1, 1, 0));
        assert_eq!(b.canary_success, Some(1.0), "ok clamped to checks");
        // No measurements readable: no anomaly ratio rather than a division by zero.
        assert_eq!((b.measurements, b.anomaly_ratio.clone()), (0, None));
        // And storing more on top of the poison still works, and stays in range.
        db.insert(&[canary("p3", "p", "2026-03-01 10:02:00", 4, 4)])
            .expect("insert on top");
        db.heartbeat("p", "IR", 1, "2026-03-01 10:02:30", false)
            .expect("beat on top");
        let stored: (Value, Value) = db
            .with(|c| {
                c.query_row(
                    "SELECT canary_ok, canary_checks FROM signal_probes",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .expect("row");
        assert_eq!(
            stored,
            (Value::Integer(COUNTER_MAX), Value::Integer(COUNTER_MAX)),
            "the REALs saturated back into integers"
        );
        assert!(db.signals(&q(None)).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_verified_contact_vouches_for_its_key_in_that_network_for_the_window_before() {
        let mut v = Vouches::default();
        let day = 86_400;
        let t = 1_767_571_200;
        // Key a reached us from inside AS1 on one day, from 10:00 to 12:00.
        v.add("a", 1, t + 10 * 3600, t + 12 * 3600);
        let admit = Admit::Verified {
            vouches: v,
            window: 7 * day,
        };
        // Its later contacts count for a week (a proxied upload, canaries queued offline) ...
        assert!(admit.counts(Some("a"), 1, t + 12 * 3600));
        assert!(admit.counts(Some("a"), 1, t + 3 * day));
        assert!(admit.counts(Some("a"), 1, t + 12 * 3600 + 7 * day));
        assert!(!admit.counts(Some("a"), 1, t + 12 * 3600 + 7 * day + 1));
        // ... but not before it was ever verified, not for another network, not for another
        // key, and never for rows no key signed.
        assert!(!admit.counts(Some("a"), 1, t + 9 * 3600));
        assert!(!admit.counts(Some("a"), 2, t + day));
        assert!(!admit.counts(Some("b"), 1, t + day));
        assert!(!admit.counts(None, 1, t + day));
        assert!(Admit::Everyone.counts(None, 1, t));
    }

    #[test]
    fn with_verification_the_signals_count_only_keys_verified_in_the_network() {
        let (dir, db) = open("verified");
        let db = db.verifying(Verification {
            required: true,
            window_seconds: 7 * 86_400,
        });
        // Real probe r beats from inside AS1 the day before, then uploads through a proxy.
        db.heartbeat("r", "IR", 1, "2026-02-28 10:00:00", true)
            .expect("beat");
        db.heartbeat("r", "IR", 1, "2026-03-01 10:01:00", false)
            .expect("proxied beat");
        db.insert(&[canary("r1", "r", "2026-03-01 10:02:00", 4, 4)])
            .expect("proxied canary");
        // Fake f beats "from" AS1 from elsewhere, and from inside AS2 (its own network): the
        // latter vouches for AS2 only.
        db.heartbeat("f", "IR", 1, "2026-03-01 10:01:10", false)
            .expect("beat");
        db.heartbeat("f", "IR", 2, "2026-03-01 10:01:20", true)
            .expect("beat");
        db.insert(&[canary("f1", "f", "2026-03-01 10:02:00", 0, 4)])
            .expect("fake canary");
        let one = db.signals(&q(Some(1))).expect("signals");
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!((one[0].probes, one[0].heartbeats), (1, 1));
        assert_eq!(one[0].canary_success, Some(1.0));
        let two = db.signals(&q(Some(2))).expect("signals");
        assert_eq!((two[0].probes, two[0].probes_online), (1, 1));
        // Without verification both count in AS1, as before.
        let open = Sqlite::open(&dir.join("agg.db")).expect("open");
        let one = open.signals(&q(Some(1))).expect("signals");
        assert_eq!((one[0].probes, one[0].canary_success), (2, Some(0.5)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
