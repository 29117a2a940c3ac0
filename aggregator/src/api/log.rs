//! The transparency log's routes (`docs/transparency.md`): the latest checkpoint (with the
//! witnesses' cosignatures it has) and the tiles at C2SP tlog-tiles' paths under `/log/`, the
//! witnesses' cosignatures submitted to `/log/cosignature`, and an inclusion proof and the
//! logged envelope by id under the API. A store without a log (ClickHouse, or `serve --no-log`) answers each with 404 and says
//! why.
//!
//! Every answer is bounded: a tile is at most 256 hashes (8 KiB) or 256 entries of 66 bytes,
//! a proof at most 64 hashes, and a tile path longer than any real one is refused unread.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::openapi::ErrorAnswer;
use crate::api::server::AppState;
use crate::log::{LogError, Proven, tiles};
use crate::store::log::{EntryKind, LogStore, NoLog};

/// `Cache-Control` of a full tile: it never changes (C2SP tlog-tiles: "immutable").
pub const FULL_TILE_CACHE: &str = "public, max-age=31536000, immutable";

/// `Cache-Control` of a partial tile, which a wider one replaces as the log grows.
pub const PARTIAL_TILE_CACHE: &str = "public, max-age=60";

/// `Cache-Control` of the checkpoint, replaced every few seconds while entries arrive.
pub const CHECKPOINT_CACHE: &str = "no-cache";

/// The largest body of `POST /log/cosignature`: a few signature lines (one is about 150
/// bytes).
pub const MAX_COSIGNATURE_BODY: usize = 4096;

/// The most cosignature lines one `POST /log/cosignature` may carry.
pub const MAX_COSIGNATURE_LINES: usize = 8;

/// The most `serve --witness` keys: each may keep one cosignature per checkpoint, so this
/// bounds the lines a checkpoint is served with.
pub const MAX_WITNESSES: usize = 32;

/// How far in the future a cosignature's timestamp may be, in seconds (clock skew): C2SP
/// tlog-cosignature lets verifiers refuse timestamps in the future.
pub const COSIGNATURE_SKEW_SECS: u64 = 600;

/// `GET /api/v1/log/proof/{id}`: that a measurement is in the log, provably.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProofAnswer {
    /// The measurement id.
    pub id: String,
    /// Its leaf's position in the log, from 0.
    pub leaf_index: u64,
    /// The leaf, base64: the 32 bytes of the id then the 32 bytes of the signer's Ed25519 key.
    pub leaf: String,
    /// The size of the tree the proof is against: the checkpoint's.
    pub tree_size: u64,
    /// The checkpoint (C2SP tlog-checkpoint, a signed note) whose root the proof leads to, as
    /// `/log/checkpoint` serves it: with the cosignatures of the witnesses that have cosigned
    /// it.
    pub checkpoint: String,
    /// The inclusion proof (RFC 9162 section 2.1.3), base64 SHA-256 hashes from the leaf's
    /// sibling up to the root.
    pub inclusion_proof: Vec<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorAnswer { error: message })).into_response()
}

fn no_log(why: NoLog) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "this aggregator keeps no transparency log ({})",
            why.reason()
        ),
    )
}

/// Runs `f` on the store's log off the async runtime; `Err` is the answer to give instead.
async fn with_log<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn LogStore) -> Result<T, LogError> + Send + 'static,
) -> Result<T, Response> {
    let storage = state.storage().clone();
    match tokio::task::spawn_blocking(move || match storage.log() {
        Ok(log) => Ok(f(log)),
        Err(why) => Err(why),
    })
    .await
    {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Err(why)) => Err(no_log(why)),
        Ok(Ok(Err(e @ (LogError::Db(_) | LogError::Sign { .. } | LogError::Key { .. })))) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Ok(Ok(Err(e))) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The latest signed checkpoint of the transparency log.
///
/// A C2SP tlog-checkpoint: the origin, the tree size, the base64 root hash, a blank line and
/// the aggregator's Ed25519 signature (C2SP signed-note), followed by the cosignature lines
/// (C2SP tlog-cosignature) of the witnesses that have cosigned this checkpoint. A new one is published within
/// 10 seconds of new entries.
#[utoipa::path(get, path = "/log/checkpoint", tag = "log",
    responses(
        (status = 200, description = "The signed checkpoint", body = String, content_type = "text/plain; charset=utf-8"),
        (status = 404, description = "This aggregator keeps no log, or has published no checkpoint yet", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
pub async fn checkpoint(State(state): State<AppState>) -> Response {
    let latest = with_log(&state, |log| {
        let Some(mut c) = log.latest_checkpoint()? else {
            return Ok(None);
        };
        // The witnesses' cosignatures follow the log's own signature line (C2SP
        // tlog-cosignature: extra signature lines of the same note).
        for line in log.cosignatures(c.size)? {
            c.note.push_str(&line);
        }
        Ok(Some(c))
    });
    match latest.await {
        Ok(Some(c)) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, CHECKPOINT_CACHE),
            ],
            c.note,
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no checkpoint published yet; one is within 10 s of the server's start".into(),
        ),
        Err(answer) => answer,
    }
}

