//! `gengate channels`: stored channels, managed on the store directly (as
//! `gengate keys` manages keys). Running instances re-read the store's
//! channels every few seconds. Secrets never go on the command line: the
//! `--*-env` flags name environment variables holding them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::bail;
use clap::{Args, Subcommand};
use figment::providers::Format as _;
use gengate_core::{ChannelSpec, ProviderKind};
use gengate_engine::stored_channels::{StoredChannels, view};
use gengate_engine::{Channels, ProviderFactory};

use crate::app;
use crate::config::Settings;

#[derive(Subcommand)]
pub enum ChannelsCommand {
    /// Add a channel, from `--file` (one channel table, the fields of
    /// `[[channels]]`) and/or flags (flags override the file).
    Add {
        /// A TOML file holding one channel table (no `[[channels]]` header).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Unique name: letters, digits, '-', '_' or '.'.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: ChannelFlags,
    },
    /// Every channel: gengate.toml's and the stored ones (never a secret).
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change a stored channel: only the fields given change (`--model`
    /// and `--deadline`, when given, replace the whole map).
    Update {
        name: String,
        #[command(flatten)]
        fields: ChannelFlags,
        /// Remove credentials, e.g. `--unset webhook_secret` (repeatable).
        #[arg(long, value_name = "CREDENTIAL")]
        unset: Vec<String>,
        /// Route tasks to it again (the opposite of --disabled).
        #[arg(long, conflicts_with = "disabled")]
        enabled: bool,
    },
    /// Stop routing new tasks to a stored channel.
    Disable { name: String },
    /// Route tasks to a stored channel again.
    Enable { name: String },
}

/// A channel's fields as flags; each given one is set.
#[derive(Args, Default)]
pub struct ChannelFlags {
    /// sandbox, luma, kling, replicate, openai-images, comfyui or gengate.
    #[arg(long)]
    provider: Option<String>,
    /// The upstream's API root (every provider but sandbox needs one).
    #[arg(long)]
    base_url: Option<String>,
    /// CLIENT=UPSTREAM model names (repeatable); `*=*` serves every model.
    #[arg(long = "model", value_name = "CLIENT=UPSTREAM")]
    models: Vec<String>,
    /// Higher first.
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Share among channels of equal priority (at least 1).
    #[arg(long)]
    weight: Option<u32>,
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Upstream requests under way at once, per instance (default 64).
    #[arg(long)]
    max_concurrent_requests: Option<u32>,
    /// Upstream requests per second, at most.
    #[arg(long)]
    rate_limit: Option<f64>,
    /// MODEL=SECS: a model's deadline on this channel (repeatable).
    #[arg(long = "deadline", value_name = "MODEL=SECS")]
    deadlines: Vec<String>,
    /// Added or set disabled: no new tasks are routed to it.
    #[arg(long)]
    disabled: bool,
    /// Sandbox only: job latency in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Sandbox only: share of jobs that fail (0 to 1).
    #[arg(long)]
    failure_rate: Option<f64>,
    /// ComfyUI only: the workflow template file.
    #[arg(long)]
    workflow: Option<String>,
    /// Give upstreams that call back a callback URL of gengate's own.
    #[arg(long)]
    callbacks: Option<bool>,
    /// The environment variable holding the API key.
    #[arg(long, value_name = "VAR")]
    api_key_env: Option<String>,
    /// The environment variable holding Kling's access key.
    #[arg(long, value_name = "VAR")]
    access_key_env: Option<String>,
    /// The environment variable holding Kling's secret key.
    #[arg(long, value_name = "VAR")]
    secret_key_env: Option<String>,
    /// The environment variable holding the upstream's callback signing secret.
    #[arg(long, value_name = "VAR")]
    webhook_secret_env: Option<String>,
}

/// `NAME=VALUE` pairs of a repeatable flag.
fn pairs(flag: &str, given: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--{flag} {p:?}: expected NAME=VALUE"),
        })
        .collect()
}

fn secret_from_env(flag: &str, var: &Option<String>) -> anyhow::Result<Option<String>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Some(v)),
        _ => bail!("--{flag}: the environment variable {var} is not set (or empty)"),
    }
}

impl ChannelFlags {
    /// Set each given field on `spec`.
    fn apply(&self, spec: &mut ChannelSpec) -> anyhow::Result<()> {
        if let Some(p) = &self.provider {
            spec.provider = serde_json::from_value::<ProviderKind>(p.as_str().into())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--provider {p:?}: must be one of sandbox, luma, kling, replicate, openai-images, comfyui, gengate"
                    )
                })?;
        }
        if let Some(u) = &self.base_url {
            spec.base_url = Some(u.clone());
        }
        if !self.models.is_empty() {
            spec.models = pairs("model", &self.models)?.into_iter().collect();
        }
        if !self.deadlines.is_empty() {
            spec.deadline_secs = pairs("deadline", &self.deadlines)?
                .into_iter()
                .map(|(m, s)| match s.parse::<u64>() {
                    Ok(n) => Ok((m, n)),
                    Err(_) => bail!("--deadline {m}={s}: SECS must be a whole number of seconds"),
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        }
        if let Some(v) = self.priority {
            spec.priority = v;
        }
        if let Some(v) = self.weight {
            spec.weight = v;
        }
        if let Some(v) = self.max_in_flight {
            spec.max_in_flight = Some(v);
        }
        if let Some(v) = self.max_concurrent_requests {
            spec.max_concurrent_requests = Some(v);
        }
        if let Some(v) = self.rate_limit {
            spec.rate_limit_per_sec = Some(v);
        }
        if self.disabled {
            spec.enabled = false;
        }
        if let Some(v) = self.latency_ms {
            spec.latency_ms = Some(v);
        }
        if let Some(v) = self.failure_rate {
            spec.failure_rate = Some(v);
        }
        if let Some(v) = &self.workflow {
            spec.workflow = Some(v.clone());
        }
        if let Some(v) = self.callbacks {
            spec.callbacks = v;
        }
        let c = &mut spec.credentials;
        for (flag, var, slot) in [
            ("api-key-env", &self.api_key_env, &mut c.api_key),
            ("access-key-env", &self.access_key_env, &mut c.access_key),
            ("secret-key-env", &self.secret_key_env, &mut c.secret_key),
            (
                "webhook-secret-env",
                &self.webhook_secret_env,
                &mut c.webhook_secret,
            ),
        ] {
            if let Some(v) = secret_from_env(flag, var)? {
                *slot = Some(v);
            }
        }
        Ok(())
    }
}

