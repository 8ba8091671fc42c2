//! Luma's official Dream Machine API (`https://api.lumalabs.ai/dream-machine/v1`,
//! bearer API key). Videos are created at `POST /generations/video` from text,
//! from start/end frames given by URL, or by extending an earlier generation;
//! images at `POST /generations/image`. Each generation is read back at
//! `GET /generations/{id}` and deleted on cancel; Luma also POSTs the same
//! Generation object to the request's `callback_url` on each state change.
//! Errors come as `{"detail": ...}`: a message, or FastAPI's validation list.
//!
//! One task is exactly one generation: its id is the upstream ref and the id
//! a callback names. Luma makes one image per generation, so an image task
//! asking for more (`n > 1`) is refused (a permanent error naming `n`) rather
//! than split into generations that could finish apart and be paid apart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gengate_core::{ArtifactRole, ChannelSpec, ImageRole, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Upstream};
use crate::{
    CallbackNews, InputBytes, Output, OutputData, PollOutcome, Provider, ProviderError, Submission,
    Submitted,
};

pub const KIND: &str = "luma";

/// Luma's `detail` goes into user-facing reasons; beyond this it is noise.
const MAX_DETAIL_CHARS: usize = 300;

pub struct Luma {
    upstream: Upstream,
    /// The `Authorization` header's value.
    bearer: String,
}

/// A channel speaking to Luma: `base_url` (the API root, ending in
/// `/dream-machine/v1`) and `credentials.api_key` are required.
pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    Ok(Arc::new(Luma::new(
        crate::upstream_for(spec)?,
        crate::required_api_key(spec)?,
    )))
}

impl Luma {
    pub fn new(upstream: Upstream, api_key: String) -> Luma {
        Luma {
            upstream,
            bearer: format!("Bearer {api_key}"),
        }
    }

    /// One request; only transport failures are errors here, so callers
    /// can treat particular statuses (a 404 on delete) as they need.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::http::Answer, ProviderError> {
        let headers = [
            ("authorization", self.bearer.as_str()),
            ("accept", "application/json"),
        ];
        Ok(self.upstream.send(method, path, &headers, body).await?)
    }

    /// A request answered by a Generation (create and get).
    async fn generation(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Generation, ProviderError> {
        let (status, bytes, retry_after) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(classify(status, retry_after, &detail(&bytes)));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ProviderError::Retryable(format!(
                "luma answered HTTP {} with a body that is not a generation: {e}",
                status.as_u16()
            ))
        })
    }
}

#[derive(Deserialize)]
struct Generation {
    id: String,
    state: String,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    assets: Option<Assets>,
}

#[derive(Deserialize, Default)]
struct Assets {
    #[serde(default)]
    video: Option<String>,
    #[serde(default)]
    image: Option<String>,
}

/// What Luma said went wrong: `detail` as a message, or its validation list
/// (`[{loc, msg}]`) as `field: message` pairs; bounded for users' eyes.
fn detail(body: &[u8]) -> String {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = match &parsed["detail"] {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let field: Vec<String> = item["loc"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    // `body` prefixes every location and says nothing.
                    .filter(|l| l.as_str() != Some("body"))
                    .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned))
                    .collect();
                let msg = item["msg"].as_str().unwrap_or("is not valid");
                if field.is_empty() {
                    msg.to_owned()
                } else {
                    format!("{}: {msg}", field.join("."))
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no details given".into(),
    };
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    detail: &str,
) -> ProviderError {
    let what = format!("luma answered HTTP {}: {detail}", status.as_u16());
    http::status_error(status, retry_after, what)
}

/// The URL Luma fetches an input image from; Luma takes nothing else.
fn url_of(input: &InputBytes) -> Result<&str, ProviderError> {
    input.url.as_deref().ok_or_else(|| {
        let what = match input.role {
            ImageRole::Start => "start frame",
            ImageRole::End => "end frame",
            ImageRole::Reference => "reference image",
        };
        ProviderError::Refused(format!(
            "luma fetches input images by URL only: give the {what} as an http(s) URL, not an upload"
        ))
    })
}

/// The fields every generation request carries.
fn common_body(job: &Submission<'_>) -> Value {
    let r = &job.task.request;
    let mut body = json!({
        "model": job.model,
        "prompt": r.prompt,
        "aspect_ratio": r.aspect_ratio,
    });
    if let Some(url) = job.callback_url {
        body["callback_url"] = url.into();
    }
    body
}

