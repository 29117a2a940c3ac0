//! The aggregator's HTTP server: ingest, the researcher API, whoami, the test helper, health.
//!
//! The caller's IP address is used by whoami for one lookup and dropped; no handler logs it and
//! no table stores it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::json;
use vantage_probe::engine::TlsContext;
use vantage_probe::ooni::{Asn, ControlRequest, CountryCode};
use vantage_probe::th::{HelperConfig, answer};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::wire::{IngestAnswer, ServerInfo, WhoAmI};

use crate::api::geo::Geo;
use crate::detect::signals::{self, SignalQuery};
use crate::detect::{Kind, TimelineQuery};
use crate::ingest::enrol::enrol;
use crate::ingest::limits::{ByteBudget, RETRY_AFTER_SECS, Slots};
use crate::ingest::stream::{
    CHANNEL_CHUNKS, ChunkReader, ChunkWriter, Ended, StreamError, ingest_lines,
};
use crate::ingest::{IngestConfig, LineOutcome, Origin, Session, Status, heartbeat};
use crate::store::model::{BIN_SECONDS, Verification, parse_time};
use crate::store::{DbError, Query, Storage};

/// Counters for `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    duplicate: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    heartbeats: AtomicU64,
    ingest_micros: AtomicU64,
    ingest_requests: AtomicU64,
}

