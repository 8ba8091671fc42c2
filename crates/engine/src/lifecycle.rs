//! One claimed task, moved one step along its life: dispatched to its
//! channel, polled, completed with its results stored, failed, or timed out.
//! Every change is a compare-and-swap; losing one changes nothing.

use std::time::Duration;

use gengate_core::{Millis, Task, TaskState, TaskUpdate};
use gengate_providers::{Output, PollOutcome, ProviderError, Submission};
use gengate_store::StoreError;

use crate::channels::Channel;
use crate::config::ms;
use crate::inputs::InputError;
use crate::upstream_callbacks::fallback_poll;
use crate::{Engine, artifacts, now_ms};

/// How long a task has been at its upstream (since it was submitted).
fn running_for(task: &Task) -> Duration {
    let since = task.started_at.unwrap_or(task.created_at);
    Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0))
}

impl Engine {
    /// Count one upstream request by channel, operation and outcome class,
    /// in the metrics and in the channel's health.
    fn count_request<T>(
        &self,
        channel: &Channel,
        op: &'static str,
        result: &Result<T, ProviderError>,
    ) {
        self.channels.record_request(channel, result.is_err());
        let outcome = match result {
            Ok(_) => "ok",
            Err(ProviderError::Retryable(_)) => "retryable",
            Err(ProviderError::RateLimited { .. }) => "rate_limited",
            Err(ProviderError::Permanent(_)) => "permanent",
            Err(ProviderError::Refused(_)) => "refused",
            Err(ProviderError::Auth(_)) => "auth",
        };
        metrics::counter!(
            "gengate_upstream_requests_total",
            "channel" => channel.name().to_string(),
            "op" => op,
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// The update that completes a task with its stored results.
fn completed(artifacts: Vec<gengate_core::Artifact>) -> TaskUpdate {
    TaskUpdate {
        state: Some(TaskState::Completed),
        progress: Some(100),
        artifacts: Some(artifacts),
        ..TaskUpdate::default()
    }
}

/// Whether tasks on `channel` are told of by callbacks (polls fall back).
fn uses_callbacks(channel: &Channel) -> bool {
    channel.spec.callbacks && channel.provider.calls_back()
}

/// How long a task waits when every channel for it is full.
const FULL_WAIT: Duration = Duration::from_secs(1);
/// How soon a task that waits on our storage or database is looked at again.
const OUR_SIDE_RETRY: Duration = Duration::from_secs(5);

/// Channels one dispatch tries before waiting to try again.
const MAX_CHANNELS_PER_DISPATCH: usize = 3;

impl Engine {
    pub(crate) async fn handle(&self, task: Task) {
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
    pub(crate) async fn apply(&self, task: &Task, update: TaskUpdate) -> Result<(), StoreError> {
        self.transition(task, update).await.map(|_| ())
    }

    /// Run `work` (fetching inputs, an upstream request, storing results)
    /// while keeping this worker's lease on `task`, so slow work is not
    /// retaken and done twice meanwhile. A task settled from a callback is
    /// not leased: its extensions find no lease and change nothing.
    async fn keeping_lease<T>(&self, task: &Task, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(self.cfg.lease / 3) => {
                    let until = now_ms().saturating_add(ms(self.cfg.lease));
                    match self.store.extend_lease(task.id, &self.worker_id, until).await {
                        Ok(true) => {}
                        Ok(false) => tracing::debug!(task = %task.id, "no lease of ours to extend"),
                        Err(e) => tracing::warn!(task = %task.id, error = %e, "extending a lease failed"),
                    }
                }
            }
        }
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

    async fn time_out(&self, task: &Task) -> Result<(), StoreError> {
        // Awaited here, within the engine's bounded work: tasks timing out
        // together never send an unbounded burst of cancels upstream.
        if let Some(done) = self.transition(task, TaskUpdate::fail("timeout")).await? {
            self.cancel_upstream(&done).await;
        }
        Ok(())
    }

    /// Ask the upstream of a task that ended here (canceled, timed out) to
    /// stop its job, best effort: the task's state is settled already.
    pub(crate) async fn cancel_upstream(&self, task: &Task) {
        let (Some(upstream), Some(channel)) = (
            task.upstream_ref.as_deref(),
            task.channel.as_deref().and_then(|c| self.channels.get(c)),
        ) else {
            return;
        };
        if let Err(e) = channel.provider.cancel(upstream).await {
            tracing::warn!(task = %task.id, error = %e, "upstream cancel failed");
        }
    }

    async fn dispatch(&self, task: &Task) -> Result<(), StoreError> {
        let channels = self.channels.route(task);
        if channels.is_empty() {
            return self
                .apply(
                    task,
                    TaskUpdate::fail(format!(
                        "no channel makes {} tasks of model {}",
                        task.kind.as_str(),
                        task.model
                    )),
                )
                .await;
        }
        let inputs = match self
            .keeping_lease(
                task,
                self.fetcher.resolve(task, &self.media, self.store.as_ref()),
            )
            .await
        {
            Ok(i) => i,
            Err(InputError::Bad(reason)) => {
                return self.apply(task, TaskUpdate::fail(reason)).await;
            }
            Err(InputError::Transient(why)) => return self.wait_on_our_side(task, &why).await,
        };
        self.refresh_in_flight().await;
        // Fail over: a channel in trouble passes the task to the next one.
        // One at its limits is passed over without a request.
        let (mut why, mut tried, mut wait) = (String::new(), 0, None::<Duration>);
        for channel in channels.iter().map(|c| &**c) {
            if tried == MAX_CHANNELS_PER_DISPATCH {
                break;
            }
            let _slot = match channel.admit() {
                Ok(slot) => slot,
                Err(w) => {
                    why = format!("channel {} is at its request limits", channel.name());
                    wait = Some(wait.map_or(w, |x| x.min(w)));
                    continue;
                }
            };
            if !self.channels.reserve(channel) {
                why = format!("channel {} is at its max_in_flight", channel.name());
                wait = Some(wait.map_or(FULL_WAIT, |x| x.min(FULL_WAIT)));
                continue;
            }
            tried += 1;
            let callback_url = self.callback_url(channel, task).await;
            let job = Submission {
                task,
                model: channel
                    .spec
                    .upstream_model(&task.model)
                    .unwrap_or(&task.model),
                inputs: inputs.images.clone(),
                parent_upstream_ref: inputs.parent_upstream_ref.as_deref(),
                now: now_ms(),
                callback_url: callback_url.as_deref(),
            };
            let submitted = self.keeping_lease(task, channel.provider.submit(job)).await;
            self.count_request(channel, "submit", &submitted);
            match submitted {
                Ok(sub) => {
                    self.channels.succeeded(channel);
                    // A synchronous upstream answered with the results: they
                    // are stored while the lease still holds, so the task is
                    // never left waiting for a poll that cannot find them.
                    let artifacts = match sub.outputs {
                        None => None,
                        Some(outputs) => {
                            match self.keeping_lease(task, self.mirror.store(outputs)).await {
                                Ok(arts) => Some(arts),
                                Err(artifacts::MirrorError::BadResult(r)) => {
                                    self.channels.settle(channel, false);
                                    return self.apply(task, TaskUpdate::fail(r)).await;
                                }
                                // The upstream did its part; submitted again
                                // once storage is back.
                                Err(artifacts::MirrorError::Transient(why)) => {
                                    self.channels.settle(channel, false);
                                    return self.wait_on_our_side(task, &why).await;
                                }
                            }
                        }
                    };
                    let first_poll = sub
                        .poll_after
                        .unwrap_or_else(|| self.pacer.first_poll(channel.name(), &task.model));
                    let first_poll = if callback_url.is_some() {
                        fallback_poll(self.pacer.estimate(channel.name(), &task.model))
                    } else {
                        first_poll.min(self.cfg.max_poll_interval)
                    };
                    let update = TaskUpdate {
                        state: Some(TaskState::Processing),
                        channel: Some(channel.name().to_string()),
                        upstream_ref: Some(sub.upstream_ref.clone()),
                        bump_attempts: true,
                        next_due_at: Some(self.due(task, first_poll)),
                        detail: Some(format!(
                            "submitted to channel {} ({})",
                            channel.name(),
                            channel.provider.kind()
                        )),
                        ..TaskUpdate::default()
                    };
                    let upstream_ref = sub.upstream_ref.clone();
                    // With its results, the task completes in the same write.
                    let finished = artifacts.is_some();
                    let steps = match artifacts {
                        Some(arts) => vec![update, completed(arts)],
                        None => vec![update],
                    };
                    let stored = self.transition_through(task, steps).await?;
                    self.channels.settle(channel, stored.is_some());
                    return match stored {
                        Some(task) => {
                            if finished {
                                let took = running_for(&task);
                                self.pacer.finished(channel.name(), &task.model, took);
                            }
                            Ok(())
                        }
                        // Canceled (or retaken) while the submit ran: the
                        // upstream job is nobody's now, so stop it if it can be.
                        None => {
                            if let Err(e) = channel.provider.cancel(&upstream_ref).await {
                                tracing::warn!(task = %task.id, error = %e, "canceling an orphaned upstream job failed");
                            }
                            Ok(())
                        }
                    };
                }
                Err(ProviderError::Permanent(reason)) => {
                    self.channels.settle(channel, false);
                    return self.apply(task, TaskUpdate::upstream_failed(reason)).await;
                }
                // The adapter could not send it as asked: gengate's refusal.
                Err(ProviderError::Refused(reason)) => {
                    self.channels.settle(channel, false);
                    return self.apply(task, TaskUpdate::fail(reason)).await;
                }
                Err(e) => {
                    self.channels.settle(channel, false);
                    if let ProviderError::Auth(detail) = &e {
                        tracing::error!(
                            channel = channel.name(),
                            detail,
                            "upstream refused the channel's credentials"
                        );
                    } else {
                        tracing::warn!(task = %task.id, channel = channel.name(), error = %e, "submit failed; trying the next channel");
                    }
                    self.channels.failed(channel);
                    why = format!("channel {}: {}", channel.name(), e);
                }
            }
        }
        match wait {
            // Nothing was tried: every channel was full or at its rate. Wait
            // without spending an attempt; the task has done nothing wrong.
            Some(w) if tried == 0 => {
                tracing::debug!(task = %task.id, why, "waiting for channel capacity");
                let update = TaskUpdate {
                    next_due_at: Some(self.due(task, w.max(Duration::from_millis(50)))),
                    ..TaskUpdate::default()
                };
                self.apply(task, update).await
            }
            _ => self.retry_later(task, &why).await,
        }
    }

    /// Read how many tasks each channel has in flight, when a channel has a
    /// `max_in_flight` and the last reading is over a second old.
    async fn refresh_in_flight(&self) {
        if !self.channels.in_flight_stale() {
            return;
        }
        match self.store.in_flight_by_channel().await {
            Ok(counts) => self.channels.set_in_flight(counts),
            Err(e) => tracing::warn!(error = %e, "reading in-flight counts failed"),
        }
    }

    /// A submit that may work later: count the attempt and wait, or give up.
    /// Our side (storage, the database) failed, not the upstream: no
    /// attempt is counted and no channel blamed; the task is looked at again
    /// shortly, until our side is back or its deadline passes.
    async fn wait_on_our_side(&self, task: &Task, why: &str) -> Result<(), StoreError> {
        tracing::warn!(task = %task.id, why, "our side is unavailable; the task waits for it");
        metrics::counter!("gengate_tasks_waiting_on_storage_total").increment(1);
        let update = TaskUpdate {
            next_due_at: Some(self.due(task, OUR_SIDE_RETRY)),
            ..TaskUpdate::default()
        };
        self.apply(task, update).await
    }

    async fn retry_later(&self, task: &Task, why: &str) -> Result<(), StoreError> {
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

    async fn poll(&self, task: &Task) -> Result<(), StoreError> {
        let (Some(upstream_ref), Some(channel)) = (
            task.upstream_ref.as_deref(),
            task.channel.as_deref().and_then(|c| self.channels.get(c)),
        ) else {
            // Its channel is not loaded here (a stored channel that does not
            // build on this instance, or one being changed): look again
            // later; the deadline ends the task if it never comes back.
            tracing::warn!(task = %task.id, channel = ?task.channel, "the task's channel is not loaded; polling later");
            return self.poll_again(task).await;
        };
        let channel = &*channel;
        let slot = match channel.admit() {
            Ok(slot) => slot,
            Err(wait) => {
                let update = TaskUpdate {
                    next_due_at: Some(self.due(task, wait.max(Duration::from_millis(50)))),
                    ..TaskUpdate::default()
                };
                return self.apply(task, update).await;
            }
        };
        let asked_at = now_ms();
        let outcome = self
            .keeping_lease(task, channel.provider.poll(upstream_ref, asked_at))
            .await;
        drop(slot);
        self.count_request(channel, "poll", &outcome);
        match &outcome {
            Ok(_) | Err(ProviderError::Permanent(_) | ProviderError::Refused(_)) => {
                self.channels.succeeded(channel)
            }
            Err(_) => self.channels.failed(channel),
        }
        self.settle_poll(task, channel, outcome, asked_at).await
    }

    /// Poll `tasks`, all at `channel` and due, in one batch request (for
    /// upstreams with a batch endpoint).
    pub(crate) async fn poll_batch(&self, channel: &Channel, tasks: Vec<Task>) {
        let result = async {
            let slot = match channel.admit() {
                Ok(slot) => slot,
                Err(wait) => {
                    for task in &tasks {
                        let update = TaskUpdate {
                            next_due_at: Some(self.due(task, wait.max(Duration::from_millis(50)))),
                            ..TaskUpdate::default()
                        };
                        self.apply(task, update).await?;
                    }
                    return Ok(());
                }
            };
            let refs: Vec<&str> = tasks
                .iter()
                .map(|t| t.upstream_ref.as_deref().unwrap_or_default())
                .collect();
            let asked_at = now_ms();
            let outcomes = channel.provider.poll_batch(&refs, asked_at).await;
            drop(slot);
            // One request, counted once: ok unless every task's answer failed alike.
            let overall = match outcomes.iter().find(|o| o.is_ok()) {
                Some(_) => Ok(()),
                None => match outcomes.first() {
                    Some(Err(e)) => Err(e.clone()),
                    _ => Ok(()),
                },
            };
            self.count_request(channel, "poll_batch", &overall);
            match &overall {
                Ok(()) | Err(ProviderError::Permanent(_) | ProviderError::Refused(_)) => {
                    self.channels.succeeded(channel)
                }
                Err(_) => self.channels.failed(channel),
            }
            for (task, outcome) in tasks.iter().zip(outcomes) {
                self.settle_poll(task, channel, outcome, asked_at).await?;
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(channel = channel.name(), error = %e, "store error while polling a batch");
        }
    }

    /// Apply what a poll (or a callback) said about a task; `asked_at` is
    /// when the upstream was asked, which the next look counts from.
    pub(crate) async fn settle_poll(
        &self,
        task: &Task,
        channel: &Channel,
        outcome: Result<PollOutcome, ProviderError>,
        asked_at: Millis,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(PollOutcome::Running {
                progress,
                poll_after,
            }) => {
                let next = if uses_callbacks(channel) {
                    fallback_poll(self.pacer.estimate(channel.name(), &task.model))
                } else {
                    poll_after
                        .unwrap_or_else(|| {
                            self.pacer
                                .next_poll(channel.name(), &task.model, running_for(task))
                        })
                        .clamp(Duration::from_millis(20), self.cfg.max_poll_interval)
                };
                let update = TaskUpdate {
                    progress,
                    next_due_at: Some(asked_at.saturating_add(ms(next)).min(task.deadline_at)),
                    ..TaskUpdate::default()
                };
                self.apply(task, update).await
            }
            Ok(PollOutcome::Failed(reason)) => {
                self.apply(task, TaskUpdate::upstream_failed(reason)).await
            }
            Ok(PollOutcome::Succeeded(outputs)) => {
                self.pacer
                    .finished(channel.name(), &task.model, running_for(task));
                self.store_results(task, outputs).await
            }
            Err(ProviderError::Permanent(reason)) => {
                self.apply(task, TaskUpdate::upstream_failed(reason)).await
            }
            Err(ProviderError::Refused(reason)) => self.apply(task, TaskUpdate::fail(reason)).await,
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "poll failed; will poll again");
                self.poll_again(task).await
            }
        }
    }

    /// Copy the upstream's results into storage and complete the task.
    async fn store_results(&self, task: &Task, outputs: Vec<Output>) -> Result<(), StoreError> {
        match self.keeping_lease(task, self.mirror.store(outputs)).await {
            Ok(arts) => self.apply(task, completed(arts)).await,
            Err(artifacts::MirrorError::BadResult(r)) => {
                self.apply(task, TaskUpdate::fail(r)).await
            }
            Err(artifacts::MirrorError::Transient(why)) => {
                tracing::warn!(task = %task.id, why, "storing results failed; will poll again");
                self.poll_again(task).await
            }
        }
    }

    async fn poll_again(&self, task: &Task) -> Result<(), StoreError> {
        let update = TaskUpdate {
            next_due_at: Some(self.due(task, self.backoff(2))),
            ..TaskUpdate::default()
        };
        self.apply(task, update).await
    }
}
