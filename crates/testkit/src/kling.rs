//! An emulated Kling API on loopback, for the `kling` adapter's tests: the
//! `{code, message, request_id, data}` envelope, bearer API keys or HS256
//! JWTs (iss, exp, nbf) checked as Kling does, tasks that advance from
//! `submitted` through `processing` to `succeed` over time, real PNG results
//! served from its own `/files`, and faults injected on request.
//!
//! Prompts steer single tasks: one containing `FAIL` ends `failed`, one
//! containing `NEVER` stays `processing`. A task created with a
//! `callback_url` is reported there as Kling does: the task, once it starts
//! processing and once it ends.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// How the emulated account checks callers.
#[derive(Clone)]
pub enum KlingAccount {
    ApiKey(String),
    Keys {
        access_key: String,
        secret_key: String,
    },
}

/// A fault served instead of the next request's answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error envelope with this HTTP status and Kling code; `retry_after`
    /// in seconds is sent as the header.
    Error {
        status: u16,
        code: u32,
        retry_after: Option<u64>,
    },
    /// HTTP 200 with a body that is not JSON.
    Malformed,
    /// Wait this long before answering normally.
    Delay(Duration),
}

struct EmuTask {
    id: String,
    external: Option<String>,
    callback_url: Option<String>,
    endpoint: &'static str,
    prompt: String,
    n: u32,
    aspect: (u32, u32),
    created: Instant,
    created_ms: i64,
    /// The create request as sent.
    body: Value,
}

struct Shared {
    account: KlingAccount,
    run_for: Duration,
    tasks: Mutex<HashMap<String, Arc<EmuTask>>>,
    faults: Mutex<VecDeque<Fault>>,
    base: String,
    submits: AtomicU64,
    polls: AtomicU64,
    /// When each accepted submit arrived.
    submitted_at: Mutex<Vec<Instant>>,
    /// The most tasks unfinished at once, counted at each submit.
    max_running: AtomicU64,
    callbacks: AtomicU64,
    /// Per external_task_id: when its final callback was about to be sent.
    final_callback_sent: Mutex<HashMap<String, Instant>>,
    /// Per task: when it was last submitted or polled while unfinished,
    /// and the longest wait between two of those.
    poll_gaps: Mutex<HashMap<String, (Option<Instant>, Duration)>>,
    /// Every API request takes this long to answer.
    latency: Mutex<Duration>,
    /// A create answers only this long after making the task (whose
    /// callbacks are already under way).
    create_answer_delay: Mutex<Duration>,
    /// API requests being answered now, and the most at once.
    active: AtomicU64,
    max_active: AtomicU64,
    /// Share of requests answered with a random fault (when none is queued),
    /// in millionths; and how many were.
    fault_ppm: AtomicU64,
    random_faults: AtomicU64,
    /// Down: every request answered 503, and counted.
    down: AtomicBool,
    refused_while_down: AtomicU64,
}

