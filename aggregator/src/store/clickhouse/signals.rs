//! What the signals and the detectors read from the ClickHouse store: grouped at read time
//! from each measurement's newest version and each heartbeat once (see the store's docs).

use serde::{Deserialize, Serialize};

use super::super::DbError;
use super::super::model::{BIN_SECONDS, COUNTER_MAX, format_time};
use super::ClickHouse;
use super::client::quote;

/// The newest version of each measurement of one country: the `FINAL` subquery every signal
/// read groups from. It selects the whole sorting key and the version (see [`super::search::sorted_sql`]);
/// `extra` is a filter on what a measurement's id fixes (never on a verdict, which goes outside
/// it: see the module's docs).
pub(super) fn newest_measurements(cc: &str, extra: &str) -> String {
    format!(
        "(SELECT id, probe_key, probe_cc, probe_asn, test_name, domain, measured_at, accessible,
             blocking, verdict, network_verified, ts, canary_ok, canary_total, goodput_kbps,
             below_control, version
         FROM measurements FINAL WHERE probe_cc = {}{extra})",
        quote(cc)
    )
}

/// The newest version of each of a country's `test_name` measurements of a domain at a known
/// time, from `from` on: what the throttling and rate readers of the detectors group.
pub(super) fn domain_measurements(cc: &str, test_name: &str, from: i64) -> String {
    domain_measurements_of(cc, &[test_name], from)
}

/// [`domain_measurements`] of several test names.
pub(super) fn domain_measurements_of(cc: &str, test_names: &[&str], from: i64) -> String {
    let names: Vec<String> = test_names.iter().map(|t| quote(t)).collect();
    newest_measurements(
        cc,
        &format!(
            " AND measured_at >= {} AND test_name IN ({})
             AND isNotNull(domain) AND isNotNull(ts)",
            quote(&format_time(from)),
            names.join(", ")
        ),
    )
}

/// Each heartbeat of one country once (a key and `sent_at`; two nodes racing may both have
/// stored it), as SQLite's primary key keeps it.
pub(super) fn unique_heartbeats(cc: &str) -> String {
    format!(
        "(SELECT probe_key, sent_at, any(probe_asn) AS probe_asn, any(sent_ts) AS sent_ts,
             any(network_verified) AS network_verified
         FROM heartbeats WHERE probe_cc = {} GROUP BY probe_key, sent_at)",
        quote(cc)
    )
}

/// The bin of epoch seconds `expr` (a `Nullable(Int64)` known not to be NULL), as
/// `model::bin_of` makes it: `div_euclid`, exact below 2^53 seconds.
pub(super) fn bin_sql(expr: &str, width: i64) -> String {
    format!("toInt64(floor(ifNull({expr}, 0) / {width}))")
}

/// One probe key's row of one bin, grouped from the measurements and heartbeats as SQLite's
/// `signal_probes` adds them up one at a time (`store/sqlite/signals.rs`).
#[derive(Debug, Deserialize)]
pub(super) struct BinRow {
    pub(super) bin: i64,
    pub(super) asn: u32,
    pub(super) key: String,
    pub(super) first_up: Option<i64>,
    pub(super) last_up: Option<i64>,
    pub(super) down: i64,
    pub(super) hb: i64,
    pub(super) cok: i64,
    pub(super) cchk: i64,
    pub(super) m: i64,
    pub(super) a0: i64,
    pub(super) a1: i64,
    pub(super) a2: i64,
    pub(super) a3: i64,
}

/// One version of one stored event.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EventRow {
    pub(super) id: String,
    pub(super) cc: String,
    pub(super) kind: String,
    pub(super) start: i64,
    pub(super) end_at: Option<i64>,
    pub(super) body: String,
    pub(super) deleted: u8,
    pub(super) version: u64,
}

