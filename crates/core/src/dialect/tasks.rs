//! gengate's own provider-neutral task API (`/v1/tasks`): request parsing,
//! the task object, list cursors. Tasks of every dialect render here.
//!
//! A create body is `{model, kind?, input, callback_url?}`; `input` is the
//! normalized [`GenerationRequest`] in client words:
//!
//! | field | rule |
//! |---|---|
//! | `prompt` | required, at most 5000 characters |
//! | `negative_prompt` | at most 2000 characters |
//! | `aspect_ratio` | `W:H`, each 1 to 100, default `16:9` |
//! | `n` | images: 1 to 9 (default 1); videos: 1 |
//! | `seed` | an unsigned integer |
//! | `images` | up to 4 of `{url, role}` or `{data, role}`: role `reference` (images) or `start` / `end` (videos, once each); http(s) URLs fetched at dispatch, `data` the image itself (base64 or a data URI, png or jpeg, at most 10 MB) |
//! | `image_fidelity` | images with a reference image: 0 to 1 |
//! | `duration` | videos: 1 to 60 seconds |
//! | `resolution` | videos: 540p, 720p, 1080p or 4k |
//! | `loop` | videos |
//! | `expand_prompt` | let the upstream enrich the prompt |
//! | `extend_from` | videos: id of a completed video task of the same key to continue (it runs on that task's channel) |
//!
//! `kind` (`image` | `video`) may be left out: a video-only input makes it
//! a video; otherwise the model's kind when its channels make only one.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::dialect::schema;
use crate::error::ApiError;
use crate::links::Links;
use crate::request::{GenerationRequest, ImageRole, ImageSource, InputImage, aspect_parts};
use crate::task::{Dialect, Millis, NewTask, ParsedCreate, Task, TaskKind, TaskState};
use crate::time::rfc3339_ms;
use crate::validate::{
    http_url, inline_image, max_chars, model_name, optional_text, optional_url, parse_json,
};

pub const MAX_PROMPT_CHARS: usize = 5000;
pub const MAX_NEGATIVE_PROMPT_CHARS: usize = 2000;
pub const MAX_MODEL_CHARS: usize = 128;
pub const MAX_N: u32 = 9;
pub const MAX_IMAGES: usize = 4;
pub const MAX_DURATION_SECS: u32 = 60;
pub const MAX_ASPECT_PART: u32 = 100;
pub const RESOLUTIONS: &[&str] = &["540p", "720p", "1080p", "4k"];
pub const DEFAULT_ASPECT_RATIO: &str = "16:9";
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;
/// 2^53 - 1: the largest integer every JSON number (an IEEE double) holds
/// exactly, so a seed a client sends is the seed gengate reads.
pub const MAX_SEED: u64 = (1 << 53) - 1;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
/// How long an `Idempotency-Key` answers its first task.
pub const IDEMPOTENCY_WINDOW_MS: Millis = 24 * 3600 * 1000;

/// The input fields each kind accepts (shown by `GET /v1/models`).
pub const IMAGE_INPUTS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "n",
    "seed",
    "images[role=reference]",
    "image_fidelity",
    "expand_prompt",
];
pub const VIDEO_INPUTS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "images[role=start]",
    "images[role=end]",
    "duration",
    "resolution",
    "loop",
    "expand_prompt",
    "extend_from",
];

/// `POST /v1/tasks`. Its OpenAPI schema is written out in
/// [`create_task_schema`]: the rules between fields need `oneOf`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// A model some channel serves (see `GET /v1/models`).
    pub model: Option<String>,
    /// `image` or `video`; inferred when left out (see the input rules).
    pub kind: Option<String>,
    pub input: Option<TaskInput>,
    /// Where every state change is POSTed (signed, Standard Webhooks).
    pub callback_url: Option<String>,
}