pub struct KlingEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KlingEmu {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Models the emulation knows (a request naming another is refused, 1201).
pub const MODELS: &[&str] = &["kling-v1", "kling-v1-5", "kling-v2", "kling-v2-1"];

impl KlingEmu {
    /// Tasks take `run_for` from submit to `succeed`.
    pub async fn start(account: KlingAccount, run_for: Duration) -> KlingEmu {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            account,
            run_for,
            tasks: Mutex::default(),
            faults: Mutex::default(),
            base: format!("http://{addr}"),
            submits: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            submitted_at: Mutex::default(),
            max_running: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            final_callback_sent: Mutex::default(),
            poll_gaps: Mutex::default(),
            latency: Mutex::default(),
            create_answer_delay: Mutex::default(),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            fault_ppm: AtomicU64::new(0),
            random_faults: AtomicU64::new(0),
            down: AtomicBool::new(false),
            refused_while_down: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/images/generations", post(create_image))
            .route("/v1/videos/text2video", post(create_text2video))
            .route("/v1/videos/image2video", post(create_image2video))
            .route("/v1/images/generations/{id}", get(get_task))
            .route("/v1/videos/text2video/{id}", get(get_task))
            .route("/v1/videos/image2video/{id}", get(get_task))
            .route("/files/{id}/{index}", get(file))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KlingEmu { addr, shared, task }
    }

    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    /// Serve `fault` instead of the next answer (queued, in order).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.push_back(fault);
        }
    }

    /// Answer this share of requests (0 to 1) with a random fault: a 500,
    /// a 429 with `Retry-After`, a body that is not JSON, or a 3 s stall.
    pub fn set_fault_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1e6) as u64;
        self.shared.fault_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Down (every request answered 503) or up again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests answered 503 because the emulation was down.
    pub fn refused_while_down(&self) -> u64 {
        self.shared.refused_while_down.load(Ordering::SeqCst)
    }

    /// Random faults served so far.
    pub fn random_faults(&self) -> u64 {
        self.shared.random_faults.load(Ordering::SeqCst)
    }

    /// Tasks created (accepted submits).
    pub fn submits(&self) -> u64 {
        self.shared.submits.load(Ordering::SeqCst)
    }

    /// When each accepted submit arrived, in order.
    pub fn submit_times(&self) -> Vec<Instant> {
        self.shared
            .submitted_at
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// The most tasks this upstream was running at once.
    pub fn max_running(&self) -> u64 {
        self.shared.max_running.load(Ordering::SeqCst)
    }

    /// The longest wait any polled task had between its submit or a poll
    /// and the next poll, up to the poll that saw it finished.
    pub fn longest_poll_gap(&self) -> Duration {
        self.shared
            .poll_gaps
            .lock()
            .map(|g| {
                g.values()
                    .map(|(_, longest)| *longest)
                    .max()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Answer each create `delay` after making its task, so its callbacks
    /// can arrive before the client has recorded the create.
    pub fn delay_create_answers(&self, delay: Duration) {
        if let Ok(mut d) = self.shared.create_answer_delay.lock() {
            *d = delay;
        }
    }

    /// Make every API request take `latency` to answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.shared.latency.lock() {
            *l = latency;
        }
    }

    /// The most API requests answered at once while a latency was set.
    pub fn max_concurrent_requests(&self) -> u64 {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    /// Callbacks delivered (answered 2xx).
    pub fn callbacks(&self) -> u64 {
        self.shared.callbacks.load(Ordering::SeqCst)
    }

    /// Per external_task_id, the moment just before the task's final
    /// callback was posted: where latency added downstream starts.
    pub fn final_callback_sent(&self) -> HashMap<String, Instant> {
        self.shared
            .final_callback_sent
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// The callback URL the task with `external_task_id` was created with.
    pub fn callback_url(&self, external_task_id: &str) -> Option<String> {
        let tasks = self.shared.tasks.lock().ok()?;
        tasks
            .values()
            .find(|t| t.external.as_deref() == Some(external_task_id))
            .and_then(|t| t.callback_url.clone())
    }

    /// The task as its query answers it (what a callback carries).
    pub fn task_view(&self, external_task_id: &str) -> Option<Value> {
        let tasks = self.shared.tasks.lock().ok()?;
        let t = tasks
            .values()
            .find(|t| t.external.as_deref() == Some(external_task_id))?;
        Some(view(&self.shared, t))
    }

    /// The create request of the task with `external_task_id`, as sent.
    pub fn request(&self, external_task_id: &str) -> Option<Value> {
        let tasks = self.shared.tasks.lock().ok()?;
        tasks
            .values()
            .find(|t| t.external.as_deref() == Some(external_task_id))
            .map(|t| t.body.clone())
    }

    /// Task queries answered.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::SeqCst)
    }

    /// The tasks created for each external_task_id, to prove none was made twice.
    pub fn tasks_by_external_id(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        if let Ok(t) = self.shared.tasks.lock() {
            for task in t.values() {
                if let Some(e) = &task.external {
                    *out.entry(e.clone()).or_default() += 1;
                }
            }
        }
        out
    }
}

fn envelope(status: StatusCode, code: u32, message: &str, data: Value) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "request_id": uuid::Uuid::new_v4().to_string(),
        "data": data,
    });
    (status, axum::Json(body)).into_response()
}

fn refuse(status: StatusCode, code: u32, message: &str) -> Response {
    envelope(status, code, message, Value::Null)
}

