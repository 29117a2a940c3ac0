//! The aggregator's HTTP server: ingest, the researcher API, whoami, the test helper, health.
//!
//! The caller's IP address is used by whoami for one lookup and dropped; no handler logs it and
//! no table stores it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi as _};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;
use vantage_probe::engine::TlsContext;
use vantage_probe::ooni::{Asn, ControlRequest, CountryCode};
use vantage_probe::th::{HelperConfig, answer};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::wire::{ServerInfo, WhoAmI};

use crate::api::geo::Geo;
use crate::api::metrics::{self as prom, Metrics};
use crate::api::openapi::{
    ApiDoc, CountriesAnswer, Country, EnrolAnswer, ErrorAnswer, Health, HeartbeatAnswer,
    SearchAnswer, SignalsAnswer, TimelineAnswer,
};
use crate::detect::signals::{self, SignalQuery};
use crate::detect::{Kind, TimelineQuery};
use crate::ingest::enrol::enrol;
use crate::ingest::limits::{ByteBudget, RETRY_AFTER_SECS, Slots};
use crate::ingest::stream::ChunkWriter;
use crate::ingest::{IngestConfig, Origin, heartbeat};
use crate::store::model::{BIN_SECONDS, Verification, parse_time};
use crate::store::{DbError, Query, Storage};

/// OONI's helper accepts bodies up to 1<<24 bytes; a THRequest is a few hundred bytes, so we
/// allow far less.
pub const TH_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Largest page of the researcher API.
pub const MAX_PAGE: usize = 1000;

/// What requests may take from the server at once, and for how long.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Decompressed upload bytes in flight, across all uploads (each reserves
    /// [`IngestConfig::working_set_bytes`], or less for a small plain body).
    pub upload_budget: ByteBudget,
    /// Exports streaming at once.
    pub exports: Slots,
    /// Time an upload's body may take to arrive.
    pub body_timeout: Duration,
    /// Time any request may take from its head to its answer (an export's streaming after the
    /// answer starts is bounded by the connection's idle deadline instead, `listen.rs`).
    pub request_timeout: Duration,
    /// How much lower uploads run than searches and the store
    /// ([`crate::ingest::limits::spawn_upload`]).
    pub upload_niceness: i32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            // With the default 2 MiB batches and 1 MiB lines an upload reserves 7 MiB, so 96 MiB
            // lets 13 large uploads (and any number of small ones) run at once.
            upload_budget: ByteBudget::new(96 << 20),
            exports: Slots::new(4),
            body_timeout: Duration::from_secs(90),
            request_timeout: Duration::from_secs(120),
            upload_niceness: crate::ingest::limits::UPLOAD_NICENESS,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    helper: Arc<HelperConfig>,
    tls: TlsContext,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) ingest: Arc<IngestConfig>,
    pub(super) fingerprints: Arc<Fingerprints>,
    pub(super) geo: Arc<Geo>,
    pub(super) metrics: Arc<Metrics>,
    db_path: Option<Arc<std::path::PathBuf>>,
    signer: Option<Arc<vantage_probe::envelope::Identity>>,
    lists_dir: Option<Arc<std::path::PathBuf>>,
    throughput: Option<Arc<ServerInfo>>,
    pub(super) limits: Arc<ServerLimits>,
    verification: Verification,
    witnesses: Arc<Vec<crate::log::note::WitnessVerifier>>,
    detect: Option<Arc<crate::detect::DetectConfig>>,
}

impl AppState {
    /// State for a server storing into `storage`, whose test helper measures with `helper`.
    pub fn new(
        helper: HelperConfig,
        tls: TlsContext,
        storage: Arc<dyn Storage>,
        ingest: IngestConfig,
        geo: Geo,
    ) -> Self {
        AppState {
            helper: Arc::new(helper),
            tls,
            storage,
            ingest: Arc::new(ingest),
            fingerprints: Arc::new(Fingerprints::builtin()),
            geo: Arc::new(geo),
            metrics: Arc::new(Metrics::default()),
            db_path: None,
            signer: None,
            lists_dir: None,
            throughput: None,
            limits: Arc::new(ServerLimits::default()),
            verification: Verification::default(),
            witnesses: Arc::new(Vec::new()),
            detect: None,
        }
    }

