//! `/v1/tasks`: gengate's own provider-neutral task API. Create (with
//! `Idempotency-Key`), get, batch get, list by cursor, cancel and a live
//! event stream. Every task of the caller shows here, whichever dialect
//! made it; errors are gengate's `{"error": {"status", "message"}}`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::dialect::tasks::{self, EventView, GengateTask, ListQuery, TaskList};
use gengate_core::{ApiError, ApiKey, Dialect, Task, TaskEvent};
use gengate_engine::service::{Cancel, Changes};
use gengate_store::TaskFilter;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::body::read_json;
use crate::error::{Error, ErrorBody};
use crate::openapi::{AdminQuery, Errors, Key, KeyBody, KeyCreate, KeyQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", post(create).get(list))
        .route("/v1/tasks/batch-get", post(batch_get))
        .route("/v1/tasks/{id}", get(get_one))
        .route("/v1/tasks/{id}/cancel", post(cancel))
        .route("/v1/tasks/{id}/events", get(events))
        .route("/admin/tasks", get(admin_list))
}

type Result<T> = std::result::Result<T, Error>;

/// The caller's key, refused in gengate's envelope.
type Caller = crate::auth::Caller<ErrorBody>;

/// An admin's key, refused in gengate's envelope.
type Admin = crate::auth::Admin<ErrorBody>;

/// A JSON body, refused in this API's envelope.
type Payload = crate::extract::JsonBody<ErrorBody>;

fn not_found(id: &str) -> Error {
    Error::from(ApiError::NotFound(format!("task {id} not found")))
}

/// The caller's task, any dialect (an admin's: any key's); 404 for
/// unknown and foreign ids alike.
async fn own_task(state: &AppState, key: &ApiKey, id: &str) -> Result<Task> {
    state
        .tasks
        .visible(key, id)
        .await?
        .ok_or_else(|| not_found(id))
}

fn json_response(status: StatusCode, task: &Task, state: &AppState) -> Response {
    (status, Json(view(task, state))).into_response()
}

/// `task` as this API shows it: rendered, and while it runs, how long its
/// model's jobs have been taking on its channel.
fn view(task: &Task, state: &AppState) -> GengateTask {
    let expected = task
        .channel
        .as_deref()
        .filter(|_| !task.state.is_terminal())
        .and_then(|c| state.engine.expected_duration(c, &task.model));
    GengateTask {
        expected_seconds: expected.map(|d| d.as_secs_f64()),
        ..tasks::render(task, &state.links())
    }
}

/// Create a task. With `Idempotency-Key`, the same key and request within
/// 24 h answer the first task (200, `Idempotent-Replayed: true`); the same
/// key with a different request is a 409.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    request_body = tasks::CreateTask,
    params(crate::openapi::IdempotencyKey),
    responses(Errors<ErrorBody, KeyCreate>,
              (status = 201, body = GengateTask, description = "Created"),
              (status = 200, body = GengateTask, description = "The task this Idempotency-Key made"),
              (status = 409, body = ErrorBody, description = "Idempotency-Key used for another request, or extend_from not completed")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let idem = crate::extract::idempotency_key(&headers)?;
    let body = read_json(&headers, body).await?;
    let channels = state.engine.channels();
    let parsed = tasks::parse_create(&body, |m| crate::models_api::kind_of_model(channels, m))?;
    let mut new = parsed.task;
    if let Some(parent) = new.request.extend_from {
        state
            .tasks
            .continue_from(key.id, &mut new, parent, "input.extend_from")
            .await?;
    }
    let (task, replayed) = state
        .tasks
        .create_once(&key, new, parsed.uploads, idem.as_deref(), |i, _| {
            format!("input.images[{i}].url")
        })
        .await?;
    if replayed {
        let mut resp = json_response(StatusCode::OK, &task, &state);
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(resp);
    }
    Ok(json_response(StatusCode::CREATED, &task, &state))
}

/// One task, whichever API made it.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(Errors<ErrorBody, Key>, (status = 200, body = GengateTask),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let task = own_task(&state, &key, &id).await?;
    Ok(json_response(StatusCode::OK, &task, &state))
}

