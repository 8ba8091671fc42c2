//! An emulated Gemini API for Veo on loopback, for the `gemini-veo`
//! adapter's tests: `POST /v1beta/models/{model}:predictLongRunning`,
//! `GET /v1beta/models/{model}/operations/{id}` and the video at
//! `GET /v1beta/files/{id}:download`, every request checked against the
//! documented shape (one instance; `parameters` `aspectRatio` 16:9 or 9:16,
//! `durationSeconds` 4, 6 or 8, `resolution` 720p or 1080p,
//! `personGeneration`, `negativePrompt`; images as `{bytesBase64Encoded,
//! mimeType}`; unknown fields refused) and the key (`x-goog-api-key`) on
//! every one, the download included. Videos are real MP4s as long as asked.
//!
//! Prompts steer single requests: `FAIL` ends the operation with an error,
//! `FILTER` with every sample filtered by the safety system.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::faults::{self, Counter, Fault, Faults};

/// Models the emulation serves.
pub const MODELS: &[&str] = &["veo-3.0-generate-001", "veo-3.1-generate-preview"];

struct Op {
    model: String,
    prompt: String,
    seconds: u32,
    portrait: bool,
    started: Instant,
}

struct Shared {
    key: String,
    run_for: Duration,
    base: String,
    faults: Arc<Faults>,
    ops: Mutex<HashMap<String, Op>>,
    requests: Mutex<Vec<Value>>,
    violations: Counter,
    submits: Counter,
    downloads: Counter,
}

pub struct VeoEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

/// Google's error body.
fn google_error(status: StatusCode, message: &str) -> Response {
    google_error_with(status, message, json!([]))
}

fn google_error_with(status: StatusCode, message: &str, details: Value) -> Response {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name,
                                "details": details}});
    (status, axum::Json(body)).into_response()
}

impl VeoEmu {
    /// Callers must send `key`; each operation is done after `run_for`.
    pub async fn start(key: &str, run_for: Duration) -> VeoEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared {
            key: key.into(),
            run_for,
            base: format!("http://{addr}"),
            faults: Faults::new(google_error),
            ops: Mutex::default(),
            requests: Mutex::default(),
            violations: Counter::default(),
            submits: Counter::default(),
            downloads: Counter::default(),
        });
        let api = Router::new()
            .route("/v1beta/models/{action}", post(predict))
            .route("/v1beta/models/{model}/operations/{id}", get(operation));
        let app = Router::new()
            .merge(shared.faults.guard(api))
            .route("/v1beta/files/{file}", get(download))
            .with_state(shared.clone());
        VeoEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    /// The API root, as a channel's `base_url`.
    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// Serve `fault` instead of the next API answer (queued, in order;
    /// downloads take none).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Creates accepted.
    pub fn submits(&self) -> u64 {
        self.shared.submits.get()
    }

    /// Videos downloaded with the key.
    pub fn downloads(&self) -> u64 {
        self.shared.downloads.get()
    }

    /// Requests the real API would refuse as malformed. Tests assert zero.
    pub fn violations(&self) -> u64 {
        self.shared.violations.get()
    }

    /// Every create request's body, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

fn keyed(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    match headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        Some(k) if k == s.key => None,
        Some(_) => Some(google_error_with(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
        )),
        None => Some(google_error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers.",
        )),
    }
}

fn invalid(s: &Shared, message: &str) -> Response {
    s.violations.add();
    google_error(StatusCode::BAD_REQUEST, message)
}

/// An image as the API takes it: base64 bytes and a png or jpeg type.
fn image_ok(v: &Value) -> bool {
    let Some(o) = v.as_object() else { return false };
    o.keys()
        .all(|k| k == "bytesBase64Encoded" || k == "mimeType")
        && matches!(
            o.get("mimeType").and_then(Value::as_str),
            Some("image/png" | "image/jpeg")
        )
        && o.get("bytesBase64Encoded")
            .and_then(Value::as_str)
            .is_some_and(|b| STANDARD.decode(b).is_ok_and(|bytes| !bytes.is_empty()))
}