impl Metrics {
    fn record(&self, outcomes: &[LineOutcome], took: std::time::Duration) {
        for o in outcomes {
            match o.status {
                Status::Accepted => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Status::Duplicate => {
                    self.duplicate.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    // The reason without its details, so the label set stays small.
                    let reason = o
                        .reason
                        .as_deref()
                        .unwrap_or("unknown")
                        .split(':')
                        .next()
                        .unwrap_or("unknown")
                        .to_string();
                    let mut map = self
                        .rejected
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *map.entry(reason).or_default() += 1;
                }
            }
        }
        self.ingest_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.ingest_requests.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, db_bytes: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP vantage_ingest_lines_total Lines received by outcome.\n");
        out.push_str("# TYPE vantage_ingest_lines_total counter\n");
        out.push_str(&format!(
            "vantage_ingest_lines_total{{outcome=\"accepted\"}} {}\n",
            self.accepted.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "vantage_ingest_lines_total{{outcome=\"duplicate\"}} {}\n",
            self.duplicate.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP vantage_ingest_rejected_total Lines rejected, by reason.\n");
        out.push_str("# TYPE vantage_ingest_rejected_total counter\n");
        let rejected = self
            .rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (reason, n) in rejected.iter() {
            out.push_str(&format!(
                "vantage_ingest_rejected_total{{reason=\"{}\"}} {n}\n",
                reason.replace('"', "'")
            ));
        }
        out.push_str("# HELP vantage_ingest_seconds Time spent handling ingest requests.\n");
        out.push_str("# TYPE vantage_ingest_seconds summary\n");
        #[allow(clippy::cast_precision_loss)]
        let secs = self.ingest_micros.load(Ordering::Relaxed) as f64 / 1e6;
        out.push_str(&format!("vantage_ingest_seconds_sum {secs}\n"));
        out.push_str(&format!(
            "vantage_ingest_seconds_count {}\n",
            self.ingest_requests.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP vantage_heartbeats_total Heartbeats recorded.\n");
        out.push_str("# TYPE vantage_heartbeats_total counter\n");
        out.push_str(&format!(
            "vantage_heartbeats_total {}\n",
            self.heartbeats.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP vantage_store_bytes Size of the database file and its WAL.\n");
        out.push_str("# TYPE vantage_store_bytes gauge\n");
        out.push_str(&format!("vantage_store_bytes {db_bytes}\n"));
        out
    }
}

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
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    helper: Arc<HelperConfig>,
    tls: TlsContext,
    storage: Arc<dyn Storage>,
    ingest: Arc<IngestConfig>,
    fingerprints: Arc<Fingerprints>,
    geo: Arc<Geo>,
    metrics: Arc<Metrics>,
    db_path: Option<Arc<std::path::PathBuf>>,
    signer: Option<Arc<vantage_probe::envelope::Identity>>,
    lists_dir: Option<Arc<std::path::PathBuf>>,
    throughput: Option<Arc<ServerInfo>>,
    limits: Arc<ServerLimits>,
    verification: Verification,
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
}

/// The OpenAPI document served at `/api/v1/openapi.json`; a test checks it against the routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The routes. Serve with `into_make_service_with_connect_info::<SocketAddr>()` for whoami.
pub fn router(state: AppState) -> Router {
    let request_timeout = state.limits.request_timeout;
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/throughput", get(throughput_route))
        .route(
            "/api/v1/th",
            post(test_helper).layer(DefaultBodyLimit::max(TH_BODY_LIMIT_BYTES)),
        )
        .route("/api/v1/measurements", post(upload).get(search))
        .route("/api/v1/measurements/{id}", get(by_id))
        .route(
            "/api/v1/heartbeat",
            post(beat).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .route(
            "/api/v1/enrol",
            post(enrol_route).layer(DefaultBodyLimit::max(64 * 1024)),
        )
        .route("/api/v1/signals", get(signals_route))
        .route("/api/v1/timeline", get(timeline_route))
        .route("/api/v1/countries", get(countries_route))
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/api/v1/test-lists/{cc}", get(test_lists))
        .route("/api/v1/export", get(export_route))
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .layer(middleware::from_fn_with_state(request_timeout, deadline))
        .with_state(state)
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
fn busy(what: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
        axum::Json(json!({
            "error": format!("too many {what} in progress; retry in {RETRY_AFTER_SECS} s"),
        })),
    )
        .into_response()
}

/// Media types of an upload: JSON lines, or one JSON envelope.
const UPLOAD_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
];

/// Media type of the single-envelope and test-helper routes.
const JSON_TYPES: &[&str] = &["application/json"];

/// 415 (RFC 9110 section 15.5.16) unless the body says it is one of `allowed`, so a body
/// nobody meant for this route (a form, a file) is refused before it is read.
fn content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), Box<Response>> {
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

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `POST /api/v1/th`: OONI's THRequest in, THResponse out.
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

/// `GET /api/v1/throughput`: where the throttling test downloads from, and the pin.
async fn throughput_route(State(state): State<AppState>) -> Response {
    match &state.throughput {
        Some(info) => axum::Json(info.as_ref()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "this aggregator runs no throughput server (serve --throughput-listen)".into(),
        ),
    }
}

/// `GET /api/v1/whoami`: the caller's network and country; the address is not kept.
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
fn origin(geo: &Geo, peer: SocketAddr) -> Origin {
    match geo {
        Geo::Unknown => Origin::UNKNOWN,
        geo => {
            let (asn, cc) = geo.lookup(peer.ip());
            Origin::observed(asn, &cc)
        }
    }
}

/// Whether an upload is gzip (RFC 9110 section 8.4.1.3); `Err` for an encoding the server
/// does not read.
fn gzip(headers: &HeaderMap) -> Result<bool, Box<Response>> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
    {
        None => Ok(false),
        Some(e) if e == "identity" => Ok(false),
        Some(e) if e == "gzip" => Ok(true),
        Some(_) => Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding must be gzip or none".into(),
        ))),
    }
}

/// `POST /api/v1/measurements`: signed JSONL in, one outcome per line out.
///
/// The body is not gathered: its chunks go to a worker that inflates them and ingests each line
/// as it completes (`stream.rs`), storing in batches. What one upload may hold in memory is
/// reserved from the server's byte budget before anything is read; when the budget is spent the
/// answer is 503 with `Retry-After`. A body that breaks off, exceeds the limit or arrives too
/// slowly is answered with the error and the outcomes of the lines read before it, which stay
/// stored.
async fn upload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Err(refused) = content_type(&headers, UPLOAD_TYPES) {
        return *refused;
    }
    let gzip = match gzip(&headers) {
        Ok(g) => g,
        Err(refused) => return *refused,
    };
    let max_body = state.ingest.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {max_body} bytes"),
        );
    }
    // A small plain body needs little; a compressed one may inflate to anything up to the cap.
    let want = match (gzip, declared) {
        (false, Some(n)) => n
            .saturating_mul(3)
            .saturating_add(64 << 10)
            .min(state.ingest.working_set_bytes()),
        _ => state.ingest.working_set_bytes(),
    };
    let Some(reservation) = state.limits.upload_budget.try_reserve(want) else {
        return busy("uploads");
    };
    let origin = origin(&state.geo, peer);
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let worker_state = state.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let _reservation = reservation;
        let s = &worker_state;
        let mut session = Session::new(s.storage.as_ref(), &s.ingest, &s.fingerprints, &origin);
        let reader = ChunkReader::new(rx);
        let (max_line, max_body) = (s.ingest.max_line_bytes, s.ingest.max_body_bytes);
        let ended = if gzip {
            ingest_lines(
                flate2::read::GzDecoder::new(reader),
                &mut session,
                max_line,
                max_body,
            )
        } else {
            ingest_lines(reader, &mut session, max_line, max_body)
        };
        (ended, session.finish())
    });
    let (timed_out, too_large) = forward(body, &tx, max_body, state.limits.body_timeout).await;
    drop(tx);
    let (ended, finished) = match worker.await {
        Ok(done) => done,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let results = match finished {
        Ok(results) => results,
        Err(e) => {
            tracing::error!("ingest failed: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry later".into(),
            );
        }
    };
    state.metrics.record(&results, started.elapsed());
    let full = matches!(ended, Ok(Ended::Full));
    let (status, problem) = match ended {
        Ok(Ended::Complete) if too_large => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(format!("body larger than {max_body} bytes")),
        ),
        Ok(Ended::Complete) => (StatusCode::OK, None),
        Ok(Ended::Full) => (StatusCode::OK, None),
        Err(StreamError::TooLarge(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some(format!(
                "body larger than {max_body} bytes once decompressed"
            )),
        ),
        Err(StreamError::Body(e)) if timed_out => (
            StatusCode::REQUEST_TIMEOUT,
            Some(format!("the body did not arrive in time: {e}")),
        ),
        Err(StreamError::Body(e)) => (StatusCode::BAD_REQUEST, Some(format!("bad body: {e}"))),
        Err(StreamError::Db(e)) => {
            tracing::error!("ingest failed: {e}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable, retry later".into(),
            );
        }
    };
    let incomplete = full.then(|| {
        let last = results.last().map_or(0, |o| o.line);
        format!(
            "at most {} lines are read from one request: lines after line {last} were not read; send them again",
            state.ingest.max_lines
        )
    });
    let answer = IngestAnswer {
        results,
        error: problem,
        incomplete,
    };
    (status, axum::Json(answer)).into_response()
}

