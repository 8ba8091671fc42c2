//! How long a task's results are kept: `retention_days` overall, overridden
//! per model and, above that, per key. A task's term is fixed when it
//! finishes, from the rules then in force; its files are kept until the
//! last task sharing them (by content hash) runs out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::task::{Millis, Task};
use crate::time::rfc3339_ms;

const DAY_MS: i64 = 86_400_000;

/// Days results are kept; 0 keeps them for ever (an override of 0 exempts
/// a model or key from a shorter default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default)]
    pub days: u32,
    /// By model name.
    #[serde(default)]
    pub models: BTreeMap<String, u32>,
    /// By API key id.
    #[serde(default)]
    pub keys: BTreeMap<Uuid, u32>,
}

impl Retention {
    /// The days that apply to `task`: its key's rule, else its model's,
    /// else the default.
    pub fn days_for(&self, task: &Task) -> u32 {
        self.keys
            .get(&task.owner)
            .or_else(|| self.models.get(&task.model))
            .copied()
            .unwrap_or(self.days)
    }

    /// Until when the results of `task`, finishing at `finished_at`, are
    /// kept; `None`: for ever.
    pub fn keep_until(&self, task: &Task, finished_at: Millis) -> Option<Millis> {
        match self.days_for(task) {
            0 => None,
            days => Some(finished_at.saturating_add(i64::from(days) * DAY_MS)),
        }
    }
}

/// What a render says in place of results that expired at `keep_until`.
pub fn expired_note(keep_until: Millis) -> String {
    format!(
        "the results expired at {} (retention policy) and their files are deleted",
        rfc3339_ms(keep_until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Dialect, NewTask, TaskKind};

    fn task(owner: Uuid, model: &str) -> Task {
        let new = NewTask {
            dialect: Dialect::Luma,
            kind: TaskKind::Video,
            model: model.into(),
            request: Default::default(),
            callback_url: None,
            external_id: None,
            channel: None,
        };
        Task::accepted(Uuid::nil(), owner, new, 0, 1)
    }

    #[test]
    fn the_key_rule_beats_the_model_rule_beats_the_default() {
        let (vip, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let rules = Retention {
            days: 30,
            models: BTreeMap::from([("short".into(), 1)]),
            keys: BTreeMap::from([(vip, 0)]),
        };
        assert_eq!(
            rules.keep_until(&task(other, "any"), 5),
            Some(5 + 30 * DAY_MS)
        );
        assert_eq!(rules.keep_until(&task(other, "short"), 5), Some(5 + DAY_MS));
        assert_eq!(rules.keep_until(&task(vip, "short"), 5), None);
        assert_eq!(
            Retention::default().keep_until(&task(other, "any"), 5),
            None
        );
    }
}
