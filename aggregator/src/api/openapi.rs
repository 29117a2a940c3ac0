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
use crate::store::model::Event;

/// The document's head: title, version and what the API is for. The paths and schemas are
/// added by the router (`server::openapi`).
#[derive(OpenApi)]
#[openapi(info(
    title = "Vantage aggregator",
    version = "1",
    description = "Signed measurements from Vantage probes: ingest, search, raw evidence, \
        geolocation, heartbeats, signals, the timeline of shutdown, blocking and throttling \
        events, and an OONI-compatible test helper."
))]
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

/// `GET /api/v1/timeline` as JSON (DESIGN "Events").
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineAnswer {
    /// The country asked for; `null` for every country.
    pub cc: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub since: String,
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub until: String,
    /// Events ending at or after `since` and starting before `until`.
    pub events: Vec<Event>,
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