pub async fn run(settings: Settings, cmd: ChannelsCommand) -> anyhow::Result<()> {
    let store = app::open_store(&settings, settings.migrate).await?;
    let factory: ProviderFactory = Arc::new(|spec| gengate_providers::for_channel(spec, None));
    let configured = Channels::new(settings.channel_specs(), factory)?;
    let channels = StoredChannels::new(store.as_ref(), &configured);
    match cmd {
        ChannelsCommand::Add { file, name, fields } => {
            let mut spec = match &file {
                Some(path) => figment::Figment::from(figment::providers::Toml::file_exact(path))
                    .extract::<ChannelSpec>()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => {
                    anyhow::ensure!(
                        fields.provider.is_some(),
                        "--provider is required (or --file)"
                    );
                    anyhow::ensure!(
                        !fields.models.is_empty(),
                        "--model is required (CLIENT=UPSTREAM, repeatable; *=* serves every model)"
                    );
                    let Some(name) = &name else {
                        bail!("--name is required (or --file)");
                    };
                    let mut s = ChannelSpec::new(name, ProviderKind::Sandbox);
                    s.models.clear();
                    s
                }
            };
            if let Some(n) = name {
                spec.name = n;
            }
            fields.apply(&mut spec)?;
            channels.create(&spec).await?;
            println!(
                "added channel {} ({}); running instances use it within seconds",
                spec.name,
                spec.provider.as_str()
            );
        }
        ChannelsCommand::List { json } => {
            let rows = channels.all().await?;
            if json {
                // Whether an instance runs a channel is for the API to say.
                let views: Vec<_> = rows.iter().map(|(s, src)| view(s, *src, None)).collect();
                println!("{}", serde_json::Value::Array(views));
            } else {
                println!(
                    "{:<20}  {:<6}  {:<13}  {:<8}  {:>8}  {:>6}  {:<32}  {:<16}  BASE_URL",
                    "NAME",
                    "SOURCE",
                    "PROVIDER",
                    "ENABLED",
                    "PRIORITY",
                    "WEIGHT",
                    "MODELS",
                    "CREDENTIALS"
                );
                for (s, src) in rows {
                    let models: Vec<_> = s.models.iter().map(|(a, b)| format!("{a}={b}")).collect();
                    let c = &s.credentials;
                    let set: Vec<_> = [
                        ("api_key", &c.api_key),
                        ("access_key", &c.access_key),
                        ("secret_key", &c.secret_key),
                        ("webhook_secret", &c.webhook_secret),
                    ]
                    .into_iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(k, _)| k)
                    .collect();
                    println!(
                        "{:<20}  {:<6}  {:<13}  {:<8}  {:>8}  {:>6}  {:<32}  {:<16}  {}",
                        s.name,
                        src.as_str(),
                        s.provider.as_str(),
                        if s.enabled { "yes" } else { "no" },
                        s.priority,
                        s.weight,
                        models.join(","),
                        if set.is_empty() {
                            "-".to_string()
                        } else {
                            set.join(",")
                        },
                        s.base_url.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        ChannelsCommand::Update {
            name,
            fields,
            unset,
            enabled,
        } => {
            let mut spec = channels.stored(&name).await?;
            fields.apply(&mut spec)?;
            if enabled {
                spec.enabled = true;
            }
            for u in &unset {
                let c = &mut spec.credentials;
                match u.as_str() {
                    "api_key" => c.api_key = None,
                    "access_key" => c.access_key = None,
                    "secret_key" => c.secret_key = None,
                    "webhook_secret" => c.webhook_secret = None,
                    other => bail!(
                        "--unset {other:?}: must be api_key, access_key, secret_key or webhook_secret"
                    ),
                }
            }
            channels.save(&spec).await?;
            println!("updated channel {name}; running instances use it within seconds");
        }
        ChannelsCommand::Disable { name } => {
            let mut spec = channels.stored(&name).await?;
            spec.enabled = false;
            channels.save(&spec).await?;
            println!("disabled channel {name}: no new tasks go to it");
        }
        ChannelsCommand::Enable { name } => {
            let mut spec = channels.stored(&name).await?;
            spec.enabled = true;
            channels.save(&spec).await?;
            println!("enabled channel {name}");
        }
    }
    Ok(())
}
