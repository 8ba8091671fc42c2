//! `GET /v1/events`: the live feed of task changes, as server-sent events:
//! every event of the caller's tasks (an admin's: every key's), oldest
//! first, resumable with `Last-Event-ID`. What the console's task table
//! follows, and any client watching many tasks at once.
//!
//! Events are read from the store in their recorded order, so every
//! instance's changes show. An event's time is read before it commits, so
//! one can commit behind a position already sent (a writer waiting on a
//! lock, an instance whose clock is behind): each read looks [`LATE_MS`]
//! back as well and sends what it had not, once. A resumed feed counts
//! everything up to its position as sent.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gengate_core::dialect::tasks::EventView;
use gengate_core::{ApiError, Millis, Task, TaskEvent};
use gengate_engine::now_ms;
use gengate_engine::service::Changes;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Errors, KeyQuery};
use crate::tasks_api::sse_event;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(feed))
}

/// How old an event must be before it is sent: most commits are done by then.
const SETTLE_MS: i64 = 250;
/// How far behind its position a feed looks again for late commits.
const LATE_MS: i64 = 5_000;
/// How long the feed waits for news from this instance before reading the
/// store anyway (another instance may have changed a task).
const LOOK: Duration = Duration::from_secs(1);
/// Events read from the store at once.
const BATCH: u32 = 200;

type Caller = crate::auth::Caller<ErrorBody>;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Resume after this event (its SSE `id`), for clients that cannot
    /// send the `Last-Event-ID` header (which wins when both are given).
    /// Empty: from now on.
    #[param(pattern = "^([0-9]{1,18}-[0-9a-f]{32})?$")]
    pub last_event_id: Option<String>,
}

/// Every change of the caller's tasks (an admin's: every key's, each task
/// naming its key in `key_id`) as it happens, oldest first: SSE `id` is the
/// event's position (give it back as `Last-Event-ID` to resume after it),
/// `event` the state, `data` an [`EventView`] with the task as it stood.
#[utoipa::path(get, path = "/v1/events", tag = "tasks",
    params(("Last-Event-ID" = Option<String>, Header, nullable = false,
            pattern = "^([0-9]{1,18}-[0-9a-f]{32})?$",
            description = "Resume after this event; empty: from now on"),
           FeedQuery),
    responses(Errors<ErrorBody, KeyQuery>, (status = 200, content_type = "text/event-stream", body = EventView,
               description = "A stream of `id: <position>`, `event: <state>`, `data: <EventView JSON>`")),
    security(("bearer" = [])))]
pub async fn feed(
    State(state): State<AppState>,
    key: Caller,
    headers: HeaderMap,
    crate::extract::Query(query, _): crate::extract::Query<FeedQuery, ErrorBody>,
) -> Result<Response, Error> {
    let raw = match headers.get("last-event-id") {
        Some(v) => Some(("Last-Event-ID", v.to_str().unwrap_or("?"))),
        None => query.last_event_id.as_deref().map(|q| ("last_event_id", q)),
    };
    let after = match raw {
        None | Some((_, "")) => (now_ms() - SETTLE_MS, Uuid::max()),
        Some((field, raw)) => position(raw).ok_or_else(|| {
            ApiError::validation(
                field,
                format!("is not an event id this feed gave (got {raw:?})"),
            )
        })?,
    };
    let feed = Feed {
        changes: state.tasks.changes(),
        state,
        owner: (!key.admin).then_some(key.id),
        floor: after,
        after,
        sent: BTreeSet::new(),
        queue: VecDeque::new(),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await;
        Some((Ok::<Event, Infallible>(event), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An event's position as its SSE id: `<created_at ms>-<event id>`.
fn event_id(ev: &TaskEvent) -> String {
    format!("{}-{}", ev.created_at, ev.id.simple())
}

fn position(raw: &str) -> Option<(Millis, Uuid)> {
    let (at, id) = raw.split_once('-')?;
    let at = at
        .parse()
        .ok()
        .filter(|_| at.bytes().all(|b| b.is_ascii_digit()))?;
    Some((at, Uuid::try_parse(id).ok().filter(|_| id.len() == 32)?))
}

struct Feed {
    /// Opened before the first read, so no change falls between.
    changes: Changes,
    state: AppState,
    /// `None`: every key's (an admin's feed).
    owner: Option<Uuid>,
    /// Never sent: at or before where the feed started (now, or the
    /// position it resumed after).
    floor: (Millis, Uuid),
    /// Everything after this has not been sent.
    after: (Millis, Uuid),
    /// What was sent within [`LATE_MS`] before `after`, by position.
    sent: BTreeSet<(Millis, Uuid)>,
    queue: VecDeque<Event>,
}

impl Feed {
    /// The next event, waiting for it as long as it takes.
    async fn next(&mut self) -> Event {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return e;
            }
            let until = now_ms() - SETTLE_MS;
            let from = self.floor.max((self.after.0 - LATE_MS, Uuid::nil()));
            // Room for every event already sent in the window, and a batch
            // of others: each full read sends something new.
            let limit = BATCH.saturating_add(u32::try_from(self.sent.len()).unwrap_or(u32::MAX));
            match self
                .state
                .store
                .events_since(self.owner, from, until, limit)
                .await
            {
                Ok(found) => {
                    let full = found.len() >= limit as usize;
                    for (ev, task) in &found {
                        if !self.sent.contains(&(ev.created_at, ev.id)) {
                            self.push(ev, task);
                        }
                    }
                    // Read to `until`: later reads start their window there,
                    // so an idle feed rereads only the last few seconds.
                    if !full {
                        self.after = self.after.max((until, Uuid::nil()));
                    }
                    self.sent = self.sent.split_off(&(self.after.0 - LATE_MS, Uuid::nil()));
                    if !self.queue.is_empty() || full {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "event feed: store unreachable"),
            }
            // News of a change here is read once it has settled.
            self.changes.next_for(self.owner, LOOK).await;
            tokio::time::sleep(Duration::from_millis(SETTLE_MS as u64)).await;
        }
    }

    fn push(&mut self, ev: &TaskEvent, task: &Task) {
        let at = (ev.created_at, ev.id);
        self.sent.insert(at);
        self.after = self.after.max(at);
        let links = self.state.links();
        let mut view = EventView::of(ev, task, &links);
        view.task.key_id = self.owner.is_none().then_some(task.owner);
        self.queue.extend(sse_event(event_id(ev), &view));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_nothing_else_reads_as_one() {
        let ev = TaskEvent {
            id: Uuid::now_v7(),
            task_id: Uuid::now_v7(),
            seq: 2,
            state: gengate_core::TaskState::Completed,
            created_at: 1_733_150_000_123,
            detail: None,
        };
        assert_eq!(position(&event_id(&ev)), Some((ev.created_at, ev.id)));
        for bad in [
            "",
            "12",
            "x-y",
            "-1-00000000000000000000000000000000",
            "1-abc",
            "1-",
        ] {
            assert_eq!(position(bad), None, "{bad}");
        }
        let hyphenated = format!("1-{}", ev.id.hyphenated());
        assert_eq!(position(&hyphenated), None);
    }
}
