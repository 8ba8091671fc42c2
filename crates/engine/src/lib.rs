//! The background work: every accepted task is claimed with a lease,
//! submitted to a channel, polled until it ends, its results copied into
//! storage, and failed with `timeout` past its deadline. All state lives in
//! the store; a crash at any point only delays work until a lease expires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gengate_core::{Millis, Task, TaskKind, TaskState, TaskUpdate};
use gengate_providers::{PollOutcome, Provider, ProviderError, Submission};
use gengate_store::TaskStore;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

pub mod artifacts;
pub mod files;
pub mod inputs;

use files::FileStore;
use inputs::{InputError, InputFetcher};

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

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

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A named upstream: a provider and what it is called.
#[derive(Clone)]
pub struct Channel {
    pub name: String,
    pub provider: Arc<dyn Provider>,
}

/// Channels by name, and the one new tasks go to.
#[derive(Clone)]
pub struct Channels {
    by_name: HashMap<String, Channel>,
    default: String,
}

impl Channels {
    pub fn single(channel: Channel) -> Channels {
        let default = channel.name.clone();
        Channels {
            by_name: HashMap::from([(default.clone(), channel)]),
            default,
        }
    }

    /// The channel for a task: the one it is already on (follow-ups stay on
    /// their parent's), else the default.
    fn route(&self, task: &Task) -> Option<&Channel> {
        match &task.channel {
            Some(name) => self.by_name.get(name),
            None => self.by_name.get(&self.default),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.by_name.get(name)
    }
}

pub struct Engine {
    store: Arc<dyn TaskStore>,
    channels: Channels,
    files: FileStore,
    fetcher: InputFetcher,
    cfg: EngineConfig,
    worker_id: String,
    wake: Notify,
}

impl Engine {
    pub fn new(
        store: Arc<dyn TaskStore>,
        channels: Channels,
        files: FileStore,
        cfg: EngineConfig,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            channels,
            files,
            fetcher: InputFetcher::new(cfg.fetch_timeout),
            cfg,
            worker_id: format!("worker-{}", uuid::Uuid::new_v4()),
            wake: Notify::new(),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn files(&self) -> &FileStore {
        &self.files
    }

    /// New work is in the store: look now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claim and handle due tasks until `shutdown` turns true, then drain
    /// in-flight work for at most the configured bound.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency));
        let mut running = JoinSet::new();
        tracing::info!(worker = %self.worker_id, "engine started");
        while !*shutdown.borrow() {
            while running.try_join_next().is_some() {}
            let free = permits.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let limit = u32::try_from(free).unwrap_or(u32::MAX);
                match self
                    .store
                    .claim_due(&self.worker_id, now_ms(), ms(self.cfg.lease), limit)
                    .await
                {
                    Ok(tasks) => tasks,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming tasks failed");
                        Vec::new()
                    }
                }
            };
            let got = claimed.len();
            for task in claimed {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let me = self.clone();
                running.spawn(async move {
                    me.handle(task).await;
                    drop(permit);
                    me.wake();
                });
            }
            if got > 0 && got == free {
                continue;
            }
            let pause = self.idle_pause().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
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

    /// Sleep until the next task falls due, within bounds.
    async fn idle_pause(&self) -> Duration {
        let next = self.store.next_due_at().await.ok().flatten();
        let wait = next.map_or(1000, |at| (at - now_ms()).clamp(50, 1000));
        Duration::from_millis(u64::try_from(wait).unwrap_or(1000))
    }

    async fn handle(&self, task: Task) {
        let now = now_ms();
        let result = if now >= task.deadline_at {
            self.time_out(&task).await
        } else {
            match task.state {
                TaskState::Pending => self.dispatch(&task).await,
                TaskState::Processing => self.poll(&task).await,
                _ => Ok(()),
            }
        };
        if let Err(e) = result {
            tracing::error!(task = %task.id, error = %e, "store error while handling task");
        }
    }

    /// Apply an update; losing the compare-and-swap is normal (someone else
    /// moved the task) and changes nothing.
    async fn apply(
        &self,
        task: &Task,
        update: TaskUpdate,
    ) -> Result<(), gengate_store::StoreError> {
        if let Some(to) = update.state
            && !task.state.can_become(to)
        {
            tracing::error!(task = %task.id, from = ?task.state, ?to, "refused transition");
            return Ok(());
        }
        let applied = self
            .store
            .update_task(task.id, task.version, &update, now_ms())
            .await?;
        match (applied, update.state) {
            (None, _) => tracing::debug!(task = %task.id, "lost the race; leaving the task alone"),
            (Some(t), Some(st)) => {
                tracing::info!(task = %t.id, state = st.as_str(), seq = t.event_seq, "task changed state")
            }
            (Some(_), None) => {}
        }
        Ok(())
    }

    /// When to look again, never past the deadline.
    fn due(&self, task: &Task, after: Duration) -> Millis {
        now_ms().saturating_add(ms(after)).min(task.deadline_at)
    }

    /// Retry delay after the `attempt`-th failure: 1 s, 2 s, 4 s ... capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let secs = 1u64 << attempt.min(6);
        Duration::from_secs(secs).min(self.cfg.max_poll_interval)
    }

