//! An emulated Replicate API on loopback, for the `replicate` adapter's
//! tests: bearer tokens, predictions created by model or by version, that
//! advance `starting` → `processing` → `succeeded` (or `failed`) over time,
//! cancel, problem-details errors, Standard Webhooks callbacks, and real
//! media (PNG stills, a tiny H.264 MP4) served from its own `/files`.
//!
//! Every request is checked against Replicate's official OpenAPI spec (a
//! violation is answered 422 and counted), and so is every prediction it
//! answers with. Two models exist: [`IMAGE_MODEL`] and [`VIDEO_MODEL`].
//!
//! Prompts steer single predictions: one containing `FAIL` ends `failed`,
//! one containing `NEVER` stays `processing`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use gengate_core::time::rfc3339_ms;
use gengate_media::{ImageFormat, ImageSpec, VideoSpec};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::call_back;
use crate::faults::{self, Counter, Fault, Faults};
use crate::kling::color_for;
use crate::openapi;

/// A model this emulation runs, under its name and its one version id.
pub struct Model {
    pub name: &'static str,
    pub version: &'static str,
    /// Answers one MP4 (`output` a string) instead of `num_outputs` PNGs.
    pub video: bool,
}

pub const IMAGE_MODEL: &str = "gengate-emu/still";
pub const IMAGE_VERSION: &str = "295cb31d41ed7f2eb982bb1fa518ebc644483fe731ef18190c679c0b403fea2a";
pub const VIDEO_MODEL: &str = "gengate-emu/motion";
pub const VIDEO_VERSION: &str = "006b0c75e32a31954e6da39536433b42f00db9ef2061e611dbf945a4ea61b8e5";

pub const MODELS: &[Model] = &[
    Model {
        name: IMAGE_MODEL,
        version: IMAGE_VERSION,
        video: false,
    },
    Model {
        name: VIDEO_MODEL,
        version: VIDEO_VERSION,
        video: true,
    },
];

/// Aspect ratios the emulated models accept.
const ASPECTS: &[(&str, (u32, u32))] = &[
    ("1:1", (1, 1)),
    ("16:9", (16, 9)),
    ("9:16", (9, 16)),
    ("4:3", (4, 3)),
    ("3:4", (3, 4)),
    ("3:2", (3, 2)),
    ("2:3", (2, 3)),
];

/// Events a webhook is sent for when the request names none.
const ALL_EVENTS: &[&str] = &["start", "output", "logs", "completed"];

#[derive(Clone)]
struct Prediction {
    id: String,
    model: &'static Model,
    input: Value,
    prompt: String,
    n: u32,
    aspect: (u32, u32),
    created: Instant,
    created_ms: i64,
    /// How long after creation it was canceled.
    canceled: Option<Duration>,
    webhook: Option<String>,
    events: Vec<String>,
    /// Set by whoever sends the `completed` webhook, so it goes once.
    completed_sent: Arc<AtomicBool>,
}

struct Shared {
    token: String,
    secret: String,
    run_for: Duration,
    base: String,
    predictions: Mutex<HashMap<String, Prediction>>,
    inputs: Mutex<Vec<Value>>,
    faults: Arc<Faults>,
    submits: Counter,
    polls: Counter,
    cancels: Counter,
    spec_violations: Counter,
    response_violations: Counter,
    webhooks_sent: Counter,
}

impl Shared {
    fn new(token: &str, run_for: Duration, base: String) -> Shared {
        let key: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| u.as_bytes().to_vec())
            .collect();
        Shared {
            token: token.to_string(),
            secret: format!("whsec_{}", STANDARD.encode(key)),
            run_for,
            base,
            predictions: Mutex::default(),
            inputs: Mutex::default(),
            faults: Faults::new(fault_problem),
            submits: Counter::default(),
            polls: Counter::default(),
            cancels: Counter::default(),
            spec_violations: Counter::default(),
            response_violations: Counter::default(),
            webhooks_sent: Counter::default(),
        }
    }
}

pub struct ReplicateEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

