//! The reseller "Luma" task API (the seed): request parsing and the task object.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole, ImageSource, InputImage};
use crate::task::{ArtifactRole, Dialect, Millis, NewTask, Task, TaskKind, TaskState};
use crate::time::rfc3339_ms;
use crate::validate::{one_of, optional_text, optional_url, parse_json, required_text};

pub const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21"];
pub const RESOLUTIONS: &[&str] = &["540p", "720p", "1080p", "4k"];
pub const DEFAULT_MODEL: &str = "ray-2";
pub const MAX_PROMPT_CHARS: usize = 5000;
pub const MAX_MODEL_CHARS: usize = 64;

/// `POST /luma/generations` (and the body of `/extend`, where every
/// field may be left out). `prompt` is taken for `user_prompt` and
/// `notify_hook` for `callback_url` (one name of each pair at most).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = LumaCreateGeneration)]
pub struct CreateGeneration {
    /// The prompt; `prompt` is accepted as an alias.
    #[serde(alias = "prompt")]
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub user_prompt: Option<String>,
    /// 16:9 by default.
    #[schema(schema_with = aspect_ratio)]
    pub aspect_ratio: Option<String>,
    pub expand_prompt: Option<bool>,
    #[serde(rename = "loop")]
    pub loop_video: Option<bool>,
    /// First frame, fetched when the task is dispatched.
    #[schema(schema_with = schema::url)]
    pub image_url: Option<String>,
    /// Last frame, fetched when the task is dispatched.
    #[schema(schema_with = schema::url)]
    pub image_end_url: Option<String>,
    /// Where state changes are POSTed; `notify_hook` is accepted as an alias.
    #[serde(alias = "notify_hook")]
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
    /// Empty or null: ray-2.
    #[schema(max_length = 64, pattern = "^[A-Za-z0-9._-]*$")]
    pub model_name: Option<String>,
    /// Empty or null: the channel's default.
    #[schema(schema_with = resolution)]
    pub resolution: Option<String>,
    /// Seconds: "5s" or "9s" (or the number, 5 or 9).
    #[schema(schema_with = duration_schema)]
    pub duration: Option<serde_json::Value>,
}

fn aspect_ratio() -> utoipa::openapi::Object {
    schema::choice(ASPECT_RATIOS)
}

fn resolution() -> utoipa::openapi::Object {
    let mut all = RESOLUTIONS.to_vec();
    all.push("");
    schema::choice(&all)
}

fn duration_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    // The type said, or utoipa writes `object`, which none of the values is.
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::String,
            Type::Integer,
            Type::Null,
        ]))
        .enum_values(Some([
            serde_json::json!("5s"),
            serde_json::json!("9s"),
            serde_json::json!(5),
            serde_json::json!(9),
            serde_json::Value::Null,
        ]))
        .build()
}

/// Parse a create body into a video task.
pub fn parse_create(body: &[u8]) -> Result<NewTask, ApiError> {
    let b: CreateGeneration = parse_json(body)?;
    let prompt = required_text("user_prompt", b.user_prompt, MAX_PROMPT_CHARS)?;
    let aspect_ratio = b.aspect_ratio.unwrap_or_else(|| "16:9".into());
    one_of("aspect_ratio", &aspect_ratio, ASPECT_RATIOS)?;
    let model = model_name(b.model_name)?;
    let mut images = Vec::new();
    if let Some(url) = optional_url("image_url", b.image_url)? {
        images.push(InputImage {
            role: ImageRole::Start,
            source: ImageSource::Url { url },
        });
    }
    if let Some(url) = optional_url("image_end_url", b.image_end_url)? {
        images.push(InputImage {
            role: ImageRole::End,
            source: ImageSource::Url { url },
        });
    }
    let resolution = optional_text("resolution", b.resolution, 16)?;
    if let Some(r) = &resolution {
        one_of("resolution", r, RESOLUTIONS)?;
    }
    let request = GenerationRequest {
        prompt,
        aspect_ratio,
        n: 1,
        images,
        expand_prompt: b.expand_prompt,
        loop_video: b.loop_video,
        resolution,
        duration_secs: duration(b.duration)?,
        ..GenerationRequest::default()
    };
    let callback_url = optional_url("callback_url", b.callback_url)?;
    Ok(video_task(model, request, callback_url, None))
}

