//! Finished tasks never change again, so each one's rendered JSON is kept
//! and served as bytes: a batch get of finished tasks is a few lookups and a
//! copy, not a query and a render per task. Not with signed result URLs,
//! whose renderings expire; and a rendering with results is kept only
//! until they expire (retention), then rendered again, saying so.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use gengate_core::{ApiError, Dialect, Links, Millis, Task};
use uuid::Uuid;

use crate::AppState;

/// Rendered bytes kept at most.
const BUDGET_BYTES: usize = 64 << 20;

pub enum Lookup {
    Hit(Bytes),
    /// Known, and another key's: answered as unknown.
    Foreign,
    Miss,
}

#[derive(Default)]
pub struct Rendered {
    inner: Mutex<Inner>,
}

struct Entry {
    owner: Uuid,
    json: Bytes,
    /// When the rendering goes stale: its task's results expire.
    stale_at: Option<Millis>,
}

#[derive(Default)]
struct Inner {
    by_task: HashMap<(Uuid, Dialect), Entry>,
    order: VecDeque<(Uuid, Dialect)>,
    bytes: usize,
}

impl Rendered {
    /// Look up many tasks under one lock (a batch get asks for up to 100).
    pub fn get_many(
        &self,
        owner: Uuid,
        ids: &[Uuid],
        dialect: Dialect,
        now: Millis,
    ) -> Vec<Lookup> {
        let Ok(inner) = self.inner.lock() else {
            return ids.iter().map(|_| Lookup::Miss).collect();
        };
        ids.iter()
            .map(|id| match inner.by_task.get(&(*id, dialect)) {
                Some(e) if e.owner != owner => Lookup::Foreign,
                Some(e) if e.stale_at.is_none_or(|at| now < at) => Lookup::Hit(e.json.clone()),
                _ => Lookup::Miss,
            })
            .collect()
    }

    /// Keep `json`, the rendering of `task` in `dialect` at `now`, if the
    /// task is finished for good. A task Luma's official API made can
    /// still be deleted, on any instance: it is never kept.
    pub fn put(&self, task: &Task, dialect: Dialect, json: &Bytes, now: Millis) {
        if !task.state.is_terminal()
            || task.dialect == Dialect::DreamMachine
            || json.len() > BUDGET_BYTES
        {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = (task.id, dialect);
        // Rendered with its results until they expire; after, for good.
        let stale_at = task.keep_until.filter(|at| now < *at);
        match inner.by_task.get_mut(&key) {
            Some(e) if e.stale_at.is_some_and(|at| at <= now) => {
                let old = std::mem::replace(
                    e,
                    Entry {
                        owner: task.owner,
                        json: json.clone(),
                        stale_at,
                    },
                );
                inner.bytes = inner.bytes - old.json.len() + json.len();
                return;
            }
            Some(_) => return,
            None => {}
        }
        while inner.bytes + json.len() > BUDGET_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(e) = inner.by_task.remove(&old) {
                inner.bytes -= e.json.len();
            }
        }
        inner.bytes += json.len();
        inner.by_task.insert(
            key,
            Entry {
                owner: task.owner,
                json: json.clone(),
                stale_at,
            },
        );
        inner.order.push_back(key);
    }
}

/// A batch get's answer: `owner`'s tasks among `ids`, each rendered in
/// `shape`'s dialect, in the order asked; unknown and foreign ids are left
/// out. With `made_in`, only tasks that dialect made count. Finished tasks
/// come rendered from memory, the rest from the store. The JSON array is
/// written between `prefix` and `suffix`, and answered as JSON.
pub async fn batch_json<V: serde::Serialize>(
    state: &AppState,
    owner: Uuid,
    ids: &[Uuid],
    shape: Dialect,
    made_in: Option<Dialect>,
    render: impl Fn(&Task, &Links<'_>) -> V,
    (prefix, suffix): (&[u8], &[u8]),
) -> Result<axum::response::Response, ApiError> {
    let mut parts: Vec<Option<Bytes>> = vec![None; ids.len()];
    let mut missing = Vec::new();
    let cached = !state.file_links.is_signed();
    let now = gengate_engine::now_ms();
    let looked_up = if cached {
        state.rendered.get_many(owner, ids, shape, now)
    } else {
        ids.iter().map(|_| Lookup::Miss).collect()
    };
    let links = state.file_links.at(now);
    for (at, (id, found)) in ids.iter().zip(looked_up).enumerate() {
        match found {
            Lookup::Hit(json) => parts[at] = Some(json),
            Lookup::Foreign => {}
            Lookup::Miss => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        let found = match made_in {
            Some(d) => state.store.get_tasks(owner, d, &missing).await,
            None => state.store.get_owned_tasks(owner, &missing).await,
        }
        .map_err(gengate_engine::service::store_error)?;
        for task in found {
            let json = Bytes::from(
                serde_json::to_vec(&render(&task, &links)).map_err(|_| ApiError::Internal)?,
            );
            if cached {
                state.rendered.put(&task, shape, &json, now);
            }
            if let Some(at) = ids.iter().position(|id| *id == task.id) {
                parts[at] = Some(json);
            }
        }
    }
    let size = parts.iter().flatten().map(Bytes::len).sum::<usize>();
    let mut out = Vec::with_capacity(size + ids.len() + prefix.len() + suffix.len() + 2);
    out.extend_from_slice(prefix);
    out.push(b'[');
    for (i, p) in parts.iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p);
    }
    out.push(b']');
    out.extend_from_slice(suffix);
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )))
}

#[cfg(test)]
mod tests {
    use gengate_core::{NewTask, TaskKind, TaskState};

    use super::*;

    /// A rendering with results is served until they expire; the one made
    /// after, saying they expired, replaces it for good.
    #[test]
    fn a_rendering_goes_stale_when_its_results_expire() {
        let new = NewTask {
            dialect: Dialect::Luma,
            kind: TaskKind::Video,
            model: "m".into(),
            request: Default::default(),
            callback_url: None,
            external_id: None,
            channel: None,
        };
        let owner = Uuid::now_v7();
        let mut task = Task::accepted(Uuid::now_v7(), owner, new, 0, 1);
        task.state = TaskState::Completed;
        task.keep_until = Some(100);
        let cache = Rendered::default();
        let hit = |now| match &cache.get_many(owner, &[task.id], Dialect::Luma, now)[0] {
            Lookup::Hit(json) => Some(json.clone()),
            _ => None,
        };
        cache.put(&task, Dialect::Luma, &Bytes::from_static(b"with"), 50);
        assert_eq!(hit(99).as_deref(), Some(&b"with"[..]));
        assert_eq!(hit(100), None);
        cache.put(&task, Dialect::Luma, &Bytes::from_static(b"expired"), 100);
        assert_eq!(hit(10_000).as_deref(), Some(&b"expired"[..]));
    }
}