/// Many tasks at once: the caller's among `ids`, in the order asked; unknown
/// and foreign ids are left out, a duplicate is listed once.
#[utoipa::path(post, path = "/v1/tasks/batch-get", tag = "tasks",
    request_body = gengate_core::dialect::BatchGet,
    responses(Errors<ErrorBody, KeyBody>,
              (status = 200, body = TaskList, description = "`next_cursor` is null and `has_more` false")),
    security(("bearer" = [])))]
pub async fn batch_get(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::JsonBody(body, _): Payload,
) -> Result<Response> {
    let ids = gengate_core::dialect::parse_batch(&body)?;
    // Kept under this API's shape, whichever dialect made the task.
    Ok(crate::rendered::batch_json(
        &state,
        key.id,
        &ids,
        Dialect::Gengate,
        None,
        tasks::render,
        (
            br#"{"object":"list","data":"#,
            br#","next_cursor":null,"has_more":false}"#,
        ),
    )
    .await?)
}

/// The caller's tasks, newest first, a page at a time. Paging is by
/// position (the cursor names the page's last task), so tasks created
/// while paging never shift a page: none is skipped or repeated.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    params(ListQuery),
    responses(Errors<ErrorBody, KeyQuery>, (status = 200, body = TaskList)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    key: Caller,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, ErrorBody>,
) -> Result<Json<TaskList>> {
    Ok(Json(page(&state, Some(key.id), query, false).await?))
}

/// `GET /admin/tasks`'s own filter.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyFilter {
    /// Only this key's tasks (its id).
    #[param(value_type = Option<String>, format = "uuid")]
    pub key: Option<String>,
}

/// Every key's tasks (or one key's), newest first, with the filters and
/// cursor of `GET /v1/tasks`; each task names its key (`key_id`).
#[utoipa::path(get, path = "/admin/tasks", tag = "admin",
    params(ListQuery, KeyFilter),
    responses(Errors<ErrorBody, AdminQuery>, (status = 200, body = TaskList)),
    security(("bearer" = [])))]
pub async fn admin_list(
    State(state): State<AppState>,
    _: Admin,
    crate::extract::Query(query, _): crate::extract::Query<ListQuery, ErrorBody>,
    crate::extract::Query(only, _): crate::extract::Query<KeyFilter, ErrorBody>,
) -> Result<Json<TaskList>> {
    let owner = match only.key.as_deref() {
        None | Some("") => None,
        Some(k) => Some(
            Uuid::try_parse(k)
                .map_err(|_| ApiError::validation("key", format!("is not a key id (got {k:?})")))?,
        ),
    };
    Ok(Json(page(&state, owner, query, true).await?))
}

/// A page of `owner`'s tasks (every key's: `None`), `with_keys` naming
/// each task's key.
async fn page(
    state: &AppState,
    owner: Option<Uuid>,
    query: ListQuery,
    with_keys: bool,
) -> Result<TaskList> {
    let p = query.check()?;
    let filter = TaskFilter {
        state: p.state,
        model: p.model,
        dialect: p.dialect,
        channel: p.channel,
        search: p.search,
        created_after: p.created_after,
        created_before: p.created_before,
        past: p.before,
        oldest_first: false,
    };
    let mut page = state.store.page_tasks(owner, &filter, p.limit + 1).await?;
    let has_more = page.len() > p.limit as usize;
    page.truncate(p.limit as usize);
    Ok(TaskList {
        object: "list",
        next_cursor: page.last().filter(|_| has_more).map(tasks::encode_cursor),
        has_more,
        data: page
            .iter()
            .map(|t| GengateTask {
                key_id: with_keys.then_some(t.owner),
                ..view(t, state)
            })
            .collect(),
    })
}

