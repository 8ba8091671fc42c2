//! Settings, layered: built-in defaults < `gengate.toml` < `GENGATE_*`
//! environment < command-line flags.

use std::path::PathBuf;

use clap::Args;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Every setting. Field names are the TOML keys; `GENGATE_<NAME>` (upper
/// case) sets one from the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; defaults to `sqlite://<data_dir>/gengate.db`.
    pub database_url: Option<String>,
    /// Base URL clients reach this server at, for result links; defaults to
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// Admin key to create on first start instead of a random one.
    pub admin_key: Option<String>,
    pub sandbox_latency_ms: u64,
    pub sandbox_failure_rate: f64,
    /// File the sandbox appends `<task id> <pid>` to on every submit.
    pub sandbox_submit_log: Option<PathBuf>,
    pub lease_secs: u64,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub video_deadline_secs: u64,
    pub image_deadline_secs: u64,
    pub drain_timeout_secs: u64,
    pub fetch_timeout_secs: u64,
    /// How long `POST /v1/images/generations` holds its answer for the
    /// task; past it, a 504 names the task to follow at `/v1/tasks/{id}`.
    pub sync_wait_secs: u64,
    /// `text` or `json`.
    pub log_format: String,
    /// Run pending database migrations at start.
    pub migrate: bool,
    /// What this instance runs.
    pub role: Role,
    /// Networks callbacks and fetched URLs may reach although internal (CIDR).
    pub allow_network: Vec<String>,
    /// Delays before each callback attempt, e.g. `0s,5s,5m,30m,2h,5h,10h,10h`.
    pub callback_retry_schedule: String,
    /// Upstreams (`[[channels]]` tables). None: one sandbox channel named
    /// `sandbox` serving every model, with the `sandbox_*` settings.
    pub channels: Vec<gengate_core::ChannelSpec>,
    /// The price book (`[[prices]]` tables). None: every model is free.
    pub prices: Vec<gengate_core::Price>,
    /// Credits a new key starts with unless it is given some or is unlimited.
    pub default_credits: gengate_core::Credits,
    /// Where results and uploaded inputs are stored: `file:///abs/dir` or
    /// `s3://bucket/prefix`; defaults to `file://<data_dir>/media`. Instances
    /// sharing a database share this too.
    pub storage_url: Option<String>,
    /// How an `s3://` storage is reached (`[s3]`: endpoint, region,
    /// path_style, allow_http); credentials only from the AWS environment.
    pub s3: gengate_engine::storage::S3Settings,
    /// `proxy`: gengate streams results from storage; `presigned`: it
    /// redirects to a storage URL signed for `presign_ttl_secs`.
    pub file_urls: FileUrlMode,
    pub presign_ttl_secs: u64,
    /// Result URLs signed and good for this long (to twice that); 0: plain
    /// URLs, public while the file is kept.
    pub file_url_ttl_secs: u64,
    /// Keys that sign result URLs: the first signs, any verifies (put a new
    /// one first to rotate). Secrets: from gengate.toml or the environment.
    pub file_url_keys: Vec<String>,
    /// Results larger than this (MiB) fail their task, naming the limit.
    pub max_result_mb: u64,
    /// Days a finished task's results are kept before their files are
    /// deleted (0: for ever).
    pub retention_days: u32,
    /// Overrides of `retention_days` by model and by key id
    /// (`[retention.models]`, `[retention.keys]`; 0: for ever).
    pub retention: RetentionOverrides,
    /// Open connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// API requests in progress at most; one more is answered 503 at once.
    pub max_requests_in_flight: usize,
    /// Seconds a client has to send a request's headers (and a kept-alive
    /// connection to start its next request) before it is closed.
    pub header_timeout_secs: u64,
    /// Origins browsers may call the API from (CORS); none: CORS is off.
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` on this address instead of `listen`.
    pub metrics_listen: Option<String>,
    /// `/metrics` only with `Authorization: Bearer <token>`. A secret: from
    /// gengate.toml or the environment.
    pub metrics_token: Option<String>,
    /// Networks of proxies (load balancers) whose `X-Forwarded-For` names
    /// the client, for the wrong-key limit (CIDR).
    pub trusted_proxies: Vec<String>,
}

/// See [`Settings::retention`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionOverrides {
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, u32>,
    #[serde(default)]
    pub keys: std::collections::BTreeMap<uuid::Uuid, u32>,
}

/// A century: longer is for ever (0).
const MAX_RETENTION_DAYS: u32 = 36_500;

/// How clients fetch results (see [`Settings::file_urls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileUrlMode {
    Proxy,
    Presigned,
}

/// What an instance runs: several instances on one database can split
/// the HTTP side from the background engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The API and the engine.
    All,
    /// HTTP only: tasks are accepted and served, others run them.
    Api,
    /// The engine (and the health endpoints).
    Worker,
}

