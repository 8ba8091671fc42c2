//! Reading rows back into the core's types, shared by both backends. Each
//! backend selects the same column names with the same SQL types: TEXT for
//! strings and JSON, BIGINT for numbers; ids come through `uuid`, which
//! knows the backend's own representation.

use gengate_core::{
    ApiKey, Artifact, Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryState, Dialect,
    GenerationRequest, Task, TaskEvent, TaskKind, TaskState,
};
use sqlx::{Decode, Row, Type};
use uuid::Uuid;

use crate::{StoreError, StoreResult};

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {v:?}"))
}

pub(crate) fn task<'r, R>(
    row: &'r R,
    uuid: impl Fn(&'r R, &str) -> StoreResult<Uuid>,
) -> StoreResult<Task>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let dialect: String = row.try_get("dialect")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let request: String = row.try_get("request")?;
    let artifacts: String = row.try_get("artifacts")?;
    Ok(Task {
        id: uuid(row, "id")?,
        owner: uuid(row, "owner")?,
        dialect: Dialect::parse(&dialect).ok_or_else(|| corrupt("dialect", &dialect))?,
        kind: TaskKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        model: row.try_get("model")?,
        request: serde_json::from_str::<GenerationRequest>(&request)
            .map_err(|e| corrupt("request", &e.to_string()))?,
        callback_url: row.try_get("callback_url")?,
        external_id: row.try_get("external_id")?,
        channel: row.try_get("channel")?,
        upstream_ref: row.try_get("upstream_ref")?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        state: TaskState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        failure_reason: row.try_get("failure_reason")?,
        progress: u8::try_from(row.try_get::<i64, _>("progress")?).unwrap_or(100),
        artifacts: serde_json::from_str::<Vec<Artifact>>(&artifacts)
            .map_err(|e| corrupt("artifacts", &e.to_string()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        deadline_at: row.try_get("deadline_at")?,
        version: row.try_get("version")?,
        event_seq: row.try_get("event_seq")?,
    })
}

pub(crate) fn event<'r, R>(
    row: &'r R,
    uuid: impl Fn(&'r R, &str) -> StoreResult<Uuid>,
) -> StoreResult<TaskEvent>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let state: String = row.try_get("state")?;
    Ok(TaskEvent {
        id: uuid(row, "id")?,
        task_id: uuid(row, "task_id")?,
        seq: row.try_get("seq")?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("event state", &state))?,
        detail: row.try_get("detail")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn key<'r, R>(
    row: &'r R,
    uuid: impl Fn(&'r R, &str) -> StoreResult<Uuid>,
) -> StoreResult<ApiKey>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(ApiKey {
        id: uuid(row, "id")?,
        name: row.try_get("name")?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("key hash is not 32 bytes".into()))?,
        admin: row.try_get("admin")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        webhook_secret: row.try_get("webhook_secret")?,
        previous_webhook_secret: row.try_get("previous_webhook_secret")?,
        previous_secret_until: row.try_get("previous_secret_until")?,
    })
}

pub(crate) fn delivery<'r, R>(
    row: &'r R,
    uuid: impl Fn(&'r R, &str) -> StoreResult<Uuid>,
) -> StoreResult<Delivery>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let event_state: String = row.try_get("event_state")?;
    let state: String = row.try_get("state")?;
    Ok(Delivery {
        id: uuid(row, "id")?,
        event_id: uuid(row, "event_id")?,
        event_state: TaskState::parse(&event_state)
            .ok_or_else(|| corrupt("event_state", &event_state))?,
        event_at: row.try_get("event_at")?,
        task_id: uuid(row, "task_id")?,
        owner: uuid(row, "owner")?,
        seq: row.try_get("seq")?,
        url: row.try_get("url")?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt("delivery state", &state))?,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: row
            .try_get::<Option<i64>, _>("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn attempt<'r, R>(row: &'r R) -> StoreResult<DeliveryAttempt>
where
    R: Row,
    &'r str: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(DeliveryAttempt {
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(u32::MAX),
        at: row.try_get("at")?,
        status: row
            .try_get::<Option<i64>, _>("status")?
            .and_then(|s| u16::try_from(s).ok()),
        error: row.try_get("error")?,
        latency_ms: row.try_get("latency_ms")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
    })
}

/// The state a delivery is left in, and when it is tried next.
pub(crate) fn outcome_columns(outcome: DeliveryOutcome) -> (&'static str, Option<i64>) {
    match outcome {
        DeliveryOutcome::Delivered => (DeliveryState::Delivered.as_str(), None),
        DeliveryOutcome::RetryAt(at) => (DeliveryState::Pending.as_str(), Some(at)),
        DeliveryOutcome::GiveUp => (DeliveryState::Failed.as_str(), None),
        DeliveryOutcome::Gone => (DeliveryState::Gone.as_str(), None),
    }
}
