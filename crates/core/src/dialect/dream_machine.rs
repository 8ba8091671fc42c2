//! Luma's official API (`/dream-machine/v1`, the `lumaai` SDKs' shape):
//! video and image requests, and the Generation object.
//!
//! What gengate cannot do is refused by name rather than dropped: camera
//! `concepts`, style, character and modify references, and a generation as
//! the last keyframe (gengate continues videos forward only).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole, ImageSource, InputImage};
use crate::task::{ArtifactRole, Dialect, NewTask, Task, TaskKind, TaskState};
use crate::time::rfc3339_ms;
use crate::validate::{http_url, model_name, one_of, optional_url, parse_json, required_text};

pub const ASPECT_RATIOS: &[&str] = &["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];
pub const RESOLUTIONS: &[&str] = &["540p", "720p", "1080p", "4k"];
pub const DURATIONS: &[&str] = &["5s", "9s"];
pub const IMAGE_FORMATS: &[&str] = &["jpg", "png"];
pub const DEFAULT_ASPECT_RATIO: &str = "16:9";
pub const MAX_PROMPT_CHARS: usize = 5000;
pub const MAX_MODEL_CHARS: usize = 128;
/// `GET /generations` pages hold at most this many (and this many by default).
pub const MAX_LIMIT: u32 = 100;
/// The largest integer an `f64` holds exactly: the balance reported for a
/// key without a credit limit (every key, until quotas exist).
pub const UNLIMITED_CREDITS: f64 = 9_007_199_254_740_991.0;
/// A synchronous image create waits at most this long (`sync_timeout`).
pub const MAX_SYNC_TIMEOUT_SECS: f64 = 60.0;

/// A keyframe: an image by URL, or an earlier generation (its last frame).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Keyframe {
    /// `image` or `generation`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// For `image`: an http(s) URL, fetched when the task is dispatched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For `generation`: the id of a completed video of the same key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct Keyframes {
    /// The first frame.
    #[serde(
        default,
        deserialize_with = "crate::validate::object",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = frame0)]
    pub frame0: Option<Keyframe>,
    /// The last frame (an image only).
    #[serde(
        default,
        deserialize_with = "crate::validate::object",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = frame1)]
    pub frame1: Option<Keyframe>,
}

/// `{"type": "image", "url": ...}`.
fn image_keyframe() -> utoipa::openapi::Object {
    use utoipa::openapi::ObjectBuilder;
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["image"])),
        )
        .property("url", schema::required_url())
        .required("type")
        .required("url")
        .build()
}

/// `{"type": "generation", "id": ...}`: a completed video of the same key.
fn generation_keyframe() -> utoipa::openapi::Object {
    use utoipa::openapi::ObjectBuilder;
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .enum_values(Some(["generation"])),
        )
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Uuid,
                ))),
        )
        .required("type")
        .required("id")
        .build()
}

fn frame0() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(image_keyframe())
        .item(generation_keyframe())
        .item(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Null))
        .build()
        .into()
}

fn frame1() -> utoipa::openapi::Schema {
    utoipa::openapi::schema::AnyOfBuilder::new()
        .item(image_keyframe())
        .item(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Null))
        .build()
        .into()
}

fn aspect_ratio_schema() -> utoipa::openapi::Object {
    schema::choice(ASPECT_RATIOS)
}

/// `POST /generations/video` (and `POST /generations`, the SDK's older path).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = DreamMachineCreateVideo)]
pub struct CreateVideo {
    #[schema(schema_with = video_type)]
    pub generation_type: Option<String>,
    /// A model a channel serves, e.g. `ray-2`.
    #[schema(schema_with = schema::model::<MAX_MODEL_CHARS>, required = true)]
    pub model: Option<String>,
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
    /// 16:9 by default.
    #[schema(schema_with = aspect_ratio_schema)]
    pub aspect_ratio: Option<String>,
    #[serde(rename = "loop")]
    pub loop_video: Option<bool>,
    #[serde(default, deserialize_with = "crate::validate::object")]
    pub keyframes: Option<Keyframes>,
    /// Where the Generation is POSTed on each change.
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
    #[schema(schema_with = resolution_schema)]
    pub resolution: Option<String>,
    #[schema(schema_with = duration_schema)]
    pub duration: Option<String>,
    /// Camera concepts are not supported: empty or left out.
    #[schema(value_type = Option<Vec<Object>>, max_items = 0)]
    pub concepts: Option<Vec<serde_json::Value>>,
}

