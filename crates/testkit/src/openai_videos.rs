//! An emulated OpenAI Videos API on loopback, for the `openai-videos`
//! adapter's tests: `POST /v1/videos` (JSON), `GET /v1/videos/{id}`,
//! `GET /v1/videos/{id}/content` and `DELETE /v1/videos/{id}`, every
//! request body checked against OpenAI's official spec and every video
//! object answered checked against it too; the bearer key on every request,
//! the content included. `Idempotency-Key` is honoured: the same key names
//! the same video. Videos are real MP4s as long as `seconds` asks.
//!
//! A prompt containing `FAIL` makes a video that fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::faults::{self, Counter, Fault, Faults};
use crate::openapi;

struct Video {
    model: String,
    prompt: String,
    seconds: String,
    size: String,
    started: Instant,
    created_at: i64,
}

struct Shared {
    key: String,
    run_for: Duration,
    faults: Arc<Faults>,
    videos: Mutex<HashMap<String, Video>>,
    by_idempotency_key: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<Value>>,
    violations: Counter,
    creates: Counter,
    downloads: Counter,
}

pub struct OpenAiVideosEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, axum::Json(body)).into_response()
}

fn upstream_error(status: StatusCode, message: &str) -> Response {
    error(status, "server_error", None, message)
}

impl OpenAiVideosEmu {
    /// Callers must send `Bearer key`; each video is made in `run_for`.
    pub async fn start(key: &str, run_for: Duration) -> OpenAiVideosEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared {
            key: key.into(),
            run_for,
            faults: Faults::new(upstream_error),
            videos: Mutex::default(),
            by_idempotency_key: Mutex::default(),
            requests: Mutex::default(),
            violations: Counter::default(),
            creates: Counter::default(),
            downloads: Counter::default(),
        });
        let api = Router::new()
            .route("/v1/videos", post(create))
            .route("/v1/videos/{id}", get(retrieve).delete(delete));
        let app = Router::new()
            .merge(shared.faults.guard(api))
            .route("/v1/videos/{id}/content", get(content))
            .with_state(shared.clone());
        OpenAiVideosEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    /// The API root, as a channel's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Serve `fault` instead of the next API answer (queued, in order;
    /// content downloads take none).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Videos made (a replayed `Idempotency-Key` makes none).
    pub fn creates(&self) -> u64 {
        self.shared.creates.get()
    }

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

fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(s.key.as_str())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        )
    })
}

fn view(s: &Shared, id: &str, v: &Video) -> Value {
    let done = v.started.elapsed() >= s.run_for;
    let failed = done && v.prompt.contains("FAIL");
    let (status, progress) = match (done, failed) {
        (false, _) if v.started.elapsed() < s.run_for / 4 => ("queued", 0),
        (false, _) => ("in_progress", 50),
        (true, true) => ("failed", 100),
        (true, false) => ("completed", 100),
    };
    json!({
        "id": id, "object": "video", "model": v.model, "status": status, "progress": progress,
        "created_at": v.created_at, "completed_at": if done { Some(v.created_at + 1) } else { None },
        "expires_at": null, "prompt": v.prompt, "size": v.size, "seconds": v.seconds,
        "remixed_from_video_id": null,
        "error": if failed { json!({"code": "video_generation_failed", "message": "emulated failure"}) } else { Value::Null },
    })
}

/// A video object, held to the spec as the adapter is.
fn answer(method: &str, path: &str, body: Value) -> Response {
    match openapi::openai().check_response(method, path, 200, &body) {
        Ok(()) => axum::Json(body).into_response(),
        Err(why) => upstream_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("emulation answer off spec: {why}"),
        ),
    }
}

async fn create(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        s.violations.add();
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "We could not parse the JSON body of your request.",
        );
    };
    if let Ok(mut r) = s.requests.lock() {
        r.push(b.clone());
    }
    if let Err(why) = openapi::openai().check_request("POST", "/videos", Some(&b)) {
        s.violations.add();
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", None, &why);
    }
    let replay = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(mut videos) = s.videos.lock() else {
        return upstream_error(StatusCode::INTERNAL_SERVER_ERROR, "lock");
    };
    if let Some(id) = replay
        .as_ref()
        .and_then(|k| s.by_idempotency_key.lock().ok()?.get(k).cloned())
        && let Some(v) = videos.get(&id)
    {
        return answer("POST", "/videos", view(&s, &id, v));
    }
    let id = format!("video_{}", uuid::Uuid::new_v4().simple());
    let video = Video {
        model: b["model"].as_str().unwrap_or("sora-2").into(),
        prompt: b["prompt"].as_str().unwrap_or_default().into(),
        seconds: b["seconds"].as_str().unwrap_or("4").into(),
        size: b["size"].as_str().unwrap_or("720x1280").into(),
        started: Instant::now(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
    };
    let body = view(&s, &id, &video);
    videos.insert(id.clone(), video);
    if let (Some(k), Ok(mut keys)) = (replay, s.by_idempotency_key.lock()) {
        keys.insert(k, id);
    }
    s.creates.add();
    answer("POST", "/videos", body)
}

async fn retrieve(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let found = s
        .videos
        .lock()
        .ok()
        .and_then(|v| v.get(&id).map(|v| view(&s, &id, v)));
    match found {
        Some(body) => answer("GET", "/videos/{video_id}", body),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            "No such video.",
        ),
    }
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    match s.videos.lock().ok().and_then(|mut v| v.remove(&id)) {
        Some(_) => axum::Json(json!({"object": "video.deleted", "deleted": true, "id": id}))
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            "No such video.",
        ),
    }
}

async fn content(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let Some((seconds, portrait, prompt, done)) = s.videos.lock().ok().and_then(|v| {
        v.get(&id).map(|v| {
            let (w, h) = v.size.split_once('x').unwrap_or(("1", "1"));
            let portrait = h.parse::<u32>().unwrap_or(1) > w.parse::<u32>().unwrap_or(1);
            (
                v.seconds.parse::<u32>().unwrap_or(4),
                portrait,
                v.prompt.clone(),
                v.started.elapsed() >= s.run_for,
            )
        })
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            "No such video.",
        );
    };
    if !done {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            "Video is not ready yet.",
        );
    }
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
        _ => upstream_error(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed"),
    }
}