/// The next injected fault, if any, as the response to send instead.
async fn fault(s: &Shared) -> Option<Response> {
    let latency = s.latency.lock().map(|l| *l).unwrap_or_default();
    if !latency.is_zero() {
        let now = s.active.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_active.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(latency).await;
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
    if s.down.load(Ordering::SeqCst) {
        s.refused_while_down.fetch_add(1, Ordering::SeqCst);
        return Some(refuse(StatusCode::SERVICE_UNAVAILABLE, 5000, "down"));
    }
    let queued = s.faults.lock().ok()?.pop_front();
    let next = match queued {
        Some(f) => f,
        None => random_fault(s)?,
    };
    match next {
        Fault::Error {
            status,
            code,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = refuse(status, code, "injected fault");
            if let Some(secs) = retry_after
                && let Ok(v) = secs.to_string().parse()
            {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(r)
        }
        Fault::Malformed => Some((StatusCode::OK, "<html>not json</html>").into_response()),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            None
        }
    }
}

/// A fault for this request, drawn at the configured rate.
fn random_fault(s: &Shared) -> Option<Fault> {
    let ppm = s.fault_ppm.load(Ordering::Relaxed);
    if ppm == 0 || rand::random_range(0..1_000_000) >= ppm {
        return None;
    }
    s.random_faults.fetch_add(1, Ordering::Relaxed);
    Some(match rand::random_range(0..4) {
        0 => Fault::Error {
            status: 500,
            code: 5000,
            retry_after: None,
        },
        1 => Fault::Error {
            status: 429,
            code: 1302,
            retry_after: Some(1),
        },
        2 => Fault::Malformed,
        _ => Fault::Delay(Duration::from_secs(3)),
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why a caller was refused: HTTP status, Kling code, message.
type Refusal = (StatusCode, u32, &'static str);

/// Kling's checks: 1001 no header, 1000 wrong key or signature, 1003 not
/// yet valid, 1004 expired.
fn authorize(s: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err((StatusCode::UNAUTHORIZED, 1001, "Authorization is empty"));
    };
    let bad = || (StatusCode::UNAUTHORIZED, 1000, "Authorization is not valid");
    match &s.account {
        KlingAccount::ApiKey(k) if token == k => Ok(()),
        KlingAccount::ApiKey(_) => Err(bad()),
        KlingAccount::Keys {
            access_key,
            secret_key,
        } => {
            let mut parts = token.split('.');
            let (Some(h), Some(c), Some(sig), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let header: Value = URL_SAFE_NO_PAD
                .decode(h)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(bad)?;
            if header["alg"] != "HS256" {
                return Err(bad());
            }
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).map_err(|_| bad())?;
            mac.update(format!("{h}.{c}").as_bytes());
            let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad())?;
            mac.verify_slice(&sig).map_err(|_| bad())?;
            let claims: Value = URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(bad)?;
            if claims["iss"] != access_key.as_str() {
                return Err(bad());
            }
            let now = unix_now();
            if claims["nbf"].as_i64().is_none_or(|nbf| nbf > now) {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    1003,
                    "Authorization is not yet valid",
                ));
            }
            if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
                return Err((StatusCode::UNAUTHORIZED, 1004, "Authorization has expired"));
            }
            Ok(())
        }
    }
}

async fn create_image(s: State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    create(s, h, b, "images/generations").await
}

async fn create_text2video(s: State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    create(s, h, b, "videos/text2video").await
}

async fn create_image2video(s: State<Arc<Shared>>, h: HeaderMap, b: Bytes) -> Response {
    create(s, h, b, "videos/image2video").await
}

async fn create(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
    endpoint: &'static str,
) -> Response {
    if let Some(r) = fault(&s).await {
        return r;
    }
    let answer = make(&s, &headers, &body, endpoint);
    let delay = s.create_answer_delay.lock().map(|d| *d).unwrap_or_default();
    tokio::time::sleep(delay).await;
    answer
}

