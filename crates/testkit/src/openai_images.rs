//! An emulated OpenAI images API on loopback, for the `openai-images`
//! adapter's tests: `POST /v1/images/generations`, held open while the
//! images are made (the real API is synchronous), every request checked
//! against OpenAI's official spec and the models' documented rules (sizes,
//! dall-e-3's `n=1`, no `response_format` for GPT image models), every
//! answer checked against the spec too. Images are real PNGs of the size
//! asked for, painted [`color_for`] the prompt, answered as `b64_json` or as
//! URLs served from the emulation's own `/files`.
//!
//! Prompts steer single requests: one containing `FAIL` is refused by the
//! safety system (`content_policy_violation`), one containing `NEVER` is
//! held open forever.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub use crate::kling::color_for;
use crate::openapi;

/// A real PNG of `width`×`height` painted `color` (the media crate's scene,
/// fully tinted, so tests can tell images apart by colour).
pub(crate) fn png(width: u32, height: u32, color: [u8; 3]) -> Result<Vec<u8>, String> {
    gengate_media::render_image(&gengate_media::ImageSpec {
        width,
        height,
        seed: u64::from(u32::from_le_bytes([color[0], color[1], color[2], 0])),
        format: gengate_media::ImageFormat::Png,
        tint: Some((color, 1.0)),
    })
    .map_err(|e| e.to_string())
}

/// An image's size and colour: all that tells two painted images apart.
type ImageKey = (u32, u32, [u8; 3]);

struct Shared {
    api_key: Option<String>,
    latency: Duration,
    base: String,
    faults: Arc<Faults>,
    files: Mutex<HashMap<String, Bytes>>,
    /// Images painted so far, by size and colour: the same request makes
    /// the same image, and an upstream that answers at once must not spend
    /// the machine's CPU (shared with the gateway under test) painting it
    /// again.
    painted: Mutex<HashMap<ImageKey, Bytes>>,
    urls_only: AtomicBool,
    /// Images answered at most per request (`usize::MAX`: all asked for).
    at_most: AtomicUsize,
    requests: Counter,
    answered: Counter,
    violations: Counter,
    last_request: Mutex<Option<Value>>,
}

pub struct OpenAiImagesEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

/// Models the emulation serves, with the sizes each accepts (`None`: any
/// `WxH`, as LocalAI and other compatible servers take).
fn sizes(model: &str) -> Option<Option<&'static [&'static str]>> {
    match model {
        "dall-e-2" => Some(Some(&["256x256", "512x512", "1024x1024"])),
        "dall-e-3" => Some(Some(&["1024x1024", "1792x1024", "1024x1792"])),
        m if m.starts_with("gpt-image") => Some(Some(&["1024x1024", "1536x1024", "1024x1536"])),
        "local-sd" => Some(None),
        _ => None,
    }
}

impl OpenAiImagesEmu {
    /// `api_key`: the bearer token callers must send, or `None` for a
    /// server without auth. Each generation takes `latency`. Models:
    /// `dall-e-2`, `dall-e-3`, `gpt-image-*`, and `local-sd` (any size, as
    /// self-hosted compatible servers take).
    pub async fn start(api_key: Option<String>, latency: Duration) -> OpenAiImagesEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared {
            api_key,
            latency,
            base: format!("http://{addr}"),
            faults: Faults::new(upstream_error),
            files: Mutex::default(),
            painted: Mutex::default(),
            urls_only: AtomicBool::new(false),
            at_most: AtomicUsize::new(usize::MAX),
            requests: Counter::default(),
            answered: Counter::default(),
            violations: Counter::default(),
            last_request: Mutex::default(),
        });
        let api = Router::new().route("/v1/images/generations", post(generate));
        let app = Router::new()
            .merge(shared.faults.guard(api))
            .route("/files/{name}", get(file))
            .with_state(shared.clone());
        OpenAiImagesEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    /// The API root, as a channel's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.shared.base)
    }

    /// Serve `fault` instead of the next generation's answer (queued, in
    /// order; `/files` takes none).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Answer URLs whatever `response_format` says, as some compatible
    /// servers do.
    pub fn answer_with_urls(&self, on: bool) {
        self.shared.urls_only.store(on, Ordering::SeqCst);
    }

    /// Answer at most `n` images whatever `n` asks, as a server whose
    /// content filter drops some does.
    pub fn answer_at_most(&self, n: usize) {
        self.shared.at_most.store(n, Ordering::SeqCst);
    }

    /// Generation requests that passed auth (each is one billed request).
    pub fn submits(&self) -> u64 {
        self.shared.requests.get()
    }

    /// Generation requests answered with images.
    pub fn answered(&self) -> u64 {
        self.shared.answered.get()
    }

    /// Requests the real API would refuse as malformed: against the spec's
    /// schema or the models' documented rules. Tests assert zero.
    pub fn spec_violations(&self) -> u64 {
        self.shared.violations.get()
    }

    /// The last generation request's body, as received.
    pub fn last_request(&self) -> Option<Value> {
        self.shared.last_request.lock().ok()?.clone()
    }
}

