//! Reading rows back into the core's types, shared by both backends and
//! both drivers. Each backend selects the same column names with the same
//! SQL types: TEXT for strings and JSON, BIGINT for numbers; ids are read
//! through [`Columns::uuid`], which knows the backend's representation.

use gengate_core::credits::{EntryKind, LedgerEntry};
use gengate_core::{
    ApiKey, Artifact, Charge, Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryState, Dialect,
    GenerationRequest, Task, TaskEvent, TaskKind, TaskState,
};
use sqlx::{Row as _, ValueRef as _};
use uuid::Uuid;

use crate::{LedgerTotal, StoreError, StoreResult, UsageRow};

/// One row's columns, by name, whatever driver read it.
pub(crate) trait Columns {
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>>;
    fn uuid(&self, col: &str) -> StoreResult<Uuid>;
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
}

fn uuid_from_blob(bytes: &[u8], col: &str) -> StoreResult<Uuid> {
    Uuid::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

/// sqlx rows: the same calls for each backend but the id's type.
macro_rules! sqlx_columns {
    ($row:ty, |$r:ident, $c:ident| $uuid:expr) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> StoreResult<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn int(&self, col: &str) -> StoreResult<i64> {
                Ok(self.try_get(col)?)
            }
            fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
                Ok(self.try_get(col)?)
            }
            fn flag(&self, col: &str) -> StoreResult<bool> {
                Ok(self.try_get(col)?)
            }
            fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
                Ok(self.try_get(col)?)
            }
            fn uuid(&self, col: &str) -> StoreResult<Uuid> {
                let ($r, $c) = (self, col);
                $uuid
            }
            fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
                if self.try_get_raw(col)?.is_null() {
                    return Ok(None);
                }
                self.uuid(col).map(Some)
            }
        }
    };
}

sqlx_columns!(sqlx::postgres::PgRow, |r, c| Ok(r.try_get::<Uuid, _>(c)?));
sqlx_columns!(sqlx::sqlite::SqliteRow, |r, c| uuid_from_blob(
    r.try_get::<&[u8], _>(c)?,
    c
));

/// A rusqlite row with its statement's column names, read once per
/// statement: rusqlite's own by-name lookup asks SQLite for each column's
/// name and compares them all, for every value read.
pub(crate) struct NamedRow<'a, 'r> {
    pub row: &'a rusqlite::Row<'r>,
    pub names: &'a [String],
}

impl NamedRow<'_, '_> {
    fn at(&self, col: &str) -> StoreResult<usize> {
        self.names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| StoreError::Backend(format!("no column {col:?}")))
    }

    fn get<T: rusqlite::types::FromSql>(&self, col: &str) -> StoreResult<T> {
        Ok(self.row.get(self.at(col)?)?)
    }

    fn value(&self, col: &str) -> StoreResult<rusqlite::types::ValueRef<'_>> {
        Ok(self.row.get_ref(self.at(col)?)?)
    }
}

impl Columns for NamedRow<'_, '_> {
    fn text(&self, col: &str) -> StoreResult<String> {
        self.get(col)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.get(col)
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        self.get(col)
    }
    fn opt_int(&self, col: &str) -> StoreResult<Option<i64>> {
        self.get(col)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.get(col)
    }
    fn bytes(&self, col: &str) -> StoreResult<Vec<u8>> {
        self.get(col)
    }
    fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        let blob = self.value(col)?.as_blob();
        uuid_from_blob(blob.map_err(|e| corrupt(col, &e.to_string()))?, col)
    }
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        if self.value(col)? == rusqlite::types::ValueRef::Null {
            return Ok(None);
        }
        self.uuid(col).map(Some)
    }
}

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {v:?}"))
}

pub(crate) fn task(row: &dyn Columns) -> StoreResult<Task> {
    let dialect = row.text("dialect")?;
    let kind = row.text("kind")?;
    let state = row.text("state")?;
    let request = row.text("request")?;
    let artifacts = row.text("artifacts")?;
    Ok(Task {
        id: row.uuid("id")?,
        owner: row.uuid("owner")?,
        dialect: Dialect::parse(&dialect).ok_or_else(|| corrupt("dialect", &dialect))?,
        kind: TaskKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        model: row.text("model")?,
        request: serde_json::from_str::<GenerationRequest>(&request)
            .map_err(|e| corrupt("request", &e.to_string()))?,
        callback_url: row.opt_text("callback_url")?,
        external_id: row.opt_text("external_id")?,
        channel: row.opt_text("channel")?,
        upstream_ref: row.opt_text("upstream_ref")?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        state: TaskState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        failure_reason: row.opt_text("failure_reason")?,
        progress: u8::try_from(row.int("progress")?).unwrap_or(100),
        artifacts: serde_json::from_str::<Vec<Artifact>>(&artifacts)
            .map_err(|e| corrupt("artifacts", &e.to_string()))?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        started_at: row.opt_int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
        deadline_at: row.int("deadline_at")?,
        version: row.int("version")?,
        event_seq: row.int("event_seq")?,
        charge: charge(row)?,
        refunded: row.int("refunded")?,
        upstream_cost: row.int("upstream_cost")?,
        keep_until: row.opt_int("keep_until")?,
        upstream_error: row.opt_text("upstream_error")?,
    })
}

