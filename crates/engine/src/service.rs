//! The one door to tasks for the HTTP server and the CLI: create (the URL
//! checks, the model's channel, the deadline, inline images stored),
//! find, cancel, delete, and waiting until a task finishes, woken by the
//! engine's news of changes rather than by reading the store over and over.
//! State changes go through [`Engine::transition`], like the engine's own.

use std::sync::Arc;
use std::time::Duration;

use gengate_core::dialect::tasks::{IDEMPOTENCY_WINDOW_MS, same_request};
use gengate_core::usage::{self, UsageReport, UsageRequest};
use gengate_core::{
    Admission, ApiError, ApiKey, ArtifactRole, Dialect, ImageSource, InputImage, Millis, NewTask,
    Task, TaskState, TaskUpdate, Upload,
};
use gengate_store::{StoreError, TaskStore, UsageQuery};
use sha2::Digest as _;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::net::AddressPolicy;
use crate::sweeper::WRITE_HOLD;
use crate::{Engine, TaskChanged, now_ms};
use gengate_providers::Unsupported;

/// How long a waiter trusts this instance's news before reading the store:
/// another instance sharing the database may have changed the task.
const CROSS_INSTANCE_LOOK: Duration = Duration::from_secs(1);

/// A store failure is ours, not the client's: logged, answered as 503.
pub fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::Unavailable("storage is unavailable, try again".into())
}

/// Tasks and credits by group, of `owner` or of every key: the report the
/// API and the CLI give.
pub async fn usage_report(
    store: &dyn TaskStore,
    owner: Option<Uuid>,
    req: &UsageRequest,
) -> Result<UsageReport, ApiError> {
    let query = UsageQuery {
        owner,
        from: req.from,
        to: req.to,
        group_by: req.group_by,
    };
    let rows = store.usage(&query).await.map_err(store_error)?;
    let (first_day, to) = req.days();
    let requests = store
        .requests_by_day(owner, first_day, to)
        .await
        .map_err(store_error)?;
    let mut report = usage::report(req, &rows, &requests);
    report.key = owner;
    Ok(report)
}

/// How a dialect names an input image's URL field in its errors.
pub type ImageField = fn(usize, &InputImage) -> String;

/// What [`TaskService::cancel`] did.
pub enum Cancel {
    /// The task is canceled now.
    Canceled(Task),
    /// It had already finished: nothing changed.
    Finished(Task),
}

pub struct TaskService {
    engine: Arc<Engine>,
    policy: AddressPolicy,
    /// Turns `true` when the server begins to stop: waits end then, so
    /// their answers are given before the grace period ends.
    stopping: watch::Receiver<bool>,
}