    /// Signals (`GET /api/v1/signals`) count probes as the detectors do: with
    /// `verification.required` (`serve` with a geolocation source), only keys with verified
    /// contact in the network they claim (`detect::signals::Admit`). Without this, every key
    /// counts.
    pub fn with_verification(mut self, verification: Verification) -> Self {
        self.verification = verification;
        self
    }

    /// Replaces the default [`ServerLimits`].
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Signs test lists with `key`, taking operator lists from `dir` before the built-in ones.
    pub fn with_test_lists(
        mut self,
        key: vantage_probe::envelope::Identity,
        dir: Option<std::path::PathBuf>,
    ) -> Self {
        self.signer = Some(Arc::new(key));
        self.lists_dir = dir.map(Arc::new);
        self
    }

    /// Publishes the throughput server (`GET /api/v1/throughput`) for the throttling test.
    pub fn with_throughput(mut self, info: ServerInfo) -> Self {
        self.throughput = Some(Arc::new(info));
        self
    }

    /// Reports the size of this database file (and its WAL) in `/metrics`.
    pub fn with_db_path(mut self, path: std::path::PathBuf) -> Self {
        self.db_path = Some(Arc::new(path));
        self
    }

    /// The store, for the routes kept in files of their own (`api/log.rs`).
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Accepts these witnesses' cosignatures of the log's checkpoints (`serve --witness`).
    pub fn with_witnesses(mut self, witnesses: Vec<crate::log::note::WitnessVerifier>) -> Self {
        self.witnesses = Arc::new(witnesses);
        self
    }

    /// The witnesses whose cosignatures are accepted (`api/log.rs`).
    pub(crate) fn witnesses(&self) -> &Arc<Vec<crate::log::note::WitnessVerifier>> {
        &self.witnesses
    }

    /// Names the detectors' configuration in evidence bundles (`api/evidence.rs`); without
    /// it they name the defaults.
    pub fn with_detect_config(mut self, config: Arc<crate::detect::DetectConfig>) -> Self {
        self.detect = Some(config);
        self
    }

    /// The detectors' configuration, for evidence bundles.
    pub(crate) fn detect_config(&self) -> crate::detect::DetectConfig {
        self.detect.as_deref().cloned().unwrap_or_default()
    }

    /// Which contacts count in the signals, for evidence bundles.
    pub(crate) fn verification(&self) -> Verification {
        self.verification
    }

    /// The server's limits, for the routes kept in files of their own.
    pub(crate) fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// The public half of the key that signs test lists and the log's checkpoints.
    pub(crate) fn log_public_key(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let key = self.signer.as_ref()?.public_key();
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .ok()?
            .try_into()
            .ok()
    }
}

/// The routes and the OpenAPI document that describes them, built from one list of handlers:
/// `routes!` takes each handler's `#[utoipa::path]` (method, path, parameters, answers) both
/// into the axum router and into the document, so no route is served undocumented.
fn api() -> OpenApiRouter<AppState> {
    let small_body = || DefaultBodyLimit::max(64 * 1024);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(whoami))
        .routes(routes!(throughput_route))
        .routes(routes!(test_helper).layer(DefaultBodyLimit::max(TH_BODY_LIMIT_BYTES)))
        .routes(routes!(crate::api::upload::upload, search))
        .routes(routes!(by_id))
        .routes(routes!(beat).layer(small_body()))
        .routes(routes!(enrol_route).layer(small_body()))
        .routes(routes!(signals_route))
        .routes(routes!(timeline_route))
        .routes(routes!(countries_route))
        .routes(routes!(index))
        .routes(routes!(metrics))
        .routes(routes!(test_lists))
        .routes(routes!(export_route))
        .routes(routes!(openapi_json))
        .routes(routes!(crate::api::log::checkpoint))
        .routes(routes!(crate::api::log::proof))
        .routes(routes!(crate::api::evidence::bundle))
        .routes(routes!(crate::api::log::entry))
        .routes(routes!(crate::api::log::cosignature).layer(small_body()))
        // A tile's path has a varying number of parts, which only axum's wildcard takes; it is
        // documented as `/log/tile/{path}` through `ApiDoc` (`openapi.rs`).
        .route(
            "/log/tile/{*path}",
            axum::routing::get(crate::api::log::tile),
        )
}