impl Role {
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    pub fn runs_engine(self) -> bool {
        self != Role::Api
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./gengate-data"),
            database_url: None,
            public_url: None,
            admin_key: None,
            sandbox_latency_ms: 2000,
            sandbox_failure_rate: 0.0,
            sandbox_submit_log: None,
            lease_secs: 30,
            concurrency: 64,
            max_attempts: 5,
            video_deadline_secs: 3600,
            image_deadline_secs: 900,
            drain_timeout_secs: 10,
            fetch_timeout_secs: 30,
            sync_wait_secs: 120,
            log_format: "text".into(),
            migrate: true,
            role: Role::All,
            allow_network: Vec::new(),
            callback_retry_schedule: gengate_core::delivery::DEFAULT_SCHEDULE.into(),
            channels: Vec::new(),
            prices: Vec::new(),
            default_credits: 0,
            storage_url: None,
            s3: Default::default(),
            file_urls: FileUrlMode::Proxy,
            presign_ttl_secs: 300,
            file_url_ttl_secs: 0,
            file_url_keys: Vec::new(),
            max_result_mb: gengate_engine::artifacts::DEFAULT_MAX_RESULT_BYTES >> 20,
            retention_days: 0,
            retention: RetentionOverrides::default(),
            max_connections: 4096,
            max_requests_in_flight: 1024,
            // Long enough that clients' pools rarely reuse a connection just
            // as it closes; short enough that slow ones cannot hold it.
            header_timeout_secs: 20,
            cors_origins: Vec::new(),
            metrics_listen: None,
            metrics_token: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Settings {
    pub fn allowed_networks(&self) -> anyhow::Result<Vec<gengate_engine::net::Cidr>> {
        self.allow_network
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e: String| anyhow::anyhow!("allow_network: {e}"))
            })
            .collect()
    }

    pub fn retry_schedule(&self) -> anyhow::Result<gengate_core::RetrySchedule> {
        gengate_core::RetrySchedule::parse(&self.callback_retry_schedule)
            .map_err(|e| anyhow::anyhow!("callback_retry_schedule: {e}"))
    }

    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("gengate.db").display()))
    }

    pub fn storage_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.storage_url {
            return Ok(url.clone());
        }
        let dir = std::path::absolute(self.data_dir.join("media"))?;
        Ok(format!("file://{}", dir.display()))
    }

    /// The retention rules: `retention_days` and its overrides.
    pub fn retention(&self) -> gengate_core::Retention {
        gengate_core::Retention {
            days: self.retention_days,
            models: self.retention.models.clone(),
            keys: self.retention.keys.clone(),
        }
    }

    /// How result URLs under `public` are written.
    pub fn file_links(&self, public: &str) -> gengate_core::FileLinks {
        let base = format!("{}/files", public.trim_end_matches('/'));
        if self.file_url_ttl_secs == 0 {
            return gengate_core::FileLinks::plain(base);
        }
        gengate_core::FileLinks::signed(base, &self.file_url_keys, self.file_url_ttl_secs)
    }

    /// The HTTP side's limits, CORS and metrics access.
    pub fn http_options(&self) -> anyhow::Result<gengate_server::HttpOptions> {
        let cors_origins = self
            .cors_origins
            .iter()
            .map(|o| {
                let parsed = reqwest::Url::parse(o).ok().filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.path() == "/"
                        && u.query().is_none()
                        && !o.ends_with('/')
                });
                anyhow::ensure!(
                    parsed.is_some(),
                    "cors_origins: {o:?} is not an origin (scheme://host[:port], no path)"
                );
                Ok(reqwest::header::HeaderValue::from_str(o)?)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(gengate_server::HttpOptions {
            limits: gengate_server::limits::Limits {
                max_connections: self.max_connections,
                max_requests_in_flight: self.max_requests_in_flight,
                header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            },
            cors_origins,
            metrics_here: self.metrics_listen.is_none(),
            // A token read from an env file may end in a newline.
            metrics_token: self.metrics_token.as_ref().map(|t| t.trim().to_string()),
            trusted_proxies: std::sync::Arc::new(
                self.trusted_proxies
                    .iter()
                    .map(|c| {
                        c.parse()
                            .map_err(|e: String| anyhow::anyhow!("trusted_proxies: {e}"))
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.max_connections)
                && (1..=1_000_000).contains(&self.max_requests_in_flight),
            "max_connections and max_requests_in_flight must be 1 to 1000000"
        );
        anyhow::ensure!(
            (1..=300).contains(&self.header_timeout_secs),
            "header_timeout_secs must be 1 to 300"
        );
        anyhow::ensure!(
            self.metrics_token
                .as_ref()
                .is_none_or(|t| t.trim().len() >= 16),
            "metrics_token must be at least 16 characters"
        );
        self.http_options()?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sandbox_failure_rate),
            "sandbox_failure_rate must be between 0 and 1"
        );
        anyhow::ensure!(self.concurrency > 0, "concurrency must be at least 1");
        anyhow::ensure!(self.lease_secs > 0, "lease_secs must be at least 1");
        // The openai SDKs give up (and retry, making the images again) at 600 s.
        anyhow::ensure!(
            (1..=540).contains(&self.sync_wait_secs),
            "sync_wait_secs must be 1 to 540"
        );
        anyhow::ensure!(self.max_attempts > 0, "max_attempts must be at least 1");
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "log_format must be text or json"
        );
        self.allowed_networks()?;
        self.retry_schedule()?;
        let mut names = std::collections::HashSet::new();
        for c in &self.channels {
            c.check().map_err(|e| anyhow::anyhow!("channels: {e}"))?;
            anyhow::ensure!(
                names.insert(c.name.as_str()),
                "channels: the name {:?} is used twice",
                c.name
            );
        }
        let mut models = std::collections::HashSet::new();
        for p in &self.prices {
            p.check()
                .map_err(|(field, rule)| anyhow::anyhow!("prices: {}: {field}: {rule}", p.model))?;
            anyhow::ensure!(
                models.insert(p.model.as_str()),
                "prices: the model {:?} is priced twice",
                p.model
            );
        }
        anyhow::ensure!(
            (0..=gengate_core::credits::MAX_PRICE).contains(&self.default_credits),
            "default_credits must be from 0 to 1000000000"
        );
        // S3 signs URLs for at most a week.
        anyhow::ensure!(
            (1..=604_800).contains(&self.presign_ttl_secs),
            "presign_ttl_secs must be 1 to 604800"
        );
        anyhow::ensure!(
            (1..=1 << 20).contains(&self.max_result_mb),
            "max_result_mb must be 1 to 1048576"
        );
        let days = self.retention();
        anyhow::ensure!(
            std::iter::once(&days.days)
                .chain(days.models.values())
                .chain(days.keys.values())
                .all(|d| *d <= MAX_RETENTION_DAYS),
            "retention_days (and each of [retention]'s) must be 0 (for ever) to {MAX_RETENTION_DAYS}"
        );
        anyhow::ensure!(
            self.file_url_ttl_secs == 0
                || (!self.file_url_keys.is_empty()
                    && self.file_url_keys.iter().all(|k| k.len() >= 32)),
            "file_url_ttl_secs needs file_url_keys, each of at least 32 characters"
        );
        anyhow::ensure!(
            self.file_urls == FileUrlMode::Proxy || self.storage_url()?.starts_with("s3://"),
            "file_urls = \"presigned\" needs an s3:// storage_url"
        );
        Ok(())
    }

    /// The channels to run: those configured, or the default sandbox one.
    pub fn channel_specs(&self) -> Vec<gengate_core::ChannelSpec> {
        if !self.channels.is_empty() {
            return self.channels.clone();
        }
        vec![gengate_core::ChannelSpec {
            latency_ms: Some(self.sandbox_latency_ms),
            failure_rate: Some(self.sandbox_failure_rate),
            ..gengate_core::ChannelSpec::new("sandbox", gengate_core::ProviderKind::Sandbox)
        }]
    }
}

