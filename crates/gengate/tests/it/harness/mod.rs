//! Starting a real gengate for a test: [`TestApp`] builds one (a backend,
//! settings, channels on emulated upstreams) and starts it in-process on
//! 127.0.0.1:0 with a fresh data directory; the [`Gateway`] it answers is
//! spoken to over HTTP like any client.

pub mod events;
pub mod procs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gengate::app::{self, Running};
use gengate::config::Settings;
use gengate_core::{ChannelSpec, ProviderKind};
use gengate_store::TaskStore;
use serde_json::Value;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use events::Event;

/// How long a test waits for a task to reach a state before it fails.
pub const TASK_WAIT: Duration = Duration::from_secs(60);

/// Which store a test's gateway runs on; every integration test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run each listed `async fn(Backend)` as one test per backend, beside
/// other tests; after `alone:`, each with the machine to itself.
macro_rules! on_both_backends {
    (alone: $($name:ident),* $(,)?) => {
        on_both_backends!(@turn the_machine_alone; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        on_both_backends!(@turn sharing_the_machine; $($name),*);
    };
    (@turn $turn:ident; $($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let _turn = $crate::harness::$turn().await;
                super::$name($crate::harness::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                let _turn = $crate::harness::$turn().await;
                if $crate::harness::postgres_available().await {
                    super::$name($crate::harness::Backend::Postgres).await;
                }
            })*
        }
    };
}

/// The tests share one process; one that loads the whole machine holds
/// this for writing (as if in a binary of its own, run alone), the others
/// for reading, so no timed test starves beside it.
static MACHINE: RwLock<()> = RwLock::const_new(());

pub async fn sharing_the_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().await
}

pub async fn the_machine_alone() -> RwLockWriteGuard<'static, ()> {
    MACHINE.write().await
}

/// Whether the test PostgreSQL server answers (skips say so; CI fails instead).
pub async fn postgres_available() -> bool {
    gengate_testkit::PgTestDb::reachable().await
}

/// An emulated upstream a channel can point at.
pub trait Upstream {
    fn base_url(&self) -> String;
}

macro_rules! upstreams {
    ($($emu:ty),*) => {$(
        impl Upstream for $emu {
            fn base_url(&self) -> String {
                <$emu>::base_url(self)
            }
        }
    )*};
}
upstreams!(
    gengate_testkit::KlingEmu,
    gengate_testkit::luma::LumaEmu,
    gengate_testkit::replicate::ReplicateEmu,
    gengate_testkit::openai_images::OpenAiImagesEmu,
    gengate_testkit::openai_videos::OpenAiVideosEmu,
    gengate_testkit::veo::VeoEmu,
    gengate_testkit::comfyui::ComfyEmu
);

/// A channel of `provider` named `name` on `upstream`, serving `models`
/// (gengate's name, the upstream's); credentials are the caller's to add.
pub fn channel_on(
    upstream: &impl Upstream,
    name: &str,
    provider: ProviderKind,
    models: &[(&str, &str)],
) -> ChannelSpec {
    ChannelSpec {
        base_url: Some(upstream.base_url()),
        models: model_map(models),
        ..ChannelSpec::new(name, provider)
    }
}

/// A sandbox channel named `name` serving `models` (each under its own
/// name), its jobs taking `latency_ms`.
pub fn sandbox_channel(name: &str, models: &[&str], latency_ms: u64) -> ChannelSpec {
    ChannelSpec {
        models: models
            .iter()
            .map(|m| (m.to_string(), m.to_string()))
            .collect(),
        latency_ms: Some(latency_ms),
        ..ChannelSpec::new(name, ProviderKind::Sandbox)
    }
}

fn model_map(models: &[(&str, &str)]) -> BTreeMap<String, String> {
    models
        .iter()
        .map(|(ours, theirs)| (ours.to_string(), theirs.to_string()))
        .collect()
}

