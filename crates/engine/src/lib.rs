//! The background work: every accepted task is claimed with a lease,
//! submitted to a channel, polled until it ends, its results copied into
//! storage, and failed with `timeout` past its deadline. All state lives in
//! the store; a crash at any point only delays work until a lease expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gengate_core::{Millis, Task, TaskState};
use gengate_store::TaskStore;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

pub mod artifacts;
pub mod bad_keys;
mod channels;
mod config;
mod fetch;
pub mod inputs;
pub mod keys;
mod lifecycle;
pub mod net;
mod pacing;
pub mod prices;
pub mod request_counts;
pub mod service;
pub mod stills;
pub mod storage;
pub mod stored_channels;
pub mod sweeper;

mod transition;
pub mod upstream_callbacks;
pub mod webhooks;

pub use channels::{Channel, ChannelHealth, Channels, ProviderFactory};
pub use config::EngineConfig;
use config::ms;
use inputs::InputFetcher;
use storage::MediaStore;
pub use transition::TaskChanged;

/// Due polls at one channel, sent as one request.
type Batch = (Arc<Channel>, Vec<Task>);

/// How long the engine rests after a claim that found work, unless woken.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// How often stored channels are re-read.
const CHANNEL_RELOAD: Duration = Duration::from_secs(3);

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

pub struct Engine {
    store: Arc<dyn TaskStore>,
    channels: Channels,
    media: MediaStore,
    fetcher: InputFetcher,
    mirror: artifacts::Mirror,
    cfg: EngineConfig,
    worker_id: String,
    wake: Notify,
    pacer: pacing::Pacer,
    /// Shared by every instance through the store; read on first use.
    callback_secret: tokio::sync::OnceCell<Vec<u8>>,
    /// Every state change made here (see `transition`).
    changes: tokio::sync::broadcast::Sender<TaskChanged>,
    prices: prices::Prices,
    /// One per task being handled here, claimed or new.
    permits: Arc<Semaphore>,
    /// New tasks leased to this engine as they were stored, for `run`.
    fresh: mpsc::UnboundedSender<Fresh>,
    fresh_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Fresh>>>,
    /// `run` takes new tasks: set while it loops, cleared as it stops.
    taking: AtomicBool,
    /// `run`'s last claim took every free permit: a handler that ends
    /// frees room it waits for.
    starved: AtomicBool,
}

/// A new task leased to this engine, with the permit it holds.
type Fresh = (Task, OwnedSemaphorePermit);