impl ReplicateEmu {
    /// Accepts `token` as the bearer token; predictions take `run_for` from
    /// creation to their end (the first quarter `starting`).
    pub async fn start(token: &str, run_for: Duration) -> ReplicateEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared::new(token, run_for, format!("http://{addr}")));
        let api = Router::new()
            .route("/v1/predictions", post(create_by_version))
            .route(
                "/v1/models/{owner}/{name}/predictions",
                post(create_by_model),
            )
            .route("/v1/predictions/{id}", get(get_prediction))
            .route("/v1/predictions/{id}/cancel", post(cancel))
            .route("/v1/webhooks/default/secret", get(webhook_secret));
        let app = Router::new()
            .merge(shared.faults.guard(api))
            .route("/files/{id}/{name}", get(file))
            .with_state(shared.clone());
        ReplicateEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    /// The API root, as a channel's `base_url` (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.shared.base)
    }

    /// The signing secret webhooks carry (`whsec_<base64>`).
    pub fn webhook_secret(&self) -> String {
        self.shared.secret.clone()
    }

    /// Serve `fault` instead of the next API answer (queued, in order;
    /// `/files` takes none).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Predictions created.
    pub fn submits(&self) -> u64 {
        self.shared.submits.get()
    }

    /// Prediction reads answered.
    pub fn polls(&self) -> u64 {
        self.shared.polls.get()
    }

    /// Cancel requests answered.
    pub fn cancels(&self) -> u64 {
        self.shared.cancels.get()
    }

    /// Requests the official spec refused (answered 422).
    pub fn spec_violations(&self) -> u64 {
        self.shared.spec_violations.get()
    }

    /// Answers of its own the spec refused (answered 500 instead): an
    /// emulation bug, for tests to assert there are none.
    pub fn response_violations(&self) -> u64 {
        self.shared.response_violations.get()
    }

    /// Webhook POSTs made (retries included).
    pub fn webhooks_sent(&self) -> u64 {
        self.shared.webhooks_sent.get()
    }

    /// Each created prediction's `input`, in order.
    pub fn inputs(&self) -> Vec<Value> {
        self.shared
            .inputs
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }
}

/// A Standard Webhooks signature (`v1,<base64 HMAC-SHA256>`) of `body`
/// sent as message `id` at `timestamp` (Unix s), under `secret`
/// (`whsec_<base64>`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"title": title, "detail": detail, "status": status.as_u16()});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// An injected [`Fault::Error`], titled as Replicate titles its statuses.
fn fault_problem(status: StatusCode, detail: &str) -> Response {
    problem(status, status.canonical_reason().unwrap_or("Error"), detail)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What every API request goes through after its injected fault, if any,
/// in Replicate's order: authentication, then the spec. Answers the
/// request's JSON body, if any.
async fn gate(
    s: &Shared,
    headers: &HeaderMap,
    method: Method,
    path: &str,
    body: &Bytes,
) -> Result<Option<Value>, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("Token "))
        });
    if token != Some(s.token.as_str()) {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "You did not pass a valid authentication token",
        ));
    }
    let json = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => Some(v),
            Err(e) => {
                s.spec_violations.add();
                return Err(problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid JSON",
                    &format!("the request body is not JSON: {e}"),
                ));
            }
        }
    };
    let relative = path.strip_prefix("/v1").unwrap_or(path);
    if let Err(e) = check_request(&method, relative, json.as_ref()) {
        s.spec_violations.add();
        return Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Request does not match the API",
            &e,
        ));
    }
    Ok(json)
}

/// Checks a request (path relative to `/v1`) against the official spec.
fn check_request(method: &Method, path: &str, body: Option<&Value>) -> Result<(), String> {
    openapi::replicate().check_request(method.as_str(), path, body)
}

/// A prediction as the API answers it (201 on create, else 200), checked
/// against the prediction schema every prediction answer shares.
fn answer(s: &Shared, status: StatusCode, p: &Prediction) -> Response {
    let body = view(s, p);
    checked(s, ("GET", "/predictions/{prediction_id}"), status, body)
}

/// An answer, checked against the spec's schema for what `op` answers
/// with 200; a mismatch is counted and answered 500.
fn checked(s: &Shared, op: (&str, &str), status: StatusCode, body: Value) -> Response {
    match openapi::replicate().check_response(op.0, op.1, 200, &body) {
        Ok(()) => (status, axum::Json(body)).into_response(),
        Err(e) => {
            s.response_violations.add();
            problem(StatusCode::INTERNAL_SERVER_ERROR, "Emulation bug", &e)
        }
    }
}

async fn create_by_version(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(s, headers, body, "/v1/predictions".into(), None).await
}

async fn create_by_model(
    State(s): State<Arc<Shared>>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/models/{owner}/{name}/predictions");
    create(s, headers, body, path, Some(format!("{owner}/{name}"))).await
}

/// The model a `version` field names: `owner/name`, `owner/name:VERSION`
/// or a bare version id.
fn resolve_version(v: &str) -> Option<&'static Model> {
    let (name, version) = match v.split_once(':') {
        Some((n, ver)) => (Some(n), Some(ver)),
        None if v.contains('/') => (Some(v), None),
        None => (None, Some(v)),
    };
    MODELS
        .iter()
        .find(|m| name.is_none_or(|n| n == m.name) && version.is_none_or(|ver| ver == m.version))
}

