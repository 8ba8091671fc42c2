//! Client-facing API shapes. Each dialect parses its requests into a
//! [`crate::NewTask`] and renders a [`crate::Task`] in its own shape; none
//! reaches into another. What several share lives here.

use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::task::{Millis, NewTask, Task, TaskKind, TaskState};
use crate::validate::parse_json;

pub mod dream_machine;
pub mod kling;
pub mod kling_video;
pub mod luma;
pub mod openai_images;
pub mod openai_videos;
pub mod schema;
pub mod tasks;

/// `{"detail": ...}`: the error envelope of both Luma APIs.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct DetailError {
    pub detail: String,
}

/// A batch get takes this many ids at most.
pub const MAX_BATCH_IDS: usize = 100;

/// The body of a batch get (`POST /luma/tasks`, `POST /v1/tasks/batch-get`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchGet {
    /// 1 to 100 task ids.
    #[schema(value_type = Vec<Uuid>, min_items = 1, max_items = 100)]
    pub ids: Option<Vec<String>>,
}

/// Parse a batch get: 1..=100 UUIDs, duplicates kept once, order kept.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Uuid>, ApiError> {
    let b: BatchGet = parse_json(body)?;
    let ids = b
        .ids
        .ok_or_else(|| ApiError::validation("ids", "is required"))?;
    if ids.is_empty() {
        return Err(ApiError::validation("ids", "must name at least one id"));
    }
    if ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::validation(
            "ids",
            format!("must name at most {MAX_BATCH_IDS} ids (got {})", ids.len()),
        ));
    }
    let mut out: Vec<Uuid> = Vec::with_capacity(ids.len());
    for (i, s) in ids.iter().enumerate() {
        let id = Uuid::try_parse(s).map_err(|_| {
            ApiError::validation(format!("ids[{i}]"), format!("{s:?} is not a task id"))
        })?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// A follow-up starts from its parent's results (its last frame): refused
/// once they have expired.
pub fn results_kept(parent: &Task, now: Millis) -> Result<(), ApiError> {
    if parent.keep_until.is_some_and(|k| k <= now) {
        return Err(ApiError::Gone(format!(
            "task {}'s results expired (retention policy); it can no longer be extended",
            parent.id
        )));
    }
    Ok(())
}

/// Make `new` a continuation of `parent` (its `extend_from`), which the
/// request names in `field`: the parent must be a completed video of the
/// same key; the task runs on its channel and keeps its frame.
pub fn follow(new: &mut NewTask, parent: &Task, field: &str, now: Millis) -> Result<(), ApiError> {
    if parent.kind != TaskKind::Video || parent.state != TaskState::Completed {
        return Err(ApiError::Conflict(format!(
            "{field}: task {} is a {} {} task; only a completed video can be extended",
            parent.id,
            parent.state.as_str(),
            parent.kind.as_str()
        )));
    }
    results_kept(parent, now)?;
    new.channel = parent.channel.clone();
    new.request.extend_from = Some(parent.id);
    new.request.aspect_ratio = parent.request.aspect_ratio.clone();
    if new.request.resolution.is_none() {
        new.request.resolution = parent.request.resolution.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_rules() {
        let a = "4665a07c-7641-4809-a133-10786201bb56";
        let b = "0190a07c-7641-7809-a133-10786201bb57";
        let ids = parse_batch(format!(r#"{{"ids":["{b}","{a}","{b}"]}}"#).as_bytes()).unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0].to_string(), b);
        assert!(parse_batch(br#"{"ids":[]}"#).is_err());
        assert!(parse_batch(br#"{}"#).is_err());
        assert!(parse_batch(br#"{"ids":["nope"]}"#).is_err());
        let many: Vec<String> = (0..101).map(|_| format!("\"{a}\"")).collect();
        assert!(parse_batch(format!(r#"{{"ids":[{}]}}"#, many.join(",")).as_bytes()).is_err());
    }

    /// Once a completed task's results expire, no render points at its
    /// files: each says they expired, in its own way.
    #[test]
    fn expired_results_are_said_not_linked() {
        use crate::task::{Artifact, ArtifactRole, Dialect, NewTask, Task, TaskKind, TaskState};
        let video = |dialect| NewTask {
            dialect,
            kind: TaskKind::Video,
            model: "m".into(),
            request: Default::default(),
            callback_url: None,
            external_id: None,
            channel: None,
        };
        let new = video(Dialect::Luma);
        let mut task = Task::accepted(uuid::Uuid::nil(), uuid::Uuid::nil(), new, 0, 1);
        task.state = TaskState::Completed;
        task.keep_until = Some(1_000);
        task.artifacts = [
            ArtifactRole::Video,
            ArtifactRole::Image,
            ArtifactRole::Thumbnail,
        ]
        .into_iter()
        .map(|role| Artifact {
            role,
            index: 0,
            key: "results/x".into(),
            content_type: "video/mp4".into(),
            width: 1,
            height: 1,
            duration_secs: None,
            palette: None,
        })
        .collect();
        let links = crate::FileLinks::plain("http://h/files");
        let json = |at| {
            let links = links.at(at);
            [
                serde_json::to_string(&luma::render(&task, &links)).unwrap(),
                serde_json::to_string(&kling::render(&task, &links)).unwrap(),
                serde_json::to_string(&dream_machine::render(&task, &links)).unwrap(),
                serde_json::to_string(&tasks::render(&task, &links)).unwrap(),
            ]
        };
        for before in json(999) {
            assert!(before.contains("http://h/files/results/x"), "{before}");
            assert!(!before.contains("expired at"), "{before}");
        }
        for after in json(1_000) {
            assert!(!after.contains("results/x"), "{after}");
            assert!(
                after.contains("the results expired at 1970-01-01T00:00:01.000Z"),
                "{after}"
            );
        }
        // Nor can it be extended: its last frame may be gone.
        let mut next = video(Dialect::Gengate);
        assert!(follow(&mut next, &task, "extend_from", 999).is_ok());
        match follow(&mut next, &task, "extend_from", 1_000) {
            Err(ApiError::Gone(why)) => assert!(why.contains("expired"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            luma::parse_extend(b"", &task, 1_000),
            Err(ApiError::Gone(_))
        ));
    }
}