impl ClickHouse {
    /// Every probe key's row of the bins of `cc` (one network, or all) whose start is in
    /// `[from, to)` (epoch seconds).
    ///
    /// # Signals
    /// SQLite adds each stored measurement and heartbeat to its key's row of its bin in the
    /// transaction that stores it; ClickHouse has no transactions, so the same rows are grouped
    /// here from the measurements (each id once, its newest verdict) and the heartbeats (each
    /// key and `sent_at` once), adding what `signals::record_row` and `record_heartbeat` add:
    /// every submission with a readable time makes its key's row exist (a keyless one the
    /// [`NO_KEY`](super::super::model::NO_KEY) row); a web_connectivity measurement counts, with its verdict's layer; a
    /// keyed canary whose targets mostly answered (`accessible`) shows the key up, one whose
    /// targets did not counts down; a canary's counts; a heartbeat shows the key up. Counters
    /// saturate at [`COUNTER_MAX`]. The constants of a `UNION ALL` branch are `materialize`d:
    /// 18.16 refuses a column constant in one branch and not in the other.
    pub(super) fn bin_rows(
        &self,
        cc: &str,
        asn: Option<u32>,
        from: i64,
        to: i64,
    ) -> Result<Vec<BinRow>, DbError> {
        let asn_filter = asn.map_or(String::new(), |a| format!(" AND probe_asn = {a}"));
        let layer = |values: &str| {
            format!(
                "toInt64(test_name = 'web_connectivity' AND ifNull(blocking, '') IN ({values}))"
            )
        };
        let sql = format!(
            "SELECT bin, asn, key, min(up) AS first_up, max(up) AS last_up,
                 least(sum(dn), {max}) AS down, least(sum(hb), {max}) AS hb,
                 least(sum(cok), {max}) AS cok, least(sum(cchk), {max}) AS cchk,
                 least(sum(m), {max}) AS m, least(sum(a0), {max}) AS a0,
                 least(sum(a1), {max}) AS a1, least(sum(a2), {max}) AS a2,
                 least(sum(a3), {max}) AS a3
             FROM (
                 SELECT {mbin} AS bin, probe_asn AS asn, ifNull(probe_key, '') AS key,
                     if(test_name = 'canary' AND isNotNull(probe_key)
                         AND ifNull(accessible, 2) = 1, ts, CAST(NULL AS Nullable(Int64))) AS up,
                     toInt64(test_name = 'canary' AND isNotNull(probe_key)
                         AND ifNull(accessible, 2) = 0) AS dn,
                     materialize(toInt64(0)) AS hb, toInt64(canary_ok) AS cok, toInt64(canary_total) AS cchk,
                     toInt64(test_name = 'web_connectivity') AS m,
                     {l0} AS a0, {l1} AS a1, {l2} AS a2, {l3} AS a3
                 FROM {meas} WHERE isNotNull(ts) AND ts >= {from} AND ts < {to}{asn_filter}
                 UNION ALL
                 SELECT {hbin} AS bin, probe_asn AS asn, probe_key AS key,
                     sent_ts AS up, materialize(toInt64(0)) AS dn, materialize(toInt64(1)) AS hb, materialize(toInt64(0)) AS cok,
                     materialize(toInt64(0)) AS cchk, materialize(toInt64(0)) AS m, materialize(toInt64(0)) AS a0, materialize(toInt64(0)) AS a1,
                     materialize(toInt64(0)) AS a2, materialize(toInt64(0)) AS a3
                 FROM {hbs} WHERE isNotNull(sent_ts) AND sent_ts >= {from} AND sent_ts < {to}
                     {asn_filter}
             ) GROUP BY bin, asn, key ORDER BY bin, asn, key",
            max = COUNTER_MAX,
            mbin = bin_sql("ts", BIN_SECONDS),
            hbin = bin_sql("sent_ts", BIN_SECONDS),
            l0 = layer("'\"dns\"'"),
            l1 = layer("'\"tcp_ip\"'"),
            l2 = layer("'\"tls\"'"),
            l3 = layer("'\"http-failure\"', '\"http-diff\"'"),
            meas = newest_measurements(cc, ""),
            hbs = unique_heartbeats(cc),
        );
        self.rows("reading the signals' bins", &sql)
    }

