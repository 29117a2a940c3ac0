//! `vantage relay`: a probe with another way out (satellite, a cross-border link, Tor) takes
//! the uploads of other probes on its network and sends them on (docs/carry.md, "`vantage
//! relay`").
//!
//! It serves the aggregator's own `POST /api/v1/measurements` (the wire of [`crate::wire`]), so
//! a probe lists it as one more upload route ([`crate::route`]) and reads its answers with the
//! same code. Each line goes through the check `vantage import` makes
//! ([`crate::carry::check_relayed`]: the envelope's own signature, then the measurement fields
//! the store keeps); a line that passes is kept in the relay's store as relayed
//! (`results.relayed = 1`, idempotent by id) and answered `accepted` (queued here) or
//! `duplicate` (already queued); a line that fails is answered `rejected` with the reason in
//! the aggregator's words. The relay signs nothing of theirs: its own upload loop
//! ([`crate::upload::upload`]) forwards the envelopes as they were signed, in requests that carry
//! its relay header ([`crate::relay_proof`]), whenever an aggregator answers.
//!
//! Everything is bounded: the body (bytes and lines), the time to send the head and the body,
//! the connections open at once, and the queue; a full queue or too many connections is 503
//! with `Retry-After` (RFC 9110 section 10.2.3), which a probe's uploader obeys. A body may be
//! gzip (`Content-Encoding: gzip`, RFC 9110 section 8.4.1.3, as the aggregator takes it): it is
//! inflated a chunk at a time and refused with 413 the moment it passes the same bound as a
//! plain body, so a small bomb never grows in memory beyond that bound ([`inflate`]).
//!
//! Heartbeats, enrolment and whoami are not relayed: a heartbeat through a relay would tell
//! the aggregator that the probe's network is up when only the relay's way out is, and whoami
//! would locate the relay's link. The relay answers them 404 with a reason saying so.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::carry::{MAX_LINE_BYTES, check_relayed};
use crate::engine::{EngineConfig, TlsContext};
use crate::envelope::Verifier;
use crate::store::{Store, StoreError};
use crate::upload::UploadConfig;
use crate::wire::{IngestAnswer, LineOutcome};

/// How a relay runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The relay's own store (its data directory's `vantage.db`).
    pub store_path: PathBuf,
    /// Where and how it forwards: the aggregator's routes, and its own key for the relay
    /// header.
    pub upload: UploadConfig,
    /// The largest request body read, and the most a gzip body may inflate to.
    pub max_body_bytes: usize,
    /// The most lines read from one request; the rest are answered `incomplete`.
    pub max_lines: usize,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// Envelopes waiting to be forwarded at most; a request that would pass it is answered
    /// 503 whole.
    pub max_queue: u64,
    /// The time a client has to send a request's head.
    pub header_timeout: Duration,
    /// The time a client has to send a request's body.
    pub body_timeout: Duration,
    /// How often the relay tries to forward what it holds, when nothing new arrives.
    pub forward_every: Duration,
}

impl RelayConfig {
    /// Defaults for a relay on a Raspberry Pi that forwards by `upload`.
    pub fn new(store_path: PathBuf, upload: UploadConfig) -> Self {
        RelayConfig {
            store_path,
            upload,
            max_body_bytes: 4 << 20,
            max_lines: 1000,
            max_connections: 64,
            max_queue: 200_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            forward_every: Duration::from_secs(60),
        }
    }
}

/// The most connections a relay serves at once (`max_connections` is kept within
/// 1..=this): each holds a descriptor and up to a request body of memory.
pub const MAX_CONNECTIONS: usize = 4096;

/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 60;

/// Why a gzip body could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    /// It inflates to more than the bound: refused before more is inflated.
    #[error("body larger than {max} bytes once decompressed")]
    TooLarge {
        /// The bound, in bytes.
        max: usize,
    },
    /// Not a gzip stream, or one cut short.
    #[error("bad body: not valid gzip (RFC 1952): {source}")]
    Corrupt {
        /// What the decoder found.
        source: std::io::Error,
    },
}

