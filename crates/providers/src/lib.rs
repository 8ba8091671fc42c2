//! Upstream generation services behind one [`Provider`] trait, one module per
//! upstream. The engine only ever talks to this trait, so the built-in
//! sandbox runs the same dispatch and poll paths as real upstreams.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gengate_core::{ArtifactRole, ChannelSpec, ImageFormat, ImageRole, ProviderKind, Task};

pub mod http;
pub mod kling;
pub use gengate_media as media;
pub mod sandbox;

/// An input image the engine has fetched (or read from storage) for a submit.
#[derive(Debug, Clone)]
pub struct InputBytes {
    pub role: ImageRole,
    pub format: ImageFormat,
    pub bytes: Bytes,
}

/// What a provider is given to submit: the task and its inputs, ready.
#[derive(Debug)]
pub struct Submission<'a> {
    pub task: &'a Task,
    /// The upstream's name for the task's model (the channel's model map).
    pub model: &'a str,
    pub inputs: Vec<InputBytes>,
    /// Unix ms, from the engine's clock.
    pub now: i64,
}

/// The upstream's reference for a submitted task, opaque to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub upstream_ref: String,
    /// When polling first makes sense, if the upstream can tell.
    pub poll_after: Option<Duration>,
}

/// One result file as the upstream gives it.
#[derive(Debug, Clone)]
pub struct Output {
    pub role: ArtifactRole,
    pub index: u32,
    pub data: OutputData,
}

#[derive(Debug, Clone)]
pub enum OutputData {
    /// The upstream handed over the file itself.
    Inline {
        bytes: Bytes,
        extension: &'static str,
    },
    /// The upstream gave a (usually short-lived) URL; the engine copies it.
    Url(String),
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
}

/// Time one upstream API request may take (not the generation: that is polled).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The adapter a configured channel speaks through. `submit_log` is the
/// sandbox's record of submits (tests and benchmarks count them).
pub fn for_channel(
    spec: &ChannelSpec,
    submit_log: Option<std::path::PathBuf>,
) -> Result<Arc<dyn Provider>, String> {
    let base = || {
        spec.base_url
            .as_deref()
            .ok_or_else(|| format!("channel {:?}: base_url is required", spec.name))
    };
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
                    return Err(format!(
                        "channel {:?}: kling needs credentials.api_key or access_key + secret_key",
                        spec.name
                    ));
                }
            };
            let upstream = http::Upstream::new(base()?, UPSTREAM_TIMEOUT)?;
            Ok(Arc::new(kling::Kling::new(upstream, auth)))
        }
        other => Err(format!(
            "channel {:?}: the {} provider is not available in this build yet",
            spec.name,
            other.as_str()
        )),
    }
}