/// A tile of the transparency log (C2SP tlog-tiles).
///
/// `path` is the rest of the path, slashes included: `<L>/<N>[.p/<W>]` for 256 (or, partial,
/// W) hashes of level L, or `entries/<N>[.p/<W>]` for an entry bundle (each leaf prefixed with
/// its length, a big-endian uint16). N is written in 3-digit groups, all but the last
/// prefixed with `x` (`x001/x234/067`). A full tile never changes and may be cached for good.
#[utoipa::path(get, path = "/log/tile/{path}", tag = "log",
    params(("path" = String, Path, description = "`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, slashes included",
        example = "0/x001/234.p/17")),
    responses(
        (status = 200, description = "The tile's bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Not a tile path, or not its canonical spelling", body = ErrorAnswer),
        (status = 404, description = "This aggregator keeps no log, or the log is not that large yet", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
pub async fn tile(State(state): State<AppState>, Path(path): Path<String>) -> Response {
    let tile = match tiles::parse(&path) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let read = with_log(&state, move |log| {
        let size = log.tree_size()?;
        Ok((tile.read(log, size)?, size))
    })
    .await;
    match read {
        Ok((Some(bytes), _)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CACHE_CONTROL,
                    if tile.is_full() {
                        FULL_TILE_CACHE
                    } else {
                        PARTIAL_TILE_CACHE
                    },
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok((None, size)) => error(
            StatusCode::NOT_FOUND,
            format!(
                "tile/{}: the log holds {size} entries, too few for this tile",
                tile.path()
            ),
        ),
        Err(answer) => answer,
    }
}

/// That a measurement (or a heartbeat, or an enrolment) is in the transparency log: its leaf
/// and an inclusion proof.
///
/// The proof (RFC 9162 section 2.1.3) leads from the envelope's leaf to the root of the
/// latest checkpoint, which is in the answer as served at `/log/checkpoint`. A measurement
/// accepted since that checkpoint is proven once the next is published (within 10 s).
#[utoipa::path(get, path = "/api/v1/log/proof/{id}", tag = "log",
    params(("id" = String, Path, description = "The measurement id (or a heartbeat's or enrolment's: the SHA-256 of its signed measurement bytes): 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = 200, description = "The leaf and its inclusion proof", body = ProofAnswer),
        (status = 400, description = "Not an id", body = ErrorAnswer),
        (status = 404, description = "Not in the log (unknown, an unsigned OONI import, or stored without the log), or this aggregator keeps no log", body = ErrorAnswer),
        (status = 500, description = "The stored log does not prove its own checkpoint: it was altered", body = ErrorAnswer),
        (status = 503, description = "Not in a checkpoint yet (retry after Retry-After seconds), or storage is unavailable", body = ErrorAnswer),
    ))]
pub async fn proof(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = envelope_id(&id) else {
        return bad_id();
    };
    let asked = id.clone();
    let proven = with_log(&state, move |log| {
        let mut proven = crate::log::prove(log, &asked)?;
        // The checkpoint as `/log/checkpoint` serves it: with the witnesses' cosignatures.
        if let Proven::Included(p) = &mut proven {
            for line in log.cosignatures(p.checkpoint.size)? {
                p.checkpoint.note.push_str(&line);
            }
        }
        Ok(proven)
    });
    match proven.await {
        Ok(Proven::Included(p)) => axum::Json(ProofAnswer {
            id,
            leaf_index: p.leaf_index,
            leaf: B64.encode(&p.leaf),
            tree_size: p.checkpoint.size,
            checkpoint: p.checkpoint.note,
            inclusion_proof: p.hashes.iter().map(|h| B64.encode(h.0)).collect(),
        })
        .into_response(),
        Ok(Proven::NotLogged) => error(
            StatusCode::NOT_FOUND,
            "this measurement is not in the log".into(),
        ),
        Ok(Proven::Pending {
            leaf_index,
            checkpoint_size,
        }) => {
            let retry = crate::log::PUBLISH_EVERY.as_secs().max(1) * 2;
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, retry.to_string())],
                axum::Json(ErrorAnswer {
                    error: match leaf_index {
                        Some(leaf_index) => format!(
                            "leaf {leaf_index} is not in a checkpoint yet (the latest holds {}); retry in {retry} s",
                            checkpoint_size.unwrap_or(0)
                        ),
                        None => format!(
                            "stored, not yet appended to the log (its sequencer appends within seconds); retry in {retry} s"
                        ),
                    },
                }),
            )
                .into_response()
        }
        Err(answer) => answer,
    }
}