/// Flags shared by every command that opens the store; each overrides the
/// same-named setting.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct CommonFlags {
    /// Configuration file (default: ./gengate.toml when it exists).
    #[arg(long, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Directory for the database and stored files.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://PATH).
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// Flags of `gengate serve`.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ServeFlags {
    /// Address to listen on.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Base URL clients reach gengate at (for result links).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Latency of the default sandbox channel, in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_latency_ms: Option<u64>,
    /// Share of sandbox tasks that fail, 0 to 1.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_failure_rate: Option<f64>,
    /// File the sandbox logs each submit to (`<task id> <pid>` lines), for load tests.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_submit_log: Option<PathBuf>,
    /// Seconds a claimed task stays with this instance before another may take it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Tasks handled at once.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Submit attempts before a task fails.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Seconds a video task may take before it fails with `timeout`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video_deadline_secs: Option<u64>,
    /// Seconds an image task may take before it fails with `timeout`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_deadline_secs: Option<u64>,
    /// Seconds allowed at shutdown to finish work in progress.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_secs: Option<u64>,
    /// Seconds allowed to fetch one input image.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_timeout_secs: Option<u64>,
    /// Seconds `POST /v1/images/generations` waits for its images.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_wait_secs: Option<u64>,
    /// Log format: text or json.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// What this instance runs: all, api (HTTP only) or worker (background engine).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A network callbacks and fetched URLs may reach although internal
    /// (loopback, private...), as CIDR; repeatable.
    #[arg(long)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_network: Vec<String>,
    /// Delays before each callback attempt, e.g. 0s,5s,5m,30m,2h,5h,10h,10h.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_retry_schedule: Option<String>,
    /// Do not run database migrations at start (run `gengate migrate` instead).
    #[arg(long)]
    #[serde(skip)]
    pub no_migrate: bool,
}

