//! An emulated ComfyUI server on loopback, for the `comfyui` adapter's
//! tests: `POST /prompt` validates the workflow as ComfyUI does (nodes with
//! `class_type` and `inputs`, known node types, links to existing nodes,
//! integer inputs that are integers, an output node) and queues it; runs
//! finish after `run_for`, writing real PNGs sized from the
//! `EmptyLatentImage` node and painted [`color_for`] the positive prompt's
//! text (or a real MP4 for `VHS_VideoCombine`); `GET /history/{id}`,
//! `GET /view`, `GET|POST /queue` and `POST /interrupt` as ComfyUI serves
//! them. History lives in memory, as ComfyUI's does ([`ComfyEmu::restart`]).
//!
//! Prompt texts steer single runs: one containing `FAIL` ends in an
//! execution error, one containing `NEVER` stays running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::faults::{self, Counter, Fault, Faults};
pub use crate::kling::color_for;
use crate::openai_images::png;

/// Node types the emulated server has, with the inputs that must be integers.
const NODES: &[(&str, &[&str])] = &[
    ("CheckpointLoaderSimple", &[]),
    ("CLIPTextEncode", &[]),
    ("EmptyLatentImage", &["width", "height", "batch_size"]),
    ("KSampler", &["seed", "steps"]),
    ("VAEDecode", &[]),
    ("SaveImage", &[]),
    ("PreviewImage", &[]),
    ("VHS_VideoCombine", &["frame_rate"]),
];
const OUTPUT_NODES: &[&str] = &["SaveImage", "PreviewImage", "VHS_VideoCombine"];

struct Run {
    number: u64,
    prompt: Value,
    created: Instant,
    interrupted: bool,
    /// The outputs, written when the run is first seen finished.
    outputs: Option<Value>,
}

struct Shared {
    run_for: Duration,
    api_key: Mutex<Option<String>>,
    faults: Arc<Faults>,
    runs: Mutex<HashMap<String, Run>>,
    files: Mutex<HashMap<(String, String), Bytes>>,
    submits: Counter,
    polls: Counter,
    violations: Counter,
    interrupts: Counter,
    file_seq: Counter,
}

pub struct ComfyEmu {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _server: faults::Server,
}

impl ComfyEmu {
    /// Runs take `run_for` from queued to finished.
    pub async fn start(run_for: Duration) -> ComfyEmu {
        let (listener, addr) = faults::bind().await;
        let shared = Arc::new(Shared {
            run_for,
            api_key: Mutex::default(),
            faults: Faults::new(server_error),
            runs: Mutex::default(),
            files: Mutex::default(),
            submits: Counter::default(),
            polls: Counter::default(),
            violations: Counter::default(),
            interrupts: Counter::default(),
            file_seq: Counter::default(),
        });
        let api = Router::new()
            .route("/prompt", post(queue_prompt))
            .route("/history/{id}", get(history))
            .route("/view", get(view))
            .route("/queue", get(queue).post(edit_queue))
            .route("/interrupt", post(interrupt));
        let app = shared.faults.guard(api).with_state(shared.clone());
        ComfyEmu {
            addr,
            shared,
            _server: faults::serve(listener, app),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Refuse callers without this bearer token, as an authenticating
    /// proxy in front of ComfyUI does.
    pub fn require_api_key(&self, key: &str) {
        if let Ok(mut k) = self.shared.api_key.lock() {
            *k = Some(key.into());
        }
    }

    /// Serve `fault` instead of the next answer (queued, in order).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.inject(fault);
    }

    /// Forget every run, as a restarted ComfyUI does.
    pub fn restart(&self) {
        if let Ok(mut r) = self.shared.runs.lock() {
            r.clear();
        }
    }

    /// Workflows queued.
    pub fn submits(&self) -> u64 {
        self.shared.submits.get()
    }

    /// History requests answered.
    pub fn polls(&self) -> u64 {
        self.shared.polls.get()
    }

    /// Workflows refused as invalid. Tests assert zero.
    pub fn spec_violations(&self) -> u64 {
        self.shared.violations.get()
    }

    /// Runs interrupted through `POST /interrupt`.
    pub fn interrupts(&self) -> u64 {
        self.shared.interrupts.get()
    }

    /// The workflow queued as `prompt_id`, as received.
    pub fn prompt(&self, prompt_id: &str) -> Option<Value> {
        Some(self.shared.runs.lock().ok()?.get(prompt_id)?.prompt.clone())
    }

    /// Ids of the runs known, oldest first.
    pub fn prompt_ids(&self) -> Vec<String> {
        let Ok(runs) = self.shared.runs.lock() else {
            return Vec::new();
        };
        let mut ids: Vec<_> = runs.iter().map(|(id, r)| (r.number, id.clone())).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

fn comfy_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    details: &str,
    nodes: Value,
) -> Response {
    let body = json!({
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": nodes,
    });
    (status, axum::Json(body)).into_response()
}

/// ComfyUI's error for a failure of its own.
fn server_error(status: StatusCode, message: &str) -> Response {
    comfy_error(status, "server_error", message, "", json!({}))
}

/// The refusal for a caller without the proxy's key, if one is required.
fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let want = s.api_key.lock().ok().and_then(|k| k.clone())?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(want.as_str()))
        .then(|| (StatusCode::UNAUTHORIZED, "401 Unauthorized").into_response())
}