/// What to generate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    /// Required, at most 5000 characters.
    pub prompt: Option<String>,
    /// At most 2000 characters.
    pub negative_prompt: Option<String>,
    /// `W:H` (each 1 to 100), default 16:9.
    pub aspect_ratio: Option<String>,
    /// Images: 1 to 9, default 1. Videos: 1.
    #[serde(default, deserialize_with = "crate::validate::integer")]
    pub n: Option<u32>,
    /// 0 to 2^53 - 1 ([`MAX_SEED`]).
    #[serde(default, deserialize_with = "crate::validate::integer")]
    pub seed: Option<u64>,
    /// Up to 4 input images, by URL or inline.
    pub images: Option<Vec<ImageInput>>,
    /// 0 to 1: how close an image stays to its reference image.
    pub image_fidelity: Option<f64>,
    /// Video length in seconds, 1 to 60.
    #[serde(default, deserialize_with = "crate::validate::integer")]
    pub duration: Option<u32>,
    /// Video resolution: 540p, 720p, 1080p or 4k.
    pub resolution: Option<String>,
    /// A video that loops.
    #[serde(rename = "loop")]
    pub loop_video: Option<bool>,
    pub expand_prompt: Option<bool>,
    /// Id of a completed video task of this key to continue.
    pub extend_from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// An http(s) URL, fetched when the task is dispatched (jpg or png, at most 10 MB).
    pub url: Option<String>,
    /// Or the image itself: base64 or a data URI of a png or jpeg, at most
    /// 10 MB decoded.
    pub data: Option<String>,
    /// `reference` (images), `start` or `end` (first and last frame of a video).
    pub role: Option<String>,
}

/// A placeholder: the served document puts [`create_task_schema`] here,
/// whose keywords (`prefixItems`, `contains`, `anyOf` beside `properties`)
/// utoipa's model does not hold.
impl utoipa::PartialSchema for CreateTask {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::Object::with_type(utoipa::openapi::Type::Object).into()
    }
}

impl ToSchema for CreateTask {}

/// The create body as the parser takes it: an image task (`kind: image`)
/// or a video task (`kind: video`, or no kind and a video-only input).
/// Without `kind` and without a video-only input, the kind is the one the
/// model's channels make; where they make both, `kind` is required.
pub fn create_task_schema() -> serde_json::Value {
    use serde_json::json;
    let url = serde_json::to_value(schema::required_url()).unwrap_or_default();
    let callback = serde_json::to_value(schema::url()).unwrap_or_default();
    let text = serde_json::to_value(schema::text::<MAX_PROMPT_CHARS>()).unwrap_or_default();
    let model = serde_json::to_value(schema::model::<MAX_MODEL_CHARS>()).unwrap_or_default();
    let int =
        |min: u64, max: u64| json!({"type": ["integer", "null"], "minimum": min, "maximum": max});
    // A field of the other kind: only null (or left out) is taken.
    let absent = json!({"type": "null"});
    let data = json!({"type": "string", "pattern": schema::inline_image(true),
        "description": "The image itself: base64 or a data URI of a png or jpeg, at most 10 MB decoded"});
    // One of url and data, a string; the other left out or null.
    let none = json!({"type": "null"});
    let image = |roles: serde_json::Value| {
        json!({"type": "object", "additionalProperties": false,
               "oneOf": [{"required": ["url"], "properties": {"url": {"type": "string"}, "data": none}},
                         {"required": ["data"], "properties": {"data": {"type": "string"}, "url": none}}],
               "properties": {"url": {"anyOf": [url, none]}, "data": {"anyOf": [data, none]},
                              "role": {"enum": roles}}})
    };
    let common = json!({
        "prompt": text,
        "negative_prompt": {"type": ["string", "null"], "maxLength": MAX_NEGATIVE_PROMPT_CHARS},
        "aspect_ratio": {"type": ["string", "null"], "pattern": "^([1-9][0-9]?|100):([1-9][0-9]?|100)$",
                         "description": "W:H, each 1 to 100; 16:9 by default"},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED,
                 "description": "0 to 2^53 - 1, the integers a JSON number carries exactly"},
        "expand_prompt": {"type": ["boolean", "null"]},
    });
    let with = |extra: serde_json::Value| {
        let mut props = common.clone();
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"type": "object", "additionalProperties": false, "required": ["prompt"], "properties": props})
    };
    let image_input = with(json!({
        "n": int(1, u64::from(MAX_N)),
        "images": {"type": ["array", "null"], "maxItems": MAX_IMAGES,
                   "items": image(json!(["reference", null]))},
        "image_fidelity": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "duration": absent, "resolution": absent, "loop": absent, "extend_from": absent,
    }));
    let start = image(json!(["start", null]));
    let end = image(json!(["end"]));
    let video_input = with(json!({
        "n": {"enum": [1, null]},
        "images": {"anyOf": [
            {"type": "null"},
            {"type": "array", "maxItems": 1, "items": image(json!(["start", "end", null]))},
            {"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [start, end]},
            {"type": "array", "minItems": 2, "maxItems": 2, "prefixItems": [end, start]},
        ], "description": "At most one start (the default role) and one end frame"},
        "image_fidelity": absent,
        "duration": int(1, u64::from(MAX_DURATION_SECS)),
        "resolution": {"enum": RESOLUTIONS.iter().map(|r| json!(r)).chain([json!(null)]).collect::<Vec<_>>()},
        "loop": {"type": ["boolean", "null"]},
        "extend_from": {"type": ["string", "null"], "format": "uuid",
                        "description": "A completed video task of this key to continue"},
    }));
    // What makes a task without `kind` a video.
    let set = |f: &str, t: &str| json!({"required": [f], "properties": {f: {"type": t}}});
    let video_only = json!({"anyOf": [
        set("duration", "integer"), set("resolution", "string"), set("loop", "boolean"),
        set("extend_from", "string"),
        {"required": ["images"], "properties": {"images": {"type": "array",
            "contains": {"required": ["role"], "properties": {"role": {"enum": ["start", "end"]}}}}}},
    ]});
    let task = |kind: serde_json::Value, input: serde_json::Value| {
        json!({"type": "object", "additionalProperties": false, "required": ["model", "input"],
               "properties": {"model": model, "kind": kind, "input": input, "callback_url": callback}})
    };
    let mut image_task = task(json!({"enum": ["image"]}), image_input);
    image_task["required"] = json!(["model", "kind", "input"]);
    let mut video_task = task(json!({"enum": ["video", null]}), video_input.clone());
    video_task["anyOf"] = json!([
        {"required": ["kind"], "properties": {"kind": {"enum": ["video"]}}},
        {"properties": {"input": video_only}},
    ]);
    json!({"oneOf": [image_task, video_task], "description":
        "An image task (kind image) or a video task (kind video; kind may be left out when the \
         input has a video-only field: duration, resolution, loop, extend_from, or a start or end \
         image). A task without kind and without such a field takes the one kind its model's \
         channels make; where they make both, kind is required."})
}

