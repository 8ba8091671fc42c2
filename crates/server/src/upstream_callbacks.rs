//! `POST /upstream/callbacks/{channel}/{task}?token=`: where upstreams report
//! on the tasks gengate gave them (the engine checks and applies it). Not a
//! client API: the token in the URL is the credential.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gengate_engine::upstream_callbacks::CallbackError;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ErrorBody, ErrorDetail};

pub fn router() -> Router<AppState> {
    Router::new().route("/upstream/callbacks/{channel}/{task}", post(receive))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Token {
    /// The token gengate put in the callback URL it gave the upstream.
    #[serde(default)]
    pub token: String,
}

/// An upstream's news of one task, at the URL gengate gave it at submit
/// (channels with `callbacks = true`). Checked and applied at once.
#[utoipa::path(
    post,
    path = "/upstream/callbacks/{channel}/{task}",
    tag = "upstreams",
    params(
        ("channel" = String, Path, description = "The channel the task was sent to"),
        ("task" = String, Path, description = "The gengate task id"),
        Token,
    ),
    request_body(content = serde_json::Value, description = "What the upstream sends (its own shape)", content_type = "application/json"),
    responses(
        (status = 204, description = "Taken"),
        (status = 400, description = "Not about this task's upstream job, or unreadable", body = ErrorBody),
        (status = 401, description = "Bad token or upstream signature", body = ErrorBody),
        (status = 404, description = "No such task on this channel", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path((channel, task)): Path<(String, String)>,
    Query(q): Query<Token>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(task) = Uuid::parse_str(&task) else {
        return error(StatusCode::NOT_FOUND, "no such task on this channel".into());
    };
    let body = match crate::body::read_json(&headers, body).await {
        Ok(b) => b,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return error(status, e.to_string());
        }
    };
    match state
        .engine
        .upstream_callback(&channel, task, &q.token, &headers, body)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let status = match &e {
                CallbackError::NotFound => StatusCode::NOT_FOUND,
                CallbackError::Unauthorized => StatusCode::UNAUTHORIZED,
                CallbackError::Refused(_) => StatusCode::BAD_REQUEST,
                CallbackError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if let CallbackError::Store(detail) = &e {
                // The store's words stay in the log; the upstream retries.
                tracing::error!(detail, "an upstream callback could not be handled");
                return error(status, "try again later".into());
            }
            error(status, e.to_string())
        }
    }
}

fn error(status: StatusCode, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            status: status.as_u16(),
            message,
        },
    };
    (status, axum::Json(body)).into_response()
}
