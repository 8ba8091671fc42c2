//! Property tests of every dialect's request parser and of inline images:
//! whatever bytes a client sends, a parser answers a 400 naming a field it
//! knows (never a panic, never a 5xx); requests inside the documented rules
//! parse, and one field pushed outside them is refused by that field's name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::dialect::{
    dream_machine, kling, kling_video, luma, openai_images, openai_videos, parse_batch, tasks,
};
use gengate_core::validate::{MAX_IMAGE_BYTES, image_source, inline_image};
use gengate_core::{
    ApiError, Dialect, GenerationRequest, ImageFormat, ImageRole, ImageSource, NewTask, Task,
    TaskKind, TaskState,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::Digest as _;

/// A parser under test, reduced to whether (and why) it refused.
type Parse = fn(&[u8]) -> Result<(), ApiError>;

/// A completed video every follow-up parser may continue.
fn parent() -> Task {
    let new = NewTask {
        dialect: Dialect::Luma,
        kind: TaskKind::Video,
        model: "ray-2".into(),
        request: GenerationRequest {
            prompt: "a parent".into(),
            aspect_ratio: "16:9".into(),
            n: 1,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: None,
        channel: None,
    };
    let mut t = Task::accepted(uuid::Uuid::nil(), uuid::Uuid::nil(), new, 0, 1);
    t.state = TaskState::Completed;
    t
}

fn luma_create(b: &[u8]) -> Result<(), ApiError> {
    luma::parse_create(b).map(drop)
}
fn luma_extend(b: &[u8]) -> Result<(), ApiError> {
    luma::parse_extend(b, &parent(), 0).map(drop)
}
fn kling_image(b: &[u8]) -> Result<(), ApiError> {
    kling::parse_create(b).map(drop)
}
fn kling_text2video(b: &[u8]) -> Result<(), ApiError> {
    kling_video::parse_create(b, kling_video::Endpoint::Text2Video).map(drop)
}
fn kling_image2video(b: &[u8]) -> Result<(), ApiError> {
    kling_video::parse_create(b, kling_video::Endpoint::Image2Video).map(drop)
}
fn dm_video(b: &[u8]) -> Result<(), ApiError> {
    dream_machine::parse_video(b).map(drop)
}
fn dm_image(b: &[u8]) -> Result<(), ApiError> {
    dream_machine::parse_image(b).map(drop)
}
fn openai_image(b: &[u8]) -> Result<(), ApiError> {
    openai_images::parse_create(b).map(drop)
}
fn openai_video(b: &[u8]) -> Result<(), ApiError> {
    openai_videos::parse_create(openai_videos::json_form(b)?).map(drop)
}
fn openai_remix(b: &[u8]) -> Result<(), ApiError> {
    openai_videos::parse_remix(b, &parent()).map(drop)
}
/// Models that make one kind decide it; others need `kind`.
fn gengate_task(b: &[u8]) -> Result<(), ApiError> {
    tasks::parse_create(b, |m| (m == "img-model").then_some(TaskKind::Image)).map(drop)
}
fn batch(b: &[u8]) -> Result<(), ApiError> {
    parse_batch(b).map(drop)
}

/// Each parser with the top-level fields its errors may name.
const PARSERS: &[(&str, Parse, &[&str])] = &[
    ("luma create", luma_create, LUMA_FIELDS),
    ("luma extend", luma_extend, LUMA_FIELDS),
    ("kling image", kling_image, KLING_IMAGE_FIELDS),
    ("kling text2video", kling_text2video, KLING_VIDEO_FIELDS),
    ("kling image2video", kling_image2video, KLING_VIDEO_FIELDS),
    ("dream machine video", dm_video, DM_VIDEO_FIELDS),
    ("dream machine image", dm_image, DM_IMAGE_FIELDS),
    ("openai images", openai_image, OPENAI_IMAGE_FIELDS),
    ("openai videos", openai_video, OPENAI_VIDEO_FIELDS),
    ("openai remix", openai_remix, &["prompt"]),
    ("v1 tasks", gengate_task, TASK_FIELDS),
    ("batch get", batch, &["ids"]),
];

const LUMA_FIELDS: &[&str] = &[
    "user_prompt",
    "prompt",
    "aspect_ratio",
    "expand_prompt",
    "loop",
    "image_url",
    "image_end_url",
    "callback_url",
    "notify_hook",
    "model_name",
    "resolution",
    "duration",
];
const KLING_IMAGE_FIELDS: &[&str] = &[
    "model",
    "model_name",
    "prompt",
    "negative_prompt",
    "image",
    "image_fidelity",
    "n",
    "aspect_ratio",
    "callback_url",
    "external_task_id",
];
const KLING_VIDEO_FIELDS: &[&str] = &[
    "model_name",
    "model",
    "prompt",
    "negative_prompt",
    "cfg_scale",
    "mode",
    "aspect_ratio",
    "duration",
    "image",
    "image_tail",
    "camera_control",
    "callback_url",
    "external_task_id",
];
const DM_VIDEO_FIELDS: &[&str] = &[
    "generation_type",
    "model",
    "prompt",
    "aspect_ratio",
    "loop",
    "keyframes",
    "callback_url",
    "resolution",
    "duration",
    "concepts",
];
const DM_IMAGE_FIELDS: &[&str] = &[
    "generation_type",
    "model",
    "prompt",
    "aspect_ratio",
    "format",
    "callback_url",
    "image_ref",
    "style_ref",
    "character_ref",
    "modify_image_ref",
    "sync",
    "sync_timeout",
];
const OPENAI_IMAGE_FIELDS: &[&str] = &[
    "prompt",
    "model",
    "n",
    "size",
    "response_format",
    "quality",
    "style",
    "user",
    "stream",
];
const OPENAI_VIDEO_FIELDS: &[&str] = &[
    "prompt",
    "model",
    "seconds",
    "size",
    "input_reference",
    "callback_url",
];
const TASK_FIELDS: &[&str] = &["model", "kind", "input", "callback_url"];

/// The first segment of a field path: `input` of `input.images[0].url`.
fn top(field: &str) -> &str {
    field.split(['.', '[']).next().unwrap_or(field)
}

/// A refusal is a 400: malformed JSON, or a rule broken by a named field:
/// one the dialect has or, where the body's keys are known (`sent`), one
/// it sent.
fn assert_client_error(
    name: &str,
    known: &[&str],
    body: &[u8],
    sent: Option<&[String]>,
    err: &ApiError,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(err.status(), 400, "{}: {:?} for {:?}", name, err, body);
    if let ApiError::Validation { field, .. } = err {
        let head = top(field);
        prop_assert!(!head.is_empty(), "{}: {:?} names no field", name, err);
        prop_assert!(
            known.contains(&head) || sent.is_none_or(|sent| sent.iter().any(|s| s == head)),
            "{}: {:?} names no field of the dialect or the body {:?}",
            name,
            err,
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        // Values the rules look for, so deeper paths are reached.
        prop::sample::select(vec![
            "16:9",
            "5s",
            "5",
            "720p",
            "std",
            "image",
            "video",
            "simple",
            "https://a.b/c.png",
            "reference",
            "start",
            "url",
            "b64_json",
            "1024x1024",
            "720x1280",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are mostly ones the parser knows.
fn body_for(known: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(known).prop_map(String::from),
        1 => "[a-z_]{1,10}",
    ];
    prop::collection::btree_map(key, json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused_as_client_errors(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            // Objects that break off, nest or repeat: the JSON reader's edges.
            "\\{[\\PC\\s]{0,40}".prop_map(String::into_bytes),
        ]
    ) {
        for (name, parse, known) in PARSERS {
            if let Err(e) = parse(&bytes) {
                assert_client_error(name, known, &bytes, None, &e)?;
            }
        }
    }

    #[test]
    fn arbitrary_json_objects_are_refused_by_field(
        which in 0..PARSERS.len(),
        body in (0..PARSERS.len()).prop_flat_map(|i| body_for(PARSERS[i].2)),
    ) {
        let (name, parse, known) = PARSERS[which];
        let bytes = serde_json::to_vec(&body).unwrap();
        let sent: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        if let Err(e) = parse(&bytes) {
            assert_client_error(name, known, &bytes, Some(&sent), &e)?;
            // A syntactically sound object is never "malformed JSON" unless
            // it misses a field serde needs or sends one it does not take.
            if let ApiError::MalformedJson(why) = &e {
                prop_assert!(why.contains("field"), "{}: {:?} for {}", name, e, body);
            }
        }
    }
}

// ---- valid requests, and one field broken ------------------------------------

/// A prompt: non-blank text of any script, at most `max` characters.
fn prompt(max: usize) -> impl Strategy<Value = String> {
    let rest = max.min(120) - 1;
    prop::string::string_regex(&format!("\\PC{{0,{rest}}}"))
        .unwrap()
        .prop_map(|s| format!("a{s}"))
}

fn url() -> impl Strategy<Value = String> {
    "[a-z]{1,10}(\\.[a-z]{2,5}){1,2}(/[a-zA-Z0-9._-]{0,10}){0,3}"
        .prop_map(|s| format!("https://{s}"))
}

/// A small PNG- or JPEG-headed blob, as its bytes.
fn image_blob() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![&b"\x89PNG\r\n\x1a\n"[..], &[0xFF, 0xD8, 0xFF]]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(head, tail)| [head, &tail].concat())
}

/// An image as the dialects take one inline: raw base64 or a data URI.
fn inline(bytes: &[u8], data_uri: bool) -> String {
    let b64 = STANDARD.encode(bytes);
    if data_uri {
        format!("data:image/png;base64,{b64}")
    } else {
        b64
    }
}

fn inline_image_value() -> impl Strategy<Value = String> {
    (image_blob(), any::<bool>()).prop_map(|(b, uri)| inline(&b, uri))
}

/// One field made wrong: where (a JSON pointer), its bad value, and the
/// name the refusal must give.
struct Break {
    at: String,
    value: Value,
    field: String,
}

fn brk(at: impl Into<String>, value: Value, field: impl Into<String>) -> Break {
    Break {
        at: at.into(),
        value,
        field: field.into(),
    }
}

/// `body` parses, and with any one of `breaks` applied it is refused by
/// that field's name.
fn check(parse: Parse, body: &Value, breaks: &[Break]) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(body).unwrap();
    prop_assert!(
        parse(&bytes).is_ok(),
        "{:?} refused {}",
        parse(&bytes),
        body
    );
    for b in breaks {
        let mut broken = body.clone();
        set(&mut broken, &b.at, b.value.clone());
        match parse(&serde_json::to_vec(&broken).unwrap()) {
            Err(ApiError::Validation { field, .. }) => {
                prop_assert_eq!(&field, &b.field, "{} set to {}", b.at, b.value)
            }
            other => prop_assert!(false, "{} set to {}: {:?}", b.at, b.value, other),
        }
    }
    Ok(())
}

/// Sets the value at a JSON pointer, making the last step if it is missing.
fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let holder = v.pointer_mut(parent).expect("the parent exists");
    match holder {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        holder => holder[key] = value,
    }
}

fn too_long(max: usize) -> Value {
    Value::from("x".repeat(max + 1))
}

fn luma_body() -> impl Strategy<Value = Value> {
    (
        prompt(luma::MAX_PROMPT_CHARS),
        prop::sample::select(luma::ASPECT_RATIOS),
        "[A-Za-z0-9._-]{1,64}",
        prop::sample::select(luma::RESOLUTIONS),
        prop::sample::select(vec![json!("5s"), json!("9s"), json!(5), json!(9.0)]),
        any::<bool>(),
        url(),
    )
        .prop_map(|(p, ar, model, res, dur, lp, cb)| {
            json!({"user_prompt": p, "aspect_ratio": ar, "model_name": model,
                   "resolution": res, "duration": dur, "loop": lp,
                   "image_url": cb, "callback_url": cb})
        })
}

fn luma_breaks() -> Vec<Break> {
    vec![
        brk("/user_prompt", json!(" \t"), "user_prompt"),
        brk(
            "/user_prompt",
            too_long(luma::MAX_PROMPT_CHARS),
            "user_prompt",
        ),
        brk("/user_prompt", json!(7), "user_prompt"),
        brk("/aspect_ratio", json!("2:1"), "aspect_ratio"),
        brk("/model_name", json!("ray 2"), "model_name"),
        brk("/model_name", too_long(luma::MAX_MODEL_CHARS), "model_name"),
        brk("/resolution", json!("8k"), "resolution"),
        brk("/duration", json!("7s"), "duration"),
        brk("/duration", json!(5.5), "duration"),
        brk("/image_url", json!("ftp://a.b/c"), "image_url"),
        brk("/callback_url", json!("not a url"), "callback_url"),
        brk("/loop", json!("yes"), "loop"),
    ]
}

fn kling_image_body() -> impl Strategy<Value = Value> {
    (
        prompt(kling::MAX_PROMPT_CHARS),
        1..=kling::MAX_N,
        0.0..=1.0f64,
        prop::sample::select(kling::ASPECT_RATIOS),
        "[a-z0-9-]{1,64}",
        "[a-z]{1,20}-[0-9]{1,5}",
        prop_oneof![url(), inline_image_value()],
    )
        .prop_map(|(p, n, fid, ar, model, ext, image)| {
            json!({"prompt": p, "n": n, "image_fidelity": fid, "aspect_ratio": ar,
                   "model": model, "external_task_id": ext, "image": image})
        })
}

fn kling_image_breaks() -> Vec<Break> {
    vec![
        brk("/prompt", json!(""), "prompt"),
        brk("/prompt", too_long(kling::MAX_PROMPT_CHARS), "prompt"),
        brk(
            "/negative_prompt",
            too_long(kling::MAX_NEGATIVE_PROMPT_CHARS),
            "negative_prompt",
        ),
        brk("/n", json!(0), "n"),
        brk("/n", json!(kling::MAX_N + 1), "n"),
        brk("/n", json!(1.5), "n"),
        brk("/image_fidelity", json!(1.01), "image_fidelity"),
        brk("/aspect_ratio", json!("21:9"), "aspect_ratio"),
        brk("/model", too_long(64), "model"),
        brk(
            "/external_task_id",
            json!("4665a07c-7641-4809-a133-10786201bb56"),
            "external_task_id",
        ),
        brk("/image", json!(inline(b"GIF89a", true)), "image"),
        brk("/image", json!("!!"), "image"),
    ]
}

/// A camera move Kling takes: `simple` with one axis moving, or a preset.
fn camera() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            prop::sample::select(kling_video::CAMERA_AXES),
            prop_oneof![-10.0..-0.5f64, 0.5..=10.0f64],
        )
            .prop_map(|(axis, v)| json!({"type": "simple", "config": {axis: v}})),
        prop::sample::select(&kling_video::CAMERA_TYPES[1..]).prop_map(|t| json!({"type": t})),
    ]
}