/// The OpenAPI document of [`router`]'s routes, as served at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()` for whoami.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.limits.request_timeout;
    let (routes, document) = api().split_for_parts();
    routes
        .layer(Extension(Arc::new(document)))
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        .with_state(state)
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of these routes",
        content_type = "application/json")))]
async fn openapi_json(Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>) -> Response {
    axum::Json(document.as_ref()).into_response()
}

/// Every request gets an answer within the server's request timeout, or 503: no handler can be
/// held open by a client that sends slowly or by a lookup that hangs.
async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {} s", limit.as_secs()),
        ),
    }
}

/// 503 with `Retry-After` (RFC 9110 section 15.6.4): the server is at a cap, not broken.
pub(super) fn busy(what: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        axum::Json(ErrorAnswer {
            error: format!("too many {what} in progress; retry in {RETRY_AFTER_SECS} s"),
        }),
    )
        .into_response()
}

/// Media types of an upload: JSON lines, or one JSON envelope.
pub(super) const UPLOAD_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
];

/// Media type of the single-envelope and test-helper routes.
const JSON_TYPES: &[&str] = &["application/json"];

/// 415 (RFC 9110 section 15.5.16) unless the body says it is one of `allowed`, so a body
/// nobody meant for this route (a form, a file) is refused before it is read.
pub(super) fn content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match given {
        Some(t) if allowed.contains(&t.as_str()) => Ok(()),
        _ => Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be {}", allowed.join(" or ")),
        ))),
    }
}

/// Liveness.
#[utoipa::path(get, path = "/api/v1/health", tag = "meta",
    responses((status = 200, description = "The server answers", body = Health)))]
async fn health() -> impl IntoResponse {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

pub(super) fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorAnswer { error: message })).into_response()
}

/// OONI-compatible test helper: OONI's THRequest in, THResponse out.
///
/// The control measurement from an uncensored network (OONI's web_connectivity spec, "test
/// helper"), measured by this server.
#[utoipa::path(post, path = "/api/v1/th", tag = "probes",
    request_body(content = Object, description = "OONI's THRequest", content_type = "application/json"),
    responses(
        (status = 200, description = "OONI's THResponse", body = Object),
        (status = 400, description = "Malformed THRequest, or more tcp_connect endpoints than the helper measures", body = ErrorAnswer),
        (status = 403, description = "The URL is, resolves to or redirects only to a private or other non-public address (allowed with --th-allow-private): no control", body = ErrorAnswer),
        (status = 415, description = "Content-Type is not application/json", body = ErrorAnswer),
        (status = 502, description = "The helper's own resolver gave no answer: no control", body = ErrorAnswer),
    ))]
async fn test_helper(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = content_type(&headers, JSON_TYPES) {
        return *refused;
    }
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("malformed THRequest: {e}"));
        }
    };
    match answer(&request, &state.helper, &state.tls).await {
        Ok(response) => axum::Json(response).into_response(),
        // A 4xx per refusal (`HelperError::status`), so no probe reads it as the site's failure.
        Err(e) => error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        ),
    }
}

