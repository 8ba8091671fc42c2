//! Kling image generation: request parsing with the seed's limits, the task
//! object and Kling's `{code, message, request_id, data}` envelope.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::credits::Refusal;
use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole};
use crate::task::{ArtifactRole, Dialect, NewTask, ParsedCreate, Task, TaskKind, TaskState};
use crate::validate::{
    image_source, one_of, optional_text, optional_url, parse_json, required_text,
};

pub const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3"];
pub const DEFAULT_MODEL: &str = "kling-image";
pub const MAX_PROMPT_CHARS: usize = 500;
pub const MAX_NEGATIVE_PROMPT_CHARS: usize = 200;
pub const MAX_N: u32 = 9;
pub const MAX_EXTERNAL_ID_CHARS: usize = 128;
pub const DEFAULT_PAGE_SIZE: u32 = 30;
pub const MAX_PAGE_SIZE: u32 = 500;

/// `POST /kling/v1/images/generations`, with the seed's parameters and limits.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = KlingCreateImage)]
pub struct CreateImage {
    /// Empty or null: kling-image; `model_name` is accepted as an alias.
    #[serde(alias = "model_name")]
    #[schema(max_length = 64)]
    pub model: Option<String>,
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
    #[schema(max_length = 200)]
    pub negative_prompt: Option<String>,
    /// Reference image: an http(s) URL, or the image itself as base64 or
    /// a data URI; png or jpeg by content, at most 10 MB.
    #[schema(schema_with = image_schema)]
    pub image: Option<String>,
    /// 0 to 1: how close to the reference image.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub image_fidelity: Option<f64>,
    /// 1 to 9 images, default 1.
    #[serde(default, deserialize_with = "crate::validate::integer")]
    #[schema(minimum = 1, maximum = 9)]
    pub n: Option<u32>,
    /// 16:9 by default.
    #[schema(schema_with = aspect_ratio)]
    pub aspect_ratio: Option<String>,
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
    /// Your own id for the task, unique per key; not a UUID (task ids are)
    /// in any form `Uuid::try_parse` reads: simple, hyphenated, braced, URN.
    #[schema(
        max_length = 128,
        pattern = r"^(?!([0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}|urn:uuid:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$)"
    )]
    pub external_task_id: Option<String>,
}

fn aspect_ratio() -> utoipa::openapi::Object {
    schema::choice(ASPECT_RATIOS)
}

/// Empty, an http(s) URL, or base64 (raw or a data URI) of a png or jpeg.
pub(crate) fn image_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::String,
            utoipa::openapi::Type::Null,
        ]))
        .pattern(Some(format!(
            "^$|{}|{}",
            schema::HTTP_URL,
            schema::inline_image(true)
        )))
        .description(Some(
            "An http(s) URL (refused when its host resolves to an internal address), or the \
             image as base64 or a data URI: png or jpeg by content, at most 10 MB decoded.",
        ))
        .build()
}