/// Cancel a task that has not finished: it becomes `canceled` at once, and
/// its upstream is asked to stop where it can (best effort). A finished
/// task answers 409.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(Errors<ErrorBody, Key>, (status = 200, body = GengateTask),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The task has finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let task = own_task(&state, &key, &id).await?;
    match state.tasks.cancel(task).await? {
        Some(Cancel::Canceled(done)) => Ok(json_response(StatusCode::OK, &done, &state)),
        Some(Cancel::Finished(task)) => Err(ApiError::Conflict(format!(
            "task {} is {}; only an unfinished task can be canceled",
            task.id,
            task.state.as_str()
        ))
        .into()),
        None => Err(not_found(&id)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Resume after this sequence number, for clients that cannot send
    /// the `Last-Event-ID` header (which wins when both are given). Empty:
    /// from the first.
    #[param(pattern = "^[0-9]{0,18}$")]
    pub last_event_id: Option<String>,
}

/// `view` as a server-sent event named by its state, with SSE `id`.
pub(crate) fn sse_event(id: String, view: &EventView) -> Option<Event> {
    Event::default()
        .id(id)
        .event(view.state)
        .json_data(view)
        .inspect_err(
            |e| tracing::error!(task = %view.task_id, error = %e, "rendering an event failed"),
        )
        .ok()
}

/// A resume position: empty (from the first) or a sequence number.
fn sequence(field: &'static str, raw: Option<&str>) -> std::result::Result<i64, ApiError> {
    match raw {
        None | Some("") => Ok(0),
        Some(s) => s
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<i64>().ok())
            .flatten()
            .ok_or_else(|| {
                ApiError::validation(
                    field,
                    format!("must be an event sequence number (got {s:?})"),
                )
            }),
    }
}

/// How long an open stream waits for news of its task from this instance
/// before reading the store anyway (another instance may have changed it).
const EVENTS_LOOK: Duration = Duration::from_secs(1);

/// The task's events as server-sent events, from the first (or after
/// `Last-Event-ID`), live; the stream ends after the terminal event. Each
/// event's SSE `id` is its sequence number, its `event` the state, its
/// `data` an [`EventView`] with the task as it stood then.
#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id"),
           ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{0,18}$",
            description = "Resume after this sequence number; empty: from the first"),
           EventsQuery),
    responses(Errors<ErrorBody, KeyQuery>, (status = 200, content_type = "text/event-stream", body = EventView,
               description = "A stream of `id: <seq>`, `event: <state>`, `data: <EventView JSON>`"),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: std::result::Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let task = own_task(&state, &key, &id).await?;
    // Both are checked; the header wins when both are given.
    let from_query = sequence("last_event_id", query.last_event_id.as_deref())?;
    let after = match headers.get("last-event-id") {
        Some(v) => sequence("Last-Event-ID", Some(v.to_str().unwrap_or("?")))?,
        None => from_query,
    };
    let feed = Feed {
        changes: state.tasks.changes(),
        state,
        owner: task.owner,
        id: task.id,
        after,
        queue: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok::<Event, Infallible>(event), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One open event stream's position.
struct Feed {
    /// Opened before the first read, so no change falls between.
    changes: Changes,
    state: AppState,
    owner: Uuid,
    id: Uuid,
    after: i64,
    queue: VecDeque<Event>,
    done: bool,
}

impl Feed {
    /// The next event, waiting for it; `None` once the terminal one is
    /// sent (or the task cannot be read any more).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let task = match self.state.store.get_task(self.owner, self.id).await {
                Ok(Some(t)) => t,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(task = %self.id, error = %e, "events stream: store unreachable");
                    tokio::time::sleep(EVENTS_LOOK).await;
                    continue;
                }
            };
            if task.event_seq > self.after {
                match self.state.store.task_events(self.id).await {
                    Ok(all) => self.take(&task, all),
                    Err(e) => {
                        tracing::warn!(task = %self.id, error = %e, "events stream: store unreachable")
                    }
                }
            } else if task.state.is_terminal() {
                // Resumed after the terminal event: nothing more will come.
                self.done = true;
            }
            if self.queue.is_empty() && !self.done {
                self.changes.next_of(self.id, EVENTS_LOOK).await;
            }
        }
    }

    fn take(&mut self, task: &Task, all: Vec<TaskEvent>) {
        let after = self.after;
        for ev in all.into_iter().filter(|e| e.seq > after) {
            self.after = ev.seq;
            let view = EventView::of(&ev, task, &self.state.links());
            self.queue.extend(sse_event(ev.seq.to_string(), &view));
            if ev.state.is_terminal() {
                self.done = true;
                break;
            }
        }
    }
}