async fn create(
    s: Arc<Shared>,
    headers: HeaderMap,
    body: Bytes,
    path: String,
    by_model: Option<String>,
) -> Response {
    let b = match gate(&s, &headers, Method::POST, &path, &body).await {
        Ok(b) => b.unwrap_or_default(),
        Err(r) => return r,
    };
    let model = match &by_model {
        Some(name) => match MODELS.iter().find(|m| m.name == name) {
            Some(m) => m,
            None => {
                return problem(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "The requested resource could not be found.",
                );
            }
        },
        None => match resolve_version(b["version"].as_str().unwrap_or_default()) {
            Some(m) => m,
            None => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid version",
                    "The specified version does not exist (or perhaps you don't have permission to use it?)",
                );
            }
        },
    };
    let input = b["input"].clone();
    let (n, aspect) = match read_input(model, &input) {
        Ok(x) => x,
        Err(detail) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Input validation failed",
                &format!("- input: {detail}\n"),
            );
        }
    };
    let events = match b["webhook_events_filter"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|e| e.as_str().map(String::from))
            .collect(),
        None => ALL_EVENTS.iter().map(|e| e.to_string()).collect(),
    };
    let p = Prediction {
        id: uuid::Uuid::new_v4().simple().to_string()[..26].to_string(),
        model,
        prompt: input["prompt"].as_str().unwrap_or_default().to_string(),
        input,
        n,
        aspect,
        created: Instant::now(),
        created_ms: unix_ms(),
        canceled: None,
        webhook: b["webhook"].as_str().map(String::from),
        events,
        completed_sent: Arc::default(),
    };
    if let Ok(mut all) = s.predictions.lock() {
        all.insert(p.id.clone(), p.clone());
    }
    if let Ok(mut i) = s.inputs.lock() {
        i.push(p.input.clone());
    }
    s.submits.add();
    if p.webhook.is_some() {
        tokio::spawn(drive_webhooks(s.clone(), p.id.clone()));
    }
    answer(&s, StatusCode::CREATED, &p)
}

/// The emulated models' own input checks: how many outputs, what shape.
fn read_input(model: &Model, input: &Value) -> Result<(u32, (u32, u32)), String> {
    if input["prompt"].as_str().is_none_or(|p| p.trim().is_empty()) {
        return Err("prompt is required".into());
    }
    let n = if model.video {
        1
    } else {
        match input.get("num_outputs") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=4).contains(n))
                .ok_or("num_outputs must be an integer from 1 to 4")?,
        }
    };
    let ratio = input["aspect_ratio"].as_str().unwrap_or("1:1");
    let aspect = ASPECTS
        .iter()
        .find(|(r, _)| *r == ratio)
        .map(|(_, a)| *a)
        .ok_or_else(|| format!("aspect_ratio {ratio:?} is not one of the allowed values"))?;
    if let Some(image) = input.get("image") {
        let ok = match image.as_str() {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => true,
            Some(u) => u
                .strip_prefix("data:")
                .and_then(|d| d.split_once(";base64,"))
                .is_some_and(|(mime, b64)| {
                    mime.starts_with("image/") && STANDARD.decode(b64).is_ok()
                }),
            None => false,
        };
        if !ok {
            return Err("image must be an HTTP URL or a base64 data URL of an image".into());
        }
    }
    Ok((u32::try_from(n).unwrap_or(1), aspect))
}

impl Prediction {
    fn status(&self, run_for: Duration) -> &'static str {
        let age = self.created.elapsed();
        if self.canceled.is_some() {
            "canceled"
        } else if age < run_for / 4 {
            "starting"
        } else if age < run_for || self.prompt.contains("NEVER") {
            "processing"
        } else if self.prompt.contains("FAIL") {
            "failed"
        } else {
            "succeeded"
        }
    }

    fn output_urls(&self, base: &str) -> Vec<String> {
        let ext = if self.model.video { "mp4" } else { "png" };
        (0..self.n)
            .map(|i| format!("{base}/files/{}/{i}.{ext}", self.id))
            .collect()
    }
}