/// A gengate to start: its backend and settings, built up before `start`.
/// Without channels it runs the built-in sandbox channel (100 ms jobs).
pub struct TestApp {
    backend: Backend,
    dir: tempfile::TempDir,
    settings: Settings,
}

impl TestApp {
    pub fn on(backend: Backend) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            sandbox_latency_ms: 100,
            // The image host and callback receivers of the tests listen here.
            allow_network: vec!["127.0.0.1/32".into()],
            ..Settings::default()
        };
        TestApp {
            backend,
            dir,
            settings,
        }
    }

    /// How long the built-in sandbox channel's jobs take.
    pub fn sandbox_latency_ms(mut self, ms: u64) -> TestApp {
        self.settings.sandbox_latency_ms = ms;
        self
    }

    /// Any other setting (`data_dir` is already the test's own directory).
    pub fn with(mut self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        tweak(&mut self.settings);
        self
    }

    /// A channel, in place of the built-in sandbox one.
    pub fn channel(mut self, spec: ChannelSpec) -> TestApp {
        self.settings.channels.push(spec);
        self
    }

    pub async fn start(self) -> Gateway {
        let TestApp {
            backend,
            dir,
            mut settings,
        } = self;
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                gengate_testkit::PgTestDb::create()
                    .await
                    .expect("PostgreSQL was reachable a moment ago"),
            ),
        };
        if let Some(db) = &pg {
            settings.database_url = Some(db.url.clone());
        }
        let running = app::start(settings.clone()).await.expect("gengate starts");
        let admin = running.new_admin_key.clone().expect("a first admin key");
        let base = format!("http://{}", running.addr);
        let store = gengate_store::open(&settings.database_url(), false)
            .await
            .expect("store");
        Gateway {
            running: Some(running),
            pg,
            base,
            admin,
            dir,
            settings,
            http: reqwest::Client::new(),
            store,
        }
    }
}

/// A running gengate, its first admin key, and its store to look into.
pub struct Gateway {
    running: Option<Running>,
    pg: Option<gengate_testkit::PgTestDb>,
    pub base: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub settings: Settings,
    pub http: reqwest::Client,
    store: Arc<dyn TaskStore>,
}