fn video_task(
    model: String,
    request: GenerationRequest,
    callback_url: Option<String>,
    channel: Option<String>,
) -> NewTask {
    NewTask {
        dialect: Dialect::Luma,
        kind: TaskKind::Video,
        model,
        request,
        callback_url,
        external_id: None,
        channel,
    }
}

/// Parse an extend body: a new task continuing `parent`, which must be a
/// completed Luma video of the same key. The prompt defaults to the parent's.
pub fn parse_extend(body: &[u8], parent: &Task, now: Millis) -> Result<NewTask, ApiError> {
    let b: CreateGeneration = if body.iter().all(u8::is_ascii_whitespace) {
        CreateGeneration::default()
    } else {
        parse_json(body)?
    };
    if parent.state != TaskState::Completed {
        return Err(ApiError::Conflict(format!(
            "generation {} is {}; only a completed generation can be extended",
            parent.id,
            parent.state.as_str()
        )));
    }
    crate::dialect::results_kept(parent, now)?;
    let prompt = match b.user_prompt {
        Some(p) => required_text("user_prompt", Some(p), MAX_PROMPT_CHARS)?,
        None => parent.request.prompt.clone(),
    };
    let model = match b.model_name {
        Some(m) => model_name(Some(m))?,
        None => parent.model.clone(),
    };
    let request = GenerationRequest {
        prompt,
        // The continuation keeps the frame of what it continues.
        aspect_ratio: parent.request.aspect_ratio.clone(),
        n: 1,
        expand_prompt: b.expand_prompt,
        loop_video: b.loop_video,
        duration_secs: duration(b.duration)?,
        resolution: parent.request.resolution.clone(),
        extend_from: Some(parent.id),
        ..GenerationRequest::default()
    };
    let callback_url = optional_url("callback_url", b.callback_url)?;
    Ok(video_task(
        model,
        request,
        callback_url,
        parent.channel.clone(),
    ))
}

fn model_name(m: Option<String>) -> Result<String, ApiError> {
    let Some(m) = m.filter(|m| !m.is_empty()) else {
        return Ok(DEFAULT_MODEL.into());
    };
    if m.chars().count() > MAX_MODEL_CHARS
        || !m
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::validation(
            "model_name",
            format!("must be 1 to {MAX_MODEL_CHARS} of letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(m)
}

/// Exactly the documented values: "5s", "9s", 5 or 9 (5.0 is 5).
fn duration(v: Option<serde_json::Value>) -> Result<Option<u32>, ApiError> {
    let secs = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "5s" => Some(5),
            "9s" => Some(9),
            _ => None,
        },
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .and_then(|f| [5, 9].into_iter().find(|s| f == f64::from(*s))),
        Some(_) => None,
    };
    secs.map(Some)
        .ok_or_else(|| ApiError::validation("duration", "must be \"5s\" or \"9s\""))
}

// ---- the task object -------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct LumaTask {
    pub id: Uuid,
    /// pending, processing, completed or failed.
    pub state: &'static str,
    /// RFC 3339 with milliseconds.
    pub created_at: String,
    pub request: LumaRequest,
    pub video: Option<LumaVideo>,
    pub video_raw: Option<LumaVideoRaw>,
    pub thumbnail: Option<LumaImage>,
    pub last_frame: Option<LumaImage>,
    pub artifact: Option<LumaArtifact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Set once a completed task's results expired under the retention
    /// policy: its media fields are then null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_expired: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LumaRequest {
    pub prompt: String,
    pub aspect_ratio: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expand_prompt: Option<bool>,
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_video: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_end_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_from: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LumaVideo {
    pub url: String,
    pub download_url: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LumaVideoRaw {
    pub url: String,
    pub width: u32,
    pub height: u32,
    pub duration: f64,
    /// Always "video".
    pub media_type: &'static str,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LumaImage {
    pub url: String,
    pub width: u32,
    pub height: u32,
    /// Always "image".
    pub media_type: &'static str,
    pub palette: Option<LumaPalette>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LumaPalette {
    /// Base64 of 75 bytes: a 5×5 grid of RGB colours, row by row.
    pub grid: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LumaArtifact {
    pub created_at: String,
    pub video: Option<LumaVideo>,
    pub video_raw: Option<LumaVideoRaw>,
    pub thumbnail: Option<LumaImage>,
    pub last_frame: Option<LumaImage>,
}

/// `{"url": ...}` of `download_video_url`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadUrl {
    pub url: String,
}

/// The Luma state names: `canceled` is shown as `failed`, the seed has no other word for it.
fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Canceled => "failed",
        other => other.as_str(),
    }
}