fn role_name(r: ImageRole) -> &'static str {
    match r {
        ImageRole::Reference => "reference",
        ImageRole::Start => "start",
        ImageRole::End => "end",
    }
}

/// The video-only input that makes a task a video, if any.
fn video_only_field(i: &TaskInput) -> Option<&'static str> {
    let frames = i
        .images
        .iter()
        .flatten()
        .any(|im| matches!(im.role.as_deref(), Some("start" | "end")));
    if i.duration.is_some() {
        Some("duration")
    } else if i.resolution.is_some() {
        Some("resolution")
    } else if i.loop_video.is_some() {
        Some("loop")
    } else if i.extend_from.is_some() {
        Some("extend_from")
    } else if frames {
        Some("images")
    } else {
        None
    }
}

fn no(field: &str, kind: TaskKind) -> ApiError {
    ApiError::validation(
        format!("input.{field}"),
        format!("does not apply to {} tasks", kind.as_str()),
    )
}

/// Parse a create body. `kind_of_model` answers the one kind a model's
/// channels make, when there is one; it decides a task that does not say.
pub fn parse_create(
    body: &[u8],
    kind_of_model: impl FnOnce(&str) -> Option<TaskKind>,
) -> Result<ParsedCreate, ApiError> {
    let b: CreateTask = parse_json(body)?;
    let model = b
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::validation("model", "is required"))?;
    model_name("model", &model, MAX_MODEL_CHARS)?;
    let input = b
        .input
        .ok_or_else(|| ApiError::validation("input", "is required"))?;
    let kind = match b.kind.as_deref() {
        Some(k) => TaskKind::parse(k).ok_or_else(|| {
            ApiError::validation("kind", format!("must be image or video (got {k:?})"))
        })?,
        None => match video_only_field(&input) {
            Some(_) => TaskKind::Video,
            None => kind_of_model(&model).ok_or_else(|| {
                ApiError::validation(
                    "kind",
                    format!("is required: model {model:?} makes both images and videos"),
                )
            })?,
        },
    };
    let video = kind == TaskKind::Video;
    let prompt = input
        .prompt
        .ok_or_else(|| ApiError::validation("input.prompt", "is required"))?;
    if crate::validate::is_blank(&prompt) {
        return Err(ApiError::validation("input.prompt", "must not be empty"));
    }
    max_chars("input.prompt", &prompt, MAX_PROMPT_CHARS)?;
    let negative_prompt = optional_text(
        "input.negative_prompt",
        input.negative_prompt,
        MAX_NEGATIVE_PROMPT_CHARS,
    )?;
    let aspect_ratio = input
        .aspect_ratio
        .unwrap_or_else(|| DEFAULT_ASPECT_RATIO.into());
    match aspect_parts(&aspect_ratio) {
        Some((w, h)) if w <= MAX_ASPECT_PART && h <= MAX_ASPECT_PART => {}
        _ => {
            return Err(ApiError::validation(
                "input.aspect_ratio",
                format!("must be W:H with each from 1 to {MAX_ASPECT_PART} (got {aspect_ratio:?})"),
            ));
        }
    }
    let n = input.n.unwrap_or(1);
    if video && n != 1 {
        return Err(ApiError::validation("input.n", "must be 1 for video tasks"));
    }
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::validation(
            "input.n",
            format!("must be between 1 and {MAX_N} (got {n})"),
        ));
    }
    if let Some(seed) = input.seed
        && seed > MAX_SEED
    {
        return Err(ApiError::validation(
            "input.seed",
            format!("must be 0 to {MAX_SEED} (got {seed})"),
        ));
    }
    let raw_images = input.images.unwrap_or_default();
    if raw_images.len() > MAX_IMAGES {
        return Err(ApiError::validation(
            "input.images",
            format!("must list at most {MAX_IMAGES} images"),
        ));
    }
    let mut images = Vec::with_capacity(raw_images.len());
    let mut uploads = Vec::new();
    for (i, im) in raw_images.into_iter().enumerate() {
        let field = |f: &str| format!("input.images[{i}].{f}");
        let role = match im.role.as_deref() {
            None if video => ImageRole::Start,
            None | Some("reference") => ImageRole::Reference,
            Some("start") => ImageRole::Start,
            Some("end") => ImageRole::End,
            Some(other) => {
                return Err(ApiError::validation(
                    field("role"),
                    format!("must be reference, start or end (got {other:?})"),
                ));
            }
        };
        if video == (role == ImageRole::Reference) {
            return Err(ApiError::validation(
                field("role"),
                format!(
                    "{} does not apply to {} tasks",
                    role_name(role),
                    kind.as_str()
                ),
            ));
        }
        if video && images.iter().any(|x: &InputImage| x.role == role) {
            return Err(ApiError::validation(
                field("role"),
                format!("a video takes one {} image", role_name(role)),
            ));
        }
        match (im.url, im.data) {
            (Some(url), None) => images.push(InputImage {
                role,
                source: ImageSource::Url {
                    url: http_url(&field("url"), &url)?,
                },
            }),
            (None, Some(data)) => {
                let (bytes, format) = inline_image(&field("data"), &data)?;
                let (image, upload) = InputImage::inline(role, bytes, format);
                images.push(image);
                uploads.push(upload);
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    field("data"),
                    "give url or data, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::validation(field("url"), "is required (or data)"));
            }
        }
    }
    if let Some(f) = input.image_fidelity {
        if video {
            return Err(no("image_fidelity", kind));
        }
        if !(0.0..=1.0).contains(&f) {
            return Err(ApiError::validation(
                "input.image_fidelity",
                format!("must be between 0 and 1 (got {f})"),
            ));
        }
    }
    if !video {
        for (set, f) in [
            (input.duration.is_some(), "duration"),
            (input.resolution.is_some(), "resolution"),
            (input.loop_video.is_some(), "loop"),
            (input.extend_from.is_some(), "extend_from"),
        ] {
            if set {
                return Err(no(f, kind));
            }
        }
    }
    if let Some(d) = input.duration
        && !(1..=MAX_DURATION_SECS).contains(&d)
    {
        return Err(ApiError::validation(
            "input.duration",
            format!("must be 1 to {MAX_DURATION_SECS} seconds (got {d})"),
        ));
    }
    if let Some(r) = &input.resolution
        && !RESOLUTIONS.contains(&r.as_str())
    {
        return Err(ApiError::validation(
            "input.resolution",
            format!("must be one of {} (got {r:?})", RESOLUTIONS.join(", ")),
        ));
    }
    let extend_from = match input.extend_from {
        None => None,
        Some(s) => Some(Uuid::try_parse(&s).map_err(|_| {
            ApiError::validation("input.extend_from", format!("{s:?} is not a task id"))
        })?),
    };
    let task = NewTask {
        dialect: Dialect::Gengate,
        kind,
        model,
        request: GenerationRequest {
            prompt,
            negative_prompt,
            aspect_ratio,
            n,
            seed: input.seed,
            images,
            image_fidelity: input.image_fidelity,
            expand_prompt: input.expand_prompt,
            loop_video: input.loop_video,
            resolution: input.resolution,
            duration_secs: input.duration,
            quality: None,
            style: None,
            cfg_scale: None,
            camera_control: None,
            extend_from,
        },
        callback_url: optional_url("callback_url", b.callback_url)?,
        external_id: None,
        channel: None,
    };
    Ok(ParsedCreate { task, uploads })
}

