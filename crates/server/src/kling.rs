//! Kling's API: image generation (`/kling/v1/images/generations`, with the
//! seed's parameters) and video (`/kling/v1/videos/text2video` and
//! `…/image2video`), in Kling's `{code, message, request_id, data}`
//! envelope.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::kling::{self, Envelope, KlingTask, ListQuery};
use gengate_core::dialect::kling_video::{self, Endpoint};
use gengate_core::{ApiError, Dialect, ImageRole, InputImage, Task};
use uuid::Uuid;

use crate::AppState;
use crate::error::{DialectError, KlingError};
use crate::openapi::{Errors, Key, KeyBody, KeyQuery};

const BASE: &str = "/kling/v1/images/generations";
/// Both video endpoints: `{endpoint}` is text2video or image2video.
const VIDEOS: &str = "/kling/v1/videos/{endpoint}";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, post(create).get(list))
        .route(&format!("{BASE}/{{id}}"), get(get_one))
        .route(VIDEOS, post(create_video).get(list_videos))
        .route(&format!("{VIDEOS}/{{id}}"), get(get_video))
        // Kling's envelope carries the request's id, errors included.
        .layer(axum::middleware::from_fn(crate::request_id::scope))
}

/// Errors in Kling's envelope, with Kling's codes.
pub type Error = DialectError<KlingError>;

type Result<T> = std::result::Result<T, Error>;

/// The caller's key, refused in Kling's envelope.
type Caller = crate::auth::Caller<KlingError>;

/// A JSON body, refused in this API's envelope.
type Payload = crate::extract::JsonBody<KlingError>;

fn ok<T: serde::Serialize>(data: T) -> Response {
    Json(Envelope {
        code: 0,
        message: "SUCCEED".into(),
        request_id: crate::request_id::current(),
        data,
    })
    .into_response()
}

/// Create an image generation task.
#[utoipa::path(post, path = "/kling/v1/images/generations", tag = "kling",
    request_body = kling::CreateImage,
    responses(Errors<KlingError, KeyBody>, (status = 200, body = Envelope<KlingTask>),
              (status = 409, body = KlingError, description = "external_task_id already used by this key (code 1201)")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    let parsed = kling::parse_create(&body)?;
    let task = state
        .tasks
        .create(&key, parsed.task, parsed.uploads, |_, _| "image".into())
        .await?;
    Ok(ok(kling::render(&task, &state.links())))
}

/// One task, by task_id or by external_task_id.
#[utoipa::path(get, path = "/kling/v1/images/generations/{id}", tag = "kling",
    params(("id" = String, Path, description = "task_id or external_task_id")),
    responses(Errors<KlingError, Key>, (status = 200, body = Envelope<KlingTask>),
              (status = 404, body = KlingError, description = "Unknown task (code 1203)")),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let task = find(&state, &key, &id, Dialect::Kling).await?;
    Ok(ok(kling::render(&task, &state.links())))
}

/// The caller's task of `dialect` by task_id or external_task_id, or 404.
async fn find(state: &AppState, key: &Caller, id: &str, dialect: Dialect) -> Result<Task> {
    Ok(match Uuid::try_parse(id) {
        Ok(uuid) => state.tasks.get(key.id, uuid).await,
        Err(_) => state.tasks.find_by_external_id(key.id, id).await,
    }?
    .filter(|t: &Task| t.dialect == dialect)
    .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?)
}

/// A page of the caller's tasks of `dialect`, newest first.
async fn page(
    state: &AppState,
    key: &Caller,
    query: ListQuery,
    dialect: Dialect,
) -> Result<Vec<Task>> {
    let (offset, limit) = query.page()?;
    Ok(state
        .store
        .list_tasks(key.id, dialect, offset, limit)
        .await?
        .0)
}

/// `text2video` or `image2video`; any other is not a route (404).
fn endpoint(name: &str) -> Result<Endpoint> {
    match name {
        "text2video" => Ok(Endpoint::Text2Video),
        "image2video" => Ok(Endpoint::Image2Video),
        _ => Err(ApiError::NotFound(format!("no endpoint /kling/v1/videos/{name}")).into()),
    }
}

fn frame_field(_: usize, image: &InputImage) -> String {
    match image.role {
        ImageRole::End => "image_tail".into(),
        _ => "image".into(),
    }
}

/// Create a video task: from a prompt (`text2video`), or from a first frame
/// and optionally a last (`image2video`).
#[utoipa::path(post, path = "/kling/v1/videos/{endpoint}", tag = "kling",
    params(("endpoint" = String, Path, pattern = "^(text2video|image2video)$",
            description = "text2video or image2video")),
    request_body = kling_video::CreateVideo,
    responses(Errors<KlingError, KeyBody>, (status = 200, body = Envelope<KlingTask>),
              (status = 404, body = KlingError, description = "Another endpoint (code 1203)"),
              (status = 409, body = KlingError, description = "external_task_id already used by this key (code 1201)")),
    security(("bearer" = [])))]
pub async fn create_video(
    State(state): State<AppState>,
    key: Caller,
    Path(name): Path<String>,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    let parsed = kling_video::parse_create(&body, endpoint(&name)?)?;
    let task = state
        .tasks
        .create(&key, parsed.task, parsed.uploads, frame_field)
        .await?;
    Ok(ok(kling_video::render(&task, &state.links())))
}

/// One video task, by task_id or by external_task_id (either endpoint's).
#[utoipa::path(get, path = "/kling/v1/videos/{endpoint}/{id}", tag = "kling",
    params(("endpoint" = String, Path, pattern = "^(text2video|image2video)$",
            description = "text2video or image2video"),
           ("id" = String, Path, description = "task_id or external_task_id")),
    responses(Errors<KlingError, Key>, (status = 200, body = Envelope<KlingTask>),
              (status = 404, body = KlingError, description = "Unknown task (code 1203)")),
    security(("bearer" = [])))]
pub async fn get_video(
    State(state): State<AppState>,
    key: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    endpoint(&name)?;
    let task = find(&state, &key, &id, Dialect::KlingVideo).await?;
    Ok(ok(kling_video::render(&task, &state.links())))
}

/// The caller's video tasks (both endpoints'), newest first.
#[utoipa::path(get, path = "/kling/v1/videos/{endpoint}", tag = "kling",
    params(("endpoint" = String, Path, pattern = "^(text2video|image2video)$",
            description = "text2video or image2video"), ListQuery),
    responses(Errors<KlingError, KeyQuery>, (status = 200, body = Envelope<Vec<KlingTask>>)),
    security(("bearer" = [])))]
pub async fn list_videos(
    State(state): State<AppState>,
    key: Caller,
    Path(name): Path<String>,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, KlingError>,
) -> Result<Response> {
    endpoint(&name)?;
    let links = state.links();
    let tasks = page(&state, &key, query, Dialect::KlingVideo).await?;
    let data: Vec<KlingTask> = tasks
        .iter()
        .map(|t| kling_video::render(t, &links))
        .collect();
    Ok(ok(data))
}

/// The caller's image tasks, newest first.
#[utoipa::path(get, path = "/kling/v1/images/generations", tag = "kling",
    params(ListQuery),
    responses(Errors<KlingError, KeyQuery>, (status = 200, body = Envelope<Vec<KlingTask>>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, KlingError>,
) -> Result<Response> {
    let tasks = page(&state, &key, query, Dialect::Kling).await?;
    let data: Vec<KlingTask> = tasks
        .iter()
        .map(|t| kling::render(t, &state.links()))
        .collect();
    Ok(ok(data))
}
