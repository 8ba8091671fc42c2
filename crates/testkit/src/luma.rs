//! An emulated Luma Dream Machine API on loopback, for the `luma` adapter's
//! tests. It serves `/dream-machine/v1` as Luma does: bearer auth,
//! `{"detail": ...}` errors, every request checked against Luma's official
//! OpenAPI spec (refused 422 and counted when it does not conform) and every
//! Generation it sends checked too, generations that advance `queued` →
//! `dreaming` → `completed` over time, real H.264 MP4s and JPEG/PNG images
//! served from its own `/files`, the Generation POSTed to a loopback
//! `callback_url` on each change, and faults injected on request.
//!
//! Prompts steer single generations: one containing `FAIL` ends `failed`,
//! one containing `NEVER` stays `dreaming`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use gengate_media::{ImageFormat, ImageSpec, VideoSpec};
use serde_json::{Value, json};

use crate::faults::{self, Counter, Fault, Faults};
use crate::kling::color_for;
use crate::openapi;

/// Where the API lives on the emulation, as on `api.lumalabs.ai`.
const API: &str = "/dream-machine/v1";

/// The account's balance at start, in USD cents, and what each generation
/// takes from it (emulated prices: only the balance going down matters).
const START_CREDITS: u64 = 100_000;
const GENERATION_COST: u64 = 40;

struct Generation {
    id: String,
    /// `video` or `image`, Luma's `generation_type`.
    kind: &'static str,
    model: String,
    prompt: String,
    aspect: (u32, u32),
    /// The image format asked for (Luma's default is JPEG).
    png: bool,
    /// The request body as received.
    request: Value,
    callback_url: Option<String>,
    created: Instant,
    created_at: String,
}

struct Shared {
    api_key: String,
    run_for: Duration,
    /// `http://127.0.0.1:PORT`, for asset URLs.
    origin: String,
    generations: Mutex<HashMap<String, Arc<Generation>>>,
    /// Rendered results by file name, so each is encoded once.
    files: Mutex<HashMap<String, Bytes>>,
    faults: Arc<Faults>,
    submits: Counter,
    polls: Counter,
    deletes: Counter,
    callbacks: Counter,
    spec_violations: Counter,
    own_violations: Mutex<Vec<String>>,
    credits: AtomicU64,
}

pub struct LumaEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

impl LumaEmu {
    /// An account with this API key whose generations take `run_for` from
    /// submit to `completed` (a quarter of it `queued`, the rest `dreaming`).
    pub async fn start(api_key: &str, run_for: Duration) -> LumaEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared {
            api_key: api_key.into(),
            run_for,
            origin: format!("http://{addr}"),
            generations: Mutex::default(),
            files: Mutex::default(),
            faults: Faults::new(detail),
            submits: Counter::default(),
            polls: Counter::default(),
            deletes: Counter::default(),
            callbacks: Counter::default(),
            spec_violations: Counter::default(),
            own_violations: Mutex::default(),
            credits: AtomicU64::new(START_CREDITS),
        });
        let api = Router::new()
            .route("/ping", get(ping))
            .route("/credits", get(credits))
            .route("/generations/video", post(create_video))
            .route("/generations/image", post(create_image))
            .route(
                "/generations/{id}",
                get(get_generation).delete(delete_generation),
            );
        let app = Router::new()
            .nest(API, shared.faults.guard(api))
            .route("/files/{name}", get(file))
            .with_state(shared.clone());
        LumaEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    /// The API root a channel's `base_url` takes (`.../dream-machine/v1`).
    pub fn base_url(&self) -> String {
        format!("{}{API}", self.shared.origin)
    }

    /// Serve `fault` instead of the next API answer (queued, in order;
    /// `/files` takes none).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Generations created.
    pub fn submits(&self) -> u64 {
        self.shared.submits.get()
    }

    /// Generations read (`GET /generations/{id}` answered).
    pub fn polls(&self) -> u64 {
        self.shared.polls.get()
    }

    /// Generations deleted.
    pub fn deletes(&self) -> u64 {
        self.shared.deletes.get()
    }

    /// Callbacks delivered (the receiver answered).
    pub fn callbacks(&self) -> u64 {
        self.shared.callbacks.get()
    }

    /// Requests refused because Luma's spec does not allow them.
    pub fn spec_violations(&self) -> u64 {
        self.shared.spec_violations.get()
    }

    /// Where the emulation's own answers and callbacks strayed from the spec.
    pub fn own_violations(&self) -> Vec<String> {
        self.shared
            .own_violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Every generation's create body, as received (in no order).
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .generations
            .lock()
            .map(|g| g.values().map(|g| g.request.clone()).collect())
            .unwrap_or_default()
    }

    /// The body generation `id` was created with, as received.
    pub fn request_of(&self, id: &str) -> Option<Value> {
        let generations = self.shared.generations.lock().ok()?;
        generations.get(id).map(|g| g.request.clone())
    }
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "detail": message }))).into_response()
}

