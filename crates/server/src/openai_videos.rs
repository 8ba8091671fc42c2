//! `/v1/videos`: OpenAI's Videos API, so the `openai` SDKs' `videos.*`
//! work with only their base URL changed: create (JSON or multipart, as the
//! SDKs send it), list, retrieve, delete, remix, and the content in three
//! variants (the stored MP4; a thumbnail and a spritesheet gengate makes
//! from it, whichever upstream made the video). Errors are OpenAI's
//! `{"error": {message, type, param, code}}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::openai_images::ErrorEnvelope;
use gengate_core::dialect::openai_videos::{
    self, CreateForm, DeletedVideo, ListQuery, Reference, Video, VideoList,
};
use gengate_core::{ApiError, ArtifactRole, Dialect, InputImage, Task};
use gengate_engine::stills::{self, Still};
use gengate_store::TaskFilter;
use serde::Deserialize;

use crate::AppState;
use crate::body::{JsonOrForm, Part, read_json_or_form};
use crate::error::DialectError;
use crate::openapi::{Errors, Key, KeyBody, KeyQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/videos", post(create).get(list))
        .route("/v1/videos/{id}", get(retrieve).delete(delete))
        .route("/v1/videos/{id}/remix", post(remix))
        .route("/v1/videos/{id}/content", get(content))
}

/// Errors in OpenAI's envelope.
pub type Error = DialectError<ErrorEnvelope>;
type Result<T> = std::result::Result<T, Error>;

/// The caller's key, refused in OpenAI's envelope.
type Caller = crate::auth::Caller<ErrorEnvelope>;

fn image_field(_: usize, _: &InputImage) -> String {
    "input_reference.image_url".into()
}

/// One of the caller's videos, or 404 (unknown, foreign, other dialects'
/// tasks and malformed ids alike).
async fn own_video(state: &AppState, owner: uuid::Uuid, id: &str) -> Result<Task> {
    let not_found = || ApiError::NotFound(format!("video {id} not found"));
    let task_id = openai_videos::parse_id(id).ok_or_else(not_found)?;
    Ok(state
        .tasks
        .own(
            owner,
            &task_id.to_string(),
            Some(Dialect::OpenaiVideos),
            "video",
        )
        .await
        .map_err(|e| match e {
            // Named as asked (`video_…`), not as the task id.
            ApiError::NotFound(_) => not_found(),
            other => other,
        })?)
}

fn video(state: &AppState, task: &Task) -> Json<Video> {
    Json(openai_videos::render(task, &state.links()))
}

/// The parts of a multipart create, as the JSON body's fields.
fn form_of(parts: Vec<Part>) -> std::result::Result<CreateForm, ApiError> {
    let mut form = CreateForm::default();
    for part in parts {
        let text = || {
            String::from_utf8(part.bytes.to_vec())
                .map_err(|_| ApiError::validation(part.name.clone(), "must be UTF-8 text"))
        };
        match part.name.as_str() {
            "input_reference" if part.file_name.is_some() => {
                form.reference = Some(Reference::Upload(part.bytes.to_vec()));
            }
            // The reference object sent as a JSON text part.
            "input_reference" if part.bytes.starts_with(b"{") => {
                let reference: openai_videos::ImageReference =
                    gengate_core::validate::parse_json(&part.bytes).map_err(|e| match e {
                        ApiError::Validation { field, rule } => ApiError::Validation {
                            field: format!("input_reference.{field}"),
                            rule,
                        },
                        other => other,
                    })?;
                form.reference = Some(reference.reference()?);
            }
            "input_reference" | "input_reference[image_url]" => {
                form.reference = Some(Reference::ImageUrl(text()?));
            }
            "input_reference[file_id]" => form.reference = Some(Reference::FileId),
            "prompt" => form.prompt = Some(text()?),
            "model" => form.model = Some(text()?),
            "seconds" => form.seconds = Some(text()?),
            "size" => form.size = Some(text()?),
            "callback_url" => form.callback_url = Some(text()?),
            other => {
                return Err(ApiError::validation(
                    other,
                    "is not a field of this request",
                ));
            }
        }
    }
    Ok(form)
}