/// Inflates the gzip body `gz` (RFC 1952, every member) a chunk at a time, never holding more
/// than `max` inflated bytes: past them it stops with [`InflateError::TooLarge`].
pub fn inflate(gz: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    use std::io::Read as _;
    let mut decoder = flate2::read::MultiGzDecoder::new(gz);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(InflateError::Corrupt { source }),
        };
        if out.len() + n > max {
            return Err(InflateError::TooLarge { max });
        }
        // Grown by doubling, but never past the bound.
        if out.capacity() < out.len() + n {
            let want = (out.len() * 2).max(out.len() + n).max(64 << 10).min(max);
            out.reserve_exact(want - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Why the relay could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Its store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket failed.
    #[error("relay listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What the request handlers share.
struct State {
    config: RelayConfig,
    store: Mutex<Store>,
    /// Envelopes arrived: forward soon.
    arrived: Notify,
}

/// Serves the upload API on `listener` and forwards what it takes, until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    config: RelayConfig,
    engine: EngineConfig,
    tls: TlsContext,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RelayError> {
    let store = Store::open(&config.store_path)?;
    let state = Arc::new(State {
        store: Mutex::new(store),
        config,
        arrived: Notify::new(),
    });
    let forwarder = tokio::spawn(forward(state.clone(), engine, tls, stop.clone()));
    let slots = Arc::new(Semaphore::new(
        state.config.max_connections.clamp(1, MAX_CONNECTIONS),
    ));
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!("relay: accept on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let state = state.clone();
        let header_timeout = state.config.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, state).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 << 10)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("relay: connection from {peer}: {e}");
            }
        });
    }
    forwarder.abort();
    Ok(())
}

/// More connections than the relay serves at once: a 503 written straight to the socket, with
/// a deadline, and the connection closed.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let body = format!(
        "{{\"error\":\"the relay is serving as many connections as it can; retry in {RETRY_AFTER_SECS} s\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {RETRY_AFTER_SECS}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(answer.as_bytes())).await;
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error answer, `{"error":"..."}` as the aggregator writes it.
fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// 503 with `Retry-After`.
fn busy(message: String) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_SECS),
    );
    response
}

/// What the relay answers for each path: the upload API, and a clear refusal for the rest of
/// the aggregator's probe API.
async fn handle(req: http::Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/v1/measurements") => ingest(req, state).await,
        (_, "/api/v1/measurements") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "a relay takes uploads only (POST)",
        ),
        (_, "/api/v1/heartbeat" | "/api/v1/whoami" | "/api/v1/enrol") => error(
            StatusCode::NOT_FOUND,
            "this is a vantage relay: it carries signed measurements only; heartbeats, \
             enrolment and whoami go to the aggregator directly (through a relay they would \
             describe the relay's way out, not this network)",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "this is a vantage relay: POST /api/v1/measurements only",
        ),
    }
}

/// The content types the aggregator takes for an upload.
const UPLOAD_TYPES: &[&str] = &[
    "application/x-ndjson",
    "application/jsonl",
    "application/json",
];

