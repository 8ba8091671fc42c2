//! Kling's video API (`/kling/v1/videos/text2video` and `…/image2video`),
//! in Kling's envelope, status names and error codes (shared with its image
//! API in [`super::kling`]). `mode` is the resolution step (`std` 720p,
//! `pro` 1080p), which every upstream takes; `cfg_scale` and
//! `camera_control` only Kling itself takes, so a task with them is
//! refused by name unless a channel that takes them serves its model.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dialect::kling::{
    self, KlingTask, KlingVideo, MAX_EXTERNAL_ID_CHARS, TaskResult, kling_task,
};
use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole, InputImage};
use crate::task::{ArtifactRole, Dialect, NewTask, ParsedCreate, Task, TaskKind};
use crate::validate::{
    image_source, one_of, optional_text, optional_url, parse_json, required_text,
};

pub const DEFAULT_MODEL: &str = "kling-v1";
pub const MAX_PROMPT_CHARS: usize = 2500;
pub const ASPECT_RATIOS: &[&str] = &["16:9", "9:16", "1:1"];
pub const DURATIONS: &[&str] = &["5", "10"];
pub const MODES: &[&str] = &["std", "pro"];
pub const CAMERA_TYPES: &[&str] = &[
    "simple",
    "down_back",
    "forward_up",
    "right_turn_forward",
    "left_turn_forward",
];
pub const CAMERA_AXES: &[&str] = &["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Text2Video,
    Image2Video,
}

/// `POST /kling/v1/videos/text2video` and `…/image2video`: Kling's fields.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KlingCreateVideo)]
pub struct CreateVideo {
    /// Empty or null: kling-v1; `model` is accepted as an alias.
    #[serde(alias = "model")]
    #[schema(max_length = 64)]
    pub model_name: Option<String>,
    /// Required for text2video; at most 2500 characters.
    #[schema(max_length = 2500)]
    pub prompt: Option<String>,
    #[schema(max_length = 2500)]
    pub negative_prompt: Option<String>,
    /// 0 to 1: how closely the video follows the prompt (Kling channels only).
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub cfg_scale: Option<f64>,
    /// `std` (720p, default) or `pro` (1080p).
    #[schema(schema_with = mode_schema)]
    pub mode: Option<String>,
    /// text2video: 16:9 (default), 9:16 or 1:1.
    #[schema(schema_with = aspect_schema)]
    pub aspect_ratio: Option<String>,
    /// "5" (default) or "10" seconds.
    #[schema(schema_with = duration_schema)]
    pub duration: Option<String>,
    /// image2video (required there): the first frame, an http(s) URL or
    /// base64 (raw or a data URI) of a png or jpeg, at most 10 MB.
    #[schema(schema_with = kling::image_schema)]
    pub image: Option<String>,
    /// image2video: the last frame, as `image`.
    #[schema(schema_with = kling::image_schema)]
    pub image_tail: Option<String>,
    /// Camera movement (Kling channels only): `type`, and with `simple` a
    /// `config` of one non-zero axis from -10 to 10.
    pub camera_control: Option<serde_json::Value>,
    #[schema(schema_with = schema::url)]
    pub callback_url: Option<String>,
    /// Your own id for the task, unique per key; not a UUID.
    #[schema(max_length = 128)]
    pub external_task_id: Option<String>,
}

fn mode_schema() -> utoipa::openapi::Object {
    schema::choice(MODES)
}

fn aspect_schema() -> utoipa::openapi::Object {
    schema::choice(ASPECT_RATIOS)
}

fn duration_schema() -> utoipa::openapi::Object {
    schema::choice(DURATIONS)
}

/// An image field: a URL kept for dispatch, or the image stored inline.
fn image(
    field: &str,
    value: Option<String>,
    role: ImageRole,
    images: &mut Vec<InputImage>,
    uploads: &mut Vec<crate::request::Upload>,
) -> Result<(), ApiError> {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        let (image, upload) = image_source(field, &v, role)?;
        images.push(image);
        uploads.extend(upload);
    }
    Ok(())
}

