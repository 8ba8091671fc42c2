//! Channels kept in the store, added and changed through the admin API or
//! `gengate channels`, beside gengate.toml's (read-only while running):
//! one set of rules for both doors. Instances re-read the store's channels
//! within seconds. Credentials are written here and never shown back.

use gengate_core::{ApiError, ChannelSpec, Credentials, SpecError};
use gengate_store::{StoreError, TaskStore};
use serde_json::{Map, Value};

use crate::{Channels, now_ms};

/// Where a channel (or a price) is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// gengate.toml: read-only while running.
    Config,
    /// The store (the admin API or the CLI).
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("channel {0:?} is defined in gengate.toml: edit it there (and restart)")]
    InConfig(String),
    #[error("channel {0:?} not found")]
    NotFound(String),
    #[error("a channel named {0:?} already exists")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> ApiError {
        match e {
            ChannelError::Invalid(e) => ApiError::validation(e.field, e.rule),
            ChannelError::InConfig(_) | ChannelError::Taken(_) => ApiError::Conflict(e.to_string()),
            ChannelError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ChannelError::Store(e) => crate::service::store_error(e),
        }
    }
}

/// The store's channels beside the running (or configured) `channels`.
pub struct StoredChannels<'a> {
    store: &'a dyn TaskStore,
    channels: &'a Channels,
}

impl<'a> StoredChannels<'a> {
    pub fn new(store: &'a dyn TaskStore, channels: &'a Channels) -> StoredChannels<'a> {
        StoredChannels { store, channels }
    }

    /// Every channel: gengate.toml's first, then the stored ones by name.
    pub async fn all(&self) -> Result<Vec<(ChannelSpec, Source)>, ChannelError> {
        let stored = self.store.list_channels().await?;
        Ok(self
            .channels
            .file_specs()
            .iter()
            .map(|s| (s.clone(), Source::Config))
            .chain(stored.into_iter().map(|s| (s, Source::Api)))
            .collect())
    }

    /// The channel `name`, wherever it is defined.
    pub async fn get(&self, name: &str) -> Result<(ChannelSpec, Source), ChannelError> {
        self.all()
            .await?
            .into_iter()
            .find(|(s, _)| s.name == name)
            .ok_or_else(|| ChannelError::NotFound(name.to_string()))
    }

    /// The stored channel `name`; one of gengate.toml's cannot be changed.
    pub async fn stored(&self, name: &str) -> Result<ChannelSpec, ChannelError> {
        if self.in_config(name) {
            return Err(ChannelError::InConfig(name.to_string()));
        }
        self.store
            .list_channels()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ChannelError::NotFound(name.to_string()))
    }

    /// Store a new channel, once its fields and adapter check out.
    pub async fn create(&self, spec: &ChannelSpec) -> Result<(), ChannelError> {
        self.channels.check(spec)?;
        if self.in_config(&spec.name) {
            return Err(ChannelError::InConfig(spec.name.clone()));
        }
        if !self.store.create_channel(spec, now_ms()).await? {
            return Err(ChannelError::Taken(spec.name.clone()));
        }
        Ok(())
    }

    /// Replace a stored channel's settings, once they check out.
    pub async fn save(&self, spec: &ChannelSpec) -> Result<(), ChannelError> {
        self.channels.check(spec)?;
        if !self.store.update_channel(spec, now_ms()).await? {
            // Removed meanwhile (by hand in the database: there is no delete).
            return Err(ChannelError::NotFound(spec.name.clone()));
        }
        Ok(())
    }

    fn in_config(&self, name: &str) -> bool {
        self.channels.file_specs().iter().any(|s| s.name == name)
    }
}

/// A channel as shown to admins: its settings with each credential
/// replaced by whether it is set, where it is defined, and, when known,
/// whether it is in use (loaded and enabled here). Never a secret value.
pub fn view(spec: &ChannelSpec, source: Source, in_use: Option<bool>) -> Value {
    let mut v = match serde_json::to_value(spec) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    v.insert(
        "credentials".into(),
        Value::Object(credentials_set(&spec.credentials)),
    );
    v.insert("source".into(), source.as_str().into());
    if let Some(in_use) = in_use {
        v.insert("in_use".into(), in_use.into());
    }
    Value::Object(v)
}

/// `{"api_key": true, "secret_key": false, ...}`: every credential field,
/// and whether it is set.
pub fn credentials_set(c: &Credentials) -> Map<String, Value> {
    match serde_json::to_value(c) {
        Ok(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| (k, Value::Bool(!v.is_null())))
            .collect(),
        _ => Map::new(),
    }
}
