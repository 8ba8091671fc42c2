//! Values tests build over and over.

use gengate_core::{Dialect, GenerationRequest, Task, TaskKind, TaskState};

/// A pending Kling task of `kind` for `prompt`: 1:1, two outputs, no
/// channel yet. Tests change the fields they care about.
pub fn pending_task(kind: TaskKind, prompt: &str) -> Task {
    Task {
        id: uuid::Uuid::now_v7(),
        owner: uuid::Uuid::now_v7(),
        dialect: Dialect::Kling,
        kind,
        model: "m".into(),
        request: GenerationRequest {
            prompt: prompt.into(),
            aspect_ratio: "1:1".into(),
            n: 2,
            ..GenerationRequest::default()
        },
        callback_url: None,
        external_id: None,
        channel: None,
        upstream_ref: None,
        attempts: 0,
        state: TaskState::Pending,
        failure_reason: None,
        progress: 0,
        artifacts: Vec::new(),
        created_at: 0,
        updated_at: 0,
        started_at: None,
        finished_at: None,
        deadline_at: 0,
        version: 1,
        event_seq: 1,
    }
}