/// A 64-hex-digit id, lower case; `None` (answered with [`bad_id`]) for anything else.
fn envelope_id(id: &str) -> Option<String> {
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The answer to a path whose id is not one.
fn bad_id() -> Response {
    error(StatusCode::BAD_REQUEST, "an id is 64 hex digits".into())
}

/// The envelope of a logged leaf, byte for byte: a measurement's or a heartbeat's.
///
/// From it anyone can recompute the leaf (the SHA-256 of its signed measurement bytes, then
/// its key) and check its signature: what a mirror copies and an evidence bundle holds. An
/// enrolment is logged too, but its envelope carries its one-time token and is never served
/// (403, whether the token is spent or not).
#[utoipa::path(get, path = "/api/v1/log/entry/{id}", tag = "log",
    params(("id" = String, Path, description = "The envelope's id: the SHA-256 of its signed measurement bytes, 64 hex digits", pattern = "^[0-9a-fA-F]{64}$")),
    responses(
        (status = 200, description = "The envelope, byte for byte; `X-Vantage-Entry` names its kind (measurement, heartbeat) and `X-Vantage-Leaf` its leaf index", body = String, content_type = "application/json"),
        (status = 400, description = "Not an id", body = ErrorAnswer),
        (status = 403, description = "An enrolment: its leaf is logged but its envelope carries its token", body = ErrorAnswer),
        (status = 404, description = "Not in the log, its envelope was not kept, or this aggregator keeps no log", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
pub async fn entry(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = envelope_id(&id) else {
        return bad_id();
    };
    let asked = id.clone();
    match with_log(&state, move |log| Ok(log.entry(&asked)?)).await {
        Ok(None) => error(StatusCode::NOT_FOUND, format!("{id} is not in the log")),
        Ok(Some(e)) if e.kind == EntryKind::Enrolment => error(
            StatusCode::FORBIDDEN,
            format!(
                "{id} is an enrolment (leaf {}): its envelope carries a one-time token and is not served",
                e.leaf_index
            ),
        ),
        Ok(Some(e)) => match e.envelope {
            Some(body) => (
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (header::CACHE_CONTROL, FULL_TILE_CACHE.to_string()),
                    (
                        header::HeaderName::from_static("x-vantage-entry"),
                        e.kind.as_str().to_string(),
                    ),
                    (
                        header::HeaderName::from_static("x-vantage-leaf"),
                        e.leaf_index.to_string(),
                    ),
                ],
                body,
            )
                .into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!(
                    "{id} is logged (leaf {}) but its envelope is not kept here",
                    e.leaf_index
                ),
            ),
        },
        Err(answer) => answer,
    }
}

/// `POST /log/cosignature`: what was kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct CosignatureAnswer {
    /// The size of the checkpoint cosigned.
    pub size: u64,
    /// The witnesses (`NAME+KEYID`) whose cosignature is now kept for it.
    pub witnesses: Vec<String>,
}