pub fn render(task: &Task, links: &Links<'_>) -> LumaTask {
    let url = |key: &str| links.url(key);
    let video = task.artifact(ArtifactRole::Video);
    let image = |role: ArtifactRole, with_palette: bool| {
        task.artifact(role).map(|a| LumaImage {
            url: url(&a.key),
            width: a.width,
            height: a.height,
            media_type: "image",
            palette: with_palette.then(|| LumaPalette {
                grid: a
                    .palette
                    .as_deref()
                    .map(|p| base64::engine::general_purpose::STANDARD.encode(p))
                    .unwrap_or_default(),
            }),
        })
    };
    let expired = links.expired(task);
    let complete = task.state == TaskState::Completed && expired.is_none();
    let v = video.filter(|_| complete).map(|a| LumaVideo {
        url: url(&a.key),
        download_url: url(&a.key),
        width: a.width,
        height: a.height,
    });
    let v_raw = video.filter(|_| complete).map(|a| LumaVideoRaw {
        url: url(&a.key),
        width: a.width,
        height: a.height,
        duration: a.duration_secs.unwrap_or_default(),
        media_type: "video",
    });
    let thumb = image(ArtifactRole::Thumbnail, true).filter(|_| complete);
    let last = image(ArtifactRole::LastFrame, false).filter(|_| complete);
    let artifact = complete.then(|| LumaArtifact {
        created_at: rfc3339_ms(task.finished_at.unwrap_or(task.updated_at)),
        video: v.clone(),
        video_raw: v_raw.clone(),
        thumbnail: thumb.clone(),
        last_frame: last.clone(),
    });
    let r = &task.request;
    let image_url = |role| match r.image(role).map(|i| &i.source) {
        Some(ImageSource::Url { url }) => Some(url.clone()),
        _ => None,
    };
    LumaTask {
        id: task.id,
        state: state_name(task.state),
        created_at: rfc3339_ms(task.created_at),
        request: LumaRequest {
            prompt: r.prompt.clone(),
            aspect_ratio: r.aspect_ratio.clone(),
            expand_prompt: r.expand_prompt,
            loop_video: r.loop_video,
            image_url: image_url(ImageRole::Start),
            image_end_url: image_url(ImageRole::End),
            callback_url: task.callback_url.clone(),
            model_name: task.model.clone(),
            resolution: r.resolution.clone(),
            duration: r.duration_secs.map(|s| format!("{s}s")),
            extend_from: r.extend_from,
        },
        video: v,
        video_raw: v_raw,
        thumbnail: thumb,
        last_frame: last,
        artifact,
        failure_reason: matches!(task.state, TaskState::Failed | TaskState::Canceled).then(|| {
            task.failure_reason
                .clone()
                .unwrap_or_else(|| "failed".into())
        }),
        media_expired: expired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_field(r: Result<NewTask, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn create_defaults_and_aliases() {
        let t =
            parse_create(br#"{"prompt":"cat dance","notify_hook":"https://x.test/h"}"#).unwrap();
        assert_eq!(t.request.prompt, "cat dance");
        assert_eq!(t.request.aspect_ratio, "16:9");
        assert_eq!(t.model, DEFAULT_MODEL);
        assert_eq!(t.callback_url.as_deref(), Some("https://x.test/h"));
        assert_eq!(t.kind, TaskKind::Video);
    }

    #[test]
    fn create_rules_name_their_field() {
        assert_eq!(err_field(parse_create(b"{}")), "user_prompt");
        assert_eq!(
            err_field(parse_create(br#"{"user_prompt":"  "}"#)),
            "user_prompt"
        );
        assert_eq!(
            err_field(parse_create(br#"{"user_prompt":"a","aspect_ratio":"2:1"}"#)),
            "aspect_ratio"
        );
        assert_eq!(
            err_field(parse_create(
                br#"{"user_prompt":"a","image_url":"ftp://x/y"}"#
            )),
            "image_url"
        );
        assert_eq!(
            err_field(parse_create(
                br#"{"user_prompt":"a","callback_url":"nope"}"#
            )),
            "callback_url"
        );
        assert_eq!(
            err_field(parse_create(br#"{"user_prompt":"a","duration":"7s"}"#)),
            "duration"
        );
        assert_eq!(
            err_field(parse_create(br#"{"user_prompt":"a","loop":"yes"}"#)),
            "loop"
        );
    }
}
