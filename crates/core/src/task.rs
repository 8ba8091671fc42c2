//! The task model shared by every dialect, store and provider.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credits::{Charge, Credits, KeyLimits};
use crate::request::{GenerationRequest, Upload};

/// Milliseconds since the Unix epoch; the one time unit stored and passed around.
pub type Millis = i64;

/// The life of a task, as the seed names it. Terminal states never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Processing,
    Completed,
    Failed,
    Canceled,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Processing,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Processing => "processing",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled
        )
    }

    /// The state machine: the only transitions a store may apply.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (Pending, Processing | Failed | Canceled) => true,
            // A task retaken after a lost lease goes back to pending for another submit.
            (Processing, Pending | Completed | Failed | Canceled) => true,
            _ => false,
        }
    }
}

/// The client API a task was made through; it decides how the task is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    Luma,
    Kling,
    /// gengate's own provider-neutral API (`/v1/tasks`).
    Gengate,
    /// Luma's official API (`/dream-machine/v1`).
    DreamMachine,
    /// OpenAI images (`/v1/images/generations`), answered synchronously.
    OpenaiImages,
    /// OpenAI videos (`/v1/videos`).
    OpenaiVideos,
    /// Kling's video API (`/kling/v1/videos/...`).
    KlingVideo,
}

impl Dialect {
    pub const ALL: [Dialect; 7] = [
        Dialect::Luma,
        Dialect::Kling,
        Dialect::Gengate,
        Dialect::DreamMachine,
        Dialect::OpenaiImages,
        Dialect::OpenaiVideos,
        Dialect::KlingVideo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Luma => "luma",
            Dialect::Kling => "kling",
            Dialect::Gengate => "gengate",
            Dialect::DreamMachine => "dream_machine",
            Dialect::OpenaiImages => "openai_images",
            Dialect::OpenaiVideos => "openai_videos",
            Dialect::KlingVideo => "kling_video",
        }
    }

    /// The request field that names the model, in this dialect's words.
    pub fn model_field(self) -> &'static str {
        match self {
            Dialect::Luma | Dialect::KlingVideo => "model_name",
            Dialect::Kling
            | Dialect::Gengate
            | Dialect::DreamMachine
            | Dialect::OpenaiImages
            | Dialect::OpenaiVideos => "model",
        }
    }

    pub fn parse(s: &str) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Image,
    Video,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Image => "image",
            TaskKind::Video => "video",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        match s {
            "image" => Some(TaskKind::Image),
            "video" => Some(TaskKind::Video),
            _ => None,
        }
    }
}

/// What one stored result file is to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactRole {
    Video,
    Image,
    Thumbnail,
    LastFrame,
}

/// A result file in gengate's own storage. Dimensions and duration are read
/// from the stored file, never taken from the upstream's word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub role: ArtifactRole,
    /// Position among artifacts of the same role (images of an `n` > 1 task).
    pub index: u32,
    /// Storage key, relative to the media root; served under `/files/{key}`.
    pub key: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
    /// 5×5 RGB grid (75 bytes) averaged from the image, for thumbnails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub palette: Option<Vec<u8>>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: Uuid,
    pub owner: Uuid,
    pub dialect: Dialect,
    pub kind: TaskKind,
    pub model: String,
    pub request: GenerationRequest,
    pub callback_url: Option<String>,
    pub external_id: Option<String>,
    /// The channel that has (or last had) the task; follow-ups stay on it.
    pub channel: Option<String>,
    /// The upstream's own reference for the task, opaque to everyone but its provider.
    pub upstream_ref: Option<String>,
    pub attempts: u32,
    pub state: TaskState,
    pub failure_reason: Option<String>,
    /// What the upstream itself said when it failed the task, as its
    /// adapter quoted it; `None` when gengate failed it (deadline, storage,
    /// a result it refused) or it did not fail.
    pub upstream_error: Option<String>,
    /// 0..=100 as the upstream reports it.
    pub progress: u8,
    pub artifacts: Vec<Artifact>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub deadline_at: Millis,
    /// Bumped by every write; compare-and-swap is on this.
    pub version: i64,
    /// Sequence number of the task's last event.
    pub event_seq: i64,
    /// What the task was charged when accepted (fixed then).
    pub charge: Charge,
    /// Of the charge, what was given back when the task ended.
    pub refunded: Credits,
    /// What the channel's cost list says the task cost upstream.
    pub upstream_cost: Credits,
    /// When the task's results expire (set as it finishes); `None`: kept
    /// for ever, or not finished.
    pub keep_until: Option<Millis>,
}

impl Task {
    /// `new` as it is accepted: pending, no channel's work done yet.
    pub fn accepted(id: Uuid, owner: Uuid, new: NewTask, now: Millis, deadline_at: Millis) -> Task {
        Task {
            id,
            owner,
            dialect: new.dialect,
            kind: new.kind,
            model: new.model,
            request: new.request,
            callback_url: new.callback_url,
            external_id: new.external_id,
            channel: new.channel,
            upstream_ref: None,
            attempts: 0,
            state: TaskState::Pending,
            failure_reason: None,
            upstream_error: None,
            progress: 0,
            artifacts: Vec::new(),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            deadline_at,
            version: 1,
            event_seq: 1,
            charge: Charge::default(),
            refunded: 0,
            upstream_cost: 0,
            keep_until: None,
        }
    }