/// Hands the chunks of `body` to the ingest worker until the body ends, breaks, grows past
/// `max_body` raw bytes or outlasts `limit`. Once the worker has stopped reading (it took as
/// many lines as a request may), the rest of the body is read and dropped, within the same
/// bounds, so the client still gets its answer. Returns (timed out, too large).
async fn forward(
    mut body: axum::body::Body,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, String>>,
    max_body: usize,
    limit: Duration,
) -> (bool, bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let (mut raw, mut listening) = (0usize, true);
    loop {
        let failure = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return (false, false),
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                raw = raw.saturating_add(data.len());
                if raw > max_body {
                    return (false, true);
                }
                if listening && tx.send(Ok(data)).await.is_err() {
                    listening = false;
                }
                continue;
            }
            Ok(Some(Err(e))) => (false, format!("reading it failed: {e}")),
            Err(_) => (true, format!("not complete after {} s", limit.as_secs())),
        };
        let _ = tx.send(Err(failure.1)).await;
        return (failure.0, false);
    }
}

/// `POST /api/v1/heartbeat`: one signed envelope of a `heartbeat` measurement.
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
            metrics.heartbeats.fetch_add(1, Ordering::Relaxed);
            axum::Json(json!({"status": "ok"})).into_response()
        }
        Ok(Ok(Err(reason))) => error(StatusCode::BAD_REQUEST, reason),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/v1/enrol`: one envelope of an `enrolment` measurement carrying a one-time token.
/// 403 when the token is unknown or spent, so a probe can tell "ask the operator" from a typo
/// in the request (400).
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
        Ok(Ok(Ok(key))) => axum::Json(json!({"status": "enrolled", "key": key})).into_response(),
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

/// `GET /api/v1/test-lists/{cc}`: the country's list and the global one, as a signed envelope
/// (`vantage_probe::test_lists::SignedLists`), so a probe can check them before use.
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
#[derive(Debug, Deserialize)]
pub struct ExportFormat {
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

/// `GET /api/v1/export?format=jsonl|csv&...filters`: bulk data, up to [`MAX_EXPORT`] rows.
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

/// `GET /metrics`.
async fn metrics(State(state): State<AppState>) -> Response {
    let bytes = state.db_path.as_ref().map_or(0, |p| {
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = std::path::PathBuf::from(format!("{}-wal", p.display()));
        size(p) + size(&wal)
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
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
#[derive(Debug, Default, Deserialize)]
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
    /// `false`, `dns`, `tcp_ip`, `tls`, `http-failure`, `http-diff`, or `null`.
    pub blocking: Option<String>,
    /// `true` or `false`.
    pub confirmed: Option<bool>,
    /// `YYYY-MM-DD[ HH:MM:SS]`.
    pub since: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`.
    pub until: Option<String>,
    /// The `next` value of the previous page.
    pub cursor: Option<String>,
    /// Page size, at most [`MAX_PAGE`].
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

