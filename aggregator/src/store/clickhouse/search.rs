//! The researcher search (`GET /api/v1/measurements`) on ClickHouse: a page of rows in time
//! order (`measured_at`, then id) after a cursor, each measurement once with its newest
//! verdict, read without reading the whole range.
//!
//! # Why not one `ORDER BY ... LIMIT`
//! That is the plain query ([`sorted_sql`]), and on 18.16 it reads and sorts every row the
//! filters leave before it can answer: 18.16 has no `optimize_read_in_order`, so a page of
//! 100 of a country's rows costs as much as the country. Under a steady upload that is
//! seconds (BENCHMARKS.md, "SQLite and ClickHouse side by side").
//!
//! # What is read instead
//! `FINAL` merges a table's parts in its sorting-key order as one stream (one thread: the
//! `max_threads=1` of [`PROBE_SETTINGS`]), and a `LIMIT` over a stream stops reading it. When
//! the sorting key starts with a column the search fixes, the stream is already in search
//! order: `measurements` is ordered by `(probe_cc, measured_at, id)`, and the view
//! `measurements_by_domain` (migration 2) by `(domain_key, measured_at, id)`. So a search by
//! country or by domain runs in two steps ([`Plan::Ordered`]):
//!
//! 1. The probe ([`probe_sql`]): the key and the verdict of the first `limit` rows of the
//!    stream that pass the filters: the last of them is the page's bound `K`.
//! 2. The page ([`sorted_sql`] with `(measured_at, id) <= K`): the plain query, which the
//!    primary key now limits to the rows between the cursor and `K`.
//!
//! The answer never depends on the order step 1 happened to read in: the probe found `limit`
//! rows at or before `K` that pass the filters, so the first `limit` of them all are at or
//! before `K`, and step 2 sorts them. Step 1's order only decides how much step 2 reads. A
//! search that fixes neither country nor domain, or one through a `Distributed` table (whose
//! shards' streams interleave), is the plain query ([`Plan::Sorted`]).

use serde::Deserialize;

use super::super::{DbError, Found, Query};
use super::ClickHouse;
use super::client::{hex, quote, unhex};

/// Settings of the probe: one stream in key order, read in small blocks so that `LIMIT`
/// stops after a few of them (the default block is 65,536 rows of each part).
const PROBE_SETTINGS: &str = "&max_threads=1&max_block_size=1024";

/// Settings of the page: a few granules, which one thread reads without the cost of starting
/// others.
const PAGE_SETTINGS: &str = "&max_threads=1";

/// The view that orders the search's columns by domain. `domain_key` is `domain` with NULL as
/// the empty string: 18.16 refuses a Nullable column in a sorting key. Not partitioned by
/// month as `measurements` is: a domain's rows span every month, and a search reads a granule
/// of every part it merges, so the fewer, larger parts of one partition serve it best (the
/// rows are small: the envelopes stay in `envelopes`).
pub(super) const BY_DOMAIN_VIEW: &str =
    "CREATE MATERIALIZED VIEW IF NOT EXISTS measurements_by_domain
        ENGINE = ReplacingMergeTree(version)
        ORDER BY (domain_key, measured_at, id)
        SETTINGS index_granularity = 1024
        POPULATE
        AS SELECT ifNull(domain, '') AS domain_key, id, source, probe_cc, probe_asn, test_name,
            input, domain, measured_at, blocking, accessible, confirmed, rule_set, version
        FROM measurements";

/// The columns of a search answer, in every table a search reads.
const COLUMNS: &str = "id, source, probe_cc, probe_asn, test_name, input, measured_at, blocking,
    accessible, confirmed, rule_set";

/// A table a search reads, and the column its sorting key starts with (then `measured_at`,
/// `id`), which the search must select for 18.16's `FINAL` through a `Distributed` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Table {
    name: &'static str,
    lead: &'static str,
}

impl Table {
    /// `measurements`, ordered by country.
    pub(super) const BY_COUNTRY: Table = Table {
        name: "measurements",
        lead: "probe_cc",
    };
    /// The view ordered by domain.
    const BY_DOMAIN: Table = Table {
        name: "measurements_by_domain",
        lead: "domain_key",
    };

    /// A `Distributed` table `name` over the shards' `measurements`.
    #[cfg(test)]
    pub(super) const fn distributed(name: &'static str) -> Table {
        Table {
            name,
            lead: "probe_cc",
        }
    }
}