    /// Credits the task costs its key now: its charge less any refund.
    pub fn net_charge(&self) -> Credits {
        self.charge.total() - self.refunded
    }

    /// The task as it stood when `event` was recorded: later results are
    /// not shown in the callback announcing an earlier state.
    pub fn as_of(&self, state: TaskState, at: Millis) -> Task {
        let mut t = self.clone();
        t.state = state;
        t.updated_at = at;
        if state != TaskState::Completed {
            t.artifacts.clear();
        }
        if !matches!(state, TaskState::Failed | TaskState::Canceled) {
            t.failure_reason = None;
            t.upstream_error = None;
        }
        t
    }

    pub fn artifacts_with(&self, role: ArtifactRole) -> impl Iterator<Item = &Artifact> {
        self.artifacts.iter().filter(move |a| a.role == role)
    }

    pub fn artifact(&self, role: ArtifactRole) -> Option<&Artifact> {
        self.artifacts_with(role).next()
    }
}

/// A validated task, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub dialect: Dialect,
    pub kind: TaskKind,
    pub model: String,
    pub request: GenerationRequest,
    pub callback_url: Option<String>,
    pub external_id: Option<String>,
    /// Set for follow-ups (extend), which stay on their parent's channel.
    pub channel: Option<String>,
}

/// A create request as a dialect parsed it: the task, and the images it
/// carried inline, for the caller to store before the task is.
#[derive(Debug)]
pub struct ParsedCreate {
    pub task: NewTask,
    pub uploads: Vec<Upload>,
}

/// One recorded change of a task; events drive callbacks and audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub id: Uuid,
    pub task_id: Uuid,
    pub seq: i64,
    pub state: TaskState,
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A change applied to a task by compare-and-swap on its version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskUpdate {
    /// A new state; `None` leaves the state alone (progress or scheduling only)
    /// and records no event.
    pub state: Option<TaskState>,
    pub channel: Option<String>,
    pub upstream_ref: Option<String>,
    pub failure_reason: Option<String>,
    /// Set with a failure the upstream caused: its own words.
    pub upstream_error: Option<String>,
    pub progress: Option<u8>,
    pub artifacts: Option<Vec<Artifact>>,
    pub bump_attempts: bool,
    /// When the engine should look at the task next.
    pub next_due_at: Option<Millis>,
    /// Free text recorded on the event.
    pub detail: Option<String>,
    /// Credits given back to the task's key with this (terminal) change:
    /// written in its transaction, so only the writer that wins the change
    /// refunds. Set by the transition, from the task's charge.
    pub refund: Credits,
    /// What the task cost upstream, set when it completes.
    pub upstream_cost: Option<Credits>,
    /// Until when the results are kept (`None`: for ever), written with a
    /// terminal change; its files are kept at least as long. Set by the
    /// transition, from the retention rules.
    pub keep_until: Option<Millis>,
}

impl TaskUpdate {
    pub fn to_state(state: TaskState) -> TaskUpdate {
        TaskUpdate {
            state: Some(state),
            ..TaskUpdate::default()
        }
    }

    pub fn fail(reason: impl Into<String>) -> TaskUpdate {
        let reason = reason.into();
        TaskUpdate {
            state: Some(TaskState::Failed),
            detail: Some(reason.clone()),
            failure_reason: Some(reason),
            ..TaskUpdate::default()
        }
    }

    /// The upstream failed the task: its words are the reason clients see,
    /// and are kept as the upstream's own error.
    pub fn upstream_failed(reason: impl Into<String>) -> TaskUpdate {
        let reason = reason.into();
        TaskUpdate {
            upstream_error: Some(reason.clone()),
            ..TaskUpdate::fail(reason)
        }
    }
}

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub hash: [u8; 32],
    pub admin: bool,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    /// Signs this key's callbacks (`whsec_…`).
    pub webhook_secret: Option<String>,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub previous_webhook_secret: Option<String>,
    pub previous_secret_until: Option<Millis>,
    /// A disabled key is refused until enabled again (revoking is for good).
    pub enabled: bool,
    /// An unlimited key is never refused for its balance.
    pub unlimited: bool,
    /// The sum of the key's ledger entries.
    pub balance: Credits,
    pub limits: KeyLimits,
}

impl ApiKey {
    /// The secrets that sign a callback sent at `now`: the current one, and
    /// the previous one during its overlap after a rotation.
    pub fn signing_secrets(&self, now: Millis) -> Vec<&str> {
        let mut out: Vec<&str> = self.webhook_secret.as_deref().into_iter().collect();
        if let (Some(prev), Some(until)) =
            (&self.previous_webhook_secret, self.previous_secret_until)
            && now < until
        {
            out.push(prev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_never_change() {
        for from in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in TaskState::ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for st in TaskState::ALL {
            assert_eq!(TaskState::parse(st.as_str()), Some(st));
        }
        assert_eq!(TaskState::parse("done"), None);
    }
}
