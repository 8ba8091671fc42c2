//! Authenticated API requests per key and UTC day, counted in memory and
//! added to the store every few seconds in one write (a write per request
//! would cost more than most requests): the usage report's requests per
//! day. A crash loses at most the last few seconds' counts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gengate_core::Millis;
use gengate_store::TaskStore;
use tokio::sync::watch;
use uuid::Uuid;

/// How often counts reach the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
const DAY_MS: Millis = 86_400_000;

#[derive(Default)]
pub struct RequestCounts {
    pending: Mutex<HashMap<(Uuid, Millis), u64>>,
}

impl RequestCounts {
    pub fn add(&self, key: Uuid, now: Millis) {
        if let Ok(mut pending) = self.pending.lock() {
            *pending
                .entry((key, now - now.rem_euclid(DAY_MS)))
                .or_default() += 1;
        }
    }

    /// Add what was counted to the store; kept for the next try if the
    /// store refuses.
    pub async fn flush(&self, store: &dyn TaskStore) {
        let taken = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        if taken.is_empty() {
            return;
        }
        let counts: Vec<_> = taken.iter().map(|(&(k, d), &n)| (k, d, n)).collect();
        if let Err(e) = store.add_requests(&counts).await {
            tracing::warn!(error = %e, "recording request counts failed; kept for the next try");
            if let Ok(mut pending) = self.pending.lock() {
                for (k, n) in taken {
                    *pending.entry(k).or_default() += n;
                }
            }
        }
    }

    /// Flush every [`FLUSH_EVERY`] until `shutdown`, then once more.
    pub async fn run(&self, store: &dyn TaskStore, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = shutdown.changed() => {}
            }
            self.flush(store).await;
        }
    }
}
