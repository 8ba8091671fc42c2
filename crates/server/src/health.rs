//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The store answers, so tasks can be taken.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready"), (status = 503, description = "Store unreachable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.open_task_count().await {
        Ok(open) => {
            Json(serde_json::json!({"status": "ready", "open_tasks": open})).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}
