//! Wiring: store, channels, engine and HTTP server from settings, with a
//! bounded graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gengate_engine::keys::KeyService;
use gengate_engine::net::AddressPolicy;
use gengate_engine::service::TaskService;
use gengate_engine::storage::MediaStore;
use gengate_engine::webhooks::Deliverer;
use gengate_engine::{Channels, Engine, EngineConfig, ProviderFactory, now_ms};
use gengate_server::AppState;
use gengate_server::files::FileUrls;
use gengate_store::TaskStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{FileUrlMode, Settings};

/// A running gengate: where it listens, and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served when it has its own address.
    pub metrics_addr: Option<SocketAddr>,
    /// The admin key made at this start, if the store was empty.
    pub new_admin_key: Option<String>,
    /// Its callback signing secret.
    pub new_admin_webhook_secret: Option<String>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stop taking requests and tasks, drain, and wait for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.handle.await?
    }

    /// Wait until it stops by itself (a signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.handle.await?
    }

    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Open the configured store, migrating it when `migrate`.
pub async fn open_store(settings: &Settings, migrate: bool) -> anyhow::Result<Arc<dyn TaskStore>> {
    tokio::fs::create_dir_all(&settings.data_dir)
        .await
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let url = settings.database_url();
    gengate_store::open(&url, migrate)
        .await
        .with_context(|| format!("opening the store at {url}"))
}

