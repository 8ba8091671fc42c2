//! The built-in offline upstream. It generates real media (PNG images, an
//! H.264 MP4 with thumbnail and last frame) deterministically from the prompt
//! and seed, and says "SANDBOX" on every picture: it never pretends to be a
//! model. Latency and failure rate are settings, so it doubles as the load
//! test upstream.
//!
//! It keeps no state: the upstream reference carries the whole job, so a
//! restarted gengate polls it like any upstream and gets the same result.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gengate_core::{ArtifactRole, ImageRole, TaskKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::media::{self, ImageSpec, VideoSpec};
use crate::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission, Submitted};

pub const KIND: &str = "sandbox";
const FPS: u32 = 24;
const DEFAULT_VIDEO_SECS: u32 = 5;

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// How long a job takes before it is done.
    pub latency: Duration,
    /// 0..=1: the share of jobs that fail (decided per task id, so repeatable).
    pub failure_rate: f64,
    /// Append `<task id> <process id>` here for every submit: the upstream's
    /// own count of what it was asked to do, shared by all instances.
    pub submit_log: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            latency: Duration::from_millis(1500),
            failure_rate: 0.0,
            submit_log: None,
        }
    }
}

/// Renders kept for reuse: output is a pure function of the job, so the
/// same request (a load test, a retry) is encoded once.
const CACHE_BYTES: usize = 64 << 20;

pub struct Sandbox {
    cfg: SandboxConfig,
    cache: Mutex<RenderCache>,
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> Sandbox {
        Sandbox {
            cfg,
            cache: Mutex::new(RenderCache::default()),
        }
    }

    fn log_submit(&self, task: &gengate_core::Task) -> Result<(), ProviderError> {
        let Some(path) = &self.cfg.submit_log else {
            return Ok(());
        };
        // One short line per write with O_APPEND: lines from many processes never interleave.
        let line = format!("{} {}\n", task.id, std::process::id());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| ProviderError::Retryable(format!("sandbox submit log: {e}")))
    }
}

/// One render per job at a time: tasks that ask for the same picture while
/// it is being made wait for it instead of making it again.
type Cell = Arc<OnceCell<Vec<Output>>>;

#[derive(Default)]
struct RenderCache {
    cells: HashMap<String, Cell>,
    /// Finished renders, oldest first, with their sizes.
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

impl RenderCache {
    fn cell(&mut self, key: &str) -> Cell {
        self.cells.entry(key.to_string()).or_default().clone()
    }

