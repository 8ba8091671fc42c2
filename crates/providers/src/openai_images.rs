//! OpenAI's image API (`POST /images/generations`) and the servers that
//! copy it (LocalAI and others). The channel's `base_url` is the API root
//! (`https://api.openai.com/v1`); `credentials.api_key` is sent as a bearer
//! token, and may be left out for self-hosted servers without auth.
//!
//! The API is synchronous: the request holds until the images exist, which
//! can take minutes. So `submit` makes the request(s) and answers with the
//! images themselves ([`Submitted::outputs`]); the engine keeps its lease
//! on the task meanwhile and completes it without a poll. Errors come back
//! classed as usual, so the engine fails over on them. Nothing is kept in
//! memory: a gengate that dies mid-request leaves the task to be retaken
//! and submitted again (the API has no idempotency key), and a poll, which
//! only happens if the results could not be stored, answers `Failed`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use gengate_core::request::aspect_parts;
use gengate_core::{ArtifactRole, ChannelSpec, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{Class, Upstream};
use crate::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted};

pub const KIND: &str = "openai-images";

/// One generation request may take this long (gpt-image-1 takes minutes).
const GENERATION_TIMEOUT: Duration = Duration::from_secs(600);
/// Answers carry the images inline as base64: ten 1536×1024 PNGs fit.
const MAX_ANSWER: usize = 64 << 20;

type Answer = Result<Vec<Output>, ProviderError>;

pub struct OpenAiImages {
    upstream: Upstream,
    api_key: Option<String>,
}

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let base = spec
        .base_url
        .as_deref()
        .ok_or_else(|| spec.error("base_url", "is required"))?;
    let p = OpenAiImages::new(base, spec.credentials.api_key.clone())
        .map_err(|e| spec.error("base_url", &e))?;
    Ok(Arc::new(p))
}

/// What one request asks for: the JSON body and how many images it makes.
#[derive(Clone)]
struct Call {
    body: Value,
    n: u32,
}

impl OpenAiImages {
    /// `base` is the API root, e.g. `https://api.openai.com/v1`.
    pub fn new(base: &str, api_key: Option<String>) -> Result<OpenAiImages, String> {
        // The request holds for minutes and the answer carries the images.
        let upstream = Upstream::with_limits(base, GENERATION_TIMEOUT, MAX_ANSWER)?;
        Ok(OpenAiImages {
            upstream,
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }
}

/// The requests a task takes: dall-e-3 makes one image per request, the
/// others at most ten (the API's bound on `n`).
fn calls(job: &Submission<'_>) -> Vec<Call> {
    let r = &job.task.request;
    let model = job.model;
    let per_call = if model == "dall-e-3" { 1 } else { 10 };
    let size = size_for(model, &r.aspect_ratio, r.resolution.as_deref());
    let mut out = Vec::new();
    let mut left = r.n.max(1);
    while left > 0 {
        let n = left.min(per_call);
        left -= n;
        let mut body = json!({
            "model": model,
            "prompt": r.prompt,
            "n": n,
            "size": size,
            "user": job.task.owner.to_string(),
        });
        for (name, value) in [("quality", &r.quality), ("style", &r.style)] {
            if let Some(v) = value {
                body[name] = v.as_str().into();
            }
        }
        // GPT image models always answer base64 and refuse the parameter.
        if !model.starts_with("gpt-image") {
            body["response_format"] = "b64_json".into();
        }
        out.push(Call { body, n });
    }
    out
}

/// The size the model accepts closest to the aspect ratio. A `resolution`
/// written `WxH` that the model accepts wins (dall-e-2's smaller squares).
/// Models unknown here get a 1024 long side, the short side a multiple of 64.
pub fn size_for(model: &str, aspect_ratio: &str, resolution: Option<&str>) -> String {
    let fixed: &[(u32, u32)] = match model {
        "dall-e-2" => &[(1024, 1024)],
        "dall-e-3" => &[(1024, 1024), (1792, 1024), (1024, 1792)],
        m if m.starts_with("gpt-image") => &[(1024, 1024), (1536, 1024), (1024, 1536)],
        _ => &[],
    };
    let explicit = resolution.and_then(|r| {
        let (w, h) = r.split_once('x')?;
        Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))
    });
    if let Some((w, h)) = explicit {
        let allowed = match model {
            "dall-e-2" => w == h && [256, 512, 1024].contains(&w),
            _ if !fixed.is_empty() => fixed.contains(&(w, h)),
            _ => w > 0 && h > 0,
        };
        if allowed {
            return format!("{w}x{h}");
        }
    }
    let (aw, ah) = aspect_parts(aspect_ratio).unwrap_or((1, 1));
    let want = (f64::from(aw) / f64::from(ah)).ln();
    let (w, h) = if fixed.is_empty() {
        let short = |a: u32, b: u32| ((1024 * b / a + 32) / 64 * 64).max(64);
        if aw >= ah {
            (1024, short(aw, ah))
        } else {
            (short(ah, aw), 1024)
        }
    } else {
        *fixed
            .iter()
            .min_by(|a, b| {
                let d = |s: &(u32, u32)| (f64::from(s.0) / f64::from(s.1)).ln() - want;
                d(a).abs().total_cmp(&d(b).abs())
            })
            .unwrap_or(&(1024, 1024))
    };
    format!("{w}x{h}")
}

#[derive(Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    data: Vec<ImageData>,
}

#[derive(Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: Option<String>,
}