fn kling_video_body() -> impl Strategy<Value = Value> {
    (
        prompt(kling_video::MAX_PROMPT_CHARS),
        prop::sample::select(kling_video::MODES),
        prop::sample::select(kling_video::DURATIONS),
        prop::sample::select(kling_video::ASPECT_RATIOS),
        0.0..=1.0f64,
        camera(),
    )
        .prop_map(|(p, mode, dur, ar, cfg, cam)| {
            json!({"prompt": p, "mode": mode, "duration": dur, "aspect_ratio": ar,
                   "cfg_scale": cfg, "camera_control": cam})
        })
}

fn kling_video_breaks() -> Vec<Break> {
    vec![
        brk("/prompt", json!(null), "prompt"),
        brk("/mode", json!("ultra"), "mode"),
        brk("/duration", json!("7"), "duration"),
        brk("/aspect_ratio", json!("4:3"), "aspect_ratio"),
        brk("/cfg_scale", json!(-0.1), "cfg_scale"),
        brk(
            "/camera_control",
            json!({"type": "simple", "config": {"zoom": 11}}),
            "camera_control.config.zoom",
        ),
        brk(
            "/camera_control",
            json!({"type": "simple", "config": {"zoom": 1, "pan": 1}}),
            "camera_control.config",
        ),
        brk(
            "/camera_control",
            json!({"type": "spin"}),
            "camera_control.type",
        ),
        brk("/image", json!("https://a.b/c.png"), "image"),
    ]
}