/// What every API request goes through after its injected fault, if any:
/// the bearer key, and the spec's check of the method, path and JSON body
/// (`path` relative to the API root). Gives the body, parsed.
async fn admit(
    s: &Shared,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: Option<&Bytes>,
) -> Result<Option<Value>, Response> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if key != Some(s.api_key.as_str()) {
        return Err(detail(
            StatusCode::UNAUTHORIZED,
            "Invalid API key is provided",
        ));
    }
    let refuse = |message: String| {
        s.spec_violations.add();
        detail(StatusCode::UNPROCESSABLE_ENTITY, &message)
    };
    let json = match body {
        Some(b) => match serde_json::from_slice::<Value>(b) {
            Ok(v) => Some(v),
            Err(e) => return Err(refuse(format!("the body is not JSON: {e}"))),
        },
        None => None,
    };
    openapi::luma()
        .check_request(method, path, json.as_ref())
        .map_err(refuse)?;
    Ok(json)
}

/// A JSON answer, checked against what the spec says `method path` answers
/// with `status`; a mismatch is recorded for tests to see.
fn checked(s: &Shared, method: &str, path: &str, status: StatusCode, body: Value) -> Response {
    check_own(s, method, path, status.as_u16(), &body);
    (status, axum::Json(body)).into_response()
}

/// Every Generation the emulation sends (creates, reads and callbacks) is
/// checked against the schema the spec gives `GET /generations/{id}`.
fn check_generation(s: &Shared, body: &Value) {
    check_own(s, "GET", "/generations/{id}", 200, body);
}

fn check_own(s: &Shared, method: &str, path: &str, status: u16, body: &Value) {
    if let Err(e) = openapi::luma().check_response(method, path, status, body)
        && let Ok(mut v) = s.own_violations.lock()
    {
        v.push(format!("{method} {path} {status}: {e}"));
    }
}

async fn ping(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, &headers, "GET", "/ping", None).await {
        return r;
    }
    checked(
        &s,
        "GET",
        "/ping",
        StatusCode::OK,
        json!({"message": "pong"}),
    )
}

async fn credits(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&s, &headers, "GET", "/credits", None).await {
        return r;
    }
    let cents = s.credits.load(Ordering::SeqCst) as f64;
    checked(
        &s,
        "GET",
        "/credits",
        StatusCode::OK,
        json!({ "credit_balance": cents }),
    )
}

async fn create_video(s: State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    create(s, h, b, "video").await
}

async fn create_image(s: State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    create(s, h, b, "image").await
}