fn video_type() -> utoipa::openapi::Object {
    schema::choice(&["video"])
}

fn image_type() -> utoipa::openapi::Object {
    schema::choice(&["image"])
}

fn resolution_schema() -> utoipa::openapi::Object {
    schema::choice(RESOLUTIONS)
}

fn duration_schema() -> utoipa::openapi::Object {
    schema::choice(DURATIONS)
}

fn format_schema() -> utoipa::openapi::Object {
    schema::choice(IMAGE_FORMATS)
}

/// An image reference: a URL and how closely to follow it (0 to 1).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ImageRef {
    #[schema(schema_with = schema::required_url, required = true)]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub weight: Option<f64>,
}

/// `POST /generations/image`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = DreamMachineCreateImage)]
pub struct CreateImage {
    #[schema(schema_with = image_type)]
    pub generation_type: Option<String>,
    /// A model a channel serves, e.g. `photon-1`.
    #[schema(schema_with = schema::model::<MAX_MODEL_CHARS>, required = true)]
    pub model: Option<String>,
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
    /// 16:9 by default.
    #[schema(schema_with = aspect_ratio_schema)]
    pub aspect_ratio: Option<String>,
    /// `jpg` (default) or `png`: checked; the file keeps the format the
    /// upstream made (its URL's extension says which).
    #[schema(schema_with = format_schema)]
    pub format: Option<String>,
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
    /// At most one reference image.
    #[schema(max_items = 1)]
    pub image_ref: Option<Vec<ImageRef>>,
    #[schema(schema_with = schema::unsupported)]
    pub style_ref: Option<serde_json::Value>,
    #[schema(schema_with = schema::unsupported)]
    pub character_ref: Option<serde_json::Value>,
    #[schema(schema_with = schema::unsupported)]
    pub modify_image_ref: Option<serde_json::Value>,
    /// Answer once the image is made (or failed), waiting up to `sync_timeout`.
    pub sync: Option<bool>,
    /// Seconds, 1 to 60 (default 60); used with `sync`.
    #[schema(minimum = 1.0, maximum = 60.0)]
    pub sync_timeout: Option<f64>,
}

/// A parsed video create: the task, and the generation its first frame
/// continues, which the caller checks (same key, completed video).
pub struct VideoCreate {
    pub task: NewTask,
    pub extends: Option<Uuid>,
}

/// A parsed image create, and how long to wait for it if `sync`.
pub struct ImageCreate {
    pub task: NewTask,
    pub sync_wait_secs: Option<f64>,
}

fn model(m: Option<String>) -> Result<String, ApiError> {
    let m = m
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::validation("model", "is required"))?;
    model_name("model", &m, MAX_MODEL_CHARS)?;
    Ok(m)
}

fn generation_type(given: Option<&str>, want: &str) -> Result<(), ApiError> {
    match given {
        None => Ok(()),
        Some(g) if g == want => Ok(()),
        Some(g) => Err(ApiError::validation(
            "generation_type",
            format!("must be {want:?} here (got {g:?})"),
        )),
    }
}

fn aspect_ratio(a: Option<String>) -> Result<String, ApiError> {
    let a = a.unwrap_or_else(|| DEFAULT_ASPECT_RATIO.into());
    one_of("aspect_ratio", &a, ASPECT_RATIOS)?;
    Ok(a)
}

fn prompt(p: Option<String>) -> Result<String, ApiError> {
    required_text("prompt", p, MAX_PROMPT_CHARS)
}

