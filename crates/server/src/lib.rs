//! gengate's HTTP side: one router module per dialect, files, health and
//! the OpenAPI document. Handlers parse, call the store or engine, render.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gengate_core::{
    ApiError, Dialect, ImageSource, InputImage, NewTask, Task, TaskState, TaskUpdate,
};
use gengate_engine::net::AddressPolicy;
use gengate_engine::{Engine, now_ms};
use gengate_store::{StoreError, TaskStore};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

pub mod admin;
pub mod auth;
pub mod body;
pub mod deliveries;
pub mod dream_machine;
pub mod health;
pub mod kling;
pub mod luma;
pub mod metrics;
pub mod models_api;
pub mod openai_images;
pub mod openapi;
pub mod rendered;
pub mod tasks_api;
pub mod upstream_callbacks;

/// Results live under this storage prefix (see `gengate_engine::artifacts`).
const RESULTS_PREFIX: &str = gengate_engine::artifacts::RESULTS_PREFIX;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn TaskStore>,
    pub engine: Arc<Engine>,
    /// Absolute URL prefix of stored files, e.g. `http://host:8080/files`.
    pub files_base: String,
    /// Which addresses gengate sends requests to for clients.
    pub policy: AddressPolicy,
    pub keys: Arc<auth::Keys>,
    /// Rendered finished tasks, served as bytes.
    pub rendered: Arc<rendered::Rendered>,
    /// How long a synchronous answer (OpenAI images) waits for its task.
    pub sync_wait: Duration,
    /// Becomes `true` when the server begins to stop: synchronous answers
    /// stop waiting then, so they are answered before the grace period ends.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// Refuse, before anything is stored, URLs gengate would have to call
    /// that resolve to internal addresses: a 400 naming the field, as
    /// `image_field` names an input image's URL in the caller's dialect.
    pub async fn check_urls(
        &self,
        new: &NewTask,
        image_field: impl Fn(usize, &InputImage) -> String,
    ) -> Result<(), ApiError> {
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
                .check_url(url)
                .await
                .map_err(|e| ApiError::validation(field, format!("is refused: {e}")))?;
        }
        Ok(())
    }

    /// `owner`'s task named `id`, made through `dialect` when one is given;
    /// `None` for malformed, unknown, foreign and other dialects' ids alike.
    pub async fn find_task(
        &self,
        owner: Uuid,
        id: &str,
        dialect: Option<Dialect>,
    ) -> Result<Option<Task>, ApiError> {
        let Ok(uuid) = Uuid::try_parse(id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_task(owner, uuid)
            .await
            .map_err(store_error)?
            .filter(|t| dialect.is_none_or(|d| t.dialect == d)))
    }

    /// Accept a task: row and first event committed before we answer.
    pub async fn create_task(&self, owner: Uuid, new: NewTask) -> Result<Task, ApiError> {
        // A follow-up goes to its parent's channel; anything else needs a
        // channel serving its model, or it could only ever fail.
        if new.channel.is_none() && !self.engine.channels().serves(&new.model) {
            return Err(ApiError::validation(
                new.dialect.model_field(),
                format!("no channel serves model {:?}", new.model),
            ));
        }
        let now = now_ms();
        let deadline = match self.engine.channels().deadline_for(&new.model) {
            Some(d) => now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            None => self.engine.config().deadline_for(new.kind, now),
        };
        let task = self
            .store
            .create_task(owner, &new, now, deadline)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => ApiError::Conflict(format!(
                    "external_task_id {:?} is already used by another task of this key",
                    new.external_id.as_deref().unwrap_or_default()
                )),
                other => store_error(other),
            })?;
        self.engine.wake();
        ::metrics::counter!("gengate_tasks_accepted_total", "dialect" => task.dialect.as_str())
            .increment(1);
        Ok(task)
    }
}

/// What [`AppState::cancel_task`] did.
pub enum Cancel {
    /// The task is canceled now.
    Canceled(Task),
    /// It had already finished: nothing changed.
    Finished(Task),
}

impl AppState {
    /// Cancel `task` unless it has finished: a compare-and-swap to
    /// `canceled` (read again when the engine moved it meanwhile), then
    /// the upstream is asked to stop, best effort. `None`: the task is gone.
    pub async fn cancel_task(&self, mut task: Task) -> Result<Option<Cancel>, ApiError> {
        for _ in 0..5 {
            if task.state.is_terminal() {
                return Ok(Some(Cancel::Finished(task)));
            }
            let update = TaskUpdate {
                detail: Some("canceled by the client".into()),
                failure_reason: Some("canceled by the client".into()),
                ..TaskUpdate::to_state(TaskState::Canceled)
            };
            let swapped = self
                .store
                .update_task(task.id, task.version, &update, now_ms())
                .await
                .map_err(store_error)?;
            let Some(done) = swapped else {
                match self
                    .store
                    .get_task(task.owner, task.id)
                    .await
                    .map_err(store_error)?
                {
                    Some(now) => task = now,
                    None => return Ok(None),
                }
                continue;
            };
            ::metrics::counter!("gengate_task_transitions_total", "state" => "canceled")
                .increment(1);
            if let (Some(upstream), Some(channel)) = (
                done.upstream_ref.clone(),
                done.channel
                    .as_deref()
                    .and_then(|c| self.engine.channels().get(c)),
            ) {
                let task_id = done.id;
                tokio::spawn(async move {
                    if let Err(e) = channel.provider.cancel(&upstream).await {
                        tracing::warn!(task = %task_id, error = %e, "upstream cancel failed");
                    }
                });
            }
            return Ok(Some(Cancel::Canceled(done)));
        }
        Err(ApiError::Unavailable(
            "the task is changing; try again".into(),
        ))
    }

