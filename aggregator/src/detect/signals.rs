//! The signals per network in 5-minute bins (README.md, `GET /api/v1/signals`): probes heard
//! from, heartbeats, canary success, and web_connectivity anomalies by layer, computed from the
//! rows the store keeps per probe key and bin (`store::model::ProbeBin`).
//!
//! A network's signal is read as a vote of its probes: one key counts at most once per bin as
//! heard from or online, and gives at most one vote to the bin's canary success and to each
//! layer's anomaly ratio (its own ratio in that bin), however many submissions it sends. A
//! handful of keys flooding a bin weigh what a handful of probes weigh. Which keys count at all
//! is [`Admit`]'s question: with a geolocation source, only keys with verified contact in the
//! network they claim.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::model::{BIN_SECONDS, NO_KEY, ProbeBin, Verification, Vouches};
use crate::store::{DbError, Storage};

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
        storage: &dyn Storage,
        cc: &str,
        asn: Option<u32>,
        from: i64,
        to: i64,
        v: Verification,
    ) -> Result<Admit, DbError> {
        if !v.required {
            return Ok(Admit::Everyone);
        }
        let window = v.window_seconds.max(0);
        let first_day = from.saturating_sub(window).div_euclid(86_400);
        let last_day = to.div_euclid(86_400);
        let vouches = storage.vouches(cc, asn, first_day, last_day)?;
        Ok(Admit::Verified { vouches, window })
    }
}

/// Country codes that name no country: OONI's `ZZ`, what a probe reports before it knows
/// where it is (df-000-base, `probe_cc`) and what a geolocation source answers for an address
/// it does not know (`ingest::Origin::observed` reads it the same way).
pub const UNKNOWN_COUNTRIES: &[&str] = &["ZZ"];

/// Network numbers that name no network: `AS0`, OONI's unknown ASN (df-000-base,
/// `probe_asn`); RFC 7607 reserves AS 0 so that no route may ever carry it.
pub const UNKNOWN_ASNS: &[u32] = &[0];

/// Whether `cc` names a country (two letters, not one of [`UNKNOWN_COUNTRIES`]).
pub fn known_country(cc: &str) -> bool {
    cc.len() == 2
        && cc.bytes().all(|b| b.is_ascii_alphabetic())
        && !UNKNOWN_COUNTRIES.iter().any(|u| u.eq_ignore_ascii_case(cc))
}

/// Whether (`cc`, `asn`) names a network an event may be about. Contacts and measurements
/// claiming the unknown network are stored and shown in the signals as they came, but no
/// detector forms an entity of them or lets them feed another's: every probe claims the
/// unknown network until it has learnt where it is, so a fleet starting up, or a probe that
/// cannot tell, would otherwise "leave" it together and look like a shutdown of nowhere
/// (`docs/detection.md`, "Which networks an event can be about").
pub fn known_network(cc: &str, asn: u32) -> bool {
    known_country(cc) && !UNKNOWN_ASNS.contains(&asn)
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    storage: &dyn Storage,
    q: &SignalQuery,
    verification: Verification,
) -> Result<Vec<SignalBin>, DbError> {
    let cc = q.cc.to_ascii_uppercase();
    let rows = storage.probe_bins(&cc, q.asn, q.from_bin, q.to_bin)?;
    let admit = Admit::load(
        storage,
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
    use crate::store::model::{COUNTER_MAX, bin_of, canary_counts};
    use crate::store::{Row, Sqlite, Storage};
    use rusqlite::types::Value;

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
            route: crate::store::Route::Upload,
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
        let bins = query(&db, &q(None), Verification::default()).expect("signals");
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
        let network = query(&db, &q(Some(2)), Verification::default()).expect("signals");
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
        let r = query(&db, &q(None), Verification::default()).expect("signals")[0]
            .anomaly_ratio
            .clone()
            .expect("ratios");
        assert!(close(r.dns, 0.0) && close(r.http, 0.5 / 3.0), "{r:?}");
        assert!(close(r.tcp, 1.0 / 3.0) && close(r.tls, 1.0 / 3.0), "{r:?}");
        std::fs::remove_dir_all(&dir).ok();
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
        let bins = query(&db, &q(None), Verification::default()).expect("signals");
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
        let bins = query(&db, &q(None), Verification::default()).expect("the signals still answer");
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
        let bins = query(&db, &q(None), Verification::default()).expect("the signals still answer");
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
        assert!(query(&db, &q(None), Verification::default()).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_unknown_country_and_network_are_no_network() {
        assert!(known_network("IR", 64500));
        assert!(known_network("ir", 1));
        assert!(!known_network("IR", 0), "AS0 of a known country");
        assert!(
            !known_network("ZZ", 64500),
            "a known ASN in the unknown country"
        );
        assert!(!known_network("zz", 0));
        assert!(!known_network("", 64500));
        assert!(!known_network("IRN", 64500));
        assert!(!known_network("1R", 64500));
        assert!(!known_country("ZZ") && known_country("NL"));
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
        let verified = Verification {
            required: true,
            window_seconds: 7 * 86_400,
        };
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
        let one = query(&db, &q(Some(1)), verified).expect("signals");
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!((one[0].probes, one[0].heartbeats), (1, 1));
        assert_eq!(one[0].canary_success, Some(1.0));
        let two = query(&db, &q(Some(2)), verified).expect("signals");
        assert_eq!((two[0].probes, two[0].probes_online), (1, 1));
        // Without verification both count in AS1, as before.
        let one = query(&db, &q(Some(1)), Verification::default()).expect("signals");
        assert_eq!((one[0].probes, one[0].canary_success), (2, Some(0.5)));
        std::fs::remove_dir_all(&dir).ok();
    }
}
