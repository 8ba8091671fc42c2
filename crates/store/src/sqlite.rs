//! The embedded backend: one SQLite file in WAL mode. Writes go through a
//! single connection (SQLite has one writer anyway, and this avoids
//! lock-upgrade failures); reads use a pool of their own.

use std::time::Duration;

use async_trait::async_trait;
use gengate_core::{
    ApiKey, Delivery, DeliveryAttempt, DeliveryOutcome, Dialect, Millis, NewTask, Task, TaskEvent,
    TaskState, TaskUpdate,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

/// SQL built from constants (column lists, placeholders), never from input.
macro_rules! sql {
    ($($t:tt)*) => { AssertSqlSafe(format!($($t)*)) };
}
use uuid::Uuid;

use crate::sqlite_writer::Writer;
use crate::{StoreError, StoreResult, TaskStore, row};

/// Migrations, in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_callbacks.sql")),
];

const DELIVERY_COLUMNS: &str = "id, event_id, event_state, event_at, task_id, owner, seq, url, \
    state, attempts, next_attempt_at, last_status, last_error, created_at";

const TASK_COLUMNS: &str = "id, owner, dialect, kind, model, request, callback_url, external_id, \
    channel, upstream_ref, attempts, state, failure_reason, progress, artifacts, created_at, \
    updated_at, started_at, finished_at, deadline_at, version, event_seq";

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl SqliteStore {
    pub async fn open(path: &str, migrate: bool) -> StoreResult<SqliteStore> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: every commit is on disk before the client hears "accepted".
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let mut writer = SqliteConnection::connect_with(&opts).await?;
        if migrate {
            run_migrations(&mut writer).await?;
        } else {
            check_schema(&mut writer).await?;
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer: Writer::start(writer),
            reader,
        })
    }
}

async fn check_schema(conn: &mut SqliteConnection) -> StoreResult<()> {
    let have: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
        .fetch_one(conn)
        .await
        .unwrap_or(None);
    crate::require_schema(have, MIGRATIONS)
}

async fn run_migrations(conn: &mut SqliteConnection) -> StoreResult<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for (version, sql) in MIGRATIONS {
        let mut tx = conn.begin().await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))",
        )
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version, "applied SQLite migration");
    }
    Ok(())
}