    /// `owner`'s task `id` once it has finished, or as it stands at
    /// `until` or when the server begins to stop (`None`: it is gone). For
    /// the synchronous answers.
    pub async fn wait_finished(
        &self,
        owner: Uuid,
        id: Uuid,
        until: tokio::time::Instant,
    ) -> Result<Option<Task>, ApiError> {
        let mut stopping = self.stopping.clone();
        // Quick looks first (fast upstreams answer in well under a second),
        // then at most one store read per second per waiting request.
        let mut pause = Duration::from_millis(50);
        loop {
            let task = self.store.get_task(owner, id).await.map_err(store_error)?;
            let now = tokio::time::Instant::now();
            match task {
                Some(t) if !t.state.is_terminal() && now < until && !*stopping.borrow() => {}
                other => return Ok(other),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause.min(until - now)) => {}
                _ = stopping.changed() => {}
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// A store failure is ours, not the client's: logged, answered as 503.
pub fn store_error(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "store error");
    ApiError::Unavailable("storage is unavailable, try again".into())
}

/// An error answered with `err`'s status, `body` (the dialect's envelope)
/// and `Retry-After` where waiting helps: the one place every dialect's
/// errors become responses.
pub(crate) fn error_response(err: &ApiError, body: impl serde::Serialize) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body)).into_response();
    let secs = match err {
        ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
        ApiError::Unavailable(_) => Some(1),
        _ => None,
    };
    if let Some(v) = secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// How a dialect words an error: the body of its envelope.
pub trait Envelope {
    fn body(err: &ApiError) -> impl serde::Serialize;
}

/// An error answered in `E`'s envelope, with the status and `Retry-After`
/// of [`error_response`]: what every dialect's handlers return.
pub struct DialectError<E>(ApiError, std::marker::PhantomData<E>);

impl<E> From<ApiError> for DialectError<E> {
    fn from(e: ApiError) -> Self {
        DialectError(e, std::marker::PhantomData)
    }
}

impl<E: Envelope> IntoResponse for DialectError<E> {
    fn into_response(self) -> Response {
        error_response(&self.0, E::body(&self.0))
    }
}

/// Both Luma APIs: `{"detail": ...}`.
impl Envelope for gengate_core::dialect::DetailError {
    fn body(err: &ApiError) -> impl serde::Serialize {
        gengate_core::dialect::DetailError {
            detail: err.to_string(),
        }
    }
}

/// The routes: with `serve_api`, the dialects, files and OpenAPI; always
/// the health endpoints (a worker-only instance answers those alone).
pub fn router(state: AppState, serve_api: bool) -> Router {
    // Results only: inputs clients uploaded are stored beside them but never served.
    let results = ServeDir::new(state.engine.files().root().join(RESULTS_PREFIX))
        .append_index_html_on_directories(false);
    metrics::install();
    let mut routes = Router::new()
        .merge(health::router())
        .route("/metrics", get(metrics::serve));
    let mut synchronous = Router::new();
    if serve_api {
        routes = routes
            .merge(luma::router())
            .merge(kling::router())
            .merge(dream_machine::router())
            .merge(deliveries::router())
            .merge(tasks_api::router())
            .merge(models_api::router())
            .merge(admin::router())
            .merge(upstream_callbacks::router())
            .route("/openapi.json", get(openapi::serve))
            .merge(openapi::reference_page())
            .nest_service(
                &format!("/files/{RESULTS_PREFIX}"),
                // Content-addressed: a result URL never changes what it serves.
                tower::ServiceBuilder::new()
                    .layer(axum::middleware::map_response(immutable))
                    .service(results),
            );
        synchronous = synchronous
            .merge(openai_images::router())
            .merge(dream_machine::sync_router());
    }
    // A request (body upload included) gets REQUEST_TIMEOUT; one that
    // waits for its task gets that wait on top. File bodies stream after it.
    let sync_timeout = state.sync_wait.max(dream_machine_sync_max()) + REQUEST_TIMEOUT;
    let routes = routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(synchronous.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            sync_timeout,
        )));
    routes
        .fallback(not_found)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"detail": "internal error"})),
            )
                .into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Bodies are bounded where they are read (body::read_json).
        .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn immutable<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    if resp.status().is_success() {
        resp.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    resp
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"detail": "no such endpoint"})),
    )
        .into_response()
}

/// Serve until `shutdown` resolves, then stop taking requests and finish
/// the ones in progress (bounded by the caller).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    serve_api: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, serve_api))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `sync_timeout` Luma's image create takes.
fn dream_machine_sync_max() -> Duration {
    Duration::from_secs_f64(gengate_core::dialect::dream_machine::MAX_SYNC_TIMEOUT_SECS)
}

/// How long graceful shutdown waits for open requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
