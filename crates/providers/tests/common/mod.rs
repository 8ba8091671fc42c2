//! What the adapter tests share.

use std::time::Duration;

use gengate_providers::{PollOutcome, Provider};

/// Poll `upstream_ref` every 20 ms until it is no longer running (4 s at most).
pub async fn poll_until_done(p: &dyn Provider, upstream_ref: &str) -> PollOutcome {
    for _ in 0..200 {
        match p.poll(upstream_ref, 0).await.unwrap() {
            PollOutcome::Running { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
            done => return done,
        }
    }
    panic!("{upstream_ref} never finished");
}