/// Where the throttling test downloads from, and the pin.
///
/// The throughput server's port on this host and the SHA-256 of its certificate, which probes
/// pin.
#[utoipa::path(get, path = "/api/v1/throughput", tag = "probes",
    responses(
        (status = 200, description = "The throughput server", body = ServerInfo),
        (status = 404, description = "This aggregator runs no throughput server", body = ErrorAnswer),
    ))]
async fn throughput_route(State(state): State<AppState>) -> Response {
    match &state.throughput {
        Some(info) => axum::Json(info.as_ref()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this aggregator runs no throughput server (serve --throughput-listen)".into(),
        ),
    }
}

/// The caller's network and country; the address is not kept.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "probes",
    responses((status = 200, description = "`AS0` and `ZZ` when the server does not know", body = WhoAmI)))]
async fn whoami(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let (asn, cc) = state.geo.lookup(peer.ip());
    axum::Json(WhoAmI {
        probe_asn: Asn(asn),
        probe_cc: cc.parse().unwrap_or(CountryCode::UNKNOWN),
    })
    .into_response()
}

/// The network of the connecting address, for checking what a probe claims; the address itself
/// goes no further than this lookup.
pub(super) fn origin(geo: &Geo, peer: SocketAddr) -> Origin {
    match geo {
        Geo::Unknown => Origin::UNKNOWN,
        geo => {
            let (asn, cc) = geo.lookup(peer.ip());
            Origin::observed(asn, &cc)
        }
    }
}

/// A probe is alive: one signed envelope of a `heartbeat` measurement.
#[utoipa::path(post, path = "/api/v1/heartbeat", tag = "probes",
    request_body(content = String, description = "One envelope whose measurement has test_name heartbeat", content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatAnswer),
        (status = 400, description = "Refused, with the reason", body = ErrorAnswer),
        (status = 415, description = "Content-Type is not application/json", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn beat(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = content_type(&headers, JSON_TYPES) {
        return *refused;
    }
    let origin = origin(&state.geo, peer);
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "body is not UTF-8".into());
    };
    let metrics = state.metrics.clone();
    let result = tokio::task::spawn_blocking(move || {
        heartbeat(state.storage.as_ref(), &text, &state.ingest, &origin)
    })
    .await;
    match result {
        Ok(Ok(Ok(()))) => {
            metrics.heartbeat();
            axum::Json(HeartbeatAnswer {
                status: "ok".into(),
            })
            .into_response()
        }
        Ok(Ok(Err(reason))) => error(StatusCode::BAD_REQUEST, reason),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Enrol a probe key with a one-time token (for servers run with `--require-enrolment`).
///
/// One envelope, signed by the key to enrol, of an `enrolment` measurement carrying the
/// one-time token in `test_keys.token`. 403 when the token is unknown or spent, so a probe can tell "ask the operator" from a typo
/// in the request (400).
#[utoipa::path(post, path = "/api/v1/enrol", tag = "probes",
    request_body(content = String, description = "One envelope whose measurement has test_name enrolment", content_type = "application/json"),
    responses(
        (status = 200, description = "Enrolled", body = EnrolAnswer),
        (status = 400, description = "Malformed or badly signed request", body = ErrorAnswer),
        (status = 403, description = "Unknown or already used token, or a revoked key", body = ErrorAnswer),
        (status = 415, description = "Content-Type is not application/json", body = ErrorAnswer),
    ))]