impl Engine {
    pub fn new(
        store: Arc<dyn TaskStore>,
        channels: Channels,
        media: MediaStore,
        cfg: EngineConfig,
        policy: net::AddressPolicy,
    ) -> Arc<Engine> {
        let fetcher = InputFetcher::new(cfg.fetch_timeout, policy);
        let mirror = artifacts::Mirror::new(
            store.clone(),
            media.clone(),
            cfg.spool_dir.clone(),
            cfg.max_result_bytes,
        );
        let (fresh, fresh_rx) = mpsc::unbounded_channel();
        Arc::new(Engine {
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            fresh,
            fresh_rx: std::sync::Mutex::new(Some(fresh_rx)),
            taking: AtomicBool::new(false),
            starved: AtomicBool::new(false),
            prices: prices::Prices::new(cfg.prices.clone()),
            store,
            channels,
            mirror,
            media,
            fetcher,
            cfg,
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            wake: Notify::new(),
            pacer: pacing::Pacer::default(),
            callback_secret: tokio::sync::OnceCell::new(),
            changes: transition::changes_channel(),
        })
    }

    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    pub fn prices(&self) -> &prices::Prices {
        &self.prices
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Where results and inputs are stored.
    pub fn media(&self) -> &MediaStore {
        &self.media
    }

    /// How long jobs of `model` on `channel` have been taking, once learned.
    pub fn expected_duration(&self, channel: &str, model: &str) -> Option<Duration> {
        self.pacer.estimate(channel, model)
    }

    /// How long jobs on `channel` have been taking, by model (learned here).
    pub fn learned_durations(&self, channel: &str) -> Vec<(String, Duration)> {
        self.pacer.learned(channel)
    }

    /// The sweeper of expired files, for [`sweeper::Sweeper::run`].
    pub fn sweeper(&self) -> sweeper::Sweeper {
        sweeper::Sweeper::new(self.store.clone(), self.media.clone())
    }

    /// Use the store's channels and prices as they are now (after an admin
    /// change).
    pub async fn reload_channels(&self) -> Result<(), gengate_store::StoreError> {
        let stored = self.store.list_channels().await?;
        self.channels.set_stored(stored);
        self.prices.set_stored(self.store.list_prices().await?);
        Ok(())
    }

    /// Re-read the store's channels and prices every few seconds until
    /// `shutdown`, so a change made through another instance or the CLI
    /// reaches this one; the open task count (a gauge) with them.
    pub async fn watch_channels(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(e) = self.reload_channels().await {
                tracing::warn!(error = %e, "reading stored channels failed");
            }
            // The queue's depth, every instance's: what is accepted and unfinished.
            if let Ok(open) = self.store.open_task_count().await {
                metrics::gauge!("gengate_tasks_open").set(open as f64);
            }
            tokio::select! {
                _ = tokio::time::sleep(CHANNEL_RELOAD) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// New work is in the store: look now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Room for a new task to be handled here at once: a permit, when this
    /// instance's engine runs and has one free. New tasks take at most
    /// half the permits: the rest stay for claims,
    /// so a flood of submits never starves the polls of tasks in flight
    /// (nor tasks that waited in the store).
    pub(crate) fn fresh_slot(&self) -> Option<OwnedSemaphorePermit> {
        if !self.taking.load(Ordering::Acquire)
            || self.permits.available_permits() <= self.cfg.concurrency / 2
        {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The lease a new task handed to this engine is stored with.
    pub(crate) fn new_lease(&self) -> (&str, Millis) {
        (&self.worker_id, now_ms().saturating_add(ms(self.cfg.lease)))
    }

    /// Handle `task`, stored leased to this engine, with the permit
    /// [`Engine::fresh_slot`] gave. Should `run` have stopped meanwhile,
    /// the task stays in the store and is claimed once its lease lapses.
    pub(crate) fn start_fresh(&self, task: Task, permit: OwnedSemaphorePermit) {
        if self.fresh.send((task, permit)).is_err() {
            tracing::debug!("the engine has stopped; a new task waits for its lease to lapse");
        }
    }

    /// Move one task a step under `permit`, in `running`.
    fn spawn_handle(
        self: &Arc<Self>,
        running: &mut JoinSet<()>,
        task: Task,
        permit: OwnedSemaphorePermit,
    ) {
        let me = self.clone();
        self.spawn_handler(running, async move { me.handle(task).await }, permit);
    }

    /// Handle a task under `permit` in `running`, telling the loop when it
    /// ends if the loop waits for room.
    fn spawn_handler(
        self: &Arc<Self>,
        running: &mut JoinSet<()>,
        work: impl Future<Output = ()> + Send + 'static,
        permit: OwnedSemaphorePermit,
    ) {
        let me = self.clone();
        running.spawn(async move {
            work.await;
            drop(permit);
            if me.starved.load(Ordering::Acquire) {
                me.wake();
            }
        });
    }

    /// Claim and handle due tasks until `shutdown` turns true, then drain
    /// in-flight work for at most the configured bound.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let permits = self.permits.clone();
        let mut running = JoinSet::new();
        let taken = self.fresh_rx.lock().ok().and_then(|mut rx| rx.take());
        let Some(mut fresh) = taken else {
            tracing::error!("the engine is already running");
            return;
        };
        self.taking.store(true, Ordering::Release);
        tracing::info!(worker = %self.worker_id, "engine started");
        let mut failures = 0;
        while !*shutdown.borrow() {
            while running.try_join_next().is_some() {}
            while let Ok((task, permit)) = fresh.try_recv() {
                self.spawn_handle(&mut running, task, permit);
            }
            // The permits for this claim are taken first: new tasks take
            // permits meanwhile, and a task claimed without one would sit
            // leased and untouched until its lease lapsed.
            let mut reserved: Vec<OwnedSemaphorePermit> =
                std::iter::from_fn(|| permits.clone().try_acquire_owned().ok()).collect();
            let free = reserved.len();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self
                    .store
                    .claim_due(&self.worker_id, now_ms(), ms(self.cfg.lease), limit)
                    .await
                {
                    Ok(tasks) => {
                        failures = 0;
                        tasks
                    }
                    Err(e) => {
                        reserved.clear();
                        rest_after_store_failure("claim", &e, &mut failures, &mut shutdown).await;
                        continue;
                    }
                }
            };
            let got = claimed.len();
            self.starved.store(got == free, Ordering::Release);
            let (batches, singles) = self.batch_polls(claimed);
            for (channel, tasks) in batches {
                let Some(permit) = reserved.pop() else {
                    break;
                };
                let me = self.clone();
                let work = async move { me.poll_batch(&channel, tasks).await };
                self.spawn_handler(&mut running, work, permit);
            }
            for task in singles {
                let Some(permit) = reserved.pop() else {
                    break;
                };
                self.spawn_handle(&mut running, task, permit);
            }
            drop(reserved);
            if got > 0 && got == free {
                continue;
            }
            // Whatever was due is taken; what falls due next is read only
            // when nothing was (under load, the store is spared a read a turn).
            let pause = if got > 0 {
                BUSY_PAUSE
            } else {
                self.idle_pause().await
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.store.wait_for_work() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
                Some((task, permit)) = fresh.recv() => {
                    self.spawn_handle(&mut running, task, permit);
                }
            }
        }
        // New tasks stay with the store from here: their leases are released below.
        self.taking.store(false, Ordering::Release);
        drop(fresh);
        tracing::info!(in_flight = running.len(), "engine draining");
        let drained = tokio::time::timeout(self.cfg.drain_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = running.len(),
                "drain bound reached; unfinished tasks will be retaken on the next start"
            );
            running.abort_all();
        }
        match self.store.release_leases(&self.worker_id).await {
            Ok(n) if n > 0 => tracing::info!(released = n, "released leases"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "releasing leases failed"),
        }
        tracing::info!("engine stopped");
    }

    /// Split claimed tasks into batch polls (due polls at a channel whose
    /// upstream polls many at once, in batches of its size) and the rest,
    /// handled one by one.
    fn batch_polls(&self, claimed: Vec<Task>) -> (Vec<Batch>, Vec<Task>) {
        let now = now_ms();
        let mut groups: Vec<(Arc<Channel>, Vec<Task>)> = Vec::new();
        let mut singles = Vec::new();
        for task in claimed {
            let channel = (task.state == TaskState::Processing
                && task.upstream_ref.is_some()
                && now < task.deadline_at)
                .then(|| task.channel.as_deref().and_then(|c| self.channels.get(c)))
                .flatten()
                .filter(|c| {
                    task.upstream_ref
                        .as_deref()
                        .is_some_and(|r| c.provider.batches(r))
                });
            match channel {
                Some(c) => match groups.iter_mut().find(|(g, _)| g.name() == c.name()) {
                    Some((_, tasks)) => tasks.push(task),
                    None => groups.push((c, vec![task])),
                },
                None => singles.push(task),
            }
        }
        let mut batches = Vec::new();
        for (channel, tasks) in groups {
            let size = channel.provider.poll_batch_size();
            let mut tasks = tasks.into_iter().peekable();
            while tasks.peek().is_some() {
                batches.push((channel.clone(), tasks.by_ref().take(size).collect()));
            }
        }
        (batches, singles)
    }

    /// Sleep until the next task falls due, within bounds.
    async fn idle_pause(&self) -> Duration {
        let next = self.store.next_due_at().await.ok().flatten();
        let wait = next.map_or(1000, |at| (at - now_ms()).clamp(50, 1000));
        Duration::from_millis(u64::try_from(wait).unwrap_or(1000))
    }
}

/// A background loop's claim `op` failed: count and log it, and rest
/// (doubling, see [`store_backoff`]) unless shutdown comes first.
pub(crate) async fn rest_after_store_failure(
    op: &'static str,
    error: &gengate_store::StoreError,
    failures: &mut u32,
    shutdown: &mut watch::Receiver<bool>,
) {
    *failures += 1;
    tracing::error!(error = %error, failures = *failures, op, "claiming work failed; backing off");
    metrics::counter!("gengate_store_errors_total", "op" => op).increment(1);
    tokio::select! {
        _ = tokio::time::sleep(store_backoff(*failures)) => {}
        _ = shutdown.changed() => {}
    }
}

/// How long a background loop rests after its store failed `failures`
/// times in a row: doubling from 250 ms to 8 s, so an outage costs a
/// request and a log line every few seconds, not a storm.
pub(crate) fn store_backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.saturating_sub(1).min(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_backoff_doubles_from_a_quarter_second_to_eight() {
        let waits: Vec<u64> = (1..=8)
            .map(|n| store_backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    }
}
