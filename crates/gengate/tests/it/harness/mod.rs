//! Starting a real gengate for a test: in-process on 127.0.0.1:0 with a
//! fresh data directory, spoken to over HTTP like any client.

pub mod procs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gengate::app::{self, Running};
use gengate::config::Settings;
use gengate_store::TaskStore;
use serde_json::Value;

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

/// Which store a test's gateway runs on; every integration test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run each listed `async fn(Backend)` as one test per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name($crate::harness::Backend::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if $crate::harness::postgres_available().await {
                    super::$name($crate::harness::Backend::Postgres).await;
                }
            })*
        }
    };
}

/// Whether the test PostgreSQL server answers (skips say so; CI fails instead).
pub async fn postgres_available() -> bool {
    gengate_testkit::PgTestDb::reachable().await
}

pub fn settings_in(dir: &std::path::Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        sandbox_latency_ms: 100,
        // The image host and callback receivers of the tests listen here.
        allow_network: vec!["127.0.0.1/32".into()],
        ..Settings::default()
    }
}

impl Gateway {
    pub async fn start(backend: Backend) -> Gateway {
        Gateway::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings_in(dir.path());
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                gengate_testkit::PgTestDb::create()
                    .await
                    .expect("PostgreSQL was reachable a moment ago"),
            ),
        };
        settings.database_url = pg.as_ref().map(|db| db.url.clone());
        tweak(&mut settings);
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

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        if let Some(db) = self.pg.take() {
            db.drop_db().await;
        }
    }

    /// A new non-admin key.
    pub async fn new_key(&self, name: &str) -> String {
        let (secret, key) = gengate_server::auth::new_key(name, false, gengate_engine::now_ms());
        self.store.create_key(&key).await.expect("key stored");
        secret
    }

    /// How many tasks of `dialect` the key owns, straight from the store.
    pub async fn task_count(&self, key: &str, dialect: gengate_core::Dialect) -> u64 {
        let k = self
            .store
            .key_by_hash(&gengate_server::auth::hash_key(key))
            .await
            .unwrap()
            .expect("known key");
        self.store.list_tasks(k.id, dialect, 0, 1).await.unwrap().1
    }

    /// The key's record (its id, its callback signing secrets).
    pub async fn key_record(&self, key: &str) -> gengate_core::ApiKey {
        self.store
            .key_by_hash(&gengate_server::auth::hash_key(key))
            .await
            .unwrap()
            .expect("known key")
    }

    pub fn store(&self) -> &dyn TaskStore {
        self.store.as_ref()
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

    /// Poll a Luma task until it is terminal.
    pub async fn wait_luma(&self, key: &str, id: &str) -> Value {
        self.wait(&format!("/luma/generations/{id}"), key, |v| {
            matches!(v["state"].as_str(), Some("completed" | "failed"))
        })
        .await
    }

    /// Poll a Kling task until it is terminal; answers `data`.
    pub async fn wait_kling(&self, key: &str, id: &str) -> Value {
        let v = self
            .wait(&format!("/kling/v1/images/generations/{id}"), key, |v| {
                matches!(
                    v["data"]["task_status"].as_str(),
                    Some("succeed" | "failed")
                )
            })
            .await;
        v["data"].clone()
    }

    async fn wait(&self, path: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, v) = self.get(path, key).await;
            assert_eq!(status, 200, "GET {path}: {v}");
            if done(&v) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{path} did not finish: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
