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
use gengate_core::{ArtifactRole, ChannelSpec, GenerationRequest, ImageRole, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Upstream};
use crate::{
    Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted, Unsupported,
};

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
        #[serde(default)]
        details: Vec<Value>,
    }
    let Ok(e) = serde_json::from_slice::<Envelope>(body) else {
        let what = format!("veo (HTTP {}): no error details", status.as_u16());
        return http::status_error(status, retry_after, what);
    };
    let what = format!(
        "veo (HTTP {} {}): {}",
        status.as_u16(),
        e.error.status,
        e.error.message
    );
    // Google answers a wrong key with a 400: it is the channel's key, not
    // the task, that is refused.
    let bad_key = e.error.status == "UNAUTHENTICATED"
        || e.error
            .details
            .iter()
            .any(|d| d["reason"] == "API_KEY_INVALID");
    if bad_key {
        return ProviderError::Auth(what);
    }
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

/// Letters, digits, `.`, `_` and `-`: a model id or an operation id, and
/// nothing that could steer a keyed request elsewhere on the host.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The upstream model, checked before it goes into a keyed URL's path.
fn model_id(model: &str) -> Result<&str, ProviderError> {
    if plain(model) {
        Ok(model)
    } else {
        Err(ProviderError::Refused(format!(
            "{model:?} is not a Veo model id (letters, digits, '.', '_', '-')"
        )))
    }
}

/// `models/{model}/operations/{id}`, and nothing else.
fn operation_name(name: &str) -> Result<&str, ProviderError> {
    let ok = match name.split('/').collect::<Vec<_>>().as_slice() {
        ["models", model, "operations", id] => plain(model) && plain(id),
        _ => false,
    };
    if ok {
        Ok(name)
    } else {
        Err(ProviderError::Permanent(format!(
            "veo named its operation {name:?}, not models/<model>/operations/<id>"
        )))
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

    /// Veo takes a last frame only after a first one.
    fn refuses(&self, request: &GenerationRequest) -> Option<Unsupported> {
        let end_alone =
            request.image(ImageRole::End).is_some() && request.image(ImageRole::Start).is_none();
        crate::kling_controls(request)
            .map(Unsupported::Field)
            .or_else(|| end_alone.then_some(Unsupported::Image(ImageRole::End)))
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
            "resolution": if r.is_hd() { "1080p" } else { "720p" },
            // What Veo allows for each kind of input.
            "personGeneration": if start.is_some() { "allow_adult" } else { "allow_all" },
        });
        if let Some(n) = &r.negative_prompt {
            parameters["negativePrompt"] = n.clone().into();
        }
        let body = json!({ "instances": [instance], "parameters": parameters });
        let path = format!("/v1beta/models/{}:predictLongRunning", model_id(job.model)?);
        let op = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        Ok(Submitted {
            upstream_ref: operation_name(&op.name)?.to_string(),
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let name = operation_name(upstream_ref)?;
        let op = self
            .call(reqwest::Method::GET, &format!("/v1beta/{name}"), None)
            .await?;
        Ok(self.outcome(op))
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // No cancel for Veo operations: the operation runs out upstream.
        Ok(())
    }
}