/// Create a video. As JSON, or as multipart/form-data (what the SDKs
/// send), where `input_reference` may be an uploaded png or jpeg: the
/// first frame. With `Idempotency-Key`, the same key and request within
/// 24 h answer the first video; another request under it is a 409.
#[utoipa::path(post, path = "/v1/videos", tag = "openai",
    request_body(content(
        (openai_videos::CreateVideo = "application/json"),
        (openai_videos::CreateVideo = "multipart/form-data"))),
    params(crate::openapi::IdempotencyKey),
    responses(Errors<ErrorEnvelope, KeyBody>, (status = 200, body = Video),
              (status = 409, body = ErrorEnvelope, description = "Idempotency-Key used for another request")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Video>> {
    let idem = crate::extract::idempotency_key(&headers)?;
    let form = match read_json_or_form(&headers, body).await? {
        JsonOrForm::Json(bytes) => openai_videos::json_form(&bytes)?,
        JsonOrForm::Form(parts) => form_of(parts)?,
    };
    let parsed = openai_videos::parse_create(form)?;
    let (task, _) = state
        .tasks
        .create_once(
            &key,
            parsed.task,
            parsed.uploads,
            idem.as_deref(),
            image_field,
        )
        .await?;
    Ok(video(&state, &task))
}

/// The caller's videos, newest first (or `order=asc`), `limit` at a time
/// after the video `after`.
#[utoipa::path(get, path = "/v1/videos", tag = "openai",
    params(ListQuery),
    responses(Errors<ErrorEnvelope, KeyQuery>, (status = 200, body = VideoList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, ErrorEnvelope>,
) -> Result<Json<VideoList>> {
    let page = query.check()?;
    let past = match page.after {
        None => None,
        Some(after) => {
            let task = own_video(&state, key.id, &after.to_string())
                .await
                .map_err(|e| match e.0 {
                    ApiError::NotFound(_) => {
                        Error::from(ApiError::validation("after", "is not a video of this key"))
                    }
                    _ => e,
                })?;
            Some((task.created_at, task.id))
        }
    };
    let filter = TaskFilter {
        dialect: Some(Dialect::OpenaiVideos),
        past,
        oldest_first: page.oldest_first,
        ..TaskFilter::default()
    };
    let mut tasks = state
        .store
        .page_tasks(Some(key.id), &filter, page.limit + 1)
        .await?;
    let has_more = tasks.len() > page.limit as usize;
    tasks.truncate(page.limit as usize);
    let links = state.links();
    let data: Vec<Video> = tasks
        .iter()
        .map(|t| openai_videos::render(t, &links))
        .collect();
    Ok(Json(VideoList {
        object: "list",
        first_id: data.first().map(|v| v.id.clone()),
        last_id: data.last().map(|v| v.id.clone()),
        data,
        has_more,
    }))
}

/// One video.
#[utoipa::path(get, path = "/v1/videos/{id}", tag = "openai",
    params(("id" = String, Path, description = "Video id")),
    responses(Errors<ErrorEnvelope, Key>, (status = 200, body = Video),
              (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn retrieve(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<Video>> {
    let task = own_video(&state, key.id, &id).await?;
    Ok(video(&state, &task))
}

/// Delete a video: one still being made is canceled first (its upstream
/// asked to stop); then it is gone, with its events and callbacks.
#[utoipa::path(delete, path = "/v1/videos/{id}", tag = "openai",
    params(("id" = String, Path, description = "Video id")),
    responses(Errors<ErrorEnvelope, Key>, (status = 200, body = DeletedVideo),
              (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeletedVideo>> {
    let task = own_video(&state, key.id, &id).await?;
    let id = openai_videos::video_id(task.id);
    if !state.tasks.delete(task).await? {
        return Err(ApiError::NotFound(format!("video {id} not found")).into());
    }
    Ok(Json(DeletedVideo {
        object: "video.deleted",
        deleted: true,
        id,
    }))
}

/// A new video continuing a completed one (its last frame, on its channel)
/// with a new prompt; its model, size and length.
#[utoipa::path(post, path = "/v1/videos/{id}/remix", tag = "openai",
    params(("id" = String, Path, description = "The completed video to remix")),
    request_body = openai_videos::RemixVideo,
    responses(Errors<ErrorEnvelope, KeyBody>, (status = 200, body = Video),
              (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn remix(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
    crate::extract::JsonBody(body, _): crate::extract::JsonBody<ErrorEnvelope>,
) -> Result<Json<Video>> {
    let parent = own_video(&state, key.id, &id).await?;
    let mut new = openai_videos::parse_remix(&body, &parent)?;
    // A 400 naming the video, not a 409: the SDKs retry a 409, to no avail.
    state
        .tasks
        .continue_from(key.id, &mut new, parent.id, "video_id")
        .await
        .map_err(|e| match e {
            ApiError::Conflict(m) => ApiError::validation(
                "video_id",
                m.strip_prefix("video_id: ").unwrap_or(&m).to_string(),
            ),
            other => other,
        })?;
    let task = state
        .tasks
        .create(&key, new, Vec::new(), image_field)
        .await?;
    Ok(video(&state, &task))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// `video` (the MP4, default), `thumbnail` or `spritesheet` (WebP).
    #[param(pattern = "^(video|thumbnail|spritesheet)?$")]
    pub variant: Option<String>,
}

/// A completed video's file: the MP4, or a still made from it (`Range`,
/// `ETag` and `HEAD` as for every stored file).
#[utoipa::path(get, path = "/v1/videos/{id}/content", tag = "openai",
    params(("id" = String, Path, description = "Video id"), ContentQuery),
    responses(Errors<ErrorEnvelope, KeyQuery>,
              (status = 200, description = "The file", content(
                  (Vec<u8> = "video/mp4"), (Vec<u8> = "image/webp"))),
              (status = 404, body = ErrorEnvelope, description = "No such video, or not completed"),
              (status = 410, body = ErrorEnvelope, description = "Its files expired (retention)")),
    security(("bearer" = [])))]
pub async fn content(
    State(state): State<AppState>,
    key: Caller,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    crate::extract::Query(query, _): crate::extract::Query<ContentQuery, ErrorEnvelope>,
) -> Result<Response> {
    let still = match query.variant.as_deref() {
        None | Some("") | Some("video") => None,
        Some("thumbnail") => Some(Still::Thumbnail),
        Some("spritesheet") => Some(Still::Spritesheet),
        Some(v) => {
            return Err(ApiError::validation(
                "variant",
                format!("must be video, thumbnail or spritesheet (got {v:?})"),
            )
            .into());
        }
    };
    let task = own_video(&state, key.id, &id).await?;
    if let Some(why) = state.links().expired(&task) {
        return Err(ApiError::Gone(why).into());
    }
    let Some(mp4) = task.artifact(ArtifactRole::Video) else {
        return Err(ApiError::NotFound(format!(
            "video {id} has no content: it is {}",
            openai_videos::status(task.state)
        ))
        .into());
    };
    let (file, content_type) = match still {
        None => (mp4.key.clone(), "video/mp4"),
        Some(still) => (
            stills::still_key(&state.engine, &task, still).await?,
            "image/webp",
        ),
    };
    let name = file.rsplit('/').next().unwrap_or(&file).to_string();
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Behind the key: a shared cache must not keep it.
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    let etag = format!("\"{name}\"");
    Ok(crate::files::respond(state.engine.media(), &method, &headers, &file, &etag, out).await)
}
