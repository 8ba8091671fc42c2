//! `/luma`: the reseller Luma task API of the seed, with its batch get.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::DetailError;
use gengate_core::dialect::luma::{self, DownloadUrl, LumaTask};
use gengate_core::{
    ApiError, ApiKey, ArtifactRole, Dialect, ImageRole, InputImage, NewTask, Task, TaskState,
};
use uuid::Uuid;

use crate::AppState;
use crate::body::read_json;
use crate::error::DialectError;
use crate::openapi::{Errors, Key, KeyBody, KeyCreate};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/luma/generations", post(create))
        .route("/luma/generations/{id}", get(get_one))
        .route("/luma/generations/{id}/extend", post(extend))
        .route(
            "/luma/generations/{id}/download_video_url",
            get(download_url),
        )
        .route("/luma/tasks", post(batch_get))
}

/// Errors in Luma's `{"detail": ...}` envelope.
pub type Error = DialectError<DetailError>;

/// The caller's key, refused in Luma's envelope.
type Caller = crate::auth::Caller<DetailError>;

/// A JSON body, refused in this API's envelope.
type Payload = crate::extract::JsonBody<DetailError>;

type Result<T> = std::result::Result<T, Error>;

/// One of the caller's Luma tasks, or 404 (unknown, foreign and non-Luma alike).
async fn own_task(state: &AppState, owner: Uuid, id: &str) -> Result<Task> {
    Ok(state
        .tasks
        .own(owner, id, Some(Dialect::Luma), "generation")
        .await?)
}

fn image_field(_: usize, im: &InputImage) -> String {
    match im.role {
        ImageRole::End => "image_end_url".into(),
        _ => "image_url".into(),
    }
}

async fn accept(state: &AppState, key: &ApiKey, new: NewTask) -> Result<Response> {
    let task = state
        .tasks
        .create(key, new, Vec::new(), image_field)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(luma::render(&task, &state.links())),
    )
        .into_response())
}

/// Create a video generation task.
#[utoipa::path(post, path = "/luma/generations", tag = "luma",
    request_body = luma::CreateGeneration,
    responses(Errors<DetailError, KeyCreate>, (status = 201, body = LumaTask)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    accept(&state, &key, luma::parse_create(&body)?).await
}

/// One generation task.
#[utoipa::path(get, path = "/luma/generations/{id}", tag = "luma",
    params(("id" = String, Path, description = "Task id")),
    responses(Errors<DetailError, Key>, (status = 200, body = LumaTask),
              (status = 404, body = DetailError)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<LumaTask>> {
    let task = own_task(&state, key.id, &id).await?;
    Ok(Json(luma::render(&task, &state.links())))
}

/// A new task continuing a completed one; it runs on the same channel.
#[utoipa::path(post, path = "/luma/generations/{id}/extend", tag = "luma",
    params(("id" = String, Path, description = "Id of the completed task to continue")),
    request_body = luma::CreateGeneration,
    responses(Errors<DetailError, KeyCreate>, (status = 201, body = LumaTask),
              (status = 404, body = DetailError),
              (status = 409, body = DetailError, description = "The task is not completed"),
              (status = 410, body = DetailError, description = "Its results expired (retention)")),
    security(("bearer" = [])))]
pub async fn extend(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let parent = own_task(&state, key.id, &id).await?;
    let body = if body_is_empty(&headers) {
        bytes::Bytes::new()
    } else {
        read_json(&headers, body).await?
    };
    let now = gengate_engine::now_ms();
    accept(&state, &key, luma::parse_extend(&body, &parent, now)?).await
}

fn body_is_empty(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        == Some("0")
}

/// `{"url": ...}` of a completed task's video.
#[utoipa::path(get, path = "/luma/generations/{id}/download_video_url", tag = "luma",
    params(("id" = String, Path, description = "Task id")),
    responses(Errors<DetailError, Key>, (status = 200, body = DownloadUrl),
              (status = 404, body = DetailError),
              (status = 409, body = DetailError, description = "The task is not completed"),
              (status = 410, body = DetailError, description = "Its results expired (retention)")),
    security(("bearer" = [])))]
pub async fn download_url(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<DownloadUrl>> {
    let task = own_task(&state, key.id, &id).await?;
    let links = state.links();
    if let Some(expired) = links.expired(&task) {
        return Err(ApiError::Gone(expired).into());
    }
    let video = task
        .artifact(ArtifactRole::Video)
        .filter(|_| task.state == TaskState::Completed)
        .ok_or_else(|| {
            Error::from(ApiError::Conflict(format!(
                "generation {id} is {}; its video exists once it is completed",
                task.state.as_str()
            )))
        })?;
    Ok(Json(DownloadUrl {
        url: links.download_url(&video.key),
    }))
}

/// Batch get: the caller's Luma tasks among `ids`, in the order asked.
/// Unknown and foreign ids are left out; a duplicate is listed once.
#[utoipa::path(post, path = "/luma/tasks", tag = "luma",
    request_body = gengate_core::dialect::BatchGet,
    responses(Errors<DetailError, KeyBody>, (status = 200, body = Vec<LumaTask>)),
    security(("bearer" = [])))]
pub async fn batch_get(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    let ids = gengate_core::dialect::parse_batch(&body)?;
    Ok(crate::rendered::batch_json(
        &state,
        key.id,
        &ids,
        Dialect::Luma,
        Some(Dialect::Luma),
        luma::render,
        (b"", b""),
    )
    .await?)
}