/// A create's work and answer, made at once.
fn make(s: &Arc<Shared>, headers: &HeaderMap, body: &Bytes, endpoint: &'static str) -> Response {
    if let Err((status, code, message)) = authorize(s, headers) {
        return refuse(status, code, message);
    }
    let invalid = |m: &str| refuse(StatusCode::BAD_REQUEST, 1201, m);
    let Ok(b) = serde_json::from_slice::<Value>(body) else {
        return refuse(StatusCode::BAD_REQUEST, 1200, "request body is not JSON");
    };
    let model = b["model_name"].as_str().unwrap_or("kling-v1");
    if !MODELS.contains(&model) {
        return invalid("model_name is not supported");
    }
    let prompt = b["prompt"].as_str().unwrap_or_default();
    if prompt.is_empty() || prompt.chars().count() > 2500 {
        return invalid("prompt is required, at most 2500 characters");
    }
    let n = b["n"].as_u64().unwrap_or(1);
    if !(1..=9).contains(&n) {
        return invalid("n must be between 1 and 9");
    }
    let aspect = match b["aspect_ratio"].as_str().unwrap_or("16:9") {
        "16:9" => (16, 9),
        "9:16" => (9, 16),
        "1:1" => (1, 1),
        "4:3" => (4, 3),
        "3:4" => (3, 4),
        "3:2" => (3, 2),
        "2:3" => (2, 3),
        _ => return invalid("aspect_ratio is not supported"),
    };
    if endpoint == "videos/image2video" && b["image"].as_str().is_none_or(str::is_empty) {
        return invalid("image is required");
    }
    if endpoint.starts_with("videos/") {
        // Kling's video fields, as its API documents them.
        if !matches!(b["duration"].as_str(), None | Some("5" | "10")) {
            return invalid("duration must be \"5\" or \"10\"");
        }
        if !matches!(b["mode"].as_str(), None | Some("std" | "pro")) {
            return invalid("mode must be std or pro");
        }
        if !b["cfg_scale"].is_null()
            && !b["cfg_scale"]
                .as_f64()
                .is_some_and(|c| (0.0..=1.0).contains(&c))
        {
            return invalid("cfg_scale must be 0 to 1");
        }
        let camera = &b["camera_control"];
        if !camera.is_null()
            && !matches!(
                camera["type"].as_str(),
                Some(
                    "simple"
                        | "down_back"
                        | "forward_up"
                        | "right_turn_forward"
                        | "left_turn_forward"
                )
            )
        {
            return invalid("camera_control.type is not supported");
        }
    }
    let external = b["external_task_id"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(String::from);
    let Ok(mut tasks) = s.tasks.lock() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, 5000, "internal error");
    };
    if let Some(e) = &external
        && tasks.values().any(|t| t.external.as_ref() == Some(e))
    {
        return invalid("external_task_id already exists");
    }
    let task = Arc::new(EmuTask {
        id: format!("kt_{}", uuid::Uuid::new_v4().simple()),
        external,
        callback_url: b["callback_url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from),
        endpoint,
        prompt: prompt.to_string(),
        n: u32::try_from(n).unwrap_or(1),
        aspect,
        created: Instant::now(),
        created_ms: unix_now() * 1000,
        body: b.clone(),
    });
    tasks.insert(task.id.clone(), task.clone());
    let running = tasks
        .values()
        .filter(|t| t.created.elapsed() < s.run_for)
        .count();
    drop(tasks);
    s.max_running
        .fetch_max(u64::try_from(running).unwrap_or(u64::MAX), Ordering::SeqCst);
    if let Ok(mut at) = s.submitted_at.lock() {
        at.push(Instant::now());
    }
    s.submits.fetch_add(1, Ordering::SeqCst);
    if let Some(url) = task.callback_url.clone() {
        tokio::spawn(call_back(s.clone(), task.clone(), url));
    }
    envelope(StatusCode::OK, 0, "SUCCEED", view(s, &task))
}