    /// The epoch seconds where bin `bin` starts, saturating: a bound of "every bin" stays one.
    pub(super) fn bin_start(bin: i64) -> i64 {
        bin.saturating_mul(BIN_SECONDS)
    }

    /// The live (newest, not deleted) events of `cc` (or all), each once, filtered by `filter`
    /// (on the newest version's columns), in `start`, `id` order.
    pub(super) fn live_events(
        &self,
        cc: Option<&str>,
        filter: &str,
    ) -> Result<Vec<EventRow>, DbError> {
        let inner = cc.map_or(String::new(), |cc| format!(" WHERE cc = {}", quote(cc)));
        self.rows(
            "reading events",
            &format!(
                "SELECT id, cc, kind, start, end_at, body, deleted, version
                 FROM (SELECT id, cc, kind, start, end_at, body, deleted, version
                       FROM events FINAL{inner})
                 WHERE deleted = 0{filter} ORDER BY start, id"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    /// A measurement of `test` by `key` (or an import) for the comparison with SQLite.
    #[allow(clippy::too_many_arguments)]
    fn measured(
        id: &str,
        key: Option<&str>,
        asn: u32,
        test: &str,
        at: &str,
        blocking: Option<&str>,
        accessible: Option<bool>,
        verdict: Option<&str>,
        envelope: &str,
        verified: bool,
    ) -> Row {
        Row {
            id: id.into(),
            source: if key.is_some() { "vantage" } else { "ooni" }.into(),
            probe_key: key.map(Into::into),
            probe_cc: "IR".into(),
            probe_asn: asn,
            test_name: test.into(),
            input: Some(format!("https://{id}.example/")),
            domain: (test != "canary").then(|| format!("{id}.example")),
            measured_at: at.into(),
            blocking: blocking.map(Into::into),
            accessible,
            confirmed: false,
            rule_set: Some("1".into()),
            verdict: verdict.map(Into::into),
            envelope: envelope.into(),
            network_verified: verified,
            route: crate::store::Route::Upload,
        }
    }

    fn event(id: &str, kind: Kind, asn: Option<&str>, start: &str, end: Option<&str>) -> Event {
        Event {
            id: id.into(),
            entity: crate::store::model::Entity {
                cc: "IR".into(),
                asn: asn.map(Into::into),
                asns: Vec::new(),
            },
            kind,
            scope: if asn.is_some() {
                Scope::Network
            } else {
                Scope::Full
            },
            layer: None,
            category: None,
            targets: vec![format!("{id}.example")],
            start: start.into(),
            end: end.map(Into::into),
            status: if end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected: false,
            confidence: 0.9,
            probes: 3,
            evidence: vec![format!("m-{id}")],
            rate_kbps: None,
        }
    }

    fn sorted<T: Clone, K: Ord>(v: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
        let mut v = v.to_vec();
        v.sort_by_key(|x| key(x));
        v
    }

    /// The signals and the detectors' inputs grouped at read time from ClickHouse's rows answer
    /// what SQLite's tables, added up at insert, answer for the same rows: measurements of
    /// every kind (keyed and imported, a time that does not read, a rescored verdict, a copy
    /// stored twice as two racing nodes would), heartbeats (verified or not, one repeated), and
    /// events replaced twice.
    #[test]
    fn the_signals_and_the_detectors_inputs_answer_as_sqlite_does() {
        let server = server();
        let ch = ClickHouse::open(&server.url("same")).expect("open clickhouse");
        let dir = std::env::temp_dir().join(format!("vantage-ch-same-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let lite = crate::store::Sqlite::open(&dir.join("agg.db")).expect("open sqlite");
        let stores: [&dyn Storage; 2] = [&lite, &ch];

        let canary = |ok: i64, total: i64| {
            format!("{{\"measurement\":{{\"test_keys\":{{\"ok\":{ok},\"total\":{total}}}}}}}")
        };
        let fast = Some("{\"goodput\":{\"probe_kbps\":812.5,\"below_control\":false}}");
        let slow = Some("{\"goodput\":{\"probe_kbps\":40,\"below_control\":true}}");
        let no_control = Some("{\"goodput\":{\"probe_kbps\":99.0}}");
        let throttled = Some("{\"ceiling_kbps\":128.0}");
        let rows = vec![
            measured(
                "w1",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-03-01 10:00:10",
                Some("\"dns\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "w2",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-03-01 10:01:00",
                Some("\"tcp_ip\""),
                Some(false),
                slow,
                "{}",
                true,
            ),
            measured(
                "w3",
                Some("k2"),
                3269,
                "web_connectivity",
                "2026-03-01 10:02:00",
                Some("\"tls\""),
                Some(false),
                None,
                "{}",
                false,
            ),
            measured(
                "w4",
                Some("k2"),
                3269,
                "web_connectivity",
                "2026-03-01 10:07:00",
                Some("\"http-diff\""),
                Some(false),
                no_control,
                "{}",
                false,
            ),
            measured(
                "w5",
                Some("k2"),
                44244,
                "web_connectivity",
                "2026-03-01 10:08:00",
                Some("false"),
                Some(true),
                fast,
                "{}",
                true,
            ),
            measured(
                "w6",
                None,
                44244,
                "web_connectivity",
                "2026-03-01 10:09:00",
                None,
                None,
                None,
                "{}",
                false,
            ),
            measured(
                "w7",
                Some("k1"),
                3269,
                "web_connectivity",
                "not a time",
                Some("\"dns\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "w8",
                Some("k1"),
                3269,
                "web_connectivity",
                "2026-02-28 23:59:59",
                Some("\"http-failure\""),
                Some(false),
                fast,
                "{}",
                true,
            ),
            measured(
                "c1",
                Some("k1"),
                3269,
                "canary",
                "2026-03-01 10:03:00",
                Some("false"),
                Some(true),
                None,
                &canary(5, 5),
                true,
            ),
            measured(
                "c2",
                Some("k1"),
                3269,
                "canary",
                "2026-03-01 10:20:00",
                Some("\"canary\""),
                Some(false),
                None,
                &canary(0, 5),
                false,
            ),
            measured(
                "c3",
                Some("k2"),
                3269,
                "canary",
                "2026-03-01 10:21:00",
                Some("\"canary\""),
                Some(false),
                None,
                &canary(1, 5),
                true,
            ),
            measured(
                "c4",
                None,
                3269,
                "canary",
                "2026-03-01 10:22:00",
                Some("false"),
                Some(true),
                None,
                &canary(4, 5),
                false,
            ),
            measured(
                "c5",
                Some("k3"),
                3269,
                "canary",
                "2026-03-01 10:23:00",
                None,
                None,
                None,
                "not json",
                true,
            ),
            measured(
                "t1",
                Some("k1"),
                3269,
                "throttling",
                "2026-03-01 10:04:00",
                Some("\"throttling\""),
                Some(false),
                throttled,
                "{}",
                true,
            ),
            measured(
                "t2",
                Some("k3"),
                44244,
                "throttling",
                "2026-03-01 10:30:00",
                Some("false"),
                Some(true),
                None,
                "{}",
                false,
            ),
        ];
        let beats = [
            ("k1", 3269, "2026-03-01 10:00:30", true),
            ("k1", 3269, "2026-03-01 10:04:59", false),
            ("k1", 3269, "2026-03-01 10:04:59", false),
            ("k2", 3269, "2026-03-01 10:06:00", true),
            ("k3", 44244, "2026-03-01 10:31:00", true),
            ("k3", 44244, "2026-03-02 09:00:00", true),
            ("k4", 3269, "garbage", true),
        ];
        for db in stores {
            let added = db.insert(&rows).expect("insert");
            assert!(added.iter().all(|a| *a));
            for (key, asn, at, verified) in beats {
                db.heartbeat(key, "IR", asn, at, verified)
                    .expect("heartbeat");
            }
            let mut rescored = rows[0].clone();
            rescored.blocking = Some("\"tls\"".into());
            rescored.verdict = slow.map(Into::into);
            db.update_verdict(&rescored).expect("rescore");
        }
        // Two nodes that both found a measurement and a heartbeat new stored them twice.
        let first: Vec<&Row> = rows.iter().take(3).collect();
        ch.store_new(&first).expect("a racing node's copy");
        ch.execute(
            "a racing node's heartbeat",
            "INSERT INTO heartbeats (probe_key, probe_cc, probe_asn, sent_at, received_at,
             network_verified, sent_ts) VALUES ('k2', 'IR', 3269, '2026-03-01 10:06:00', 0, 1, 1772359560)",
        )
        .expect("copy");

        let by_bin = |b: &ProbeBin| (b.bin, b.asn, b.key.clone());
        let answers = |db: &dyn Storage| {
            (
                sorted(
                    &db.probe_bins("IR", None, 0, i64::MAX).expect("bins"),
                    by_bin,
                ),
                sorted(
                    &db.probe_bins("IR", Some(3269), 0, i64::MAX).expect("bins"),
                    by_bin,
                ),
                sorted(
                    &db.probe_bins(
                        "IR",
                        None,
                        bin_of_test("2026-03-01 10:05:00"),
                        bin_of_test("2026-03-01 10:25:00"),
                    )
                    .expect("bins"),
                    by_bin,
                ),
                db.probe_bins("IT", None, 0, i64::MAX).expect("bins"),
                db.contacts("IR", 3269, 0).expect("contacts"),
                db.contacts("IR", 44244, bin_of_test("2026-03-01 10:20:00"))
                    .expect("contacts"),
            )
        };
        let (l, c) = (answers(&lite), answers(&ch));
        assert!(
            !l.0.is_empty() && !l.4.is_empty(),
            "the test has data: {l:?}"
        );
        assert_eq!(c, l);
        // What the counters hold, not only that they agree.
        let k1 =
            l.0.iter()
                .find(|b| b.key == "k1" && b.bin == bin_of_test("2026-03-01 10:00:00"))
                .expect("k1's bin");
        assert_eq!(
            (
                k1.online,
                k1.heartbeats,
                k1.canary_ok,
                k1.canary_checks,
                k1.measurements,
                k1.anomalies
            ),
            (true, 2, 5, 5, 2, [0, 1, 1, 0]),
            "w1 rescored from dns to tls: {k1:?}"
        );

        let verdicts = |db: &dyn Storage| {
            let from = parse_time("2026-03-01 00:00:00").expect("time");
            (
                sorted(&db.web_verdicts("IR", from).expect("web"), |v| v.id.clone()),
                sorted(
                    &db.throttling_verdicts("IR", from).expect("throttling"),
                    |v| v.id.clone(),
                ),
                sorted(&db.rate_samples("IR", 0).expect("rates"), |v| v.id.clone()),
                sorted(
                    &db.failed_canaries("IR", from, from + 86_400)
                        .expect("canaries"),
                    |v| v.clone(),
                ),
                db.failed_canaries("IR", from, parse_time("2026-03-01 10:20:30").expect("t"))
                    .expect("canaries"),
                db.active_countries(bin_of_test("2026-03-01 10:30:00"))
                    .expect("active"),
                sorted(&db.recent_networks("IR", 0).expect("networks"), |a| *a),
                db.countries().expect("countries"),
            )
        };
        let (l, c) = (verdicts(&lite), verdicts(&ch));
        assert_eq!(l.0.len(), 6, "w1..w6 with a time since the 1st: {:?}", l.0);
        assert_eq!(
            l.2.iter().filter(|r| r.below_control == Some(true)).count(),
            2
        );
        assert_eq!(l.4, vec![("c2".to_string(), Some("k1".to_string()))]);
        assert_eq!(c, l);

        let grid = ["k1", "k2", "k3", "k4"];
        for key in grid {
            for asn in [3269, 44244] {
                for at in [
                    "2026-03-01 10:00:00",
                    "2026-03-01 10:10:00",
                    "2026-03-02 12:00:00",
                ] {
                    let at = parse_time(at).expect("t");
                    for window in [0, 600, 86_400] {
                        let day = at.div_euclid(86_400);
                        let ask = |db: &dyn Storage| {
                            db.vouches("IR", None, day - 1, day)
                                .expect("vouches")
                                .vouch(key, asn, at, window)
                        };
                        assert_eq!(
                            ask(&ch),
                            ask(&lite),
                            "{key} AS{asn} at {at} within {window}"
                        );
                    }
                }
            }
        }
        let one = |db: &dyn Storage| db.vouches("IR", Some(44244), 0, 30_000).expect("vouches");
        assert!(one(&lite).vouch(
            "k3",
            44244,
            parse_time("2026-03-02 09:00:00").expect("t"),
            0
        ));
        assert!(one(&ch).vouch(
            "k3",
            44244,
            parse_time("2026-03-02 09:00:00").expect("t"),
            0
        ));
        assert!(!one(&ch).vouch("k1", 3269, parse_time("2026-03-01 10:00:30").expect("t"), 0));

        // Events: a first pass, then a second that replaces those from 10:00 on.
        let old = event(
            "e-old",
            Kind::Shutdown,
            None,
            "2026-02-27 08:00:00",
            Some("2026-02-27 09:00:00"),
        );
        let a = event(
            "e-a",
            Kind::Shutdown,
            Some("AS3269"),
            "2026-03-01 10:20:00",
            None,
        );
        let b = event(
            "e-b",
            Kind::Blocking,
            Some("AS44244"),
            "2026-03-01 10:00:00",
            Some("2026-03-01 11:00:00"),
        );
        let a2 = event(
            "e-a",
            Kind::Shutdown,
            Some("AS3269"),
            "2026-03-01 10:20:00",
            Some("2026-03-01 10:40:00"),
        );
        let c2 = event(
            "e-c",
            Kind::Shutdown,
            Some("AS44244"),
            "2026-03-01 10:30:00",
            None,
        );
        let ask = |db: &dyn Storage| {
            let all = TimelineQuery {
                cc: Some("ir".into()),
                since: 0,
                until: i64::MAX,
                ..TimelineQuery::default()
            };
            (
                db.timeline(&all).expect("timeline"),
                db.timeline(&TimelineQuery {
                    asn: Some(44244),
                    ..all.clone()
                })
                .expect("timeline"),
                db.timeline(&TimelineQuery {
                    kind: Some(Kind::Blocking),
                    ..all.clone()
                })
                .expect("timeline"),
                db.timeline(&TimelineQuery {
                    since: parse_time("2026-03-01 10:50:00").expect("t"),
                    ..all.clone()
                })
                .expect("timeline"),
                db.events_since(
                    "IR",
                    parse_time("2026-03-01 10:45:00").expect("t"),
                    &[Kind::Blocking, Kind::Shutdown],
                )
                .expect("since"),
                db.countries().expect("countries"),
            )
        };
        let mut first_pass = Vec::new();
        for db in stores {
            db.replace_events(
                "IR",
                0,
                &[Kind::Shutdown, Kind::Blocking],
                &[old.clone(), a.clone(), b.clone()],
            )
            .expect("first pass");
            first_pass.push(ask(db));
        }
        assert_eq!(first_pass[0].0, vec![old.clone(), b.clone(), a.clone()]);
        assert_eq!(first_pass[1], first_pass[0]);
        let mut second_pass = Vec::new();
        for db in stores {
            let from = parse_time("2026-03-01 10:00:00").expect("t");
            db.replace_events("IR", from, &[Kind::Shutdown], &[a2.clone(), c2.clone()])
                .expect("second pass");
            second_pass.push(ask(db));
        }
        // The shutdowns from 10:00 are replaced; the old one and the blocking event stay.
        assert_eq!(second_pass[0].0, vec![old, b.clone(), a2, c2.clone()]);
        assert_eq!(second_pass[0].4, vec![b, c2]);
        assert_eq!(second_pass[1], second_pass[0]);
        // Replacing with nothing empties the window.
        for db in stores {
            db.replace_events("IR", 0, &[Kind::Shutdown, Kind::Blocking], &[])
                .expect("third pass");
        }
        assert_eq!(ask(&ch), ask(&lite));
        assert!(ask(&ch).0.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