/// The charge columns: the total, and the part of it for each output.
fn charge(row: &dyn Columns) -> StoreResult<Charge> {
    let (total, per_output) = (row.int("charged")?, row.int("charge_per_output")?);
    let outputs = u32::try_from(row.int("charge_outputs")?).unwrap_or(0);
    Ok(Charge {
        per_task: total - per_output * i64::from(outputs),
        per_output,
        outputs,
    })
}

pub(crate) fn event(row: &dyn Columns) -> StoreResult<TaskEvent> {
    let state = row.text("state")?;
    Ok(TaskEvent {
        id: row.uuid("id")?,
        task_id: row.uuid("task_id")?,
        seq: row.int("seq")?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("event state", &state))?,
        detail: row.opt_text("detail")?,
        created_at: row.int("created_at")?,
    })
}

/// An event (its columns prefixed `ev_`) and its task, on one row.
pub(crate) fn event_with_task(row: &dyn Columns) -> StoreResult<(TaskEvent, Task)> {
    let task = task(row)?;
    let state = row.text("ev_state")?;
    let event = TaskEvent {
        id: row.uuid("ev_id")?,
        task_id: task.id,
        seq: row.int("ev_seq")?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("event state", &state))?,
        detail: row.opt_text("ev_detail")?,
        created_at: row.int("ev_at")?,
    };
    Ok((event, task))
}

pub(crate) fn key(row: &dyn Columns) -> StoreResult<ApiKey> {
    let hash = row.bytes("hash")?;
    Ok(ApiKey {
        id: row.uuid("id")?,
        name: row.text("name")?,
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("key hash is not 32 bytes".into()))?,
        admin: row.flag("admin")?,
        created_at: row.int("created_at")?,
        revoked_at: row.opt_int("revoked_at")?,
        webhook_secret: row.opt_text("webhook_secret")?,
        previous_webhook_secret: row.opt_text("previous_webhook_secret")?,
        previous_secret_until: row.opt_int("previous_secret_until")?,
        enabled: row.flag("enabled")?,
        unlimited: row.flag("unlimited")?,
        balance: row.int("balance")?,
        limits: serde_json::from_str(&row.text("limits")?)
            .map_err(|e| corrupt("limits", &e.to_string()))?,
    })
}

pub(crate) fn entry(row: &dyn Columns) -> StoreResult<LedgerEntry> {
    let kind = row.text("kind")?;
    Ok(LedgerEntry {
        id: row.uuid("id")?,
        key_id: row.uuid("key_id")?,
        at: row.int("at")?,
        kind: EntryKind::parse(&kind).ok_or_else(|| corrupt("entry kind", &kind))?,
        amount: row.int("amount")?,
        task_id: row.opt_uuid("task_id")?,
        reason: row.opt_text("reason")?,
    })
}

pub(crate) fn usage(row: &dyn Columns) -> StoreResult<UsageRow> {
    let state = row.text("state")?;
    Ok(UsageRow {
        group: row.text("grp")?,
        state: TaskState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        tasks: u64::try_from(row.int("n")?).unwrap_or(0),
        charged: row.int("charged")?,
        refunded: row.int("refunded")?,
        upstream_cost: row.int("upstream_cost")?,
    })
}

pub(crate) fn ledger_total(row: &dyn Columns) -> StoreResult<LedgerTotal> {
    Ok(LedgerTotal {
        key_id: row.uuid("id")?,
        balance: row.int("balance")?,
        entries: row.int("entries")?,
    })
}

pub(crate) fn delivery(row: &dyn Columns) -> StoreResult<Delivery> {
    let event_state = row.text("event_state")?;
    let state = row.text("state")?;
    Ok(Delivery {
        id: row.uuid("id")?,
        event_id: row.uuid("event_id")?,
        event_state: TaskState::parse(&event_state)
            .ok_or_else(|| corrupt("event_state", &event_state))?,
        event_at: row.int("event_at")?,
        task_id: row.uuid("task_id")?,
        owner: row.uuid("owner")?,
        seq: row.int("seq")?,
        url: row.text("url")?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt("delivery state", &state))?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
        next_attempt_at: row.opt_int("next_attempt_at")?,
        last_status: row
            .opt_int("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.opt_text("last_error")?,
        created_at: row.int("created_at")?,
    })
}

pub(crate) fn attempt(row: &dyn Columns) -> StoreResult<DeliveryAttempt> {
    Ok(DeliveryAttempt {
        attempt: u32::try_from(row.int("attempt")?).unwrap_or(u32::MAX),
        at: row.int("at")?,
        status: row.opt_int("status")?.and_then(|s| u16::try_from(s).ok()),
        error: row.opt_text("error")?,
        latency_ms: row.int("latency_ms")?,
        next_attempt_at: row.opt_int("next_attempt_at")?,
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