fn view(s: &Shared, p: &Prediction) -> Value {
    let status = p.status(s.run_for);
    let ms = |d: Duration| p.created_ms + i64::try_from(d.as_millis()).unwrap_or(0);
    let start_at = s.run_for / 4;
    let age = p.created.elapsed();
    let terminal = matches!(status, "succeeded" | "failed" | "canceled");
    // Cog models print tqdm bars; the adapter reads progress from them.
    let pct = if terminal {
        100
    } else {
        let span = (s.run_for - start_at).as_millis().max(1);
        (age.saturating_sub(start_at).as_millis() * 100 / span).min(99)
    };
    let logs = match status {
        "starting" => String::new(),
        "failed" => {
            "Traceback (most recent call last):\nRuntimeError: emulated model failure\n".into()
        }
        _ => format!(
            "Generating {} output(s)\n{pct:>3}%|{}|\n",
            p.n,
            "#".repeat(pct as usize / 10)
        ),
    };
    let output = match status {
        "succeeded" if p.model.video => json!(p.output_urls(&s.base)[0]),
        "succeeded" => json!(p.output_urls(&s.base)),
        _ => Value::Null,
    };
    let error = if status == "failed" {
        json!("emulated model failure (the prompt asked to FAIL)")
    } else {
        Value::Null
    };
    let get = format!("{}/v1/predictions/{}", s.base, p.id);
    let mut v = json!({
        "id": p.id,
        "model": p.model.name,
        "version": p.model.version,
        "input": p.input,
        "logs": logs,
        "output": output,
        "data_removed": false,
        "error": error,
        "status": status,
        "source": "api",
        "created_at": rfc3339_ms(p.created_ms),
        "urls": {
            "web": format!("{}/p/{}", s.base, p.id),
            "cancel": format!("{get}/cancel"),
            "get": get,
        },
    });
    if age >= start_at || terminal {
        v["started_at"] = rfc3339_ms(ms(start_at.min(p.canceled.unwrap_or(start_at)))).into();
    }
    if terminal {
        let end = p.canceled.unwrap_or(s.run_for);
        v["completed_at"] = rfc3339_ms(ms(end)).into();
        v["metrics"] = json!({
            "predict_time": end.saturating_sub(start_at).as_secs_f64(),
            "total_time": end.as_secs_f64(),
        });
    }
    v
}

fn find(s: &Shared, id: &str) -> Option<Prediction> {
    s.predictions.lock().ok()?.get(id).cloned()
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Not found",
        "The requested resource could not be found.",
    )
}

async fn get_prediction(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/predictions/{id}");
    if let Err(r) = gate(&s, &headers, Method::GET, &path, &body).await {
        return r;
    }
    let Some(p) = find(&s, &id) else {
        return not_found();
    };
    s.polls.add();
    answer(&s, StatusCode::OK, &p)
}

async fn cancel(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/predictions/{id}/cancel");
    if let Err(r) = gate(&s, &headers, Method::POST, &path, &body).await {
        return r;
    }
    let updated = s.predictions.lock().ok().and_then(|mut all| {
        let p = all.get_mut(&id)?;
        // A finished prediction stays as it ended.
        if matches!(p.status(s.run_for), "starting" | "processing") {
            p.canceled = Some(p.created.elapsed());
        }
        Some(p.clone())
    });
    let Some(p) = updated else {
        return not_found();
    };
    s.cancels.add();
    if p.canceled.is_some() {
        tokio::spawn(complete(s.clone(), id));
    }
    answer(&s, StatusCode::OK, &p)
}

async fn webhook_secret(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/v1/webhooks/default/secret";
    if let Err(r) = gate(&s, &headers, Method::GET, path, &body).await {
        return r;
    }
    let body = json!({ "key": s.secret });
    checked(
        &s,
        ("GET", "/webhooks/default/secret"),
        StatusCode::OK,
        body,
    )
}

