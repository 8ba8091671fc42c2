//! Channels: the configured upstreams, which ones a task may go to, and how
//! healthy each has been lately. A channel that keeps failing is cooled
//! down (skipped while others can serve) and tried again once its cooling
//! ends: that try is the probe, and a success makes it healthy again.
//! Each channel's own limits are kept here too: requests per second (in
//! this instance) and tasks in flight (all instances, from the store).
//!
//! Channels come from `gengate.toml` (fixed while running) and from the
//! store (added through the admin API or CLI, re-read while running).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gengate_core::{ChannelSpec, NewTask, PriceBook, SpecError, Task, channel};
use gengate_providers::Provider;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Consecutive failures that cool a channel down.
const FAILURES_TO_COOL: u32 = 3;
/// First cooling period; each further failure while cool doubles it.
const COOL_FOR: Duration = Duration::from_secs(15);
const MAX_COOL: Duration = Duration::from_secs(300);

/// How long in-flight counts read from the store are trusted.
const IN_FLIGHT_FRESH: Duration = Duration::from_secs(1);

/// A configured upstream: its settings, the adapter speaking to it, and
/// the pace its requests are held to.
pub struct Channel {
    pub spec: ChannelSpec,
    pub provider: Arc<dyn Provider>,
    /// `spec.cost` as a price book, for what a completed task cost upstream.
    pub cost: PriceBook,
    rate: Option<DefaultDirectRateLimiter>,
    requests: Arc<tokio::sync::Semaphore>,
}

/// How long a request waits, about, when the channel has none free.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// Requests under way at once to one channel, unless its spec says: as many
/// as the engine handles at once (bench scenario 7: with 32, polls of 1 000
/// open tasks at 200 ms each queued past the 30 s interval, 32.4 s; with 64,
/// 16.1 s).
const MAX_CONCURRENT_REQUESTS: u32 = 64;

impl Channel {
    pub fn new(spec: ChannelSpec, provider: Arc<dyn Provider>) -> Channel {
        // A burst of one second's worth, at least one request.
        let rate = spec.rate_limit_per_sec.and_then(|r| {
            let burst = NonZeroU32::new(r.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)?;
            Some(RateLimiter::direct(
                // Never a panic on a rate the checks let through: no limiter.
                Quota::with_period(Duration::try_from_secs_f64(1.0 / r).ok()?)?.allow_burst(burst),
            ))
        });
        let requests = spec
            .max_concurrent_requests
            .unwrap_or(MAX_CONCURRENT_REQUESTS);
        Channel {
            cost: PriceBook::new(spec.cost.iter().cloned()),
            spec,
            provider,
            rate,
            requests: Arc::new(tokio::sync::Semaphore::new(requests as usize)),
        }
    }

    /// Leave to send one request now: a place among the channel's
    /// requests under way (held until the permit drops) and a token of its
    /// rate; otherwise how long to wait.
    pub(crate) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Duration> {
        let slot = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| SLOT_WAIT.mul_f64(0.5 + rand::random::<f64>()))?;
        self.take_request()?;
        Ok(slot)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Take one request from the channel's rate, or say how long to wait.
    fn take_request(&self) -> Result<(), Duration> {
        match &self.rate {
            None => Ok(()),
            Some(r) => r
                .check()
                .map_err(|n| n.wait_time_from(DefaultClock::default().now())),
        }
    }
}

#[derive(Default)]
struct Health {
    failures: u32,
    cool_until: Option<Instant>,
}

/// A channel's health as this instance sees it (for operators).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChannelHealth {
    /// Skipped while other channels can serve.
    pub cooling: bool,
    pub cool_remaining_secs: Option<u64>,
    /// Failures in a row that said the channel was in trouble.
    pub consecutive_failures: u32,
    /// Requests to its upstream in the last 60 s, and those that failed.
    pub requests_last_minute: u32,
    pub errors_last_minute: u32,
}

/// Requests to one channel over the last minute, a bucket per second:
/// (the second, requests, errors).
struct Activity([(u64, u32, u32); 60]);

