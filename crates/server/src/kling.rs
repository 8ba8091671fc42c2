//! `/kling/v1/images/generations`: Kling image generation with the seed's
//! parameters, in Kling's `{code, message, request_id, data}` envelope.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::kling::{self, Envelope, KlingTask, ListQuery};
use gengate_core::{ApiError, Dialect, ImageRole, ImageSource, InputImage, Task};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::body::read_json;

const BASE: &str = "/kling/v1/images/generations";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, post(create).get(list))
        .route(&format!("{BASE}/{{id}}"), get(get_one))
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Errors in Kling's envelope, with Kling's codes.
pub struct Error {
    err: ApiError,
    request_id: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = Envelope {
            code: kling::error_code(&self.err),
            message: self.err.to_string(),
            request_id: self.request_id,
            data: serde_json::Value::Null,
        };
        crate::error_response(&self.err, body)
    }
}

fn ok<T: serde::Serialize>(request_id: String, data: T) -> Response {
    Json(Envelope {
        code: 0,
        message: "SUCCEED".into(),
        request_id,
        data,
    })
    .into_response()
}

/// Handlers are written against `ApiError`; this puts the request id on it.
async fn with_envelope<F>(headers: &HeaderMap, f: F) -> Response
where
    F: Future<Output = Result<Response, ApiError>>,
{
    match f.await {
        Ok(r) => r,
        Err(err) => Error {
            err,
            request_id: request_id(headers),
        }
        .into_response(),
    }
}

/// Create an image generation task.
#[utoipa::path(post, path = "/kling/v1/images/generations", tag = "kling",
    request_body = kling::CreateImage,
    responses((status = 200, body = Envelope<KlingTask>),
              (status = 400, description = "A parameter broke a rule (code 1201)"),
              (status = 401, description = "Missing or unknown key (code 1000/1001)"),
              (status = 409, description = "external_task_id already used by this key"),
              (status = 413, description = "Body over the limit"),
              (status = 415, description = "Body is not JSON")),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    with_envelope(&headers, async {
        let key = state.keys.authenticate(&headers).await?;
        let body = read_json(&headers, body).await?;
        let mut parsed = kling::parse_create(&body)?;
        state
            .check_urls(&parsed.task, |_, _| "image".into())
            .await?;
        if let Some((bytes, format)) = parsed.inline_image.take() {
            // Content-addressed: the same image sent twice is stored once.
            let key = format!(
                "inputs/{}.{}",
                hex::encode(Sha256::digest(&bytes)),
                format.extension()
            );
            state
                .engine
                .files()
                .put_once(&key, &bytes)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "storing an input image failed");
                    ApiError::Unavailable("could not store the image".into())
                })?;
            parsed.task.request.images.push(InputImage {
                role: ImageRole::Reference,
                source: ImageSource::Stored { key, format },
            });
        }
        let task = state.create_task(key.id, parsed.task).await?;
        Ok(ok(
            request_id(&headers),
            kling::render(&task, &state.files_base),
        ))
    })
    .await
}

/// One task, by task_id or by external_task_id.
#[utoipa::path(get, path = "/kling/v1/images/generations/{id}", tag = "kling",
    params(("id" = String, Path, description = "task_id or external_task_id")),
    responses((status = 200, body = Envelope<KlingTask>), (status = 404, description = "Unknown task (code 1203)")),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    with_envelope(&headers, async {
        let key = state.keys.authenticate(&headers).await?;
        let task = match Uuid::try_parse(&id) {
            Ok(uuid) => state.store.get_task(key.id, uuid).await,
            Err(_) => state.store.get_task_by_external_id(key.id, &id).await,
        }
        .map_err(crate::store_error)?
        .filter(|t: &Task| t.dialect == Dialect::Kling)
        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?;
        Ok(ok(
            request_id(&headers),
            kling::render(&task, &state.files_base),
        ))
    })
    .await
}

/// The caller's image tasks, newest first.
#[utoipa::path(get, path = "/kling/v1/images/generations", tag = "kling",
    params(ListQuery),
    responses((status = 200, body = Envelope<Vec<KlingTask>>), (status = 400, description = "Bad page parameters")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    with_envelope(&headers, async {
        let key = state.keys.authenticate(&headers).await?;
        let Query(query) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
        let (offset, limit) = query.page()?;
        let (tasks, _total) = state
            .store
            .list_tasks(key.id, Dialect::Kling, offset, limit)
            .await
            .map_err(crate::store_error)?;
        let data: Vec<KlingTask> = tasks
            .iter()
            .map(|t| kling::render(t, &state.files_base))
            .collect();
        Ok(ok(request_id(&headers), data))
    })
    .await
}
