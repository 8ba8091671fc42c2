//! Replicate's HTTP API (`https://api.replicate.com/v1`): predictions created
//! by model (`POST /models/{owner}/{name}/predictions`, for official models)
//! or by version (`POST /predictions` with `version`), polled with
//! `GET /predictions/{id}`, canceled with `POST /predictions/{id}/cancel`.
//! Authentication is a bearer API token; errors are problem-details JSON
//! (`{"title", "detail", "status"}`).
//!
//! The channel's upstream model name picks the endpoint: `owner/name` goes by
//! model; `owner/name:VERSION` or a bare 64-hex version id goes by version.
//!
//! Each model has its own input schema. This adapter sends the names most
//! image and video models share: `prompt`, `negative_prompt`,
//! `aspect_ratio`, `seed`, `num_outputs` (image tasks: the task's `n`),
//! `duration` (video tasks, when asked) and `image` (a reference or start
//! frame: the client's URL, or else a `data:` URI of the bytes). Models that
//! name their inputs otherwise need a model of their own on the channel.
//!
//! With a callback URL the prediction carries `webhook` and
//! `webhook_events_filter: ["completed"]`, so Replicate calls back once per
//! task; the callback is signed the Standard Webhooks way and verified here
//! when the channel has `credentials.webhook_secret` (Replicate's
//! `whsec_...`). Without one, callbacks are trusted on the URL's token alone.
//!
//! Replicate has no idempotency key: a task retaken after a crash between
//! submit and commit may be created (and paid for) twice.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::{ArtifactRole, ChannelSpec, ImageRole, SpecError, TaskKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{self, Upstream};
use crate::signing::{WebhookKey, callback_body};
use crate::{
    CallbackNews, Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted,
};

pub const KIND: &str = "replicate";

pub struct Replicate {
    upstream: Upstream,
    token: String,
    /// The decoded Standard Webhooks key callbacks are signed with.
    webhook_key: Option<WebhookKey>,
}

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let token = crate::required_api_key(spec)?;
    let secret = spec.credentials.webhook_secret.as_deref();
    let r = Replicate::new(crate::upstream_for(spec)?, token, secret)
        .map_err(|e| spec.error("credentials.webhook_secret", &e))?;
    Ok(Arc::new(r))
}

impl Replicate {
    /// `webhook_secret` is Replicate's signing secret (`whsec_<base64>`, from
    /// `GET /v1/webhooks/default/secret`); `Err` says why it is unusable.
    pub fn new(
        upstream: Upstream,
        token: String,
        webhook_secret: Option<&str>,
    ) -> Result<Replicate, String> {
        let webhook_key = webhook_secret.map(WebhookKey::parse).transpose()?;
        Ok(Replicate {
            upstream,
            token,
            webhook_key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Prediction, ProviderError> {
        let auth = format!("Bearer {}", self.token);
        let (status, bytes, retry_after) = self
            .upstream
            .send(method, path, &[("authorization", auth.as_str())], body)
            .await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ProviderError::Retryable(format!("replicate's prediction is malformed: {e}"))
            });
        }
        Err(classify(status, retry_after, &problem_message(&bytes)))
    }
}

/// Replicate's problem details, or a note that the body was none.
fn problem_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Problem {
        #[serde(default)]
        title: String,
        #[serde(default)]
        detail: String,
    }
    match serde_json::from_slice::<Problem>(body) {
        Ok(p) if !p.detail.is_empty() => p.detail.trim().to_string(),
        Ok(p) if !p.title.is_empty() => p.title,
        _ => "no problem details".into(),
    }
}

fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    message: &str,
) -> ProviderError {
    let what = format!("replicate (HTTP {}): {message}", status.as_u16());
    http::status_error(status, retry_after, what)
}

/// Where a prediction is created, from the channel's name for the model.
#[derive(Debug, PartialEq)]
enum Target<'a> {
    Model {
        owner: &'a str,
        name: &'a str,
    },
    /// `owner/name:VERSION` or a bare version id, sent as `version` as is.
    Version(&'a str),
}