/// On an empty store, make the first admin key (from `admin_key` or random).
async fn first_admin_key(
    store: &dyn TaskStore,
    settings: &Settings,
) -> anyhow::Result<Option<(String, String)>> {
    if store.count_keys().await? > 0 {
        return Ok(None);
    }
    let (secret, mut key) = gengate_engine::keys::new_key("admin", true, now_ms());
    // The operator's own key: charged for the record, never refused.
    key.unlimited = true;
    let secret = match &settings.admin_key {
        Some(given) => {
            anyhow::ensure!(
                given.starts_with(gengate_engine::keys::KEY_PREFIX) && given.len() >= 35,
                "GENGATE_ADMIN_KEY must start with gg_ and be at least 32 characters after it"
            );
            key.hash = gengate_engine::keys::hash_key(given);
            given.clone()
        }
        None => secret,
    };
    match store.create_key(&key).await {
        Ok(()) => Ok(Some((secret, key.webhook_secret.unwrap_or_default()))),
        // Another instance starting on the same empty store made it first.
        Err(gengate_store::StoreError::Conflict(_)) if settings.admin_key.is_some() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    // Before anything counts: the engine's first gauges come before the router.
    gengate_server::metrics::install();
    let store = open_store(&settings, settings.migrate).await?;
    let (new_admin_key, new_admin_webhook_secret) =
        first_admin_key(store.as_ref(), &settings).await?.unzip();
    let http = settings.http_options()?;
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match &settings.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("listening for metrics on {at}"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let public = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    if settings.public_url.is_none()
        && let Some(c) = settings.channels.iter().find(|c| c.callbacks)
    {
        // Upstreams elsewhere cannot call back to a local address; their
        // tasks would wait for the slow fallback polls.
        tracing::warn!(
            channel = c.name,
            public_url = %public,
            "a channel uses upstream callbacks but public_url is not set: upstreams are told to call back to this listen address"
        );
    }
    let submit_log = settings.sandbox_submit_log.clone();
    let factory: ProviderFactory =
        Arc::new(move |spec| gengate_providers::for_channel(spec, submit_log.clone()));
    let channels = Channels::new(settings.channel_specs(), factory)
        .map_err(|e| anyhow::anyhow!("channels: {e}"))?;
    let cfg = EngineConfig {
        lease: Duration::from_secs(settings.lease_secs),
        concurrency: settings.concurrency,
        max_attempts: settings.max_attempts,
        video_deadline: Duration::from_secs(settings.video_deadline_secs),
        image_deadline: Duration::from_secs(settings.image_deadline_secs),
        drain_timeout: Duration::from_secs(settings.drain_timeout_secs),
        fetch_timeout: Duration::from_secs(settings.fetch_timeout_secs),
        public_url: Some(public.clone()),
        prices: settings.prices.clone(),
        spool_dir: settings.data_dir.join("spool"),
        max_result_bytes: settings.max_result_mb << 20,
        retention: settings.retention(),
        ..EngineConfig::default()
    };
    let media = MediaStore::open(&settings.storage_url()?, &settings.s3)?;
    tracing::info!(storage = media.url(), "results and inputs stored");
    let policy = AddressPolicy::new(settings.allowed_networks()?);
    let engine = Engine::new(store.clone(), channels, media, cfg, policy.clone());
    // Stored channels serve from the first request on.
    engine
        .reload_channels()
        .await
        .context("reading stored channels")?;
    let file_links = Arc::new(settings.file_links(&public));
    let deliverer = Deliverer::new(
        store.clone(),
        policy.clone(),
        settings.retry_schedule()?,
        file_links.clone(),
    );
    // Subscribed before anything runs: no change is made unheard.
    let news = engine.subscribe();
    let (tx, rx) = watch::channel(false);
    let keys = Arc::new(KeyService::new(store.clone(), settings.default_credits));
    let state = AppState {
        tasks: Arc::new(TaskService::new(engine.clone(), policy, rx.clone())),
        keys: keys.clone(),
        rendered: Arc::default(),
        sync_wait: Duration::from_secs(settings.sync_wait_secs),
        store,
        engine: engine.clone(),
        file_links,
        file_urls: match settings.file_urls {
            FileUrlMode::Proxy => FileUrls::Proxy,
            FileUrlMode::Presigned => {
                FileUrls::Presigned(Duration::from_secs(settings.presign_ttl_secs))
            }
        },
    };
    let drain_timeout = Duration::from_secs(settings.drain_timeout_secs);
    let run_engine = settings.role.runs_engine();
    let serve_api = settings.role.serves_api();
    // Built here, not in the server's task: a router that cannot be built
    // fails the start instead of leaving a listener nobody answers.
    let app = gengate_server::router(state, serve_api, &http);
    let handle = tokio::spawn(async move {
        let watch_task = tokio::spawn(engine.clone().watch_channels(rx.clone()));
        let count_task = tokio::spawn(keys.clone().record_requests(rx.clone()));
        let sweep_task = run_engine.then(|| tokio::spawn(engine.sweeper().run(rx.clone())));
        let engine_task = run_engine.then(|| tokio::spawn(engine.run(rx.clone())));
        let deliver_task = run_engine.then(|| tokio::spawn(deliverer.run(rx.clone(), news)));
        let stopping = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let metrics_task = metrics_listener.map(|listener| {
            let app = gengate_server::metrics_router(http.metrics_token.as_deref());
            tokio::spawn(gengate_server::limits::serve(
                listener,
                app,
                http.limits,
                http.trusted_proxies.clone(),
                stopping(rx.clone()),
            ))
        });
        let server = tokio::spawn(gengate_server::limits::serve(
            listener,
            app,
            http.limits,
            http.trusted_proxies.clone(),
            stopping(rx.clone()),
        ));
        let mut rx = rx;
        let _ = rx.wait_for(|stop| *stop).await;
        // Open requests get drain_timeout too, beside the engine's own drain.
        match tokio::time::timeout(drain_timeout, server).await {
            Ok(r) => r??,
            Err(_) => tracing::warn!("requests still open after the grace period; closing"),
        }
        if let Some(task) = metrics_task {
            // A scrape in progress is not worth waiting for.
            task.abort();
        }
        for task in [
            Some(watch_task),
            Some(count_task),
            engine_task,
            deliver_task,
            sweep_task,
        ]
        .into_iter()
        .flatten()
        {
            task.await?;
        }
        keys.flush_requests().await;
        Ok(())
    });
    tracing::info!(%addr, public_url = %public, role = settings.role.as_str(), "gengate listening");
    if let Some(at) = metrics_addr {
        tracing::info!(%at, "metrics served on their own address");
    }
    Ok(Running {
        addr,
        metrics_addr,
        new_admin_key,
        new_admin_webhook_secret,
        shutdown: tx,
        handle,
    })
}