async fn predict(
    State(s): State<Arc<Shared>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = keyed(&s, &headers) {
        return r;
    }
    let Some(model) = action.strip_suffix(":predictLongRunning") else {
        return google_error(StatusCode::NOT_FOUND, "Method not found.");
    };
    if !MODELS.contains(&model) {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("models/{model} is not found for API version v1beta"),
        );
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return invalid(&s, "Invalid JSON payload received.");
    };
    if let Ok(mut r) = s.requests.lock() {
        r.push(b.clone());
    }
    let known = |v: &Value, keys: &[&str]| {
        v.as_object()
            .is_some_and(|o| o.keys().all(|k| keys.contains(&k.as_str())))
    };
    if !known(&b, &["instances", "parameters"]) {
        return invalid(&s, "Invalid JSON payload received. Unknown name.");
    }
    let Some([instance]) = b["instances"].as_array().map(Vec::as_slice) else {
        return invalid(&s, "instances must hold exactly one instance.");
    };
    if !known(instance, &["prompt", "image", "lastFrame"]) {
        return invalid(
            &s,
            "Invalid JSON payload received. Unknown name in instances[0].",
        );
    }
    let prompt = instance["prompt"].as_str().unwrap_or_default();
    if prompt.is_empty() {
        return invalid(&s, "instances[0].prompt is required.");
    }
    for frame in ["image", "lastFrame"] {
        if !instance[frame].is_null() && !image_ok(&instance[frame]) {
            return invalid(&s, &format!("instances[0].{frame} is not a valid image."));
        }
    }
    if !instance["lastFrame"].is_null() && instance["image"].is_null() {
        return invalid(&s, "lastFrame needs image.");
    }
    let p = &b["parameters"];
    if !p.is_null()
        && !known(
            p,
            &[
                "aspectRatio",
                "durationSeconds",
                "negativePrompt",
                "resolution",
                "personGeneration",
            ],
        )
    {
        return invalid(
            &s,
            "Invalid JSON payload received. Unknown name in parameters.",
        );
    }
    let aspect = p["aspectRatio"].as_str().unwrap_or("16:9");
    let seconds = p["durationSeconds"].as_u64().unwrap_or(8);
    let checks = [
        (
            matches!(aspect, "16:9" | "9:16"),
            "aspectRatio must be 16:9 or 9:16.",
        ),
        (
            matches!(seconds, 4 | 6 | 8),
            "durationSeconds must be 4, 6 or 8.",
        ),
        (
            matches!(p["resolution"].as_str(), None | Some("720p" | "1080p")),
            "resolution must be 720p or 1080p.",
        ),
        (
            matches!(
                p["personGeneration"].as_str(),
                None | Some("allow_all" | "allow_adult" | "dont_allow")
            ),
            "personGeneration is not supported.",
        ),
        (
            p["negativePrompt"].is_null() || p["negativePrompt"].is_string(),
            "negativePrompt must be a string.",
        ),
        (
            instance["image"].is_null() || p["personGeneration"].as_str() != Some("allow_all"),
            "personGeneration allow_all is not allowed with an image.",
        ),
    ];
    if let Some((_, why)) = checks.iter().find(|(ok, _)| !ok) {
        return invalid(&s, why);
    }
    s.submits.add();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("models/{model}/operations/{id}");
    if let Ok(mut ops) = s.ops.lock() {
        ops.insert(
            id,
            Op {
                model: model.into(),
                prompt: prompt.into(),
                seconds: u32::try_from(seconds).unwrap_or(8),
                portrait: aspect == "9:16",
                started: Instant::now(),
            },
        );
    }
    axum::Json(json!({ "name": name })).into_response()
}

async fn operation(
    State(s): State<Arc<Shared>>,
    Path((model, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = keyed(&s, &headers) {
        return r;
    }
    let Some(view) = s.ops.lock().ok().and_then(|ops| {
        ops.get(&id).filter(|op| op.model == model).map(|op| {
            let name = format!("models/{model}/operations/{id}");
            if op.started.elapsed() < s.run_for {
                json!({ "name": name })
            } else if op.prompt.contains("FAIL") {
                json!({"name": name, "done": true,
                       "error": {"code": 3, "message": "emulated failure"}})
            } else if op.prompt.contains("FILTER") {
                json!({"name": name, "done": true, "response": {"generateVideoResponse": {
                    "raiMediaFilteredCount": 1,
                    "raiMediaFilteredReasons": ["emulated safety filter"]}}})
            } else {
                let uri = format!("{}/v1beta/files/{id}:download?alt=media", s.base);
                json!({"name": name, "done": true, "response": {
                    "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                    "generateVideoResponse": {"generatedSamples": [{"video": {"uri": uri}}]}}})
            }
        })
    }) else {
        return google_error(StatusCode::NOT_FOUND, "Operation not found.");
    };
    axum::Json(view).into_response()
}

async fn download(
    State(s): State<Arc<Shared>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = keyed(&s, &headers) {
        return r;
    }
    let Some(id) = file.strip_suffix(":download") else {
        return google_error(StatusCode::NOT_FOUND, "File not found.");
    };
    let Some((seconds, portrait, prompt)) = s.ops.lock().ok().and_then(|ops| {
        ops.get(id)
            .map(|op| (op.seconds, op.portrait, op.prompt.clone()))
    }) else {
        return google_error(StatusCode::NOT_FOUND, "File not found.");
    };
    let color = crate::kling::color_for(&prompt, 0);
    let (width, height) = if portrait { (96, 160) } else { (160, 96) };
    let video = tokio::task::spawn_blocking(move || {
        gengate_media::render_video(&gengate_media::VideoSpec {
            width,
            height,
            seed: u64::from(u32::from_le_bytes([color[0], color[1], color[2], 0])),
            frames: seconds * 24,
            fps: 24,
            base_color: Some(color),
            looped: false,
        })
    })
    .await;
    match video {
        Ok(Ok(v)) => {
            s.downloads.add();
            ([(header::CONTENT_TYPE, "video/mp4")], v.mp4).into_response()
        }
        _ => google_error(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed"),
    }
}
