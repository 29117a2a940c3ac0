//! Uploading the outbox to the aggregator (DESIGN "Aggregator", ingest).
//!
//! `POST {aggregator}/api/v1/measurements` with a body of signed envelope lines (JSONL). The
//! aggregator answers 200 with one outcome per line ([`crate::wire::IngestAnswer`], the type
//! the aggregator writes it with):
//!
//! ```text
//! {"results":[{"line":1,"id":"<hex>","status":"accepted"|"duplicate"|"rejected","reason":"..."}]}
//! ```
//!
//! Nothing the probe measured is ever deleted because of an answer: an answer only moves a
//! result's outbox row (see [`crate::store`]). `accepted` and `duplicate` both mean the
//! aggregator has it (uploads are idempotent by id). A `rejected` line is read by its reason
//! ([`classify`]): only a verdict about the bytes themselves (a bad signature that this probe
//! can confirm, a malformed measurement) takes it out of the outbox for good; any other reason
//! (a key not enrolled yet or revoked, a rate limit, a clock ahead of the aggregator's, and
//! every reason this version does not know) holds it, with the reason, to be sent again later,
//! after an enrolment, or with `vantage upload --retry-rejected`, rather than again and again
//! in a loop. A line the answer does not mention stays queued. Anything else (refused
//! connection, a stall past the deadline, HTTP 429 or 5xx, an answer that is not the JSON
//! above) is retried with exponential backoff and jitter, so that many probes coming back
//! online after a shutdown do not all retry at the same instant.

use std::time::Duration;

use url::Url;

use crate::engine::{EngineConfig, TlsContext, Trace, client};
use crate::ooni::{Asn, CountryCode};
pub use crate::route::{Relayer, Route};
use crate::store::{Delivery, Requeue, Store, StoreError};
use crate::test_lists::{SignedListError, WriteError};
pub use crate::wire::WhoAmI;
use crate::wire::{IngestAnswer, Status};

/// How to upload.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The aggregator's base URL.
    pub aggregator: Url,
    /// Envelopes per request.
    pub batch: usize,
    /// Deadline for one request.
    pub timeout: Duration,
    /// Attempts in a row that may fail before giving up for now.
    pub max_attempts: u32,
    /// First backoff; doubled after each failure, up to `max_backoff`.
    pub backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// SOCKS5 proxy for uploads (e.g. Tor at 127.0.0.1:9050).
    pub socks5: Option<std::net::SocketAddr>,
    /// Upload routes, tried in order for each request ([`crate::route`]); empty for the one
    /// route of `aggregator` (through `socks5`). Heartbeats, enrolment, whoami and the
    /// transparency log always go to `aggregator`.
    pub routes: Vec<Route>,
    /// Signs the relay header of requests that carry relayed results (`results.relayed`), so
    /// the aggregator records which probe relayed them; without it they go without one.
    pub relayer: Option<Relayer>,
}

impl UploadConfig {
    /// Defaults for `aggregator`.
    pub fn new(aggregator: Url) -> Self {
        UploadConfig {
            aggregator,
            batch: 100,
            timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            socks5: None,
            routes: Vec::new(),
            relayer: None,
        }
    }

    /// The routes uploads are tried by, in order.
    pub fn upload_routes(&self) -> Vec<Route> {
        if self.routes.is_empty() {
            vec![Route {
                url: self.aggregator.clone(),
                socks5: self.socks5,
            }]
        } else {
            self.routes.clone()
        }
    }
}

/// What an upload run achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Newly accepted by the aggregator.
    pub accepted: u64,
    /// The aggregator already had them.
    pub duplicate: u64,
    /// Refused for good for what their bytes are; out of the outbox, still stored.
    pub rejected: u64,
    /// Refused for a reason that can change; held to be sent again.
    pub held: u64,
    /// Some were held because the aggregator does not know or has revoked this probe's key:
    /// an enrolment (`vantage enrol TOKEN`) is what sends them again.
    pub key_refused: bool,
    /// Still waiting.
    pub remaining: u64,
    /// The last error, when the run gave up.
    pub error: Option<String>,
    /// How long the aggregator asked the probe to wait (`Retry-After` on a 429 or 503), when
    /// the run gave up because of it.
    pub retry_after: Option<Duration>,
    /// The route that carried the last request answered (its URL, and proxy if any).
    pub route: Option<String>,
    /// Relayed results (imported or taken by `vantage relay`) delivered by this run: accepted
    /// or duplicate, among `accepted` and `duplicate`.
    pub relayed: u64,
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("{0}")]
    Transport(String),
    #[error("aggregator answered HTTP {status}{}", retry_after.map_or(String::new(), |d| format!(" and asks to wait {} s", d.as_secs())))]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("aggregator answer is not the expected JSON: {0}")]
    Answer(String),
    /// Every route of several failed: what each said, and the last `Retry-After` given.
    #[error("every upload route failed: {message}")]
    Routes {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a rejection reason means for the result it is about. The reasons are the aggregator's
/// (DESIGN "Aggregator", ingest: "bad signature", "unknown or revoked key", "malformed", "too
/// large", "time in the future", and the limits an aggregator on the Internet adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// About the bytes themselves ("bad signature", "malformed: ..."): sending the same bytes
    /// again cannot help.
    Permanent,
    /// About this probe's key ("unknown key", "revoked key"): sent again after an enrolment,
    /// or on request, never by itself.
    Key,
    /// Likely to pass by itself soon (a rate limit, a clock a little ahead, storage busy):
    /// sent again after [`SOON`].
    Soon,
    /// Anything else, including every reason this version does not know: sent again after
    /// [`LATER`], since only the aggregator can change its mind.
    Later,
}

/// When a result held for a passing reason is sent again by itself.
pub const SOON: Duration = Duration::from_secs(3600);
/// When a result held for any other reason not about the key is sent again by itself.
pub const LATER: Duration = Duration::from_secs(86_400);
/// The longest `Retry-After` obeyed: an aggregator cannot silence a probe for longer than a
/// day with one answer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Reads an aggregator's reason for refusing a line. Unknown reasons are never permanent.
pub fn classify(reason: &str) -> Rejection {
    let r = reason.trim().to_ascii_lowercase();
    let any = |prefixes: &[&str]| prefixes.iter().any(|p| r.starts_with(p));
    if any(&["bad signature", "malformed"]) {
        Rejection::Permanent
    } else if any(&["unknown key", "revoked key"]) {
        Rejection::Key
    } else if any(&[
        "rate limited",
        "too many lines",
        "time in the future",
        "storage unavailable",
    ]) {
        Rejection::Soon
    } else {
        Rejection::Later
    }
}

/// The longest reason kept; an aggregator's reason is one short phrase.
const MAX_REASON: usize = 200;

/// A reason as it is kept and shown: printable characters only (an answer could carry
/// terminal escapes into `vantage status`), at most [`MAX_REASON`] characters.
fn clean_reason(reason: Option<&str>) -> String {
    let text: String = reason
        .unwrap_or("no reason given")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        "no reason given".into()
    } else {
        text.to_string()
    }
}