fn target(model: &str) -> Result<Target<'_>, ProviderError> {
    let is_version = |v: &str| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit());
    if is_version(model) {
        return Ok(Target::Version(model));
    }
    match model.split_once(':') {
        Some((m, v)) if owner_name(m).is_some() && is_version(v) => Ok(Target::Version(model)),
        None => match owner_name(model) {
            Some((owner, name)) => Ok(Target::Model { owner, name }),
            None => Err(bad_model(model)),
        },
        Some(_) => Err(bad_model(model)),
    }
}

fn owner_name(model: &str) -> Option<(&str, &str)> {
    model
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
}

fn bad_model(model: &str) -> ProviderError {
    ProviderError::Refused(format!(
        "replicate model {model:?} is not owner/name, owner/name:VERSION or a 64-hex version id"
    ))
}

#[derive(Deserialize)]
struct Prediction {
    id: String,
    status: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    logs: Option<String>,
}

#[async_trait]
impl Provider for Replicate {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        let mut input = json!({
            "prompt": r.prompt,
            "aspect_ratio": r.aspect_ratio,
        });
        match job.task.kind {
            TaskKind::Image => input["num_outputs"] = r.n.into(),
            TaskKind::Video => {
                if let Some(d) = r.duration_secs {
                    input["duration"] = d.into();
                }
            }
        }
        if let Some(n) = &r.negative_prompt {
            input["negative_prompt"] = n.clone().into();
        }
        if let Some(s) = r.seed {
            input["seed"] = s.into();
        }
        let image = job
            .inputs
            .iter()
            .find(|i| matches!(i.role, ImageRole::Reference | ImageRole::Start));
        if let Some(i) = image {
            input["image"] = match &i.url {
                Some(u) => u.clone(),
                None => format!(
                    "data:{};base64,{}",
                    i.format.content_type(),
                    STANDARD.encode(&i.bytes)
                ),
            }
            .into();
        }
        let mut body = json!({ "input": input });
        if let Some(url) = job.callback_url {
            body["webhook"] = url.into();
            body["webhook_events_filter"] = json!(["completed"]);
        }
        let path = match target(job.model)? {
            Target::Model { owner, name } => format!("/models/{owner}/{name}/predictions"),
            Target::Version(v) => {
                body["version"] = v.into();
                "/predictions".into()
            }
        };
        let p = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        Ok(Submitted {
            upstream_ref: p.id,
            poll_after: None,
            outputs: None,
        })
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        let p = self
            .call(
                reqwest::Method::GET,
                &format!("/predictions/{upstream_ref}"),
                None,
            )
            .await?;
        Ok(outcome(p))
    }

    async fn cancel(&self, upstream_ref: &str) -> Result<(), ProviderError> {
        self.call(
            reqwest::Method::POST,
            &format!("/predictions/{upstream_ref}/cancel"),
            None,
        )
        .await
        .map(drop)
    }

    fn calls_back(&self) -> bool {
        true
    }

    /// Replicate POSTs the prediction as `GET /predictions/{id}` answers it.
    fn read_callback(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<CallbackNews, ProviderError> {
        let p: Prediction = callback_body(self.webhook_key.as_ref(), "replicate's", headers, body)?;
        Ok(CallbackNews {
            upstream_id: p.id.clone(),
            outcome: outcome(p),
        })
    }
}

fn outcome(p: Prediction) -> PollOutcome {
    match p.status.as_str() {
        "starting" | "processing" => PollOutcome::Running {
            progress: p.logs.as_deref().and_then(progress_from_logs),
            poll_after: None,
        },
        "succeeded" => {
            let outputs = outputs(&p.output);
            if outputs.is_empty() {
                PollOutcome::Failed("replicate reported success but returned no files".into())
            } else {
                PollOutcome::Succeeded(outputs)
            }
        }
        "failed" => PollOutcome::Failed(match &p.error {
            Value::String(e) if !e.trim().is_empty() => format!("replicate: {}", e.trim()),
            Value::Null => "replicate failed the prediction without a reason".into(),
            other => format!("replicate: {other}"),
        }),
        "canceled" | "aborted" => PollOutcome::Failed("canceled upstream".into()),
        // Unknown statuses are read as still running; the deadline bounds them.
        other => {
            tracing::warn!(prediction = %p.id, status = other, "replicate prediction has an unknown status");
            PollOutcome::Running {
                progress: None,
                poll_after: None,
            }
        }
    }
}