/// How a search is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Probe, then the page between the cursor and the probe's bound, on a table whose
    /// sorting key is a column the search fixes and then (`measured_at`, `id`).
    Ordered(Table),
    /// One `ORDER BY ... LIMIT` over everything the filters leave.
    Sorted,
}

impl Plan {
    fn of(q: &Query) -> Plan {
        if q.domain.is_some() {
            Plan::Ordered(Table::BY_DOMAIN)
        } else if q.cc.is_some() {
            Plan::Ordered(Table::BY_COUNTRY)
        } else {
            Plan::Sorted
        }
    }
}

/// One row of a search answer.
#[derive(Debug, Deserialize)]
pub(super) struct SearchRow {
    pub(super) id: String,
    source: String,
    probe_cc: String,
    probe_asn: u32,
    test_name: String,
    input: Option<String>,
    pub(super) measured_at: String,
    blocking: Option<String>,
    accessible: Option<u8>,
    confirmed: u8,
    rule_set: Option<String>,
}

/// What the probe reads of a row: its place in the order.
#[derive(Debug, Deserialize)]
struct Key {
    measured_at: String,
    id: String,
}

impl ClickHouse {
    /// A page of the search `q`; see the module's docs for how it is read.
    pub(super) fn search(&self, q: &Query) -> Result<Vec<Found>, DbError> {
        let rows: Vec<SearchRow> = match Plan::of(q) {
            Plan::Sorted => self.rows(
                "searching measurements",
                &sorted_sql(q, Table::BY_COUNTRY, None)?,
            )?,
            Plan::Ordered(table) => {
                let keys: Vec<Key> = self.rows_with(
                    "searching measurements (finding the page)",
                    &probe_sql(q, table)?,
                    PROBE_SETTINGS,
                )?;
                let Some(bound) = keys
                    .iter()
                    .map(|k| (k.measured_at.as_str(), k.id.as_str()))
                    .max()
                else {
                    return Ok(Vec::new());
                };
                self.rows_with(
                    "searching measurements (reading the page)",
                    &sorted_sql(q, table, Some(bound))?,
                    PAGE_SETTINGS,
                )?
            }
        };
        let mut found: Vec<Found> = rows.into_iter().map(found).collect();
        self.add_routes(&mut found)?;
        Ok(found)
    }