pub fn parse_create(body: &[u8]) -> Result<ParsedCreate, ApiError> {
    let b: CreateImage = parse_json(body)?;
    let model = match b.model.filter(|m| !m.is_empty()) {
        Some(m) if m.chars().count() > 64 => {
            return Err(ApiError::validation(
                "model",
                "must be at most 64 characters",
            ));
        }
        Some(m) => m,
        None => DEFAULT_MODEL.into(),
    };
    let prompt = required_text("prompt", b.prompt, MAX_PROMPT_CHARS)?;
    let negative_prompt = optional_text(
        "negative_prompt",
        b.negative_prompt,
        MAX_NEGATIVE_PROMPT_CHARS,
    )?;
    let n = b.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::validation(
            "n",
            format!("must be between 1 and {MAX_N} (got {n})"),
        ));
    }
    if let Some(f) = b.image_fidelity
        && !(0.0..=1.0).contains(&f)
    {
        return Err(ApiError::validation(
            "image_fidelity",
            format!("must be between 0 and 1 (got {f})"),
        ));
    }
    let aspect_ratio = b.aspect_ratio.unwrap_or_else(|| "16:9".into());
    one_of("aspect_ratio", &aspect_ratio, ASPECT_RATIOS)?;
    let external_id = optional_text(
        "external_task_id",
        b.external_task_id,
        MAX_EXTERNAL_ID_CHARS,
    )?;
    if external_id
        .as_deref()
        .is_some_and(|e| Uuid::try_parse(e).is_ok())
    {
        // Lookups take either id; a UUID-shaped external id would be ambiguous.
        return Err(ApiError::validation(
            "external_task_id",
            "must not be a UUID (task ids are UUIDs)",
        ));
    }
    let mut images = Vec::new();
    let mut uploads = Vec::new();
    if let Some(img) = b.image.filter(|i| !i.is_empty()) {
        let (image, upload) = image_source("image", &img, ImageRole::Reference)?;
        images.push(image);
        uploads.extend(upload);
    }
    Ok(ParsedCreate {
        task: NewTask {
            dialect: Dialect::Kling,
            kind: TaskKind::Image,
            model,
            request: GenerationRequest {
                prompt,
                negative_prompt,
                aspect_ratio,
                n,
                images,
                image_fidelity: b.image_fidelity,
                ..GenerationRequest::default()
            },
            callback_url: optional_url("callback_url", b.callback_url)?,
            external_id,
            channel: None,
        },
        uploads,
    })
}

/// `?pageNum=&pageSize=` of the list endpoint (read as text, so a bad
/// value is a 400 naming it).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1.
    #[serde(rename = "pageNum")]
    #[param(value_type = u32, required = false, minimum = 1, maximum = 1000000)]
    pub page_num: Option<String>,
    /// Tasks per page, 1 to 500, default 30.
    #[serde(rename = "pageSize")]
    #[param(value_type = u32, required = false, minimum = 1, maximum = 500)]
    pub page_size: Option<String>,
}

impl ListQuery {
    /// (offset, limit) of the page asked for.
    pub fn page(&self) -> Result<(u64, u32), ApiError> {
        let num = parse_int("pageNum", self.page_num.as_deref(), 1, 1, 1_000_000)?;
        let size = parse_int(
            "pageSize",
            self.page_size.as_deref(),
            DEFAULT_PAGE_SIZE,
            1,
            MAX_PAGE_SIZE,
        )?;
        Ok((u64::from(num - 1) * u64::from(size), size))
    }
}

fn parse_int(
    field: &str,
    v: Option<&str>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(v) = v else { return Ok(default) };
    match v.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::validation(
            field,
            format!("must be an integer from {min} to {max} (got {v:?})"),
        )),
    }
}

// ---- the task object and envelope -------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 0 on success; Kling's error codes otherwise.
    pub code: u32,
    pub message: String,
    pub request_id: String,
    pub data: T,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KlingTask {
    pub task_id: String,
    /// submitted, processing, succeed or failed.
    pub task_status: &'static str,
    pub task_status_msg: String,
    pub task_info: TaskInfo,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
    pub task_result: TaskResult,
    /// Credits the task costs its key (its charge less any refund), as
    /// Kling writes amounts: a decimal string.
    pub final_unit_deduction: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskInfo {
    pub external_task_id: Option<String>,
}

/// `images` for an image task, `videos` for a video task.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<KlingImage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<Vec<KlingVideo>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KlingVideo {
    pub id: String,
    pub url: String,
    /// Seconds, as Kling writes it: a decimal string.
    pub duration: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KlingImage {
    pub index: u32,
    pub url: String,
}

pub fn status_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Pending => "submitted",
        TaskState::Processing => "processing",
        TaskState::Completed => "succeed",
        TaskState::Failed | TaskState::Canceled => "failed",
    }
}

pub fn render(task: &Task, links: &Links<'_>) -> KlingTask {
    kling_task(task, links, |shown| TaskResult {
        images: Some(
            task.artifacts_with(ArtifactRole::Image)
                .filter(|_| shown)
                .map(|a| KlingImage {
                    index: a.index,
                    url: links.url(&a.key),
                })
                .collect(),
        ),
        videos: None,
    })
}

