//! The rows of the ClickHouse store as stored and read back: a measurement with what SQL
//! cannot read from it, its envelope, and the reads that copy a store whole (`migrate`).

use serde::{Deserialize, Serialize};

use super::super::model::{canary_counts, parse_time};
use super::super::{DbError, Row};
use super::ClickHouse;
use super::client::quote;

/// One row of `measurements` as inserted and read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredRow {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) probe_key: Option<String>,
    pub(super) probe_cc: String,
    pub(super) probe_asn: u32,
    pub(super) test_name: String,
    pub(super) input: Option<String>,
    pub(super) domain: Option<String>,
    pub(super) measured_at: String,
    pub(super) received_at: i64,
    pub(super) blocking: Option<String>,
    pub(super) accessible: Option<u8>,
    pub(super) confirmed: u8,
    pub(super) rule_set: Option<String>,
    pub(super) verdict: Option<String>,
    pub(super) network_verified: u8,
    pub(super) version: u64,
    pub(super) ts: Option<i64>,
    pub(super) canary_ok: i64,
    pub(super) canary_total: i64,
    pub(super) goodput_kbps: Option<f64>,
    pub(super) below_control: Option<u8>,
    /// `store::Route::name`; rows stored before the column read as its default (schema
    /// migration 5).
    #[serde(default = "upload")]
    pub(super) route: String,
    /// The relaying probe's key, for a relay.
    #[serde(default)]
    pub(super) relayed_by: Option<String>,
}

fn upload() -> String {
    "upload".into()
}

/// The verdict's `goodput.probe_kbps` and `goodput.below_control`, as SQLite's `json_extract`
/// reads them for `rate_samples` (a number, and a boolean or 0/1); anything else is absent.
fn goodput(verdict: Option<&str>) -> (Option<f64>, Option<u8>) {
    let Some(v) = verdict.and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok()) else {
        return (None, None);
    };
    let g = &v["goodput"];
    let below = match &g["below_control"] {
        serde_json::Value::Bool(b) => Some(u8::from(*b)),
        serde_json::Value::Number(n) => n.as_i64().map(|n| u8::from(n != 0)),
        _ => None,
    };
    (g["probe_kbps"].as_f64(), below)
}

impl StoredRow {
    /// The first version of a row received at `received_at`.
    pub(super) fn new(r: &Row, received_at: i64) -> StoredRow {
        let mut stored = StoredRow {
            id: r.id.clone(),
            source: r.source.clone(),
            probe_key: r.probe_key.clone(),
            probe_cc: r.probe_cc.clone(),
            probe_asn: r.probe_asn,
            test_name: r.test_name.clone(),
            input: r.input.clone(),
            domain: r.domain.clone(),
            measured_at: r.measured_at.clone(),
            received_at,
            blocking: r.blocking.clone(),
            accessible: r.accessible.map(u8::from),
            confirmed: u8::from(r.confirmed),
            rule_set: r.rule_set.clone(),
            verdict: r.verdict.clone(),
            network_verified: u8::from(r.network_verified),
            version: 0,
            ts: parse_time(&r.measured_at),
            canary_ok: 0,
            canary_total: 0,
            goodput_kbps: None,
            below_control: None,
            route: r.route.name().into(),
            relayed_by: r.route.relayed_by().map(Into::into),
        };
        if r.test_name == "canary"
            && let Some((ok, total)) = canary_counts(&r.envelope)
        {
            (stored.canary_ok, stored.canary_total) = (ok, total);
        }
        stored.set_goodput();
        stored
    }

    /// The goodput columns of the row's verdict.
    pub(super) fn set_goodput(&mut self) {
        (self.goodput_kbps, self.below_control) = goodput(self.verdict.as_deref());
    }
}

/// The columns of [`StoredRow`], in order, for SELECTs.
pub(super) const STORED_COLUMNS: &str = "id, source, probe_key, probe_cc, probe_asn, test_name, input, \
    domain, measured_at, received_at, blocking, accessible, confirmed, rule_set, verdict, \
    network_verified, version, ts, canary_ok, canary_total, goodput_kbps, below_control, route, \
    relayed_by";

/// One row of `envelopes`.
#[derive(Debug, Serialize)]
pub(super) struct EnvelopeRow<'a> {
    pub(super) id: &'a str,
    pub(super) probe_cc: &'a str,
    pub(super) measured_at: &'a str,
    pub(super) envelope: &'a str,
}