/// `?size=N` of `POST /log/cosignature`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct CosignatureQuery {
    /// The size of the checkpoint cosigned (default: the latest checkpoint's).
    pub size: Option<u64>,
}

/// A witness's cosignature of a checkpoint.
///
/// The body is one or more note signature lines (C2SP tlog-cosignature/v1: `— NAME BASE64`,
/// Ed25519 over the checkpoint with a timestamp), by witnesses this aggregator was started
/// with (`serve --witness`), over the latest checkpoint or, with `?size=N`, the one published
/// for that size. Each is verified before it is kept; `/log/checkpoint` then serves the
/// checkpoint with it. A witness checks that each checkpoint extends the last one it cosigned
/// before it cosigns (`vantage-aggregator witness`).
#[utoipa::path(post, path = "/log/cosignature", tag = "log",
    params(CosignatureQuery),
    request_body(content = String, description = "Cosignature lines, each `— NAME BASE64` and a newline", content_type = "text/plain"),
    responses(
        (status = 200, description = "Verified and kept", body = CosignatureAnswer),
        (status = 400, description = "Not cosignature lines, too many, or one does not verify over the checkpoint", body = ErrorAnswer),
        (status = 403, description = "A line by a key that is not a witness this aggregator accepts", body = ErrorAnswer),
        (status = 404, description = "No such checkpoint, or this aggregator keeps no log", body = ErrorAnswer),
        (status = 413, description = "The body is larger than 4 KiB", body = ErrorAnswer),
        (status = 503, description = "Storage is unavailable", body = ErrorAnswer),
    ))]
pub async fn cosignature(
    State(state): State<AppState>,
    Query(query): Query<CosignatureQuery>,
    body: axum::body::Bytes,
) -> Response {
    use crate::log::note::{CosignatureError, verify_cosignatures};
    if body.len() > MAX_COSIGNATURE_BODY {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a cosignature body is at most {MAX_COSIGNATURE_BODY} bytes"),
        );
    }
    let Ok(lines) = String::from_utf8(body.to_vec()) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8".into());
    };
    let count = lines.lines().filter(|l| !l.is_empty()).count();
    if count == 0 || count > MAX_COSIGNATURE_LINES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("a cosignature body is 1 to {MAX_COSIGNATURE_LINES} signature lines"),
        );
    }
    let witnesses = state.witnesses().clone();
    if witnesses.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "this aggregator accepts no witness (serve --witness)".into(),
        );
    }
    let now = crate::store::now().max(0).unsigned_abs();
    let kept = with_log(&state, move |log| {
        let checkpoint = match query.size {
            Some(size) => log.checkpoint_of(size)?,
            None => log.latest_checkpoint()?,
        };
        let Some(checkpoint) = checkpoint else {
            return Ok(Err((
                StatusCode::NOT_FOUND,
                match query.size {
                    Some(size) => format!("no checkpoint of size {size} was published"),
                    None => "no checkpoint published yet".into(),
                },
            )));
        };
        let found = match verify_cosignatures(&checkpoint.note, &lines, &witnesses) {
            Ok(found) => found,
            Err(e @ CosignatureError::UnknownWitness { .. }) => {
                return Ok(Err((StatusCode::FORBIDDEN, e.to_string())));
            }
            Err(e) => return Ok(Err((StatusCode::BAD_REQUEST, e.to_string()))),
        };
        if let Some(c) = found
            .iter()
            .find(|c| c.timestamp > now + COSIGNATURE_SKEW_SECS)
        {
            return Ok(Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "the cosignature of {} is dated {}, in the future",
                    c.witness, c.timestamp
                ),
            )));
        }
        for c in &found {
            log.add_cosignature(checkpoint.size, &c.witness, c.timestamp, &c.line)?;
        }
        Ok(Ok(CosignatureAnswer {
            size: checkpoint.size,
            witnesses: found.into_iter().map(|c| c.witness).collect(),
        }))
    })
    .await;
    match kept {
        Ok(Ok(answer)) => axum::Json(answer).into_response(),
        Ok(Err((status, message))) => error(status, message),
        Err(answer) => answer,
    }
}
