//! The one writer of a task's state. Every change, from any caller (the
//! lifecycle's dispatch and polls, upstream callbacks, timeouts, a client's
//! cancel), passes [`Engine::transition`]: the state machine's guard, the
//! compare-and-swap, the refund a terminal change owes the task's key
//! (written by the store in the change's transaction, so only the writer
//! that wins refunds), the term its results are kept (the retention rules;
//! the store keeps their files as long), the transition metric, and the news that waiters and
//! live streams listen to. Whatever else must follow a change of state
//! hangs here and nowhere else.

use std::sync::Arc;

use gengate_core::credits::{self, Credits};
use gengate_core::{Task, TaskState, TaskUpdate};
use gengate_store::StoreError;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{Engine, now_ms};

/// A task changed state on this instance (its event is committed).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChanged {
    pub id: Uuid,
    pub owner: Uuid,
    pub state: TaskState,
    /// The sequence number of the event recorded for the change.
    pub seq: i64,
    /// The task has a callback URL: the change queued a delivery.
    pub calls_back: bool,
    /// The task as it ended, when the change ended it: a waiter answers
    /// from it without reading the store.
    pub ended: Option<Arc<Task>>,
}

/// Changes kept for a slow listener before it lags; a lagging listener
/// re-reads the store, so nothing is lost, only a wake-up merged.
pub(crate) const CHANGES_BUFFER: usize = 4096;

pub(crate) fn changes_channel() -> broadcast::Sender<TaskChanged> {
    broadcast::channel(CHANGES_BUFFER).0
}

impl Engine {
    /// Apply `update` to `task` if the task is still as read (its version)
    /// and the state machine allows the move. `None`: refused, or another
    /// writer got there first; nothing changed then.
    pub async fn transition(
        &self,
        task: &Task,
        update: TaskUpdate,
    ) -> Result<Option<Task>, StoreError> {
        self.transition_through(task, vec![update]).await
    }

    /// Apply `updates` in turn to `task`, all or none, in one store write:
    /// a step on the way (`processing`, when the upstream answered with the
    /// results) costs no write of its own. Each step is guarded and news of
    /// each is sent as if it were applied alone.
    pub(crate) async fn transition_through(
        &self,
        task: &Task,
        mut updates: Vec<TaskUpdate>,
    ) -> Result<Option<Task>, StoreError> {
        let now = now_ms();
        let (mut state, mut channel) = (task.state, task.channel.clone());
        for update in &mut updates {
            channel = update.channel.clone().or(channel);
            let Some(to) = update.state else {
                continue;
            };
            if !state.can_become(to) {
                tracing::error!(task = %task.id, from = ?state, ?to, "refused transition");
                return Ok(None);
            }
            update.refund = refund_due(task, update, to);
            if to == TaskState::Completed {
                update.upstream_cost = self.upstream_cost(task, channel.as_deref(), update);
            }
            if to.is_terminal() {
                update.keep_until = self.cfg.retention.keep_until(task, now);
            }
            state = to;
        }
        let applied = self
            .store
            .update_task(task.id, task.version, &updates, now)
            .await?;
        let Some(t) = &applied else {
            tracing::debug!(task = %task.id, "lost the race; leaving the task alone");
            return Ok(applied);
        };
        // Each step's event is numbered in turn, up to the task's last.
        let steps: Vec<TaskState> = updates.iter().filter_map(|u| u.state).collect();
        let first_seq = t.event_seq + 1 - i64::try_from(steps.len()).unwrap_or(0);
        for (seq, st) in (first_seq..).zip(steps) {
            metrics::counter!("gengate_task_transitions_total", "state" => st.as_str())
                .increment(1);
            tracing::info!(task = %t.id, state = st.as_str(), seq, "task changed state");
            // No listener is fine: the news is for whoever waits.
            let _ = self.changes.send(TaskChanged {
                id: t.id,
                owner: t.owner,
                state: st,
                seq,
                calls_back: t.callback_url.is_some(),
                ended: (seq == t.event_seq && st.is_terminal()).then(|| Arc::new(t.clone())),
            });
        }
        Ok(applied)
    }

    /// What the channel that ran `task` (`channel`, by name) says it cost
    /// upstream, for what it delivered; `None` when the channel prices no
    /// such model (or is gone).
    fn upstream_cost(
        &self,
        task: &Task,
        channel: Option<&str>,
        update: &TaskUpdate,
    ) -> Option<Credits> {
        let channel = self.channels.get(channel?)?;
        let cost = channel
            .cost
            .price(&task.model)?
            .quote(task.kind, &task.request);
        let artifacts = update.artifacts.as_deref().unwrap_or(&task.artifacts);
        let delivered = Credits::from(credits::delivered(task.kind, artifacts).min(cost.outputs));
        Some(cost.per_task + cost.per_output * delivered)
    }

    /// News of every state change made on this instance. Another
    /// instance's changes reach the store only: listeners also re-read it.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskChanged> {
        self.changes.subscribe()
    }
}

/// What moving `task` to `to` with `update` gives back of its charge: the
/// task's artifacts after the change decide how many outputs it delivered.
fn refund_due(task: &Task, update: &TaskUpdate, to: TaskState) -> Credits {
    let artifacts = update.artifacts.as_deref().unwrap_or(&task.artifacts);
    let due = credits::refund(&task.charge, to, credits::delivered(task.kind, artifacts));
    (due - task.refunded).max(0)
}