/// What the aggregator's `rejected` means for one line the probe sent (`line`, its signed
/// envelope). A "bad signature" for a line that verifies here is not about its bytes (they
/// were changed on the way, or the answer is false): it is held like any other reason.
fn rejection(reason: Option<&str>, line: &str, id_given: bool) -> Delivery {
    let reason = clean_reason(reason);
    let class = match classify(&reason) {
        Rejection::Permanent
            if crate::envelope::verify(line).is_ok()
                && !(id_given && reason.starts_with("malformed")) =>
        {
            // The signature verifies here: only a measurement the aggregator verified (it
            // names the id) and then could not read is malformed for good.
            Rejection::Later
        }
        class => class,
    };
    match class {
        Rejection::Permanent => Delivery::Rejected { reason },
        Rejection::Key => Delivery::Held {
            reason,
            retry_after: None,
        },
        Rejection::Soon => Delivery::Held {
            reason,
            retry_after: Some(SOON),
        },
        Rejection::Later => Delivery::Held {
            reason,
            retry_after: Some(LATER),
        },
    }
}

/// The delay a `Retry-After` header value asks for (RFC 9110 section 10.2.3): a number of
/// seconds, or an HTTP date (IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`) from which the
/// delay is counted from `now`. `None` when the value is neither; a date in the past is no
/// delay. Capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(value, format)
            .ok()?
            .assume_utc();
        std::time::SystemTime::from(at)
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The delay before attempt `n` (1-based) after a failure: `base * 2^(n-1)`, capped, with
/// ±50% jitter.
pub fn backoff(config: &UploadConfig, failures: u32) -> Duration {
    use ring::rand::SecureRandom as _;
    let exp = config
        .backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(config.max_backoff);
    let mut b = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    // 0.5 ..= 1.5 times the delay.
    exp.mul_f64(0.5 + f64::from(b[0]) / 255.0)
}

/// Sends everything pending in `store`, oldest first, after putting back in the queue the
/// held results whose time has come. Held results not due stay held.
pub async fn upload(
    store: &mut Store,
    config: &UploadConfig,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<UploadReport, StoreError> {
    store.requeue_held(Requeue::Due)?;
    let mut report = UploadReport::default();
    let mut failures = 0;
    let mut batch = config.batch.max(1);
    let routes = config.upload_routes();
    let mut first = 0;
    loop {
        // This probe's own results first; relayed ones in requests of their own, which carry
        // the relay header.
        let mut relayed = false;
        let mut pending = store.pending_of(batch, false)?;
        if pending.is_empty() {
            relayed = true;
            pending = store.pending_of(batch, true)?;
        }
        if pending.is_empty() {
            break;
        }
        let lines = Lines {
            pending: &pending,
            relayed,
        };
        match send_by_routes(
            store,
            lines,
            &routes,
            &mut first,
            config,
            engine,
            tls,
            &mut report,
        )
        .await
        {
            Ok(()) => failures = 0,
            Err(Attempt::Status { status: 413, .. }) if batch > 1 => batch = (batch / 2).max(1),
            Err(Attempt::Store(e)) => return Err(e),
            Err(e) => {
                failures += 1;
                let message = e.to_string();
                store.record_error(&message)?;
                tracing::warn!(attempt = failures, "upload failed: {message}");
                let asked = match e {
                    Attempt::Status { retry_after, .. } | Attempt::Routes { retry_after, .. } => {
                        retry_after
                    }
                    _ => None,
                };
                // Never sooner than the aggregator asked; beyond our own longest wait, stop
                // and let the caller come back (the daemon waits that long).
                let asked_too_long = asked.is_some_and(|d| d > config.max_backoff);
                if failures >= config.max_attempts || asked_too_long {
                    report.error = Some(message);
                    report.retry_after = asked;
                    break;
                }
                tokio::time::sleep(backoff(config, failures).max(asked.unwrap_or_default())).await;
            }
        }
    }
    report.remaining = store.status()?.pending;
    Ok(report)
}

/// One request's lines: (id, envelope) in the order sent, and whether they are relayed.
#[derive(Clone, Copy)]
struct Lines<'a> {
    pending: &'a [(String, String)],
    relayed: bool,
}

/// Sends one request by the first route that works, starting at `first` (the route that
/// worked last in this run), and leaves `first` at the route that carried it. A failure of
/// the route moves to the next one; a 413 (the batch is too large for that route) and a
/// store error do not. When every route failed, the next request starts again from the
/// first route.
#[allow(clippy::too_many_arguments)]
async fn send_by_routes(
    store: &mut Store,
    lines: Lines<'_>,
    routes: &[Route],
    first: &mut usize,
    config: &UploadConfig,
    engine: &EngineConfig,
    tls: &TlsContext,
    report: &mut UploadReport,
) -> Result<(), Attempt> {
    let mut failed = Vec::new();
    let mut retry_after = None;
    for (i, route) in routes.iter().enumerate().skip(*first) {
        match send(store, lines, route, config, engine, tls, report).await {
            Ok(()) => {
                *first = i;
                report.route = Some(route.to_string());
                return Ok(());
            }
            Err(e @ (Attempt::Store(_) | Attempt::Status { status: 413, .. })) => return Err(e),
            Err(e) if routes.len() == 1 => return Err(e),
            Err(e) => {
                tracing::info!("upload route {route} failed: {e}");
                if let Attempt::Status {
                    retry_after: Some(d),
                    ..
                } = e
                {
                    retry_after = Some(d);
                }
                failed.push(format!("{route}: {e}"));
            }
        }
    }
    *first = 0;
    Err(Attempt::Routes {
        message: failed.join("; "),
        retry_after,
    })
}

async fn send(
    store: &mut Store,
    lines: Lines<'_>,
    route: &Route,
    config: &UploadConfig,
    engine: &EngineConfig,
    tls: &TlsContext,
    report: &mut UploadReport,
) -> Result<(), Attempt> {
    let pending = lines.pending;
    let mut body = String::new();
    for (_, line) in pending {
        body.push_str(line);
        body.push('\n');
    }
    let url = route
        .url
        .join("api/v1/measurements")
        .map_err(|e| Attempt::Transport(e.to_string()))?;
    let body = body.into_bytes();
    let proof = match (&config.relayer, lines.relayed) {
        (Some(r), true) => Some(crate::relay_proof::relay_header(&r.0, &body)),
        _ => None,
    };
    let mut call = client::Call::post(&url, body, "application/x-ndjson", "application/json");
    call.timeout = config.timeout;
    call.body_cap = 4 << 20;
    call.socks5 = route.socks5;
    if let Some(proof) = proof {
        call.headers.push((crate::relay_proof::RELAY_HEADER, proof));
    }
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| Attempt::Transport(format!("{}: {e}", e.failure())))?;
    if reply.status != 200 {
        return Err(Attempt::Status {
            status: reply.status,
            retry_after: reply_retry_after(&reply),
        });
    }
    let answer: IngestAnswer =
        serde_json::from_slice(&reply.body).map_err(|e| Attempt::Answer(e.to_string()))?;
    let leaves = leaf_indexes(&answer, pending);
    let outcomes = read_answer(answer, pending, report);
    if outcomes.is_empty() {
        return Err(Attempt::Answer("no outcome for any line sent".into()));
    }
    if lines.relayed {
        report.relayed += outcomes
            .iter()
            .filter(|(_, d)| matches!(d, Delivery::Accepted | Delivery::Duplicate))
            .count() as u64;
    }
    store.record_outcomes(&outcomes)?;
    for (id, kept, given) in store.record_leaves(&leaves)? {
        // The proof round checks the leaf kept; a log that moved it fails that check.
        tracing::warn!("the aggregator gave {id} leaf {given} now and leaf {kept} before");
    }
    Ok(())
}

