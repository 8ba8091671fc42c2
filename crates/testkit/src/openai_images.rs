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
//!
//! The fault machinery here ([`Fault`], the listener that can reset a
//! connection) is shared with the ComfyUI emulation.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use crate::kling::color_for;
use crate::openapi;

/// A fault served instead of the next request's answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// The upstream's error body with this HTTP status; `retry_after` in
    /// seconds is sent as the header.
    Error {
        status: u16,
        retry_after: Option<u64>,
    },
    /// HTTP 200 with a body that is not JSON.
    Malformed,
    /// Wait this long before answering normally.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
}

/// Queued faults and the switch that resets the next answer's connection.
#[derive(Default)]
pub(crate) struct Faults {
    queue: Mutex<VecDeque<Fault>>,
    reset_next: Arc<AtomicBool>,
}

impl Faults {
    pub(crate) fn push(&self, f: Fault) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(f);
        }
    }

    /// The next fault as the response to send instead, if any; `error`
    /// builds the upstream's own error body for a status.
    pub(crate) async fn next(&self, error: impl Fn(StatusCode) -> Response) -> Option<Response> {
        let next = self.queue.lock().ok()?.pop_front()?;
        match next {
            Fault::Error {
                status,
                retry_after,
            } => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut r = error(status);
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
            Fault::Reset => {
                // The connection's writer fails this answer, closing it.
                self.reset_next.store(true, Ordering::SeqCst);
                Some(StatusCode::OK.into_response())
            }
        }
    }
}

/// A listener on 127.0.0.1:0 and its address.
pub(crate) async fn bind() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `app` on `listener` with connections that [`Fault::Reset`] can
/// close before answering.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    faults: &Faults,
) -> tokio::task::JoinHandle<()> {
    let listener = ResettingListener {
        inner: listener,
        reset_next: faults.reset_next.clone(),
    };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

struct ResettingListener {
    inner: tokio::net::TcpListener,
    reset_next: Arc<AtomicBool>,
}

impl axum::serve::Listener for ResettingListener {
    type Io = ResettingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ResettingStream, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                let reset_next = self.reset_next.clone();
                return (ResettingStream { stream, reset_next }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection whose next write fails when a reset was asked for, so the
/// client sees it closed before any answer.
struct ResettingStream {
    stream: tokio::net::TcpStream,
    reset_next: Arc<AtomicBool>,
}

impl AsyncRead for ResettingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.reset_next.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

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

struct Shared {
    api_key: Option<String>,
    latency: Duration,
    base: String,
    faults: Faults,
    files: Mutex<HashMap<String, Bytes>>,
    urls_only: AtomicBool,
    requests: AtomicU64,
    answered: AtomicU64,
    violations: AtomicU64,
    last_request: Mutex<Option<Value>>,
}

pub struct OpenAiImagesEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiImagesEmu {
    fn drop(&mut self) {
        self.task.abort();
    }
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
        let (listener, addr) = bind().await;
        let shared = Arc::new(Shared {
            api_key,
            latency,
            base: format!("http://{addr}"),
            faults: Faults::default(),
            files: Mutex::default(),
            urls_only: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            last_request: Mutex::default(),
        });
        let app = Router::new()
            .route("/v1/images/generations", post(generate))
            .route("/files/{name}", get(file))
            .with_state(shared.clone());
        let task = serve(listener, app, &shared.faults);
        OpenAiImagesEmu { addr, shared, task }
    }

    /// The API root, as a channel's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.shared.base)
    }

    /// Serve `fault` instead of the next answer (queued, in order).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.push(fault);
    }

    /// Answer URLs whatever `response_format` says, as some compatible
    /// servers do.
    pub fn answer_with_urls(&self, on: bool) {
        self.shared.urls_only.store(on, Ordering::SeqCst);
    }

    /// Generation requests that passed auth (each is one billed request).
    pub fn submits(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Generation requests answered with images.
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// Requests the real API would refuse as malformed: against the spec's
    /// schema or the models' documented rules. Tests assert zero.
    pub fn spec_violations(&self) -> u64 {
        self.shared.violations.load(Ordering::SeqCst)
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

fn server_error(status: StatusCode) -> Response {
    let (kind, message) = if status == StatusCode::TOO_MANY_REQUESTS {
        (
            "requests",
            "Rate limit reached for images per minute. Please try again later.",
        )
    } else {
        (
            "server_error",
            "The server had an error while processing your request.",
        )
    };
    error(status, kind, None, None, message)
}

fn invalid(s: &Shared, param: &str, message: &str) -> Response {
    s.violations.fetch_add(1, Ordering::SeqCst);
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
    if let Some(r) = s.faults.next(server_error).await {
        return r;
    }
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    s.requests.fetch_add(1, Ordering::SeqCst);
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
    for i in 0..u32::try_from(n).unwrap_or(1) {
        let color = color_for(&prompt, i);
        let rendered = tokio::task::spawn_blocking(move || png(width, height, color)).await;
        let Ok(Ok(img)) = rendered else {
            return server_error(StatusCode::INTERNAL_SERVER_ERROR);
        };
        if urls {
            let name = format!("img-{}.png", uuid::Uuid::new_v4().simple());
            let url = format!("{}/files/{name}", s.base);
            if let Ok(mut f) = s.files.lock() {
                f.insert(name, Bytes::from(img));
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
    s.answered.fetch_add(1, Ordering::SeqCst);
    axum::Json(answer).into_response()
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