/// OpenAI's error body.
fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (status, axum::Json(body)).into_response()
}

/// OpenAI's error for a failure of its own (or a rate limit) with `message`.
fn upstream_error(status: StatusCode, message: &str) -> Response {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "requests"
    } else {
        "server_error"
    };
    error(status, kind, None, None, message)
}

fn invalid(s: &Shared, param: &str, message: &str) -> Response {
    s.violations.add();
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        Some(param),
        message,
    )
}

/// OpenAI's refusal of the caller's bearer key, when the server has one.
fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let want = s.api_key.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(k) if k == want => None,
        Some(_) => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            None,
            "Incorrect API key provided.",
        )),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            None,
            "You didn't provide an API key.",
        )),
    }
}

async fn generate(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    s.requests.add();
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return invalid(
            &s,
            "body",
            "We could not parse the JSON body of your request.",
        );
    };
    if let Ok(mut last) = s.last_request.lock() {
        *last = Some(b.clone());
    }
    if let Err(why) = openapi::openai().check_request("POST", "/images/generations", Some(&b)) {
        return invalid(&s, "body", &why);
    }
    let model = b["model"].as_str().unwrap_or("dall-e-2");
    let Some(allowed) = sizes(model) else {
        // Not a malformed request: the account may lack the model.
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            Some("model"),
            &format!("The model `{model}` does not exist or you do not have access to it."),
        );
    };
    let gpt = model.starts_with("gpt-image");
    if gpt && b.get("response_format").is_some() {
        return invalid(
            &s,
            "response_format",
            "Unknown parameter: 'response_format'.",
        );
    }
    let n = b["n"].as_u64().unwrap_or(1);
    if model == "dall-e-3" && n != 1 {
        return invalid(&s, "n", "You must provide n=1 for this model.");
    }
    let size = b["size"].as_str().unwrap_or("1024x1024");
    let parsed = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| (1..=4096).contains(w) && (1..=4096).contains(h));
    let (width, height) = match (parsed, allowed) {
        (Some(wh), Some(list)) if list.contains(&size) => wh,
        (Some(wh), None) => wh,
        _ => {
            return invalid(
                &s,
                "size",
                &format!("'{size}' is not one of the sizes {model} accepts."),
            );
        }
    };
    let prompt = b["prompt"].as_str().unwrap_or_default().to_string();
    if prompt.contains("FAIL") {
        return error(
            StatusCode::BAD_REQUEST,
            "image_generation_user_error",
            Some("content_policy_violation"),
            None,
            "Your request was rejected as a result of our safety system.",
        );
    }
    if prompt.contains("NEVER") {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(s.latency).await;
    let urls = !gpt
        && (s.urls_only.load(Ordering::SeqCst)
            || b["response_format"].as_str() != Some("b64_json"));
    let mut data = Vec::new();
    let n = usize::try_from(n)
        .unwrap_or(1)
        .min(s.at_most.load(Ordering::SeqCst));
    for i in 0..u32::try_from(n).unwrap_or(1) {
        let Some(img) = paint(&s, width, height, color_for(&prompt, i)).await else {
            return upstream_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
            );
        };
        if urls {
            let name = format!("img-{}.png", uuid::Uuid::new_v4().simple());
            let url = format!("{}/files/{name}", s.base);
            if let Ok(mut f) = s.files.lock() {
                f.insert(name, img);
            }
            data.push(json!({ "url": url }));
        } else {
            data.push(json!({ "b64_json": STANDARD.encode(&img) }));
        }
    }
    let mut answer = json!({"created": unix_now(), "data": data});
    if gpt {
        answer["output_format"] = "png".into();
        answer["size"] = size.into();
        answer["quality"] = "medium".into();
        answer["background"] = "opaque".into();
    }
    // The emulation holds itself to the spec as much as the adapter.
    if let Err(why) = openapi::openai().check_response("POST", "/images/generations", 200, &answer)
    {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            None,
            &format!("emulation answer off spec: {why}"),
        );
    }
    s.answered.add();
    axum::Json(answer).into_response()
}

/// The PNG for `(width, height, color)`, painted on first use. Distinct
/// images are few (one per prompt and index), so the cache is cleared only
/// past a bound that no test or bench reaches.
async fn paint(s: &Shared, width: u32, height: u32, color: [u8; 3]) -> Option<Bytes> {
    const MAX_PAINTED: usize = 1024;
    let key = (width, height, color);
    if let Some(img) = s.painted.lock().ok()?.get(&key) {
        return Some(img.clone());
    }
    let img = tokio::task::spawn_blocking(move || png(width, height, color))
        .await
        .ok()?
        .ok()?;
    let img = Bytes::from(img);
    let mut painted = s.painted.lock().ok()?;
    if painted.len() >= MAX_PAINTED {
        painted.clear();
    }
    painted.insert(key, img.clone());
    Some(img)
}

async fn file(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match s.files.lock().ok().and_then(|f| f.get(&name).cloned()) {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}