/// The file URLs in a prediction's `output`: one URL, a list of them, or an
/// object holding them (models differ), in order.
fn outputs(output: &Value) -> Vec<Output> {
    fn urls<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) if s.starts_with("https://") || s.starts_with("http://") => {
                out.push(s);
            }
            Value::Array(items) => items.iter().for_each(|i| urls(i, out)),
            Value::Object(fields) => fields.values().for_each(|i| urls(i, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    urls(output, &mut found);
    let (mut videos, mut images) = (0, 0);
    found
        .into_iter()
        .map(|url| {
            let path = url
                .split(['?', '#'])
                .next()
                .unwrap_or(url)
                .to_ascii_lowercase();
            let is_video = [".mp4", ".webm", ".mov"].iter().any(|e| path.ends_with(e));
            let (role, counter) = if is_video {
                (ArtifactRole::Video, &mut videos)
            } else {
                (ArtifactRole::Image, &mut images)
            };
            let index = *counter;
            *counter += 1;
            Output {
                role,
                index,
                data: OutputData::Url(url.to_string()),
            }
        })
        .collect()
}

/// The last progress bar percentage in a prediction's logs (Cog models
/// print tqdm bars such as ` 45%|████▌     | 9/20`).
fn progress_from_logs(logs: &str) -> Option<u8> {
    logs.rmatch_indices("%|").find_map(|(at, _)| {
        let digits = logs[..at]
            .bytes()
            .rev()
            .take_while(u8::is_ascii_digit)
            .count();
        logs[at - digits..at]
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_name_picks_the_endpoint() {
        let v = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
        assert_eq!(
            target("black-forest-labs/flux-schnell").unwrap(),
            Target::Model {
                owner: "black-forest-labs",
                name: "flux-schnell"
            }
        );
        let pinned = format!("replicate/hello-world:{v}");
        assert_eq!(target(&pinned).unwrap(), Target::Version(&pinned));
        assert_eq!(target(v).unwrap(), Target::Version(v));
        for bad in ["flux", "a/b/c", "a/b:short", "/b", &v[1..]] {
            assert!(
                matches!(target(bad), Err(ProviderError::Refused(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn outputs_and_progress_are_read() {
        let out = outputs(&json!(["https://x/a.png", "https://x/b.webp?x=1"]));
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.role == ArtifactRole::Image));
        assert_eq!(out[1].index, 1);
        let out = outputs(&json!("https://x/v.MP4"));
        assert_eq!(out[0].role, ArtifactRole::Video);
        assert!(outputs(&json!(null)).is_empty());
        assert_eq!(
            progress_from_logs("a\n 7%|▌ | 1/20\n 45%|████▌ | 9/20"),
            Some(45)
        );
        assert_eq!(progress_from_logs("loading weights"), None);
    }

    #[test]
    fn problems_are_classed() {
        let msg = problem_message(br#"{"title":"Input validation failed","detail":"- input: prompt is required\n","status":422}"#);
        assert_eq!(msg, "- input: prompt is required");
        let err = classify(reqwest::StatusCode::UNPROCESSABLE_ENTITY, None, &msg);
        assert!(matches!(err, ProviderError::Permanent(ref m) if m.contains("prompt is required")));
        assert!(matches!(
            classify(reqwest::StatusCode::UNAUTHORIZED, None, ""),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(reqwest::StatusCode::BAD_GATEWAY, None, ""),
            ProviderError::Retryable(_)
        ));
        assert_eq!(problem_message(b"<html>"), "no problem details");
    }
}