/// `GET /api/v1/measurements`: filtered, cursor-paginated.
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
            axum::Json(json!({ "results": rows, "next": next })).into_response()
        }
        Ok(Err(e @ DbError::BadCursor(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Parameters of `GET /api/v1/signals`.
#[derive(Debug, Default, Deserialize)]
pub struct SignalParams {
    /// Country (required).
    pub cc: Option<String>,
    /// `AS<n>`; the whole country when absent.
    pub asn: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: a day before `until`.
    pub since: Option<String>,
    /// `YYYY-MM-DD[ HH:MM:SS]`; default: now.
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

/// `GET /api/v1/signals`: a network's signals in 5-minute bins.
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
        Ok(Ok(bins)) => axum::Json(json!({
            "cc": cc, "asn": asn, "bin_seconds": BIN_SECONDS, "bins": bins,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/v1/measurements/{id}`: the raw signed envelope, byte for byte, so anyone can
/// verify it.
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

/// The web page: one file, no external resources, so it works offline (issue 6, step 5).
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// `GET /`: the timeline page.
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
#[derive(Debug, Default, Deserialize)]
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
    pub kind: Option<String>,
    /// `json` (default) or `csv`.
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

/// `GET /api/v1/timeline`: events, as JSON or CSV.
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
    match tokio::task::spawn_blocking(move || state.storage.timeline(&query)).await {
        Ok(Ok(events)) if csv => {
            let mut body = format!("{}\n", crate::api::csv_line::CSV_HEADER);
            for e in &events {
                body.push_str(&crate::api::csv_line::csv_row(e));
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
        }
        Ok(Ok(events)) => axum::Json(json!({
            "cc": cc, "since": since, "until": until, "events": events,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/v1/countries`: countries with signals, for the page's picker.
async fn countries_route(State(state): State<AppState>) -> Response {
    match tokio::task::spawn_blocking(move || state.storage.countries()).await {
        Ok(Ok(list)) => axum::Json(json!({
            "countries": list.iter().map(|(cc, networks, events)| json!({
                "cc": cc, "networks": networks, "events": events,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
