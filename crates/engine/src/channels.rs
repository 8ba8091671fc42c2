//! Channels: named upstreams, and which one a task goes to.

use std::collections::HashMap;
use std::sync::Arc;

use gengate_core::Task;
use gengate_providers::Provider;

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
    pub(crate) fn route(&self, task: &Task) -> Option<&Channel> {
        match &task.channel {
            Some(name) => self.by_name.get(name),
            None => self.by_name.get(&self.default),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Channel> {
        self.by_name.get(name)
    }
}