    async fn time_out(&self, task: &Task) -> Result<(), gengate_store::StoreError> {
        if let (Some(r), Some(ch)) = (
            &task.upstream_ref,
            task.channel.as_deref().and_then(|c| self.channels.get(c)),
        ) && let Err(e) = ch.provider.cancel(r).await
        {
            tracing::warn!(task = %task.id, error = %e, "upstream cancel after timeout failed");
        }
        self.apply(task, TaskUpdate::fail("timeout")).await
    }

    async fn dispatch(&self, task: &Task) -> Result<(), gengate_store::StoreError> {
        let Some(channel) = self.channels.route(task) else {
            return self
                .apply(
                    task,
                    TaskUpdate::fail(format!("no channel serves model {}", task.model)),
                )
                .await;
        };
        let inputs = match self
            .fetcher
            .resolve(task, &self.files, self.store.as_ref())
            .await
        {
            Ok(i) => i,
            Err(InputError::Bad(reason)) => {
                return self.apply(task, TaskUpdate::fail(reason)).await;
            }
            Err(InputError::Transient(why)) => return self.retry_later(task, &why).await,
        };
        let job = Submission {
            task,
            inputs,
            now: now_ms(),
        };
        match channel.provider.submit(job).await {
            Ok(sub) => {
                let first_poll = sub.poll_after.unwrap_or(Duration::from_secs(1));
                let update = TaskUpdate {
                    state: Some(TaskState::Processing),
                    channel: Some(channel.name.clone()),
                    upstream_ref: Some(sub.upstream_ref),
                    bump_attempts: true,
                    next_due_at: Some(self.due(task, first_poll.min(self.cfg.max_poll_interval))),
                    detail: Some(format!(
                        "submitted to channel {} ({})",
                        channel.name,
                        channel.provider.kind()
                    )),
                    ..TaskUpdate::default()
                };
                self.apply(task, update).await
            }
            Err(ProviderError::Permanent(reason)) => {
                self.apply(task, TaskUpdate::fail(reason)).await
            }
            Err(ProviderError::Auth(_)) => {
                tracing::error!(channel = %channel.name, "upstream refused the channel's credentials");
                self.retry_later(task, "channel credentials refused").await
            }
            Err(e @ (ProviderError::Retryable(_) | ProviderError::RateLimited { .. })) => {
                self.retry_later(task, &e.to_string()).await
            }
        }
    }

    /// A submit that may work later: count the attempt and wait, or give up.
    async fn retry_later(&self, task: &Task, why: &str) -> Result<(), gengate_store::StoreError> {
        if task.attempts + 1 >= self.cfg.max_attempts {
            return self
                .apply(
                    task,
                    TaskUpdate::fail(format!(
                        "upstream unavailable after {} attempts: {why}",
                        task.attempts + 1
                    )),
                )
                .await;
        }
        tracing::warn!(task = %task.id, attempt = task.attempts + 1, why, "submit will be retried");
        let update = TaskUpdate {
            bump_attempts: true,
            next_due_at: Some(self.due(task, self.backoff(task.attempts))),
            ..TaskUpdate::default()
        };
        self.apply(task, update).await
    }

    async fn poll(&self, task: &Task) -> Result<(), gengate_store::StoreError> {
        let (Some(upstream_ref), Some(channel)) = (
            task.upstream_ref.as_deref(),
            task.channel.as_deref().and_then(|c| self.channels.get(c)),
        ) else {
            return self
                .apply(
                    task,
                    TaskUpdate::fail("the task's channel is no longer configured"),
                )
                .await;
        };
        match channel.provider.poll(upstream_ref, now_ms()).await {
            Ok(PollOutcome::Running {
                progress,
                poll_after,
            }) => {
                let elapsed = Duration::from_millis(
                    u64::try_from(now_ms() - task.started_at.unwrap_or(task.created_at))
                        .unwrap_or(0),
                );
                // Soon after submit, then backing off as the job ages.
                let next = poll_after
                    .unwrap_or(elapsed / 4)
                    .clamp(Duration::from_millis(20), self.cfg.max_poll_interval);
                let update = TaskUpdate {
                    progress,
                    next_due_at: Some(self.due(task, next)),
                    ..TaskUpdate::default()
                };
                self.apply(task, update).await
            }
            Ok(PollOutcome::Failed(reason)) => self.apply(task, TaskUpdate::fail(reason)).await,
            Ok(PollOutcome::Succeeded(outputs)) => {
                match artifacts::mirror(task, outputs, &self.files, &self.fetcher.http).await {
                    Ok(arts) => {
                        let update = TaskUpdate {
                            state: Some(TaskState::Completed),
                            progress: Some(100),
                            artifacts: Some(arts),
                            ..TaskUpdate::default()
                        };
                        self.apply(task, update).await
                    }
                    Err(artifacts::MirrorError::BadResult(r)) => {
                        self.apply(task, TaskUpdate::fail(r)).await
                    }
                    Err(artifacts::MirrorError::Transient(why)) => {
                        tracing::warn!(task = %task.id, why, "storing results failed; will poll again");
                        self.poll_again(task).await
                    }
                }
            }
            Err(ProviderError::Permanent(reason)) => {
                self.apply(task, TaskUpdate::fail(reason)).await
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "poll failed; will poll again");
                self.poll_again(task).await
            }
        }
    }

    async fn poll_again(&self, task: &Task) -> Result<(), gengate_store::StoreError> {
        let update = TaskUpdate {
            next_due_at: Some(self.due(task, self.backoff(2))),
            ..TaskUpdate::default()
        };
        self.apply(task, update).await
    }
}
