//! `/kling/v1/images/generations`: Kling image generation with the seed's
//! parameters, in Kling's `{code, message, request_id, data}` envelope.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::kling::{self, Envelope, KlingTask, ListQuery};
use gengate_core::{ApiError, Dialect, Task};
use uuid::Uuid;

use crate::AppState;
use crate::error::{DialectError, KlingError};
use crate::openapi::{Errors, Key, KeyBody, KeyQuery};

const BASE: &str = "/kling/v1/images/generations";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, post(create).get(list))
        .route(&format!("{BASE}/{{id}}"), get(get_one))
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
    let task = match Uuid::try_parse(&id) {
        Ok(uuid) => state.tasks.get(key.id, uuid).await,
        Err(_) => state.tasks.find_by_external_id(key.id, &id).await,
    }?
    .filter(|t: &Task| t.dialect == Dialect::Kling)
    .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?;
    Ok(ok(kling::render(&task, &state.links())))
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
    let (offset, limit) = query.page()?;
    let (tasks, _total) = state
        .store
        .list_tasks(key.id, Dialect::Kling, offset, limit)
        .await?;
    let data: Vec<KlingTask> = tasks
        .iter()
        .map(|t| kling::render(t, &state.links()))
        .collect();
    Ok(ok(data))
}
