//! Another gengate as the upstream (chains, regional relays), through the
//! dialects it serves clients: videos through its Luma task API, polled
//! many at a time with its batch get; images through its Kling image API,
//! with the task id as `external_task_id` so a retaken task finds its first
//! submission instead of paying twice. Results are the other gengate's
//! stable file URLs, which the engine copies into its own storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_core::dialect::MAX_BATCH_IDS;
use gengate_core::{ArtifactRole, ChannelSpec, ImageRole, SpecError, TaskKind};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::{Class, Upstream};
use crate::signing::{WebhookKey, callback_body};
use crate::{
    CallbackNews, InputBytes, Output, OutputData, PollOutcome, Provider, ProviderError, Submission,
    Submitted,
};

pub const KIND: &str = "gengate";

const LUMA: &str = "/luma/generations";
const LUMA_BATCH: &str = "/luma/tasks";
const KLING: &str = "/kling/v1/images/generations";

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> {
    let mut g = Gengate::new(crate::upstream_for(spec)?, crate::required_api_key(spec)?);
    if let Some(secret) = &spec.credentials.webhook_secret {
        g.webhook_key = Some(
            WebhookKey::parse(secret).map_err(|e| spec.error("credentials.webhook_secret", &e))?,
        );
    }
    Ok(Arc::new(g))
}

pub struct Gengate {
    upstream: Upstream,
    /// `Bearer <a key on the other gengate>`.
    bearer: String,
    /// That key's callback signing secret, when the channel has it: then
    /// callbacks must carry its signature.
    webhook_key: Option<WebhookKey>,
}

/// The dialect a task went through. Upstream refs are `luma/<id>` or
/// `kling/<id>`: poll knows where to look, and the ref ends with the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Luma,
    Kling,
}

impl Via {
    fn upstream_ref(self, id: &str) -> String {
        match self {
            Via::Luma => format!("luma/{id}"),
            Via::Kling => format!("kling/{id}"),
        }
    }

    fn parse_ref(upstream_ref: &str) -> Result<(Via, Uuid), ProviderError> {
        let (dialect, id) = upstream_ref.split_once('/').unwrap_or_default();
        let via = match dialect {
            "luma" => Some(Via::Luma),
            "kling" => Some(Via::Kling),
            _ => None,
        };
        // The id is checked here: one bad id would make a whole batch get a 400.
        via.zip(Uuid::try_parse(id).ok()).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "{upstream_ref:?} is not a task reference of the gengate provider"
            ))
        })
    }
}

impl Gengate {
    pub fn new(upstream: Upstream, api_key: String) -> Gengate {
        Gengate {
            upstream,
            bearer: format!("Bearer {api_key}"),
            webhook_key: None,
        }
    }