async fn create(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    kind: &'static str,
) -> Response {
    let path = format!("/generations/{kind}");
    let b = match admit(&s, &headers, "POST", &path, Some(&body)).await {
        Ok(b) => b.unwrap_or_default(),
        Err(r) => return r,
    };
    let prompt = b["prompt"].as_str().unwrap_or_default();
    if prompt.trim().is_empty() {
        return detail(StatusCode::BAD_REQUEST, "prompt is required");
    }
    // The spec allows only ratios `aspect_parts` reads.
    let aspect = gengate_core::request::aspect_parts(b["aspect_ratio"].as_str().unwrap_or("16:9"))
        .unwrap_or((16, 9));
    let Ok(mut generations) = s.generations.lock() else {
        return detail(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
    };
    // A generation keyframe must name a finished video of this account.
    for frame in ["frame0", "frame1"] {
        let Some(id) = b["keyframes"][frame]["id"].as_str() else {
            continue;
        };
        let usable = generations
            .get(id)
            .is_some_and(|g| g.kind == "video" && state_of(&s, g) == "completed");
        if !usable {
            return detail(
                StatusCode::BAD_REQUEST,
                &format!("{frame}: generation {id} is not a completed video"),
            );
        }
    }
    let g = Arc::new(Generation {
        id: uuid::Uuid::new_v4().to_string(),
        kind,
        model: b["model"].as_str().unwrap_or_default().into(),
        prompt: prompt.into(),
        aspect,
        png: b["format"] == "png",
        callback_url: b["callback_url"].as_str().map(String::from),
        request: b,
        created: Instant::now(),
        created_at: gengate_core::time::rfc3339_ms(unix_ms()),
    });
    generations.insert(g.id.clone(), g.clone());
    drop(generations);
    s.submits.add();
    // Saturating: an emptied account stays at zero.
    let _ = s
        .credits
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
            Some(c.saturating_sub(GENERATION_COST))
        });
    call_back(s.clone(), g.clone());
    checked(&s, "POST", &path, StatusCode::CREATED, view(&s, &g))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn state_of(s: &Shared, g: &Generation) -> &'static str {
    let age = g.created.elapsed();
    if age < s.run_for / 4 {
        "queued"
    } else if g.prompt.contains("NEVER") || age < s.run_for {
        "dreaming"
    } else if g.prompt.contains("FAIL") {
        "failed"
    } else {
        "completed"
    }
}

/// The result's file name under `/files`.
fn file_name(g: &Generation) -> String {
    let ext = match (g.kind, g.png) {
        ("video", _) => "mp4",
        (_, true) => "png",
        (_, false) => "jpg",
    };
    format!("{}.{ext}", g.id)
}

/// The Generation object as Luma answers it and calls back with.
fn view(s: &Shared, g: &Generation) -> Value {
    let state = state_of(s, g);
    // Luma echoes the request with its type, which is also what tells the
    // spec's `oneOf` of request kinds apart.
    let mut request = g.request.clone();
    request["generation_type"] = g.kind.into();
    let mut v = json!({
        "id": g.id,
        "generation_type": g.kind,
        "state": state,
        "created_at": g.created_at,
        "model": g.model,
        "request": request,
    });
    match state {
        "completed" => {
            v["assets"] = json!({ g.kind: format!("{}/files/{}", s.origin, file_name(g)) });
        }
        "failed" => v["failure_reason"] = "emulated failure: the prompt asked to fail".into(),
        _ => {}
    }
    v
}

fn find(s: &Shared, id: &str) -> Option<Arc<Generation>> {
    s.generations.lock().ok()?.get(id).cloned()
}