async fn enrol_route(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = content_type(&headers, JSON_TYPES) {
        return *refused;
    }
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "body is not UTF-8".into());
    };
    let result =
        tokio::task::spawn_blocking(move || enrol(state.storage.as_ref(), &text, &state.ingest))
            .await;
    match result {
        Ok(Ok(Ok(key))) => axum::Json(EnrolAnswer {
            status: "enrolled".into(),
            key,
        })
        .into_response(),
        Ok(Ok(Err(reason)))
            if reason.starts_with("malformed") || reason.starts_with("test_name") =>
        {
            error(StatusCode::BAD_REQUEST, reason)
        }
        Ok(Ok(Err(reason))) => error(StatusCode::FORBIDDEN, reason),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The country's test list and the global one, signed by the aggregator's key.
///
/// One signed envelope (`vantage_probe::test_lists::SignedLists`) whose measurement is
/// `{"kind":"vantage-test-lists","cc","generated_at","lists":{name: csv}}`, so a probe can
/// check the lists before use.
#[utoipa::path(get, path = "/api/v1/test-lists/{cc}", tag = "probes",
    params(("cc" = String, Path, description = "Two letters", pattern = "^[A-Za-z]{2}$")),
    responses(
        (status = 200, description = "One signed envelope", body = String, content_type = "application/json"),
        (status = 400, description = "Not a country code", body = ErrorAnswer),
        (status = 404, description = "This aggregator publishes no test lists", body = ErrorAnswer),
    ))]
async fn test_lists(State(state): State<AppState>, Path(cc): Path<String>) -> Response {
    let Some(signer) = state.signer.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this aggregator publishes no test lists".into(),
        );
    };
    let cc = cc.to_ascii_lowercase();
    if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_lowercase()) {
        return error(
            StatusCode::BAD_REQUEST,
            "a country code is two letters".into(),
        );
    }
    let mut lists = BTreeMap::new();
    for name in [cc.as_str(), "global"] {
        let operator = state
            .lists_dir
            .as_ref()
            .map(|d| d.join(format!("{name}.csv")))
            .and_then(|p| std::fs::read_to_string(p).ok());
        if let Some(text) =
            operator.or_else(|| vantage_probe::test_lists::builtin_list(name).map(str::to_string))
        {
            lists.insert(name.to_string(), text);
        }
    }
    let payload = vantage_probe::test_lists::SignedLists {
        kind: vantage_probe::test_lists::SIGNED_LISTS_KIND.into(),
        cc: cc.to_ascii_uppercase(),
        generated_at: vantage_probe::ooni::ooni_timestamp(std::time::SystemTime::now()),
        lists,
    };
    match serde_json::to_string(&payload)
        .map_err(|e| e.to_string())
        .and_then(|json| signer.seal(&json).map_err(|e| e.to_string()))
    {
        Ok((_, line)) => ([(header::CONTENT_TYPE, "application/json")], line).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Largest export of one request; page through bigger sets with `cursor`.
pub const MAX_EXPORT: usize = 100_000;

/// The export format, read from the same query string as the filters (a separate struct,
/// since serde's `flatten` breaks numbers in query strings).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportFormat {
    /// `jsonl` (default) or `csv`.
    #[param(pattern = "^(jsonl|csv)$")]
    pub format: Option<String>,
}

/// Bulk export: stored envelopes (JSONL) or columns (CSV), with the search filters.
///
/// Up to [`MAX_EXPORT`] (100,000) rows a request, 10,000 by default; page through bigger sets
/// with `cursor`.
#[utoipa::path(get, path = "/api/v1/export", tag = "research",
    params(ExportFormat, SearchParams),
    responses(
        (status = 200, description = "The rows, streamed", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        )),
        (status = 400, description = "Bad format or filter", body = ErrorAnswer),
        (status = 503, description = "As many exports as the server streams at once are running (retry after Retry-After seconds)", body = ErrorAnswer),
    ))]
