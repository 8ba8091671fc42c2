//! How the engine behaves: leases, concurrency, attempts, deadlines, bounds.

use std::time::Duration;

use gengate_core::{Millis, TaskKind};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claimed task is ours; a dead worker's tasks are retaken after it.
    pub lease: Duration,
    /// Tasks handled at once by this instance.
    pub concurrency: usize,
    /// Submit attempts before a task fails for good.
    pub max_attempts: u32,
    /// Deadline of a video task, from its creation.
    pub video_deadline: Duration,
    /// Deadline of an image task, from its creation.
    pub image_deadline: Duration,
    /// Time allowed to finish in-flight work at shutdown.
    pub drain_timeout: Duration,
    /// Time allowed to fetch one input image.
    pub fetch_timeout: Duration,
    /// Longest wait between two polls of one task.
    pub max_poll_interval: Duration,
    /// Where upstreams reach this gateway, for their callbacks (`None`:
    /// no upstream callbacks).
    pub public_url: Option<String>,
    /// `gengate.toml`'s price book (`[[prices]]`).
    pub prices: Vec<gengate_core::Price>,
    /// A local directory results download into before they are stored.
    pub spool_dir: std::path::PathBuf,
    /// Results larger than this fail their task.
    pub max_result_bytes: u64,
    /// How long finished tasks' results are kept.
    pub retention: gengate_core::Retention,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(30),
            concurrency: 64,
            max_attempts: 5,
            video_deadline: Duration::from_secs(3600),
            image_deadline: Duration::from_secs(900),
            drain_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(30),
            max_poll_interval: Duration::from_secs(30),
            public_url: None,
            prices: Vec::new(),
            spool_dir: std::env::temp_dir().join("gengate-spool"),
            max_result_bytes: crate::artifacts::DEFAULT_MAX_RESULT_BYTES,
            retention: gengate_core::Retention::default(),
        }
    }
}

impl EngineConfig {
    pub fn deadline_for(&self, kind: TaskKind, created_at: Millis) -> Millis {
        let d = match kind {
            TaskKind::Video => self.video_deadline,
            TaskKind::Image => self.image_deadline,
        };
        created_at.saturating_add(ms(d))
    }
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