fn unsupported(field: &str, what: &str) -> ApiError {
    ApiError::validation(field, format!("is not supported by this gateway ({what})"))
}

/// One keyframe: an image input, or the id of the generation it continues.
fn keyframe(
    field: &str,
    k: Keyframe,
    role: ImageRole,
) -> Result<Result<InputImage, Uuid>, ApiError> {
    match k.kind.as_deref() {
        Some("image") => {
            let url = k
                .url
                .ok_or_else(|| ApiError::validation(format!("{field}.url"), "is required"))?;
            Ok(Ok(InputImage {
                role,
                source: ImageSource::Url {
                    url: http_url(&format!("{field}.url"), &url)?,
                },
            }))
        }
        Some("generation") => {
            let id =
                k.id.ok_or_else(|| ApiError::validation(format!("{field}.id"), "is required"))?;
            let id = Uuid::try_parse(&id).map_err(|_| {
                ApiError::validation(
                    format!("{field}.id"),
                    format!("{id:?} is not a generation id"),
                )
            })?;
            Ok(Err(id))
        }
        other => Err(ApiError::validation(
            format!("{field}.type"),
            format!("must be \"image\" or \"generation\" (got {other:?})"),
        )),
    }
}

/// Parse a video create body.
pub fn parse_video(body: &[u8]) -> Result<VideoCreate, ApiError> {
    let b: CreateVideo = parse_json(body)?;
    generation_type(b.generation_type.as_deref(), "video")?;
    let model = model(b.model)?;
    let prompt = prompt(b.prompt)?;
    let aspect_ratio = aspect_ratio(b.aspect_ratio)?;
    if let Some(r) = &b.resolution {
        one_of("resolution", r, RESOLUTIONS)?;
    }
    let duration_secs = match &b.duration {
        None => None,
        Some(d) => {
            one_of("duration", d, DURATIONS)?;
            d.trim_end_matches('s').parse().ok()
        }
    };
    if b.concepts.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(unsupported("concepts", "camera concepts"));
    }
    let mut images = Vec::new();
    let mut extends = None;
    let frames = b.keyframes.unwrap_or_default();
    if let Some(k) = frames.frame0 {
        match keyframe("keyframes.frame0", k, ImageRole::Start)? {
            Ok(image) => images.push(image),
            Err(id) => extends = Some(id),
        }
    }
    if let Some(k) = frames.frame1 {
        match keyframe("keyframes.frame1", k, ImageRole::End)? {
            Ok(image) => images.push(image),
            Err(_) => {
                return Err(unsupported(
                    "keyframes.frame1",
                    "a generation as the last frame; videos are continued forward only, from frame0",
                ));
            }
        }
    }
    let callback_url = optional_url("callback_url", b.callback_url)?;
    Ok(VideoCreate {
        task: NewTask {
            dialect: Dialect::DreamMachine,
            kind: TaskKind::Video,
            model,
            request: GenerationRequest {
                prompt,
                aspect_ratio,
                n: 1,
                images,
                loop_video: b.loop_video,
                resolution: b.resolution,
                duration_secs,
                ..GenerationRequest::default()
            },
            callback_url,
            external_id: None,
            channel: None,
        },
        extends,
    })
}