/// Whether an existing task is what `new` asks for: the same normalized
/// request (an `Idempotency-Key` replay), not merely the same bytes.
pub fn same_request(task: &Task, new: &NewTask) -> bool {
    task.dialect == new.dialect
        && task.kind == new.kind
        && task.model == new.model
        && task.request == new.request
        && task.callback_url == new.callback_url
}

/// Check an `Idempotency-Key` header value.
pub fn idempotency_key(value: &str) -> Result<&str, ApiError> {
    let field = "Idempotency-Key";
    if crate::validate::is_blank(value) {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    max_chars(field, value, MAX_IDEMPOTENCY_KEY_CHARS)?;
    Ok(value)
}

// ---- listing -----------------------------------------------------------------

/// `GET /v1/tasks` query parameters (read as text, so a bad value is a
/// 400 naming it). Empty means not given.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only tasks in this state.
    #[param(schema_with = state_param)]
    pub state: Option<String>,
    /// Only tasks of this model.
    #[param(max_length = 128)]
    pub model: Option<String>,
    /// Only tasks made through this API: gengate, luma, kling,
    /// dream_machine, openai_images, openai_videos or kling_video.
    #[param(schema_with = dialect_param)]
    pub dialect: Option<String>,
    /// Only tasks that ran (or last ran) on this channel.
    #[param(max_length = 64)]
    pub channel: Option<String>,
    /// The task with this id, or with this `external_task_id`.
    #[param(max_length = 128)]
    pub q: Option<String>,
    /// Only tasks created after this instant: RFC 3339, or Unix milliseconds.
    #[param(schema_with = instant_param)]
    pub created_after: Option<String>,
    /// Only tasks created before this instant: RFC 3339, or Unix milliseconds.
    #[param(schema_with = instant_param)]
    pub created_before: Option<String>,
    /// 1 to 100, default 20.
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^([A-Za-z0-9_-]{32})?$")]
    pub cursor: Option<String>,
}