impl Gateway {
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        if let Some(db) = self.pg.take() {
            db.drop_db().await;
        }
    }

    /// Where `/metrics` is served when `metrics_listen` gave it its own address.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().and_then(|r| r.metrics_addr)
    }

    /// A new non-admin key, with no credits (free models only).
    pub async fn new_key(&self, name: &str) -> String {
        self.new_key_with(name, 0).await
    }

    /// A new non-admin key starting with `credits`.
    pub async fn new_key_with(&self, name: &str, credits: gengate_core::Credits) -> String {
        let (secret, mut key) =
            gengate_engine::keys::new_key(name, false, gengate_engine::now_ms());
        key.balance = credits;
        self.store.create_key(&key).await.expect("key stored");
        secret
    }

    /// How many tasks of `dialect` the key owns, straight from the store.
    pub async fn task_count(&self, key: &str, dialect: gengate_core::Dialect) -> u64 {
        let k = self.key_record(key).await;
        self.store.list_tasks(k.id, dialect, 0, 1).await.unwrap().1
    }

    /// The key's record (its id, its callback signing secrets).
    pub async fn key_record(&self, key: &str) -> gengate_core::ApiKey {
        self.store
            .key_by_hash(&gengate_engine::keys::hash_key(key))
            .await
            .unwrap()
            .expect("known key")
    }

    pub fn store(&self) -> &dyn TaskStore {
        self.store.as_ref()
    }

    /// The stored task with id `id` (any dialect's id string); it must exist.
    pub async fn task(&self, id: &str) -> gengate_core::Task {
        let id = id.parse().expect("a task id");
        self.store
            .load_task(id)
            .await
            .unwrap()
            .expect("a stored task")
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json)
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(key),
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// `method` with a JSON `body` (PATCH, PUT).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (u16, Value) {
        let body = ("application/json", body.to_string().into_bytes());
        self.send(method, path, Some(key), Some(body)).await
    }

    pub async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Some(key), None).await
    }

    pub async fn bytes(&self, url: &str) -> (u16, String, Vec<u8>) {
        let resp = self.http.get(url).send().await.expect("file fetched");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            resp.status().as_u16(),
            ct,
            resp.bytes().await.expect("bytes").to_vec(),
        )
    }

    /// Task `id`'s events as they come, until one whose state `stop`
    /// accepts or the stream's end (after the terminal event).
    pub async fn watch(&self, key: &str, id: &str, stop: impl Fn(&str) -> bool) -> Vec<Event> {
        events::watch(&self.http, &self.base, key, id, TASK_WAIT, stop).await
    }

    /// Waits for task `id` (of any dialect) to reach `state`; answers the
    /// task (gengate's view) as it stood then.
    pub async fn wait_state(&self, key: &str, id: &str, state: &str) -> Value {
        let seen = self.watch(key, id, |s| s == state).await;
        match seen.last() {
            Some(e) if e.state == state => e.data["task"].clone(),
            _ => panic!("task {id} ended without becoming {state}: {seen:?}"),
        }
    }

    /// Waits for task `id` to reach a terminal state; answers its events.
    pub async fn wait_done(&self, key: &str, id: &str) -> Vec<Event> {
        events::wait_done(&self.http, &self.base, key, id, TASK_WAIT).await
    }

    /// Waits for task `id` to end, then answers `GET path` (its view in
    /// some dialect).
    pub async fn finished(&self, key: &str, id: &str, path: &str) -> Value {
        self.wait_done(key, id).await;
        let (status, v) = self.get(path, key).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// A Luma task, once terminal.
    pub async fn wait_luma(&self, key: &str, id: &str) -> Value {
        self.finished(key, id, &format!("/luma/generations/{id}"))
            .await
    }

    /// A Kling task's `data`, once terminal.
    pub async fn wait_kling(&self, key: &str, id: &str) -> Value {
        self.finished(key, id, &format!("/kling/v1/images/generations/{id}"))
            .await["data"]
            .clone()
    }

    /// A task of gengate's own API (`/v1/tasks`), once terminal.
    pub async fn wait_task(&self, key: &str, id: &str) -> Value {
        self.finished(key, id, &format!("/v1/tasks/{id}")).await
    }
}

/// Asks `probe` every `every` until it answers `Ok`, for what no event
/// announces (a callback receiver's count, rows in a store, a config
/// another process wrote); `Err` says what it saw, for the panic after
/// `within`.
pub async fn poll_until<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                start.elapsed() < within,
                "{what}: not within {within:?} (last seen: {seen})"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

/// Mean red, green and blue of an encoded image.
pub fn mean_rgb(encoded: &[u8]) -> [f64; 3] {
    let img = image::load_from_memory(encoded)
        .expect("an image")
        .to_rgb8();
    let mut sum = [0u64; 3];
    for p in img.pixels() {
        for c in 0..3 {
            sum[c] += u64::from(p[c]);
        }
    }
    let n = f64::from(img.width() * img.height());
    sum.map(|s| s as f64 / n)
}

/// Every key of `expected` is in `actual` with the same JSON type, at every
/// level; `null` in `expected` must be `null` in `actual`.
pub fn assert_same_shape(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} is missing from {actual}"));
                assert_same_shape(ev, av, &format!("{path}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                assert!(!a.is_empty(), "{path} is empty");
                for (i, av) in a.iter().enumerate() {
                    assert_same_shape(first, av, &format!("{path}[{i}]"));
                }
            }
        }
        (Value::Null, Value::Null)
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_)) => {}
        (e, a) => panic!("{path}: expected the type of {e}, got {a}"),
    }
}