async fn export_route(
    State(state): State<AppState>,
    QueryParams(wanted): QueryParams<ExportFormat>,
    QueryParams(search): QueryParams<SearchParams>,
) -> Response {
    let format_name = wanted.format.as_deref().unwrap_or("jsonl");
    let Some(format) = crate::api::export::Format::parse(format_name) else {
        return error(StatusCode::BAD_REQUEST, "format is jsonl or csv".into());
    };
    let mut query = match search.to_query() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    query.limit = search.limit.unwrap_or(10_000).clamp(1, MAX_EXPORT);
    let Some(slot) = state.limits.exports.try_take() else {
        return busy("exports");
    };
    // Streamed: the worker reads a page of rows at a time and waits while the client reads
    // (`stream.rs`), so an export of 100,000 rows holds a page and a few chunks, not the whole.
    let (mut writer, body) = ChunkWriter::new();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        match crate::api::export::export(state.storage.as_ref(), &query, format, &mut writer) {
            Ok(_) => {
                let _ = writer.flush();
            }
            // The client hung up: nothing to tell anyone.
            Err(crate::api::export::ExportError::Io(e))
                if e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                tracing::debug!("export stopped: {e}");
            }
            Err(e) => {
                tracing::warn!("export stopped: {e}");
                writer.fail(e.to_string());
            }
        }
    });
    let content_type = match format {
        crate::api::export::Format::Jsonl => "application/x-ndjson",
        crate::api::export::Format::Csv => "text/csv",
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// Prometheus metrics: lines accepted, duplicate and rejected by reason, ingest time,
/// heartbeats, store size (`metrics.rs`).
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> Response {
    let bytes = state.db_path.as_ref().map_or(0, |p| {
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = std::path::PathBuf::from(format!("{}-wal", p.display()));
        size(p) + size(&wal)
    });
    (
        [(header::CONTENT_TYPE, prom::CONTENT_TYPE)],
        state.metrics.render(bytes),
    )
        .into_response()
}

/// An `asn` parameter: `AS<n>` or `<n>`.
/// A `since` or `until` parameter: `YYYY-MM-DD[ HH:MM:SS]` (UTC) in epoch seconds; empty is
/// absent, as an HTML form sends it.
fn param_time(v: &Option<String>, name: &str) -> Result<Option<i64>, String> {
    v.as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| parse_time(t).ok_or(format!("{name} {t:?} is not YYYY-MM-DD[ HH:MM:SS]")))
        .transpose()
}

fn parse_asn(asn: Option<&str>) -> Result<Option<u32>, String> {
    asn.map(|a| {
        a.trim_start_matches("AS")
            .trim_start_matches("as")
            .parse::<u32>()
            .map_err(|_| format!("asn {a:?} is not AS<number>"))
    })
    .transpose()
}