fn state_param() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some([
            "",
            "pending",
            "processing",
            "completed",
            "failed",
            "canceled",
        ]))
        .build()
}

fn dialect_param() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(
            std::iter::once("").chain(Dialect::ALL.iter().map(|d| d.as_str())),
        ))
        .build()
}

/// An instant as Unix milliseconds or RFC 3339 (empty: not given).
pub fn instant_param() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(
            "^(-?[0-9]{1,18}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?$",
        ))
        .build()
}

/// A list request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ListParams {
    pub state: Option<TaskState>,
    pub model: Option<String>,
    pub dialect: Option<Dialect>,
    pub channel: Option<String>,
    pub search: Option<String>,
    pub created_after: Option<Millis>,
    pub created_before: Option<Millis>,
    pub limit: u32,
    /// Tasks strictly older than this position (created_at, id), newest first.
    pub before: Option<(Millis, Uuid)>,
}

impl ListQuery {
    pub fn check(self) -> Result<ListParams, ApiError> {
        let state = match self.state.as_deref() {
            None | Some("") => None,
            Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
                ApiError::validation(
                    "state",
                    format!(
                        "must be one of pending, processing, completed, failed, canceled (got {s:?})"
                    ),
                )
            })?),
        };
        let text = |field: &str, v: Option<String>, max: usize| {
            let v = v.filter(|v| !v.is_empty());
            if let Some(v) = &v {
                max_chars(field, v, max)?;
            }
            Ok::<_, ApiError>(v)
        };
        let model = text("model", self.model, MAX_MODEL_CHARS)?;
        let dialect = match self.dialect.as_deref() {
            None | Some("") => None,
            Some(d) => Some(Dialect::parse(d).ok_or_else(|| {
                ApiError::validation(
                    "dialect",
                    format!(
                        "must be one of {} (got {d:?})",
                        Dialect::ALL.map(Dialect::as_str).join(", ")
                    ),
                )
            })?),
        };
        let channel = text("channel", self.channel, 64)?;
        let search = text("q", self.q, 128)?;
        let instant = |field: &str, v: Option<&str>| match v {
            None | Some("") => Ok(None),
            Some(s) => crate::time::parse_instant(s).map(Some).ok_or_else(|| {
                ApiError::validation(
                    field,
                    format!("must be an RFC 3339 time or Unix milliseconds (got {s:?})"),
                )
            }),
        };
        let created_after = instant("created_after", self.created_after.as_deref())?;
        let created_before = instant("created_before", self.created_before.as_deref())?;
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIMIT,
            Some(s) => match s.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::validation(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT} (got {s:?})"),
                    ));
                }
            },
        };
        let before =
            match self.cursor.as_deref() {
                None | Some("") => None,
                Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                    ApiError::validation("cursor", "is not a cursor this API gave")
                })?),
            };
        Ok(ListParams {
            state,
            model,
            dialect,
            channel,
            search,
            created_after,
            created_before,
            limit,
            before,
        })
    }
}