/// Parse an image create body.
pub fn parse_image(body: &[u8]) -> Result<ImageCreate, ApiError> {
    let b: CreateImage = parse_json(body)?;
    generation_type(b.generation_type.as_deref(), "image")?;
    let model = model(b.model)?;
    let prompt = prompt(b.prompt)?;
    let aspect_ratio = aspect_ratio(b.aspect_ratio)?;
    if let Some(f) = &b.format {
        one_of("format", f, IMAGE_FORMATS)?;
    }
    for (given, field) in [
        (b.style_ref.is_some(), "style_ref"),
        (b.character_ref.is_some(), "character_ref"),
        (b.modify_image_ref.is_some(), "modify_image_ref"),
    ] {
        if given {
            return Err(unsupported(field, "only image_ref is"));
        }
    }
    let refs = b.image_ref.unwrap_or_default();
    if refs.len() > 1 {
        return Err(ApiError::validation(
            "image_ref",
            format!("takes at most 1 reference image here (got {})", refs.len()),
        ));
    }
    let mut images = Vec::new();
    let mut image_fidelity = None;
    if let Some(r) = refs.into_iter().next() {
        let url = r
            .url
            .ok_or_else(|| ApiError::validation("image_ref[0].url", "is required"))?;
        if let Some(w) = r.weight {
            if !(0.0..=1.0).contains(&w) {
                return Err(ApiError::validation(
                    "image_ref[0].weight",
                    format!("must be between 0 and 1 (got {w})"),
                ));
            }
            image_fidelity = Some(w);
        }
        images.push(InputImage {
            role: ImageRole::Reference,
            source: ImageSource::Url {
                url: http_url("image_ref[0].url", &url)?,
            },
        });
    }
    // Checked even without `sync`, as documented.
    if let Some(t) = b.sync_timeout
        && !(1.0..=MAX_SYNC_TIMEOUT_SECS).contains(&t)
    {
        return Err(ApiError::validation(
            "sync_timeout",
            format!("must be 1 to {MAX_SYNC_TIMEOUT_SECS} seconds (got {t})"),
        ));
    }
    let sync_wait_secs = b
        .sync
        .unwrap_or(false)
        .then(|| b.sync_timeout.unwrap_or(MAX_SYNC_TIMEOUT_SECS));
    let callback_url = optional_url("callback_url", b.callback_url)?;
    Ok(ImageCreate {
        task: NewTask {
            dialect: Dialect::DreamMachine,
            kind: TaskKind::Image,
            model,
            request: GenerationRequest {
                prompt,
                aspect_ratio,
                n: 1,
                images,
                image_fidelity,
                ..GenerationRequest::default()
            },
            callback_url,
            external_id: None,
            channel: None,
        },
        sync_wait_secs,
    })
}

/// `GET /generations` query parameters (read as text, so a bad value is a
/// 400 naming it).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100 (default 100).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// How many of the newest to skip (default 0).
    #[param(value_type = u64, required = false, minimum = 0, maximum = 9223372036854775807_u64)]
    pub offset: Option<String>,
}

impl ListQuery {
    /// `(offset, limit)`, checked.
    pub fn check(&self) -> Result<(u64, u32), ApiError> {
        let limit = match self.limit.as_deref() {
            None => MAX_LIMIT,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::validation("limit", format!("must be 1 to {MAX_LIMIT} (got {s:?})"))
                })?,
        };
        // At most i64::MAX, as documented: the store reads it as a signed integer.
        let offset = match self.offset.as_deref() {
            None => 0,
            Some(s) => s
                .parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::validation("offset", format!("must be 0 to {} (got {s:?})", i64::MAX))
                })?,
        };
        Ok((offset, limit))
    }
}

// ---- the Generation object ---------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Generation {
    pub id: Uuid,
    /// `video` or `image`.
    pub generation_type: &'static str,
    /// queued, dreaming, completed or failed (a canceled task is failed).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The results, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assets: Option<Assets>,
    pub model: String,
    pub request: GenerationEcho,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Assets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The request as gengate understood it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationEcho {
    pub generation_type: &'static str,
    pub model: String,
    pub prompt: String,
    pub aspect_ratio: String,
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_video: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframes: Option<Keyframes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<Vec<ImageRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// `{generations, has_more, count, limit, offset}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GenerationList {
    pub generations: Vec<Generation>,
    pub has_more: bool,
    /// How many this page holds.
    pub count: usize,
    pub limit: u32,
    pub offset: u64,
}

/// `{"credit_balance": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Credits {
    /// The key's balance; for an unlimited key, the largest integer a
    /// float holds exactly (2^53 - 1), with `unlimited` saying so.
    pub credit_balance: f64,
    pub unlimited: bool,
}