/// Checks Kling's camera_control: a known `type`; with `simple`, a
/// `config` of the six axes (-10 to 10) with exactly one not zero.
fn camera(value: &serde_json::Value) -> Result<(), ApiError> {
    let field = "camera_control";
    if value
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k != "type" && k != "config"))
    {
        return Err(ApiError::validation(field, "takes only type and config"));
    }
    let kind = value["type"]
        .as_str()
        .ok_or_else(|| ApiError::validation(format!("{field}.type"), "is required"))?;
    one_of(&format!("{field}.type"), kind, CAMERA_TYPES)?;
    let config = &value["config"];
    if kind != "simple" {
        if !config.is_null() {
            return Err(ApiError::validation(
                format!("{field}.config"),
                "is only given with type simple",
            ));
        }
        return Ok(());
    }
    let axes = config.as_object().ok_or_else(|| {
        ApiError::validation(format!("{field}.config"), "is required with type simple")
    })?;
    let mut moving = 0;
    for (axis, v) in axes {
        if !CAMERA_AXES.contains(&axis.as_str()) {
            return Err(ApiError::validation(
                format!("{field}.config.{axis}"),
                format!("is not an axis ({})", CAMERA_AXES.join(", ")),
            ));
        }
        let n = v
            .as_f64()
            .filter(|n| (-10.0..=10.0).contains(n))
            .ok_or_else(|| {
                ApiError::validation(format!("{field}.config.{axis}"), "must be -10 to 10")
            })?;
        if n != 0.0 {
            moving += 1;
        }
    }
    if moving != 1 {
        return Err(ApiError::validation(
            format!("{field}.config"),
            "must move exactly one axis (one not zero)",
        ));
    }
    Ok(())
}

pub fn parse_create(body: &[u8], endpoint: Endpoint) -> Result<ParsedCreate, ApiError> {
    let b: CreateVideo = parse_json(body)?;
    let model = match b.model_name.filter(|m| !m.is_empty()) {
        Some(m) if m.chars().count() > 64 => {
            return Err(ApiError::validation(
                "model_name",
                "must be at most 64 characters",
            ));
        }
        Some(m) => m,
        None => DEFAULT_MODEL.into(),
    };
    let prompt = match endpoint {
        Endpoint::Text2Video => required_text("prompt", b.prompt, MAX_PROMPT_CHARS)?,
        Endpoint::Image2Video => {
            optional_text("prompt", b.prompt, MAX_PROMPT_CHARS)?.unwrap_or_default()
        }
    };
    let negative_prompt = optional_text("negative_prompt", b.negative_prompt, MAX_PROMPT_CHARS)?;
    if let Some(c) = b.cfg_scale
        && !(0.0..=1.0).contains(&c)
    {
        return Err(ApiError::validation(
            "cfg_scale",
            format!("must be between 0 and 1 (got {c})"),
        ));
    }
    let resolution = match b.mode.as_deref().filter(|m| !m.is_empty()) {
        None | Some("std") => "720p",
        Some("pro") => "1080p",
        Some(m) => {
            return Err(ApiError::validation(
                "mode",
                format!("must be std or pro (got {m:?})"),
            ));
        }
    };
    let duration = b
        .duration
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "5".into());
    one_of("duration", &duration, DURATIONS)?;
    let aspect_ratio = match (endpoint, b.aspect_ratio.filter(|a| !a.is_empty())) {
        (_, None) => "16:9".to_string(),
        (Endpoint::Text2Video, Some(a)) => {
            one_of("aspect_ratio", &a, ASPECT_RATIOS)?;
            a
        }
        (Endpoint::Image2Video, Some(_)) => {
            return Err(ApiError::validation(
                "aspect_ratio",
                "does not apply to image2video: the video takes the image's",
            ));
        }
    };
    let (mut images, mut uploads) = (Vec::new(), Vec::new());
    match endpoint {
        Endpoint::Text2Video => {
            for (field, set) in [("image", &b.image), ("image_tail", &b.image_tail)] {
                if set.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err(ApiError::validation(
                        field,
                        "does not apply to text2video: send it to image2video",
                    ));
                }
            }
        }
        Endpoint::Image2Video => {
            if b.image.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::validation("image", "is required"));
            }
            image(
                "image",
                b.image,
                ImageRole::Start,
                &mut images,
                &mut uploads,
            )?;
            image(
                "image_tail",
                b.image_tail,
                ImageRole::End,
                &mut images,
                &mut uploads,
            )?;
        }
    }
    if let Some(c) = b.camera_control.as_ref().filter(|c| !c.is_null()) {
        camera(c)?;
    }
    let external_id = optional_text(
        "external_task_id",
        b.external_task_id,
        MAX_EXTERNAL_ID_CHARS,
    )?;
    if external_id
        .as_deref()
        .is_some_and(|e| Uuid::try_parse(e).is_ok())
    {
        return Err(ApiError::validation(
            "external_task_id",
            "must not be a UUID (task ids are UUIDs)",
        ));
    }
    let task = NewTask {
        dialect: Dialect::KlingVideo,
        kind: TaskKind::Video,
        model,
        request: GenerationRequest {
            prompt,
            negative_prompt,
            aspect_ratio,
            n: 1,
            images,
            resolution: Some(resolution.into()),
            duration_secs: duration.parse().ok(),
            cfg_scale: b.cfg_scale,
            camera_control: b.camera_control.filter(|c| !c.is_null()),
            ..GenerationRequest::default()
        },
        callback_url: optional_url("callback_url", b.callback_url)?,
        external_id,
        channel: None,
    };
    Ok(ParsedCreate { task, uploads })
}