/// The position after `task` in the newest-first order, opaque to clients:
/// base64url of its creation time and id. Paging by position, not offset,
/// keeps pages stable while tasks are added.
pub fn encode_cursor(task: &Task) -> String {
    let mut raw = Vec::with_capacity(24);
    raw.extend_from_slice(&task.created_at.to_be_bytes());
    raw.extend_from_slice(task.id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(s: &str) -> Option<(Millis, Uuid)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    if raw.len() != 24 {
        return None;
    }
    let at = i64::from_be_bytes(raw[..8].try_into().ok()?);
    Some((at, Uuid::from_slice(&raw[8..]).ok()?))
}

// ---- the task object ---------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct GengateTask {
    pub id: Uuid,
    /// Always "task".
    pub object: &'static str,
    /// The API the task was made through: gengate, luma, kling,
    /// dream_machine, openai_images, openai_videos or kling_video.
    pub dialect: &'static str,
    pub model: String,
    /// image or video.
    pub kind: &'static str,
    /// pending, processing, completed, failed or canceled.
    pub state: &'static str,
    /// 0 to 100, as the upstream reports it.
    pub progress: u8,
    /// The channel that has (or last had) the task; null until dispatched.
    pub channel: Option<String>,
    pub input: InputView,
    pub callback_url: Option<String>,
    /// The results, in gengate's storage; empty until completed, and again
    /// once they expire.
    pub outputs: Vec<OutputView>,
    /// When the results expire under the retention policy (their files are
    /// then deleted); null: kept for ever, or not finished yet.
    pub outputs_expire_at: Option<String>,
    /// Set once they have expired, saying so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs_expired: Option<String>,
    /// Why the task failed or was canceled.
    pub failure_reason: Option<String>,
    /// Set when the upstream failed the task: what it said, as gengate's
    /// adapter quoted it. Absent when gengate failed it (deadline, storage,
    /// a result it refused) or it did not fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<String>,
    /// The Kling `external_task_id` of a Kling task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Sequence number of the task's last event (see `/v1/tasks/{id}/events`).
    pub last_event_seq: i64,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// What the task costs its key, in credits.
    pub credits: CreditsView,
    /// The key the task belongs to: in admins' listings only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    /// While it runs: seconds its model's jobs have been taking on its
    /// channel (learned from finished ones), for an estimate of the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_seconds: Option<f64>,
}

/// A task's price, fixed when it was accepted, and what came back of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditsView {
    /// Charged when the task was accepted.
    pub charged: i64,
    /// Given back when it ended without (all of) its outputs.
    pub refunded: i64,
    /// Charged less refunded.
    pub net: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InputView {
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub aspect_ratio: String,
    pub n: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub images: Vec<ImageView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fidelity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub loop_video: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expand_prompt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_from: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    /// reference, start or end.
    pub role: &'static str,
    /// The URL given; absent for an image sent inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputView {
    /// video, image, thumbnail or last_frame.
    pub role: &'static str,
    /// Position among outputs of the same role.
    pub index: u32,
    pub url: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Seconds, for videos.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// A picture's 5×5 grid of average colours (`#rrggbb`, row by row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub palette: Option<Vec<String>>,
}

fn artifact_role(r: crate::task::ArtifactRole) -> &'static str {
    use crate::task::ArtifactRole::*;
    match r {
        Video => "video",
        Image => "image",
        Thumbnail => "thumbnail",
        LastFrame => "last_frame",
    }
}