/// How long a 429 or 503 asks the probe to wait: its `Retry-After` header (RFC 9110 section
/// 10.2.3), read with [`retry_after`].
fn reply_retry_after(reply: &client::Reply) -> Option<Duration> {
    reply
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()
        .and_then(|v| retry_after(v, std::time::SystemTime::now()))
}

/// The leaf each accepted or duplicate line was given in the transparency log (the answer's
/// optional `leaf_index`, `docs/transparency.md`), for the ids sent only.
fn leaf_indexes(answer: &IngestAnswer, pending: &[(String, String)]) -> Vec<(String, u64)> {
    answer
        .results
        .iter()
        .filter(|o| matches!(o.status, Status::Accepted | Status::Duplicate))
        .filter_map(|o| {
            let id = o.id.as_ref()?;
            let index = o.leaf_index?;
            pending
                .iter()
                .any(|(p, _)| p == id)
                .then(|| (id.clone(), index))
        })
        .collect()
}

/// Matches each outcome of `answer` with a line sent (`pending`, in the order sent) and says
/// what it means for it. A line is found by the id the outcome names, else (an envelope the
/// aggregator could not verify has no id) by its 1-based line number. Outcomes for lines not
/// sent, a second outcome for one line, an `accepted` or `duplicate` without the line's id,
/// and statuses this version does not know are ignored: their lines stay queued.
fn read_answer(
    answer: IngestAnswer,
    pending: &[(String, String)],
    report: &mut UploadReport,
) -> Vec<(String, Delivery)> {
    let mut seen = vec![false; pending.len()];
    let mut outcomes = Vec::new();
    for outcome in answer.results {
        let index = match &outcome.id {
            Some(id) => pending.iter().position(|(p, _)| p == id),
            // Line 0 is what an outcome without a number reads as: no line.
            None => usize::try_from(outcome.line)
                .ok()
                .and_then(|l| l.checked_sub(1))
                .filter(|i| *i < pending.len()),
        };
        let Some(i) = index else { continue };
        if seen[i] {
            continue;
        }
        let (id, line) = &pending[i];
        let id_given = outcome.id.is_some();
        let delivery = match outcome.status {
            Status::Accepted if id_given => Delivery::Accepted,
            Status::Duplicate if id_given => Delivery::Duplicate,
            Status::Rejected => rejection(outcome.reason.as_deref(), line, id_given),
            _ => continue,
        };
        match &delivery {
            Delivery::Accepted => report.accepted += 1,
            Delivery::Duplicate => report.duplicate += 1,
            Delivery::Rejected { .. } => report.rejected += 1,
            Delivery::Held { reason, .. } => {
                report.held += 1;
                report.key_refused |= classify(reason) == Rejection::Key;
            }
        }
        seen[i] = true;
        outcomes.push((id.clone(), delivery));
    }
    outcomes
}

