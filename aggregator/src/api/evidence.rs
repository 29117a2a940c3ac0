//! `GET /api/v1/timeline/{id}/evidence.zip`: an event's evidence bundle
//! (`crate::evidence`, `docs/transparency.md` "Evidence bundles"), the same as
//! `vantage-aggregator evidence` writes.
//!
//! Bounded like the exports: it takes one of the server's export slots (503 with
//! `Retry-After` when all are taken), and the zip is streamed a chunk at a time while the
//! client reads (`ingest::stream::ChunkWriter`), holding one envelope and one proof in memory.
//! Everything that can refuse (an unknown event, no log, evidence not yet in a checkpoint) is
//! decided before the first byte is sent.

use std::io::Write as _;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::openapi::ErrorAnswer;
use crate::api::server::AppState;
use crate::evidence::{self, Context, EvidenceError};
use crate::ingest::limits::RETRY_AFTER_SECS;
use crate::ingest::stream::ChunkWriter;

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorAnswer { error: message })).into_response()
}

fn retry(message: String, seconds: u64) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, seconds.to_string())],
        axum::Json(ErrorAnswer { error: message }),
    )
        .into_response()
}

/// The answer to a bundle that could not be planned.
fn refused(e: EvidenceError) -> Response {
    match e {
        EvidenceError::UnknownEvent(_) | EvidenceError::NoLog(_) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        EvidenceError::NoCheckpoint | EvidenceError::Pending { .. } => {
            let after = crate::log::PUBLISH_EVERY.as_secs().max(1) * 2;
            retry(e.to_string(), after)
        }
        EvidenceError::Db(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// An event's evidence bundle, to check offline with `vantage verify`.
///
/// A zip of one directory `evidence-<id>/`: `event.json`, `detector.json` (the detector's
/// settings and rule set versions), `envelopes/<id>.json` (every measurement behind the
/// event, byte for byte as `GET /api/v1/measurements/{id}` gives it, at most 100,000),
/// `proofs.json` (each one's inclusion proof against one checkpoint), `checkpoint.txt`,
/// `aggregator.pub`, `signals.json`, `report.html` and `MANIFEST.json` (SHA-256 of each file).
#[utoipa::path(get, path = "/api/v1/timeline/{id}/evidence.zip", tag = "research",
    params(("id" = String, Path, description = "The event id: 16 hex digits", pattern = "^[0-9a-fA-F]{16}$")),
    responses(
        (status = 200, description = "The bundle (streamed)", body = Vec<u8>, content_type = "application/zip"),
        (status = 400, description = "Not an event id", body = ErrorAnswer),
        (status = 404, description = "No such event, or this aggregator keeps no transparency log", body = ErrorAnswer),
        (status = 500, description = "The stored log does not prove its own checkpoint: it was altered", body = ErrorAnswer),
        (status = 503, description = "As many exports as the server streams at once are running, a measurement of the event is not in a checkpoint yet, or storage is unavailable (retry after Retry-After seconds)", body = ErrorAnswer),
    ))]
pub async fn bundle(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if !evidence::is_event_id(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            "an event id is 16 hex digits".into(),
        );
    }
    let Some(public_key) = state.log_public_key() else {
        return error(
            StatusCode::NOT_FOUND,
            "this aggregator has no signing key, so its log and bundles have none".into(),
        );
    };
    let Some(slot) = state.limits().exports.try_take() else {
        return retry(
            format!("too many exports in progress; retry in {RETRY_AFTER_SECS} s"),
            RETRY_AFTER_SECS,
        );
    };
    let config = state.detect_config();
    let context = Context {
        public_key,
        verification: state.verification(),
        config,
        now: crate::store::now(),
    };
    let storage = state.storage().clone();
    let planned = {
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || evidence::plan(storage.as_ref(), &id, context)).await
    };
    let plan = match planned {
        Ok(Ok(plan)) => plan,
        Ok(Err(e)) => return refused(e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let name = format!("{}.zip", plan.directory());
    let (mut writer, body) = ChunkWriter::new();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        match evidence::write(storage.as_ref(), &plan, &mut writer) {
            Ok(_) => {
                let _ = writer.flush();
            }
            Err(EvidenceError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::debug!("evidence bundle stopped: {e}");
            }
            Err(e) => {
                tracing::warn!("evidence bundle stopped: {e}");
                writer.fail(e.to_string());
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        axum::body::Body::new(body),
    )
        .into_response()
}