/// ComfyUI's validation: the 400 it answers, if any.
fn invalid(prompt: &Value) -> Option<Response> {
    let Some(nodes) = prompt.as_object() else {
        return Some(comfy_error(
            StatusCode::BAD_REQUEST,
            "invalid_prompt",
            "Invalid prompt",
            "prompt is not an object",
            json!({}),
        ));
    };
    let mut node_errors = Map::new();
    for (id, node) in nodes {
        let class = node["class_type"].as_str();
        let Some(inputs) = node["inputs"].as_object().filter(|_| class.is_some()) else {
            return Some(comfy_error(
                StatusCode::BAD_REQUEST,
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                &format!("Node ID '#{id}'"),
                json!({}),
            ));
        };
        let class = class.unwrap_or_default();
        let Some((_, ints)) = NODES.iter().find(|(c, _)| *c == class) else {
            return Some(comfy_error(
                StatusCode::BAD_REQUEST,
                "invalid_prompt",
                &format!("Cannot execute because node {class} does not exist."),
                &format!("Node ID '#{id}'"),
                json!({}),
            ));
        };
        let mut errors = Vec::new();
        for (name, v) in inputs {
            if let Some([from, _]) = v.as_array().map(Vec::as_slice)
                && from.is_string()
                && !nodes.contains_key(from.as_str().unwrap_or_default())
            {
                errors.push(json!({"type": "exception_during_validation", "message": "Exception when validating inner node", "details": format!("{name}: node {from} does not exist"), "extra_info": {}}));
            }
        }
        for name in *ints {
            if inputs
                .get(*name)
                .is_some_and(|v| !v.is_u64() && !v.is_array())
            {
                errors.push(json!({"type": "invalid_input_type", "message": "Failed to convert an input value to a INT value", "details": format!("{name}, {}", inputs[*name]), "extra_info": {"input_name": name}}));
            }
        }
        if !errors.is_empty() {
            node_errors.insert(
                id.clone(),
                json!({"errors": errors, "dependent_outputs": [], "class_type": class}),
            );
        }
    }
    if !node_errors.is_empty() {
        return Some(comfy_error(
            StatusCode::BAD_REQUEST,
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "",
            Value::Object(node_errors),
        ));
    }
    if !nodes
        .values()
        .any(|n| OUTPUT_NODES.contains(&n["class_type"].as_str().unwrap_or("")))
    {
        return Some(comfy_error(
            StatusCode::BAD_REQUEST,
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }
    None
}

async fn queue_prompt(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = b["prompt"].clone();
    if let Some(r) = invalid(&prompt) {
        s.violations.add();
        return r;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let number = s.submits.add();
    if let Ok(mut runs) = s.runs.lock() {
        runs.insert(
            id.clone(),
            Run {
                number,
                prompt,
                created: Instant::now(),
                interrupted: false,
                outputs: None,
            },
        );
    }
    axum::Json(json!({"prompt_id": id, "number": number, "node_errors": {}})).into_response()
}

/// The text of the node feeding the sampler's `positive` input (or the
/// first text encoder): the prompt the images are painted from.
fn positive_text(prompt: &Value) -> String {
    let nodes = prompt.as_object();
    let of = |class: &str| {
        nodes
            .into_iter()
            .flatten()
            .find(|(_, n)| n["class_type"] == class)
            .map(|(_, n)| n)
    };
    let linked = of("KSampler")
        .and_then(|k| k["inputs"]["positive"][0].as_str())
        .and_then(|id| prompt.get(id));
    linked
        .or_else(|| of("CLIPTextEncode"))
        .and_then(|n| n["inputs"]["text"].as_str())
        .unwrap_or_default()
        .to_string()
}

enum Stage {
    Pending,
    Running,
    Failed(Value),
    Done,
}

fn stage(s: &Shared, id: &str, run: &Run) -> Stage {
    let age = run.created.elapsed();
    let text = positive_text(&run.prompt);
    if run.interrupted {
        Stage::Failed(
            json!([["execution_interrupted", {"prompt_id": id, "node_id": "3", "node_type": "KSampler", "executed": []}]]),
        )
    } else if text.contains("NEVER") || age < s.run_for {
        if age < s.run_for / 4 {
            Stage::Pending
        } else {
            Stage::Running
        }
    } else if text.contains("FAIL") {
        Stage::Failed(json!([
            ["execution_start", {"prompt_id": id}],
            ["execution_error", {
                "prompt_id": id, "node_id": "3", "node_type": "KSampler", "executed": ["4", "5", "6", "7"],
                "exception_message": "Allocation on device would exceed allowed memory. (emulated failure)\n",
                "exception_type": "torch.OutOfMemoryError", "traceback": [], "current_inputs": {}, "current_outputs": {}
            }]
        ]))
    } else {
        Stage::Done
    }
}

/// Writes a finished run's files (once) and returns its outputs.
fn write_outputs(s: &Shared, prompt: &Value) -> Result<Value, String> {
    let nodes = prompt.as_object().ok_or("prompt is not an object")?;
    let latent = nodes
        .values()
        .find(|n| n["class_type"] == "EmptyLatentImage")
        .map(|n| &n["inputs"]);
    let dim = |k: &str, d: u64| latent.and_then(|l| l[k].as_u64()).unwrap_or(d);
    let (w, h, batch) = (dim("width", 512), dim("height", 512), dim("batch_size", 1));
    let (w, h) = (
        u32::try_from(w).map_err(|e| e.to_string())?,
        u32::try_from(h).map_err(|e| e.to_string())?,
    );
    let text = positive_text(prompt);
    let mut outputs = Map::new();
    for (id, node) in nodes {
        let class = node["class_type"].as_str().unwrap_or("");
        if !OUTPUT_NODES.contains(&class) {
            continue;
        }
        let prefix = node["inputs"]["filename_prefix"]
            .as_str()
            .unwrap_or("ComfyUI");
        let (subfolder, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let kind = if class == "PreviewImage" {
            "temp"
        } else {
            "output"
        };
        let mut files = Vec::new();
        let count = if class == "VHS_VideoCombine" {
            1
        } else {
            batch
        };
        for i in 0..u32::try_from(count).map_err(|e| e.to_string())? {
            let seq = s.file_seq.add() + 1;
            let (name, bytes) = if class == "VHS_VideoCombine" {
                let video = gengate_media::render_video(&gengate_media::VideoSpec {
                    width: w / 16 * 16,
                    height: h / 16 * 16,
                    seed: u64::from(i),
                    frames: 24,
                    fps: 24,
                    base_color: Some(color_for(&text, i)),
                    looped: false,
                })
                .map_err(|e| e.to_string())?;
                (format!("{stem}_{seq:05}.mp4"), video.mp4)
            } else {
                (
                    format!("{stem}_{seq:05}_.png"),
                    png(w, h, color_for(&text, i))?,
                )
            };
            if let Ok(mut f) = s.files.lock() {
                f.insert((subfolder.to_string(), name.clone()), Bytes::from(bytes));
            }
            let mut file = json!({"filename": name, "subfolder": subfolder, "type": kind});
            if class == "VHS_VideoCombine" {
                file["format"] = "video/h264-mp4".into();
            }
            files.push(file);
        }
        let key = if class == "VHS_VideoCombine" {
            "gifs"
        } else {
            "images"
        };
        outputs.insert(id.clone(), json!({ key: files }));
    }
    Ok(Value::Object(outputs))
}

async fn history(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    s.polls.add();
    let found = s.runs.lock().ok().and_then(|runs| {
        let run = runs.get(&id)?;
        Some((
            stage(&s, &id, run),
            run.prompt.clone(),
            run.outputs.clone(),
            run.number,
        ))
    });
    let Some((stage, prompt, outputs, number)) = found else {
        return axum::Json(json!({})).into_response();
    };
    let (status, outputs) = match stage {
        Stage::Pending | Stage::Running => return axum::Json(json!({})).into_response(),
        Stage::Failed(messages) => (
            json!({"status_str": "error", "completed": false, "messages": messages}),
            json!({}),
        ),
        Stage::Done => {
            let outputs = match outputs {
                Some(o) => o,
                None => {
                    let p = prompt.clone();
                    let shared = s.clone();
                    let Ok(Ok(o)) =
                        tokio::task::spawn_blocking(move || write_outputs(&shared, &p)).await
                    else {
                        return server_error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "writing the outputs failed",
                        );
                    };
                    if let Ok(mut runs) = s.runs.lock()
                        && let Some(r) = runs.get_mut(&id)
                    {
                        r.outputs = Some(o.clone());
                    }
                    o
                }
            };
            (
                json!({"status_str": "success", "completed": true, "messages": [["execution_start", {"prompt_id": id}], ["execution_success", {"prompt_id": id}]]}),
                outputs,
            )
        }
    };
    axum::Json(json!({ id.clone(): {
        "prompt": [number, id, prompt, {"client_id": "?"}, []],
        "outputs": outputs,
        "status": status,
        "meta": {},
    }}))
    .into_response()
}

async fn view(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let key = (
        q.get("subfolder").cloned().unwrap_or_default(),
        q.get("filename").cloned().unwrap_or_default(),
    );
    match s.files.lock().ok().and_then(|f| f.get(&key).cloned()) {
        Some(bytes) => {
            let kind = if key.1.ends_with(".mp4") {
                "video/mp4"
            } else {
                "image/png"
            };
            ([(header::CONTENT_TYPE, kind)], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn queue(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let (mut running, mut pending) = (Vec::new(), Vec::new());
    if let Ok(runs) = s.runs.lock() {
        for (id, run) in runs.iter() {
            let entry = json!([run.number, id, run.prompt, {}, []]);
            match stage(&s, id, run) {
                Stage::Pending => pending.push(entry),
                Stage::Running => running.push(entry),
                _ => {}
            }
        }
    }
    axum::Json(json!({"queue_running": running, "queue_pending": pending})).into_response()
}

/// `{"delete": [ids]}` drops queued runs (not the running one); `{"clear": true}` all queued.
async fn edit_queue(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let delete: Vec<&str> = b["delete"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let clear = b["clear"] == true;
    if let Ok(mut runs) = s.runs.lock() {
        runs.retain(|id, run| {
            let queued = matches!(stage(&s, id, run), Stage::Pending);
            !(queued && (clear || delete.contains(&id.as_str())))
        });
    }
    StatusCode::OK.into_response()
}

/// Stops the running run; with `{"prompt_id"}`, only if that one runs.
async fn interrupt(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let only = b["prompt_id"].as_str();
    if let Ok(mut runs) = s.runs.lock() {
        let running: Vec<String> = runs
            .iter()
            .filter(|(id, run)| {
                matches!(stage(&s, id, run), Stage::Running)
                    && only.is_none_or(|o| o == id.as_str())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in running {
            if let Some(r) = runs.get_mut(&id) {
                r.interrupted = true;
                s.interrupts.add();
            }
        }
    }
    StatusCode::OK.into_response()
}
