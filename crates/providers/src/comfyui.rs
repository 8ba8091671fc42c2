//! A self-hosted ComfyUI server, through its own HTTP API: `POST /prompt`
//! queues a workflow, `GET /history/{id}` tells how it ended, `GET /view`
//! serves its files, `POST /queue` and `POST /interrupt` cancel.
//!
//! The channel's `workflow` is the path of an API-format workflow (ComfyUI's
//! "Export (API)"), read and checked when the channel starts. Placeholders
//! are whole string values: `"{{prompt}}"`, `"{{negative_prompt}}"`, and the
//! numbers `"{{seed}}"`, `"{{width}}"`, `"{{height}}"` and `"{{batch_size}}"`
//! (substituted as JSON numbers, which ComfyUI's typed inputs require).
//! `crates/testkit/fixtures/comfyui/txt2img.json` is the example to copy.
//!
//! Width and height follow the aspect ratio, about 1024 on the long side in
//! multiples of 64. The seed is the request's, or random. `n` images: a
//! template with `{{batch_size}}` runs once with a batch of `n`; one without
//! runs `n` times (seeds `seed`, `seed + 1`, ...), and the upstream ref lists
//! every run's prompt id.
//!
//! `credentials.api_key`, if set, goes as a bearer token, for servers behind
//! an authenticating proxy.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use gengate_core::request::aspect_parts;
use gengate_core::{ArtifactRole, ChannelSpec, SpecError};
use serde_json::{Value, json};

use crate::http::{Class, Upstream};
use crate::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted};

pub const KIND: &str = "comfyui";

const BATCH: &str = "{{batch_size}}";

pub struct ComfyUi {
    upstream: Upstream,
    /// The server's root as given, for `/view` URLs the engine downloads.
    base: String,
    api_key: Option<String>,
    template: Value,
    /// ComfyUI groups a client's prompts by this id (for its websocket).
    client_id: String,
}

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let path = spec.workflow.as_deref().ok_or_else(|| {
        spec.error(
            "workflow",
            "is required for comfyui (the path of an API-format workflow JSON)",
        )
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| spec.error("workflow", &format!("{path:?} cannot be read: {e}")))?;
    let template: Value = serde_json::from_str(&text)
        .map_err(|e| spec.error("workflow", &format!("{path:?} is not JSON: {e}")))?;
    let upstream = crate::upstream_for(spec)?;
    let base = spec.base_url.clone().unwrap_or_default();
    let p = ComfyUi::new(upstream, &base, spec.credentials.api_key.clone(), template)
        .map_err(|e| spec.error("workflow", &format!("{path:?} {e}")))?;
    Ok(Arc::new(p))
}