impl TaskService {
    pub fn new(
        engine: Arc<Engine>,
        policy: AddressPolicy,
        stopping: watch::Receiver<bool>,
    ) -> TaskService {
        TaskService {
            engine,
            policy,
            stopping,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn store(&self) -> &dyn TaskStore {
        self.engine.store.as_ref()
    }

    /// Accept a task: its URLs checked, its inline images stored, its model
    /// served by a channel; the row and first event are committed before
    /// this returns. `image_field` names an input's URL in the caller's
    /// dialect, for the 400 that refuses it.
    pub async fn create(
        &self,
        key: &ApiKey,
        new: NewTask,
        uploads: Vec<Upload>,
        image_field: ImageField,
    ) -> Result<Task, ApiError> {
        if !key.limits.allows_model(&new.model) {
            return Err(ApiError::validation(
                new.dialect.model_field(),
                format!("this key may not use model {:?}", new.model),
            ));
        }
        self.check_urls(&new, image_field).await?;
        // A follow-up goes to its parent's channel; anything else needs a
        // channel serving its model, or it could only ever fail.
        let channels = self.engine.channels();
        if new.channel.is_none() && !channels.serves(&new.model) {
            return Err(ApiError::validation(
                new.dialect.model_field(),
                format!("no channel serves model {:?}", new.model),
            ));
        }
        if new.channel.is_none()
            && let Some(what) = channels.refusal(&new)
        {
            let field = match what {
                Unsupported::Field(name) => name.to_string(),
                Unsupported::Image(role) => new
                    .request
                    .images
                    .iter()
                    .enumerate()
                    .find(|(_, im)| im.role == role)
                    .map_or_else(|| "images".into(), |(i, im)| image_field(i, im)),
            };
            return Err(ApiError::validation(
                field,
                format!(
                    "is not taken by the channels serving model {:?}: leave it out or use a model whose channels take it",
                    new.model
                ),
            ));
        }
        let now = now_ms();
        let deadline = match channels.deadline_for(&new.model) {
            Some(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            None => self.engine.config().deadline_for(new.kind, now),
        };
        for upload in uploads {
            self.store_input(upload, deadline).await?;
        }
        if let Some(parent) = new.request.extend_from {
            self.hold_parent_frame(parent, deadline).await?;
        }
        let admission = Admission {
            charge: self
                .engine
                .prices()
                .book()
                .quote(&new.model, new.kind, &new.request),
            max_in_flight: key.limits.max_in_flight,
            daily_spend: key.limits.daily_spend,
        };
        // With room in this instance's engine, the task is leased to it as
        // it is stored and handed over at once: no claim, no wait for one.
        let slot = self.engine.fresh_slot();
        let created = match &slot {
            Some(_) => {
                let lease = self.engine.new_lease();
                self.store()
                    .create_leased_task(key.id, &new, (now, deadline), &admission, lease)
                    .await
            }
            None => {
                self.store()
                    .create_task(key.id, &new, now, deadline, &admission)
                    .await
            }
        };
        let task = created.map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict(format!(
                "external_task_id {:?} is already used by another task of this key",
                new.external_id.as_deref().unwrap_or_default()
            )),
            StoreError::Refused(refusal) => refusal.into(),
            other => store_error(other),
        })?;
        match slot {
            Some(permit) => self.engine.start_fresh(task.clone(), permit),
            None => self.engine.wake(),
        }
        metrics::counter!("gengate_tasks_accepted_total", "dialect" => task.dialect.as_str())
            .increment(1);
        Ok(task)
    }

    /// [`TaskService::create`] at most once per `Idempotency-Key` (`idem`):
    /// the same key and request within 24 h answer the first task (`true`:
    /// replayed); the same key with another request is a 409. No schema of
    /// its own: the key's task is found by the per-key unique `external_id`
    /// (two concurrent first uses cannot both create) and "the same
    /// request" is its stored, normalized request (an inline image by its
    /// content hash). The id is a UUID derived from the key, because Kling
    /// refuses UUID-shaped `external_task_id`s: the two never collide.
    pub async fn create_once(
        &self,
        key: &ApiKey,
        mut new: NewTask,
        mut uploads: Vec<Upload>,
        idem: Option<&str>,
        image_field: ImageField,
    ) -> Result<(Task, bool), ApiError> {
        let Some(idem) = idem else {
            return Ok((self.create(key, new, uploads, image_field).await?, false));
        };
        let digest = sha2::Sha256::digest(format!("gengate-idempotency:{idem}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        let ext = Uuid::from_bytes(b).to_string();
        new.external_id = Some(ext.clone());
        // A concurrent first use of the key wins the unique index; the loser
        // then finds its task. Bounded: each round either answers or frees
        // an expired key. Inline images are stored by the first round.
        for _ in 0..3 {
            if let Some(first) = self.find_by_external_id(key.id, &ext).await? {
                if first.created_at < now_ms().saturating_sub(IDEMPOTENCY_WINDOW_MS) {
                    self.store()
                        .forget_external_id(key.id, first.id, &ext)
                        .await
                        .map_err(store_error)?;
                } else if same_request(&first, &new) {
                    return Ok((first, true));
                } else {
                    return Err(ApiError::Conflict(format!(
                        "Idempotency-Key: already used within 24 h for a different request (task {})",
                        first.id
                    )));
                }
            }
            let uploads = std::mem::take(&mut uploads);
            match self.create(key, new.clone(), uploads, image_field).await {
                Ok(task) => return Ok((task, false)),
                Err(ApiError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Conflict(
            "Idempotency-Key: a request with this key is in progress; retry".into(),
        ))
    }

    /// Refuse, before anything is stored, URLs gengate would have to call
    /// that resolve to addresses it may not reach.
    async fn check_urls(&self, new: &NewTask, image_field: ImageField) -> Result<(), ApiError> {
        let images = new
            .request
            .images
            .iter()
            .enumerate()
            .filter_map(|(i, im)| match &im.source {
                ImageSource::Url { url } => Some((image_field(i, im), url)),
                ImageSource::Stored { .. } => None,
            });
        for (field, url) in new
            .callback_url
            .iter()
            .map(|u| ("callback_url".to_string(), u))
            .chain(images)
        {
            self.policy
                .check_url_at_accept(url)
                .await
                .map_err(|e| ApiError::validation(field, format!("is refused: {e}")))?;
        }
        Ok(())
    }

    /// Content-addressed: the same image sent twice is stored once. Kept
    /// (from the sweeper) until its task's deadline has passed, and a
    /// write's hold after that: no submit needs it later.
    async fn store_input(&self, upload: Upload, deadline: Millis) -> Result<(), ApiError> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "{what} an input image failed");
            ApiError::Unavailable("could not store the image".into())
        };
        let until = deadline.saturating_add(crate::config::ms(WRITE_HOLD));
        let size = upload.bytes.len() as u64;
        match self.store().keep_file(&upload.key, size, Some(until)).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::Unavailable(
                    "the same image is being deleted from storage; send it again in a few seconds"
                        .into(),
                ));
            }
            Err(e) => return Err(unavailable("recording", &e)),
        }
        self.engine
            .media()
            .put_once(&upload.key, upload.bytes.into())
            .await
            .map_err(|e| unavailable("storing", &e))?;
        Ok(())
    }

    /// A follow-up starts from its parent's last frame: keep that file from
    /// the sweeper until the follow-up's deadline has passed.
    async fn hold_parent_frame(&self, parent: Uuid, deadline: Millis) -> Result<(), ApiError> {
        let parent = self.store().load_task(parent).await.map_err(store_error)?;
        let Some(frame) = parent
            .as_ref()
            .and_then(|p| p.artifact(ArtifactRole::LastFrame))
        else {
            return Ok(());
        };
        let until = deadline.saturating_add(crate::config::ms(WRITE_HOLD));
        match self.store().keep_file(&frame.key, 0, Some(until)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ApiError::Gone(
                "the task's results expired (retention policy); it can no longer be extended"
                    .into(),
            )),
            Err(e) => Err(store_error(e)),
        }
    }

    /// `owner`'s task named `id`, made through `dialect` when one is given;
    /// `None` for malformed, unknown, foreign and other dialects' ids alike.
    pub async fn find(
        &self,
        owner: Uuid,
        id: &str,
        dialect: Option<Dialect>,
    ) -> Result<Option<Task>, ApiError> {
        let Ok(uuid) = Uuid::try_parse(id) else {
            return Ok(None);
        };
        Ok(self
            .get(owner, uuid)
            .await?
            .filter(|t| dialect.is_none_or(|d| t.dialect == d)))
    }

    /// [`TaskService::find`], or a 404 calling the task `noun` as the
    /// caller's API does ("generation", "task").
    pub async fn own(
        &self,
        owner: Uuid,
        id: &str,
        dialect: Option<Dialect>,
        noun: &str,
    ) -> Result<Task, ApiError> {
        self.find(owner, id, dialect)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{noun} {id} not found")))
    }

    /// `owner`'s task `id`, whatever dialect made it.
    pub async fn get(&self, owner: Uuid, id: Uuid) -> Result<Option<Task>, ApiError> {
        self.store().get_task(owner, id).await.map_err(store_error)
    }

    /// Task `id` as `key` may see it through `/v1/tasks/{id}`: its own, or
    /// any key's for an admin (the operator's console). `None` for
    /// malformed, unknown and (to others) foreign ids alike.
    pub async fn visible(&self, key: &ApiKey, id: &str) -> Result<Option<Task>, ApiError> {
        let Ok(id) = Uuid::try_parse(id) else {
            return Ok(None);
        };
        if key.admin {
            return self.store().load_task(id).await.map_err(store_error);
        }
        self.get(key.id, id).await
    }

    /// `owner`'s task made with this `external_task_id`.
    pub async fn find_by_external_id(
        &self,
        owner: Uuid,
        external_id: &str,
    ) -> Result<Option<Task>, ApiError> {
        self.store()
            .get_task_by_external_id(owner, external_id)
            .await
            .map_err(store_error)
    }

    /// Make `new` continue `owner`'s completed task `parent` on its channel;
    /// `field` names the parent in the caller's request.
    pub async fn continue_from(
        &self,
        owner: Uuid,
        new: &mut NewTask,
        parent: Uuid,
        field: &str,
    ) -> Result<(), ApiError> {
        let parent = self
            .get(owner, parent)
            .await?
            .ok_or_else(|| ApiError::validation(field, format!("task {parent} not found")))?;
        gengate_core::dialect::follow(new, &parent, field, now_ms())
    }

    /// Cancel `task` unless it has finished; the upstream is then asked to
    /// stop, best effort. Read again and retried when the engine moved the
    /// task meanwhile. `None`: the task is gone.
    pub async fn cancel(&self, mut task: Task) -> Result<Option<Cancel>, ApiError> {
        for _ in 0..5 {
            if task.state.is_terminal() {
                return Ok(Some(Cancel::Finished(task)));
            }
            let update = TaskUpdate {
                detail: Some("canceled by the client".into()),
                failure_reason: Some("canceled by the client".into()),
                ..TaskUpdate::to_state(TaskState::Canceled)
            };
            let Some(done) = self
                .engine
                .transition(&task, update)
                .await
                .map_err(store_error)?
            else {
                match self.get(task.owner, task.id).await? {
                    Some(now) => task = now,
                    None => return Ok(None),
                }
                continue;
            };
            // The client's answer does not wait for the upstream.
            let (engine, ended) = (self.engine.clone(), done.clone());
            tokio::spawn(async move { engine.cancel_upstream(&ended).await });
            return Ok(Some(Cancel::Canceled(done)));
        }
        Err(ApiError::Unavailable(
            "the task is changing; try again".into(),
        ))
    }

    /// Cancel `task` if it runs, then remove it with its events and
    /// callback deliveries. `false`: it was gone already.
    pub async fn delete(&self, task: Task) -> Result<bool, ApiError> {
        let task = match self.cancel(task).await? {
            Some(Cancel::Canceled(t) | Cancel::Finished(t)) => t,
            None => return Ok(false),
        };
        self.store()
            .delete_task(task.owner, task.id)
            .await
            .map_err(store_error)
    }

    /// Tasks and credits by group for `caller`: its own, or for an admin
    /// any one key's (`req.key`) or every key's.
    pub async fn usage(
        &self,
        caller: &ApiKey,
        req: &UsageRequest,
    ) -> Result<UsageReport, ApiError> {
        let owner = match req.key {
            Some(k) if k != caller.id && !caller.admin => {
                return Err(ApiError::Forbidden(
                    "only admin keys see the usage of other keys",
                ));
            }
            Some(k) => Some(k),
            None if caller.admin => None,
            None => Some(caller.id),
        };
        usage_report(self.store(), owner, req).await
    }

    /// News of the task changes this instance makes, for live streams.
    pub fn changes(&self) -> Changes {
        Changes(self.engine.subscribe())
    }

    /// `task` (as just created or read) once it has finished, or as it
    /// stands at `until` or when the server begins to stop (`None`: it is
    /// gone). `changes` must have been listening since before `task` was
    /// read, so that no change in between is missed.
    pub async fn wait_finished(
        &self,
        mut changes: Changes,
        task: Task,
        until: tokio::time::Instant,
    ) -> Result<Option<Task>, ApiError> {
        let (owner, id) = (task.owner, task.id);
        let mut task = Some(task);
        let mut stopping = self.stopping.clone();
        // Another instance's change comes as no news here: look at the store
        // soon after the start (fast upstreams), then at most once a second.
        let mut look = Duration::from_millis(50);
        loop {
            let now = tokio::time::Instant::now();
            match &task {
                Some(t) if !t.state.is_terminal() && now < until && !*stopping.borrow() => {}
                _ => return Ok(task),
            }
            tokio::select! {
                ended = changes.next_end_of(id, look.min(until - now)) => {
                    // It ended here: the news holds it as it ended.
                    if let Some(t) = ended {
                        return Ok(Some(Arc::unwrap_or_clone(t)));
                    }
                }
                _ = stopping.changed() => {}
            }
            task = self.get(owner, id).await?;
            look = (look * 2).min(CROSS_INSTANCE_LOOK);
        }
    }
}

