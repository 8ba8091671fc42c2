//! Reading rows back into the core's types, shared by both backends. Each
//! backend selects the same column names with the same SQL types: TEXT for
//! strings and JSON, BIGINT for numbers; ids come through `uuid`, which
//! knows the backend's own representation.

use gengate_core::{
    ApiKey, Artifact, Dialect, GenerationRequest, Task, TaskEvent, TaskKind, TaskState,
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
    })
}