pub fn render(task: &Task, links: &Links<'_>) -> KlingTask {
    kling_task(task, links, |shown| TaskResult {
        images: None,
        videos: Some(
            task.artifacts_with(ArtifactRole::Video)
                .filter(|_| shown)
                .map(|a| KlingVideo {
                    id: format!("{}-{}", task.id, a.index),
                    url: links.url(&a.key),
                    duration: format!("{:.1}", a.duration_secs.unwrap_or_default()),
                })
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str, endpoint: Endpoint) -> String {
        match parse_create(body.as_bytes(), endpoint) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn kling_fields_map_to_the_request() {
        let t = parse_create(
            br#"{"prompt":"a cat","mode":"pro","duration":"10","aspect_ratio":"9:16","cfg_scale":0.3}"#,
            Endpoint::Text2Video,
        )
        .unwrap()
        .task;
        assert_eq!(t.model, DEFAULT_MODEL);
        assert_eq!(t.request.resolution.as_deref(), Some("1080p"));
        assert_eq!(t.request.duration_secs, Some(10));
        assert_eq!(t.request.aspect_ratio, "9:16");
        assert_eq!(t.request.cfg_scale, Some(0.3));
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";
        let p = parse_create(
            format!(r#"{{"image":"{png}","image_tail":"https://x.test/end.png"}}"#).as_bytes(),
            Endpoint::Image2Video,
        )
        .unwrap();
        assert_eq!(p.uploads.len(), 1);
        let roles: Vec<_> = p.task.request.images.iter().map(|i| i.role).collect();
        assert_eq!(roles, [ImageRole::Start, ImageRole::End]);
    }

    #[test]
    fn rules_name_their_field() {
        use Endpoint::*;
        assert_eq!(field("{}", Text2Video), "prompt");
        assert_eq!(
            field(r#"{"prompt":"a","duration":"7"}"#, Text2Video),
            "duration"
        );
        assert_eq!(field(r#"{"prompt":"a","mode":"max"}"#, Text2Video), "mode");
        assert_eq!(
            field(r#"{"prompt":"a","cfg_scale":2}"#, Text2Video),
            "cfg_scale"
        );
        assert_eq!(
            field(r#"{"prompt":"a","aspect_ratio":"4:3"}"#, Text2Video),
            "aspect_ratio"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","image":"https://x.test/a.png"}"#,
                Text2Video
            ),
            "image"
        );
        assert_eq!(
            field(
                &format!(r#"{{"prompt":"{}"}}"#, "a".repeat(2501)),
                Text2Video
            ),
            "prompt"
        );
        assert_eq!(field(r#"{"prompt":"a"}"#, Image2Video), "image");
        assert_eq!(field(r#"{"image":"nope"}"#, Image2Video), "image");
        assert_eq!(
            field(
                r#"{"image":"https://x.test/a.png","aspect_ratio":"1:1"}"#,
                Image2Video
            ),
            "aspect_ratio"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","camera_control":{"type":"spin"}}"#,
                Text2Video
            ),
            "camera_control.type"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","camera_control":{"type":"simple","config":{"pan":3,"zoom":2}}}"#,
                Text2Video
            ),
            "camera_control.config"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","camera_control":{"type":"simple","config":{"yaw":3}}}"#,
                Text2Video
            ),
            "camera_control.config.yaw"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","external_task_id":"4665a07c-7641-4809-a133-10786201bb56"}"#,
                Text2Video
            ),
            "external_task_id"
        );
        assert_eq!(
            field(
                r#"{"prompt":"a","camera_control":{"type":"down_back","speed":9}}"#,
                Text2Video
            ),
            "camera_control"
        );
        assert!(
            parse_create(
                br#"{"prompt":"a","camera_control":{"type":"simple","config":{"pan":-4,"zoom":0}}}"#,
                Text2Video
            )
            .is_ok()
        );
    }
}