/// A task in Kling's shape, images or videos alike; `result` gives its
/// files, which are `shown` once it completed and until they expire.
pub(crate) fn kling_task(
    task: &Task,
    links: &Links<'_>,
    result: impl FnOnce(bool) -> TaskResult,
) -> KlingTask {
    let expired = links.expired(task);
    let shown = task.state == TaskState::Completed && expired.is_none();
    KlingTask {
        task_id: task.id.to_string(),
        task_status: status_name(task.state),
        task_status_msg: expired
            .or_else(|| task.failure_reason.clone())
            .unwrap_or_default(),
        task_info: TaskInfo {
            external_task_id: task.external_id.clone(),
        },
        created_at: task.created_at,
        updated_at: task.updated_at,
        task_result: result(shown),
        final_unit_deduction: task.net_charge().to_string(),
    }
}

/// Kling's error code for each error kind.
pub fn error_code(err: &ApiError) -> u32 {
    match err {
        ApiError::Unauthorized(m) if m.contains("missing") => 1001,
        ApiError::Unauthorized(_) => 1000,
        ApiError::Forbidden(_) => 1103,
        ApiError::Validation { .. } | ApiError::Conflict(_) => 1201,
        ApiError::MalformedJson(_)
        | ApiError::UnsupportedMediaType
        | ApiError::PayloadTooLarge { .. } => 1200,
        ApiError::NotFound(_) | ApiError::Gone(_) => 1203,
        ApiError::RateLimited { .. } => 1302,
        // Kling's "resource pack depleted" and "parallel tasks over the limit".
        ApiError::Refused(Refusal::Credits { .. } | Refusal::DailySpend { .. }) => 1102,
        ApiError::Refused(Refusal::InFlight { .. }) => 1303,
        ApiError::Internal => 5000,
        ApiError::Unavailable(_) => 5001,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ImageSource;

    fn field(body: &str) -> String {
        match parse_create(body.as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn seed_limits() {
        let ok = parse_create(br#"{"prompt":"a cat"}"#).unwrap();
        assert_eq!(ok.task.model, DEFAULT_MODEL);
        assert_eq!(ok.task.request.n, 1);
        assert_eq!(ok.task.request.aspect_ratio, "16:9");
        let p500 = "p".repeat(500);
        assert!(parse_create(format!(r#"{{"prompt":"{p500}"}}"#).as_bytes()).is_ok());
        assert_eq!(field(&format!(r#"{{"prompt":"{p500}x"}}"#)), "prompt");
        let n200 = "n".repeat(201);
        assert_eq!(
            field(&format!(r#"{{"prompt":"a","negative_prompt":"{n200}"}}"#)),
            "negative_prompt"
        );
        assert_eq!(field(r#"{"prompt":"a","n":0}"#), "n");
        assert_eq!(field(r#"{"prompt":"a","n":10}"#), "n");
        assert_eq!(
            field(r#"{"prompt":"a","image_fidelity":1.5}"#),
            "image_fidelity"
        );
        assert_eq!(
            field(r#"{"prompt":"a","image_fidelity":-0.1}"#),
            "image_fidelity"
        );
        assert_eq!(
            field(r#"{"prompt":"a","aspect_ratio":"21:9"}"#),
            "aspect_ratio"
        );
        assert_eq!(
            field(r#"{"prompt":"a","image":"R0lGODlhAQABAAAAACw="}"#),
            "image"
        );
        assert_eq!(
            field(r#"{"prompt":"a","callback_url":"mailto:x@y"}"#),
            "callback_url"
        );
        assert_eq!(field(r#"{}"#), "prompt");
    }

    #[test]
    fn image_urls_are_kept_for_dispatch() {
        let ok = parse_create(br#"{"prompt":"a","image":"https://img.test/a.png"}"#).unwrap();
        assert!(ok.uploads.is_empty());
        assert!(matches!(
            ok.task.request.images[0].source,
            ImageSource::Url { .. }
        ));
    }

    #[test]
    fn pages() {
        let q = ListQuery {
            page_num: Some("3".into()),
            page_size: Some("10".into()),
        };
        assert_eq!(q.page().unwrap(), (20, 10));
        let bad = ListQuery {
            page_num: Some("0".into()),
            page_size: None,
        };
        assert!(bad.page().is_err());
    }
}
