//! Google's Veo through the Gemini API (`https://generativelanguage.googleapis.com`):
//! `POST /v1beta/models/{model}:predictLongRunning` with one instance
//! (`prompt`, the first frame as `image`, the last as `lastFrame`) and
//! `parameters` (`aspectRatio` 16:9 or 9:16, `durationSeconds` 4, 6 or 8,
//! `negativePrompt`, `resolution` 720p or 1080p, `personGeneration`), then
//! `GET /v1beta/{operation name}` until `done`; the video is
//! `response.generateVideoResponse.generatedSamples[].video.uri`, fetched
//! with the key (`x-goog-api-key`, which every request carries).
//! Errors are Google's `{"error": {code, message, status}}`.
//!
//! Veo makes videos only, has no idempotency key (a task retaken after a
//! crash between submit and commit may be made twice) and no cancel the
//! adapter could rely on: a canceled task's operation runs out upstream.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::{ArtifactRole, ChannelSpec, ImageRole, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Upstream};
use crate::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted};

pub const KIND: &str = "gemini-veo";
/// The header Google's API reads the key from.
pub const KEY_HEADER: &str = "x-goog-api-key";
/// Clip lengths Veo makes, in seconds.
pub const SECONDS: &[u32] = &[4, 6, 8];

pub struct GeminiVeo {
    upstream: Upstream,
    base: String,
    key: String,
}

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let key = crate::required_api_key(spec)?;
    let base = spec.base_url.clone().unwrap_or_default();
    Ok(Arc::new(GeminiVeo {
        upstream: crate::upstream_for(spec)?,
        base: base.trim_end_matches('/').to_string(),
        key,
    }))
}

/// Google's error body, worded with its status name.
fn google_error(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        message: String,
        #[serde(default)]
        status: String,
    }
    let what = match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => format!(
            "veo (HTTP {} {}): {}",
            status.as_u16(),
            e.error.status,
            e.error.message
        ),
        Err(_) => format!("veo (HTTP {}): no error details", status.as_u16()),
    };
    http::status_error(status, retry_after, what)
}

#[derive(Deserialize)]
struct Operation {
    name: String,
    #[serde(default)]
    done: bool,
    error: Option<OperationError>,
    response: Option<OperationResponse>,
}

#[derive(Deserialize)]
struct OperationError {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationResponse {
    generate_video_response: Option<VideoResponse>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct VideoResponse {
    #[serde(default)]
    generated_samples: Vec<Sample>,
    #[serde(default)]
    rai_media_filtered_reasons: Vec<String>,
}

#[derive(Deserialize)]
struct Sample {
    video: Option<SampleVideo>,
}

#[derive(Deserialize)]
struct SampleVideo {
    uri: Option<String>,
}

impl GeminiVeo {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Operation, ProviderError> {
        let (status, bytes, retry_after) = self
            .upstream
            .send(method, path, &[(KEY_HEADER, self.key.as_str())], body)
            .await?;
        if !status.is_success() {
            return Err(google_error(status, retry_after, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Retryable(format!("veo's operation is malformed: {e}")))
    }

    /// What a finished operation made, or why it made nothing.
    fn outcome(&self, op: Operation) -> PollOutcome {
        if !op.done {
            return PollOutcome::Running {
                progress: None,
                poll_after: None,
            };
        }
        if let Some(e) = op.error {
            return PollOutcome::Failed(format!("veo: {}", e.message));
        }
        let made = op
            .response
            .and_then(|r| r.generate_video_response)
            .unwrap_or_default();
        let uris: Vec<String> = made
            .generated_samples
            .into_iter()
            .filter_map(|s| s.video.and_then(|v| v.uri))
            .collect();
        if uris.is_empty() {
            return PollOutcome::Failed(if made.rai_media_filtered_reasons.is_empty() {
                "veo finished without a video".into()
            } else {
                format!(
                    "veo filtered the video: {}",
                    made.rai_media_filtered_reasons.join("; ")
                )
            });
        }
        PollOutcome::Succeeded(
            uris.into_iter()
                .enumerate()
                .map(|(i, uri)| Output {
                    role: ArtifactRole::Video,
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    data: self.keyed(uri),
                })
                .collect(),
        )
    }

    /// A video URI as the engine fetches it: the key goes along when the
    /// URI is on the API's own origin (Google's file downloads), never to
    /// another host.
    fn keyed(&self, uri: String) -> OutputData {
        let same_origin = |a: &str, b: &str| match (url::Url::parse(a), url::Url::parse(b)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        };
        if same_origin(&uri, &self.base) {
            OutputData::Keyed {
                url: uri,
                header: KEY_HEADER,
                value: self.key.clone(),
            }
        } else {
            OutputData::Url(uri)
        }
    }
}

/// An input frame as Veo takes it.
fn frame(job: &Submission<'_>, role: ImageRole) -> Option<Value> {
    job.inputs.iter().find(|i| i.role == role).map(|i| {
        json!({"bytesBase64Encoded": STANDARD.encode(&i.bytes), "mimeType": i.format.content_type()})
    })
}

#[async_trait]
impl Provider for GeminiVeo {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn makes(&self, kind: TaskKind) -> bool {
        kind == TaskKind::Video
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        let mut instance = json!({ "prompt": r.prompt });
        let start = frame(&job, ImageRole::Start);
        if let Some(image) = &start {
            instance["image"] = image.clone();
            if let Some(last) = frame(&job, ImageRole::End) {
                instance["lastFrame"] = last;
            }
        }
        let mut parameters = json!({
            "aspectRatio": if r.portrait() { "9:16" } else { "16:9" },
            "durationSeconds": r.seconds_among(8, SECONDS),
            "resolution": match r.resolution.as_deref() {
                Some("1080p" | "4k") => "1080p",
                _ => "720p",
            },
            // What Veo allows for each kind of input.
            "personGeneration": if start.is_some() { "allow_adult" } else { "allow_all" },
        });
        if let Some(n) = &r.negative_prompt {
            parameters["negativePrompt"] = n.clone().into();
        }
        let body = json!({ "instances": [instance], "parameters": parameters });
        let path = format!("/v1beta/models/{}:predictLongRunning", job.model);
        let op = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        Ok(Submitted {
            upstream_ref: op.name,
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        if upstream_ref.is_empty() || upstream_ref.contains("..") {
            return Err(ProviderError::Permanent(format!(
                "not a veo operation: {upstream_ref:?}"
            )));
        }
        let op = self
            .call(
                reqwest::Method::GET,
                &format!("/v1beta/{upstream_ref}"),
                None,
            )
            .await?;
        Ok(self.outcome(op))
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // No cancel for Veo operations: the operation runs out upstream.
        Ok(())
    }
}
