//! Channels: the configured upstreams, which ones a task may go to, and how
//! healthy each has been lately. A channel that keeps failing is cooled
//! down (skipped while others can serve) and tried again once its cooling
//! ends: that try is the probe, and a success makes it healthy again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gengate_core::{ChannelSpec, Task, channel};
use gengate_providers::Provider;

/// Consecutive failures that cool a channel down.
const FAILURES_TO_COOL: u32 = 3;
/// First cooling period; each further failure while cool doubles it.
const COOL_FOR: Duration = Duration::from_secs(15);
const MAX_COOL: Duration = Duration::from_secs(300);

/// A configured upstream: its settings and the adapter speaking to it.
#[derive(Clone)]
pub struct Channel {
    pub spec: ChannelSpec,
    pub provider: Arc<dyn Provider>,
}

impl Channel {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
}

#[derive(Default)]
struct Health {
    failures: u32,
    cool_until: Option<Instant>,
}

pub struct Channels {
    list: Vec<Channel>,
    specs: Vec<ChannelSpec>,
    health: Mutex<HashMap<String, Health>>,
}

impl Channels {
    pub fn new(list: Vec<Channel>) -> Channels {
        let specs = list.iter().map(|c| c.spec.clone()).collect();
        Channels {
            list,
            specs,
            health: Mutex::default(),
        }
    }

    /// The channels to try for a task, best first. A task already on a
    /// channel (a follow-up such as extend, or one submitted before) stays
    /// there; others go to the healthy channels serving their model, or,
    /// when every one of those is cooling down, to all of them.
    pub(crate) fn route(&self, task: &Task) -> Vec<&Channel> {
        if let Some(name) = &task.channel {
            return self.get(name).into_iter().collect();
        }
        let now = Instant::now();
        let cooling = |c: &ChannelSpec| {
            self.health.lock().is_ok_and(|h| {
                h.get(&c.name)
                    .and_then(|h| h.cool_until)
                    .is_some_and(|t| t > now)
            })
        };
        let mut picked =
            channel::candidates(&self.specs, &task.model, |c| !cooling(c), rand::random);
        if picked.is_empty() {
            picked = channel::candidates(&self.specs, &task.model, |_| true, rand::random);
        }
        picked.into_iter().map(|i| &self.list[i]).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.list.iter().find(|c| c.spec.name == name)
    }

    /// Whether any enabled channel serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        !channel::candidates(&self.specs, model, |_| true, || 1.0).is_empty()
    }

    pub(crate) fn succeeded(&self, channel: &Channel) {
        if let Ok(mut h) = self.health.lock() {
            h.remove(channel.name());
        }
    }

    /// Count a failure that says the channel, not the task, is in trouble.
    pub(crate) fn failed(&self, channel: &Channel) {
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        let h = h.entry(channel.name().to_string()).or_default();
        h.failures += 1;
        if h.failures >= FAILURES_TO_COOL {
            let doublings = (h.failures - FAILURES_TO_COOL).min(8);
            let cool = (COOL_FOR * 2u32.pow(doublings)).min(MAX_COOL);
            h.cool_until = Some(Instant::now() + cool);
            tracing::warn!(
                channel = channel.name(),
                failures = h.failures,
                cool_secs = cool.as_secs(),
                "channel keeps failing; cooling it down"
            );
        }
    }
}
