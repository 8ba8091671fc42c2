//! Upstream generation services behind one [`Provider`] trait, one module per
//! upstream. The engine only ever talks to this trait, so the built-in
//! sandbox runs the same dispatch and poll paths as real upstreams.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gengate_core::{
    ArtifactRole, ChannelSpec, GenerationRequest, ImageFormat, ImageRole, ProviderKind, SpecError,
    Task, TaskKind,
};

pub mod comfyui;
pub mod gemini_veo;
pub mod gengate;
pub mod http;
pub mod kling;
pub mod luma;
pub use gengate_media as media;
pub mod openai_images;
pub mod openai_videos;
pub mod replicate;
pub mod sandbox;
pub mod signing;

/// An input image the engine has fetched (or read from storage) for a submit.
#[derive(Debug, Clone)]
pub struct InputBytes {
    pub role: ImageRole,
    pub format: ImageFormat,
    pub bytes: Bytes,
    /// Where an upstream that takes image URLs (Luma, Replicate) can fetch
    /// it: the client's own URL; `None` for stored images and last frames.
    pub url: Option<String>,
}

/// What a provider is given to submit: the task and its inputs, ready.
#[derive(Debug)]
pub struct Submission<'a> {
    pub task: &'a Task,
    /// The upstream's name for the task's model (the channel's model map).
    pub model: &'a str,
    pub inputs: Vec<InputBytes>,
    /// For a follow-up (extend): the parent's `upstream_ref` on this same
    /// channel, for upstreams that continue their own generations (Luma).
    pub parent_upstream_ref: Option<&'a str>,
    /// Unix ms, from the engine's clock.
    pub now: i64,
    /// Where an upstream that calls back should report this task's changes
    /// (a URL of gengate's own, carrying a token for this task); `None` when
    /// gengate has no public URL or the channel does not use callbacks.
    pub callback_url: Option<&'a str>,
}

impl<'a> Submission<'a> {
    /// A first submission of `task` as `model`: no input files, no parent,
    /// no callback.
    pub fn new(task: &'a Task, model: &'a str, now: i64) -> Submission<'a> {
        Submission {
            task,
            model,
            inputs: Vec::new(),
            parent_upstream_ref: None,
            now,
            callback_url: None,
        }
    }
}

/// The upstream's reference for a submitted task, opaque to the engine.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub upstream_ref: String,
    /// When polling first makes sense, if the upstream can tell.
    pub poll_after: Option<Duration>,
    /// A synchronous upstream (OpenAI images) answers with the results
    /// themselves: the task completes without a poll.
    pub outputs: Option<Vec<Output>>,
}

/// One result file as the upstream gives it.
#[derive(Debug, Clone)]
pub struct Output {
    pub role: ArtifactRole,
    pub index: u32,
    pub data: OutputData,
}

#[derive(Clone)]
pub enum OutputData {
    /// The upstream handed over the file itself.
    Inline {
        bytes: Bytes,
        extension: &'static str,
    },
    /// The upstream gave a (usually short-lived) URL; the engine copies it.
    Url(String),
    /// A URL the upstream serves only with its key in `header`: the engine
    /// sends it to that URL's origin alone (not to a redirect elsewhere).
    Keyed {
        url: String,
        header: &'static str,
        value: String,
    },
}

/// Never prints a key.
impl std::fmt::Debug for OutputData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputData::Inline { bytes, extension } => f
                .debug_struct("Inline")
                .field("bytes", &bytes.len())
                .field("extension", extension)
                .finish(),
            OutputData::Url(url) => f.debug_tuple("Url").field(url).finish(),
            OutputData::Keyed { url, header, .. } => f
                .debug_struct("Keyed")
                .field("url", url)
                .field("header", header)
                .field("value", &"<hidden>")
                .finish(),
        }
    }
}

/// What an upstream's callback says about one of its tasks.
#[derive(Debug, Clone)]
pub struct CallbackNews {
    /// The upstream's own id for the task; the task's `upstream_ref` ends
    /// with it, which is how the engine checks the news is about that task.
    pub upstream_id: String,
    pub outcome: PollOutcome,
}

#[derive(Debug, Clone)]
pub enum PollOutcome {
    Running {
        progress: Option<u8>,
        poll_after: Option<Duration>,
    },
    Succeeded(Vec<Output>),
    Failed(String),
}

