//! The OpenAPI document of the routes (OpenAPI 3.1), generated from the code rather than
//! written by hand: each handler in `server.rs` carries `#[utoipa::path]` (its method, path,
//! parameters and answers), the router is built from those handlers with `utoipa_axum`'s
//! `routes!`, so a route cannot be served without being documented, and the answers below are
//! the very types the handlers serialise. The store's, the detectors' and the probe's wire
//! types (`store::Found`, `store::model::Event`, `detect::signals::SignalBin`,
//! `vantage_probe::wire`) derive their schemas where they are defined.
//!
//! Served at `GET /api/v1/openapi.json`; `aggregator/tests/ingest.rs` checks it against what
//! the server answers.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::detect::signals::SignalBin;
use crate::store::Found;
use crate::store::model::TimelineEvent;

/// The document's head: title, version and what the API is for. The paths and schemas are
/// added by the router (`server::openapi`).
#[derive(OpenApi)]
#[openapi(
    // The one route `routes!` cannot serve (its path has a varying number of parts): served by
    // a wildcard in `server::api`, documented here.
    paths(crate::api::log::tile),
    info(
        title = "Vantage aggregator",
        version = "1",
        description = "Signed measurements from Vantage probes: ingest, search, raw evidence, \
            geolocation, heartbeats, signals, the timeline of shutdown, blocking and throttling \
            events, an OONI-compatible test helper, and the transparency log of every signed \
            measurement accepted (C2SP tlog-tiles)."
    )
)]
pub struct ApiDoc;

/// Any error: one sentence saying what was wrong with the request, or what the server could
/// not do.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorAnswer {
    /// What went wrong.
    pub error: String,
}

/// `GET /api/v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
    /// The aggregator's version.
    pub version: String,
}

/// `GET /api/v1/measurements`: a page of rows, in `measured_at` order.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    /// The page.
    pub results: Vec<Found>,
    /// The `cursor` of the next page; `null` on the last one.
    pub next: Option<String>,
}

/// `GET /api/v1/signals`: a network's signals in 5-minute bins. Bins in which nothing was
/// heard are absent: silence is the signal.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignalsAnswer {
    /// Country.
    pub cc: String,
    /// `AS<n>`, or `null` for the whole country.
    pub asn: Option<String>,
    /// Length of a bin (300).
    pub bin_seconds: i64,
    /// Oldest first.
    pub bins: Vec<SignalBin>,
}

/// `GET /api/v1/timeline` as JSON (README.md, "Timeline: shutdowns, blocking and throttling").
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineAnswer {
    /// The country asked for; `null` for every country.
    pub cc: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub since: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub until: String,
    /// Events ending at or after `since` and starting before `until`, each with how its
    /// evidence arrived.
    pub events: Vec<TimelineEvent>,
}

/// `GET /api/v1/countries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountriesAnswer {
    /// Countries with signals.
    pub countries: Vec<Country>,
}

/// One country of the web page's picker.
#[derive(Debug, Serialize, ToSchema)]
pub struct Country {
    /// Two letters.
    pub cc: String,
    /// Networks heard from.
    pub networks: i64,
    /// Events on the timeline.
    pub events: i64,
}

/// `POST /api/v1/heartbeat`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `POST /api/v1/enrol`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrolAnswer {
    /// Always `enrolled`.
    #[schema(example = "enrolled")]
    pub status: String,
    /// The enrolled public key.
    pub key: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use vantage_probe::wire::{IngestAnswer, LineOutcome, ServerInfo};

    use super::*;
    use crate::api::server::openapi;
    use crate::store::model::Event;

    /// `value`, as a handler writes it, fits the schema `name` of the served document: every
    /// field it writes is a documented property and every required property is written.
    fn fits(doc: &Value, name: &str, value: &Value) {
        let schema = &doc["components"]["schemas"][name];
        let properties = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties: {schema}"));
        let written = value.as_object().expect("an object");
        for key in written.keys() {
            assert!(
                properties.contains_key(key),
                "{name}.{key} is written but not documented"
            );
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().expect("a name");
            assert!(
                written.contains_key(key),
                "{name}.{key} is required but not written"
            );
        }
    }

    #[test]
    fn the_answers_the_handlers_write_fit_the_documented_schemas() {
        let doc = serde_json::to_value(openapi()).expect("the document serialises");
        let found = Found {
            id: "a".repeat(64),
            source: "vantage".into(),
            probe_cc: "IR".into(),
            probe_asn: "AS64500".into(),
            test_name: "web_connectivity".into(),
            input: Some("https://example.org/".into()),
            measured_at: "2026-01-01 00:00:00".into(),
            blocking: Some(json!("dns")),
            accessible: Some(false),
            confirmed: true,
            rule_set: None,
            route: "relay".into(),
            relayed_by: Some("a relayer's key".into()),
            cursor: "not sent".into(),
        };
        let page = serde_json::to_value(SearchAnswer {
            results: vec![found],
            next: None,
        })
        .expect("page");
        fits(&doc, "SearchAnswer", &page);
        fits(&doc, "Found", &page["results"][0]);
        let event: Event = serde_json::from_value(json!({
            "id": "0123456789abcdef", "entity": {"cc": "IR", "asn": null, "asns": ["AS1", "AS2"]},
            "kind": "shutdown", "scope": "regional", "layer": null, "category": null,
            "targets": [], "start": "2026-01-01 00:00:00", "end": null, "status": "ongoing",
            "suspected": false, "confidence": 0.9, "probes": 4, "evidence": [], "rate_kbps": 12.5,
        }))
        .expect("an event");
        let written = serde_json::to_value(&event).expect("event");
        fits(&doc, "Event", &written);
        fits(&doc, "Entity", &written["entity"]);
        let answer = serde_json::to_value(IngestAnswer {
            results: vec![LineOutcome::rejected(1, None, "bad signature".into())],
            error: Some("bad body".into()),
            incomplete: None,
        })
        .expect("answer");
        fits(&doc, "IngestAnswer", &answer);
        fits(&doc, "LineOutcome", &answer["results"][0]);
        let info = ServerInfo {
            port: 1,
            cert_sha256: "00".into(),
            max_payload_bytes: 1,
        };
        fits(
            &doc,
            "ServerInfo",
            &serde_json::to_value(info).expect("info"),
        );
    }
}
