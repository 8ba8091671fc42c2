//! The crash loop: real gengate processes SIGKILLed again and again while
//! clients submit through every dialect (OpenAI images synchronously), the emulated Kling
//! and the sandbox failing one request (or task) in ten, and the callback
//! receiver failing one delivery in ten and going down for a while. Then
//! the accounting: every acknowledged task exists and is terminal; every
//! event of every task was delivered at least once, in order, or is
//! visibly given up; no upstream job was made twice for one task; no
//! secret reached a log line, a callback or the metrics.
//!
//! The integration tests run it small; `cargo run --release -p bench --
//! crash --tasks 20000 --kills 5` runs it large.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{KlingAccount, KlingEmu};

pub const KEY: &str = "gg_crash_admin_key_0123456789abcdefghijklmnopqrs";
const KLING_ACCESS: &str = "crash-access-key";
const KLING_SECRET: &str = "crash-kling-secret-0123456789abcdef";

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tasks: usize,
    pub kills: usize,
    /// gengate processes at once (several need PostgreSQL).
    pub instances: usize,
    /// Clients submitting at once.
    pub clients: usize,
    /// Share of upstream requests, sandbox tasks and callback deliveries
    /// that fail.
    pub fault_rate: f64,
}

pub enum Database {
    /// One SQLite file in the run's directory.
    Sqlite,
    /// A PostgreSQL database (made empty by the caller).
    Postgres(String),
}

/// What a run found. [`Report::lost_nothing`] is the verdict.
#[derive(Debug, Default)]
pub struct Report {
    pub acknowledged: usize,
    /// Of those, synchronous OpenAI image requests answered with images.
    pub images_answered: usize,
    pub completed: usize,
    pub failed: usize,
    /// Submits answered with an error (or not at all) and not retried into
    /// an acknowledgement; nothing is promised for those.
    pub unacknowledged_attempts: usize,
    /// Acknowledged tasks missing or not terminal at the end.
    pub lost: Vec<String>,
    pub kills: usize,
    /// Faults served: upstream, sandbox failures are counted as failed tasks.
    pub upstream_faults: u64,
    pub callbacks_refused: u64,
    pub events: usize,
    pub delivered: usize,
    pub given_up: usize,
    /// Events neither delivered nor given up, or delivered but never received.
    pub undelivered: Vec<String>,
    /// Tasks whose events arrived out of order (by first arrival).
    pub out_of_order: Vec<String>,
    pub duplicate_upstream_jobs: usize,
    /// Secrets found where they must never be (log lines, callbacks, metrics).
    pub leaked: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn lost_nothing(&self) -> bool {
        self.lost.is_empty()
            && self.undelivered.is_empty()
            && self.out_of_order.is_empty()
            && self.duplicate_upstream_jobs == 0
            && self.leaked.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sample = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        writeln!(f, "tasks acknowledged    {}", self.acknowledged)?;
        writeln!(
            f,
            "  of which answered with images at once {}",
            self.images_answered
        )?;
        writeln!(
            f,
            "  completed / failed  {} / {}",
            self.completed, self.failed
        )?;
        writeln!(
            f,
            "  lost                {} {}",
            self.lost.len(),
            sample(&self.lost)
        )?;
        writeln!(f, "unacknowledged tries  {}", self.unacknowledged_attempts)?;
        writeln!(f, "SIGKILLs              {}", self.kills)?;
        writeln!(f, "upstream faults       {}", self.upstream_faults)?;
        writeln!(f, "callbacks refused     {}", self.callbacks_refused)?;
        writeln!(f, "events                {}", self.events)?;
        writeln!(
            f,
            "  delivered / given up {} / {}",
            self.delivered, self.given_up
        )?;
        writeln!(
            f,
            "  undelivered         {} {}",
            self.undelivered.len(),
            sample(&self.undelivered)
        )?;
        writeln!(
            f,
            "  out of order        {} {}",
            self.out_of_order.len(),
            sample(&self.out_of_order)
        )?;
        writeln!(
            f,
            "duplicate upstream jobs {}",
            self.duplicate_upstream_jobs
        )?;
        writeln!(f, "secrets leaked        {:?}", self.leaked)?;
        write!(
            f,
            "elapsed               {:.1} s",
            self.elapsed.as_secs_f64()
        )
    }
}