/// Errors, classed by what the engine should do about them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// 5xx, timeout, reset: try again (here or on another channel).
    #[error("upstream temporarily failed: {0}")]
    Retryable(String),
    #[error("upstream rate limit")]
    RateLimited { retry_after: Option<Duration> },
    /// The upstream refused the task itself (bad input, content policy).
    #[error("{0}")]
    Permanent(String),
    /// The adapter cannot send the task as asked (before any request): a
    /// refusal of gengate's, not the upstream's.
    #[error("{0}")]
    Refused(String),
    /// Our credentials were refused; an operator must act.
    #[error("upstream refused the channel's credentials")]
    Auth(String),
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's kind, as shown to users and operators ("sandbox", ...).
    fn kind(&self) -> &'static str;

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError>;

    /// Where the upstream task stands. `now` is Unix ms.
    async fn poll(&self, upstream_ref: &str, now: i64) -> Result<PollOutcome, ProviderError>;

    /// Ask the upstream to stop (deadline passed, client canceled). Best effort.
    async fn cancel(&self, upstream_ref: &str) -> Result<(), ProviderError>;

    /// How many tasks one [`Provider::poll_batch`] call may cover; 1 for
    /// upstreams without a batch endpoint.
    fn poll_batch_size(&self) -> usize {
        1
    }

    /// Whether the batch endpoint covers this task (others are polled one
    /// by one, each its own request).
    fn batches(&self, _upstream_ref: &str) -> bool {
        self.poll_batch_size() > 1
    }

    /// Polls several tasks at once where the upstream has a batch endpoint:
    /// one result per ref, in order.
    async fn poll_batch(
        &self,
        upstream_refs: &[&str],
        now: i64,
    ) -> Vec<Result<PollOutcome, ProviderError>> {
        let mut out = Vec::with_capacity(upstream_refs.len());
        for r in upstream_refs {
            out.push(self.poll(r, now).await);
        }
        out
    }

    /// Whether the upstream makes tasks of `kind` at all (routing skips a
    /// channel that does not, whatever models it serves).
    fn makes(&self, _kind: TaskKind) -> bool {
        true
    }

    /// What of `request` this upstream cannot take: a task with it is
    /// refused rather than made without it. Kling's own controls are taken
    /// by Kling alone.
    fn refuses(&self, request: &GenerationRequest) -> Option<Unsupported> {
        kling_controls(request).map(Unsupported::Field)
    }

    /// Whether the upstream reports changes to a callback URL given at
    /// submit (then [`Provider::read_callback`] reads them).
    fn calls_back(&self) -> bool {
        false
    }

    /// Reads a callback the upstream sent to the task's callback URL. The
    /// engine has checked the URL's token already; adapters whose upstream
    /// signs its callbacks (Replicate) verify the signature here.
    fn read_callback(
        &self,
        _headers: &reqwest::header::HeaderMap,
        _body: &[u8],
    ) -> Result<CallbackNews, ProviderError> {
        Err(ProviderError::Permanent(format!(
            "the {} provider does not call back",
            self.kind()
        )))
    }
}

/// Time one upstream API request may take (not the generation: that is polled).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The adapter a configured channel speaks through. `submit_log` is the
/// sandbox's record of submits (tests and benchmarks count them).
pub fn for_channel(
    spec: &ChannelSpec,
    submit_log: Option<std::path::PathBuf>,
) -> Result<Arc<dyn Provider>, SpecError> {
    match spec.provider {
        ProviderKind::Sandbox => {
            let defaults = sandbox::SandboxConfig::default();
            Ok(Arc::new(sandbox::Sandbox::new(sandbox::SandboxConfig {
                latency: spec
                    .latency_ms
                    .map_or(defaults.latency, Duration::from_millis),
                failure_rate: spec.failure_rate.unwrap_or(defaults.failure_rate),
                submit_log,
            })))
        }
        ProviderKind::Kling => {
            let c = &spec.credentials;
            let auth = match (&c.access_key, &c.secret_key, &c.api_key) {
                (Some(a), Some(s), _) => kling::KlingAuth::Signed {
                    access_key: a.clone(),
                    secret_key: s.clone(),
                },
                (_, _, Some(k)) => kling::KlingAuth::ApiKey(k.clone()),
                _ => {
                    return Err(spec.error(
                        "credentials.api_key",
                        "or access_key + secret_key is required for kling",
                    ));
                }
            };
            Ok(Arc::new(kling::Kling::new(upstream_for(spec)?, auth)))
        }
        ProviderKind::Luma => luma::from_spec(spec),
        ProviderKind::Replicate => replicate::from_spec(spec),
        ProviderKind::OpenaiImages => openai_images::from_spec(spec),
        ProviderKind::Comfyui => comfyui::from_spec(spec),
        ProviderKind::Gengate => gengate::from_spec(spec),
        ProviderKind::GeminiVeo => gemini_veo::from_spec(spec),
        ProviderKind::OpenaiVideos => openai_videos::from_spec(spec),
    }
}

/// The HTTP client for a channel's upstream: its `base_url` is required.
pub(crate) fn upstream_for(spec: &ChannelSpec) -> Result<http::Upstream, SpecError> {
    let base = spec
        .base_url
        .as_deref()
        .ok_or_else(|| spec.error("base_url", "is required"))?;
    http::Upstream::new(base, UPSTREAM_TIMEOUT).map_err(|e| spec.error("base_url", &e))
}

/// The channel's bearer token (`credentials.api_key`), required.
pub(crate) fn required_api_key(spec: &ChannelSpec) -> Result<String, SpecError> {
    spec.credentials.api_key.clone().ok_or_else(|| {
        spec.error(
            "credentials.api_key",
            &format!("is required for {}", spec.provider.as_str()),
        )
    })
}

/// What an upstream cannot take, for the 400 that names it in the client's
/// words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// A request field, by its name.
    Field(&'static str),
    /// An input image of this role.
    Image(ImageRole),
}

/// The first of Kling's own controls `request` sets (only Kling takes them).
pub fn kling_controls(request: &GenerationRequest) -> Option<&'static str> {
    if request.cfg_scale.is_some() {
        Some("cfg_scale")
    } else if request.camera_control.is_some() {
        Some("camera_control")
    } else {
        None
    }
}