fn image2video_body() -> impl Strategy<Value = Value> {
    (
        inline_image_value(),
        prop::option::of(inline_image_value()),
        prop::sample::select(kling_video::DURATIONS),
    )
        .prop_map(|(image, tail, dur)| json!({"image": image, "image_tail": tail, "duration": dur}))
}

fn image2video_breaks() -> Vec<Break> {
    vec![
        brk("/image", json!(""), "image"),
        brk("/image", json!(inline(b"RIFF....WEBP", false)), "image"),
        brk("/image_tail", json!("data:image/png,abc"), "image_tail"),
        brk("/aspect_ratio", json!("16:9"), "aspect_ratio"),
    ]
}

fn dm_model() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn dm_video_body() -> impl Strategy<Value = Value> {
    (
        dm_model(),
        prompt(dream_machine::MAX_PROMPT_CHARS),
        prop::sample::select(dream_machine::ASPECT_RATIOS),
        prop::sample::select(dream_machine::RESOLUTIONS),
        prop::sample::select(dream_machine::DURATIONS),
        url(),
    )
        .prop_map(|(m, p, ar, res, dur, u)| {
            json!({"model": m, "prompt": p, "aspect_ratio": ar, "resolution": res,
                   "duration": dur, "generation_type": "video",
                   "keyframes": {"frame0": {"type": "image", "url": u}}})
        })
}