fn video_body(job: &Submission<'_>) -> Result<Value, ProviderError> {
    let r = &job.task.request;
    let mut body = common_body(job);
    if let Some(l) = r.loop_video {
        body["loop"] = l.into();
    }
    if let Some(res) = &r.resolution {
        body["resolution"] = res.as_str().into();
    }
    // Luma makes 5 s and 9 s clips: the nearest to what was asked.
    if r.duration_secs.is_some() {
        body["duration"] = format!("{}s", r.seconds_among(5, &[5, 9])).into();
    }
    let mut keyframes = serde_json::Map::new();
    for input in &job.inputs {
        let frame = match input.role {
            // Extending: Luma continues the parent generation itself, so the
            // parent's last frame (which the engine passes along) is not sent.
            ImageRole::Start if job.parent_upstream_ref.is_some() => continue,
            ImageRole::Start => "frame0",
            ImageRole::End => "frame1",
            ImageRole::Reference => {
                return Err(ProviderError::Refused(
                    "luma's video generations take start and end frames, not a reference image"
                        .into(),
                ));
            }
        };
        keyframes.insert(
            frame.into(),
            json!({"type": "image", "url": url_of(input)?}),
        );
    }
    if let Some(parent) = job.parent_upstream_ref {
        keyframes.insert("frame0".into(), json!({"type": "generation", "id": parent}));
    }
    if !keyframes.is_empty() {
        body["keyframes"] = keyframes.into();
    }
    Ok(body)
}

fn image_body(job: &Submission<'_>) -> Result<Value, ProviderError> {
    let r = &job.task.request;
    if r.n > 1 {
        return Err(ProviderError::Refused(format!(
            "luma makes one image per generation: ask for n = 1 (this task asks for n = {})",
            r.n
        )));
    }
    let mut body = common_body(job);
    let mut refs = Vec::new();
    for input in &job.inputs {
        if input.role != ImageRole::Reference {
            return Err(ProviderError::Refused(
                "luma's image generations take reference images, not start or end frames".into(),
            ));
        }
        let mut image_ref = json!({"url": url_of(input)?});
        if let Some(weight) = r.image_fidelity {
            image_ref["weight"] = weight.into();
        }
        refs.push(image_ref);
    }
    if !refs.is_empty() {
        body["image_ref"] = refs.into();
    }
    Ok(body)
}

fn generation_path(id: &str) -> String {
    format!("/generations/{id}")
}

#[async_trait]
impl Provider for Luma {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let (path, body) = match job.task.kind {
            TaskKind::Video => ("/generations/video", video_body(&job)?),
            TaskKind::Image => ("/generations/image", image_body(&job)?),
        };
        let g = self
            .generation(reqwest::Method::POST, path, Some(&body))
            .await?;
        Ok(Submitted {
            upstream_ref: g.id,
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let g = self
            .generation(reqwest::Method::GET, &generation_path(upstream_ref), None)
            .await?;
        Ok(outcome(g))
    }

    /// Deleting stops the generation; one already gone (404) is as good.
    async fn cancel(&self, upstream_ref: &str) -> Result<(), ProviderError> {
        let (status, bytes, retry_after) = self
            .send(
                reqwest::Method::DELETE,
                &generation_path(upstream_ref),
                None,
            )
            .await?;
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(classify(status, retry_after, &detail(&bytes)))
    }

    fn calls_back(&self) -> bool {
        true
    }

    /// Luma POSTs the Generation, as `GET /generations/{id}` answers it.
    fn read_callback(
        &self,
        _headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<CallbackNews, ProviderError> {
        let g: Generation = serde_json::from_slice(body).map_err(|e| {
            ProviderError::Permanent(format!("luma's callback is not a generation: {e}"))
        })?;
        Ok(CallbackNews {
            upstream_id: g.id.clone(),
            outcome: outcome(g),
        })
    }
}

fn running() -> PollOutcome {
    PollOutcome::Running {
        progress: None,
        poll_after: None,
    }
}

/// A generation's state as the engine sees it: one video or one image.
fn outcome(g: Generation) -> PollOutcome {
    match g.state.as_str() {
        "queued" | "dreaming" => running(),
        "completed" => {
            let assets = g.assets.unwrap_or_default();
            let (role, url) = match (assets.video, assets.image) {
                (Some(v), _) => (ArtifactRole::Video, v),
                (None, Some(i)) => (ArtifactRole::Image, i),
                (None, None) => {
                    return PollOutcome::Failed(
                        "luma reported the generation completed but gave no file".into(),
                    );
                }
            };
            PollOutcome::Succeeded(vec![Output {
                role,
                index: 0,
                data: OutputData::Url(url),
            }])
        }
        "failed" => PollOutcome::Failed(match g.failure_reason.filter(|r| !r.is_empty()) {
            Some(r) => format!("luma: {r}"),
            None => "luma failed the generation without a reason".into(),
        }),
        // Unknown states are read as still running; the deadline bounds them.
        other => {
            tracing::warn!(generation = %g.id, state = other, "luma generation has an unknown state");
            running()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_reads_messages_and_validation_lists() {
        assert_eq!(
            detail(br#"{"detail":"Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(
            detail(
                br#"{"detail":[{"loc":["body","keyframes","frame0","url"],"msg":"invalid url","type":"x"},{"loc":["body"],"msg":"bad"}]}"#
            ),
            "keyframes.frame0.url: invalid url; bad"
        );
        assert_eq!(detail(b"<html>"), "no details given");
        let long = format!(r#"{{"detail":"{}"}}"#, "é".repeat(1000));
        assert_eq!(
            detail(long.as_bytes()).chars().count(),
            MAX_DETAIL_CHARS + 1
        );
    }
}
