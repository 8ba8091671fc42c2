//! Callbacks: every recorded state change of a task with a `callback_url`
//! is POSTed there in the task's dialect shape, signed per Standard
//! Webhooks, at least once and in order per task, retried on the schedule
//! kept in the store, and never to an address the policy refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gengate_core::dialect::{dream_machine, kling, kling_video, luma, openai_videos, tasks};
use gengate_core::{
    ApiKey, Delivery, DeliveryAttempt, DeliveryOutcome, Dialect, FileLinks, Millis, RetrySchedule,
    Settlement, Task,
};
use gengate_store::{StoreError, TaskStore};
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::net::AddressPolicy;
use crate::{TaskChanged, now_ms};

pub mod signing;

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest `Retry-After` honoured; a receiver cannot park a delivery for longer.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Deliveries in flight to one host: a slow receiver holds only its own.
const PER_HOST: usize = 8;
/// Deliveries in flight in all.
const TOTAL: usize = 64;
/// How long a claimed delivery is ours.
const LEASE: Duration = Duration::from_secs(60);
/// Most attempts' results recorded in one write.
const SETTLE_BATCH: usize = 256;

/// An attempt's result waiting to be recorded, and the slot it holds until
/// then (so the claim loop never runs ahead of the records).
type Ended = (Settlement, OwnedSemaphorePermit);