fn dm_video_breaks() -> Vec<Break> {
    vec![
        brk("/model", json!(""), "model"),
        brk("/model", json!("two words"), "model"),
        brk("/prompt", json!("\u{3000}"), "prompt"),
        brk("/resolution", json!("8k"), "resolution"),
        brk("/duration", json!("7s"), "duration"),
        brk("/generation_type", json!("image"), "generation_type"),
        brk("/concepts", json!([{"key": "dolly"}]), "concepts"),
        brk(
            "/keyframes/frame0/type",
            json!("video"),
            "keyframes.frame0.type",
        ),
        brk(
            "/keyframes/frame0/url",
            json!("ftp://a"),
            "keyframes.frame0.url",
        ),
        brk(
            "/keyframes/frame1",
            json!({"type": "generation", "id": "4665a07c-7641-4809-a133-10786201bb56"}),
            "keyframes.frame1",
        ),
    ]
}

fn dm_image_body() -> impl Strategy<Value = Value> {
    (
        dm_model(),
        prompt(dream_machine::MAX_PROMPT_CHARS),
        prop::sample::select(dream_machine::IMAGE_FORMATS),
        url(),
        0.0..=1.0f64,
        1.0..=dream_machine::MAX_SYNC_TIMEOUT_SECS,
    )
        .prop_map(|(m, p, f, u, w, t)| {
            json!({"model": m, "prompt": p, "format": f, "sync": true, "sync_timeout": t,
                   "image_ref": [{"url": u, "weight": w}]})
        })
}