/// `POST /api/v1/measurements`: checks every line, keeps those that pass, answers for each.
async fn ingest(req: http::Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let c = &state.config;
    let headers = req.headers();
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !media.as_deref().is_some_and(|m| UPLOAD_TYPES.contains(&m)) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-ndjson, application/jsonl or application/json",
        );
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("identity") => false,
        Some("gzip") => true,
        Some(_) => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip or none",
            );
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > c.max_body_bytes) {
        return too_large(format!("body larger than {} bytes", c.max_body_bytes));
    }
    let proof = match headers
        .get(crate::relay_proof::RELAY_HEADER)
        .map(|v| v.to_str())
    {
        None => None,
        Some(Ok(v)) => match crate::relay_proof::RelayProof::parse(v) {
            Ok(p) => Some(p),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{} header: not text", crate::relay_proof::RELAY_HEADER),
            );
        }
    };
    let body = Limited::new(req.into_body(), c.max_body_bytes);
    let body = match tokio::time::timeout(c.body_timeout, body.collect()).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive in time: not complete after {} s",
                    c.body_timeout.as_secs()
                ),
            );
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(format!("body larger than {} bytes", c.max_body_bytes));
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("bad body: {e}")),
        Ok(Ok(b)) => b.to_bytes(),
    };
    // The header proves which probe relayed the batch to this one; the envelopes stand on
    // their own signatures either way.
    if let Some(proof) = proof
        && let Err(e) = proof.verify(&body)
    {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let (max_lines, max_queue, max_body) = (c.max_lines, c.max_queue, c.max_body_bytes);
    // Inflating, signatures and SQLite on a blocking thread: a large body must not stall the
    // others.
    let worker = state.clone();
    let answered = tokio::task::spawn_blocking(move || {
        let body = if gzip {
            Bytes::from(inflate(&body, max_body)?)
        } else {
            body
        };
        Ok(take(&body, max_lines, max_queue, &worker.store))
    })
    .await;
    let answered = match answered {
        Ok(Ok(a)) => a,
        Ok(Err(InflateError::TooLarge { max })) => {
            return too_large(format!("body larger than {max} bytes once decompressed"));
        }
        Ok(Err(e @ InflateError::Corrupt { .. })) => {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match answered {
        Ok(Taken::Answer(answer, new)) => {
            if new > 0 {
                state.arrived.notify_one();
            }
            json(StatusCode::OK, &answer)
        }
        Ok(Taken::Full { waiting }) => busy(format!(
            "the relay's queue is full ({waiting} envelopes wait to be forwarded, at most \
             {max_queue}); retry in {RETRY_AFTER_SECS} s"
        )),
        Err(e) => {
            tracing::error!("relay: {e}");
            busy(format!(
                "storage unavailable, retry in {RETRY_AFTER_SECS} s"
            ))
        }
    }
}

/// 413 with the reason, in the aggregator's answer.
fn too_large(reason: String) -> Response<Full<Bytes>> {
    json(
        StatusCode::PAYLOAD_TOO_LARGE,
        &IngestAnswer {
            results: Vec::new(),
            error: Some(reason),
            incomplete: None,
        },
    )
}

/// What a request's lines came to.
enum Taken {
    /// The answer, and how many envelopes were new.
    Answer(IngestAnswer, usize),
    /// Nothing kept: the queue would pass its bound.
    Full { waiting: u64 },
}

/// Checks each line of `body`, keeps those that pass in one transaction, and answers for each
/// line read, as the aggregator does.
fn take(
    body: &[u8],
    max_lines: usize,
    max_queue: u64,
    store: &Mutex<Store>,
) -> Result<Taken, StoreError> {
    let mut verifier = Verifier::default();
    let mut results = Vec::new();
    let mut kept = Vec::new();
    let mut incomplete = None;
    let mut read = 0usize;
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let n = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if read == max_lines {
            incomplete = Some(format!(
                "at most {max_lines} lines are read from one request: lines after line {} \
                 were not read; send them again",
                n - 1
            ));
            break;
        }
        read += 1;
        if raw.len() > MAX_LINE_BYTES {
            results.push(LineOutcome::rejected(
                n,
                None,
                format!("too large: a line longer than {MAX_LINE_BYTES} bytes"),
            ));
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            results.push(LineOutcome::rejected(
                n,
                None,
                "malformed: not UTF-8".into(),
            ));
            continue;
        };
        match check_relayed(line, &mut verifier) {
            Ok(r) => {
                results.push(LineOutcome::stored(n, r.id.clone(), true));
                kept.push((results.len() - 1, r));
            }
            Err(reason) => {
                // The id is known once the signature verified.
                let id = crate::envelope::verify(line).ok().map(|v| v.id.to_string());
                results.push(LineOutcome::rejected(n, id, reason));
            }
        }
    }
    let mut store = store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let waiting = store.relayed_waiting()?;
    if !kept.is_empty() && waiting + kept.len() as u64 > max_queue {
        return Ok(Taken::Full { waiting });
    }
    let batch: Vec<_> = kept.iter().map(|(_, r)| r.clone()).collect();
    let added = store.insert_relayed_each(&batch)?;
    let mut new = 0;
    for ((at, r), added) in kept.iter().zip(added) {
        new += usize::from(added);
        results[*at] = LineOutcome::stored(results[*at].line, r.id.clone(), added);
    }
    Ok(Taken::Answer(
        IngestAnswer {
            results,
            error: None,
            incomplete,
        },
        new,
    ))
}

/// Forwards what the relay holds whenever something arrives or `forward_every` passes, by
/// [`crate::upload::upload`] (its routes, its backoff, its relay header).
async fn forward(
    state: Arc<State>,
    engine: EngineConfig,
    tls: TlsContext,
    mut stop: watch::Receiver<bool>,
) {
    let mut store = match Store::open(&state.config.store_path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("relay: cannot forward: {e}");
            return;
        }
    };
    let mut failures = 0u32;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            () = state.arrived.notified(), if failures == 0 => {}
            () = tokio::time::sleep(wait) => {}
        }
        wait = state.config.forward_every;
        if store.status().map(|s| s.pending).unwrap_or(0) == 0 {
            // Held ones whose time has come go back in the queue inside `upload`.
            if store.requeue_held(crate::store::Requeue::Due).unwrap_or(0) == 0 {
                continue;
            }
        }
        match crate::upload::upload(&mut store, &state.config.upload, &engine, &tls).await {
            Ok(r) if r.error.is_none() => {
                failures = 0;
                tracing::info!(
                    "relay: forwarded {} ({} already there, {} refused, {} held) by {}; {} waiting",
                    r.accepted,
                    r.duplicate,
                    r.rejected,
                    r.held,
                    r.route.as_deref().unwrap_or("-"),
                    r.remaining
                );
            }
            Ok(r) => {
                failures = failures.saturating_add(1);
                wait = crate::upload::backoff(&state.config.upload, failures)
                    .max(r.retry_after.unwrap_or_default())
                    .max(Duration::from_secs(1));
                tracing::warn!(
                    "relay: cannot forward now ({}); {} waiting; next try in {} s",
                    r.error.unwrap_or_default(),
                    r.remaining,
                    wait.as_secs()
                );
            }
            Err(e) => tracing::error!("relay: forwarding stopped by the store: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn gzip_bodies_inflate_within_the_bound_and_every_member_is_read() {
        assert_eq!(inflate(&gz(b"a\nb\n"), 4).expect("inflate"), b"a\nb\n");
        // Two members, as `cat a.gz b.gz` makes: both are read (RFC 1952 section 2.2).
        let two = [gz(b"a\n"), gz(b"b\n")].concat();
        assert_eq!(inflate(&two, 100).expect("inflate"), b"a\nb\n");
        assert_eq!(inflate(&gz(b""), 1).expect("empty"), b"");
    }

    #[test]
    fn a_bomb_stops_at_the_bound_and_broken_gzip_says_why() {
        // 64 MiB of zeros in about 64 KiB: refused once 1 MiB is inflated.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100 << 10, "{}", bomb.len());
        let e = inflate(&bomb, 1 << 20).expect_err("a bomb");
        assert_eq!(
            e.to_string(),
            "body larger than 1048576 bytes once decompressed"
        );
        // One byte over the bound is over it.
        assert!(matches!(
            inflate(&gz(b"12345"), 4),
            Err(InflateError::TooLarge { max: 4 })
        ));
        let whole = gz(b"a line\n");
        let cut = &whole[..whole.len() - 6];
        let e = inflate(cut, 100).expect_err("truncated");
        assert!(
            e.to_string()
                .starts_with("bad body: not valid gzip (RFC 1952): "),
            "{e}"
        );
        let e = inflate(b"{\"v\":1}\n", 100).expect_err("not gzip");
        assert!(matches!(e, InflateError::Corrupt { .. }), "{e}");
    }
}