/// An output: a PNG at the prediction's aspect ratio (256 px on the long
/// side) or a one-second MP4 (64 px on the long side), tinted with the
/// colour [`color_for`] gives the prompt, so tests can tell tasks apart.
async fn file(State(s): State<Arc<Shared>>, Path((id, name)): Path<(String, String)>) -> Response {
    let Some(p) = find(&s, &id).filter(|p| p.status(s.run_for) == "succeeded") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let urls = p.output_urls("");
    let Some(index) = urls
        .iter()
        .position(|u| u.rsplit('/').next() == Some(name.as_str()))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let index = u32::try_from(index).unwrap_or(0);
    let color = color_for(&p.prompt, index);
    let seed = u64::from_le_bytes([color[0], color[1], color[2], 0, 0, 0, 0, 0]);
    let (w, h) = p.aspect;
    let rendered = if p.model.video {
        // Sides in multiples of 16, as H.264 macroblocks want.
        let side = |a: u32, b: u32| (64 * a / a.max(b)).div_ceil(16).max(1) * 16;
        gengate_media::render_video(&VideoSpec {
            width: side(w, h),
            height: side(h, w),
            seed,
            frames: 6,
            fps: 6,
            base_color: Some(color),
            looped: false,
        })
        .map(|v| ("video/mp4", v.mp4))
    } else {
        let side = |a: u32, b: u32| (256 * a / a.max(b)).max(1);
        gengate_media::render_image(&ImageSpec {
            width: side(w, h),
            height: side(h, w),
            seed,
            format: ImageFormat::Png,
            tint: Some((color, 0.6)),
        })
        .map(|png| ("image/png", png))
    };
    match rendered {
        Ok((mime, bytes)) => ([(header::CONTENT_TYPE, mime)], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Sends a prediction's webhooks as it advances, for the events it asked.
async fn drive_webhooks(s: Arc<Shared>, id: String) {
    let Some(p) = find(&s, &id) else { return };
    let wants = |e: &str| p.events.iter().any(|x| x == e);
    if wants("start") {
        deliver(&s, &id).await;
    }
    let start_at = s.run_for / 4;
    tokio::time::sleep(start_at).await;
    let live = |s: &Shared| find(s, &id).is_some_and(|p| p.canceled.is_none());
    if wants("logs") && live(&s) {
        deliver(&s, &id).await;
    }
    tokio::time::sleep(s.run_for - start_at).await;
    if p.prompt.contains("NEVER") {
        return;
    }
    if wants("output") && live(&s) && !p.prompt.contains("FAIL") {
        deliver(&s, &id).await;
    }
    complete(s, id).await;
}

/// The `completed` webhook, once per prediction whichever way it ended.
async fn complete(s: Arc<Shared>, id: String) {
    let Some(p) = find(&s, &id) else { return };
    if p.completed_sent.swap(true, Ordering::SeqCst) {
        return;
    }
    if p.events.iter().any(|e| e == "completed") {
        deliver(&s, &id).await;
    }
}

/// POSTs the prediction as it stands to its webhook (127.0.0.1 only, as
/// `call_back` enforces), signed, retrying a couple of times on failure as
/// Replicate does.
async fn deliver(s: &Shared, id: &str) {
    let Some(p) = find(s, id) else { return };
    let Some(url) = &p.webhook else { return };
    let body = view(s, &p).to_string();
    let msg = format!("msg_{}", uuid::Uuid::new_v4().simple());
    for attempt in 0..3 {
        let ts = unix_ms() / 1000;
        let signature = sign(&s.secret, &msg, ts, body.as_bytes());
        let headers = [
            ("webhook-id", msg.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ];
        s.webhooks_sent.add();
        match call_back::post_json(url, &headers, body.clone().into_bytes()).await {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => tracing::debug!(status, attempt, "webhook refused"),
            Err(e) => tracing::debug!(error = %e, attempt, "webhook not delivered"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_resolve_every_way_the_api_allows() {
        assert_eq!(
            resolve_version(IMAGE_MODEL).map(|m| m.name),
            Some(IMAGE_MODEL)
        );
        let pinned = format!("{VIDEO_MODEL}:{VIDEO_VERSION}");
        assert_eq!(resolve_version(&pinned).map(|m| m.name), Some(VIDEO_MODEL));
        assert_eq!(
            resolve_version(VIDEO_VERSION).map(|m| m.name),
            Some(VIDEO_MODEL)
        );
        let crossed = format!("{IMAGE_MODEL}:{VIDEO_VERSION}");
        assert!(resolve_version(&crossed).is_none());
        assert!(resolve_version("someone/else").is_none());
    }

    #[test]
    fn predictions_match_the_spec_in_every_state() {
        let s = Shared::new("t", Duration::ZERO, "http://127.0.0.1:1".into());
        for (prompt, canceled, want) in [
            ("a cat", None, "succeeded"),
            ("FAIL", None, "failed"),
            ("NEVER", None, "processing"),
            ("a dog", Some(Duration::ZERO), "canceled"),
        ] {
            let p = Prediction {
                id: "abc".into(),
                model: &MODELS[0],
                input: json!({"prompt": prompt}),
                prompt: prompt.into(),
                n: 2,
                aspect: (1, 1),
                created: Instant::now(),
                created_ms: 0,
                canceled,
                webhook: None,
                events: Vec::new(),
                completed_sent: Arc::default(),
            };
            assert_eq!(view(&s, &p)["status"], want);
            assert_eq!(
                answer(&s, StatusCode::OK, &p).status(),
                StatusCode::OK,
                "{want}"
            );
        }
    }
}