/// Sends a signed "I am alive" (`POST /api/v1/heartbeat`): an envelope of a minimal OONI-format
/// measurement with `test_name: heartbeat`, so the aggregator can tell a network that went dark
/// from a probe that was switched off (DESIGN "Tests the probe runs").
pub async fn heartbeat(
    identity: &crate::envelope::Identity,
    config: &UploadConfig,
    cc: CountryCode,
    asn: Asn,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<(), String> {
    let control = Control {
        test_name: "heartbeat",
        test_keys: serde_json::json!({}),
        path: "api/v1/heartbeat",
    };
    control.send(identity, config, cc, asn, engine, tls).await
}

/// Enrols this probe's key with a one-time token from the aggregator's operator
/// (`POST /api/v1/enrol`, for aggregators run with `--require-enrolment`). The token travels
/// inside an envelope signed by the key, which proves the sender holds it.
pub async fn enrol(
    identity: &crate::envelope::Identity,
    config: &UploadConfig,
    token: &str,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<(), String> {
    let control = Control {
        test_name: "enrolment",
        test_keys: serde_json::json!({ "token": token }),
        path: "api/v1/enrol",
    };
    let zz = CountryCode::UNKNOWN;
    control
        .send(identity, config, zz, Asn(0), engine, tls)
        .await
}

/// A signed message to the aggregator that is not a measurement result: an envelope of a
/// minimal OONI-format measurement, so it is checked exactly like one.
struct Control {
    test_name: &'static str,
    test_keys: serde_json::Value,
    path: &'static str,
}

impl Control {
    async fn send(
        self,
        identity: &crate::envelope::Identity,
        config: &UploadConfig,
        cc: CountryCode,
        asn: Asn,
        engine: &EngineConfig,
        tls: &TlsContext,
    ) -> Result<(), String> {
        let mut m = crate::ooni::Measurement::vantage(self.test_name, "0.1.0", self.test_keys);
        m.probe_cc = cc;
        m.probe_asn = asn;
        let json = serde_json::to_string(&m).map_err(|e| e.to_string())?;
        let (_, line) = identity.seal(&json).map_err(|e| e.to_string())?;
        let url = config
            .aggregator
            .join(self.path)
            .map_err(|e| e.to_string())?;
        let mut call = client::Call::post(
            &url,
            line.into_bytes(),
            "application/json",
            "application/json",
        );
        call.timeout = config.timeout;
        call.socks5 = config.socks5;
        let reply = client::send(call, engine, tls, &Trace::new())
            .await
            .map_err(|e| e.failure().to_string())?;
        match reply.status {
            200 => Ok(()),
            status => Err(format!(
                "aggregator answered HTTP {status}: {}",
                String::from_utf8_lossy(&reply.body)
            )),
        }
    }
}

/// Asks the aggregator where this probe is. Never through a proxy: that would locate the proxy.
pub async fn whoami(
    aggregator: &Url,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<WhoAmI, String> {
    get_json(aggregator, "api/v1/whoami", engine, tls).await
}

/// Asks the aggregator where its throughput server is and which certificate to pin, for the
/// throttling test. Asked directly, like whoami: the answer must hold on this network.
pub async fn throughput(
    aggregator: &Url,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<crate::throttling::ServerInfo, String> {
    get_json(aggregator, "api/v1/throughput", engine, tls).await
}

/// `GET` of a small JSON document of the aggregator's API.
async fn get_json<T: serde::de::DeserializeOwned>(
    aggregator: &Url,
    path: &str,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<T, String> {
    let url = aggregator.join(path).map_err(|e| e.to_string())?;
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = engine.timeouts.http;
    call.body_cap = 64 * 1024;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| e.failure().to_string())?;
    if reply.status != 200 {
        let detail = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| format!(": {e}")))
            .unwrap_or_default();
        return Err(format!(
            "aggregator answered HTTP {} to {path}{detail}",
            reply.status
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("unexpected answer to {path}: {e}"))
}

/// Test lists fetched from the aggregator and kept in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedLists {
    /// The aggregator key that signed them, now pinned in `aggregator.key`.
    pub key: String,
    /// How that key came to be trusted.
    pub trust: KeyTrust,
    /// Each list kept: name, URL rows, file written.
    pub files: Vec<(String, usize, std::path::PathBuf)>,
}

/// Why the key that signed fetched lists was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTrust {
    /// It is the key pinned by an earlier fetch.
    Pinned,
    /// The operator gave it (`--aggregator-key`, the daemon's `aggregator.key`); it is pinned
    /// now if it was not already.
    Given {
        /// Whether it replaced another pinned key or none.
        newly_pinned: bool,
    },
    /// Seen for the first time over HTTPS, trusted on first use and pinned.
    FirstUse,
}

/// Why fetched test lists were not kept. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or the answer is not a document.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// What was asked for.
        url: String,
        /// Why.
        reason: String,
    },
    /// No key is pinned or given, and the aggregator is reached over plain HTTP, where anyone
    /// on the way could answer with lists signed by a key of their own.
    #[error(
        "test lists refused: {url} is plain HTTP and no aggregator key is pinned, so the key \
         that signed them cannot be trusted on first use (anyone on the way could have signed \
         them). Pin the key the aggregator's operator publishes: `vantage lists fetch \
         --aggregator-key KEY ...` (daemon: `key = \"KEY\"` under [aggregator]), or use an \
         https:// aggregator URL"
    )]
    FirstUseOverHttp {
        /// The URL asked.
        url: String,
    },
    /// A key given or pinned is not a base64 Ed25519 public key.
    #[error("{what} {key:?} is not a base64 Ed25519 public key")]
    BadKey {
        /// Where it came from: the option, or the pin file.
        what: String,
        /// What it holds.
        key: String,
    },
    /// The document does not verify or its content is refused.
    #[error(transparent)]
    Refused(#[from] SignedListError),
    /// The lists could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The file in the data directory that pins the aggregator's list-signing key.
pub const PIN_FILE: &str = "aggregator.key";

/// Downloads a country's list and the global one (`GET /api/v1/test-lists/{cc}`), checks the
/// aggregator's signature against `key` (else the key pinned in `data_dir/aggregator.key`, else,
/// only over HTTPS, the key seen now, trusted on first use and pinned), and writes each list
/// to `data_dir/lists/<name>.csv`, where it replaces the built-in list. Over plain HTTP a first
/// use is refused: the answer may come from anyone on the way. Nothing is written unless the
/// whole document verifies and every list in it has a list name and parses; the files are
/// replaced through temporary files and renames ([`crate::test_lists::replace_files`]).
pub async fn fetch_lists(
    aggregator: &Url,
    cc: CountryCode,
    key: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<FetchedLists, FetchError> {
    let url = aggregator
        .join(&format!(
            "api/v1/test-lists/{}",
            cc.as_str().to_ascii_lowercase()
        ))
        .map_err(|e| FetchError::Fetch {
            url: aggregator.to_string(),
            reason: e.to_string(),
        })?;
    let fetch_error = |reason: String| FetchError::Fetch {
        url: url.to_string(),
        reason,
    };
    let given = key.map(str::trim);
    if let Some(given) = given
        && crate::envelope::parse_public_key(given).is_none()
    {
        return Err(FetchError::BadKey {
            what: "the aggregator key".into(),
            key: given.to_string(),
        });
    }
    let pin = data_dir.join(PIN_FILE);
    let pinned = match std::fs::read_to_string(&pin) {
        Ok(text) => {
            let text = text.trim().to_string();
            if crate::envelope::parse_public_key(&text).is_none() {
                return Err(FetchError::BadKey {
                    what: format!("the pinned key in {}", pin.display()),
                    key: text.chars().take(100).collect(),
                });
            }
            Some(text)
        }
        Err(_) => None,
    };
    if given.is_none() && pinned.is_none() && url.scheme() != "https" {
        // Refused before asking: nothing from this answer could be trusted.
        return Err(FetchError::FirstUseOverHttp {
            url: url.to_string(),
        });
    }
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = engine.timeouts.http;
    call.body_cap = 16 << 20;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| fetch_error(e.failure().to_string()))?;
    if reply.status != 200 {
        return Err(fetch_error(format!("HTTP {}", reply.status)));
    }
    let line =
        String::from_utf8(reply.body).map_err(|_| fetch_error("the answer is not UTF-8".into()))?;
    let (expected, trust) = match (given, pinned) {
        (Some(given), pinned) => (
            given.to_string(),
            KeyTrust::Given {
                newly_pinned: pinned.as_deref() != Some(given),
            },
        ),
        (None, Some(pinned)) => (pinned, KeyTrust::Pinned),
        (None, None) => {
            let seen = crate::envelope::verify(line.trim())
                .map_err(SignedListError::from)?
                .key;
            (seen, KeyTrust::FirstUse)
        }
    };
    let lists = crate::test_lists::SignedLists::verify(&line, &expected)?;
    if trust != KeyTrust::Pinned {
        crate::test_lists::replace_files(
            data_dir,
            &[(PIN_FILE.to_string(), format!("{expected}\n").as_bytes())],
        )?;
    }
    let named: Vec<(String, &[u8])> = lists
        .lists
        .iter()
        .map(|(name, text)| (format!("{name}.csv"), text.as_bytes()))
        .collect();
    let written = crate::test_lists::replace_files(&data_dir.join("lists"), &named)?;
    let files = lists
        .lists
        .iter()
        .zip(written)
        .map(|((name, text), file)| (name.clone(), text.lines().count().saturating_sub(1), file))
        .collect();
    Ok(FetchedLists {
        key: expected,
        trust,
        files,
    })
}

/// Proofs asked for in one round at most: a round stays short, and the rest wait for the
/// next one (results are proven a few rounds after a large backlog is uploaded).
pub const PROOFS_PER_ROUND: usize = 200;

/// What one round of checking the aggregator's transparency log found
/// (`docs/transparency.md`, "The probe").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogReport {
    /// The aggregator keeps no log (404 on `/log/checkpoint`): its results are not logged.
    pub no_log: bool,
    /// The verified checkpoint the round ended on.
    pub checkpoint: Option<crate::tlog::Checkpoint>,
    /// The aggregator's key was trusted on first use now and pinned: the key.
    pub pinned_now: Option<String>,
    /// Inclusion proofs fetched and verified now.
    pub proven: u64,
    /// Results with a leaf still without a proof.
    pub awaiting: u64,
    /// New evidence that the log is not append-only, each already kept in the store.
    pub forks: Vec<crate::store::LogFork>,
    /// The log could not be trusted this round for a reason that is not a network's: its
    /// checkpoint does not verify with the aggregator's key.
    pub failure: Option<String>,
    /// The round could not finish for now (unreachable, busy); the next one tries again.
    pub error: Option<String>,
}

impl LogReport {
    /// Whether a human must look: a fork, a rewrite, or a checkpoint that does not verify.
    pub fn alarming(&self) -> bool {
        !self.forks.is_empty() || self.failure.is_some()
    }
}

/// The first three lines of a checkpoint (origin, size, root) on one line, to name it in a
/// message; anything else is shown cut and without control characters.
pub fn describe_note(note: &str) -> String {
    let mut lines = note.lines();
    match (lines.next(), lines.next(), lines.next()) {
        (Some(origin), Some(size), Some(root)) if size.bytes().all(|b| b.is_ascii_digit()) => {
            format!("size {size} of {origin} (root {root})")
        }
        _ => clean_reason(Some(note)),
    }
}