pub fn render(task: &Task, links: &Links<'_>) -> GengateTask {
    let r = &task.request;
    let expired = links.expired(task);
    let complete = task.state == TaskState::Completed && expired.is_none();
    GengateTask {
        id: task.id,
        object: "task",
        dialect: task.dialect.as_str(),
        model: task.model.clone(),
        kind: task.kind.as_str(),
        state: task.state.as_str(),
        progress: task.progress,
        channel: task.channel.clone(),
        input: InputView {
            prompt: r.prompt.clone(),
            negative_prompt: r.negative_prompt.clone(),
            aspect_ratio: r.aspect_ratio.clone(),
            n: r.n,
            seed: r.seed,
            images: r
                .images
                .iter()
                .map(|i| ImageView {
                    role: role_name(i.role),
                    url: match &i.source {
                        ImageSource::Url { url } => Some(url.clone()),
                        ImageSource::Stored { .. } => None,
                    },
                })
                .collect(),
            image_fidelity: r.image_fidelity,
            duration: r.duration_secs,
            resolution: r.resolution.clone(),
            loop_video: r.loop_video,
            expand_prompt: r.expand_prompt,
            extend_from: r.extend_from,
        },
        callback_url: task.callback_url.clone(),
        outputs: if complete {
            task.artifacts
                .iter()
                .map(|a| OutputView {
                    role: artifact_role(a.role),
                    index: a.index,
                    url: links.url(&a.key),
                    content_type: a.content_type.clone(),
                    width: a.width,
                    height: a.height,
                    duration: a.duration_secs,
                    palette: a.palette.as_deref().map(|p| {
                        p.chunks_exact(3)
                            .map(|c| format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]))
                            .collect()
                    }),
                })
                .collect()
        } else {
            Vec::new()
        },
        outputs_expire_at: task
            .keep_until
            .filter(|_| task.state == TaskState::Completed)
            .map(rfc3339_ms),
        outputs_expired: expired,
        failure_reason: matches!(task.state, TaskState::Failed | TaskState::Canceled).then(|| {
            task.failure_reason
                .clone()
                .unwrap_or_else(|| task.state.as_str().into())
        }),
        upstream_error: task.upstream_error.clone(),
        // A gengate task's external id is its derived idempotency id: not the client's.
        external_id: task
            .external_id
            .clone()
            .filter(|_| task.dialect != Dialect::Gengate),
        last_event_seq: task.event_seq,
        created_at: rfc3339_ms(task.created_at),
        updated_at: rfc3339_ms(task.updated_at),
        started_at: task.started_at.map(rfc3339_ms),
        finished_at: task.finished_at.map(rfc3339_ms),
        credits: CreditsView {
            charged: task.charge.total(),
            refunded: task.refunded,
            net: task.net_charge(),
        },
        key_id: None,
        expected_seconds: None,
    }
}

/// `GET /v1/tasks`: a page, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskList {
    /// Always "list".
    pub object: &'static str,
    pub data: Vec<GengateTask>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// One `data:` of the events stream (`GET /v1/tasks/{id}/events`); the
/// SSE `id` is `seq` and the SSE `event` is `state`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub seq: i64,
    pub task_id: Uuid,
    pub state: &'static str,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The task as it stood at this event.
    pub task: GengateTask,
}

impl EventView {
    /// `ev` of `task`, with the task as it stood then.
    pub fn of(ev: &crate::task::TaskEvent, task: &Task, links: &Links<'_>) -> EventView {
        EventView {
            seq: ev.seq,
            task_id: ev.task_id,
            state: ev.state.as_str(),
            created_at: rfc3339_ms(ev.created_at),
            detail: ev.detail.clone(),
            task: render(&task.as_of(ev.state, ev.created_at), links),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str) -> String {
        match parse_create(body.as_bytes(), |_| None) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error for {body}, got {other:?}"),
        }
    }

