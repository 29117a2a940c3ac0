//! `POST /api/v1/measurements`: signed envelopes streamed to the ingest worker within the
//! server's byte budget, and the `vantage-relay` header of a probe that relays what others
//! measured (docs/carry.md, "The relay header").

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use vantage_probe::relay_proof::{RELAY_HEADER, RelayProof};
use vantage_probe::wire::IngestAnswer;

use super::openapi::ErrorAnswer;
use super::server::{AppState, UPLOAD_TYPES, busy, content_type, error, origin};
use crate::ingest::limits::spawn_upload;
use crate::ingest::stream::{CHANNEL_CHUNKS, ChunkReader, Ended, StreamError, ingest_lines};
use crate::ingest::{Session, relay_route};
use crate::store::Route;

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

/// Ingest signed measurements: signed JSONL in, one outcome per line out.
///
/// Body: JSON lines of envelopes `{"v":1,"key":...,"sig":...,"measurement":{...}}`, gzip
/// allowed (`Content-Encoding: gzip`). The body is not gathered: its chunks go to a worker that inflates them and ingests each line
/// as it completes (`stream.rs`), storing in batches. What one upload may hold in memory is
/// reserved from the server's byte budget before anything is read; when the budget is spent the
/// answer is 503 with `Retry-After`. A body that breaks off, exceeds the limit or arrives too
/// slowly is answered with the error and the outcomes of the lines read before it, which stay
/// stored.
///
/// A probe that relays what other probes measured adds the `vantage-relay` header
/// (`vantage_probe::relay_proof`, docs/carry.md): its own key and signature over the exact
/// body. Such a body (at most [`MAX_RELAY_BODY_BYTES`]) is read whole and the signature
/// checked before any line is stored; a bad header refuses the whole request with 400 and
/// stores nothing. What it brings is recorded as relayed by that key (never an address); a
/// body without the header as an upload.
#[utoipa::path(post, path = "/api/v1/measurements", tag = "probes",
    params(("vantage-relay" = Option<String>, Header, description = "v1.<base64 key>.<base64 signature>: the relaying probe's signature over the body (docs/carry.md)")),
    request_body(description = "Signed envelopes, one per line",
        content(
            (String = "application/x-ndjson"),
            (String = "application/jsonl"),
            (String = "application/json"),
        )),
    responses(
        (status = 200, description = "One outcome per line read; `incomplete` when the request held more lines than one request may", body = IngestAnswer),
        (status = 400, description = "The body broke off or is not valid gzip; the outcomes of the lines read before are in the answer. Or a bad vantage-relay header: nothing stored", body = IngestAnswer),
        (status = 408, description = "The body did not arrive in time; the outcomes of the lines read before are in the answer", body = IngestAnswer),
        (status = 413, description = "Body larger than the limit (after decompression); the outcomes of the lines read before are in the answer", body = IngestAnswer),
        (status = 415, description = "Content-Type is not application/x-ndjson, application/jsonl or application/json, or Content-Encoding is not gzip", body = ErrorAnswer),
        (status = 503, description = "The upload byte budget is spent (retry after Retry-After seconds), or storage is unavailable", body = ErrorAnswer),
    ))]