/// The callback receiver: fails a share of deliveries and goes down for a
/// while; records when each event (`webhook-id`) first arrived.
#[derive(Default)]
struct Hooks {
    fault_ppm: u64,
    down: AtomicBool,
    arrivals: AtomicU64,
    first: Mutex<HashMap<String, u64>>,
    refused: AtomicU64,
    /// Secrets seen in bodies or headers.
    leaked: Mutex<Vec<String>>,
    secrets: Vec<String>,
}

async fn hook(State(h): State<Arc<Hooks>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body);
    for s in &h.secrets {
        let in_headers = headers
            .values()
            .any(|v| v.to_str().is_ok_and(|v| v.contains(s.as_str())));
        if text.contains(s.as_str()) || in_headers {
            h.leaked.lock().unwrap().push(format!("callback: {s}"));
        }
    }
    if h.down.load(Ordering::SeqCst) || rand::random_range(0..1_000_000) < h.fault_ppm {
        h.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let n = h.arrivals.fetch_add(1, Ordering::SeqCst);
    h.first.lock().unwrap().entry(id.to_string()).or_insert(n);
    StatusCode::NO_CONTENT
}

/// The processes, their command line, and where each writes its log.
struct Fleet {
    bin: PathBuf,
    dir: PathBuf,
    live: RwLock<Vec<Option<String>>>,
    procs: tokio::sync::Mutex<Vec<Option<Child>>>,
    /// The first start's stdout: the admin's callback signing secret.
    webhook_secret: Mutex<Option<String>>,
}

impl Fleet {
    async fn start(&self, n: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("gengate-{n}.log")))?;
        let mut child = Command::new(&self.bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(self.dir.join("gengate.toml"))
            .arg("--data-dir")
            .arg(self.dir.join(format!("instance-{n}")))
            .env("GENGATE_ADMIN_KEY", KEY)
            .env("GENGATE_LOG", "info")
            .env_remove("GENGATE_LISTEN")
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting gengate")?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(s) = line.split_whitespace().find(|w| w.starts_with("whsec_")) {
                    *self.webhook_secret.lock().unwrap() = Some(s.to_string());
                }
                if let Some(addr) = line.strip_prefix("gengate listening on ") {
                    return Some(addr.to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("gengate did not start listening")?;
        // Keep reading: a closed pipe would make its next line fatal.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.live.write().unwrap()[n] = Some(base);
        self.procs.lock().await[n] = Some(child);
        Ok(())
    }

    async fn kill(&self, n: usize) {
        self.live.write().unwrap()[n] = None;
        if let Some(mut child) = self.procs.lock().await[n].take() {
            // SIGKILL: no drain, no cleanup.
            let _ = child.kill().await;
        }
    }

    fn any_live(&self) -> Option<String> {
        let live = self.live.read().unwrap();
        let up: Vec<&String> = live.iter().flatten().collect();
        (!up.is_empty()).then(|| up[rand::random_range(0..up.len())].clone())
    }

    fn logs(&self) -> Vec<PathBuf> {
        let n = self.live.read().unwrap().len();
        (0..n)
            .map(|i| self.dir.join(format!("gengate-{i}.log")))
            .collect()
    }
}