pub fn load(common: &CommonFlags, serve: &ServeFlags) -> anyhow::Result<Settings> {
    let file = match &common.config {
        Some(path) => {
            anyhow::ensure!(
                path.exists(),
                "config file {} does not exist",
                path.display()
            );
            Some(path.clone())
        }
        None => Some(PathBuf::from("gengate.toml")).filter(|p| p.exists()),
    };
    let mut fig = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(file) = file {
        fig = fig.merge(Toml::file_exact(file));
    }
    let settings: Settings = fig
        .merge(Env::prefixed("GENGATE_"))
        .merge(Serialized::defaults(common))
        .merge(Serialized::defaults(serve))
        .extract()?;
    let settings = Settings {
        migrate: settings.migrate && !serve.no_migrate,
        ..settings
    };
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn flags_override_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("g.toml", "sandbox_latency_ms = 5\nlisten = \"127.0.0.1:9\"")?;
            jail.set_env("GENGATE_LISTEN", "127.0.0.1:10");
            let common = CommonFlags {
                config: Some("g.toml".into()),
                ..Default::default()
            };
            let serve = ServeFlags {
                sandbox_failure_rate: Some(0.5),
                ..Default::default()
            };
            let s = load(&common, &serve).map_err(|e| e.to_string())?;
            assert_eq!(s.sandbox_latency_ms, 5);
            assert_eq!(s.listen, "127.0.0.1:10");
            assert_eq!(s.sandbox_failure_rate, 0.5);
            assert_eq!(s.concurrency, Settings::default().concurrency);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn networks_come_from_the_environment_as_a_list() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GENGATE_ALLOW_NETWORK", "[10.0.0.0/8, 127.0.0.2/32]");
            let s =
                load(&CommonFlags::default(), &ServeFlags::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.allow_network, ["10.0.0.0/8", "127.0.0.2/32"]);
            Ok(())
        });
    }

    #[test]
    fn bad_settings_are_refused() {
        let serve = ServeFlags {
            sandbox_failure_rate: Some(2.0),
            ..Default::default()
        };
        assert!(load(&CommonFlags::default(), &serve).is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn channels_come_from_the_file_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "g.toml",
                r#"
[[channels]]
name = "kling-main"
provider = "kling"
base_url = "https://api.klingai.com"
credentials = { access_key = "ak", secret_key = "sk" }
models = { "kling-image" = "kling-v2" }
priority = 10

[[channels]]
name = "spare"
provider = "sandbox"
models = { "*" = "*" }
latency_ms = 50
"#,
            )?;
            let common = CommonFlags {
                config: Some("g.toml".into()),
                ..Default::default()
            };
            let s = load(&common, &ServeFlags::default()).map_err(|e| e.to_string())?;
            let specs = s.channel_specs();
            assert_eq!(specs.len(), 2);
            assert_eq!(specs[0].upstream_model("kling-image"), Some("kling-v2"));
            assert_eq!(specs[0].credentials.secret_key.as_deref(), Some("sk"));
            assert_eq!((specs[0].priority, specs[0].weight), (10, 1));
            assert_eq!(specs[1].latency_ms, Some(50));

            // A kling channel without credentials, and a name used twice.
            jail.create_file(
                "bad.toml",
                "[[channels]]\nname = \"k\"\nprovider = \"kling\"\nbase_url = \"https://x\"\nmodels = { \"*\" = \"*\" }\n",
            )?;
            let bad = CommonFlags {
                config: Some("bad.toml".into()),
                ..Default::default()
            };
            let err = load(&bad, &ServeFlags::default()).unwrap_err().to_string();
            assert!(err.contains("credentials.api_key"), "{err}");
            jail.create_file(
                "twice.toml",
                "[[channels]]\nname = \"s\"\nprovider = \"sandbox\"\nmodels = { \"*\" = \"*\" }\n\
                 [[channels]]\nname = \"s\"\nprovider = \"sandbox\"\nmodels = { \"*\" = \"*\" }\n",
            )?;
            let twice = CommonFlags {
                config: Some("twice.toml".into()),
                ..Default::default()
            };
            let err = load(&twice, &ServeFlags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("used twice"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn retention_comes_from_the_file_and_is_bounded() {
        figment::Jail::expect_with(|jail| {
            let key = "0190a07c-7641-7809-a133-10786201bb57";
            jail.create_file(
                "g.toml",
                &format!(
                    "retention_days = 7\n[retention.models]\n\"ray-2\" = 1\n\
                     [retention.keys]\n\"{key}\" = 0\n"
                ),
            )?;
            let common = CommonFlags {
                config: Some("g.toml".into()),
                ..Default::default()
            };
            let rules = load(&common, &ServeFlags::default())
                .map_err(|e| e.to_string())?
                .retention();
            assert_eq!(rules.days, 7);
            assert_eq!(rules.models["ray-2"], 1);
            assert_eq!(rules.keys[&key.parse().unwrap()], 0);
            jail.set_env("GENGATE_RETENTION_DAYS", "40000");
            let err = load(&common, &ServeFlags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("retention_days"), "{err}");
            jail.create_file("typo.toml", "[retention]\nmodel = { x = 1 }\n")?;
            let typo = CommonFlags {
                config: Some("typo.toml".into()),
                ..Default::default()
            };
            let err = load(&typo, &ServeFlags::default()).unwrap_err().to_string();
            assert!(
                err.contains("unknown field") && err.contains("model"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn no_channels_means_one_sandbox_serving_every_model() {
        let s = Settings {
            sandbox_latency_ms: 7,
            ..Settings::default()
        };
        let specs = s.channel_specs();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].provider, gengate_core::ProviderKind::Sandbox);
        assert_eq!(specs[0].upstream_model("anything"), Some("anything"));
        assert_eq!(specs[0].latency_ms, Some(7));
    }
}