/// Sends one request and reads its images, numbered from `first`.
async fn generate(upstream: &Upstream, api_key: Option<&str>, call: &Call, first: u32) -> Answer {
    let bearer = api_key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| ("authorization", b))
        .into_iter()
        .collect();
    let (status, body, retry_after) = upstream
        .send(
            reqwest::Method::POST,
            "/images/generations",
            &headers,
            Some(&call.body),
        )
        .await?;
    if !status.is_success() {
        return Err(classify(status, retry_after, &body));
    }
    let parsed: ImagesResponse = serde_json::from_slice(&body).map_err(|e| {
        ProviderError::Retryable(format!("the upstream's answer is not an image list: {e}"))
    })?;
    if parsed.data.is_empty() {
        return Err(ProviderError::Retryable(
            "the upstream answered without images".into(),
        ));
    }
    parsed
        .data
        .into_iter()
        .zip(first..)
        .map(|(d, index)| {
            let data = match (d.b64_json, d.url) {
                (Some(b), _) => {
                    let bytes = STANDARD.decode(b.trim()).map_err(|e| {
                        ProviderError::Retryable(format!("an image is not valid base64: {e}"))
                    })?;
                    let extension = sniff(&bytes).ok_or_else(|| {
                        ProviderError::Retryable("an image is not PNG, JPEG or WebP".into())
                    })?;
                    OutputData::Inline {
                        bytes: Bytes::from(bytes),
                        extension,
                    }
                }
                (None, Some(u)) => OutputData::Url(u),
                (None, None) => {
                    return Err(ProviderError::Retryable(
                        "an image came without data or URL".into(),
                    ));
                }
            };
            Ok(Output {
                role: ArtifactRole::Image,
                index,
                data,
            })
        })
        .collect()
}

fn sniff(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// A failed answer by what gengate should do, with OpenAI's own message.
fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let error = serde_json::from_slice::<ErrorEnvelope>(body).ok();
    let policy = error
        .as_ref()
        .and_then(|e| e.error.code.as_deref())
        .is_some_and(|c| c == "content_policy_violation");
    let what = match error {
        Some(e) if !e.error.message.is_empty() => e.error.message,
        _ => format!("HTTP {status}"),
    };
    if policy {
        return ProviderError::Permanent(format!("refused by content policy: {what}"));
    }
    // A refusal is worded for users, in OpenAI's words alone.
    let class = Class::of(status);
    let what = match class {
        Class::Permanent => what,
        _ => format!("HTTP {status}: {what}"),
    };
    class.error(retry_after, what)
}

/// Makes every request of a task at once; the first failure is the task's.
async fn run(upstream: &Upstream, api_key: Option<&str>, calls: Vec<Call>) -> Answer {
    let mut first = 0;
    let requests = calls.iter().map(|call| {
        let start = first;
        first += call.n;
        generate(upstream, api_key, call, start)
    });
    let parts = futures::future::try_join_all(requests).await?;
    Ok(parts.into_iter().flatten().collect())
}

#[async_trait]
impl Provider for OpenAiImages {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn makes(&self, kind: TaskKind) -> bool {
        kind == TaskKind::Image
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let outputs = run(&self.upstream, self.api_key.as_deref(), calls(&job)).await?;
        Ok(Submitted {
            // The API names no generation; this one is for logs and events.
            upstream_ref: format!("oai_{}", uuid::Uuid::new_v4().simple()),
            poll_after: None,
            outputs: Some(outputs),
        })
    }

    /// Only asked when the results given at submit could not be stored:
    /// the API keeps nothing to look up.
    async fn poll(&self, _upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        Ok(PollOutcome::Failed(
            "the images were made but could not be stored; submit the task again".into(),
        ))
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // Nothing runs once submit has answered.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_model_and_aspect_ratio() {
        assert_eq!(size_for("dall-e-3", "16:9", None), "1792x1024");
        assert_eq!(size_for("dall-e-3", "9:16", None), "1024x1792");
        assert_eq!(size_for("dall-e-3", "1:1", None), "1024x1024");
        assert_eq!(size_for("gpt-image-1", "3:2", None), "1536x1024");
        assert_eq!(size_for("gpt-image-1", "4:5", None), "1024x1536");
        assert_eq!(size_for("gpt-image-1", "10:9", None), "1024x1024");
        assert_eq!(size_for("dall-e-2", "16:9", None), "1024x1024");
        assert_eq!(size_for("dall-e-2", "1:1", Some("256x256")), "256x256");
        assert_eq!(size_for("dall-e-2", "1:1", Some("300x300")), "1024x1024");
        assert_eq!(size_for("dall-e-3", "1:1", Some("256x256")), "1024x1024");
        assert_eq!(size_for("sd-local", "16:9", None), "1024x576");
        assert_eq!(size_for("sd-local", "2:3", None), "704x1024");
    }

    #[test]
    fn errors_are_classed_with_openai_s_message() {
        let body = |code: &str| {
            json!({"error": {"message": "Your request was rejected", "type": "invalid_request_error", "param": null, "code": code}})
                .to_string()
        };
        let bad = reqwest::StatusCode::BAD_REQUEST;
        assert!(matches!(
            classify(bad, None, body("content_policy_violation").as_bytes()),
            ProviderError::Permanent(m) if m.contains("content policy") && m.contains("rejected")
        ));
        assert!(matches!(
            classify(
                reqwest::StatusCode::UNAUTHORIZED,
                None,
                body("invalid_api_key").as_bytes()
            ),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_GATEWAY, None, b"<html>"),
            ProviderError::Retryable(_)
        ));
    }
}
