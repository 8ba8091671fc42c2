//! Retention's background half: stored files whose term has passed are
//! deleted, by one instance at a time (a lease in the store). A file's term
//! is the longest any task sharing it needs (the store's `keep_file`), and
//! every writer extends it before it writes or reuses the file, so a sweep
//! never deletes a file a task is about to point at.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gengate_core::Millis;
use gengate_store::{StoreError, TaskStore};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::ms;
use crate::now_ms;
use crate::storage::{MediaStore, StorageError};

/// The store lease a sweep holds.
pub const SWEEP_LEASE: &str = "sweep";
/// How long a sweep's lease lasts; renewed after every batch.
const LEASE: Duration = Duration::from_secs(15 * 60);
/// A batch stops this long before its lease would lapse (more than any
/// storage request may take).
const LEASE_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Files doomed and deleted per batch.
const BATCH: u32 = 500;
/// How often a serving instance sweeps.
const EVERY: Duration = Duration::from_secs(10 * 60);
/// How long a write keeps its file before a task says for how long:
/// enough to store the largest result and finish its task.
pub const WRITE_HOLD: Duration = Duration::from_secs(3600);

/// What a sweep did (or, dry, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub dry_run: bool,
    /// Files deleted (dry: expired, so due to be).
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("another instance is sweeping (it holds the {SWEEP_LEASE:?} lease); try again later")]
    Busy,
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Storage would not delete some files (left for the next sweep);
    /// what was deleted is in the report.
    #[error("storage: {error} (deleted {} files; the rest are tried at the next sweep)", report.files)]
    Storage {
        error: StorageError,
        report: SweepReport,
    },
}

pub struct Sweeper {
    store: Arc<dyn TaskStore>,
    media: MediaStore,
    holder: String,
}

impl Sweeper {
    pub fn new(store: Arc<dyn TaskStore>, media: MediaStore) -> Sweeper {
        Sweeper {
            store,
            media,
            holder: format!("sweeper-{}", uuid::Uuid::new_v4()),
        }
    }

    /// Delete every file whose term passed before `as_of` (dry: count
    /// them), then record what is kept in the metrics.
    pub async fn sweep(&self, as_of: Millis, dry_run: bool) -> Result<SweepReport, SweepError> {
        let report = if dry_run {
            let totals = self.store.file_totals(as_of).await?;
            SweepReport {
                dry_run,
                files: totals.expired_files,
                bytes: totals.expired_bytes,
            }
        } else {
            if !self.renew().await? {
                return Err(SweepError::Busy);
            }
            let swept = self.delete_expired(as_of).await;
            if let Err(e) = self.store.release_lease(SWEEP_LEASE, &self.holder).await {
                tracing::warn!(error = %e, "releasing the sweep lease failed");
            }
            swept?
        };
        // What was done stands even if the totals cannot be read now.
        match self.store.file_totals(now_ms()).await {
            Ok(kept) => {
                metrics::gauge!("gengate_storage_kept_files").set(kept.files as f64);
                metrics::gauge!("gengate_storage_kept_bytes").set(kept.bytes as f64);
            }
            Err(e) => tracing::warn!(error = %e, "reading the stored files' totals failed"),
        }
        Ok(report)
    }

    /// Take (or keep) the sweep lease: `false` when another holds it.
    async fn renew(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        self.store
            .take_lease(SWEEP_LEASE, &self.holder, now, now + ms(LEASE))
            .await
    }

    /// Batches of doomed files deleted from storage, then forgotten. A
    /// file storage will not delete is left for the next sweep, the rest of
    /// its batch deleted. The lease is renewed after each batch, and a batch
    /// stops well before the lease could lapse: another sweeper could then
    /// forget a file and a writer store it again, which a stale batch must
    /// not delete.
    async fn delete_expired(&self, as_of: Millis) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        loop {
            let until = Instant::now() + LEASE.saturating_sub(LEASE_MARGIN);
            let doomed = self.store.doom_files(as_of, BATCH).await?;
            if doomed.is_empty() {
                return Ok(report);
            }
            let (mut gone, before) = (Vec::with_capacity(doomed.len()), report);
            let mut failed = None;
            for file in doomed {
                if Instant::now() > until {
                    break;
                }
                match self.media.delete(&file.key).await {
                    Ok(()) => {
                        report.files += 1;
                        report.bytes += file.size;
                        gone.push(file.key);
                    }
                    Err(e) => {
                        tracing::warn!(key = file.key, error = %e, "deleting an expired file failed");
                        failed.get_or_insert(e);
                    }
                }
            }
            self.store.forget_files(&gone).await?;
            metrics::counter!("gengate_storage_objects_deleted_total")
                .increment(report.files - before.files);
            metrics::counter!("gengate_storage_bytes_deleted_total")
                .increment(report.bytes - before.bytes);
            // Files that failed come first again: stop rather than spin.
            if let Some(error) = failed {
                return Err(SweepError::Storage { error, report });
            }
            if !self.renew().await? {
                return Err(SweepError::Busy);
            }
        }
    }

    /// Sweep every few minutes until `shutdown` (a serving instance; with
    /// several, whichever holds the lease sweeps).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.sweep(now_ms(), false).await {
                Ok(r) if r.files > 0 => {
                    tracing::info!(files = r.files, bytes = r.bytes, "deleted expired files")
                }
                Ok(_) | Err(SweepError::Busy) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping expired files failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}