/// The loud message of a fork, naming both checkpoints.
pub fn fork_message(fork: &crate::store::LogFork) -> String {
    format!(
        "the aggregator's transparency log is not append-only: {}\n  earlier checkpoint: {}\n  \
         later checkpoint:   {}\n  both are kept in the local store as evidence; no result was \
         deleted or sent again because of it",
        fork.reason,
        describe_note(&fork.old_note),
        describe_note(&fork.new_note)
    )
}

/// The key that signs the aggregator's checkpoints: the one given (`aggregator.key`), else the
/// one pinned in `data_dir/aggregator.key` (by `vantage lists fetch`), else, over HTTPS only,
/// the key that signs its test lists now, trusted on first use (and pinned by the caller once
/// a checkpoint verifies with it). Over plain HTTP a first use is refused, as for test lists:
/// anyone on the way could answer. `Ok((key, first_use))`.
async fn log_key(
    config: &UploadConfig,
    given: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<([u8; 32], bool), String> {
    let decode = |text: &str, what: &str| -> Result<[u8; 32], String> {
        crate::envelope::parse_public_key(text.trim())
            .map(|k| k.to_bytes())
            .ok_or_else(|| format!("{what} {text:?} is not a base64 Ed25519 public key"))
    };
    if let Some(given) = given {
        return decode(given, "the aggregator key").map(|k| (k, false));
    }
    let pin = data_dir.join(PIN_FILE);
    if let Ok(text) = std::fs::read_to_string(&pin) {
        let what = format!("the pinned key in {}", pin.display());
        return decode(text.trim(), &what).map(|k| (k, false));
    }
    if config.aggregator.scheme() != "https" {
        return Err(format!(
            "no aggregator key is pinned, and {} is plain HTTP, where the key cannot be \
             trusted on first use. Pin the key the aggregator's operator publishes: \
             `vantage lists fetch --aggregator-key KEY ...` (daemon: `key = \"KEY\"` under \
             [aggregator])",
            config.aggregator
        ));
    }
    let url = config
        .aggregator
        .join("api/v1/test-lists/zz")
        .map_err(|e| e.to_string())?;
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = config.timeout;
    call.body_cap = 16 << 20;
    call.socks5 = config.socks5;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| format!("{url}: {}", e.failure()))?;
    if reply.status != 200 {
        return Err(format!(
            "{url}: HTTP {} (no key to check the log with)",
            reply.status
        ));
    }
    let line = String::from_utf8_lossy(&reply.body);
    let key = crate::envelope::verify(line.trim())
        .map_err(|e| format!("{url}: {e}"))?
        .key;
    decode(&key, "the key seen").map(|k| (k, true))
}

