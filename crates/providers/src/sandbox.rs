//! The built-in offline upstream. It generates real media (PNG images, an
//! H.264 MP4 with thumbnail and last frame) deterministically from the prompt
//! and seed, and says "SANDBOX" on every picture: it never pretends to be a
//! model. Latency and failure rate are settings, so it doubles as the load
//! test upstream.
//!
//! It keeps no state: the upstream reference carries the whole job, so a
//! restarted gengate polls it like any upstream and gets the same result.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gengate_core::{ArtifactRole, ImageRole, TaskKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::media::{self, ImageSpec, VideoSpec};
use crate::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted};

pub const KIND: &str = "sandbox";
const FPS: u32 = 24;
const DEFAULT_VIDEO_SECS: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SandboxConfig {
    /// How long a job takes before it is done.
    pub latency: Duration,
    /// 0..=1: the share of jobs that fail (decided per task id, so repeatable).
    pub failure_rate: f64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency: Duration::from_millis(1500),
            failure_rate: 0.0,
        }
    }
}

pub struct Sandbox {
    cfg: SandboxConfig,
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> Sandbox {
        Sandbox { cfg }
    }
}

/// The whole job, carried in the upstream reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    kind: TaskKind,
    seed: u64,
    width: u32,
    height: u32,
    n: u32,
    frames: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_color: Option<[u8; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tint: Option<([u8; 3], f32)>,
    submitted_at: i64,
    ready_at: i64,
    fail: bool,
}

/// Video sizes: small, exact ratios, multiples of 16 as H.264 likes.
fn video_size(ratio: &str) -> (u32, u32) {
    match ratio {
        "9:16" => (288, 512),
        "1:1" => (384, 384),
        "4:3" => (512, 384),
        "3:4" => (384, 512),
        "21:9" => (672, 288),
        "9:21" => (288, 672),
        _ => (512, 288),
    }
}

fn image_size(ratio: &str) -> (u32, u32) {
    match ratio {
        "9:16" => (576, 1024),
        "1:1" => (1024, 1024),
        "4:3" => (1024, 768),
        "3:4" => (768, 1024),
        "3:2" => (960, 640),
        "2:3" => (640, 960),
        _ => (1024, 576),
    }
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

#[async_trait]
impl Provider for Sandbox {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn submit(&self, job: Submission<'_>) -> Result<Submitted, ProviderError> {
        let task = job.task;
        let req = &task.request;
        let seed = hash64(&[
            req.prompt.as_bytes(),
            req.negative_prompt.as_deref().unwrap_or("").as_bytes(),
            &req.seed.unwrap_or(0).to_le_bytes(),
        ]);
        let color_of = |role: ImageRole| -> Result<Option<[u8; 3]>, ProviderError> {
            job.inputs
                .iter()
                .find(|i| i.role == role)
                .map(|i| {
                    media::average_color(&i.bytes).map_err(|e| {
                        ProviderError::Permanent(format!("input image could not be read: {e}"))
                    })
                })
                .transpose()
        };
        let (width, height, frames) = match task.kind {
            TaskKind::Video => {
                let (w, h) = video_size(&req.aspect_ratio);
                (w, h, req.duration_secs.unwrap_or(DEFAULT_VIDEO_SECS) * FPS)
            }
            TaskKind::Image => {
                let (w, h) = image_size(&req.aspect_ratio);
                (w, h, 0)
            }
        };
        let strength = req.image_fidelity.unwrap_or(0.5) as f32;
        // Which tasks fail is decided by the task id, so a rerun is repeatable.
        let fail_draw = hash64(&[task.id.as_bytes()]) as f64 / u64::MAX as f64;
        let latency_ms = i64::try_from(self.cfg.latency.as_millis()).unwrap_or(i64::MAX);
        let spec = Job {
            kind: task.kind,
            seed,
            width,
            height,
            n: req.n.max(1),
            frames,
            base_color: color_of(ImageRole::Start)?,
            tint: color_of(ImageRole::Reference)?.map(|c| (c, strength)),
            submitted_at: job.now,
            ready_at: job.now.saturating_add(latency_ms),
            fail: fail_draw < self.cfg.failure_rate,
        };
        let upstream_ref = serde_json::to_string(&spec)
            .map_err(|e| ProviderError::Permanent(format!("sandbox job: {e}")))?;
        Ok(Submitted {
            upstream_ref,
            poll_after: Some(self.cfg.latency),
        })
    }

    async fn poll(&self, upstream_ref: &str, now: i64) -> Result<PollOutcome, ProviderError> {
        let job: Job = serde_json::from_str(upstream_ref)
            .map_err(|e| ProviderError::Permanent(format!("unreadable sandbox reference: {e}")))?;
        if now < job.ready_at {
            let total = (job.ready_at - job.submitted_at).max(1);
            let done = (now - job.submitted_at).clamp(0, total);
            return Ok(PollOutcome::Running {
                progress: Some(u8::try_from(done * 100 / total).unwrap_or(99).min(99)),
                poll_after: Some(Duration::from_millis(
                    u64::try_from(job.ready_at - now).unwrap_or(0),
                )),
            });
        }
        if job.fail {
            return Ok(PollOutcome::Failed(format!(
                "sandbox: simulated upstream failure (failure rate {})",
                self.cfg.failure_rate
            )));
        }
        // Encoding is CPU work; keep it off the async workers.
        tokio::task::spawn_blocking(move || render(&job))
            .await
            .map_err(|e| ProviderError::Retryable(format!("sandbox render task: {e}")))?
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // Nothing runs upstream between polls; there is nothing to stop.
        Ok(())
    }
}

fn render(job: &Job) -> Result<PollOutcome, ProviderError> {
    let failed = |e: media::MediaError| ProviderError::Permanent(format!("sandbox render: {e}"));
    let outputs = match job.kind {
        TaskKind::Video => {
            let v = media::render_video(&VideoSpec {
                width: job.width,
                height: job.height,
                seed: job.seed,
                frames: job.frames,
                fps: FPS,
                base_color: job.base_color,
            })
            .map_err(failed)?;
            vec![
                inline(ArtifactRole::Video, 0, v.mp4, "mp4"),
                inline(ArtifactRole::Thumbnail, 0, v.thumbnail_jpeg, "jpg"),
                inline(ArtifactRole::LastFrame, 0, v.last_frame_jpeg, "jpg"),
            ]
        }
        TaskKind::Image => (0..job.n)
            .map(|i| {
                media::render_image(&ImageSpec {
                    width: job.width,
                    height: job.height,
                    seed: job.seed.wrapping_add(u64::from(i)),
                    format: media::ImageFormat::Png,
                    tint: job.tint,
                })
                .map(|png| inline(ArtifactRole::Image, i, png, "png"))
                .map_err(failed)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(PollOutcome::Succeeded(outputs))
}

fn inline(role: ArtifactRole, index: u32, bytes: Vec<u8>, extension: &'static str) -> Output {
    Output {
        role,
        index,
        data: OutputData::Inline {
            bytes: Bytes::from(bytes),
            extension,
        },
    }
}
