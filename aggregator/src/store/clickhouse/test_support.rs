//! Helpers shared by the ClickHouse store's tests: a server, a row, a query.

use super::super::{Found, Query, Row};
use vantage_fixtures::clickhouse::Server;

pub(super) fn server() -> Server {
    Server::start().expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)")
}

pub(super) fn row(id: &str, cc: &str, at: &str) -> Row {
    Row {
        id: id.into(),
        source: "vantage".into(),
        probe_key: Some("key-1".into()),
        probe_cc: cc.into(),
        probe_asn: 3269,
        test_name: "web_connectivity".into(),
        input: Some(format!("https://{id}.example/")),
        domain: Some(format!("{id}.example")),
        measured_at: at.into(),
        blocking: Some("false".into()),
        accessible: Some(true),
        confirmed: false,
        rule_set: Some("1".into()),
        verdict: Some("{}".into()),
        envelope: format!("{{\"id\":\"{id}\"}}"),
        network_verified: true,
        route: crate::store::Route::Upload,
    }
}

pub(super) fn query() -> Query {
    Query {
        limit: 100,
        ..Query::default()
    }
}

pub(super) fn ids(found: &[Found]) -> Vec<&str> {
    found.iter().map(|f| f.id.as_str()).collect()
}

pub(super) fn bin_of_test(at: &str) -> i64 {
    crate::store::model::bin_of(at).expect("a time")
}