impl Credits {
    pub fn of(key: &crate::task::ApiKey) -> Credits {
        if key.unlimited {
            return Credits {
                credit_balance: UNLIMITED_CREDITS,
                unlimited: true,
            };
        }
        Credits {
            // Balances are far below 2^53: exact as a float.
            credit_balance: key.balance as f64,
            unlimited: false,
        }
    }
}

/// `{"message": "pong"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pong {
    pub message: &'static str,
}

fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Pending => "queued",
        TaskState::Processing => "dreaming",
        TaskState::Completed => "completed",
        TaskState::Failed | TaskState::Canceled => "failed",
    }
}

pub fn render(task: &Task, links: &Links<'_>) -> Generation {
    let url = |role| task.artifact(role).map(|a| links.url(&a.key));
    let video = task.kind == TaskKind::Video;
    let expired = links.expired(task);
    // Expired results: no assets, and failure_reason, Luma's only message, says why.
    let assets = (task.state == TaskState::Completed && expired.is_none()).then(|| Assets {
        video: url(ArtifactRole::Video),
        image: url(ArtifactRole::Image),
    });
    let r = &task.request;
    let frame_url = |role| match r.image(role).map(|i| &i.source) {
        Some(ImageSource::Url { url }) => Some(url.clone()),
        _ => None,
    };
    let image_kf = |url| Keyframe {
        kind: Some("image".into()),
        url: Some(url),
        id: None,
    };
    let frame0 = match r.extend_from {
        Some(id) => Some(Keyframe {
            kind: Some("generation".into()),
            url: None,
            id: Some(id.to_string()),
        }),
        None => frame_url(ImageRole::Start).map(image_kf),
    };
    let frame1 = frame_url(ImageRole::End).map(image_kf);
    let keyframes = (frame0.is_some() || frame1.is_some()).then_some(Keyframes { frame0, frame1 });
    let image_ref = frame_url(ImageRole::Reference).map(|url| {
        vec![ImageRef {
            url: Some(url),
            weight: r.image_fidelity,
        }]
    });
    Generation {
        id: task.id,
        generation_type: if video { "video" } else { "image" },
        state: state_name(task.state),
        failure_reason: matches!(task.state, TaskState::Failed | TaskState::Canceled)
            .then(|| {
                task.failure_reason
                    .clone()
                    .unwrap_or_else(|| "failed".into())
            })
            .or(expired),
        created_at: rfc3339_ms(task.created_at),
        assets,
        model: task.model.clone(),
        request: GenerationEcho {
            generation_type: if video { "video" } else { "image" },
            model: task.model.clone(),
            prompt: r.prompt.clone(),
            aspect_ratio: r.aspect_ratio.clone(),
            loop_video: r.loop_video,
            keyframes,
            image_ref,
            callback_url: task.callback_url.clone(),
            resolution: r.resolution.clone(),
            duration: r.duration_secs.map(|s| format!("{s}s")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<T>(r: Result<T, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            Err(other) => panic!("expected a validation error, got {other:?}"),
            Ok(_) => panic!("expected a validation error, got a task"),
        }
    }

    #[test]
    fn video_keyframes_become_frames_or_an_extend() {
        let v = parse_video(
            br#"{"model":"ray-2","prompt":"lake","keyframes":{
                "frame0":{"type":"generation","id":"0190a07c-7641-7809-a133-10786201bb57"},
                "frame1":{"type":"image","url":"https://x.test/end.jpg"}}}"#,
        )
        .unwrap();
        assert_eq!(
            v.extends.unwrap().to_string(),
            "0190a07c-7641-7809-a133-10786201bb57"
        );
        assert_eq!(v.task.request.images.len(), 1);
        assert_eq!(v.task.request.images[0].role, ImageRole::End);
        assert_eq!(v.task.request.aspect_ratio, "16:9");
        assert_eq!(v.task.kind, TaskKind::Video);
    }

    #[test]
    fn video_rules_name_their_field() {
        let p = |b: &str| field(parse_video(b.as_bytes()));
        assert_eq!(p(r#"{"prompt":"a"}"#), "model");
        assert_eq!(p(r#"{"model":"ray-2"}"#), "prompt");
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","aspect_ratio":"2:1"}"#),
            "aspect_ratio"
        );
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","duration":"7s"}"#),
            "duration"
        );
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","resolution":"8k"}"#),
            "resolution"
        );
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","generation_type":"image"}"#),
            "generation_type"
        );
        assert_eq!(
            p(
                r#"{"model":"ray-2","prompt":"a","keyframes":{"frame0":{"type":"video","url":"https://x.test/a"}}}"#
            ),
            "keyframes.frame0.type"
        );
        assert_eq!(
            p(
                r#"{"model":"ray-2","prompt":"a","keyframes":{"frame0":{"type":"image","url":"ftp://x"}}}"#
            ),
            "keyframes.frame0.url"
        );
        assert_eq!(
            p(
                r#"{"model":"ray-2","prompt":"a","keyframes":{"frame0":{"type":"generation","id":"x"}}}"#
            ),
            "keyframes.frame0.id"
        );
        assert_eq!(
            p(
                r#"{"model":"ray-2","prompt":"a","keyframes":{"frame1":{"type":"generation","id":"0190a07c-7641-7809-a133-10786201bb57"}}}"#
            ),
            "keyframes.frame1"
        );
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","concepts":[{"key":"dolly_zoom"}]}"#),
            "concepts"
        );
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","callback_url":"nope"}"#),
            "callback_url"
        );
        assert_eq!(p(r#"{"model":"ray-2","prompt":"a","loop":"yes"}"#), "loop");
        assert_eq!(
            p(r#"{"model":"ray-2","prompt":"a","keyframes":[null]}"#),
            "keyframes"
        );
    }

    #[test]
    fn image_rules_name_their_field() {
        let p = |b: &str| field(parse_image(b.as_bytes()));
        assert_eq!(p(r#"{"prompt":"a"}"#), "model");
        assert_eq!(
            p(r#"{"model":"photon-1","prompt":"a","format":"gif"}"#),
            "format"
        );
        assert_eq!(
            p(r#"{"model":"photon-1","prompt":"a","style_ref":[]}"#),
            "style_ref"
        );
        assert_eq!(
            p(
                r#"{"model":"photon-1","prompt":"a","image_ref":[{"url":"https://x.test/a.jpg","weight":2}]}"#
            ),
            "image_ref[0].weight"
        );
        assert_eq!(
            p(
                r#"{"model":"photon-1","prompt":"a","image_ref":[{"url":"https://x/a"},{"url":"https://x/b"}]}"#
            ),
            "image_ref"
        );
        assert_eq!(
            p(r#"{"model":"photon-1","prompt":"a","sync":true,"sync_timeout":600}"#),
            "sync_timeout"
        );
        let ok = parse_image(
            br#"{"model":"photon-1","prompt":"a","image_ref":[{"url":"https://x.test/a.jpg","weight":0.4}],"sync":true}"#,
        )
        .unwrap();
        assert_eq!(ok.sync_wait_secs, Some(MAX_SYNC_TIMEOUT_SECS));
        assert_eq!(ok.task.request.image_fidelity, Some(0.4));
        assert_eq!(ok.task.kind, TaskKind::Image);
    }

    #[test]
    fn list_query_bounds() {
        let q = |l: Option<&str>, o: Option<&str>| ListQuery {
            limit: l.map(Into::into),
            offset: o.map(Into::into),
        };
        assert_eq!(q(None, None).check().unwrap(), (0, MAX_LIMIT));
        assert_eq!(q(Some("5"), Some("10")).check().unwrap(), (10, 5));
        assert_eq!(field(q(Some("0"), None).check()), "limit");
        assert_eq!(field(q(Some("101"), None).check()), "limit");
        assert_eq!(field(q(None, Some("-1")).check()), "offset");
        assert_eq!(
            field(q(None, Some("9223372036854775808")).check()),
            "offset"
        );
    }
}