fn dm_image_breaks() -> Vec<Break> {
    vec![
        brk("/format", json!("gif"), "format"),
        brk("/sync_timeout", json!(0.5), "sync_timeout"),
        brk("/image_ref/0/weight", json!(1.5), "image_ref[0].weight"),
        brk("/image_ref/0/url", json!("nope"), "image_ref[0].url"),
        brk("/style_ref", json!([]), "style_ref"),
        brk("/aspect_ratio", json!("5:4"), "aspect_ratio"),
    ]
}

/// A model under the general rules (not one of OpenAI's own).
fn openai_image_body() -> impl Strategy<Value = Value> {
    let side = openai_images::MIN_SIDE..=openai_images::MAX_SIDE;
    (
        prompt(openai_images::MAX_PROMPT_CHARS),
        "flux-[a-z0-9]{1,10}",
        1..=openai_images::MAX_N,
        prop_oneof![
            (side.clone(), side).prop_map(|(w, h)| format!("{w}x{h}")),
            Just("auto".to_string()),
        ],
        prop::sample::select(vec!["url", "b64_json"]),
        prop::sample::select(openai_images::QUALITIES),
        prop::sample::select(openai_images::STYLES),
    )
        .prop_map(|(p, m, n, size, rf, q, s)| {
            json!({"prompt": p, "model": m, "n": n, "size": size, "response_format": rf,
                   "quality": q, "style": s, "stream": false, "user": "u-1"})
        })
}