impl Activity {
    fn record(&mut self, second: u64, error: bool) {
        let slot = &mut self.0[(second % 60) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u32::from(error);
    }

    fn last_minute(&self, second: u64) -> (u32, u32) {
        self.0
            .iter()
            .filter(|s| second.saturating_sub(s.0) < 60 && s.0 <= second)
            .fold((0, 0), |(r, e), s| (r + s.1, e + s.2))
    }
}

fn this_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tasks in flight per channel: the store's count (plus this instance's
/// submits recorded since it was read), and places reserved by submits
/// under way, which the store cannot count yet.
#[derive(Default)]
struct InFlight {
    read_at: Option<Instant>,
    counts: HashMap<String, u64>,
    reserved: HashMap<String, u64>,
}

/// Builds the adapter a channel speaks through.
pub type ProviderFactory =
    Arc<dyn Fn(&ChannelSpec) -> Result<Arc<dyn Provider>, SpecError> + Send + Sync>;

/// The channels in use at one moment.
#[derive(Default)]
struct Set {
    list: Vec<Arc<Channel>>,
    specs: Vec<ChannelSpec>,
}

pub struct Channels {
    set: RwLock<Arc<Set>>,
    /// From `gengate.toml`: always first, never changed while running.
    file: Vec<ChannelSpec>,
    factory: ProviderFactory,
    health: Mutex<HashMap<String, Health>>,
    in_flight: Mutex<InFlight>,
    activity: Mutex<HashMap<String, Activity>>,
}

impl Channels {
    /// The channels of `gengate.toml`; each must build.
    pub fn new(file: Vec<ChannelSpec>, factory: ProviderFactory) -> Result<Channels, SpecError> {
        let list = file
            .iter()
            .map(|spec| Ok(Arc::new(Channel::new(spec.clone(), factory(spec)?))))
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(Channels {
            set: RwLock::new(Arc::new(Set {
                list,
                specs: file.clone(),
            })),
            file,
            factory,
            health: Mutex::default(),
            in_flight: Mutex::default(),
            activity: Mutex::default(),
        })
    }