async fn get_generation(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/generations/{id}");
    if let Err(r) = admit(&s, &headers, "GET", &path, None).await {
        return r;
    }
    let Some(g) = find(&s, &id) else {
        return detail(StatusCode::NOT_FOUND, "Generation not found");
    };
    s.polls.add();
    let body = view(&s, &g);
    check_generation(&s, &body);
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn delete_generation(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admit(&s, &headers, "DELETE", &format!("/generations/{id}"), None).await {
        return r;
    }
    let removed = s
        .generations
        .lock()
        .ok()
        .and_then(|mut g| g.remove(&id))
        .is_some();
    if !removed {
        return detail(StatusCode::NOT_FOUND, "Generation not found");
    }
    s.deletes.add();
    StatusCode::NO_CONTENT.into_response()
}

/// A completed generation's result, rendered on first fetch: a 1 s H.264
/// MP4 (160 px on the long side) opening on the prompt's colour, or an
/// image (256 px on the long side) tinted with it, so tests can tell
/// results apart. Public like a CDN's: no key needed.
async fn file(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let id = name.split('.').next().unwrap_or_default();
    let Some(g) = find(&s, id).filter(|g| file_name(g) == name && state_of(&s, g) == "completed")
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cached = s.files.lock().ok().and_then(|f| f.get(&name).cloned());
    let bytes = match cached {
        Some(b) => b,
        None => {
            let g2 = g.clone();
            match tokio::task::spawn_blocking(move || render(&g2)).await {
                Ok(Ok(b)) => {
                    if let Ok(mut f) = s.files.lock() {
                        f.insert(name.clone(), b.clone());
                    }
                    b
                }
                Ok(Err(e)) => return detail(StatusCode::INTERNAL_SERVER_ERROR, &e),
                Err(e) => return detail(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
    };
    let content_type = match (g.kind, g.png) {
        ("video", _) => "video/mp4",
        (_, true) => ImageFormat::Png.mime_type(),
        (_, false) => ImageFormat::Jpeg.mime_type(),
    };
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

fn render(g: &Generation) -> Result<Bytes, String> {
    let color = color_for(&g.prompt, 0);
    // The seed follows the colour, so one prompt always renders the same.
    let seed = u64::from(u32::from_le_bytes([color[0], color[1], color[2], 0]));
    let (w, h) = g.aspect;
    let out = if g.kind == "video" {
        // H.264 wants sides in multiples of 16.
        let side = |n: u32, d: u32| (160 * n / d + 8) / 16 * 16;
        let (width, height) = if w >= h {
            (160, side(h, w).max(16))
        } else {
            (side(w, h).max(16), 160)
        };
        gengate_media::render_video(&VideoSpec {
            width,
            height,
            seed,
            frames: 24,
            fps: 24,
            base_color: Some(color),
            looped: false,
        })
        .map(|v| v.mp4)
    } else {
        let (width, height) = if w >= h {
            (256, (256 * h / w).max(1))
        } else {
            ((256 * w / h).max(1), 256)
        };
        gengate_media::render_image(&ImageSpec {
            width,
            height,
            seed,
            format: if g.png {
                ImageFormat::Png
            } else {
                ImageFormat::Jpeg
            },
            tint: Some((color, 0.9)),
        })
    };
    out.map(Bytes::from).map_err(|e| e.to_string())
}

/// Luma POSTs the Generation to `callback_url` when it starts dreaming and
/// when it completes or fails (the shared poster calls loopback URLs only).
fn call_back(s: Arc<Shared>, g: Arc<Generation>) {
    let Some(url) = g.callback_url.clone() else {
        return;
    };
    let mut changes = vec![s.run_for / 4];
    if !g.prompt.contains("NEVER") {
        changes.push(s.run_for);
    }
    tokio::spawn(async move {
        for at in changes {
            tokio::time::sleep_until(tokio::time::Instant::from_std(g.created + at)).await;
            // A deleted generation says nothing more.
            if find(&s, &g.id).is_none() {
                return;
            }
            let body = view(&s, &g);
            check_generation(&s, &body);
            match crate::call_back::post_json(&url, &[], body.to_string().into_bytes()).await {
                Ok(status) if (200..300).contains(&status) => {
                    s.callbacks.add();
                }
                Ok(status) => tracing::warn!(status, "luma emulation: callback refused"),
                Err(e) => tracing::warn!(error = %e, "luma emulation: callback failed"),
            }
        }
    });
}