/// A listener to this instance's task changes.
pub struct Changes(broadcast::Receiver<TaskChanged>);

impl Changes {
    /// Until a task of `owner` (any key's: `None`) changes here, or
    /// `at_most` passes (the caller reads the store either way).
    pub async fn next_for(&mut self, owner: Option<Uuid>, at_most: Duration) {
        let mine = |c: &TaskChanged| owner.is_none_or(|o| c.owner == o);
        self.next_where(mine, at_most).await;
    }

    /// Until task `id` changes here, or `at_most` passes (another instance
    /// may have changed it: the caller reads the store either way).
    pub async fn next_of(&mut self, id: Uuid, at_most: Duration) {
        self.next_where(|c| c.id == id, at_most).await;
    }

    /// Until task `id` ends here (its steps on the way need no re-read),
    /// or `at_most` passes: the task as it ended, if news of that came.
    pub async fn next_end_of(&mut self, id: Uuid, at_most: Duration) -> Option<Arc<Task>> {
        self.next_where(|c| c.id == id && c.state.is_terminal(), at_most)
            .await
            .and_then(|c| c.ended)
    }

    /// The first change `wanted` picks, or `None` when `at_most` passes or
    /// news was missed (one of the missed may have been wanted).
    async fn next_where(
        &mut self,
        wanted: impl Fn(&TaskChanged) -> bool,
        at_most: Duration,
    ) -> Option<TaskChanged> {
        let news = tokio::time::timeout(at_most, async {
            loop {
                match self.0.recv().await {
                    Ok(c) if wanted(&c) => return Some(c),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            }
        });
        news.await.ok().flatten()
    }
}