/// Reports the task when it starts processing and when it ends.
async fn call_back(s: Arc<Shared>, t: Arc<EmuTask>, url: String) {
    let mut moments = vec![s.run_for / 4];
    if !t.prompt.contains("NEVER") {
        moments.push(s.run_for);
    }
    for at in moments {
        tokio::time::sleep(at.saturating_sub(t.created.elapsed())).await;
        let body = serde_json::to_vec(&view(&s, &t)).unwrap_or_default();
        if at == s.run_for
            && let (Some(e), Ok(mut sent)) = (&t.external, s.final_callback_sent.lock())
        {
            sent.insert(e.clone(), Instant::now());
        }
        match crate::call_back::post_json(&url, &[], body).await {
            Ok(status) if (200..300).contains(&status) => {
                s.callbacks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(status) => tracing::warn!(status, "kling emulation: callback refused"),
            Err(e) => tracing::warn!(error = e, "kling emulation: callback failed"),
        }
    }
}

fn view(s: &Shared, t: &EmuTask) -> Value {
    let age = t.created.elapsed();
    let status = if t.prompt.contains("NEVER") || age < s.run_for {
        if age < s.run_for / 4 {
            "submitted"
        } else {
            "processing"
        }
    } else if t.prompt.contains("FAIL") {
        "failed"
    } else {
        "succeed"
    };
    let files: Vec<Value> = if status == "succeed" {
        (0..t.n)
            .map(|i| json!({"index": i, "url": format!("{}/files/{}/{i}", s.base, t.id)}))
            .collect()
    } else {
        Vec::new()
    };
    let result = if t.endpoint.starts_with("videos/") {
        json!({ "videos": files })
    } else {
        json!({ "images": files })
    };
    json!({
        "task_id": t.id,
        "task_status": status,
        "task_status_msg": if status == "failed" { "emulated failure" } else { "" },
        "task_info": { "external_task_id": t.external },
        "created_at": t.created_ms,
        "updated_at": t.created_ms,
        "task_result": result,
    })
}

async fn get_task(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = fault(&s).await {
        return r;
    }
    if let Err((status, code, message)) = authorize(&s, &headers) {
        return refuse(status, code, message);
    }
    let found = s.tasks.lock().ok().and_then(|t| {
        t.get(&id)
            .or_else(|| {
                t.values()
                    .find(|x| x.external.as_deref() == Some(id.as_str()))
            })
            .cloned()
    });
    let Some(task) = found else {
        return refuse(StatusCode::NOT_FOUND, 1203, "task not found");
    };
    s.polls.fetch_add(1, Ordering::SeqCst);
    let v = view(&s, &task);
    if let Ok(mut gaps) = s.poll_gaps.lock() {
        let (last, longest) = gaps
            .entry(task.id.clone())
            .or_insert((Some(task.created), Duration::ZERO));
        // Counted up to the poll that first sees the task finished.
        if let Some(at) = *last {
            *longest = (*longest).max(at.elapsed());
            let running = matches!(v["task_status"].as_str(), Some("submitted" | "processing"));
            *last = running.then(Instant::now);
        }
    }
    envelope(StatusCode::OK, 0, "SUCCEED", v)
}

/// A result: a real PNG at the task's aspect ratio (256 px on the long
/// side), its colour drawn from the prompt so tests can tell tasks apart;
/// for a video task, a real H.264 MP4 (160 px on the long side) as long as
/// the request's `duration`.
async fn file(State(s): State<Arc<Shared>>, Path((id, index)): Path<(String, u32)>) -> Response {
    let Some(task) = s.tasks.lock().ok().and_then(|t| t.get(&id).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if index >= task.n {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (w, h) = task.aspect;
    if task.endpoint.starts_with("videos/") {
        // H.264 wants sides in multiples of 16.
        let side = |n: u32, d: u32| ((160 * n / d + 8) / 16 * 16).max(16);
        let (width, height) = if w >= h {
            (160, side(h, w))
        } else {
            (side(w, h), 160)
        };
        let seconds: u32 = task.body["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(5);
        let color = color_for(&task.prompt, index);
        let video = gengate_media::render_video(&gengate_media::VideoSpec {
            width,
            height,
            seed: u64::from(u32::from_le_bytes([color[0], color[1], color[2], 0])),
            frames: seconds * 24,
            fps: 24,
            base_color: Some(color),
            looped: false,
        });
        return match video {
            Ok(v) => ([(header::CONTENT_TYPE, "video/mp4")], v.mp4).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    let (width, height) = if w >= h {
        (256, 256 * h / w)
    } else {
        (256 * w / h, 256)
    };
    let png = png_for(&task.prompt, index, width, height);
    ([(header::CONTENT_TYPE, "image/png")], png).into_response()
}

/// The colour the emulation paints `prompt`'s image number `index`.
pub fn color_for(prompt: &str, index: u32) -> [u8; 3] {
    let mut x: u32 = 2_166_136_261;
    for b in prompt.bytes().chain(index.to_le_bytes()) {
        x = (x ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    let [a, b, c, _] = x.to_le_bytes();
    [a, b, c]
}

fn png_for(prompt: &str, index: u32, width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(color_for(prompt, index)));
    let mut out = std::io::Cursor::new(Vec::new());
    // Writing a PNG to memory cannot fail for an RGB image.
    let _ = img.write_to(&mut out, image::ImageFormat::Png);
    out.into_inner()
}
