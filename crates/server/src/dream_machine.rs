//! `/dream-machine/v1`: Luma's official API, so the `lumaai` SDKs work
//! with only their base URL changed. Errors are `{"detail": ...}`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::DetailError;
use gengate_core::dialect::dream_machine::{
    self, Credits, Generation, GenerationList, ListQuery, Pong,
};
use gengate_core::{ApiError, ApiKey, Dialect, ImageRole, InputImage, NewTask, Task};
use uuid::Uuid;

use crate::AppState;
use crate::body::read_json;
use crate::error::DialectError;
use crate::openapi::{Errors, Key, KeyCreate, KeyQuery};

const BASE: &str = "/dream-machine/v1";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{BASE}/generations/video"), post(create_video))
        // Where SDKs before the image API sent video creates.
        .route(&format!("{BASE}/generations"), post(create_video).get(list))
        .route(
            &format!("{BASE}/generations/{{id}}"),
            get(get_one).delete(delete),
        )
        .route(&format!("{BASE}/ping"), get(ping))
        .route(&format!("{BASE}/credits"), get(credits))
}

/// The image create may hold its answer (`sync`), so it is routed with
/// the synchronous endpoints' longer request timeout.
pub fn sync_router() -> Router<AppState> {
    Router::new().route(&format!("{BASE}/generations/image"), post(create_image))
}

/// Errors in Luma's `{"detail": ...}` envelope.
pub type Error = DialectError<DetailError>;

/// The caller's key, refused in Luma's envelope.
type Caller = crate::auth::Caller<DetailError>;

/// A JSON body, refused in this API's envelope.
type Payload = crate::extract::JsonBody<DetailError>;

type Result<T> = std::result::Result<T, Error>;

fn not_found(id: &str) -> Error {
    Error::from(ApiError::NotFound(format!("generation {id} not found")))
}

/// One of the caller's tasks made here, or 404 (unknown, foreign and
/// other dialects' alike).
async fn own_task(state: &AppState, owner: Uuid, id: &str) -> Result<Task> {
    Ok(state
        .tasks
        .own(owner, id, Some(Dialect::DreamMachine), "generation")
        .await?)
}

fn image_field(_: usize, im: &InputImage) -> String {
    match im.role {
        ImageRole::Start => "keyframes.frame0.url".into(),
        ImageRole::End => "keyframes.frame1.url".into(),
        ImageRole::Reference => "image_ref[0].url".into(),
    }
}

async fn accept(state: &AppState, key: &ApiKey, new: NewTask) -> Result<Task> {
    Ok(state
        .tasks
        .create(key, new, Vec::new(), image_field)
        .await?)
}

fn created(task: &Task, state: &AppState) -> Response {
    (
        StatusCode::CREATED,
        Json(dream_machine::render(task, &state.links())),
    )
        .into_response()
}

/// Create a video generation. A `generation` keyframe at `frame0`
/// continues that completed video (same key), on its channel.
#[utoipa::path(post, path = "/dream-machine/v1/generations/video", tag = "dream-machine",
    request_body = dream_machine::CreateVideo,
    responses(Errors<DetailError, KeyCreate>, (status = 201, body = Generation)),
    security(("bearer" = [])))]
pub async fn create_video(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    let mut parsed = dream_machine::parse_video(&body)?;
    if let Some(parent) = parsed.extends {
        let field = "keyframes.frame0.id";
        // A 400, not a 409: the SDKs retry a 409, to no avail.
        state
            .tasks
            .continue_from(key.id, &mut parsed.task, parent, field)
            .await
            .map_err(|e| match e {
                ApiError::Conflict(m) => {
                    let rule = m.strip_prefix(&format!("{field}: ")).unwrap_or(&m);
                    ApiError::validation(field, rule)
                }
                other => other,
            })?;
    }
    let task = accept(&state, &key, parsed.task).await?;
    Ok(created(&task, &state))
}