fn openai_image_breaks() -> Vec<Break> {
    vec![
        brk("/n", json!(openai_images::MAX_N + 1), "n"),
        brk("/n", json!(-1), "n"),
        brk("/size", json!("63x64"), "size"),
        brk("/size", json!("64x4097"), "size"),
        brk("/size", json!("64*64"), "size"),
        brk("/response_format", json!("xml"), "response_format"),
        brk("/quality", json!("ultra"), "quality"),
        brk("/style", json!("bold"), "style"),
        brk("/user", too_long(openai_images::MAX_USER_CHARS), "user"),
        brk("/stream", json!(true), "stream"),
        brk("/model", json!("a b"), "model"),
    ]
}

fn openai_video_body() -> impl Strategy<Value = Value> {
    (
        prompt(openai_videos::MAX_PROMPT_CHARS),
        prop::sample::select(vec![json!("4"), json!("8"), json!(12), json!(8.0)]),
        prop::sample::select(openai_videos::SIZES).prop_map(|s| s.0),
        (image_blob(), url())
            .prop_flat_map(|(b, u)| prop::sample::select(vec![inline(&b, true), u])),
    )
        .prop_map(|(p, secs, size, reference)| {
            json!({"prompt": p, "seconds": secs, "size": size,
                   "input_reference": {"image_url": reference}})
        })
}

fn openai_video_breaks() -> Vec<Break> {
    vec![
        brk("/seconds", json!("5"), "seconds"),
        brk("/seconds", json!(true), "seconds"),
        brk("/size", json!("1x1"), "size"),
        brk("/prompt", json!(""), "prompt"),
        brk(
            "/input_reference",
            json!({"file_id": "file-1"}),
            "input_reference.file_id",
        ),
        brk("/input_reference", json!({}), "input_reference"),
        brk(
            "/input_reference/image_url",
            json!("data:image/png;base64,!!"),
            "input_reference.image_url",
        ),
        brk("/callback_url", json!("mailto:a@b"), "callback_url"),
    ]
}

fn aspect() -> impl Strategy<Value = String> {
    (1..=tasks::MAX_ASPECT_PART, 1..=tasks::MAX_ASPECT_PART).prop_map(|(w, h)| format!("{w}:{h}"))
}

fn task_image_body() -> impl Strategy<Value = Value> {
    (
        prompt(tasks::MAX_PROMPT_CHARS),
        aspect(),
        1..=tasks::MAX_N,
        0..=tasks::MAX_SEED,
        prop::collection::vec(image_blob(), 0..=tasks::MAX_IMAGES),
    )
        .prop_map(|(p, ar, n, seed, images)| {
            let images: Vec<Value> = images
                .iter()
                .map(|b| json!({"data": inline(b, false), "role": "reference"}))
                .collect();
            json!({"model": "img-model", "kind": "image", "input": {
                "prompt": p, "aspect_ratio": ar, "n": n, "seed": seed,
                "images": images, "image_fidelity": 0.5}})
        })
}

fn task_image_breaks() -> Vec<Break> {
    vec![
        brk("/input/n", json!(tasks::MAX_N + 1), "input.n"),
        brk("/input/seed", json!(tasks::MAX_SEED + 1), "input.seed"),
        brk("/input/aspect_ratio", json!("101:1"), "input.aspect_ratio"),
        brk("/input/aspect_ratio", json!("0:1"), "input.aspect_ratio"),
        brk("/input/duration", json!(5), "input.duration"),
        brk("/input/image_fidelity", json!(2), "input.image_fidelity"),
        brk(
            "/input/images",
            json!([{"role": "start", "url": "https://a.b"}]),
            "input.images[0].role",
        ),
        brk("/input/images", json!([{}]), "input.images[0].url"),
        brk("/input/prompt", json!(null), "input.prompt"),
        brk("/kind", json!("audio"), "kind"),
        brk("/model", json!(""), "model"),
    ]
}

