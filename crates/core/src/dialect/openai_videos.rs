//! OpenAI's Videos API (`/v1/videos`, the `openai` SDKs' `videos.*`): the
//! create request (JSON, or multipart as the SDKs send it), the video
//! object, its list and the answer to a delete. A video is a task like any
//! other; its id is `video_` and the task's id.
//!
//! `size` is the frame in OpenAI's words; gengate keeps it as an aspect
//! ratio and a resolution step, which every upstream takes:
//!
//! | size | aspect | resolution |
//! |---|---|---|
//! | 720x1280 (default) | 9:16 | 720p |
//! | 1280x720 | 16:9 | 720p |
//! | 1024x1792 | 9:16 | 1080p |
//! | 1792x1024 | 16:9 | 1080p |

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole, ImageSource, InputImage};
use crate::task::{Dialect, NewTask, ParsedCreate, Task, TaskKind, TaskState};
use crate::validate::{http_url, inline_image, max_chars, model_name, optional_url, parse_json};

/// OpenAI's own default model.
pub const DEFAULT_MODEL: &str = "sora-2";
pub const MAX_PROMPT_CHARS: usize = 32_000;
pub const MAX_MODEL_CHARS: usize = 128;
/// Clip lengths, in seconds, as the spec lists them.
pub const SECONDS: &[&str] = &["4", "8", "12"];
pub const DEFAULT_SECONDS: u32 = 4;
/// Frames as the spec lists them, with gengate's aspect and resolution.
pub const SIZES: &[(&str, &str, &str)] = &[
    ("720x1280", "9:16", "720p"),
    ("1280x720", "16:9", "720p"),
    ("1024x1792", "9:16", "1080p"),
    ("1792x1024", "16:9", "1080p"),
];
pub const DEFAULT_SIZE: &str = "720x1280";
pub const ID_PREFIX: &str = "video_";
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// `POST /v1/videos` as JSON (multipart carries the same fields, with
/// `input_reference` as an uploaded file or `input_reference[image_url]`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateVideo)]
pub struct CreateVideo {
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
    /// A model a channel serves (default `sora-2`, as OpenAI's).
    #[schema(schema_with = schema::optional_model::<MAX_MODEL_CHARS>)]
    pub model: Option<String>,
    /// "4" (default), "8" or "12"; the number is taken too.
    #[schema(schema_with = seconds_schema)]
    pub seconds: Option<serde_json::Value>,
    /// 720x1280 (default), 1280x720, 1024x1792 or 1792x1024.
    #[schema(schema_with = size_schema)]
    pub size: Option<String>,
    /// The first frame: `{image_url}`, an http(s) URL or a data URL of a
    /// png or jpeg (at most 10 MB). `file_id` is not offered.
    pub input_reference: Option<ImageReference>,
    /// gengate's extension: where every change of the video is POSTed
    /// (the video object, signed with Standard Webhooks).
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageReference {
    /// An http(s) URL or a base64 data URL of a png or jpeg.
    #[schema(schema_with = image_url_schema, required = true)]
    pub image_url: Option<String>,
    /// Files uploaded to OpenAI's Files API: not offered (refused by name).
    #[schema(schema_with = schema::unsupported)]
    pub file_id: Option<String>,
}

fn image_url_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(format!(
            "{}|{}",
            schema::HTTP_URL,
            schema::inline_image(false)
        )))
        .description(Some(
            "An http(s) URL (refused when its host resolves to an internal address), or a \
             data URL: base64 of a png or jpeg, at most 10 MB decoded",
        ))
        .build()
}

impl ImageReference {
    /// What the reference names.
    pub fn reference(self) -> Result<Reference, ApiError> {
        match self {
            ImageReference {
                file_id: Some(_), ..
            } => Ok(Reference::FileId),
            ImageReference {
                image_url: Some(url),
                ..
            } => Ok(Reference::ImageUrl(url)),
            _ => Err(ApiError::validation(
                "input_reference",
                "give image_url (an http(s) URL or a data URL)",
            )),
        }
    }
}

fn seconds_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::String,
            utoipa::openapi::Type::Integer,
            utoipa::openapi::Type::Null,
        ]))
        .enum_values(Some(
            SECONDS
                .iter()
                .map(|s| serde_json::Value::from(*s))
                .chain([4, 8, 12].map(serde_json::Value::from))
                .chain([serde_json::Value::Null]),
        ))
        .build()
}

fn size_schema() -> utoipa::openapi::Object {
    let sizes: Vec<&str> = SIZES.iter().map(|s| s.0).collect();
    schema::choice(&sizes)
}

/// The first frame, however the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    /// `{image_url}`: a URL, or a data URL.
    ImageUrl(String),
    /// A file part of a multipart request.
    Upload(Vec<u8>),
    FileId,
}

