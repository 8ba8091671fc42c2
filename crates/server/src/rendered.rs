//! Finished tasks never change again, so each one's rendered JSON is kept
//! and served as bytes: a batch get of finished tasks is a few lookups and a
//! copy, not a query and a render per task.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use gengate_core::{Dialect, Task};
use uuid::Uuid;

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

#[derive(Default)]
struct Inner {
    by_task: HashMap<(Uuid, Dialect), (Uuid, Bytes)>,
    order: VecDeque<(Uuid, Dialect)>,
    bytes: usize,
}

impl Rendered {
    /// Look up many tasks under one lock (a batch get asks for up to 100).
    pub fn get_many(&self, owner: Uuid, ids: &[Uuid], dialect: Dialect) -> Vec<Lookup> {
        let Ok(inner) = self.inner.lock() else {
            return ids.iter().map(|_| Lookup::Miss).collect();
        };
        ids.iter()
            .map(|id| match inner.by_task.get(&(*id, dialect)) {
                Some((o, json)) if *o == owner => Lookup::Hit(json.clone()),
                Some(_) => Lookup::Foreign,
                None => Lookup::Miss,
            })
            .collect()
    }

    /// Keep `json`, the rendering of `task` in `dialect`, if the task is finished.
    pub fn put(&self, task: &Task, dialect: Dialect, json: &Bytes) {
        if !task.state.is_terminal() || json.len() > BUDGET_BYTES {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = (task.id, dialect);
        if inner.by_task.contains_key(&key) {
            return;
        }
        while inner.bytes + json.len() > BUDGET_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = inner.by_task.remove(&old) {
                inner.bytes -= b.len();
            }
        }
        inner.bytes += json.len();
        inner.by_task.insert(key, (task.owner, json.clone()));
        inner.order.push_back(key);
    }
}