    fn current(&self) -> Arc<Set> {
        self.set.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The channels `gengate.toml` defines (read-only while running).
    pub fn file_specs(&self) -> &[ChannelSpec] {
        &self.file
    }

    /// Every channel in use now, `gengate.toml`'s first.
    pub fn snapshot(&self) -> Vec<Arc<Channel>> {
        self.current().list.clone()
    }

    /// Whether `spec` could be used: its fields, and its adapter builds.
    pub fn check(&self, spec: &ChannelSpec) -> Result<(), SpecError> {
        spec.check()?;
        (self.factory)(spec).map(|_| ())
    }

    /// Use `stored` (the store's channels) beside `gengate.toml`'s. A
    /// channel whose settings did not change keeps its adapter and rate
    /// limiter; one that does not build, or whose name `gengate.toml`
    /// already uses, is left out with an error logged.
    pub fn set_stored(&self, stored: Vec<ChannelSpec>) {
        let old = self.current();
        let mut list: Vec<Arc<Channel>> = old.list[..self.file.len()].to_vec();
        for spec in stored {
            if list.iter().any(|c| c.spec.name == spec.name) {
                tracing::error!(
                    channel = spec.name,
                    "a stored channel has the name of one in gengate.toml; left out"
                );
                continue;
            }
            if let Some(same) = old.list.iter().find(|c| c.spec == spec) {
                list.push(same.clone());
                continue;
            }
            match spec.check().and_then(|()| (self.factory)(&spec)) {
                Ok(provider) => {
                    tracing::info!(channel = spec.name, "channel (re)loaded");
                    list.push(Arc::new(Channel::new(spec, provider)));
                }
                Err(e) => {
                    tracing::error!(channel = spec.name, error = %e, "stored channel left out")
                }
            }
        }
        let specs = list.iter().map(|c| c.spec.clone()).collect();
        if let Ok(mut set) = self.set.write() {
            *set = Arc::new(Set { list, specs });
        }
    }

    /// The channels to try for a task, best first. A task already on a
    /// channel (a follow-up such as extend, or one submitted before) stays
    /// there; others go to the healthy channels serving their model, or,
    /// when every one of those is cooling down, to all of them.
    pub(crate) fn route(&self, task: &Task) -> Vec<Arc<Channel>> {
        if let Some(name) = &task.channel {
            return self.get(name).into_iter().collect();
        }
        let set = self.current();
        let now = Instant::now();
        let cooling = |c: &ChannelSpec| {
            self.health.lock().is_ok_and(|h| {
                h.get(&c.name)
                    .and_then(|h| h.cool_until)
                    .is_some_and(|t| t > now)
            })
        };
        let makes = |i: &usize| {
            let provider = &set.list[*i].provider;
            provider.makes(task.kind) && provider.refuses(&task.request).is_none()
        };
        let mut picked: Vec<usize> =
            channel::candidates(&set.specs, &task.model, |c| !cooling(c), rand::random)
                .into_iter()
                .filter(makes)
                .collect();
        if picked.is_empty() {
            picked = channel::candidates(&set.specs, &task.model, |_| true, rand::random)
                .into_iter()
                .filter(makes)
                .collect();
        }
        picked.into_iter().map(|i| set.list[i].clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Channel>> {
        self.current()
            .list
            .iter()
            .find(|c| c.spec.name == name)
            .cloned()
    }

    /// The deadline channels set for `model`: the longest any enabled
    /// channel serving it asks for, so no channel's jobs are cut short.
    pub fn deadline_for(&self, model: &str) -> Option<Duration> {
        self.current()
            .specs
            .iter()
            .filter(|c| c.enabled && c.upstream_model(model).is_some())
            .filter_map(|c| c.deadline_secs.get(model))
            .max()
            .map(|s| Duration::from_secs(*s))
    }

    /// What of `new` no enabled channel serving its model and making its
    /// kind takes (the first such channel's refusal), for a 400 naming it;
    /// `None` when one takes it all (or none serves the model).
    pub fn refusal(&self, new: &NewTask) -> Option<gengate_providers::Unsupported> {
        let set = self.current();
        let able: Vec<_> = channel::candidates(&set.specs, &new.model, |_| true, || 1.0)
            .into_iter()
            .map(|i| &set.list[i].provider)
            .filter(|p| p.makes(new.kind))
            .collect();
        if able.iter().any(|p| p.refuses(&new.request).is_none()) {
            return None;
        }
        able.first().and_then(|p| p.refuses(&new.request))
    }

    /// Whether any enabled channel serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        !channel::candidates(&self.current().specs, model, |_| true, || 1.0).is_empty()
    }

    /// Whether the in-flight counts should be read again from the store;
    /// answering yes marks them read, so concurrent dispatches read once.
    pub(crate) fn in_flight_stale(&self) -> bool {
        if self
            .current()
            .specs
            .iter()
            .all(|s| s.max_in_flight.is_none())
        {
            return false;
        }
        let Ok(mut f) = self.in_flight.lock() else {
            return false;
        };
        if f.read_at.is_some_and(|t| t.elapsed() < IN_FLIGHT_FRESH) {
            return false;
        }
        f.read_at = Some(Instant::now());
        true
    }

    pub(crate) fn set_in_flight(&self, counts: Vec<(String, u64)>) {
        if let Ok(mut f) = self.in_flight.lock() {
            f.counts = counts.into_iter().collect();
        }
    }

    /// Take a place for one more task on the channel, if it has room (one
    /// check and count, so concurrent dispatches cannot both take the last).
    pub(crate) fn reserve(&self, channel: &Channel) -> bool {
        let Some(max) = channel.spec.max_in_flight else {
            return true;
        };
        let Ok(mut f) = self.in_flight.lock() else {
            return false;
        };
        let stored = f.counts.get(channel.name()).copied().unwrap_or(0);
        let reserved = f.reserved.entry(channel.name().to_string()).or_default();
        if stored + *reserved >= u64::from(max) {
            return false;
        }
        *reserved += 1;
        true
    }

    /// End a reservation: `submitted` when the task is now recorded as in
    /// flight on the channel, otherwise the place is given back.
    pub(crate) fn settle(&self, channel: &Channel, submitted: bool) {
        if channel.spec.max_in_flight.is_none() {
            return;
        }
        if let Ok(mut f) = self.in_flight.lock() {
            if let Some(n) = f.reserved.get_mut(channel.name()) {
                *n = n.saturating_sub(1);
            }
            if submitted {
                *f.counts.entry(channel.name().to_string()).or_default() += 1;
            }
        }
    }

    /// Count a request to `channel`'s upstream (`error`: it failed).
    pub(crate) fn record_request(&self, channel: &Channel, error: bool) {
        if let Ok(mut a) = self.activity.lock() {
            a.entry(channel.name().to_string())
                .or_insert(Activity([(0, 0, 0); 60]))
                .record(this_second(), error);
        }
    }

    /// How channel `name` has been doing, as this instance saw it.
    pub fn health(&self, name: &str) -> ChannelHealth {
        let mut out = ChannelHealth::default();
        if let Ok(h) = self.health.lock()
            && let Some(h) = h.get(name)
        {
            out.consecutive_failures = h.failures;
            let left = h
                .cool_until
                .map(|t| t.saturating_duration_since(Instant::now()));
            out.cool_remaining_secs = left.filter(|d| !d.is_zero()).map(|d| d.as_secs().max(1));
            out.cooling = out.cool_remaining_secs.is_some();
        }
        if let Ok(a) = self.activity.lock()
            && let Some(a) = a.get(name)
        {
            (out.requests_last_minute, out.errors_last_minute) = a.last_minute(this_second());
        }
        out
    }

    pub(crate) fn succeeded(&self, channel: &Channel) {
        if let Ok(mut h) = self.health.lock()
            && h.remove(channel.name())
                .is_some_and(|was| was.cool_until.is_some())
        {
            metrics::gauge!("gengate_channel_cooling", "channel" => channel.name().to_string())
                .set(0.0);
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
            metrics::gauge!("gengate_channel_cooling", "channel" => channel.name().to_string())
                .set(1.0);
            tracing::warn!(
                channel = channel.name(),
                failures = h.failures,
                cool_secs = cool.as_secs(),
                "channel keeps failing; cooling it down"
            );
        }
    }
}