/// A create request with its fields as text, from JSON or multipart.
#[derive(Debug, Default)]
pub struct CreateForm {
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub seconds: Option<String>,
    pub size: Option<String>,
    pub reference: Option<Reference>,
    pub callback_url: Option<String>,
}

/// A JSON create body as a [`CreateForm`].
pub fn json_form(body: &[u8]) -> Result<CreateForm, ApiError> {
    let b: CreateVideo = parse_json(body)?;
    let seconds = match b.seconds {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        // 8 and 8.0 alike: JSON does not tell them apart.
        Some(serde_json::Value::Number(n)) => Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=100.0).contains(&f) => (f as u32).to_string(),
            _ => n.to_string(),
        }),
        Some(other) => {
            return Err(ApiError::validation(
                "seconds",
                format!("must be one of {} (got {other})", SECONDS.join(", ")),
            ));
        }
    };
    let reference = b
        .input_reference
        .map(ImageReference::reference)
        .transpose()?;
    Ok(CreateForm {
        prompt: b.prompt,
        model: b.model,
        seconds,
        size: b.size,
        reference,
        callback_url: b.callback_url,
    })
}

/// `size` as gengate's aspect ratio and resolution.
pub fn frame_of(size: &str) -> Option<(&'static str, &'static str)> {
    SIZES
        .iter()
        .find(|s| s.0 == size)
        .map(|&(_, aspect, res)| (aspect, res))
}

/// A task's frame in OpenAI's words: the listed size nearest its aspect
/// (portrait or landscape) and resolution (1080p and up, or below).
pub fn size_of(task: &Task) -> &'static str {
    match (task.request.portrait(), task.request.is_hd()) {
        (true, false) => "720x1280",
        (false, false) => "1280x720",
        (true, true) => "1024x1792",
        (false, true) => "1792x1024",
    }
}

pub fn parse_create(form: CreateForm) -> Result<ParsedCreate, ApiError> {
    let prompt = form
        .prompt
        .ok_or_else(|| ApiError::validation("prompt", "is required"))?;
    if crate::validate::is_blank(&prompt) {
        return Err(ApiError::validation("prompt", "must not be empty"));
    }
    max_chars("prompt", &prompt, MAX_PROMPT_CHARS)?;
    let model = match form.model.filter(|m| !m.is_empty()) {
        None => DEFAULT_MODEL.to_string(),
        Some(m) => {
            model_name("model", &m, MAX_MODEL_CHARS)?;
            m
        }
    };
    let seconds = match form.seconds.as_deref() {
        None | Some("") => DEFAULT_SECONDS,
        Some(s) if SECONDS.contains(&s) => s.parse().unwrap_or(DEFAULT_SECONDS),
        Some(s) => {
            return Err(ApiError::validation(
                "seconds",
                format!("must be one of {} (got {s:?})", SECONDS.join(", ")),
            ));
        }
    };
    let size = form.size.filter(|s| !s.is_empty());
    let (aspect, resolution) =
        frame_of(size.as_deref().unwrap_or(DEFAULT_SIZE)).ok_or_else(|| {
            let sizes: Vec<&str> = SIZES.iter().map(|s| s.0).collect();
            ApiError::validation(
                "size",
                format!(
                    "must be one of {} (got {:?})",
                    sizes.join(", "),
                    size.as_deref().unwrap_or_default()
                ),
            )
        })?;
    let mut images = Vec::new();
    let mut uploads = Vec::new();
    match form.reference {
        None => {}
        Some(Reference::FileId) => {
            return Err(ApiError::validation(
                "input_reference.file_id",
                "is not offered by this gateway: give input_reference.image_url or upload the file",
            ));
        }
        Some(Reference::ImageUrl(url)) if url.starts_with("data:") => {
            let (bytes, format) = inline_image("input_reference.image_url", &url)?;
            let (image, upload) = InputImage::inline(ImageRole::Start, bytes, format);
            images.push(image);
            uploads.push(upload);
        }
        Some(Reference::ImageUrl(url)) => images.push(InputImage {
            role: ImageRole::Start,
            source: ImageSource::Url {
                url: http_url("input_reference.image_url", &url)?,
            },
        }),
        Some(Reference::Upload(bytes)) => {
            let format = crate::validate::image_bytes("input_reference", &bytes)?;
            let (image, upload) = InputImage::inline(ImageRole::Start, bytes, format);
            images.push(image);
            uploads.push(upload);
        }
    }
    let task = NewTask {
        dialect: Dialect::OpenaiVideos,
        kind: TaskKind::Video,
        model,
        request: GenerationRequest {
            prompt,
            aspect_ratio: aspect.into(),
            n: 1,
            images,
            resolution: Some(resolution.into()),
            duration_secs: Some(seconds),
            ..GenerationRequest::default()
        },
        callback_url: optional_url("callback_url", form.callback_url)?,
        external_id: None,
        channel: None,
    };
    Ok(ParsedCreate { task, uploads })
}