fn config(plan: &Plan, db: &Database, dir: &Path, kling: &KlingEmu) -> String {
    let database = match db {
        Database::Sqlite => format!("sqlite://{}", dir.join("gengate.db").display()),
        Database::Postgres(url) => url.clone(),
    };
    format!(
        r#"database_url = "{database}"
storage_url = "file://{media}"
allow_network = ["127.0.0.1/32"]
lease_secs = 3
image_deadline_secs = 600
video_deadline_secs = 600
callback_retry_schedule = "0s,1s,1s,2s,3s,5s,5s,10s"

[[channels]]
name = "kling"
provider = "kling"
base_url = "{kling}"
credentials = {{ access_key = "{KLING_ACCESS}", secret_key = "{KLING_SECRET}" }}
models = {{ "kling-v1" = "kling-v1" }}
priority = 10

[[channels]]
name = "sandbox"
provider = "sandbox"
models = {{ "*" = "*" }}
latency_ms = 300
failure_rate = {rate}
"#,
        media = dir.join("media").display(),
        kling = kling.base_url(),
        rate = plan.fault_rate,
    )
}

/// What a client was given for a request.
enum Acknowledged {
    /// A task's id, to follow.
    Task(String),
    /// OpenAI's synchronous answer: the images, made; the first one's URL.
    Images(String),
}

/// Submit task `i` (its dialect by `i`, calling back to `hook`) through
/// `base`: what the client was given, once acknowledged.
async fn submit(http: &reqwest::Client, base: &str, i: usize, hook: &str) -> Option<Acknowledged> {
    // A few prompts: the sandbox makes each picture or video once per process.
    let prompt = format!("crash scene {}", i % 3);
    if i % 7 == 6 {
        // Synchronous, no callback; a retry elsewhere names the same task.
        let req = http
            .post(format!("{base}/v1/images/generations"))
            .header("idempotency-key", format!("crash-{i}"))
            .json(&json!({"model": "dall-e-3", "prompt": prompt}));
        let v = answer(req).await?;
        return Some(Acknowledged::Images(
            v["data"][0]["url"].as_str()?.to_string(),
        ));
    }
    let (path, body, id_at): (&str, Value, &[&str]) = match i % 7 {
        0 => (
            "luma/generations",
            json!({"user_prompt": prompt, "callback_url": hook}),
            &["id"],
        ),
        1 => (
            "kling/v1/images/generations",
            json!({"prompt": prompt, "callback_url": hook}),
            &["data", "task_id"],
        ),
        2 => (
            "kling/v1/videos/text2video",
            json!({"prompt": prompt, "callback_url": hook}),
            &["data", "task_id"],
        ),
        3 => (
            "dream-machine/v1/generations",
            json!({"model": "ray-2", "prompt": prompt, "callback_url": hook}),
            &["id"],
        ),
        4 => (
            "v1/tasks",
            json!({"model": "flux", "kind": "image", "input": {"prompt": prompt}, "callback_url": hook}),
            &["id"],
        ),
        _ => (
            "v1/videos",
            json!({"model": "sora-2", "prompt": prompt, "seconds": "4", "callback_url": hook}),
            &["id"],
        ),
    };
    let v = answer(http.post(format!("{base}/{path}")).json(&body)).await?;
    let id = id_at.iter().try_fold(&v, |v, k| v.get(k))?.as_str()?;
    // OpenAI's video ids carry a prefix; gengate's own API takes the bare id.
    Some(Acknowledged::Task(
        id.trim_start_matches("video_").to_string(),
    ))
}