/// Filters of `GET /api/v1/measurements`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Country.
    pub cc: Option<String>,
    /// `AS<n>` or `<n>`.
    pub asn: Option<String>,
    /// Test name.
    pub test_name: Option<String>,
    /// Host.
    pub domain: Option<String>,
    /// Exact URL.
    pub input: Option<String>,
    /// `false` (accessible or down), `null` (undetermined), `dns`, `tcp_ip`, `tls`,
    /// `http-failure` or `http-diff`.
    pub blocking: Option<String>,
    /// `true` or `false`.
    pub confirmed: Option<bool>,
    /// `YYYY-MM-DD[ HH:MM:SS]`.
    pub since: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`.
    pub until: Option<String>,
    /// The `next` value of the previous page; pages are in `measured_at` order.
    pub cursor: Option<String>,
    /// Page size: 100 by default, at most 1000 (at most 100,000 for an export).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
}

impl SearchParams {
    /// The storage query these filters mean.
    pub fn to_query(&self) -> Result<Query, String> {
        let asn = parse_asn(self.asn.as_deref())?;
        // `blocking` is stored as JSON text: `false`, a quoted type, or NULL when undetermined.
        let blocking = self.blocking.as_deref().map(|b| match b {
            "false" | "null" => b.to_string(),
            other => format!("\"{other}\""),
        });
        Ok(Query {
            cc: self.cc.clone(),
            asn,
            test_name: self.test_name.clone(),
            domain: self.domain.clone(),
            input: self.input.clone(),
            blocking,
            confirmed: self.confirmed,
            since: self.since.clone(),
            until: self.until.clone(),
            after: self.cursor.clone(),
            limit: self.limit.unwrap_or(100).clamp(1, MAX_PAGE),
        })
    }
}

/// Search measurements: filtered, cursor-paginated.
#[utoipa::path(get, path = "/api/v1/measurements", tag = "research",
    params(SearchParams),
    responses(
        (status = 200, description = "A page", body = SearchAnswer),
        (status = 400, description = "Bad filter or cursor", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn search(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<SearchParams>,
) -> Response {
    let query = match params.to_query() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let limit = query.limit;
    let result = tokio::task::spawn_blocking(move || state.storage.query(&query)).await;
    match result {
        Ok(Ok(rows)) => {
            let next = (rows.len() == limit)
                .then(|| rows.last().map(|r| r.cursor.clone()))
                .flatten();
            axum::Json(SearchAnswer {
                results: rows,
                next,
            })
            .into_response()
        }
        Ok(Err(e @ DbError::BadCursor(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Parameters of `GET /api/v1/signals`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignalParams {
    /// Country (required).
    #[param(required = true)]
    pub cc: Option<String>,
    /// `AS<n>`; the whole country when absent.
    pub asn: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: a day before `until`.
    pub since: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: now; at most 31 days after `since`.
    pub until: Option<String>,
}

/// Longest span one signals request covers (8,928 bins).
pub const MAX_SIGNAL_DAYS: i64 = 31;

impl SignalParams {
    /// The storage query, or why the parameters make none.
    pub fn to_query(&self, now_secs: i64) -> Result<SignalQuery, String> {
        let cc = self
            .cc
            .as_deref()
            .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .ok_or("cc (two letters) is required")?;
        let asn = parse_asn(self.asn.as_deref())?;
        let until = param_time(&self.until, "until")?.unwrap_or(now_secs);
        let since = param_time(&self.since, "since")?.unwrap_or(until - 86_400);
        if since >= until {
            return Err("since must be before until".into());
        }
        if until - since > MAX_SIGNAL_DAYS * 86_400 {
            return Err(format!("at most {MAX_SIGNAL_DAYS} days per request"));
        }
        Ok(SignalQuery {
            cc: cc.to_ascii_uppercase(),
            asn,
            from_bin: since.div_euclid(BIN_SECONDS),
            to_bin: (until + BIN_SECONDS - 1).div_euclid(BIN_SECONDS),
        })
    }
}

/// A network's signals in 5-minute bins: probes heard from, heartbeats, canary success,
/// anomaly ratio by layer.
#[utoipa::path(get, path = "/api/v1/signals", tag = "research",
    params(SignalParams),
    responses(
        (status = 200, description = "The bins; bins with nothing heard are absent", body = SignalsAnswer),
        (status = 400, description = "Missing cc, bad time or range", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn signals_route(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<SignalParams>,
) -> Response {
    let query = match params.to_query(crate::store::now()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (cc, asn) = (query.cc.clone(), query.asn.map(|a| format!("AS{a}")));
    let verification = state.verification;
    match tokio::task::spawn_blocking(move || signals::query(&*state.storage, &query, verification))
        .await
    {
        Ok(Ok(bins)) => axum::Json(SignalsAnswer {
            cc,
            asn,
            bin_seconds: BIN_SECONDS,
            bins,
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The signed envelope of one measurement, byte for byte, so anyone can verify it.
#[utoipa::path(get, path = "/api/v1/measurements/{id}", tag = "research",
    params(("id" = String, Path, description = "The measurement id: 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = 200, description = "One JSON line: the envelope as uploaded", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "Not an id", body = ErrorAnswer),
        (status = 404, description = "Unknown id", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn by_id(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::BAD_REQUEST, "an id is 64 hex digits".into());
    }
    match tokio::task::spawn_blocking(move || state.storage.envelope(&id)).await {
        Ok(Ok(Some(envelope))) => (
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            format!("{envelope}\n"),
        )
            .into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no such measurement".into()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The web page: one file, no external resources, so it works offline (README.md, "Timeline").
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// The timeline web page: one self-contained HTML file that works offline.
#[utoipa::path(get, path = "/", tag = "research",
    responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        INDEX_HTML,
    )
        .into_response()
}

/// Parameters of `GET /api/v1/timeline`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineParams {
    /// Country; all countries when absent.
    pub cc: Option<String>,
    /// `AS<n>`: events touching this network.
    pub asn: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: seven days before `until`.
    pub since: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: now.
    pub until: Option<String>,
    /// `shutdown`, `blocking` or `throttling`.
    #[param(pattern = "^(shutdown|blocking|throttling)$")]
    pub kind: Option<String>,
    /// `json` (default) or `csv`: one line per event, lists joined with spaces, how its
    /// evidence arrived in the last columns (`arrival_upload` ... `arrival_last`).
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

impl TimelineParams {
    /// The storage query, or why the parameters make none.
    pub fn to_query(&self, now_secs: i64) -> Result<TimelineQuery, String> {
        let cc = match self.cc.as_deref().filter(|c| !c.is_empty()) {
            Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(c.to_ascii_uppercase())
            }
            Some(c) => return Err(format!("cc {c:?} is not a two-letter country code")),
            None => None,
        };
        let until = param_time(&self.until, "until")?.unwrap_or(now_secs);
        let since = param_time(&self.since, "since")?.unwrap_or(until - 7 * 86_400);
        if since >= until {
            return Err("since must be before until".into());
        }
        let kind = match self.kind.as_deref().filter(|k| !k.is_empty()) {
            None => None,
            Some("shutdown") => Some(Kind::Shutdown),
            Some("blocking") => Some(Kind::Blocking),
            Some("throttling") => Some(Kind::Throttling),
            Some(k) => {
                return Err(format!(
                    "kind {k:?} is not one of shutdown, blocking, throttling"
                ));
            }
        };
        Ok(TimelineQuery {
            cc,
            asn: parse_asn(self.asn.as_deref())?,
            since,
            until,
            kind,
        })
    }
}

/// Shutdown, blocking and throttling events with the ids of their evidence, as JSON or CSV
/// (README.md, "Timeline: shutdowns, blocking and throttling").
#[utoipa::path(get, path = "/api/v1/timeline", tag = "research",
    params(TimelineParams),
    responses(
        (status = 200, description = "The events", content(
            (TimelineAnswer = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "Bad cc, asn, time, range, kind or format", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn timeline_route(
    State(state): State<AppState>,
    QueryParams(params): QueryParams<TimelineParams>,
) -> Response {
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("format {f:?} is not json or csv"),
            );
        }
    };
    let query = match params.to_query(crate::store::now()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (cc, since, until) = (
        query.cc.clone(),
        crate::detect::format_time(query.since),
        crate::detect::format_time(query.until),
    );
    // JSON and CSV both say how each event's evidence arrived (the CSV in its `arrival_`
    // columns): one grouped query per event.
    let timeline = move || crate::store::timeline_with_arrivals(state.storage.as_ref(), &query);
    match tokio::task::spawn_blocking(timeline).await {
        Ok(Ok(events)) if csv => {
            let mut body = format!("{}\n", crate::api::csv_line::CSV_HEADER);
            for e in &events {
                body.push_str(&crate::api::csv_line::csv_row(e));
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
        Ok(Ok(events)) => axum::Json(TimelineAnswer {
            cc,
            since,
            until,
            events,
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Countries with signals, for the web page's picker.
#[utoipa::path(get, path = "/api/v1/countries", tag = "research",
    responses(
        (status = 200, description = "The countries", body = CountriesAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
async fn countries_route(State(state): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || state.storage.countries()).await {
        Ok(Ok(list)) => axum::Json(CountriesAnswer {
            countries: list
                .into_iter()
                .map(|(cc, networks, events)| Country {
                    cc,
                    networks,
                    events,
                })
                .collect(),
        })
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