/// `POST /v1/videos/{id}/remix`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemixVideo {
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
}

/// A remix of `parent`: its model, frame and length, a new prompt; the
/// caller makes it continue the parent (on its channel).
pub fn parse_remix(body: &[u8], parent: &Task) -> Result<NewTask, ApiError> {
    let b: RemixVideo = parse_json(body)?;
    let form = CreateForm {
        prompt: b.prompt,
        model: Some(parent.model.clone()),
        size: Some(size_of(parent).into()),
        ..CreateForm::default()
    };
    let mut new = parse_create(form)?.task;
    // The parent's own length, which another dialect may have chosen.
    new.request.duration_secs = parent.request.duration_secs.or(Some(DEFAULT_SECONDS));
    Ok(new)
}

/// A video id: `video_` and the task id (a bare task id is taken too).
pub fn parse_id(id: &str) -> Option<Uuid> {
    Uuid::try_parse(id.strip_prefix(ID_PREFIX).unwrap_or(id)).ok()
}

pub fn video_id(task: Uuid) -> String {
    format!("{ID_PREFIX}{}", task.simple())
}

/// `GET /v1/videos` query, as text (a bad value is a 400 naming it).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The last video id of the previous page.
    pub after: Option<String>,
    /// 0 to 100 (default 20).
    #[param(pattern = "^([0-9]|[1-9][0-9]|100)?$")]
    pub limit: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    #[param(pattern = "^(asc|desc)?$")]
    pub order: Option<String>,
}

/// A list query, checked: the cursor's video, the page size, oldest first.
pub struct ListPage {
    pub after: Option<Uuid>,
    pub limit: u32,
    pub oldest_first: bool,
}

impl ListQuery {
    pub fn check(self) -> Result<ListPage, ApiError> {
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_LIMIT)
                .ok_or_else(|| {
                    ApiError::validation("limit", format!("must be 0 to {MAX_LIMIT} (got {s:?})"))
                })?,
        };
        let oldest_first = match self.order.as_deref() {
            None | Some("") | Some("desc") => false,
            Some("asc") => true,
            Some(o) => {
                return Err(ApiError::validation(
                    "order",
                    format!("must be asc or desc (got {o:?})"),
                ));
            }
        };
        let after = match self.after.as_deref() {
            None | Some("") => None,
            Some(a) => Some(parse_id(a).ok_or_else(|| {
                ApiError::validation("after", format!("{a:?} is not a video id"))
            })?),
        };
        Ok(ListPage {
            after,
            limit,
            oldest_first,
        })
    }
}

/// The video object.
#[derive(Debug, Serialize, ToSchema)]
pub struct Video {
    pub id: String,
    /// Always `video`.
    pub object: &'static str,
    pub model: String,
    /// queued, in_progress, completed or failed (a canceled video is failed).
    pub status: &'static str,
    /// 0 to 100.
    pub progress: u8,
    /// Unix seconds.
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// When the stored files are deleted (retention); null: kept.
    pub expires_at: Option<i64>,
    pub prompt: Option<String>,
    pub size: &'static str,
    pub seconds: String,
    pub remixed_from_video_id: Option<String>,
    pub error: Option<VideoError>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoError {
    /// `generation_failed` (gengate or the upstream could not make it),
    /// `canceled`, or `expired` (its files were deleted under the
    /// retention policy).
    pub code: &'static str,
    pub message: String,
}

/// `GET /v1/videos`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Video>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// `DELETE /v1/videos/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedVideo {
    /// Always `video.deleted`.
    pub object: &'static str,
    pub deleted: bool,
    pub id: String,
}

pub fn status(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "queued",
        TaskState::Processing => "in_progress",
        TaskState::Completed => "completed",
        TaskState::Failed | TaskState::Canceled => "failed",
    }
}