fn uuid_col(row: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    let bytes: &[u8] = row.try_get(col)?;
    Uuid::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn task_from_row(row: &SqliteRow) -> StoreResult<Task> {
    row::task(row, uuid_col)
}

fn key_from_row(row: &SqliteRow) -> StoreResult<ApiKey> {
    row::key(row, uuid_col)
}

/// Record an event, and queue its callback when the task has a URL: in the
/// caller's transaction, so neither exists without the other.
async fn insert_event(
    conn: &mut SqliteConnection,
    task: &Task,
    state: TaskState,
    detail: Option<&str>,
    now: Millis,
) -> StoreResult<()> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO task_events (id, task_id, seq, state, detail, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(event_id.as_bytes().as_slice())
    .bind(task.id.as_bytes().as_slice())
    .bind(task.event_seq)
    .bind(state.as_str())
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if let Some(url) = &task.callback_url {
        // After a 410 from this URL, later events are recorded but not sent.
        let gone: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE task_id = ? AND url = ? AND state = 'gone')",
        )
        .bind(task.id.as_bytes().as_slice())
        .bind(url)
        .fetch_one(&mut *conn)
        .await?;
        let (delivery_state, next) = if gone {
            ("gone", None)
        } else {
            ("pending", Some(now))
        };
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
             state, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(Uuid::now_v7().as_bytes().as_slice())
        .bind(event_id.as_bytes().as_slice())
        .bind(state.as_str())
        .bind(now)
        .bind(task.id.as_bytes().as_slice())
        .bind(task.owner.as_bytes().as_slice())
        .bind(task.event_seq)
        .bind(url)
        .bind(delivery_state)
        .bind(next)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn create_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        now: Millis,
        deadline_at: Millis,
    ) -> StoreResult<Task> {
        let id = Uuid::now_v7();
        let request = json(&new.request)?;
        let new = new.clone();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let row = sqlx::query(sql!(
                        "INSERT INTO tasks (id, owner, dialect, kind, model, request, callback_url, \
                         external_id, channel, state, created_at, updated_at, deadline_at, version, \
                         event_seq, due_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, 1, 1, ?) \
                         RETURNING {TASK_COLUMNS}"
                    ))
                    .bind(id.as_bytes().as_slice())
                    .bind(owner.as_bytes().as_slice())
                    .bind(new.dialect.as_str())
                    .bind(new.kind.as_str())
                    .bind(&new.model)
                    .bind(request)
                    .bind(&new.callback_url)
                    .bind(&new.external_id)
                    .bind(&new.channel)
                    .bind(now)
                    .bind(now)
                    .bind(deadline_at)
                    .bind(now)
                    .fetch_one(&mut *conn)
                    .await?;
                    let task = task_from_row(&row)?;
                    insert_event(conn, &task, TaskState::Pending, None, now).await?;
                    Ok(task)
                })
            })
            .await
    }

    async fn get_task(&self, owner: Uuid, id: Uuid) -> StoreResult<Option<Task>> {
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ? AND +owner = ?"
        ))
        .bind(id.as_bytes().as_slice())
        .bind(owner.as_bytes().as_slice())
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(task_from_row)
        .transpose()
    }

    async fn get_tasks(
        &self,
        owner: Uuid,
        dialect: Dialect,
        ids: &[Uuid],
    ) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(",");
        // Only placeholders are spliced in; the ids themselves are bound. The
        // unary `+` keeps the planner on the primary key: without it, having
        // no statistics, it may walk the owner's listing index, a scan that
        // grows with every task the key ever made.
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({marks}) AND +owner = ? AND +dialect = ?"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id.as_bytes().as_slice());
        }
        q.bind(owner.as_bytes().as_slice())
            .bind(dialect.as_str())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    async fn get_task_by_external_id(
        &self,
        owner: Uuid,
        external_id: &str,
    ) -> StoreResult<Option<Task>> {
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE owner = ? AND external_id = ?"
        ))
        .bind(owner.as_bytes().as_slice())
        .bind(external_id)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(task_from_row)
        .transpose()
    }

    async fn list_tasks(
        &self,
        owner: Uuid,
        dialect: Dialect,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<Task>, u64)> {
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE owner = ? AND dialect = ?")
                .bind(owner.as_bytes().as_slice())
                .bind(dialect.as_str())
                .fetch_one(&self.reader)
                .await?;
        let tasks = sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE owner = ? AND dialect = ? \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        ))
        .bind(owner.as_bytes().as_slice())
        .bind(dialect.as_str())
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(task_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok((tasks, u64::try_from(total).unwrap_or_default()))
    }

    async fn load_task(&self, id: Uuid) -> StoreResult<Option<Task>> {
        sqlx::query(sql!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(task_from_row)
            .transpose()
    }

    async fn claim_due(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Task>> {
        let worker = worker.to_string();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(sql!(
                        "UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id IN ( \
                           SELECT id FROM tasks WHERE due_at IS NOT NULL AND due_at <= ? \
                           AND (lease_until IS NULL OR lease_until <= ?) ORDER BY due_at LIMIT ?) \
                         RETURNING {TASK_COLUMNS}"
                    ))
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(conn)
                    .await?
                    .iter()
                    .map(task_from_row)
                    .collect()
                })
            })
            .await
    }

    async fn release_leases(&self, worker: &str) -> StoreResult<u64> {
        let worker = worker.to_string();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                    )
                    .bind(worker)
                    .execute(conn)
                    .await?;
                    Ok(done.rows_affected())
                })
            })
            .await
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(due_at) FROM tasks WHERE due_at IS NOT NULL")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn update_task(
        &self,
        id: Uuid,
        expected_version: i64,
        update: &TaskUpdate,
        now: Millis,
    ) -> StoreResult<Option<Task>> {
        let state = update.state.map(TaskState::as_str);
        let artifacts = update.artifacts.as_ref().map(json).transpose()?;
        let update = update.clone();
        self.writer
            .write(move |conn| Box::pin(async move {
        let row = sqlx::query(sql!(
            "UPDATE tasks SET \
               state = COALESCE(?1, state), \
               channel = COALESCE(?2, channel), \
               upstream_ref = COALESCE(?3, upstream_ref), \
               failure_reason = COALESCE(?4, failure_reason), \
               progress = COALESCE(?5, progress), \
               artifacts = COALESCE(?6, artifacts), \
               attempts = attempts + ?7, \
               updated_at = CASE WHEN ?1 IS NULL AND ?5 IS NULL THEN updated_at ELSE ?8 END, \
               started_at = CASE WHEN ?1 = 'processing' AND started_at IS NULL THEN ?8 ELSE started_at END, \
               finished_at = CASE WHEN ?1 IN ('completed', 'failed', 'canceled') THEN ?8 ELSE finished_at END, \
               due_at = CASE WHEN ?1 IN ('completed', 'failed', 'canceled') THEN NULL ELSE COALESCE(?9, due_at) END, \
               version = version + 1, \
               event_seq = event_seq + (?1 IS NOT NULL), \
               lease_owner = NULL, lease_until = NULL \
             WHERE id = ?10 AND version = ?11 AND state NOT IN ('completed', 'failed', 'canceled') \
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(state)
        .bind(&update.channel)
        .bind(&update.upstream_ref)
        .bind(&update.failure_reason)
        .bind(update.progress.map(i64::from))
        .bind(artifacts)
        .bind(i64::from(update.bump_attempts))
        .bind(now)
        .bind(update.next_due_at)
        .bind(id.as_bytes().as_slice())
        .bind(expected_version)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = task_from_row(&row)?;
        if let Some(st) = update.state {
            insert_event(conn, &task, st, update.detail.as_deref(), now).await?;
        }
        Ok(Some(task))
            }))
            .await
    }

    async fn task_events(&self, id: Uuid) -> StoreResult<Vec<TaskEvent>> {
        sqlx::query(
            "SELECT id, task_id, seq, state, detail, created_at FROM task_events \
             WHERE task_id = ? ORDER BY seq",
        )
        .bind(id.as_bytes().as_slice())
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| row::event(r, uuid_col))
        .collect()
    }

    async fn open_task_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE due_at IS NOT NULL")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(sql!(
                        "UPDATE deliveries SET lease_until = ?1 WHERE id IN ( \
               SELECT d.id FROM deliveries d \
               WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ?2 \
               AND (d.lease_until IS NULL OR d.lease_until <= ?2) \
               AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id \
                   AND p.url = d.url AND p.seq < d.seq AND p.state = 'pending') \
               ORDER BY d.next_attempt_at LIMIT ?3) \
             RETURNING {DELIVERY_COLUMNS}"
                    ))
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(conn)
                    .await?
                    .iter()
                    .map(|r| row::delivery(r, uuid_col))
                    .collect()
                })
            })
            .await
    }

    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        attempt: &DeliveryAttempt,
        outcome: DeliveryOutcome,
        now: Millis,
    ) -> StoreResult<()> {
        let (state, next) = row::outcome_columns(outcome);
        let (delivery, attempt) = (delivery.clone(), attempt.clone());
        self.writer
            .write(move |conn| Box::pin(async move {
        sqlx::query(
            "INSERT INTO delivery_attempts (id, delivery_id, attempt, at, status, error, latency_ms, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(Uuid::now_v7().as_bytes().as_slice())
        .bind(delivery.id.as_bytes().as_slice())
        .bind(i64::from(attempt.attempt))
        .bind(attempt.at)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.latency_ms)
        .bind(attempt.next_attempt_at)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, state = ?1, next_attempt_at = ?2, \
             lease_until = NULL, last_status = ?3, last_error = ?4, updated_at = ?5 WHERE id = ?6",
        )
        .bind(state)
        .bind(next)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(now)
        .bind(delivery.id.as_bytes().as_slice())
        .execute(&mut *conn)
        .await?;
        if outcome == DeliveryOutcome::Gone {
            sqlx::query(
                "UPDATE deliveries SET state = 'gone', next_attempt_at = NULL, updated_at = ?1 \
                 WHERE task_id = ?2 AND url = ?3 AND state = 'pending'",
            )
            .bind(now)
            .bind(delivery.task_id.as_bytes().as_slice())
            .bind(&delivery.url)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
            }))
            .await
    }

    async fn task_deliveries(
        &self,
        task_id: Uuid,
    ) -> StoreResult<Vec<(Delivery, Vec<DeliveryAttempt>)>> {
        let deliveries = sqlx::query(sql!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_id = ?1 ORDER BY seq, created_at"
        ))
        .bind(task_id.as_bytes().as_slice())
        .fetch_all(&self.reader)
        .await?
        .iter()
        .map(|r| row::delivery(r, uuid_col))
        .collect::<StoreResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let attempts = sqlx::query(
                "SELECT attempt, at, status, error, latency_ms, next_attempt_at FROM delivery_attempts \
                 WHERE delivery_id = ?1 ORDER BY attempt",
            )
            .bind(d.id.as_bytes().as_slice())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(row::attempt)
            .collect::<StoreResult<Vec<_>>>()?;
            out.push((d, attempts));
        }
        Ok(out)
    }

    async fn redeliver(
        &self,
        task_id: Uuid,
        delivery_id: Uuid,
        now: Millis,
    ) -> StoreResult<Option<Delivery>> {
        self.writer
            .write(move |conn| Box::pin(async move {
        sqlx::query(sql!(
            "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
               state, attempts, next_attempt_at, created_at, updated_at) \
             SELECT ?1, event_id, event_state, event_at, task_id, owner, seq, url, 'pending', 0, ?2, ?2, ?2 \
             FROM deliveries WHERE id = ?3 AND task_id = ?4 \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(Uuid::now_v7().as_bytes().as_slice())
        .bind(now)
        .bind(delivery_id.as_bytes().as_slice())
        .bind(task_id.as_bytes().as_slice())
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(|r| row::delivery(r, uuid_col))
        .transpose()
            }))
            .await
    }

    async fn get_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE id = ?1")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(|r| row::key(r, uuid_col))
            .transpose()
    }

    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        secret: &str,
        overlap_until: Millis,
    ) -> StoreResult<bool> {
        let secret = secret.to_string();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE api_keys SET previous_webhook_secret = webhook_secret, \
             previous_secret_until = ?1, webhook_secret = ?2 WHERE id = ?3",
                    )
                    .bind(overlap_until)
                    .bind(secret)
                    .bind(id.as_bytes().as_slice())
                    .execute(conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }

    async fn create_key(&self, key: &ApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    sqlx::query(
            "INSERT INTO api_keys (id, name, hash, admin, created_at, revoked_at, webhook_secret) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_bytes().as_slice())
        .bind(&key.name)
        .bind(key.hash.as_slice())
        .bind(key.admin)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .bind(&key.webhook_secret)
        .execute(conn)
        .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE hash = ?")
            .bind(hash.as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn revoke_key(&self, id: Uuid, now: Millis) -> StoreResult<bool> {
        self.writer
            .write(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(id.as_bytes().as_slice())
                    .execute(conn)
                    .await?;
                    Ok(done.rows_affected() == 1)
                })
            })
            .await
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}
