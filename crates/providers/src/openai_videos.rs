//! Any upstream speaking OpenAI's Videos API (another gateway, a hosted
//! router, another gengate): `POST /videos` (JSON: `prompt`, `model`,
//! `seconds` 4, 8 or 12, `size`, the first frame as
//! `input_reference.image_url`, a data URL), `GET /videos/{id}` until
//! `completed` or `failed`, the MP4 at `GET /videos/{id}/content`; the
//! channel's `base_url` is the API root (`https://api.openai.com/v1`).
//! Bearer auth; errors in OpenAI's `{"error": {message, type, code}}`.
//!
//! Each create carries `Idempotency-Key: gengate-<task id>`: an upstream
//! that honours it (gengate does) makes a retaken task's video once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::dialect::openai_videos::size_of;
use gengate_core::{ArtifactRole, ChannelSpec, GenerationRequest, ImageRole, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Upstream};
use crate::{
    Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted, Unsupported,
};

pub const KIND: &str = "openai-videos";
/// Clip lengths the API takes, in seconds.
pub const SECONDS: &[u32] = &[4, 8, 12];

pub struct OpenAiVideos {
    upstream: Upstream,
    base: String,
    auth: String,
}

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let key = crate::required_api_key(spec)?;
    Ok(Arc::new(OpenAiVideos {
        upstream: crate::upstream_for(spec)?,
        base: spec
            .base_url
            .clone()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
        auth: format!("Bearer {key}"),
    }))
}

#[derive(Deserialize)]
struct Video {
    id: String,
    status: String,
    #[serde(default)]
    progress: Option<f64>,
    error: Option<VideoError>,
}

#[derive(Deserialize)]
struct VideoError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// OpenAI's error body, worded with the status.
fn openai_error(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no error details".into());
    let what = format!("openai-videos (HTTP {}): {message}", status.as_u16());
    http::status_error(status, retry_after, what)
}

/// A video id as a path segment: what the upstream named it, nothing else.
fn checked(id: &str) -> Result<&str, ProviderError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ProviderError::Permanent(format!(
            "not an openai-videos video id: {id:?}"
        )))
    }
}

impl OpenAiVideos {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Video, ProviderError> {
        let mut all = vec![("authorization", self.auth.as_str())];
        all.extend_from_slice(headers);
        let (status, bytes, retry_after) = self.upstream.send(method, path, &all, body).await?;
        if !status.is_success() {
            return Err(openai_error(status, retry_after, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Retryable(format!("the video object is malformed: {e}")))
    }
}

#[async_trait]
impl Provider for OpenAiVideos {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn makes(&self, kind: TaskKind) -> bool {
        kind == TaskKind::Video
    }

    /// The format takes a first frame only.
    fn refuses(&self, request: &GenerationRequest) -> Option<Unsupported> {
        crate::kling_controls(request)
            .map(Unsupported::Field)
            .or_else(|| {
                request
                    .image(ImageRole::End)
                    .map(|_| Unsupported::Image(ImageRole::End))
            })
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        let mut body = json!({
            "prompt": r.prompt,
            "model": job.model,
            "seconds": r.seconds_among(4, SECONDS).to_string(),
            "size": size_of(job.task),
        });
        if let Some(start) = job.inputs.iter().find(|i| i.role == ImageRole::Start) {
            let data = format!(
                "data:{};base64,{}",
                start.format.content_type(),
                STANDARD.encode(&start.bytes)
            );
            body["input_reference"] = json!({ "image_url": data });
        }
        let idempotency = format!("gengate-{}", job.task.id);
        let video = self
            .call(
                reqwest::Method::POST,
                "/videos",
                &[("idempotency-key", idempotency.as_str())],
                Some(&body),
            )
            .await?;
        Ok(Submitted {
            upstream_ref: checked(&video.id)?.to_string(),
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let id = checked(upstream_ref)?;
        let v = self
            .call(reqwest::Method::GET, &format!("/videos/{id}"), &[], None)
            .await?;
        Ok(match v.status.as_str() {
            "completed" => PollOutcome::Succeeded(vec![Output {
                role: ArtifactRole::Video,
                index: 0,
                data: OutputData::Keyed {
                    url: format!("{}/videos/{id}/content", self.base),
                    header: "authorization",
                    value: self.auth.clone(),
                },
            }]),
            "failed" => PollOutcome::Failed(match v.error {
                Some(e) if !e.message.is_empty() => {
                    format!("openai-videos: {} ({})", e.message, e.code)
                }
                _ => "openai-videos failed the video without a reason".into(),
            }),
            // queued, in_progress, and states the format may add later.
            _ => PollOutcome::Running {
                progress: v.progress.map(|p| p.clamp(0.0, 100.0) as u8),
                poll_after: None,
            },
        })
    }

    async fn cancel(&self, upstream_ref: &str) -> Result<(), ProviderError> {
        // The format's only way to stop a video: delete it.
        let id = checked(upstream_ref)?;
        let (status, bytes, retry_after) = self
            .upstream
            .send(
                reqwest::Method::DELETE,
                &format!("/videos/{id}"),
                &[("authorization", self.auth.as_str())],
                None,
            )
            .await?;
        if status.is_success() || status.as_u16() == 404 {
            Ok(())
        } else {
            Err(openai_error(status, retry_after, &bytes))
        }
    }
}