pub fn render(task: &Task, links: &Links<'_>) -> Video {
    let secs = |ms: i64| ms / 1000;
    let error = match task.state {
        TaskState::Failed => Some(VideoError {
            code: "generation_failed",
            message: task
                .failure_reason
                .clone()
                .unwrap_or_else(|| "the video could not be made".into()),
        }),
        TaskState::Canceled => Some(VideoError {
            code: "canceled",
            message: task
                .failure_reason
                .clone()
                .unwrap_or_else(|| "canceled".into()),
        }),
        _ => links.expired(task).map(|message| VideoError {
            code: "expired",
            message,
        }),
    };
    Video {
        id: video_id(task.id),
        object: "video",
        model: task.model.clone(),
        status: status(task.state),
        progress: if task.state == TaskState::Completed {
            100
        } else {
            task.progress
        },
        created_at: secs(task.created_at),
        completed_at: task
            .finished_at
            .filter(|_| task.state.is_terminal())
            .map(secs),
        expires_at: task
            .keep_until
            .filter(|_| task.state == TaskState::Completed)
            .map(secs),
        prompt: Some(task.request.prompt.clone()),
        size: size_of(task),
        seconds: task
            .request
            .duration_secs
            .unwrap_or(DEFAULT_SECONDS)
            .to_string(),
        remixed_from_video_id: task.request.extend_from.map(video_id),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(form: CreateForm) -> String {
        match parse_create(form) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn prompt(p: &str) -> CreateForm {
        CreateForm {
            prompt: Some(p.into()),
            ..CreateForm::default()
        }
    }

    #[test]
    fn defaults_and_sizes_map_both_ways() {
        let t = parse_create(prompt("a cat")).unwrap().task;
        assert_eq!((t.model.as_str(), t.kind), (DEFAULT_MODEL, TaskKind::Video));
        assert_eq!(t.request.duration_secs, Some(4));
        assert_eq!(t.request.aspect_ratio, "9:16");
        let task = Task::accepted(Uuid::nil(), Uuid::nil(), t, 0, 1);
        assert_eq!(size_of(&task), DEFAULT_SIZE);
        for (size, _, _) in SIZES {
            let form = CreateForm {
                size: Some(size.to_string()),
                seconds: Some("12".into()),
                ..prompt("a")
            };
            let t = parse_create(form).unwrap().task;
            assert_eq!(t.request.duration_secs, Some(12));
            let task = Task::accepted(Uuid::nil(), Uuid::nil(), t, 0, 1);
            assert_eq!(size_of(&task), *size);
        }
        for eight in ["8", "8.0", "\"8\""] {
            let json =
                json_form(format!(r#"{{"prompt":"a","seconds":{eight}}}"#).as_bytes()).unwrap();
            assert_eq!(json.seconds.as_deref(), Some("8"), "{eight}");
        }
    }

    #[test]
    fn rules_name_their_field() {
        assert_eq!(field(CreateForm::default()), "prompt");
        assert_eq!(field(prompt(" ")), "prompt");
        let with = |f: fn(&mut CreateForm)| {
            let mut form = prompt("a");
            f(&mut form);
            field(form)
        };
        assert_eq!(with(|f| f.seconds = Some("5".into())), "seconds");
        assert_eq!(with(|f| f.size = Some("1024x1024".into())), "size");
        assert_eq!(with(|f| f.model = Some("a b".into())), "model");
        assert_eq!(
            with(|f| f.reference = Some(Reference::FileId)),
            "input_reference.file_id"
        );
        assert_eq!(
            with(|f| f.reference = Some(Reference::ImageUrl("ftp://x/y.png".into()))),
            "input_reference.image_url"
        );
        assert_eq!(
            with(|f| f.reference = Some(Reference::Upload(b"GIF89a".to_vec()))),
            "input_reference"
        );
        assert_eq!(
            with(|f| f.callback_url = Some("mailto:a@b".into())),
            "callback_url"
        );
        assert!(matches!(
            json_form(br#"{"prompt":"a","input_reference":{}}"#),
            Err(ApiError::Validation { field, .. }) if field == "input_reference"
        ));
        assert!(json_form(br#"{"prompt":"a","colour":"red"}"#).is_err());
    }

    #[test]
    fn ids_and_list_queries() {
        let id = Uuid::now_v7();
        assert_eq!(parse_id(&video_id(id)), Some(id));
        assert_eq!(parse_id(&id.to_string()), Some(id));
        assert_eq!(parse_id("video_123"), None);
        let page = ListQuery {
            after: Some(video_id(id)),
            limit: Some("5".into()),
            order: Some("asc".into()),
        }
        .check()
        .unwrap();
        assert_eq!(
            (page.after, page.limit, page.oldest_first),
            (Some(id), 5, true)
        );
        for (q, f) in [
            (
                ListQuery {
                    limit: Some("101".into()),
                    ..ListQuery::default()
                },
                "limit",
            ),
            (
                ListQuery {
                    order: Some("up".into()),
                    ..ListQuery::default()
                },
                "order",
            ),
            (
                ListQuery {
                    after: Some("x".into()),
                    ..ListQuery::default()
                },
                "after",
            ),
        ] {
            assert!(matches!(q.check(), Err(ApiError::Validation { field, .. }) if field == f));
        }
    }
}