fn task_video_body() -> impl Strategy<Value = Value> {
    (
        "[a-z0-9-]{1,20}",
        prompt(tasks::MAX_PROMPT_CHARS),
        1..=tasks::MAX_DURATION_SECS,
        prop::sample::select(tasks::RESOLUTIONS),
        image_blob(),
        url(),
    )
        .prop_map(|(m, p, d, r, start, end)| {
            json!({"model": m, "kind": "video", "input": {
                "prompt": p, "duration": d, "resolution": r, "loop": true,
                "images": [{"data": inline(&start, true), "role": "start"},
                           {"url": end, "role": "end"}]}})
        })
}

fn task_video_breaks() -> Vec<Break> {
    vec![
        brk(
            "/input/duration",
            json!(tasks::MAX_DURATION_SECS + 1),
            "input.duration",
        ),
        brk("/input/duration", json!(0), "input.duration"),
        brk("/input/n", json!(2), "input.n"),
        brk("/input/resolution", json!("8k"), "input.resolution"),
        brk("/input/extend_from", json!("nope"), "input.extend_from"),
        brk(
            "/input/images/1/role",
            json!("start"),
            "input.images[1].role",
        ),
        brk(
            "/input/images/0/data",
            json!(inline(b"GIF89a", false)),
            "input.images[0].data",
        ),
        brk("/callback_url", json!("http://"), "callback_url"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn luma_valid_and_broken(body in luma_body()) {
        check(luma_create, &body, &luma_breaks())?;
    }

    #[test]
    fn kling_image_valid_and_broken(body in kling_image_body()) {
        check(kling_image, &body, &kling_image_breaks())?;
    }

    #[test]
    fn kling_text2video_valid_and_broken(body in kling_video_body()) {
        check(kling_text2video, &body, &kling_video_breaks())?;
    }

    #[test]
    fn kling_image2video_valid_and_broken(body in image2video_body()) {
        check(kling_image2video, &body, &image2video_breaks())?;
    }

    #[test]
    fn dream_machine_video_valid_and_broken(body in dm_video_body()) {
        check(dm_video, &body, &dm_video_breaks())?;
    }

    #[test]
    fn dream_machine_image_valid_and_broken(body in dm_image_body()) {
        check(dm_image, &body, &dm_image_breaks())?;
    }

    #[test]
    fn openai_images_valid_and_broken(body in openai_image_body()) {
        check(openai_image, &body, &openai_image_breaks())?;
    }

    /// OpenAI's own models keep OpenAI's rules: one image past the model's
    /// most, or a size it does not make, is refused by name.
    #[test]
    fn openai_models_keep_their_rules(
        model in prop::sample::select(vec!["dall-e-2", "dall-e-3", "gpt-image-1"]),
        p in "[a-z ]{1,200}",
    ) {
        let rules = openai_images::openai_rules(model).unwrap();
        let body = json!({"model": model, "prompt": format!("a{p}"), "n": rules.max_n,
                          "size": rules.sizes[0]});
        check(openai_image, &body, &[
            brk("/n", json!(rules.max_n + 1), "n"),
            brk("/size", json!("64x64"), "size"),
            brk("/prompt", too_long(rules.max_prompt_chars), "prompt"),
        ])?;
    }

    #[test]
    fn openai_videos_valid_and_broken(body in openai_video_body()) {
        check(openai_video, &body, &openai_video_breaks())?;
    }

    #[test]
    fn v1_image_tasks_valid_and_broken(body in task_image_body()) {
        check(gengate_task, &body, &task_image_breaks())?;
    }

    #[test]
    fn v1_video_tasks_valid_and_broken(body in task_video_body()) {
        check(gengate_task, &body, &task_video_breaks())?;
    }

    /// A batch keeps the first of each id, in order; past 100 ids, or with
    /// one that is not an id, it is refused naming `ids` or that entry.
    #[test]
    fn batch_gets_keep_order_and_name_bad_entries(
        ids in prop::collection::vec(any::<u128>().prop_map(uuid::Uuid::from_u128), 1..20),
        dupes in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        bad in any::<prop::sample::Index>(),
    ) {
        let mut sent: Vec<String> = ids.iter().map(|u| u.to_string()).collect();
        let again: Vec<String> = dupes.iter().map(|i| i.get(&sent).clone()).collect();
        sent.extend(again);
        let mut firsts = Vec::new();
        for s in &sent {
            let id = uuid::Uuid::parse_str(s).unwrap();
            if !firsts.contains(&id) {
                firsts.push(id);
            }
        }
        prop_assert_eq!(parse_batch(json!({"ids": sent}).to_string().as_bytes()).unwrap(), firsts);
        let at = bad.index(sent.len());
        check(batch, &json!({"ids": sent}), &[
            brk(format!("/ids/{at}"), json!("not-an-id"), format!("ids[{at}]")),
            brk("/ids", json!(vec![ids[0].to_string(); 101]), "ids"),
            brk("/ids", json!([]), "ids"),
        ])?;
    }
}

// ---- inline images -------------------------------------------------------------

/// Base64 with whitespace wherever a client's encoder wrapped it.
fn wrapped(b64: &str, every: usize) -> String {
    b64.as_bytes()
        .chunks(every)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A PNG or JPEG sent inline, raw or as a data URI of any declared
    /// type, wrapped or unpadded, comes back byte for byte, judged by its
    /// bytes and stored under its content hash.
    #[test]
    fn inline_images_round_trip(
        bytes in image_blob(),
        mime in "[a-z]{1,8}/[a-z0-9.+-]{1,10}",
        form in 0..4u8,
        every in 1..80usize,
    ) {
        let b64 = STANDARD.encode(&bytes);
        let value = match form {
            0 => b64,
            1 => format!("data:{mime};base64,{b64}"),
            2 => wrapped(&b64, every),
            _ => b64.trim_end_matches('=').to_string(),
        };
        let format = ImageFormat::sniff(&bytes).unwrap();
        let (decoded, got) = inline_image("image", &value).unwrap();
        prop_assert_eq!(&decoded, &bytes);
        prop_assert_eq!(got, format);
        let (image, upload) = image_source("image", &value, ImageRole::Start).unwrap();
        let upload = upload.unwrap();
        let key = format!("inputs/{}.{}", hex::encode(sha2::Sha256::digest(&bytes)), format.extension());
        prop_assert_eq!(&upload.key, &key);
        prop_assert_eq!(upload.bytes, bytes);
        prop_assert_eq!(image.source, ImageSource::Stored { key, format });
    }

    /// Bytes that are neither PNG nor JPEG are refused by the field's name.
    #[test]
    fn other_images_are_refused_by_name(
        bytes in prop::collection::vec(any::<u8>(), 0..64)
            .prop_filter("not png or jpeg", |b| ImageFormat::sniff(b).is_none()),
        field in "[a-z_.\\[\\]0-9]{1,20}",
        data_uri in any::<bool>(),
    ) {
        match inline_image(&field, &inline(&bytes, data_uri)) {
            Err(ApiError::Validation { field: named, .. }) => prop_assert_eq!(named, field),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Any string: refused by the field's name, or decoded to a PNG or JPEG.
    #[test]
    fn any_string_is_an_image_or_refused_by_name(
        value in prop_oneof![
            "\\PC{0,60}",
            "data:[\\PC]{0,20}(;base64)?,[A-Za-z0-9+/=\\s]{0,40}",
            "[A-Za-z0-9+/=]{0,80}",
            "https?://\\PC{0,40}",
        ],
    ) {
        match image_source("image", &value, ImageRole::Reference) {
            Ok((image, upload)) => match image.source {
                ImageSource::Url { url } => {
                    prop_assert!(url.starts_with("http") && upload.is_none());
                }
                ImageSource::Stored { format, .. } => {
                    let upload = upload.unwrap();
                    prop_assert_eq!(ImageFormat::sniff(&upload.bytes), Some(format));
                }
            },
            Err(ApiError::Validation { field, .. }) => prop_assert_eq!(field, "image"),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
    }
}

/// Past 10 MB decoded, an image is refused before it is decoded.
#[test]
fn oversized_inline_images_are_refused_by_name() {
    let big = STANDARD.encode(vec![0x89; MAX_IMAGE_BYTES + 4]);
    match inline_image("image", &big) {
        Err(ApiError::Validation { field, rule }) => {
            assert_eq!(field, "image");
            assert!(rule.contains("10 MB"), "{rule}");
        }
        other => panic!("{other:?}"),
    }
}