/// What copying a store reads (`vantage-aggregator migrate`).
impl ClickHouse {
    /// The measurements of `ids` that have an envelope, in id order, each its newest version:
    /// the envelopes by id (their primary index), then the rows by their whole sorting key
    /// (country, time, id), which the envelope gives, so neither read scans a table.
    pub fn stored_rows(&self, ids: &[&str]) -> Result<Vec<Row>, DbError> {
        let op = "reading measurements by id";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct E {
            id: String,
            cc: String,
            at: String,
            env: String,
        }
        let list = ids.iter().map(|id| quote(id)).collect::<Vec<_>>().join(",");
        let envelopes: Vec<E> = self.rows(
            op,
            &format!(
                "SELECT id, any(probe_cc) AS cc, any(measured_at) AS at, any(envelope) AS env
                 FROM envelopes WHERE id IN ({list}) GROUP BY id"
            ),
        )?;
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let keys = envelopes
            .iter()
            .map(|e| format!("({},{},{})", quote(&e.cc), quote(&e.at), quote(&e.id)))
            .collect::<Vec<_>>()
            .join(",");
        let mut newest: std::collections::HashMap<String, StoredRow> =
            std::collections::HashMap::new();
        for row in self.rows::<StoredRow>(
            op,
            &format!(
                "SELECT {STORED_COLUMNS} FROM measurements FINAL
                 WHERE (probe_cc, measured_at, id) IN ({keys})"
            ),
        )? {
            match newest.get(&row.id) {
                Some(kept) if kept.version >= row.version => {}
                _ => {
                    newest.insert(row.id.clone(), row);
                }
            }
        }
        let mut rows: Vec<Row> = envelopes
            .into_iter()
            .filter_map(|e| {
                let m = newest.remove(&e.id)?;
                Some(Row {
                    id: m.id,
                    source: m.source,
                    probe_key: m.probe_key,
                    probe_cc: m.probe_cc,
                    probe_asn: m.probe_asn,
                    test_name: m.test_name,
                    input: m.input,
                    domain: m.domain,
                    measured_at: m.measured_at,
                    blocking: m.blocking,
                    accessible: m.accessible.map(|a| a != 0),
                    confirmed: m.confirmed != 0,
                    rule_set: m.rule_set,
                    verdict: m.verdict,
                    envelope: e.env,
                    network_verified: m.network_verified != 0,
                    route: crate::store::Route::from_columns(&m.route, m.relayed_by),
                })
            })
            .collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::model::BIN_SECONDS;
    use super::super::test_support::*;
    use super::super::*;

    /// What `migrate` reads: every measurement once in id order across pages (copies two
    /// racing nodes both stored included), each with its envelope and newest verdict, the same
    /// rows when asked by id, and every heartbeat once in (key, time) order.
    #[test]
    fn a_store_is_read_whole_a_page_at_a_time() {
        let server = server();
        let db = ClickHouse::open(&server.url("pages")).expect("open");
        let rows: Vec<Row> = (0..7)
            .map(|i| {
                row(
                    &format!("m{i}"),
                    ["IR", "IT"][i % 2],
                    &format!("2026-01-0{} 10:00:00", i + 1),
                )
            })
            .collect();
        db.insert(&rows).expect("insert");
        // A racing copy of m3, and a newer verdict for m5.
        db.store_new(&[&rows[3]]).expect("racing copy");
        let mut rescored = rows[5].clone();
        rescored.blocking = Some("\"dns\"".into());
        rescored.verdict = Some("{\"again\":1}".into());
        db.update_verdict(&rescored).expect("rescore");
        let mut want = rows.clone();
        want[5] = rescored.clone();
        let mut got: Vec<Row> = Vec::new();
        loop {
            let page = db
                .rows_page(got.last().map(|r| r.id.as_str()), 3)
                .expect("page");
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            got.extend(page);
        }
        assert_eq!(got, want);
        assert_eq!(db.measurement_count().expect("count"), 7);
        assert_eq!(
            db.stored_rows(&["m5", "nothing", "m3", "m5"])
                .expect("by id"),
            vec![want[3].clone(), rescored]
        );
        assert!(db.stored_rows(&[]).expect("none").is_empty());

        for (key, at) in [("k2", "2026-01-01 10:00:00"), ("k1", "2026-01-02 10:00:00")] {
            assert!(db.heartbeat(key, "IR", 7, at, key == "k1").expect("beat"));
        }
        // A copy of one, as two racing nodes may leave.
        server
            .query(
                "INSERT INTO pages.heartbeats (probe_key, probe_cc, probe_asn, sent_at,
                 received_at, network_verified) VALUES ('k2', 'IR', 7, '2026-01-01 10:00:00', 0, 0)",
            )
            .expect("racing copy");
        let first = db.heartbeats_page(None, 1).expect("page");
        let rest = db
            .heartbeats_page(Some(("k1", "2026-01-02 10:00:00")), 10)
            .expect("page");
        let beat = |key: &str, at: &str, verified| StoredHeartbeat {
            key: key.into(),
            cc: "IR".into(),
            asn: 7,
            sent_at: at.into(),
            verified,
            received_at: None,
        };
        // Each with when it first reached a node: k1 now, k2 at the racing copy's 0.
        assert!(first[0].received_at.is_some_and(|t| t > 0), "{first:?}");
        assert_eq!(rest[0].received_at, Some(0), "{rest:?}");
        let unstamped = |page: Vec<StoredHeartbeat>| -> Vec<StoredHeartbeat> {
            page.into_iter()
                .map(|b| StoredHeartbeat {
                    received_at: None,
                    ..b
                })
                .collect()
        };
        assert_eq!(unstamped(first), [beat("k1", "2026-01-02 10:00:00", true)]);
        assert_eq!(unstamped(rest), [beat("k2", "2026-01-01 10:00:00", false)]);
        // A page recorded at once: the ones already there (and a repeat) are skipped, and
        // what is new counts in the signals as one recorded alone does.
        let page = [
            beat("k1", "2026-01-02 10:00:00", true),
            beat("k3", "2026-01-03 10:00:00", true),
            beat("k3", "2026-01-03 10:00:00", true),
        ];
        assert_eq!(db.record_heartbeats(&page).expect("page"), 1);
        assert_eq!(db.record_heartbeats(&page).expect("again"), 0);
        assert_eq!(db.heartbeat_count("IR").expect("count"), 3);
        let day = bin_of_test("2026-01-03 10:00:00") * BIN_SECONDS / 86_400;
        assert!(db.vouches("IR", None, day, day).expect("vouches").vouch(
            "k3",
            7,
            parse_time("2026-01-03 10:00:00").expect("t"),
            0
        ));
    }
}