impl ComfyUi {
    /// `base` is the server's root (`http://gpu-box:8188`), the one
    /// `upstream` talks to. `Err` says what is wrong with the template.
    pub fn new(
        upstream: Upstream,
        base: &str,
        api_key: Option<String>,
        template: Value,
    ) -> Result<ComfyUi, String> {
        check_template(&template)?;
        Ok(ComfyUi {
            upstream,
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.filter(|k| !k.is_empty()),
            template,
            client_id: uuid::Uuid::new_v4().to_string(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (status, bytes, retry_after) = self.upstream.send(method, path, &headers, body).await?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        // `/queue` and `/interrupt` answer 200 with an empty body.
        if status.is_success() && bytes.is_empty() {
            return Ok(Value::Null);
        }
        if status.is_success() {
            return parsed.ok_or_else(|| {
                ProviderError::Retryable(format!(
                    "comfyui answered HTTP {status} with a body that is not JSON"
                ))
            });
        }
        let what = parsed
            .as_ref()
            .map_or_else(|| format!("HTTP {status}"), refusal);
        let class = Class::of(status);
        let what = match class {
            Class::Permanent => format!("comfyui refused the workflow: {what}"),
            _ => format!("HTTP {status}: {what}"),
        };
        Err(class.error(retry_after, what))
    }

    /// The workflow for one run, placeholders filled.
    fn fill(&self, job: &Submission<'_>, seed: u64, batch: u32) -> Value {
        let r = &job.task.request;
        let (width, height) = size_for(&r.aspect_ratio);
        let mut wf = self.template.clone();
        substitute(&mut wf, &|p| match p {
            "{{prompt}}" => Some(r.prompt.clone().into()),
            "{{negative_prompt}}" => Some(r.negative_prompt.clone().unwrap_or_default().into()),
            "{{seed}}" => Some(seed.into()),
            "{{width}}" => Some(width.into()),
            "{{height}}" => Some(height.into()),
            BATCH => Some(batch.into()),
            _ => None,
        });
        wf
    }

    /// The ids ComfyUI has queued or running.
    async fn queued(&self) -> Result<HashSet<String>, ProviderError> {
        let q = self.call(reqwest::Method::GET, "/queue", None).await?;
        Ok(["queue_running", "queue_pending"]
            .iter()
            .filter_map(|k| q[*k].as_array())
            .flatten()
            // Entries are [number, prompt_id, prompt, extra_data, outputs].
            .filter_map(|e| e[1].as_str().map(String::from))
            .collect())
    }

    async fn history(&self, id: &str) -> Result<Option<Value>, ProviderError> {
        let h = self
            .call(reqwest::Method::GET, &format!("/history/{id}"), None)
            .await?;
        Ok(h.get(id).cloned())
    }

    /// A file ComfyUI wrote, as a `/view` URL with its query encoded.
    fn view_url(&self, file: &Value) -> Option<String> {
        let mut url = reqwest::Url::parse(&format!("{}/view", self.base)).ok()?;
        url.query_pairs_mut()
            .append_pair("filename", file["filename"].as_str()?)
            .append_pair("subfolder", file["subfolder"].as_str().unwrap_or(""))
            .append_pair("type", file["type"].as_str().unwrap_or("output"));
        Some(url.into())
    }
}

/// What ComfyUI said in a 400: the error, then each node's first problem.
fn refusal(body: &Value) -> String {
    let err = &body["error"];
    let mut what = match err {
        Value::String(s) => s.clone(),
        _ => err["message"]
            .as_str()
            .unwrap_or("no reason given")
            .to_string(),
    };
    if let Some(d) = err["details"].as_str().filter(|d| !d.is_empty()) {
        what = format!("{what} ({d})");
    }
    if let Some(nodes) = body["node_errors"].as_object() {
        for (id, n) in nodes {
            let e = &n["errors"][0];
            what.push_str(&format!(
                "; node {id} ({}): {} {}",
                n["class_type"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or(""),
                e["details"].as_str().unwrap_or("")
            ));
        }
    }
    what.trim_end().to_string()
}

/// What is wrong with a workflow template, if anything.
pub fn check_template(wf: &Value) -> Result<(), String> {
    let nodes = wf
        .as_object()
        .filter(|n| !n.is_empty())
        .ok_or("is not a JSON object of nodes (export it with \"Export (API)\")")?;
    for (id, node) in nodes {
        if !node["class_type"].is_string() || !node["inputs"].is_object() {
            return Err(format!(
                "node {id:?} needs class_type and inputs (export it with \"Export (API)\")"
            ));
        }
    }
    if !wf.to_string().contains("\"{{prompt}}\"") {
        return Err("has no \"{{prompt}}\" placeholder".into());
    }
    Ok(())
}

/// Replaces every string value `fill` knows, anywhere in `v`.
fn substitute(v: &mut Value, fill: &dyn Fn(&str) -> Option<Value>) {
    match v {
        Value::String(s) => {
            if let Some(new) = fill(s) {
                *v = new;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, fill)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, fill)),
        _ => {}
    }
}

/// About 1024 on the long side, both sides multiples of 64.
pub fn size_for(aspect_ratio: &str) -> (u32, u32) {
    let (w, h) = aspect_parts(aspect_ratio).unwrap_or((1, 1));
    let short = |a: u32, b: u32| ((1024 * b / a + 32) / 64 * 64).max(64);
    if w >= h {
        (1024, short(w, h))
    } else {
        (short(h, w), 1024)
    }
}

/// Why a run failed, from its status messages, for users.
fn failure(status: &Value) -> String {
    let messages = status["messages"].as_array().map_or(&[][..], Vec::as_slice);
    for m in messages {
        let (kind, data) = (m[0].as_str().unwrap_or(""), &m[1]);
        match kind {
            "execution_error" => {
                return format!(
                    "comfyui failed in node {} ({}): {}",
                    data["node_id"].as_str().unwrap_or("?"),
                    data["node_type"].as_str().unwrap_or("?"),
                    data["exception_message"]
                        .as_str()
                        .unwrap_or("no message")
                        .trim()
                );
            }
            "execution_interrupted" => {
                return "the run was interrupted on the comfyui server".into();
            }
            _ => {}
        }
    }
    "comfyui failed the run without a reason".into()
}

#[async_trait]
impl Provider for ComfyUi {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        let n = r.n.max(1);
        let seed = r
            .seed
            .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0 >> 16);
        let batched = self.template.to_string().contains(&format!("\"{BATCH}\""));
        let runs = if batched { 1 } else { n };
        let mut ids = Vec::new();
        for i in 0..runs {
            let body = json!({
                "prompt": self.fill(&job, seed.wrapping_add(u64::from(i)), if batched { n } else { 1 }),
                "client_id": self.client_id,
            });
            match self
                .call(reqwest::Method::POST, "/prompt", Some(&body))
                .await
            {
                Ok(answer) => match answer["prompt_id"].as_str() {
                    Some(id) => ids.push(id.to_string()),
                    None => {
                        return Err(ProviderError::Retryable(format!(
                            "comfyui queued the workflow without a prompt_id: {}",
                            refusal(&answer)
                        )));
                    }
                },
                Err(e) => {
                    // Runs already queued would only burn the GPU.
                    if !ids.is_empty() {
                        let _ = self.cancel(&ids.join(",")).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(Submitted {
            upstream_ref: ids.join(","),
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let mut outputs = Vec::new();
        let mut waiting = Vec::new();
        for id in upstream_ref.split(',') {
            let Some(entry) = self.history(id).await? else {
                waiting.push(id);
                continue;
            };
            let status = &entry["status"];
            if status["status_str"] == "error" {
                return Ok(PollOutcome::Failed(failure(status)));
            }
            if status["completed"] == false {
                waiting.push(id);
                continue;
            }
            outputs.extend(self.files(&entry["outputs"]));
        }
        if !waiting.is_empty() {
            // Neither finished nor queued: ComfyUI restarted and forgot the
            // run (its history lives in memory). Unless it finished meanwhile.
            let queued = self.queued().await?;
            for id in waiting {
                if !queued.contains(id) && self.history(id).await?.is_none() {
                    return Ok(PollOutcome::Failed(
                        "the comfyui server no longer knows this run (was it restarted?); submit the task again".into(),
                    ));
                }
            }
            return Ok(PollOutcome::Running {
                progress: None,
                poll_after: None,
            });
        }
        if outputs.is_empty() {
            return Ok(PollOutcome::Failed(
                "the workflow finished without saving any file (does it end in SaveImage?)".into(),
            ));
        }
        Ok(PollOutcome::Succeeded(
            outputs
                .into_iter()
                .zip(0..)
                .map(|((role, url), index)| Output {
                    role,
                    index,
                    data: OutputData::Url(url),
                })
                .collect(),
        ))
    }

    async fn cancel(&self, upstream_ref: &str) -> Result<(), ProviderError> {
        let ids: Vec<&str> = upstream_ref.split(',').collect();
        self.call(
            reqwest::Method::POST,
            "/queue",
            Some(&json!({ "delete": ids })),
        )
        .await?;
        // Interrupt only our own run: an old server ignores the prompt_id
        // and stops whatever runs, which may be someone else's.
        let running = self.queued().await?;
        for id in ids.iter().filter(|id| running.contains(**id)) {
            self.call(
                reqwest::Method::POST,
                "/interrupt",
                Some(&json!({ "prompt_id": id })),
            )
            .await?;
        }
        Ok(())
    }
}

impl ComfyUi {
    /// The files a finished run saved, in node order: images, and videos
    /// (VideoHelperSuite's `gifs`, or any file with a video extension).
    fn files(&self, outputs: &Value) -> Vec<(ArtifactRole, String)> {
        let Some(nodes) = outputs.as_object() else {
            return Vec::new();
        };
        let mut ids: Vec<&String> = nodes.keys().collect();
        ids.sort_by_key(|id| (id.parse::<u64>().unwrap_or(u64::MAX), id.as_str()));
        let mut out = Vec::new();
        for id in ids {
            for (key, role) in [
                ("images", ArtifactRole::Image),
                ("gifs", ArtifactRole::Video),
                ("videos", ArtifactRole::Video),
            ] {
                for f in nodes[id][key].as_array().into_iter().flatten() {
                    // Previews ("temp") are not results.
                    if f["type"].as_str().unwrap_or("output") != "output" {
                        continue;
                    }
                    let name = f["filename"].as_str().unwrap_or("");
                    let video = [".mp4", ".webm", ".mov"].iter().any(|e| name.ends_with(e));
                    let role = if video { ArtifactRole::Video } else { role };
                    if let Some(url) = self.view_url(f) {
                        out.push((role, url));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_ratio_in_multiples_of_64() {
        assert_eq!(size_for("1:1"), (1024, 1024));
        assert_eq!(size_for("16:9"), (1024, 576));
        assert_eq!(size_for("9:16"), (576, 1024));
        assert_eq!(size_for("3:2"), (1024, 704));
    }

    #[test]
    fn placeholders_become_typed_values() {
        let mut wf = json!({"1": {"inputs": {"seed": "{{seed}}", "text": "a {{prompt}}", "t": "{{prompt}}"}}});
        substitute(&mut wf, &|p| (p == "{{seed}}").then(|| 7.into()));
        assert_eq!(wf["1"]["inputs"]["seed"], 7);
        // Only whole values are placeholders.
        assert_eq!(wf["1"]["inputs"]["text"], "a {{prompt}}");
    }
}