    /// One request: the answer's status, JSON body and `Retry-After`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let (status, bytes, retry_after) = self
            .upstream
            .send(
                method,
                path,
                &[("authorization", self.bearer.as_str())],
                body,
            )
            .await?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok((status, v, retry_after)),
            Err(_) if status.is_success() => Err(ProviderError::Retryable(format!(
                "the upstream gengate answered HTTP {status} with a body that is not JSON"
            ))),
            // Not gengate's envelope (a proxy in between, say): the status says it all.
            Err(_) => Err(refusal(status, retry_after, &Value::Null)),
        }
    }

    /// A request that must succeed: its JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        success(self.send(method, path, body).await?)
    }

    async fn submit_video(&self, job: &Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        let mut body = json!({
            "user_prompt": r.prompt,
            "model_name": job.model,
        });
        let path = match job.parent_upstream_ref {
            Some(parent) => match Via::parse_ref(parent)? {
                // The other gengate continues its own generation from its
                // last frame; the copy the engine fetched is not needed.
                (Via::Luma, id) => format!("{LUMA}/{id}/extend"),
                (Via::Kling, _) => {
                    return Err(ProviderError::Permanent(
                        "only a video can be extended".into(),
                    ));
                }
            },
            None => {
                body["aspect_ratio"] = r.aspect_ratio.clone().into();
                if let Some(res) = &r.resolution {
                    body["resolution"] = res.clone().into();
                }
                for (role, field) in [
                    (ImageRole::Start, "image_url"),
                    (ImageRole::End, "image_end_url"),
                ] {
                    if let Some(url) = input_url(&job.inputs, role, field)? {
                        body[field] = url.into();
                    }
                }
                LUMA.to_string()
            }
        };
        if let Some(e) = r.expand_prompt {
            body["expand_prompt"] = e.into();
        }
        if let Some(l) = r.loop_video {
            body["loop"] = l.into();
        }
        if let Some(d) = r.duration_secs {
            body["duration"] = format!("{d}s").into();
        }
        if let Some(url) = job.callback_url {
            body["callback_url"] = url.into();
        }
        let t: LumaTask = read(self.call(Method::POST, &path, Some(&body)).await?)?;
        Ok(Submitted {
            upstream_ref: Via::Luma.upstream_ref(&t.id),
            poll_after: None,
            outputs: None,
        })
    }

    async fn submit_image(&self, job: &Submission<'_>) -> Result<Submitted, ProviderError> {
        let r = &job.task.request;
        // The Kling dialect refuses UUID-shaped external ids (task ids are UUIDs).
        let external = format!("gengate-{}", job.task.id);
        let mut body = json!({
            "model": job.model,
            "prompt": r.prompt,
            "n": r.n,
            "aspect_ratio": r.aspect_ratio,
            "external_task_id": external,
        });
        if let Some(n) = &r.negative_prompt {
            body["negative_prompt"] = n.clone().into();
        }
        if let Some(img) = job.inputs.iter().find(|i| i.role == ImageRole::Reference) {
            // The client's URL where there is one (the other gengate fetches
            // it), else the bytes, which the dialect takes as base64.
            body["image"] = img
                .url
                .clone()
                .unwrap_or_else(|| STANDARD.encode(&img.bytes))
                .into();
            if let Some(f) = r.image_fidelity {
                body["image_fidelity"] = f.into();
            }
        }
        if let Some(url) = job.callback_url {
            body["callback_url"] = url.into();
        }
        let answer = self.send(Method::POST, KLING, Some(&body)).await?;
        let envelope = if answer.0 == StatusCode::CONFLICT {
            // Submitted before (a retaken task): find the first submission.
            self.call(Method::GET, &format!("{KLING}/{external}"), None)
                .await?
        } else {
            success(answer)?
        };
        let t: KlingTask = read(envelope["data"].clone())?;
        Ok(Submitted {
            upstream_ref: Via::Kling.upstream_ref(&t.task_id),
            poll_after: None,
            outputs: None,
        })
    }

    /// Luma-dialect tasks by id, with one batch get per `MAX_BATCH_IDS`.
    async fn poll_luma(&self, ids: &[Uuid]) -> HashMap<Uuid, Result<PollOutcome, ProviderError>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_BATCH_IDS) {
            let body = json!({"ids": chunk});
            let found = self
                .call(Method::POST, LUMA_BATCH, Some(&body))
                .await
                .and_then(read::<Vec<LumaTask>>);
            match found {
                Ok(tasks) => {
                    for t in tasks {
                        if let Ok(id) = Uuid::try_parse(&t.id) {
                            out.insert(id, Ok(luma_outcome(t)));
                        }
                    }
                }
                // A refusal of the whole batch says nothing about any one
                // task: none of them fails for it, they are polled again.
                Err(e) => {
                    let e = match e {
                        ProviderError::Permanent(why) | ProviderError::Refused(why) => {
                            ProviderError::Retryable(format!(
                                "the upstream gengate refused the batch get: {why}"
                            ))
                        }
                        other => other,
                    };
                    out.extend(chunk.iter().map(|id| (*id, Err(e.clone()))));
                }
            }
        }
        out
    }
}

/// The URL of the input image in `role`: the Luma dialect takes frames by
/// URL only, and an uploaded image has none to give.
fn input_url<'a>(
    inputs: &'a [InputBytes],
    role: ImageRole,
    field: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match inputs.iter().find(|i| i.role == role) {
        None => Ok(None),
        Some(InputBytes { url: Some(u), .. }) => Ok(Some(u)),
        Some(_) => Err(ProviderError::Permanent(format!(
            "{field}: the upstream gengate takes this image as a URL only; send one"
        ))),
    }
}

/// Status, JSON body and `Retry-After` of an answer.
type Answer = (StatusCode, Value, Option<Duration>);

/// The body of a 2xx answer; what any other answer means.
fn success((status, body, retry_after): Answer) -> Result<Value, ProviderError> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(refusal(status, retry_after, &body))
    }
}

