//! The aggregator's HTTP server. For now: the test helper at `POST /api/v1/th` and a health
//! check; ingest and the researcher API come later (DESIGN "Aggregator").

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use vantage_probe::engine::TlsContext;
use vantage_probe::ooni::ControlRequest;
use vantage_probe::th::{HelperConfig, answer};

/// OONI's helper accepts bodies up to 1<<24 bytes; a THRequest is a few hundred bytes, so we
/// allow far less.
pub const TH_BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    helper: Arc<HelperConfig>,
    tls: TlsContext,
}

impl AppState {
    /// State for a server whose test helper measures with `helper`, trusting `tls`'s roots.
    pub fn new(helper: HelperConfig, tls: TlsContext) -> Self {
        AppState {
            helper: Arc::new(helper),
            tls,
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route(
            "/api/v1/th",
            post(test_helper).layer(DefaultBodyLimit::max(TH_BODY_LIMIT_BYTES)),
        )
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `POST /api/v1/th`: OONI's THRequest in, THResponse out.
async fn test_helper(State(state): State<AppState>, body: Bytes) -> Response {
    let request: ControlRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("malformed THRequest: {e}"));
        }
    };
    match answer(&request, &state.helper, &state.tls).await {
        Ok(response) => axum::Json(response).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