pub(super) async fn upload(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    mut body: axum::body::Body,
) -> Response {
    if let Err(refused) = content_type(&headers, UPLOAD_TYPES) {
        return *refused;
    }
    let relay = match relay_proof(&headers) {
        Ok(r) => r,
        Err(refused) => return *refused,
    };
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
    // A relayed body is held whole while its signature is checked.
    let want = if relay.is_some() {
        want.saturating_add(
            declared
                .unwrap_or(MAX_RELAY_BODY_BYTES)
                .min(MAX_RELAY_BODY_BYTES),
        )
    } else {
        want
    };
    let Some(reservation) = state.limits.upload_budget.try_reserve(want) else {
        return busy("uploads");
    };
    // The relayer's key, once its proof holds; whether it is recorded depends on its standing,
    // looked up on the worker thread with the rest of the store's work.
    let relayer = match relay {
        None => None,
        Some(proof) => {
            let (bytes, by) = match read_relayed(body, proof, state.limits.body_timeout).await {
                Ok(read) => read,
                Err(refused) => return *refused,
            };
            body = axum::body::Body::from(bytes);
            Some(by.into_string())
        }
    };
    let origin = origin(&state.geo, peer);
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_CHUNKS);
    let worker_state = state.clone();
    let worker = match spawn_upload(state.limits.upload_niceness, move || {
        let _reservation = reservation;
        let s = &worker_state;
        let route = match relayer {
            None => Route::Upload,
            Some(by) => match relay_route(s.storage.as_ref(), &s.ingest, by) {
                Ok(route) => route,
                Err(e) => return (Err(StreamError::Db(e)), Ok(Vec::new())),
            },
        };
        let mut session =
            Session::new(s.storage.as_ref(), &s.ingest, &s.fingerprints, &origin).with_route(route);
        let reader = ChunkReader::new(rx);
        let (max_line, max_body) = (s.ingest.max_line_bytes, s.ingest.max_body_bytes);
        let ended = if gzip {
            // Every member: a gzip body may hold several (RFC 1952 section 2.2), and reading
            // only the first would drop the lines of the others without a word.
            ingest_lines(
                flate2::read::MultiGzDecoder::new(reader),
                &mut session,
                max_line,
                max_body,
            )
        } else {
            ingest_lines(reader, &mut session, max_line, max_body)
        };
        (ended, session.finish())
    }) {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!("cannot start an upload thread: {e}");
            return busy("uploads");
        }
    };
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

/// The largest body read with a `vantage-relay` header, which is held whole until its
/// signature is checked: a probe sends batches of about a hundred measurements (under 1 MiB)
/// and halves a batch answered 413.
pub const MAX_RELAY_BODY_BYTES: usize = 16 << 20;

/// The request's relay proof, checked in its form and key; `None` without the header.
fn relay_proof(headers: &HeaderMap) -> Result<Option<RelayProof>, Box<Response>> {
    let mut values = headers.get_all(RELAY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refuse = |reason: String| Box::new(error(StatusCode::BAD_REQUEST, reason));
    if values.next().is_some() {
        return Err(refuse(format!(
            "{RELAY_HEADER} header: malformed: sent more than once"
        )));
    }
    let text = value.to_str().map_err(|_| {
        refuse(format!(
            "{RELAY_HEADER} header: malformed: not printable ASCII"
        ))
    })?;
    RelayProof::parse(text)
        .map(Some)
        .map_err(|e| refuse(e.to_string()))
}

/// Reads a relayed body whole (at most [`MAX_RELAY_BODY_BYTES`], within `limit`) and checks
/// its relay proof: the body and the relayer's key, or the refusal (nothing is stored).
async fn read_relayed(
    mut body: axum::body::Body,
    proof: RelayProof,
    limit: Duration,
) -> Result<(Bytes, vantage_probe::relay_proof::RelayerKey), Box<Response>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if buf.len().saturating_add(data.len()) > MAX_RELAY_BODY_BYTES {
                    return Err(Box::new(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a relayed body is at most {MAX_RELAY_BODY_BYTES} bytes"),
                    )));
                }
                buf.extend_from_slice(&data);
            }
            Ok(Some(Err(e))) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    format!("bad body: reading it failed: {e}"),
                )));
            }
            Err(_) => {
                return Err(Box::new(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive in time: not complete after {} s",
                        limit.as_secs()
                    ),
                )));
            }
        }
    }
    let bytes = buf.freeze();
    match proof.verify(&bytes) {
        Ok(key) => Ok((bytes, key)),
        Err(e) => Err(Box::new(error(StatusCode::BAD_REQUEST, e.to_string()))),
    }
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