    /// Count a finished render against the budget, evicting the oldest.
    fn account(&mut self, key: String, outputs: &[Output]) {
        let size: usize = outputs
            .iter()
            .map(|o| match &o.data {
                OutputData::Inline { bytes, .. } => bytes.len(),
                OutputData::Url(url) | OutputData::Keyed { url, .. } => url.len(),
            })
            .sum();
        self.order.push_back((key, size));
        self.bytes += size;
        while self.bytes > CACHE_BYTES {
            let Some((old, n)) = self.order.pop_front() else {
                break;
            };
            self.cells.remove(&old);
            self.bytes -= n;
        }
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
    /// A video that ends where it began (`loop`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    looped: bool,
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

/// A video's size at a resolution step: the sandbox draws on the CPU, so
/// its steps are small (540p and unasked: the base size, 288 on the short
/// side of 16:9; 720p: ×352/288; 1080p: ×432/288; 4k: ×2), but larger for
/// each step asked, in multiples of 16.
fn scaled((w, h): (u32, u32), resolution: Option<&str>) -> (u32, u32) {
    let short = match resolution {
        Some("720p") => 352,
        Some("1080p") => 432,
        Some("4k") => 576,
        _ => return (w, h),
    };
    let side = |n: u32| (n * short / 288 + 8) / 16 * 16;
    (side(w), side(h))
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

/// A `WxH` resolution asked for an image (OpenAI's `size`), made exactly
/// when each side is 64 to 2048: the sandbox draws on the CPU.
fn exact_image_size(resolution: &str) -> Option<(u32, u32)> {
    let (w, h) = resolution.split_once('x')?;
    let (w, h) = (w.parse().ok()?, h.parse().ok()?);
    let fits = |s: u32| (64..=2048).contains(&s);
    (fits(w) && fits(h)).then_some((w, h))
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
                let (w, h) = scaled(video_size(&req.aspect_ratio), req.resolution.as_deref());
                (w, h, req.duration_secs.unwrap_or(DEFAULT_VIDEO_SECS) * FPS)
            }
            TaskKind::Image => {
                let (w, h) = req
                    .resolution
                    .as_deref()
                    .and_then(exact_image_size)
                    .unwrap_or_else(|| image_size(&req.aspect_ratio));
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
            looped: task.kind == TaskKind::Video && req.loop_video == Some(true),
            submitted_at: job.now,
            ready_at: job.now.saturating_add(latency_ms),
            fail: fail_draw < self.cfg.failure_rate,
        };
        let upstream_ref = serde_json::to_string(&spec)
            .map_err(|e| ProviderError::Permanent(format!("sandbox job: {e}")))?;
        self.log_submit(task)?;
        Ok(Submitted {
            upstream_ref,
            poll_after: Some(self.cfg.latency),
            outputs: None,
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
        let key = job.render_key();
        let cell = match self.cache.lock() {
            Ok(mut cache) => cache.cell(&key),
            Err(_) => Arc::default(),
        };
        let mut fresh = false;
        let outputs = cell
            .get_or_try_init(|| async {
                fresh = true;
                // Encoding is CPU work; keep it off the async workers.
                tokio::task::spawn_blocking(move || render(&job))
                    .await
                    .map_err(|e| ProviderError::Retryable(format!("sandbox render task: {e}")))?
            })
            .await?
            .clone();
        if fresh && let Ok(mut cache) = self.cache.lock() {
            cache.account(key, &outputs);
        }
        Ok(PollOutcome::Succeeded(outputs))
    }

    async fn cancel(&self, _upstream_ref: &str) -> Result<(), ProviderError> {
        // Nothing runs upstream between polls; there is nothing to stop.
        Ok(())
    }
}

impl Job {
    /// What the picture depends on (not when it was asked for).
    fn render_key(&self) -> String {
        format!(
            "{:?}/{}/{}x{}/{}/{}/{:?}/{:?}/{}",
            self.kind,
            self.seed,
            self.width,
            self.height,
            self.n,
            self.frames,
            self.base_color,
            self.tint,
            self.looped
        )
    }
}

fn render(job: &Job) -> Result<Vec<Output>, ProviderError> {
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
                looped: job.looped,
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
                    // JPEG: a tenth of the PNG's bytes for a smooth picture,
                    // which keeps load tests about gengate, not about copying.
                    format: media::ImageFormat::Jpeg,
                    tint: job.tint,
                })
                .map(|jpg| inline(ArtifactRole::Image, i, jpg, "jpg"))
                .map_err(failed)
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(outputs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn videos_grow_with_the_resolution_asked() {
        assert_eq!(scaled((512, 288), None), (512, 288));
        assert_eq!(scaled((512, 288), Some("540p")), (512, 288));
        assert_eq!(scaled((512, 288), Some("720p")), (624, 352));
        assert_eq!(scaled((288, 512), Some("1080p")), (432, 768));
        assert_eq!(scaled((384, 384), Some("4k")), (768, 768));
    }
    use gengate_core::Task;

    fn task(kind: TaskKind, prompt: &str) -> Task {
        gengate_testkit::fixtures::pending_task(kind, prompt)
    }

    async fn submit(sb: &Sandbox, t: &Task, now: i64) -> String {
        let job = Submission::new(t, "m", now);
        sb.submit(job).await.unwrap().upstream_ref
    }

    #[tokio::test]
    async fn runs_for_its_latency_then_succeeds_from_cache_alike() {
        let log = std::env::temp_dir().join(format!("sandbox-{}.log", uuid::Uuid::new_v4()));
        let sb = Sandbox::new(SandboxConfig {
            latency: Duration::from_millis(1000),
            failure_rate: 0.0,
            submit_log: Some(log.clone()),
        });
        let t = task(TaskKind::Image, "cache me");
        let r = submit(&sb, &t, 10_000).await;
        match sb.poll(&r, 10_500).await.unwrap() {
            PollOutcome::Running {
                progress,
                poll_after,
            } => {
                assert_eq!(progress, Some(50));
                assert_eq!(poll_after, Some(Duration::from_millis(500)));
            }
            other => panic!("{other:?}"),
        }
        let first = match sb.poll(&r, 11_000).await.unwrap() {
            PollOutcome::Succeeded(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.len(), 2);
        // A second task with the same prompt gets the same bytes (from the cache).
        let t2 = task(TaskKind::Image, "cache me");
        let r2 = submit(&sb, &t2, 20_000).await;
        let PollOutcome::Succeeded(second) = sb.poll(&r2, 21_000).await.unwrap() else {
            panic!("not done")
        };
        for (a, b) in first.iter().zip(&second) {
            match (&a.data, &b.data) {
                (OutputData::Inline { bytes: x, .. }, OutputData::Inline { bytes: y, .. }) => {
                    assert_eq!(x, y)
                }
                _ => panic!("inline outputs"),
            }
        }
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines.lines().count(), 2);
        assert!(lines.starts_with(&t.id.to_string()));
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn failure_rate_one_fails_every_task() {
        let sb = Sandbox::new(SandboxConfig {
            latency: Duration::ZERO,
            failure_rate: 1.0,
            submit_log: None,
        });
        for _ in 0..5 {
            let r = submit(&sb, &task(TaskKind::Video, "x"), 0).await;
            assert!(matches!(
                sb.poll(&r, 0).await.unwrap(),
                PollOutcome::Failed(_)
            ));
        }
    }
}