/// What an answer that is not 2xx means, with the other gengate's own
/// words for it (`detail` in the Luma dialect, `message` in Kling's).
fn refusal(status: StatusCode, retry_after: Option<Duration>, body: &Value) -> ProviderError {
    let said = body["detail"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .unwrap_or_default();
    let what = if said.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {said}")
    };
    let class = Class::of(status);
    let what = match class {
        Class::Retryable => format!("the upstream gengate: {what}"),
        Class::Permanent if status == StatusCode::NOT_FOUND => {
            format!("the upstream gengate does not know this task ({what})")
        }
        Class::Permanent if said.is_empty() => {
            format!("the upstream gengate refused the task: {what}")
        }
        Class::Permanent => format!("the upstream gengate refused the task: {said}"),
        Class::Auth | Class::RateLimited => what,
    };
    class.error(retry_after, what)
}

fn read<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ProviderError> {
    serde_json::from_value(v).map_err(|e| {
        ProviderError::Retryable(format!("the upstream gengate's task is malformed: {e}"))
    })
}

#[derive(Deserialize)]
struct LumaTask {
    id: String,
    state: String,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    video: Option<Media>,
    #[serde(default)]
    thumbnail: Option<Media>,
    #[serde(default)]
    last_frame: Option<Media>,
}

#[derive(Deserialize)]
struct Media {
    url: String,
}

#[derive(Deserialize)]
struct KlingTask {
    task_id: String,
    task_status: String,
    #[serde(default)]
    task_status_msg: String,
    #[serde(default)]
    task_result: Option<KlingResult>,
}

#[derive(Deserialize, Default)]
struct KlingResult {
    #[serde(default)]
    images: Vec<KlingImage>,
}

#[derive(Deserialize)]
struct KlingImage {
    index: u32,
    url: String,
}

const RUNNING: PollOutcome = PollOutcome::Running {
    progress: None,
    poll_after: None,
};

/// A failure as the other gengate worded it for its client, ours now.
fn failed(reason: Option<String>) -> PollOutcome {
    PollOutcome::Failed(
        reason
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "the upstream gengate failed the task without a reason".into()),
    )
}

fn luma_outcome(t: LumaTask) -> PollOutcome {
    match t.state.as_str() {
        "pending" | "processing" => RUNNING,
        "completed" => {
            let Some(video) = t.video else {
                return PollOutcome::Failed(
                    "the upstream gengate reported success but returned no video".into(),
                );
            };
            let url = |role, m: Media| Output {
                role,
                index: 0,
                data: OutputData::Url(m.url),
            };
            let mut outputs = vec![url(ArtifactRole::Video, video)];
            outputs.extend(t.thumbnail.map(|m| url(ArtifactRole::Thumbnail, m)));
            outputs.extend(t.last_frame.map(|m| url(ArtifactRole::LastFrame, m)));
            PollOutcome::Succeeded(outputs)
        }
        "failed" => failed(t.failure_reason),
        other => unknown_state(&t.id, other),
    }
}

fn kling_outcome(t: KlingTask) -> PollOutcome {
    match t.task_status.as_str() {
        "submitted" | "processing" => RUNNING,
        "succeed" => {
            let images = t.task_result.unwrap_or_default().images;
            if images.is_empty() {
                return PollOutcome::Failed(
                    "the upstream gengate reported success but returned no images".into(),
                );
            }
            PollOutcome::Succeeded(
                images
                    .into_iter()
                    .map(|i| Output {
                        role: ArtifactRole::Image,
                        index: i.index,
                        data: OutputData::Url(i.url),
                    })
                    .collect(),
            )
        }
        "failed" => failed(Some(t.task_status_msg)),
        other => unknown_state(&t.task_id, other),
    }
}

/// A state this build does not know (a newer upstream): still running as
/// far as we can tell; the deadline bounds it.
fn unknown_state(id: &str, state: &str) -> PollOutcome {
    tracing::warn!(
        task = id,
        state,
        "the upstream gengate's task has an unknown state"
    );
    RUNNING
}

