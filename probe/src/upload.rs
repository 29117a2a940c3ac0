//! Uploading the outbox to the aggregator (README.md, "Upload protocol").
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
pub use crate::wire::WhoAmI;
use crate::wire::{IngestAnswer, Status};

mod lists;
mod log_check;

pub use lists::{FetchError, FetchedLists, KeyTrust, PIN_FILE, fetch_lists};
pub use log_check::{LogReport, PROOFS_PER_ROUND, check_log, describe_note, fork_message};

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
/// (README.md, "Upload protocol" and the route `POST /api/v1/measurements`: "bad signature",
/// "unknown key", "revoked key", "malformed", "too large", "time in the future", and the
/// limits an aggregator on the Internet adds).
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
pub(super) fn clean_reason(reason: Option<&str>) -> String {
    let text = crate::printable::one_line(reason.unwrap_or("no reason given"), MAX_REASON);
    if text.is_empty() {
        "no reason given".into()
    } else {
        text
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
/// from a probe that was switched off (README.md, "Unattended: `vantage daemon`").
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
    pub(super) fn lines(n: usize) -> Vec<(String, String)> {
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

    /// Queues a canary result of `envelope` for upload, as a round would.
    pub(super) fn queue(store: &mut Store, id: &str, envelope: &str, accessible: Option<bool>) {
        store
            .insert(&crate::store::NewResult {
                id,
                input: None,
                test_name: "canary",
                measured_at: "2026-11-30 00:00:00",
                blocking: None,
                accessible,
                confirmed: false,
                verdict: "{}",
                envelope,
            })
            .expect("insert");
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
    pub(super) async fn serve(
        answer: impl Fn(&str) -> (u16, Vec<u8>) + Send + Sync + 'static,
    ) -> Url {
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
        use crate::store::Relayed;
        let dir = std::env::temp_dir().join(format!("vantage-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("vantage.db")).expect("store");
        let own = lines(2);
        for (id, line) in &own {
            queue(&mut store, id, line, None);
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
        queue(&mut store, late.as_str(), &line, None);
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