/// One round of checking the aggregator's transparency log (`docs/transparency.md`, "The
/// probe"): fetches `/log/checkpoint` and checks its signature with the aggregator's key
/// ([`log_key`]); checks that it extends the checkpoint kept last (from `/log/tile/...`) and
/// keeps it; then fetches, checks and keeps the inclusion proofs of up to
/// [`PROOFS_PER_ROUND`] results that have a leaf and no proof. A probe with no leaf and no
/// checkpoint kept asks nothing. A fork or rewrite is kept in
/// the store with both checkpoints and returned in [`LogReport::forks`]; nothing is deleted or
/// sent again because of it. An aggregator without a log is no error ([`LogReport::no_log`]).
pub async fn check_log(
    store: &mut Store,
    config: &UploadConfig,
    given_key: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<LogReport, StoreError> {
    use crate::store::LogFork;
    use crate::tlog::{self, HttpTiles, ProofAnswer, TlogError};

    let mut report = LogReport::default();
    // Nothing to prove and no checkpoint to hold the log to (an aggregator older than the
    // log, or without one, gives no leaf): no request.
    if store.unproven(1)?.is_empty() && store.log_status()?.checkpoint.is_none() {
        return Ok(report);
    }
    let http = HttpTiles::new(&config.aggregator, engine, tls, config.socks5);
    let note = match http.checkpoint().await {
        Ok(Some(note)) => note,
        Ok(None) => {
            report.no_log = true;
            return Ok(report);
        }
        Err(e) => {
            report.error = Some(e.to_string());
            report.awaiting = store.unproven(usize::MAX)?.len() as u64;
            return Ok(report);
        }
    };
    let (key, first_use) = match log_key(config, given_key, data_dir, engine, tls).await {
        Ok(k) => k,
        Err(e) => {
            report.error = Some(e);
            report.awaiting = store.unproven(usize::MAX)?.len() as u64;
            return Ok(report);
        }
    };
    let mut current = match tlog::verify_checkpoint(&note, &key) {
        Ok(c) => c,
        Err(e) => {
            report.failure = Some(format!(
                "the checkpoint {} does not verify with the aggregator's key {}: {e}",
                describe_note(&note),
                base64_key(&key)
            ));
            return Ok(report);
        }
    };
    if first_use {
        let pinned = base64_key(&key);
        if let Err(e) = crate::test_lists::replace_files(
            data_dir,
            &[(PIN_FILE.to_string(), format!("{pinned}\n").as_bytes())],
        ) {
            tracing::warn!("cannot pin the aggregator's key: {e}");
        }
        report.pinned_now = Some(pinned);
    }
    let fork = |old: &str, new: &str, reason: String| LogFork {
        origin: current_origin(&note),
        old_note: old.to_string(),
        new_note: new.to_string(),
        reason,
        seen_at: unix_now(),
    };
    // Keeps evidence of a fork; says whether it is new.
    let alarm = |store: &Store, report: &mut LogReport, f: LogFork| -> Result<(), StoreError> {
        if store.add_fork(&f)? {
            report.forks.push(f);
        }
        Ok(())
    };

    // The checkpoint served must extend the one kept last.
    let previous = store.latest_checkpoint(&current.origin)?.map(|(c, _)| c);
    if let Some(old) = &previous {
        match http
            .run(|t| tlog::verify_consistency(old, &current, t))
            .await
        {
            Ok(()) => {}
            Err(e @ TlogError::Inconsistent { .. }) => {
                alarm(
                    store,
                    &mut report,
                    fork(&old.note, &current.note, finding(&e)),
                )?;
            }
            Err(e) => {
                // Not known either way (a tile could not be fetched): the checkpoint is not
                // kept, so the next round checks it again.
                report.error = Some(format!(
                    "consistency of checkpoint {} with {} not checked: {e}",
                    current.size, old.size
                ));
                report.awaiting = store.unproven(usize::MAX)?.len() as u64;
                return Ok(report);
            }
        }
    }
    // Kept in every case: after a fork, both checkpoints are the evidence, and the next
    // checkpoint is checked against this one.
    store.add_checkpoint(&current)?;

    for want in store.unproven(PROOFS_PER_ROUND)? {
        store.mark_asked(&want.id)?;
        let answer = match http.proof(&want.id).await {
            Ok(a) => a,
            Err(e) => {
                report.error = Some(e.to_string());
                break;
            }
        };
        let proof = match answer {
            ProofAnswer::Proof(p) => p,
            ProofAnswer::Later(_) => break,
            ProofAnswer::NotLogged(why) => {
                let reason = format!(
                    "measurement {} was given leaf {} when it was uploaded, and the log now says \
                     it does not hold it ({})",
                    want.id,
                    want.leaf_index,
                    clean_reason(Some(&why))
                );
                alarm(
                    store,
                    &mut report,
                    fork(&current.note, &current.note, reason),
                )?;
                continue;
            }
        };
        // The leaf must be this result's: its id and the key that signed it.
        let leaf = crate::envelope::verify(&want.envelope)
            .ok()
            .and_then(|v| tlog::leaf(&want.id, &v.key).ok());
        let Some(leaf) = leaf else {
            tracing::warn!("stored result {} has no leaf of its own", want.id);
            continue;
        };
        let proof_checkpoint = match tlog::verify_checkpoint(&proof.checkpoint, &key) {
            Ok(c) => c,
            Err(e) => {
                report.failure = Some(format!(
                    "the checkpoint of the proof of {} does not verify with the aggregator's \
                     key: {e}",
                    want.id
                ));
                break;
            }
        };
        if proof_checkpoint != current {
            // A newer checkpoint (or, from a forked log, another one): it must extend the one
            // this round checked, or be extended by it.
            let (old, new) = if proof_checkpoint.size >= current.size {
                (&current, &proof_checkpoint)
            } else {
                (&proof_checkpoint, &current)
            };
            match http.run(|t| tlog::verify_consistency(old, new, t)).await {
                Ok(()) => {}
                Err(e @ TlogError::Inconsistent { .. }) => {
                    alarm(store, &mut report, fork(&old.note, &new.note, finding(&e)))?;
                    store.add_checkpoint(&proof_checkpoint)?;
                    continue;
                }
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            }
            store.add_checkpoint(&proof_checkpoint)?;
            if proof_checkpoint.size > current.size {
                current = proof_checkpoint.clone();
            }
        }
        let checked = if proof.leaf != leaf {
            Err(format!(
                "the log's leaf {} for measurement {} is not its id and key",
                proof.leaf_index, want.id
            ))
        } else if proof.leaf_index != want.leaf_index {
            Err(format!(
                "measurement {} was given leaf {} when it was uploaded, and the log now has it \
                 at leaf {}",
                want.id, want.leaf_index, proof.leaf_index
            ))
        } else if proof.tree_size != proof_checkpoint.size {
            Err(format!(
                "the proof of {} says tree size {} but its checkpoint is of size {}",
                want.id, proof.tree_size, proof_checkpoint.size
            ))
        } else {
            tlog::verify_inclusion(&leaf, proof.leaf_index, &proof.hashes, &proof_checkpoint)
                .map_err(|e| format!("measurement {}: {e}", want.id))
        };
        match checked {
            Ok(()) => {
                store.record_proof(&want.id, &proof.hashes, &proof_checkpoint)?;
                report.proven += 1;
            }
            Err(reason) => alarm(
                store,
                &mut report,
                fork(&current.note, &proof_checkpoint.note, reason),
            )?,
        }
    }
    report.checkpoint = Some(current);
    report.awaiting = store.unproven(usize::MAX)?.len() as u64;
    Ok(report)
}

/// What a failed consistency check found, for a message that names both checkpoints itself.
fn finding(e: &crate::tlog::TlogError) -> String {
    match e {
        crate::tlog::TlogError::Inconsistent { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

/// The origin line of a checkpoint.
fn current_origin(note: &str) -> String {
    note.lines().next().unwrap_or_default().to_string()
}

fn base64_key(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_verdicts_about_the_bytes_are_permanent_and_unknown_reasons_are_held() {
        let cases = [
            ("bad signature", Rejection::Permanent),
            ("malformed: missing field `input`", Rejection::Permanent),
            ("malformed envelope: EOF", Rejection::Permanent),
            ("unknown key", Rejection::Key),
            ("revoked key", Rejection::Key),
            ("Unknown Key", Rejection::Key),
            ("time in the future", Rejection::Soon),
            (
                "rate limited: this key sent more than 1000 lines this hour",
                Rejection::Soon,
            ),
            ("too many lines in one body", Rejection::Soon),
            ("storage unavailable, retry later", Rejection::Soon),
            ("too large: 2000000 bytes", Rejection::Later),
            ("probe_ip is not 127.0.0.1", Rejection::Later),
            ("time before 2012", Rejection::Later),
            ("a reason from a newer aggregator", Rejection::Later),
            ("", Rejection::Later),
        ];
        for (reason, class) in cases {
            assert_eq!(classify(reason), class, "{reason:?}");
        }
    }

    #[test]
    fn reasons_are_kept_printable_and_short() {
        assert_eq!(clean_reason(None), "no reason given");
        assert_eq!(clean_reason(Some(" \u{1b}[2J ")), "[2J");
        assert_eq!(clean_reason(Some("unknown\nkey")), "unknown key");
        assert_eq!(clean_reason(Some(&"x".repeat(10_000))).len(), MAX_REASON);
    }

    /// Two envelope lines of one probe: (id, line).
    fn lines(n: usize) -> Vec<(String, String)> {
        let probe = crate::envelope::Identity::generate().expect("key");
        (0..n)
            .map(|i| {
                let (id, line) = probe
                    .seal(&format!(r#"{{"test_name":"canary","n":{i}}}"#))
                    .expect("seal");
                (id.to_string(), line)
            })
            .collect()
    }

    fn answer(json: serde_json::Value) -> IngestAnswer {
        serde_json::from_value(json).expect("answer")
    }

    #[test]
    fn a_bad_signature_for_a_line_that_verifies_here_is_held() {
        let sent = lines(1);
        let (id, line) = &sent[0];
        assert_eq!(
            rejection(Some("bad signature"), line, false),
            Delivery::Held {
                reason: "bad signature".into(),
                retry_after: Some(LATER)
            }
        );
        // Bytes that really do not verify are refused for good.
        let broken = line.replace("\"n\":0", "\"n\":1");
        assert_eq!(
            rejection(Some("bad signature"), &broken, false),
            Delivery::Rejected {
                reason: "bad signature".into()
            }
        );
        // A measurement the aggregator verified (it names the id) and could not read.
        assert!(!id.is_empty());
        assert_eq!(
            rejection(Some("malformed: missing field `input`"), line, true),
            Delivery::Rejected {
                reason: "malformed: missing field `input`".into()
            }
        );
        assert_eq!(
            rejection(Some("unknown key"), line, true),
            Delivery::Held {
                reason: "unknown key".into(),
                retry_after: None
            }
        );
        assert_eq!(
            rejection(Some("rate limited: 10 lines an hour"), line, true),
            Delivery::Held {
                reason: "rate limited: 10 lines an hour".into(),
                retry_after: Some(SOON)
            }
        );
    }

    #[test]
    fn outcomes_are_matched_by_id_else_line_and_anything_else_stays_queued() {
        let sent = lines(6);
        let id = |i: usize| sent[i].0.clone();
        let mut report = UploadReport::default();
        let outcomes = read_answer(
            answer(serde_json::json!({"results": [
                {"line": 1, "id": id(0), "status": "accepted"},
                // The id wins over a wrong line number.
                {"line": 1, "id": id(1), "status": "duplicate"},
                {"line": 3, "id": null, "status": "rejected", "reason": "bad signature"},
                {"line": 4, "id": id(3), "status": "rejected", "reason": "unknown key"},
                // Not ours, out of range, a second outcome for line 1, an id-less acceptance,
                // a status this version does not know: all ignored.
                {"line": 5, "id": "f00d", "status": "accepted"},
                {"line": 99, "status": "rejected", "reason": "bad signature"},
                {"line": 1, "id": id(0), "status": "rejected", "reason": "bad signature"},
                {"line": 5, "status": "accepted"},
                {"line": 6, "id": id(5), "status": "deferred"},
            ]})),
            &sent,
            &mut report,
        );
        let got: Vec<(&str, &Delivery)> = outcomes.iter().map(|(i, d)| (i.as_str(), d)).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0], (id(0).as_str(), &Delivery::Accepted));
        assert_eq!(got[1], (id(1).as_str(), &Delivery::Duplicate));
        assert_eq!(got[2].0, id(2));
        assert!(
            matches!(got[2].1, Delivery::Held { .. }),
            "it verifies here"
        );
        assert_eq!(
            got[3].1,
            &Delivery::Held {
                reason: "unknown key".into(),
                retry_after: None
            }
        );
        assert_eq!(
            (
                report.accepted,
                report.duplicate,
                report.rejected,
                report.held
            ),
            (1, 1, 0, 2)
        );
        assert!(report.key_refused);
    }

    #[test]
    fn leaf_indexes_are_taken_for_stored_lines_sent_only() {
        let sent = lines(3);
        let id = |i: usize| sent[i].0.clone();
        let leaves = leaf_indexes(
            &answer(serde_json::json!({"results": [
                {"line": 1, "id": id(0), "status": "accepted", "leaf_index": 40},
                {"line": 2, "id": id(1), "status": "duplicate", "leaf_index": 3},
                // Refused lines, lines not sent and answers without a leaf give none.
                {"line": 3, "id": id(2), "status": "rejected", "reason": "x", "leaf_index": 9},
                {"line": 4, "id": "f00d", "status": "accepted", "leaf_index": 41},
                {"line": 3, "id": id(2), "status": "accepted"},
            ]})),
            &sent,
        );
        assert_eq!(leaves, [(id(0), 40), (id(1), 3)]);
    }

    /// Serves `answer(path)` on loopback, one request per connection; returns the base URL.
    async fn serve(answer: impl Fn(&str) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Url {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        match stream.read_line(&mut h).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) if h == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    let (status, body) = answer(&path);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let s = stream.get_mut();
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        Url::parse(&format!("http://{addr}/")).expect("url")
    }

    #[tokio::test]
    async fn proofs_are_checked_and_a_bad_proof_or_a_lost_leaf_is_kept_as_a_fork() {
        use crate::store::NewResult;
        use crate::tlog::{LogSigner, StaticLog, leaf};
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let dir = std::env::temp_dir().join(format!("vantage-loground-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("vantage.db")).expect("store");
        let sent = lines(5);
        let probe_key = crate::envelope::verify(&sent[0].1).expect("line").key;
        for (id, line) in &sent {
            store
                .insert(&NewResult {
                    id,
                    input: None,
                    test_name: "canary",
                    measured_at: "2026-11-30 00:00:00",
                    blocking: None,
                    accessible: Some(true),
                    confirmed: false,
                    verdict: "{}",
                    envelope: line,
                })
                .expect("insert");
        }
        let accepted: Vec<(String, Delivery)> = sent
            .iter()
            .map(|(id, _)| (id.clone(), Delivery::Accepted))
            .collect();
        store.record_outcomes(&accepted).expect("outcomes");
        // Result 4 was told leaf 9 at upload; the log holds it at 4.
        let mut given: Vec<(String, u64)> = sent
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i as u64))
            .collect();
        given[4].1 = 9;
        store.record_leaves(&given).expect("leaves");
        let leaves: Vec<[u8; 64]> = sent
            .iter()
            .map(|(id, _)| leaf(id, &probe_key).expect("leaf"))
            .collect();
        let log = StaticLog::from_leaves(&leaves).expect("log");
        let signer = LogSigner::from_seed(&[3; 32]).expect("key");
        let note = signer.sign(log.size, &log.root).expect("sign");
        let (ids, tiles, served) = (
            sent.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            log.tiles.clone(),
            note.clone(),
        );
        let proofs: Vec<Vec<String>> = (0..5)
            .map(|i| {
                let mut p = log.prove(i, log.size).expect("proof");
                if i == 1 {
                    p[0][0] ^= 1;
                }
                p.iter().map(|h| b64(h)).collect()
            })
            .collect();
        let leaves_b64: Vec<String> = leaves.iter().map(|l| b64(l)).collect();
        let base = serve(move |path| {
            if path == "/log/checkpoint" {
                return (200, served.clone().into_bytes());
            }
            if let Some(t) = path.strip_prefix("/log/") {
                return tiles.get(t).map_or((404, Vec::new()), |b| (200, b.clone()));
            }
            let Some(i) = path
                .strip_prefix("/api/v1/log/proof/")
                .and_then(|id| ids.iter().position(|x| x == id))
            else {
                return (404, Vec::new());
            };
            if i == 2 {
                return (404, br#"{"error":"not in the log"}"#.to_vec());
            }
            let body = serde_json::json!({
                "id": ids[i], "leaf_index": i, "leaf": leaves_b64[i], "tree_size": 5,
                "checkpoint": served, "inclusion_proof": proofs[i],
            });
            (200, body.to_string().into_bytes())
        })
        .await;
        let config = UploadConfig::new(base);
        let engine = EngineConfig::default();
        let tls = TlsContext::new(Vec::new()).expect("tls");
        // Without a pinned key, over plain HTTP: not checked, and nothing kept.
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no aggregator key is pinned"))
        );
        assert_eq!(
            (report.proven, report.awaiting, report.alarming()),
            (0, 5, false)
        );
        // With another key: the checkpoint does not verify, loudly, and is kept nowhere.
        let other = LogSigner::from_seed(&[4; 32]).expect("key");
        let report = check_log(
            &mut store,
            &config,
            Some(&b64(other.public())),
            &dir,
            &engine,
            &tls,
        )
        .await
        .expect("round");
        assert!(
            report
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("does not verify")),
            "{report:?}"
        );
        assert!(report.alarming());
        assert_eq!(store.log_status().expect("status").checkpoint, None);
        // Pinned: two proven; the bent proof, the lost leaf and the moved leaf kept as forks.
        std::fs::write(dir.join(PIN_FILE), format!("{}\n", b64(signer.public()))).expect("pin");
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert_eq!((report.proven, report.awaiting), (2, 3), "{report:?}");
        let reasons: Vec<&str> = report.forks.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("is not proven in the tree of size 5")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("the log now says it does not hold it")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains(
                "was given leaf 9 when it was uploaded, and the log now has it at leaf 4"
            )),
            "{reasons:?}"
        );
        let status = store.log_status().expect("status");
        assert_eq!((status.proven, status.forks.len()), (2, 3));
        assert_eq!(status.checkpoint.map(|c| c.0.note), Some(note));
        // The same findings again are not new: reported once.
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert!(report.forks.is_empty(), "{report:?}");
        assert_eq!(store.list(10).expect("list").len(), 5, "nothing deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_is_named_by_its_first_lines() {
        assert_eq!(
            describe_note("vantage.invalid/ab\n12\nROOT=\n\n— sig\n"),
            "size 12 of vantage.invalid/ab (root ROOT=)"
        );
        assert_eq!(describe_note("\u{1b}[2J junk"), "[2J junk");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example date).
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past is no wait"
        );
        assert_eq!(retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
        for bad in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994 08:51:37 PST"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_first_use_over_plain_http_is_refused_before_asking() {
        let data = std::env::temp_dir().join(format!("vantage-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        // Nothing listens on port 9 here; asking would fail differently.
        let url = Url::parse("http://127.0.0.1:9/").expect("url");
        let tls = TlsContext::new(Vec::new()).expect("tls");
        let engine = EngineConfig::default();
        let ir: CountryCode = "IR".parse().expect("cc");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("first use over http");
        assert!(matches!(err, FetchError::FirstUseOverHttp { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("--aggregator-key KEY"), "{text}");
        assert!(
            text.contains("`key = \"KEY\"` under [aggregator]"),
            "{text}"
        );
        assert!(!data.exists(), "nothing written");
        // A key that is not one is refused as such, also when pinned.
        let err = fetch_lists(&url, ir, Some("not-a-key"), &data, &engine, &tls)
            .await
            .expect_err("bad key");
        assert_eq!(
            err.to_string(),
            "the aggregator key \"not-a-key\" is not a base64 Ed25519 public key"
        );
        std::fs::create_dir_all(&data).expect("dir");
        std::fs::write(data.join(PIN_FILE), "garbage\n").expect("pin");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("bad pin");
        assert!(err.to_string().contains("the pinned key in"), "{err}");
        // With a valid pinned key the request is made (and fails here: nothing listens).
        let key = crate::envelope::Identity::generate()
            .expect("key")
            .public_key();
        std::fs::write(data.join(PIN_FILE), format!("{key}\n")).expect("pin");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, FetchError::Fetch { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&data);
    }

    /// An upload API on loopback that answers every line `accepted` and records, for each
    /// request, its lines and its relay header's verified key.
    async fn ingest_server() -> (
        Url,
        std::sync::Arc<std::sync::Mutex<Vec<(usize, Option<String>)>>>,
    ) {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let (mut length, mut relay) = (0usize, None);
                    loop {
                        let mut h = String::new();
                        match stream.read_line(&mut h).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if h == "\r\n" => break,
                            Ok(_) => {}
                        }
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("vantage-relay:") {
                            relay = h.split_once(':').map(|(_, v)| v.trim().to_string());
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let relayer = relay.and_then(|v| {
                        crate::relay_proof::verify_relay_header(&v, &body)
                            .ok()
                            .map(|k| k.into_string())
                    });
                    let text = String::from_utf8_lossy(&body).into_owned();
                    let results: Vec<_> = text
                        .lines()
                        .enumerate()
                        .map(|(i, l)| {
                            let id = crate::envelope::verify(l).expect("verifies").id.to_string();
                            crate::wire::LineOutcome::stored(i as u64 + 1, id, true)
                        })
                        .collect();
                    log.lock().expect("log").push((results.len(), relayer));
                    let answer = serde_json::to_string(&IngestAnswer {
                        results,
                        error: None,
                        incomplete: None,
                    })
                    .expect("json");
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        answer.len()
                    );
                    let s = stream.get_mut();
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (Url::parse(&format!("http://{addr}/")).expect("url"), seen)
    }

    #[tokio::test]
    async fn the_first_route_that_works_carries_and_relayed_lines_go_apart_under_the_header() {
        use crate::store::{NewResult, Relayed};
        let dir = std::env::temp_dir().join(format!("vantage-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("vantage.db")).expect("store");
        let own = lines(2);
        for (id, line) in &own {
            store
                .insert(&NewResult {
                    id,
                    input: None,
                    test_name: "canary",
                    measured_at: "2026-11-30 00:00:00",
                    blocking: None,
                    accessible: None,
                    confirmed: false,
                    verdict: "{}",
                    envelope: line,
                })
                .expect("insert");
        }
        // Another probe's, of other measurements (an id is the hash of the measurement).
        let other = crate::envelope::Identity::generate().expect("key");
        let theirs: Vec<(String, String)> = (0..3)
            .map(|i| {
                let (id, line) = other
                    .seal(&format!(r#"{{"test_name":"canary","relayed":{i}}}"#))
                    .expect("seal");
                (id.to_string(), line)
            })
            .collect();
        let relayed: Vec<Relayed> = theirs
            .iter()
            .map(|(id, line)| Relayed {
                id: id.clone(),
                test_name: "canary".into(),
                measured_at: "2026-11-30 00:00:00".into(),
                input: None,
                envelope: line.clone(),
            })
            .collect();
        store.insert_relayed(&relayed).expect("relayed");
        // A closed port, then a server in trouble, then one that works.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let failing = serve(|_| (503, b"{\"error\":\"busy\"}".to_vec())).await;
        let (working, seen) = ingest_server().await;
        let mut config = UploadConfig::new(Url::parse(&format!("http://{closed}/")).expect("url"));
        config.routes = vec![
            Route::parse(&format!("http://{closed}/"), None).expect("route"),
            Route::parse(failing.as_str(), None).expect("route"),
            Route::parse(working.as_str(), None).expect("route"),
        ];
        config.max_attempts = 1;
        let me = crate::envelope::Identity::generate().expect("key");
        let my_key = me.public_key();
        config.relayer = Some(Relayer(std::sync::Arc::new(me)));
        let engine = EngineConfig::default();
        let tls = TlsContext::new(Vec::new()).expect("tls");
        let report = upload(&mut store, &config, &engine, &tls)
            .await
            .expect("upload");
        assert_eq!(report.error, None, "{report:?}");
        assert_eq!(
            (report.accepted, report.relayed, report.remaining),
            (5, 3, 0)
        );
        assert_eq!(report.route.as_deref(), Some(working.as_str()));
        // Own lines in one request without a header, the relayed ones in another under ours.
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen, [(2, None), (3, Some(my_key))]);

        // Every route down: the run gives up saying what each said, and nothing moves.
        let (late, line) = other
            .seal(r#"{"test_name":"canary","late":1}"#)
            .expect("seal");
        store
            .insert(&NewResult {
                id: late.as_str(),
                input: None,
                test_name: "canary",
                measured_at: "2026-11-30 00:00:00",
                blocking: None,
                accessible: None,
                confirmed: false,
                verdict: "{}",
                envelope: &line,
            })
            .expect("insert");
        config.routes.truncate(2);
        let report = upload(&mut store, &config, &engine, &tls)
            .await
            .expect("upload");
        let error = report.error.unwrap_or_default();
        assert!(error.starts_with("every upload route failed: "), "{error}");
        assert!(error.contains("HTTP 503"), "{error}");
        assert_eq!(report.remaining, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut c = UploadConfig::new(Url::parse("http://127.0.0.1/").expect("url"));
        c.backoff = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(10);
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (30, 10.0)] {
            let d = backoff(&c, n).as_secs_f64();
            assert!((base * 0.5..=base * 1.5).contains(&d), "attempt {n}: {d}");
        }
    }
}
