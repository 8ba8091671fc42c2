//! When to poll a running task next. Each channel and model learns how long
//! its jobs take (a moving average of finished ones), so a task is first
//! polled around when it should be done, not dozens of times on the way:
//! for a 60 s job that is the submit and two or three polls. Until a
//! channel has finished something, polls start soon and back off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Weight of the newest finished job in the moving average.
const ALPHA: f64 = 0.3;
/// First poll before anything is known about a channel's jobs.
const COLD_FIRST_POLL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Pacer {
    took: Mutex<HashMap<(String, String), Duration>>,
}

/// A factor in [lo, hi): spreads polls so tasks submitted together do not
/// poll together, and lets the estimate learn downwards (a job found done
/// at 0.85 of the estimate pulls it down).
fn jitter(lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rand::random::<f64>()
}

impl Pacer {
    /// How long jobs of `model` on `channel` have been taking, once learned.
    pub(crate) fn estimate(&self, channel: &str, model: &str) -> Option<Duration> {
        let took = self.took.lock().ok()?;
        took.get(&(channel.to_string(), model.to_string())).copied()
    }

    /// What has been learned of `channel`'s jobs, by model.
    pub(crate) fn learned(&self, channel: &str) -> Vec<(String, Duration)> {
        let Ok(took) = self.took.lock() else {
            return Vec::new();
        };
        let mut out: Vec<_> = took
            .iter()
            .filter(|((c, _), _)| c == channel)
            .map(|((_, m), d)| (m.clone(), *d))
            .collect();
        out.sort();
        out
    }

    /// Delay from submit to the first poll.
    pub(crate) fn first_poll(&self, channel: &str, model: &str) -> Duration {
        self.estimate(channel, model)
            .map_or(COLD_FIRST_POLL, |e| e.mul_f64(jitter(0.8, 1.0)))
    }

    /// Delay before polling again a task still running `elapsed` after its
    /// submit.
    pub(crate) fn next_poll(&self, channel: &str, model: &str, elapsed: Duration) -> Duration {
        let base = match self.estimate(channel, model) {
            // Not due yet: wait until it should be, but not in tiny steps.
            Some(e) if elapsed < e => (e - elapsed).max(e / 10),
            // Overdue: look again soon, backing off as it drags on.
            Some(e) => (e / 10).max(elapsed / 8),
            None => elapsed / 4,
        };
        base.mul_f64(jitter(0.9, 1.1))
    }

    /// A job on `channel` for `model` finished successfully `took` after submit.
    pub(crate) fn finished(&self, channel: &str, model: &str, took: Duration) {
        let Ok(mut map) = self.took.lock() else {
            return;
        };
        map.entry((channel.to_string(), model.to_string()))
            .and_modify(|e| *e = e.mul_f64(1.0 - ALPHA) + took.mul_f64(ALPHA))
            .or_insert(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_channels_poll_soon_and_back_off() {
        let p = Pacer::default();
        assert_eq!(p.first_poll("c", "m"), COLD_FIRST_POLL);
        let later = p.next_poll("c", "m", Duration::from_secs(40));
        assert!((9.0..=11.0).contains(&later.as_secs_f64()), "{later:?}");
    }

    #[test]
    fn a_learned_duration_puts_the_first_poll_near_the_end() {
        let p = Pacer::default();
        for _ in 0..5 {
            p.finished("c", "m", Duration::from_secs(60));
        }
        for _ in 0..100 {
            let first = p.first_poll("c", "m").as_secs_f64();
            assert!((48.0..60.0).contains(&first), "{first}");
            // Found running at 55 s: the next look is 6 s on, not sooner.
            let next = p.next_poll("c", "m", Duration::from_secs(55)).as_secs_f64();
            assert!((5.4..=6.6).contains(&next), "{next}");
        }
        // Other models and channels learn separately.
        assert_eq!(p.first_poll("c", "other"), COLD_FIRST_POLL);
    }

    #[test]
    fn estimates_follow_jobs_getting_faster() {
        let p = Pacer::default();
        p.finished("c", "m", Duration::from_secs(60));
        for _ in 0..20 {
            p.finished("c", "m", Duration::from_secs(20));
        }
        let e = p.estimate("c", "m").unwrap().as_secs_f64();
        assert!((19.0..22.0).contains(&e), "{e}");
    }
}
