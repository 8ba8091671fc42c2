//! `POST /v1/images/generations`: OpenAI images, so the `openai` SDKs'
//! `images.generate` works with only its base URL changed. The request
//! becomes a task like any other and the answer waits for it to end,
//! up to `sync_wait` from its arrival (or until the server begins to
//! stop); then the task is still followed at `/v1/tasks/{id}`.
//! Errors are OpenAI's `{"error": {message, type, param, code}}`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use gengate_core::dialect::openai_images::{
    self, ErrorDetail, ErrorEnvelope, Image, ImagesResponse, ResponseFormat,
};
use gengate_core::{ApiError, ArtifactRole, Task, TaskState};
use uuid::Uuid;

use crate::AppState;
use crate::body::read_json;
use crate::error::DialectError;
use crate::openapi::{Errors, KeyBody};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/images/generations", post(create))
}

/// Errors in OpenAI's envelope.
pub type Error = DialectError<ErrorEnvelope>;

/// The caller's key, refused in OpenAI's envelope.
type Caller = crate::auth::Caller<ErrorEnvelope>;

/// An answer about a task that exists but gave no images. The SDKs would
/// retry a 5xx, making the images again: `x-should-retry: false` tells them
/// not to, and `Gengate-Task-Id` where to follow the task.
fn unfinished(
    status: StatusCode,
    task: Uuid,
    kind: &'static str,
    code: &str,
    message: String,
) -> Response {
    let body = ErrorEnvelope {
        error: ErrorDetail {
            message,
            kind,
            param: None,
            code: Some(code.into()),
        },
    };
    let mut resp = (status, Json(body)).into_response();
    let headers = resp.headers_mut();
    headers.insert("x-should-retry", HeaderValue::from_static("false"));
    if let Ok(v) = HeaderValue::from_str(&task.to_string()) {
        headers.insert("gengate-task-id", v);
    }
    resp
}

/// Make images. The answer comes when they are made: `{created, data}`
/// with each image's `url` (gengate's stored copy) or `b64_json`. With
/// `Idempotency-Key`, a retry of the same request answers the first task's
/// images instead of making them again.
#[utoipa::path(post, path = "/v1/images/generations", tag = "openai",
    request_body = openai_images::CreateImage,
    params(crate::openapi::IdempotencyKey),
    responses(Errors<ErrorEnvelope, KeyBody>, (status = 200, body = ImagesResponse),
              (status = 409, body = ErrorEnvelope, description = "Idempotency-Key used for another request"),
              (status = 502, body = ErrorEnvelope, description = "The generation failed (code generation_failed); the header Gengate-Task-Id names the task"),
              (status = 504, body = ErrorEnvelope, description = "Still running after the server's sync wait (code task_pending): follow it at /v1/tasks/{Gengate-Task-Id}")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let arrived = tokio::time::Instant::now();
    let idem = crate::extract::idempotency_key(&headers)?;
    let body = read_json(&headers, body).await?;
    let parsed = openai_images::parse_create(&body)?;
    // Listening before creating: the task may end before it is waited on.
    let changes = state.tasks.changes();
    let (task, _) = state
        .tasks
        .create_once(&key, parsed.task, Vec::new(), idem.as_deref(), |_, _| {
            "image".into()
        })
        .await?;
    // From here the task exists: no answer may invite the SDK to retry.
    let task_id = task.id;
    let answer = async {
        let task = state
            .tasks
            .wait_finished(changes, task, arrived + state.sync_wait)
            .await?
            .ok_or(ApiError::Internal)?;
        Ok::<_, ApiError>(match task.state {
            TaskState::Completed => {
                Json(images(&state, &task, parsed.response_format).await?).into_response()
            }
            TaskState::Failed | TaskState::Canceled => unfinished(
                StatusCode::BAD_GATEWAY,
                task.id,
                "server_error",
                "generation_failed",
                format!(
                    "task {} {}: {}",
                    task.id,
                    task.state.as_str(),
                    task.failure_reason.as_deref().unwrap_or("no reason given")
                ),
            ),
            TaskState::Pending | TaskState::Processing => unfinished(
                StatusCode::GATEWAY_TIMEOUT,
                task.id,
                "timeout",
                "task_pending",
                format!(
                    "task {id} is still {} after {} s; its images will be at GET /v1/tasks/{id}",
                    task.state.as_str(),
                    arrived.elapsed().as_secs(),
                    id = task.id,
                ),
            ),
        })
    }
    .await;
    Ok(answer.unwrap_or_else(|e| {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        unfinished(
            status,
            task_id,
            "server_error",
            "task_pending",
            format!(
                "{e}; task {task_id} was made and goes on: follow it at GET /v1/tasks/{task_id}"
            ),
        )
    }))
}

async fn images(
    state: &AppState,
    task: &Task,
    format: ResponseFormat,
) -> Result<ImagesResponse, ApiError> {
    let mut data = Vec::new();
    for a in task.artifacts_with(ArtifactRole::Image) {
        data.push(match format {
            ResponseFormat::Url => Image {
                url: Some(state.links().url(&a.key)),
                b64_json: None,
            },
            ResponseFormat::B64Json => {
                let bytes = state.engine.media().get(&a.key).await.map_err(|e| {
                    tracing::error!(task = %task.id, key = %a.key, error = %e, "stored result unreadable");
                    ApiError::Unavailable("a stored result could not be read, try again".into())
                })?;
                Image {
                    url: None,
                    b64_json: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                }
            }
        });
    }
    Ok(ImagesResponse {
        created: task.created_at / 1000,
        data,
    })
}