/// Create an image generation. With `sync`, the answer waits until the
/// image is made (or has failed), up to `sync_timeout` seconds, and shows
/// the generation as it then stands.
#[utoipa::path(post, path = "/dream-machine/v1/generations/image", tag = "dream-machine",
    request_body = dream_machine::CreateImage,
    responses(Errors<DetailError, KeyCreate>, (status = 201, body = Generation)),
    security(("bearer" = [])))]
pub async fn create_image(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let arrived = tokio::time::Instant::now();
    let body = read_json(&headers, body).await?;
    let parsed = dream_machine::parse_image(&body)?;
    // Listening before creating: the task may end before it is waited on.
    let changes = parsed.sync_wait_secs.map(|_| state.tasks.changes());
    let task = accept(&state, &key, parsed.task).await?;
    let task = match parsed.sync_wait_secs.zip(changes) {
        // Answered a little before `sync_timeout`, counted from arrival: the
        // SDKs time out at 60 s and would retry, making the image again.
        Some((secs, changes)) => {
            let margin = (secs / 10.0).min(5.0);
            let until = arrived + Duration::from_secs_f64(secs - margin);
            match state
                .tasks
                .wait_finished(changes, task.clone(), until)
                .await
            {
                Ok(Some(now)) => now,
                // The task exists: answer it as it was made rather than an error.
                Ok(None) | Err(_) => task,
            }
        }
        None => task,
    };
    Ok(created(&task, &state))
}

/// One generation.
#[utoipa::path(get, path = "/dream-machine/v1/generations/{id}", tag = "dream-machine",
    params(("id" = String, Path, description = "Generation id")),
    responses(Errors<DetailError, Key>, (status = 200, body = Generation),
              (status = 404, body = DetailError)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<Generation>> {
    let task = own_task(&state, key.id, &id).await?;
    Ok(Json(dream_machine::render(&task, &state.links())))
}

/// The caller's generations made through this API, newest first.
#[utoipa::path(get, path = "/dream-machine/v1/generations", tag = "dream-machine",
    params(ListQuery),
    responses(Errors<DetailError, KeyQuery>, (status = 200, body = GenerationList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, DetailError>,
) -> Result<Json<GenerationList>> {
    let (offset, limit) = query.check()?;
    let (tasks, total) = state
        .store
        .list_tasks(key.id, Dialect::DreamMachine, offset, limit)
        .await?;
    let generations: Vec<Generation> = tasks
        .iter()
        .map(|t| dream_machine::render(t, &state.links()))
        .collect();
    Ok(Json(GenerationList {
        has_more: offset + (generations.len() as u64) < total,
        count: generations.len(),
        limit,
        offset,
        generations,
    }))
}

/// Delete a generation: one still running is canceled first (its upstream
/// asked to stop); then it is gone from every API, events and callbacks
/// included.
#[utoipa::path(delete, path = "/dream-machine/v1/generations/{id}", tag = "dream-machine",
    params(("id" = String, Path, description = "Generation id")),
    responses(Errors<DetailError, Key>, (status = 204, description = "Deleted"),
              (status = 404, body = DetailError)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let task = own_task(&state, key.id, &id).await?;
    if !state.tasks.delete(task).await? {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the API answers.
#[utoipa::path(get, path = "/dream-machine/v1/ping", tag = "dream-machine",
    responses(Errors<DetailError, Key>, (status = 200, body = Pong)),
    security(("bearer" = [])))]
pub async fn ping(_: Caller) -> Result<Json<Pong>> {
    Ok(Json(Pong { message: "pong" }))
}

/// The key's credit balance (an unlimited key's is reported as such).
#[utoipa::path(get, path = "/dream-machine/v1/credits", tag = "dream-machine",
    responses(Errors<DetailError, Key>, (status = 200, body = Credits)),
    security(("bearer" = [])))]
pub async fn credits(State(state): State<AppState>, key: Caller) -> Result<Json<Credits>> {
    // Read now: the authenticated key may be a second old.
    let fresh = state.store.get_key(key.id).await?;
    Ok(Json(Credits::of(fresh.as_ref().unwrap_or(&key))))
}
