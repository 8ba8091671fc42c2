//! Kling's official API: images (`/v1/images/generations`) and videos
//! (`/v1/videos/text2video`, `/v1/videos/image2video`). Every answer is the
//! `{code, message, request_id, data}` envelope; authentication is a bearer
//! API key, or an access key + secret key signed into a 30-minute HS256 JWT.
//! The gengate task id goes up as `external_task_id`, so a task retaken
//! after a crash finds its first submission instead of paying twice.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gengate_core::{ArtifactRole, GenerationRequest, ImageRole, TaskKind};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::http::{self, Upstream};
use crate::signing::unix_secs;
use crate::{
    CallbackNews, Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted,
};

pub const KIND: &str = "kling";

/// How the channel proves who it is.
#[derive(Clone)]
pub enum KlingAuth {
    ApiKey(String),
    /// Kling's access key (the JWT's `iss`) and secret key (its HMAC key).
    Signed {
        access_key: String,
        secret_key: String,
    },
}

pub struct Kling {
    upstream: Upstream,
    auth: KlingAuth,
}

impl Kling {
    pub fn new(upstream: Upstream, auth: KlingAuth) -> Kling {
        Kling { upstream, auth }
    }

    /// The `Authorization` header's value for a request made at `now` (Unix s).
    fn bearer(&self, now: i64) -> String {
        match &self.auth {
            KlingAuth::ApiKey(k) => format!("Bearer {k}"),
            KlingAuth::Signed {
                access_key,
                secret_key,
            } => {
                // Valid from 5 s ago (clock skew) for 30 minutes.
                let claims = json!({"iss": access_key, "exp": now + 1800, "nbf": now - 5});
                format!("Bearer {}", hs256_jwt(&claims.to_string(), secret_key))
            }
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refusal> {
        let auth = self.bearer(unix_secs());
        let (status, bytes, retry_after) = self
            .upstream
            .send(method, path, &[("authorization", auth.as_str())], body)
            .await
            .map_err(|e| Refusal::without_code(e.into()))?;
        let envelope: Envelope = match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(_) if status.is_success() => {
                return Err(Refusal::without_code(ProviderError::Retryable(format!(
                    "kling answered HTTP {status} with a body that is not its envelope"
                ))));
            }
            Err(_) => {
                return Err(Refusal::without_code(http::status_error(
                    status,
                    retry_after,
                    format!("HTTP {status}: no envelope"),
                )));
            }
        };
        if envelope.code == 0 && status.is_success() {
            return Ok(envelope.data);
        }
        Err(Refusal {
            code: Some(envelope.code),
            error: classify(envelope.code, status, retry_after, &envelope.message),
        })
    }
}

/// Why a request failed: Kling's code, when its envelope gave one, and
/// what gengate makes of the failure.
#[derive(Debug)]
struct Refusal {
    code: Option<u32>,
    error: ProviderError,
}

impl Refusal {
    fn without_code(error: ProviderError) -> Refusal {
        Refusal { code: None, error }
    }
}

impl From<Refusal> for ProviderError {
    fn from(r: Refusal) -> ProviderError {
        r.error
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Value,
}

#[derive(Deserialize)]
struct TaskData {
    task_id: String,
    task_status: String,
    #[serde(default)]
    task_status_msg: String,
    #[serde(default)]
    task_result: Option<TaskResult>,
}

#[derive(Deserialize, Default)]
struct TaskResult {
    #[serde(default)]
    images: Vec<ResultFile>,
    #[serde(default)]
    videos: Vec<ResultFile>,
}

#[derive(Deserialize)]
struct ResultFile {
    #[serde(default)]
    index: Option<u32>,
    url: String,
}

/// Invalid request parameters. Kling has no code of its own for an
/// `external_task_id` it has seen before: it refuses one with this.
const INVALID_PARAMETERS: u32 = 1201;
/// The requested resource (here: a task) does not exist.
const NOT_FOUND: u32 = 1203;

/// Kling's codes, by what gengate should do: 1000–1004 authentication;
/// 1100–1103 the account (arrears, no resource pack, no permission: an
/// operator must act, so treated as auth); 1200–1203 the request itself;
/// 1300–1301 content policy; 1302 rate and 1303 concurrency limits; 1304
/// the IP allow-list; 5000–5002 Kling's side, worth retrying.
fn classify(
    code: u32,
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    message: &str,
) -> ProviderError {
    let what = format!("kling code {code}: {message}");
    match code {
        1000..=1004 | 1100..=1103 | 1304 => ProviderError::Auth(what),
        1302 | 1303 => ProviderError::RateLimited { retry_after },
        1200..=1203 | 1300 | 1301 => ProviderError::Permanent(what),
        5000..=5999 => ProviderError::Retryable(what),
        _ => http::status_error(status, retry_after, format!("HTTP {status}: {what}")),
    }
}

/// A compact JWS with `{"alg":"HS256","typ":"JWT"}` over `claims`.
///
/// Signed here rather than with `jsonwebtoken`: its maintained line (12)
/// needs one of two crypto backends and has no HMAC-only one. Measured cold
/// (dev profile, 2 cores), beyond what the build already compiles:
/// `rust_crypto` brings RSA, ECDSA and Ed25519, 33 crates and 42 s of
/// compiling; `aws_lc_rs` 9 crates and 69 s, 53 of them aws-lc's C build
/// alone. Either outweighs ten lines checked against jwt.io's example below.
pub fn hs256_jwt(claims: &str, secret: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.as_bytes());
    let signing_input = format!("{head}.{body}");
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Where a submitted task lives, relative to `/v1/`: the upstream ref.
fn task_path(endpoint: &str, id: &str) -> String {
    format!("{endpoint}/{id}")
}

#[async_trait]
impl Provider for Kling {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Kling's own controls are Kling's: it takes every field.
    fn refuses(&self, _request: &GenerationRequest) -> Option<crate::Unsupported> {
        None
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let task = job.task;
        let r = &task.request;
        let b64 = |role: ImageRole| {
            job.inputs
                .iter()
                .find(|i| i.role == role)
                .map(|i| STANDARD.encode(&i.bytes))
        };
        let external = task.id.to_string();
        let (endpoint, mut body) = match task.kind {
            TaskKind::Image => (
                "images/generations",
                json!({
                    "model_name": job.model,
                    "prompt": r.prompt,
                    "n": r.n,
                    "aspect_ratio": r.aspect_ratio,
                }),
            ),
            TaskKind::Video => {
                let start = b64(ImageRole::Start);
                let endpoint = if start.is_some() {
                    "videos/image2video"
                } else {
                    "videos/text2video"
                };
                // Kling's modes are its resolution steps.
                let mode = if r.is_hd() { "pro" } else { "std" };
                let mut body = json!({
                    "model_name": job.model,
                    "prompt": r.prompt,
                    "aspect_ratio": r.aspect_ratio,
                    "duration": r.seconds_among(5, &[5, 10]).to_string(),
                    "mode": mode,
                });
                if let Some(c) = r.cfg_scale {
                    body["cfg_scale"] = c.into();
                }
                if let Some(c) = &r.camera_control {
                    body["camera_control"] = c.clone();
                }
                if let Some(s) = start {
                    body["image"] = s.into();
                }
                if let Some(e) = b64(ImageRole::End) {
                    body["image_tail"] = e.into();
                }
                (endpoint, body)
            }
        };
        body["external_task_id"] = external.clone().into();
        if let Some(url) = job.callback_url {
            body["callback_url"] = url.into();
        }
        if let Some(n) = &r.negative_prompt {
            body["negative_prompt"] = n.clone().into();
        }
        if let Some(img) = b64(ImageRole::Reference) {
            body["image"] = img.into();
            if let Some(f) = r.image_fidelity {
                body["image_fidelity"] = f.into();
            }
        }
        let data = match self
            .call(
                reqwest::Method::POST,
                &format!("/v1/{endpoint}"),
                Some(&body),
            )
            .await
        {
            Ok(d) => d,
            // Possibly submitted before (a retaken task): the first
            // submission is found by its external_task_id. A request
            // invalid for another reason leaves nothing to find and keeps
            // its own refusal.
            Err(refused) if refused.code == Some(INVALID_PARAMETERS) => {
                let first = self
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/{}", task_path(endpoint, &external)),
                        None,
                    )
                    .await;
                match first {
                    Ok(d) => d,
                    Err(lookup) if lookup.code == Some(NOT_FOUND) => return Err(refused.into()),
                    Err(lookup) => return Err(lookup.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let t: TaskData = serde_json::from_value(data)
            .map_err(|e| ProviderError::Retryable(format!("kling's task is malformed: {e}")))?;
        Ok(Submitted {
            upstream_ref: task_path(endpoint, &t.task_id),
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let data = self
            .call(reqwest::Method::GET, &format!("/v1/{upstream_ref}"), None)
            .await?;
        Ok(outcome(read_task(data)?))
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // Kling's API has no cancel; the task runs out upstream.
        Ok(())
    }

    fn calls_back(&self) -> bool {
        true
    }

    /// Kling calls back with the task as its query answers it (no envelope).
    fn read_callback(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<CallbackNews, ProviderError> {
        let t = read_task(crate::signing::callback_body(
            None, "kling's", headers, body,
        )?)?;
        Ok(CallbackNews {
            upstream_id: t.task_id.clone(),
            outcome: outcome(t),
        })
    }
}

fn read_task(data: serde_json::Value) -> Result<TaskData, ProviderError> {
    serde_json::from_value(data)
        .map_err(|e| ProviderError::Retryable(format!("kling's task is malformed: {e}")))
}

/// A task's status as the engine sees it; results are videos or images.
fn outcome(t: TaskData) -> PollOutcome {
    match t.task_status.as_str() {
        "submitted" | "processing" => PollOutcome::Running {
            progress: None,
            poll_after: None,
        },
        "succeed" => {
            let result = t.task_result.unwrap_or_default();
            let (role, files) = if result.videos.is_empty() {
                (ArtifactRole::Image, result.images)
            } else {
                (ArtifactRole::Video, result.videos)
            };
            if files.is_empty() {
                return PollOutcome::Failed("kling reported success but returned no files".into());
            }
            PollOutcome::Succeeded(
                files
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| Output {
                        role,
                        index: f.index.unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
                        data: OutputData::Url(f.url),
                    })
                    .collect(),
            )
        }
        "failed" => PollOutcome::Failed(if t.task_status_msg.is_empty() {
            "kling failed the task without a reason".into()
        } else {
            format!("kling: {}", t.task_status_msg)
        }),
        // Unknown statuses are read as still running; the deadline bounds them.
        other => {
            tracing::warn!(task = %t.task_id, status = other, "kling task has an unknown status");
            PollOutcome::Running {
                progress: None,
                poll_after: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_matches_the_published_hs256_example() {
        // jwt.io's example token, signed with "your-256-bit-secret".
        let token = hs256_jwt(
            r#"{"sub":"1234567890","name":"John Doe","iat":1516239022}"#,
            "your-256-bit-secret",
        );
        assert_eq!(
            token,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
             eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
             SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        );
    }

    #[test]
    fn codes_map_to_what_gengate_does() {
        let ok = reqwest::StatusCode::OK;
        assert!(matches!(
            classify(1002, ok, None, ""),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(1102, ok, None, ""),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(1302, reqwest::StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), ""),
            ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(1303, ok, None, ""),
            ProviderError::RateLimited { .. }
        ));
        assert!(matches!(
            classify(1301, ok, None, ""),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            classify(1201, ok, None, ""),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            classify(5001, ok, None, ""),
            ProviderError::Retryable(_)
        ));
        // Codes Kling does not list fall back to the HTTP status.
        let gateway = reqwest::StatusCode::BAD_GATEWAY;
        assert!(matches!(
            classify(9999, gateway, None, ""),
            ProviderError::Retryable(m) if m == "HTTP 502 Bad Gateway: kling code 9999: "
        ));
    }
}