pub struct Deliverer {
    store: Arc<dyn TaskStore>,
    http: reqwest::Client,
    policy: AddressPolicy,
    schedule: RetrySchedule,
    links: Arc<FileLinks>,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Attempts were recorded: their tasks' next deliveries may be due now.
    settled: Notify,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn TaskStore>,
        policy: AddressPolicy,
        schedule: RetrySchedule,
        links: Arc<FileLinks>,
    ) -> Arc<Deliverer> {
        Arc::new(Deliverer {
            store,
            http: policy.client(ATTEMPT_TIMEOUT, false),
            policy,
            schedule,
            links,
            hosts: Mutex::default(),
            settled: Notify::new(),
        })
    }

    fn host_slots(&self, url: &str) -> Arc<Semaphore> {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(String::from))
            .unwrap_or_default();
        match self.hosts.lock() {
            Ok(mut h) => h
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_HOST)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(PER_HOST)),
        }
    }

    /// Deliver what is due until `shutdown`, then let attempts in flight
    /// end. `news` (the engine's changes) says when a change queued a
    /// delivery, so it goes out at once rather than at the next look.
    pub async fn run(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        mut news: broadcast::Receiver<TaskChanged>,
    ) {
        let total = Arc::new(Semaphore::new(TOTAL));
        let (ended, to_record) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record(to_record));
        let mut running = JoinSet::new();
        let mut failures = 0;
        while !*shutdown.borrow() {
            while running.try_join_next().is_some() {}
            // This claim covers every delivery news told of so far.
            use broadcast::error::TryRecvError;
            while !matches!(
                news.try_recv(),
                Err(TryRecvError::Empty | TryRecvError::Closed)
            ) {}
            let free = u32::try_from(total.available_permits()).unwrap_or(0);
            let due = if free == 0 {
                Vec::new()
            } else {
                let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
                match self.store.claim_deliveries(now_ms(), lease, free).await {
                    Ok(due) => {
                        failures = 0;
                        due
                    }
                    Err(e) => {
                        let op = "claim_deliveries";
                        crate::rest_after_store_failure(op, &e, &mut failures, &mut shutdown).await;
                        continue;
                    }
                }
            };
            let got = due.len();
            let due = match self.with_tasks(due).await {
                Ok(due) => due,
                Err(e) => {
                    // Claimed but not read: their leases lapse and they come back.
                    let op = "claim_deliveries";
                    crate::rest_after_store_failure(op, &e, &mut failures, &mut shutdown).await;
                    continue;
                }
            };
            for (d, found) in due {
                let Ok(slot) = total.clone().try_acquire_owned() else {
                    break;
                };
                let (me, ended) = (self.clone(), ended.clone());
                running.spawn(async move {
                    let _ = ended.send((me.attempt(d, found).await, slot));
                });
            }
            if got > 0 {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.settled.notified() => {}
                _ = queued(&mut news) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        // What ended is recorded; what did not is retried once its lease lapses.
        drop((running, ended));
        let _ = recorder.await;
    }

    /// Record attempts' results as they end, whatever ended together in
    /// one write (a settlement and an attempt row each; three a task when
    /// every state change calls back).
    async fn record(self: Arc<Self>, mut ended: mpsc::UnboundedReceiver<Ended>) {
        let mut batch = Vec::with_capacity(SETTLE_BATCH);
        while ended.recv_many(&mut batch, SETTLE_BATCH).await > 0 {
            let (settled, slots): (Vec<Settlement>, Vec<_>) = batch.drain(..).unzip();
            if let Err(e) = self.store.finish_deliveries(&settled, now_ms()).await {
                // Their leases lapse and they are attempted again: at least once.
                tracing::error!(deliveries = settled.len(), error = %e, "recording deliveries failed");
            }
            drop(slots);
            self.settled.notify_one();
        }
    }

    /// The body a receiver gets: the task in its dialect's shape, as of the
    /// event, its result URLs signed as of the attempt.
    fn body(&self, task: &Task, d: &Delivery) -> Result<Vec<u8>, serde_json::Error> {
        let t = task.as_of(d.event_state, d.event_at);
        let links = self.links.at(crate::now_ms());
        match t.dialect {
            Dialect::Luma => serde_json::to_vec(&luma::render(&t, &links)),
            Dialect::Kling => serde_json::to_vec(&kling::render(&t, &links)),
            // OpenAI images take no callback URL; were one set, gengate's shape.
            Dialect::Gengate | Dialect::OpenaiImages => {
                serde_json::to_vec(&tasks::render(&t, &links))
            }
            Dialect::DreamMachine => serde_json::to_vec(&dream_machine::render(&t, &links)),
            Dialect::OpenaiVideos => serde_json::to_vec(&openai_videos::render(&t, &links)),
            Dialect::KlingVideo => serde_json::to_vec(&kling_video::render(&t, &links)),
        }
    }

    /// Each claimed delivery with its task and its key (`None`: either is
    /// gone), read for the whole claim at once rather than per attempt.
    async fn with_tasks(&self, due: Vec<Delivery>) -> Result<Vec<(Delivery, Found)>, StoreError> {
        let mut ids: Vec<Uuid> = due.iter().map(|d| d.task_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let tasks: HashMap<Uuid, Arc<Task>> = self
            .store
            .load_tasks(&ids)
            .await?
            .into_iter()
            .map(|t| (t.id, Arc::new(t)))
            .collect();
        let mut keys: HashMap<Uuid, Option<Arc<ApiKey>>> = HashMap::new();
        for d in &due {
            if let std::collections::hash_map::Entry::Vacant(e) = keys.entry(d.owner) {
                e.insert(self.store.get_key(d.owner).await?.map(Arc::new));
            }
        }
        Ok(due
            .into_iter()
            .map(|d| {
                let task = tasks.get(&d.task_id).cloned();
                let key = keys.get(&d.owner).cloned().flatten();
                (d, task.zip(key))
            })
            .collect())
    }

    /// Make one attempt at `d`; what it found, to be recorded.
    async fn attempt(&self, d: Delivery, found: Found) -> Settlement {
        let now = now_ms();
        let made = d.attempts + 1;
        let Some((task, key)) = found else {
            let gone = Some("the task or its key is gone".into());
            return Settlement {
                attempt: record(made, now, None, gone, 0, None),
                delivery: d,
                outcome: DeliveryOutcome::GiveUp,
            };
        };
        let secrets = key.signing_secrets(now);
        let started = Instant::now();
        let result = match (self.body(&task, &d), secrets.is_empty()) {
            (Err(e), _) => Err(format!("rendering the body: {e}")),
            (_, true) => Err("the key has no signing secret; rotate it".into()),
            (Ok(body), false) => {
                // A slow receiver holds only its host's slots, and only
                // while it is being sent to.
                let host = self.host_slots(&d.url);
                let _per_host = host.acquire().await;
                self.send(&d, &secrets, body, now).await
            }
        };
        let latency = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status, error, outcome) = match result {
            Ok((status, _)) if (200..300).contains(&status) => {
                (Some(status), None, DeliveryOutcome::Delivered)
            }
            Ok((410, _)) => (Some(410), None, DeliveryOutcome::Gone),
            Ok((status, retry_after)) => (Some(status), None, self.retry(made, retry_after)),
            Err(e) => (None, Some(e), self.retry(made, None)),
        };
        let next = match outcome {
            DeliveryOutcome::RetryAt(at) => Some(at),
            _ => None,
        };
        if outcome != DeliveryOutcome::Delivered {
            tracing::warn!(delivery = %d.id, task = %d.task_id, attempt = made, ?status, ?error, ?outcome, "callback not delivered");
        }
        let label = match outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::RetryAt(_) => "retry",
            DeliveryOutcome::GiveUp => "given_up",
            DeliveryOutcome::Gone => "gone",
        };
        metrics::counter!("gengate_callback_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("gengate_callback_latency_seconds")
            .record(started.elapsed().as_secs_f64());
        Settlement {
            attempt: record(made, now, status, error, latency, next),
            delivery: d,
            outcome,
        }
    }

    /// POST one attempt; the answer's status and `Retry-After`, or why none came.
    async fn send(
        &self,
        d: &Delivery,
        secrets: &[&str],
        body: Vec<u8>,
        now: Millis,
    ) -> Result<(u16, Option<Duration>), String> {
        // Resolved now, not when the URL was accepted: a name may have turned internal.
        self.policy
            .check_url(&d.url)
            .await
            .map_err(|e| format!("refused: {e}"))?;
        let msg_id = d.event_id.to_string();
        let ts = now / 1000;
        let sig = signing::signature(secrets, &msg_id, ts, &body).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let retry_after = gengate_providers::http::retry_after(resp.headers());
        Ok((resp.status().as_u16(), retry_after))
    }

    /// When to try again after attempt `made` failed: the schedule's next
    /// delay ±20 %, or later if the receiver asked for it (within bounds).
    fn retry(&self, made: u32, retry_after: Option<Duration>) -> DeliveryOutcome {
        let Some(delay) = self.schedule.delay_after(made) else {
            return DeliveryOutcome::GiveUp;
        };
        let jitter = rand::rng().random_range(0.8..=1.2);
        let mut wait = delay.mul_f64(jitter);
        if let Some(asked) = retry_after {
            wait = wait.max(asked.min(MAX_RETRY_AFTER));
        }
        DeliveryOutcome::RetryAt(
            now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

/// A claimed delivery's task and key, `None` when either is gone.
type Found = Option<(Arc<Task>, Arc<ApiKey>)>;

/// Until a change that queued a delivery (or missed news: one may have).
async fn queued(news: &mut broadcast::Receiver<TaskChanged>) {
    loop {
        match news.recv().await {
            Ok(c) if c.calls_back => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

fn record(
    attempt: u32,
    at: Millis,
    status: Option<u16>,
    error: Option<String>,
    latency_ms: i64,
    next_attempt_at: Option<Millis>,
) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt,
        at,
        status,
        error,
        latency_ms,
        next_attempt_at,
    }
}

/// An error and its causes (the policy's refusal sits in the chain).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs());
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