    /// Each row's route of arrival (schema migration 5), which the by-domain view does not
    /// carry: one read of the page's rows by their whole sorting key, as `stored_rows` reads.
    fn add_routes(&self, found: &mut [Found]) -> Result<(), DbError> {
        use super::client::quote;
        if found.is_empty() {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct R {
            id: String,
            route: String,
            relayed_by: Option<String>,
        }
        let keys = found
            .iter()
            .map(|f| {
                format!(
                    "({},{},{})",
                    quote(&f.probe_cc),
                    quote(&f.measured_at),
                    quote(&f.id)
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let routes: std::collections::HashMap<String, R> = self
            .rows::<R>(
                "reading the routes of a search page",
                &format!(
                    "SELECT id, any(route) AS route, any(relayed_by) AS relayed_by
                     FROM measurements WHERE (probe_cc, measured_at, id) IN ({keys}) GROUP BY id"
                ),
            )?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for f in found {
            if let Some(r) = routes.get(&f.id) {
                f.route.clone_from(&r.route);
                f.relayed_by.clone_from(&r.relayed_by);
            }
        }
        Ok(())
    }
}

/// A row as the API answers it.
fn found(r: SearchRow) -> Found {
    Found {
        cursor: cursor_of(&r.measured_at, &r.id),
        id: r.id,
        source: r.source,
        probe_cc: r.probe_cc,
        probe_asn: format!("AS{}", r.probe_asn),
        test_name: r.test_name,
        input: r.input,
        measured_at: r.measured_at,
        blocking: r.blocking.and_then(|b| serde_json::from_str(&b).ok()),
        accessible: r.accessible.map(|a| a != 0),
        confirmed: r.confirmed != 0,
        rule_set: r.rule_set,
        route: "upload".into(),
        relayed_by: None,
    }
}

/// The filters of a search. Those on what a measurement's id fixes (network, test, URL, time,
/// the cursor) go inside the `FINAL` subquery, where the sorting key serves them; those on
/// the verdict, which a newer version may change, go outside it (see the store's docs).
struct Filters {
    inner: Vec<String>,
    outer: Vec<String>,
}

impl Filters {
    fn of(q: &Query) -> Result<Filters, DbError> {
        let mut inner = Vec::new();
        let mut outer = Vec::new();
        if let Some(v) = &q.cc {
            inner.push(format!("probe_cc = {}", quote(&v.to_ascii_uppercase())));
        }
        if let Some(v) = q.asn {
            inner.push(format!("probe_asn = {v}"));
        }
        if let Some(v) = &q.test_name {
            inner.push(format!("test_name = {}", quote(v)));
        }
        if let Some(v) = &q.domain {
            inner.push(format!("domain = {}", quote(&v.to_ascii_lowercase())));
        }
        if let Some(v) = &q.input {
            inner.push(format!("input = {}", quote(v)));
        }
        if let Some(v) = &q.since {
            inner.push(format!("measured_at >= {}", quote(v)));
        }
        if let Some(v) = &q.until {
            inner.push(format!("measured_at < {}", quote(v)));
        }
        if let Some(cursor) = &q.after {
            let (t, id) = parse_cursor(cursor)?;
            inner.push(format!(
                "(measured_at > {t} OR (measured_at = {t} AND id > {id}))",
                t = quote(&t),
                id = quote(&id)
            ));
        }
        if let Some(v) = &q.blocking {
            // An undetermined verdict is stored as NULL, as in SQLite.
            if v == "null" {
                outer.push("isNull(blocking)".to_string());
            } else {
                outer.push(format!("blocking = {}", quote(v)));
            }
        }
        if let Some(v) = q.confirmed {
            outer.push(format!("confirmed = {}", u8::from(v)));
        }
        Ok(Filters { inner, outer })
    }

    /// The filters on the view's sorting key too, so that its index serves them.
    fn on(mut self, table: Table, q: &Query) -> Filters {
        if table == Table::BY_DOMAIN
            && let Some(v) = &q.domain
        {
            self.inner
                .push(format!("domain_key = {}", quote(&v.to_ascii_lowercase())));
        }
        self
    }
}

/// ` WHERE a AND b`, or nothing.
fn clause(c: &[String]) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", c.join(" AND "))
    }
}

/// Step 1 of an ordered search: the keys of the first `limit` rows of `table`'s `FINAL`
/// stream that pass the filters, in the order the stream gives them (no `ORDER BY`: that
/// would read everything).
fn probe_sql(q: &Query, table: Table) -> Result<String, DbError> {
    let f = Filters::of(q)?.on(table, q);
    let name = table.name;
    Ok(format!(
        "SELECT measured_at, id
         FROM (SELECT measured_at, id, blocking, confirmed FROM {name} FINAL{})
         {} LIMIT {}",
        clause(&f.inner),
        clause(&f.outer),
        q.limit
    ))
}

/// The plain search: everything the filters leave (up to `bound`, the last key of the page,
/// when step 1 found it), sorted, the first `limit`. The subquery selects the whole sorting
/// key and the version because 18.16's `FINAL` through a `Distributed` table needs them
/// ("Cannot find column ... in source stream" otherwise).
pub(super) fn sorted_sql(
    q: &Query,
    table: Table,
    bound: Option<(&str, &str)>,
) -> Result<String, DbError> {
    let mut f = Filters::of(q)?.on(table, q);
    if let Some((t, id)) = bound {
        f.inner.push(format!(
            "(measured_at < {t} OR (measured_at = {t} AND id <= {id}))",
            t = quote(t),
            id = quote(id)
        ));
    }
    let Table { name, lead } = table;
    Ok(format!(
        "SELECT {COLUMNS}
         FROM (SELECT {COLUMNS}, {lead}, version FROM {name} FINAL{})
         {} ORDER BY measured_at, id LIMIT {}",
        clause(&f.inner),
        clause(&f.outer),
        q.limit
    ))
}

/// The paging cursor of a row: its place in the search order, (`measured_at`, `id`), each in
/// hex so the cursor is one URL-safe word.
pub(super) fn cursor_of(measured_at: &str, id: &str) -> String {
    format!("{}.{}", hex(measured_at.as_bytes()), hex(id.as_bytes()))
}

/// The (`measured_at`, `id`) of a cursor this store gave.
pub(super) fn parse_cursor(cursor: &str) -> Result<(String, String), DbError> {
    let bad = || DbError::BadCursor(cursor.to_string());
    let (t, id) = cursor.split_once('.').ok_or_else(bad)?;
    Ok((unhex(t).ok_or_else(bad)?, unhex(id).ok_or_else(bad)?))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ids, row, server};
    use super::super::*;
    use super::*;

    fn query() -> Query {
        Query {
            limit: 100,
            ..Query::default()
        }
    }

    #[test]
    fn searches_by_country_or_domain_read_in_key_order_and_others_sort() {
        let by_cc = Query {
            cc: Some("ir".into()),
            ..query()
        };
        let by_domain = Query {
            domain: Some("Example.ORG".into()),
            ..by_cc.clone()
        };
        assert_eq!(Plan::of(&by_cc), Plan::Ordered(Table::BY_COUNTRY));
        assert_eq!(Plan::of(&by_domain), Plan::Ordered(Table::BY_DOMAIN));
        assert_eq!(
            Plan::of(&Query {
                asn: Some(3269),
                ..query()
            }),
            Plan::Sorted
        );
        let probe = probe_sql(&by_domain, Table::BY_DOMAIN).expect("sql");
        assert!(probe.contains("domain_key = 'example.org'"), "{probe}");
        assert!(probe.contains("probe_cc = 'IR'"), "{probe}");
        assert!(!probe.contains("ORDER BY"), "{probe}");
        let page = sorted_sql(
            &by_cc,
            Table::BY_COUNTRY,
            Some(("2026-01-01 00:00:00", "ab'c")),
        )
        .expect("sql");
        assert!(
            page.contains("id <= 'ab\\'c'"),
            "the bound is quoted: {page}"
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = cursor_of("2026-01-01 00:00:00", "ab'c");
        assert!(c.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'), "{c}");
        assert_eq!(
            parse_cursor(&c).expect("ours"),
            ("2026-01-01 00:00:00".into(), "ab'c".into())
        );
        for bad in ["17", "zz.00", "0.00", "", "ff.ff"] {
            assert!(
                matches!(parse_cursor(bad), Err(DbError::BadCursor(ref c)) if c == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn searches_filter_and_page_in_time_order() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        let mut rows = vec![
            row("m1", "IT", "2026-01-02 00:00:00"),
            row("m2", "IT", "2026-01-01 00:00:00"),
            row("m3", "IR", "2026-01-01 12:00:00"),
            row("m4", "IT", "2026-02-01 00:00:00"),
            row("m5", "IT", "2026-01-01 00:00:00"),
        ];
        rows[2].probe_asn = 197207;
        rows[2].blocking = Some("\"dns\"".into());
        rows[2].confirmed = true;
        rows[3].blocking = None;
        rows[3].accessible = None;
        rows[4].test_name = "canary".into();
        rows[4].input = None;
        rows[4].domain = None;
        db.insert(&rows).expect("insert");
        let search = |q: Query| ids(&db.query(&q).expect("search")).join(" ");
        assert_eq!(search(query()), "m2 m5 m3 m1 m4");
        assert_eq!(
            search(Query {
                cc: Some("it".into()),
                ..query()
            }),
            "m2 m5 m1 m4"
        );
        assert_eq!(
            search(Query {
                asn: Some(197207),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                test_name: Some("canary".into()),
                ..query()
            }),
            "m5"
        );
        assert_eq!(
            search(Query {
                domain: Some("M1.EXAMPLE".into()),
                ..query()
            }),
            "m1"
        );
        assert_eq!(
            search(Query {
                input: Some("https://m4.example/".into()),
                ..query()
            }),
            "m4"
        );
        assert_eq!(
            search(Query {
                blocking: Some("\"dns\"".into()),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                blocking: Some("null".into()),
                ..query()
            }),
            "m4"
        );
        assert_eq!(
            search(Query {
                confirmed: Some(true),
                ..query()
            }),
            "m3"
        );
        assert_eq!(
            search(Query {
                since: Some("2026-01-01 12:00:00".into()),
                until: Some("2026-02-01 00:00:00".into()),
                ..query()
            }),
            "m3 m1"
        );
        assert_eq!(
            search(Query {
                cc: Some("IT' OR '1'='1".into()),
                ..query()
            }),
            ""
        );
        let found = db.query(&query()).expect("all");
        let m3 = &found[2];
        assert_eq!(
            (
                m3.probe_asn.as_str(),
                &m3.blocking,
                m3.accessible,
                m3.confirmed
            ),
            (
                "AS197207",
                &Some(serde_json::json!("dns")),
                Some(true),
                true
            )
        );
        assert_eq!(found[4].accessible, None);
        // Pages of two, each starting after the previous page's last row.
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = db
                .query(&Query {
                    limit: 2,
                    after: after.clone(),
                    ..query()
                })
                .expect("page");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|f| f.cursor.clone());
            pages.push(ids(&page).join(" "));
        }
        assert_eq!(pages, ["m2 m5", "m3 m1", "m4"]);
        let err = db
            .query(&Query {
                after: Some("12".into()),
                ..query()
            })
            .expect_err("a cursor of another store");
        assert_eq!(err.to_string(), "cursor \"12\" is not one this server gave");
    }

    /// Searches by country and by domain read a page from a stream (see `search`): over many
    /// parts inserted out of order, with copies of rows and newer verdicts, every page is the
    /// one a full sort gives, whatever the filters.
    #[test]
    fn pages_by_country_and_domain_are_those_of_a_full_sort() {
        let server = server();
        let db = ClickHouse::open(&server.url("v")).expect("open");
        // 1,200 rows in 24 inserts (24 parts), times on a few seconds so that many rows share
        // one, ids in no order; a third in IR, the rest in IT; domains d0 to d4.
        let mut all: Vec<Row> = (0..1200u32)
            .map(|i| {
                let id = format!("{:08x}", i.wrapping_mul(2_654_435_761));
                let cc = if i % 3 == 0 { "IR" } else { "IT" };
                let mut r = row(&id, cc, &format!("2026-01-01 00:00:0{}", (i / 5) % 5));
                r.domain = Some(format!("d{}.example", i % 5));
                r
            })
            .collect();
        for chunk in all.chunks(50).rev() {
            db.insert(chunk).expect("insert");
        }
        // Copies of 100 rows through another "node" (they were stored: not new), written
        // as fresh parts anyway, and newer verdicts for every seventh row.
        db.store_new(&all[..100].iter().collect::<Vec<_>>())
            .expect("copies");
        for r in all.iter_mut().step_by(7) {
            r.blocking = Some("\"dns\"".into());
            db.update_verdict(r).expect("update");
        }
        let expect = |keep: &dyn Fn(&Row) -> bool| {
            let mut v: Vec<&Row> = all.iter().filter(|r| keep(r)).collect();
            v.sort_by(|a, b| (&a.measured_at, &a.id).cmp(&(&b.measured_at, &b.id)));
            v.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        };
        let paged = |q: Query| {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let page = db
                    .query(&Query {
                        after: after.clone(),
                        limit: 13,
                        ..q.clone()
                    })
                    .expect("search");
                after = page.last().map(|f| f.cursor.clone());
                out.extend(page.iter().map(|f| f.id.clone()));
                if page.len() < 13 {
                    return out;
                }
            }
        };
        type Keep = Box<dyn Fn(&Row) -> bool>;
        let cases: Vec<(Query, Keep)> = vec![
            (
                Query {
                    cc: Some("IT".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.probe_cc == "IT"),
            ),
            (
                Query {
                    domain: Some("d2.example".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.domain.as_deref() == Some("d2.example")),
            ),
            (
                Query {
                    cc: Some("IR".into()),
                    blocking: Some("\"dns\"".into()),
                    ..query()
                },
                Box::new(|r: &Row| r.probe_cc == "IR" && r.blocking.as_deref() == Some("\"dns\"")),
            ),
            (
                Query {
                    domain: Some("d3.example".into()),
                    cc: Some("IT".into()),
                    blocking: Some("false".into()),
                    since: Some("2026-01-01 00:00:02".into()),
                    ..query()
                },
                Box::new(|r: &Row| {
                    r.domain.as_deref() == Some("d3.example")
                        && r.probe_cc == "IT"
                        && r.blocking.as_deref() == Some("false")
                        && r.measured_at.as_str() >= "2026-01-01 00:00:02"
                }),
            ),
        ];
        for (q, keep) in cases {
            let want = expect(keep.as_ref());
            assert!(want.len() > 13, "{q:?}: more than one page");
            assert_eq!(paged(q.clone()), want, "{q:?}");
        }
    }
}