/// The JSON of a successful answer to `req`, sent with the admin key.
async fn answer(req: reqwest::RequestBuilder) -> Option<Value> {
    let resp = req.bearer_auth(KEY).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Run the loop in `dir` (kept: the logs stay there) with the gengate at `bin`.
pub async fn run(bin: &Path, dir: &Path, db: Database, plan: &Plan) -> anyhow::Result<Report> {
    anyhow::ensure!(
        plan.instances == 1 || matches!(db, Database::Postgres(_)),
        "several instances need PostgreSQL"
    );
    let started = Instant::now();
    let kling = KlingEmu::start(
        KlingAccount::Keys {
            access_key: KLING_ACCESS.into(),
            secret_key: KLING_SECRET.into(),
        },
        Duration::from_millis(500),
    )
    .await;
    kling.set_fault_rate(plan.fault_rate);
    std::fs::write(dir.join("gengate.toml"), config(plan, &db, dir, &kling))?;
    let fleet = Arc::new(Fleet {
        bin: bin.to_path_buf(),
        dir: dir.to_path_buf(),
        live: RwLock::new(vec![None; plan.instances]),
        procs: tokio::sync::Mutex::new((0..plan.instances).map(|_| None).collect()),
        webhook_secret: Mutex::default(),
    });
    // The first start migrates; the others find the schema made.
    for n in 0..plan.instances {
        fleet.start(n).await?;
    }
    let secret = fleet.webhook_secret.lock().unwrap().clone();
    // A wrong key a client sends: refused, and never written down either.
    let wrong_key = format!("gg_wrong_{}", uuid::Uuid::new_v4().simple());
    let secrets: Vec<String> = [KEY.to_string(), KLING_SECRET.to_string(), wrong_key.clone()]
        .into_iter()
        .chain(secret)
        .collect();
    let hooks = Arc::new(Hooks {
        fault_ppm: (plan.fault_rate * 1e6) as u64,
        secrets: secrets.clone(),
        ..Hooks::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(hooks.clone());
    let receiver = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    for _ in 0..3 {
        let base = fleet.any_live().unwrap_or_default();
        let resp = http
            .get(format!("{base}/v1/tasks"))
            .bearer_auth(&wrong_key)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 401,
            "a wrong key answered {}",
            resp.status()
        );
    }
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let images = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed_tries = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..plan.clients {
        let (http, fleet, hook_url) = (http.clone(), fleet.clone(), hook_url.clone());
        let (acknowledged, images, failed_tries, next) = (
            acknowledged.clone(),
            images.clone(),
            failed_tries.clone(),
            next.clone(),
        );
        let tasks = plan.tasks;
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= tasks {
                    break;
                }
                // A client tries again elsewhere, as a real one would.
                for _ in 0..20 {
                    let Some(base) = fleet.any_live() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    match submit(&http, &base, i, &hook_url).await {
                        Some(Acknowledged::Task(id)) => {
                            acknowledged.lock().unwrap().push(id);
                            break;
                        }
                        Some(Acknowledged::Images(url)) => {
                            images.lock().unwrap().push(url);
                            break;
                        }
                        None => {
                            failed_tries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }));
    }
    // The killer: evenly through the submits, one instance at a time; the
    // receiver is down for a stretch in the middle.
    let mut kills = 0;
    for k in 0..plan.kills {
        let at = (k + 1) * plan.tasks / (plan.kills + 1);
        while acknowledged.lock().unwrap().len() + images.lock().unwrap().len() < at
            && clients.iter().any(|c| !c.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if k == plan.kills / 2 {
            hooks.down.store(true, Ordering::SeqCst);
        }
        let n = rand::random_range(0..plan.instances);
        fleet.kill(n).await;
        kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        fleet.start(n).await?;
        hooks.down.store(false, Ordering::SeqCst);
    }
    for c in clients {
        c.await?;
    }
    let ids = acknowledged.lock().unwrap().clone();
    let base = || fleet.any_live().unwrap_or_default();

    // Every acknowledged task terminal, within its deadline.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut states: HashMap<String, Option<String>> = HashMap::new();
    let mut open: Vec<String> = ids.clone();
    while !open.is_empty() && Instant::now() < deadline {
        let seen: Vec<(String, Option<String>)> = futures::stream::iter(open.clone())
            .map(|id| {
                let url = format!("{}/v1/tasks/{id}", base());
                let http = http.clone();
                async move {
                    let state = answer(http.get(url))
                        .await
                        .and_then(|v| v["state"].as_str().map(String::from));
                    (id, state)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        open.clear();
        for (id, state) in seen {
            let terminal = matches!(state.as_deref(), Some("completed" | "failed" | "canceled"));
            if !terminal {
                open.push(id.clone());
            }
            states.insert(id, state);
        }
        if !open.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    // A synchronous answer's images are stored and served by any instance
    // (the one that answered may have been killed and restarted on another
    // port: each run listens on a free one, where a deployment has public_url).
    let urls = images.lock().unwrap().clone();
    let unserved: Vec<String> = futures::stream::iter(urls.clone())
        .map(|url| {
            let http = http.clone();
            let path = url
                .find("/files/")
                .map_or(String::new(), |at| url[at..].to_string());
            let url = format!("{}{path}", base());
            async move {
                let ok = http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                (!ok).then_some(url)
            }
        })
        .buffer_unordered(16)
        .filter_map(|u| async move { u })
        .collect()
        .await;
    let mut report = Report {
        acknowledged: ids.len() + urls.len(),
        images_answered: urls.len(),
        unacknowledged_attempts: failed_tries.load(Ordering::Relaxed),
        kills,
        lost: open.into_iter().chain(unserved).collect(),
        ..Report::default()
    };
    report.completed = urls.len()
        + states
            .values()
            .filter(|s| s.as_deref() == Some("completed"))
            .count();
    report.failed = states
        .values()
        .filter(|s| s.as_deref() == Some("failed"))
        .count();

    // Every event delivered (and received) or visibly given up, in order.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: Vec<String> = ids.clone();
    let mut views: HashMap<String, Vec<Value>> = HashMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let seen: Vec<(String, Option<Value>)> = futures::stream::iter(pending.clone())
            .map(|id| {
                let url = format!("{}/v1/tasks/{id}/deliveries", base());
                let http = http.clone();
                async move { (id, answer(http.get(url)).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        pending.clear();
        for (id, v) in seen {
            let list = v.and_then(|v| v["data"].as_array().cloned());
            match list {
                Some(l) if l.iter().all(|d| d["state"] != "pending") => {
                    views.insert(id, l);
                }
                _ => pending.push(id),
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    report
        .undelivered
        .extend(pending.iter().map(|id| format!("{id}: still pending")));
    let first = hooks.first.lock().unwrap().clone();
    for (id, mut list) in views {
        list.sort_by_key(|d| d["seq"].as_i64());
        let mut last_arrival = None;
        for d in &list {
            report.events += 1;
            let wid = d["webhook_id"].as_str().unwrap_or_default();
            match d["state"].as_str() {
                Some("delivered") => match first.get(wid) {
                    Some(&at) => {
                        report.delivered += 1;
                        if last_arrival.is_some_and(|l| l > at) {
                            report.out_of_order.push(id.clone());
                        }
                        last_arrival = Some(at);
                    }
                    None => report
                        .undelivered
                        .push(format!("{id}: {wid} never arrived")),
                },
                Some("failed" | "gone") => report.given_up += 1,
                other => report.undelivered.push(format!("{id}: {wid} is {other:?}")),
            }
        }
    }
    report.duplicate_upstream_jobs = kling
        .tasks_by_external_id()
        .values()
        .map(|n| n.saturating_sub(1))
        .sum();
    report.upstream_faults = kling.random_faults();
    report.callbacks_refused = hooks.refused.load(Ordering::Relaxed);

    // No secret in any log line, callback or the metrics.
    report
        .leaked
        .extend(hooks.leaked.lock().unwrap().iter().cloned());
    let metrics = match http.get(format!("{}/metrics", base())).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    for s in &secrets {
        if metrics.contains(s.as_str()) {
            report.leaked.push(format!("metrics: {s}"));
        }
        for log in fleet.logs() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(s.as_str()) {
                report.leaked.push(format!("{}: {s}", log.display()));
            }
        }
    }
    for n in 0..plan.instances {
        fleet.kill(n).await;
    }
    receiver.abort();
    report.elapsed = started.elapsed();
    Ok(report)
}
