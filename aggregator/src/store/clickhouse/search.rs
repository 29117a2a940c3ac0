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
use super::{ClickHouse, cursor_of, parse_cursor, quote};

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

/// How a search is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Probe, then the page between the cursor and the probe's bound, on `table`, whose
    /// sorting key is a fixed column and then (`measured_at`, `id`).
    Ordered { table: &'static str },
    /// One `ORDER BY ... LIMIT` over everything the filters leave.
    Sorted,
}

impl Plan {
    fn of(q: &Query) -> Plan {
        if q.domain.is_some() {
            Plan::Ordered {
                table: "measurements_by_domain",
            }
        } else if q.cc.is_some() {
            Plan::Ordered {
                table: "measurements",
            }
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
                &sorted_sql(q, "measurements", None)?,
            )?,
            Plan::Ordered { table } => {
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
        Ok(rows.into_iter().map(found).collect())
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
    fn on(mut self, table: &str, q: &Query) -> Filters {
        if table == "measurements_by_domain"
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
fn probe_sql(q: &Query, table: &str) -> Result<String, DbError> {
    let f = Filters::of(q)?.on(table, q);
    Ok(format!(
        "SELECT measured_at, id
         FROM (SELECT measured_at, id, blocking, confirmed FROM {table} FINAL{})
         {} LIMIT {}",
        clause(&f.inner),
        clause(&f.outer),
        q.limit
    ))
}

/// The plain search: everything the filters leave (up to `bound`, the last key of the page,
/// when step 1 found it), sorted, the first `limit`. `table`: `measurements`,
/// `measurements_by_domain`, or a `Distributed` table over the shards' `measurements`; the
/// subquery selects the whole sorting key and the version because 18.16's `FINAL` through a
/// `Distributed` table needs them ("Cannot find column ... in source stream" otherwise).
pub(super) fn sorted_sql(
    q: &Query,
    table: &str,
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
    let key = if table == "measurements_by_domain" {
        "domain_key, "
    } else {
        "probe_cc, "
    };
    Ok(format!(
        "SELECT {COLUMNS}
         FROM (SELECT {COLUMNS}, {key}version FROM {table} FINAL{})
         {} ORDER BY measured_at, id LIMIT {}",
        clause(&f.inner),
        clause(&f.outer),
        q.limit
    ))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            Plan::of(&by_cc),
            Plan::Ordered {
                table: "measurements"
            }
        );
        assert_eq!(
            Plan::of(&by_domain),
            Plan::Ordered {
                table: "measurements_by_domain"
            }
        );
        assert_eq!(
            Plan::of(&Query {
                asn: Some(3269),
                ..query()
            }),
            Plan::Sorted
        );
        let probe = probe_sql(&by_domain, "measurements_by_domain").expect("sql");
        assert!(probe.contains("domain_key = 'example.org'"), "{probe}");
        assert!(probe.contains("probe_cc = 'IR'"), "{probe}");
        assert!(!probe.contains("ORDER BY"), "{probe}");
        let page = sorted_sql(
            &by_cc,
            "measurements",
            Some(("2026-01-01 00:00:00", "ab'c")),
        )
        .expect("sql");
        assert!(
            page.contains("id <= 'ab\\'c'"),
            "the bound is quoted: {page}"
        );
    }
}