    #[test]
    fn creates_with_defaults_and_infers_kind() {
        let t = parse_create(
            br#"{"model":"m","input":{"prompt":"a cat","duration":5}}"#,
            |_| None,
        )
        .unwrap()
        .task;
        assert_eq!(t.kind, TaskKind::Video);
        assert_eq!(t.request.aspect_ratio, "16:9");
        assert_eq!(t.dialect, Dialect::Gengate);
        let t = parse_create(br#"{"model":"m","input":{"prompt":"a"}}"#, |_| {
            Some(TaskKind::Image)
        })
        .unwrap()
        .task;
        assert_eq!(t.kind, TaskKind::Image);
    }

    /// A 1×1 png, as base64.
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";

    #[test]
    fn inline_images_are_named_by_their_content() {
        let body = |data: &str| {
            format!(
                r#"{{"model":"m","kind":"video","input":{{"prompt":"a","images":[{{"data":"{data}","role":"end"}}]}}}}"#
            )
        };
        let raw = parse_create(body(PNG).as_bytes(), |_| None).unwrap();
        let uri = parse_create(
            body(&format!("data:image/png;base64,{PNG}")).as_bytes(),
            |_| None,
        )
        .unwrap();
        assert_eq!(raw.uploads.len(), 1);
        assert_eq!(raw.uploads, uri.uploads, "the same bytes, however sent");
        assert_eq!(raw.task, uri.task, "so a retry is the same request");
        let key = &raw.uploads[0].key;
        assert!(key.starts_with("inputs/") && key.ends_with(".png"), "{key}");
        assert_eq!(
            raw.task.request.images[0],
            InputImage {
                role: ImageRole::End,
                source: ImageSource::Stored {
                    key: key.clone(),
                    format: crate::request::ImageFormat::Png
                },
            }
        );
        assert!(raw.uploads[0].bytes.starts_with(b"\x89PNG"));
    }

    #[test]
    fn inline_images_are_checked() {
        let image = |im: &str| {
            field(&format!(
                r#"{{"model":"m","kind":"image","input":{{"prompt":"a","images":[{{"url":"https://x.test/a.png"}},{im}]}}}}"#
            ))
        };
        assert_eq!(image(r#"{"data":"not base64!"}"#), "input.images[1].data");
        assert_eq!(
            image(r#"{"data":"R0lGODlhAQABAAAAACw="}"#),
            "input.images[1].data"
        );
        assert_eq!(
            image(&format!(
                r#"{{"data":"{PNG}","url":"https://x.test/b.png"}}"#
            )),
            "input.images[1].data"
        );
        assert_eq!(image(r#"{"role":"reference"}"#), "input.images[1].url");
    }

    #[test]
    fn rules_name_their_field() {
        assert_eq!(field(r#"{"input":{"prompt":"a"}}"#), "model");
        assert_eq!(field(r#"{"model":"m","kind":"image"}"#), "input");
        assert_eq!(field(r#"{"model":"m","input":{"prompt":"a"}}"#), "kind");
        assert_eq!(
            field(r#"{"model":"m","kind":"audio","input":{"prompt":"a"}}"#),
            "kind"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{}}"#),
            "input.prompt"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a","n":10}}"#),
            "input.n"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"video","input":{"prompt":"a","n":2}}"#),
            "input.n"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a","aspect_ratio":"0:1"}}"#),
            "input.aspect_ratio"
        );
        assert_eq!(
            field(
                r#"{"model":"m","kind":"image","input":{"prompt":"a","images":[{"url":"ftp://x/y"}]}}"#
            ),
            "input.images[0].url"
        );
        assert_eq!(
            field(
                r#"{"model":"m","kind":"image","input":{"prompt":"a","images":[{"url":"https://x/y","role":"start"}]}}"#
            ),
            "input.images[0].role"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a","loop":true}}"#),
            "input.loop"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"video","input":{"prompt":"a","duration":0}}"#),
            "input.duration"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"video","input":{"prompt":"a","extend_from":"x"}}"#),
            "input.extend_from"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a"},"callback_url":"nope"}"#),
            "callback_url"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a","seed":"x"}}"#),
            "input.seed"
        );
        assert_eq!(
            field(r#"{"model":"m","kind":"image","input":{"prompt":"a","seed":9007199254740992}}"#),
            "input.seed"
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let t = crate::task::Task {
            id: Uuid::now_v7(),
            created_at: 1_700_000_000_123,
            ..sample()
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&t)),
            Some((t.created_at, t.id))
        );
        assert_eq!(decode_cursor("nope"), None);
        assert_eq!(decode_cursor(""), None);
    }

    fn sample() -> Task {
        let new = crate::task::NewTask {
            dialect: Dialect::Gengate,
            kind: TaskKind::Image,
            model: "m".into(),
            request: GenerationRequest::default(),
            callback_url: None,
            external_id: None,
            channel: None,
        };
        Task::accepted(Uuid::nil(), Uuid::nil(), new, 0, 0)
    }
}
