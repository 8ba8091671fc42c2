//! `/v1/tasks/{id}/deliveries`: a task's callbacks as its owner sees them,
//! every attempt included, and redelivery on request. Any dialect's task.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gengate_core::time::rfc3339_ms;
use gengate_core::{ApiError, Delivery, DeliveryAttempt};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::{Error, ErrorBody};
use crate::openapi::{Errors, Key};

/// The caller's key, refused in gengate's envelope.
type Caller = crate::auth::Caller<ErrorBody>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks/{id}/deliveries", get(list))
        .route(
            "/v1/tasks/{id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    /// The `webhook-id` header: the event's id, the same on every attempt.
    pub webhook_id: Uuid,
    /// The event's number in the task's history.
    pub seq: i64,
    /// The task state the event announces.
    pub event: &'static str,
    pub url: String,
    /// pending, delivered, failed (given up) or gone (the receiver answered 410).
    pub state: &'static str,
    pub attempts: Vec<AttemptView>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why there was no answer (timeout, refused address...).
    pub error: Option<String>,
    pub latency_ms: i64,
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

fn view(d: &Delivery, attempts: &[DeliveryAttempt]) -> DeliveryView {
    DeliveryView {
        id: d.id,
        webhook_id: d.event_id,
        seq: d.seq,
        event: d.event_state.as_str(),
        url: d.url.clone(),
        state: d.state.as_str(),
        attempts: attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                at: rfc3339_ms(a.at),
                status: a.status,
                error: a.error.clone(),
                latency_ms: a.latency_ms,
                next_attempt_at: a.next_attempt_at.map(rfc3339_ms),
            })
            .collect(),
        next_attempt_at: d.next_attempt_at.map(rfc3339_ms),
        created_at: rfc3339_ms(d.created_at),
    }
}

/// The caller's task (an admin's: any key's), or 404 for unknown and
/// foreign ids alike.
async fn own_task(state: &AppState, key: &Caller, id: &str) -> Result<Uuid, Error> {
    state
        .tasks
        .visible(key, id)
        .await?
        .map(|t| t.id)
        .ok_or_else(|| Error::from(ApiError::NotFound(format!("task {id} not found"))))
}

/// A task's callback deliveries in order, with every attempt.
#[utoipa::path(get, path = "/v1/tasks/{id}/deliveries", tag = "callbacks",
    params(("id" = String, Path, description = "Task id (any dialect)")),
    responses(Errors<ErrorBody, Key>, (status = 200, body = DeliveryList),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    key: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, Error> {
    let id = own_task(&state, &key, &id).await?;
    let all = state.store.task_deliveries(id).await?;
    Ok(Json(DeliveryList {
        data: all.iter().map(|(d, a)| view(d, a)).collect(),
    }))
}

/// Send a delivery's event again, at once, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/tasks/{id}/deliveries/{delivery_id}/redeliver", tag = "callbacks",
    params(("id" = String, Path, description = "Task id"), ("delivery_id" = String, Path, description = "Delivery id")),
    responses(Errors<ErrorBody, Key>, (status = 202, body = DeliveryView),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn redeliver(
    State(state): State<AppState>,
    key: Caller,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, Error> {
    let id = own_task(&state, &key, &id).await?;
    let not_found = || {
        Error::from(ApiError::NotFound(format!(
            "delivery {delivery_id} not found"
        )))
    };
    let delivery_id = Uuid::try_parse(&delivery_id).map_err(|_| not_found())?;
    let d = state
        .store
        .redeliver(id, delivery_id, gengate_engine::now_ms())
        .await?
        .ok_or_else(not_found)?;
    Ok((StatusCode::ACCEPTED, Json(view(&d, &[]))).into_response())
}