#[async_trait]
impl Provider for Gengate {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        match job.task.kind {
            TaskKind::Video => self.submit_video(&job).await,
            TaskKind::Image => self.submit_image(&job).await,
        }
    }

    async fn poll(&self, upstream_ref: &str, _now: i64) -> Result<PollOutcome, ProviderError> {
        match Via::parse_ref(upstream_ref)? {
            (Via::Luma, id) => Ok(luma_outcome(read(
                self.call(Method::GET, &format!("{LUMA}/{id}"), None)
                    .await?,
            )?)),
            (Via::Kling, id) => {
                let envelope = self
                    .call(Method::GET, &format!("{KLING}/{id}"), None)
                    .await?;
                Ok(kling_outcome(read(envelope["data"].clone())?))
            }
        }
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // Neither dialect can cancel; the other gengate's deadline ends the task.
        Ok(())
    }

    fn poll_batch_size(&self) -> usize {
        MAX_BATCH_IDS
    }

    /// Luma-dialect tasks through the batch get; Kling-dialect ones, which
    /// have no batch endpoint, one by one.
    /// Only Luma-dialect tasks have a batch get.
    fn batches(&self, upstream_ref: &str) -> bool {
        matches!(Via::parse_ref(upstream_ref), Ok((Via::Luma, _)))
    }

    async fn poll_batch(
        &self,
        upstream_refs: &[&str],
        now: i64,
    ) -> Vec<Result<PollOutcome, ProviderError>> {
        let parsed: Vec<_> = upstream_refs.iter().map(|r| Via::parse_ref(r)).collect();
        let mut luma_ids: Vec<Uuid> = parsed
            .iter()
            .filter_map(|p| match p {
                Ok((Via::Luma, id)) => Some(*id),
                _ => None,
            })
            .collect();
        luma_ids.sort_unstable();
        luma_ids.dedup();
        let luma = self.poll_luma(&luma_ids).await;
        let mut out = Vec::with_capacity(upstream_refs.len());
        for (r, p) in upstream_refs.iter().zip(parsed) {
            out.push(match p {
                Ok((Via::Luma, id)) => luma.get(&id).cloned().unwrap_or_else(|| {
                    // Left out of the answer: unknown, or another key's.
                    Err(ProviderError::Permanent(format!(
                        "the upstream gengate does not know task {id}"
                    )))
                }),
                Ok((Via::Kling, _)) => self.poll(r, now).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    fn calls_back(&self) -> bool {
        true
    }

    /// The other gengate calls back with the task in its dialect's shape
    /// (no envelope), as it would call back any client.
    fn read_callback(
        &self,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<CallbackNews, ProviderError> {
        let v: Value = callback_body(
            self.webhook_key.as_ref(),
            "the upstream gengate's",
            headers,
            body,
        )?;
        if v.get("task_id").is_some() {
            let t: KlingTask = read(v)?;
            Ok(CallbackNews {
                upstream_id: t.task_id.clone(),
                outcome: kling_outcome(t),
            })
        } else {
            let t: LumaTask = read(v)?;
            Ok(CallbackNews {
                upstream_id: t.id.clone(),
                outcome: luma_outcome(t),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_gengate_does() {
        let detail = json!({"detail": "prompt: is required"});
        assert!(matches!(
            refusal(StatusCode::UNAUTHORIZED, None, &json!({"detail": "unknown or revoked API key"})),
            ProviderError::Auth(m) if m.contains("unknown or revoked")
        ));
        assert!(matches!(
            refusal(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)), &Value::Null),
            ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            refusal(StatusCode::SERVICE_UNAVAILABLE, None, &Value::Null),
            ProviderError::Retryable(_)
        ));
        assert!(matches!(
            refusal(StatusCode::BAD_REQUEST, None, &detail),
            ProviderError::Permanent(m) if m == "the upstream gengate refused the task: prompt: is required"
        ));
        let kling = json!({"code": 1201, "message": "n: must be between 1 and 9 (got 10)"});
        assert!(matches!(
            refusal(StatusCode::BAD_REQUEST, None, &kling),
            ProviderError::Permanent(m) if m.ends_with("n: must be between 1 and 9 (got 10)")
        ));
    }

    #[test]
    fn refs_name_the_dialect_and_end_with_the_upstream_id() {
        let id = "0190a07c-7641-7809-a133-10786201bb57";
        let r = Via::Kling.upstream_ref(id);
        assert!(r.ends_with(id));
        assert_eq!(
            Via::parse_ref(&r).unwrap(),
            (Via::Kling, id.parse().unwrap())
        );
        for bad in ["", "luma/", "luma/not-a-uuid", &format!("videos/{id}"), id] {
            assert!(
                matches!(Via::parse_ref(bad), Err(ProviderError::Permanent(_))),
                "{bad}"
            );
        }
    }
}
