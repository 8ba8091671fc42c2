//! The embedded backend: one SQLite file in WAL mode. Writes go through one
//! connection owned by the group-commit writer (SQLite has one writer
//! anyway); reads use a pool of their own.

use std::time::Duration;

use async_trait::async_trait;
use gengate_core::{
    ApiKey, ChannelSpec, Delivery, DeliveryAttempt, DeliveryOutcome, Dialect, Millis, NewTask,
    Task, TaskEvent, TaskState, TaskUpdate,
};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use uuid::Uuid;

use crate::sqlite_writer::Writer;
use crate::{StoreError, StoreResult, TaskFilter, TaskStore, row};

/// SQL built from constants (column lists, placeholders), never from input.
macro_rules! sql {
    ($($t:tt)*) => { AssertSqlSafe(format!($($t)*)) };
}

/// Migrations, in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_callbacks.sql")),
    (3, include_str!("../migrations/sqlite/0003_channels.sql")),
    (
        4,
        include_str!("../migrations/sqlite/0004_task_listing.sql"),
    ),
    (
        5,
        include_str!("../migrations/sqlite/0005_listing_by_dialect.sql"),
    ),
];

const DELIVERY_COLUMNS: &str = "id, event_id, event_state, event_at, task_id, owner, seq, url, \
    state, attempts, next_attempt_at, last_status, last_error, created_at";

const TASK_COLUMNS: &str = "id, owner, dialect, kind, model, request, callback_url, external_id, \
    channel, upstream_ref, attempts, state, failure_reason, progress, artifacts, created_at, \
    updated_at, started_at, finished_at, deadline_at, version, event_seq";

/// How long a connection waits for another's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation
                    && matches!(
                        f.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
            {
                StoreError::Conflict(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl SqliteStore {
    pub async fn open(path: &str, migrate: bool) -> StoreResult<SqliteStore> {
        let owned = path.to_string();
        // The writer connection comes first: it creates the file, sets WAL
        // and migrates, so that readers find the schema.
        let writer = tokio::task::spawn_blocking(move || -> StoreResult<Connection> {
            let conn = Connection::open(&owned)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.set_prepared_statement_cache_capacity(32);
            // FULL: every commit is on disk before the client hears "accepted".
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
            )?;
            if migrate {
                run_migrations(&conn)?;
            } else {
                check_schema(&conn)?;
            }
            Ok(conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("opening SQLite: {e}")))??;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(BUSY_TIMEOUT)
                    // Pages are read from the OS cache through a mapping rather
                    // than a syscall and a copy each: with millions of tasks a
                    // batch get touches a page per task.
                    .pragma("mmap_size", "1073741824")
                    .read_only(true),
            )
            .await?;
        Ok(SqliteStore {
            writer: Writer::start(writer)?,
            reader,
        })
    }
}

fn check_schema(conn: &Connection) -> StoreResult<()> {
    let have: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap_or(None);
    crate::require_schema(have, MIGRATIONS)
}

fn run_migrations(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let done: Option<i64> = conn
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            continue;
        }
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; \
             INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, strftime('%s','now')); \
             COMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!(version, "applied SQLite migration");
    }
    Ok(())
}

/// Record an event, and queue its callback when the task has a URL: in the
/// caller's transaction, so neither exists without the other.
fn insert_event(
    conn: &Connection,
    task: &Task,
    state: TaskState,
    detail: Option<&str>,
    now: Millis,
) -> StoreResult<()> {
    let event_id = Uuid::now_v7();
    conn.prepare_cached(
        "INSERT INTO task_events (id, task_id, seq, state, detail, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        event_id.as_bytes(),
        task.id.as_bytes(),
        task.event_seq,
        state.as_str(),
        detail,
        now
    ])?;
    if let Some(url) = &task.callback_url {
        // After a 410 from this URL, later events are recorded but not sent.
        let gone: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE task_id = ?1 AND url = ?2 AND state = 'gone')",
            )?
            .query_row(params![task.id.as_bytes(), url], |r| r.get(0))?;
        let (delivery_state, next) = if gone {
            ("gone", None)
        } else {
            ("pending", Some(now))
        };
        conn.prepare_cached(
            "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
             state, next_attempt_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?4, ?4)",
        )?
        .execute(params![
            Uuid::now_v7().as_bytes(),
            event_id.as_bytes(),
            state.as_str(),
            now,
            task.id.as_bytes(),
            task.owner.as_bytes(),
            task.event_seq,
            url,
            delivery_state,
            next
        ])?;
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
                let task = conn
                    .prepare_cached(&format!(
                        "INSERT INTO tasks (id, owner, dialect, kind, model, request, callback_url, \
                         external_id, channel, state, created_at, updated_at, deadline_at, version, \
                         event_seq, due_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?10, ?11, 1, 1, ?10) \
                         RETURNING {TASK_COLUMNS}"
                    ))?
                    .query_and_then(
                        params![
                            id.as_bytes(),
                            owner.as_bytes(),
                            new.dialect.as_str(),
                            new.kind.as_str(),
                            new.model,
                            request,
                            new.callback_url,
                            new.external_id,
                            new.channel,
                            now,
                            deadline_at
                        ],
                        |r| row::task(r),
                    )?
                    .next()
                    .ok_or_else(|| StoreError::Backend("INSERT returned no row".into()))??;
                insert_event(conn, &task, TaskState::Pending, None, now)?;
                Ok(task)
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
        .map(row::task)
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
            .map(row::task)
            .collect()
    }

    async fn get_owned_tasks(&self, owner: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; ids.len()].join(",");
        // Placeholders only; `+owner` keeps the planner on the primary key.
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({marks}) AND +owner = ?");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id.as_bytes().as_slice());
        }
        q.bind(owner.as_bytes().as_slice())
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(row::task)
            .collect()
    }

    async fn page_tasks(
        &self,
        owner: Uuid,
        filter: &TaskFilter,
        limit: u32,
    ) -> StoreResult<Vec<Task>> {
        let sql = crate::page_sql(TASK_COLUMNS, filter, '?');
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(owner.as_bytes().as_slice());
        if let Some(st) = filter.state {
            q = q.bind(st.as_str());
        }
        if let Some(m) = &filter.model {
            q = q.bind(m.as_str());
        }
        if let Some(t) = filter.created_after {
            q = q.bind(t);
        }
        if let Some((at, id)) = filter.before {
            q = q.bind(at).bind(id.as_bytes().to_vec());
        }
        q.bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(row::task)
            .collect()
    }

    async fn forget_external_id(
        &self,
        owner: Uuid,
        id: Uuid,
        external_id: &str,
    ) -> StoreResult<bool> {
        let external_id = external_id.to_string();
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE tasks SET external_id = NULL WHERE id = ?1 AND owner = ?2 AND external_id = ?3",
                    params![id.as_bytes(), owner.as_bytes(), external_id],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn delete_task(&self, owner: Uuid, id: Uuid) -> StoreResult<bool> {
        self.writer
            .write(move |conn| {
                let (id, owner) = (id.as_bytes().to_vec(), owner.as_bytes().to_vec());
                let owned: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1 AND owner = ?2)",
                    params![id, owner],
                    |r| r.get(0),
                )?;
                if !owned {
                    return Ok(false);
                }
                conn.execute(
                    "DELETE FROM delivery_attempts WHERE delivery_id IN \
                     (SELECT id FROM deliveries WHERE task_id = ?1)",
                    params![id],
                )?;
                conn.execute("DELETE FROM deliveries WHERE task_id = ?1", params![id])?;
                conn.execute("DELETE FROM task_events WHERE task_id = ?1", params![id])?;
                conn.execute("DELETE FROM tasks WHERE id = ?1", params![id])?;
                Ok(true)
            })
            .await
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
        .map(row::task)
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
        .map(row::task)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok((tasks, u64::try_from(total).unwrap_or_default()))
    }

    async fn load_task(&self, id: Uuid) -> StoreResult<Option<Task>> {
        sqlx::query(sql!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"))
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(row::task)
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
                conn.prepare_cached(&format!(
                    "UPDATE tasks SET lease_owner = ?1, lease_until = ?2 WHERE id IN ( \
                       SELECT id FROM tasks WHERE due_at IS NOT NULL AND due_at <= ?3 \
                       AND (lease_until IS NULL OR lease_until <= ?3) ORDER BY due_at LIMIT ?4) \
                     RETURNING {TASK_COLUMNS}"
                ))?
                .query_and_then(params![worker, now + lease_ms, now, limit], |r| {
                    row::task(r)
                })?
                .collect()
            })
            .await
    }

    async fn release_leases(&self, worker: &str) -> StoreResult<u64> {
        let worker = worker.to_string();
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1",
                    [worker],
                )?;
                Ok(n as u64)
            })
            .await
    }

    async fn extend_lease(&self, id: Uuid, worker: &str, until: Millis) -> StoreResult<bool> {
        let worker = worker.to_string();
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE tasks SET lease_until = ?3 WHERE id = ?1 AND lease_owner = ?2",
                    params![id.as_bytes(), worker, until],
                )?;
                Ok(n == 1)
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
        let artifacts = update.artifacts.as_ref().map(json).transpose()?;
        let update = update.clone();
        self.writer
            .write(move |conn| {
                let task = conn
                    .prepare_cached(&format!(
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
                    ))?
                    .query_and_then(
                        params![
                            update.state.map(TaskState::as_str),
                            update.channel,
                            update.upstream_ref,
                            update.failure_reason,
                            update.progress,
                            artifacts,
                            i64::from(update.bump_attempts),
                            now,
                            update.next_due_at,
                            id.as_bytes(),
                            expected_version
                        ],
                        |r| row::task(r),
                    )?
                    .next()
                    .transpose()?;
                if let (Some(task), Some(st)) = (&task, update.state) {
                    insert_event(conn, task, st, update.detail.as_deref(), now)?;
                }
                Ok(task)
            })
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
        .map(row::event)
        .collect()
    }

    async fn open_task_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE due_at IS NOT NULL")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn in_flight_by_channel(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT channel, count(*) FROM tasks WHERE due_at IS NOT NULL AND state = 'processing' \
             AND channel IS NOT NULL GROUP BY channel",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(c, n)| (c, u64::try_from(n).unwrap_or_default()))
            .collect())
    }

    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        self.writer
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "UPDATE deliveries SET lease_until = ?1 WHERE id IN ( \
                       SELECT d.id FROM deliveries d \
                       WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= ?2 \
                       AND (d.lease_until IS NULL OR d.lease_until <= ?2) \
                       AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id \
                           AND p.url = d.url AND p.seq < d.seq AND p.state = 'pending') \
                       ORDER BY d.next_attempt_at LIMIT ?3) \
                     RETURNING {DELIVERY_COLUMNS}"
                ))?
                .query_and_then(params![now + lease_ms, now, limit], |r| row::delivery(r))?
                .collect()
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
            .write(move |conn| {
                let found = conn.prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, state = ?1, next_attempt_at = ?2, \
                     lease_until = NULL, last_status = ?3, last_error = ?4, updated_at = ?5 WHERE id = ?6",
                )?
                .execute(params![
                    state,
                    next,
                    attempt.status,
                    attempt.error,
                    now,
                    delivery.id.as_bytes()
                ])?;
                if found == 0 {
                    // Deleted with its task meanwhile: nothing left to record.
                    return Ok(());
                }
                conn.prepare_cached(
                    "INSERT INTO delivery_attempts (id, delivery_id, attempt, at, status, error, \
                     latency_ms, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    Uuid::now_v7().as_bytes(),
                    delivery.id.as_bytes(),
                    attempt.attempt,
                    attempt.at,
                    attempt.status,
                    attempt.error,
                    attempt.latency_ms,
                    attempt.next_attempt_at
                ])?;
                if outcome == DeliveryOutcome::Gone {
                    conn.prepare_cached(
                        "UPDATE deliveries SET state = 'gone', next_attempt_at = NULL, updated_at = ?1 \
                         WHERE task_id = ?2 AND url = ?3 AND state = 'pending'",
                    )?
                    .execute(params![now, delivery.task_id.as_bytes(), delivery.url])?;
                }
                Ok(())
            })
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
        .map(row::delivery)
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
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
                       state, attempts, next_attempt_at, created_at, updated_at) \
                     SELECT ?1, event_id, event_state, event_at, task_id, owner, seq, url, 'pending', 0, ?2, ?2, ?2 \
                     FROM deliveries WHERE id = ?3 AND task_id = ?4 \
                     RETURNING {DELIVERY_COLUMNS}"
                ))?
                .query_and_then(
                    params![
                        Uuid::now_v7().as_bytes(),
                        now,
                        delivery_id.as_bytes(),
                        task_id.as_bytes()
                    ],
                    |r| row::delivery(r),
                )?
                .next()
                .transpose()
            })
            .await
    }

    async fn get_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE id = ?1")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(row::key)
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
                let n = conn.execute(
                    "UPDATE api_keys SET previous_webhook_secret = webhook_secret, \
                     previous_secret_until = ?1, webhook_secret = ?2 WHERE id = ?3",
                    params![overlap_until, secret, id.as_bytes()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn create_key(&self, key: &ApiKey) -> StoreResult<()> {
        let key = key.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO api_keys (id, name, hash, admin, created_at, revoked_at, webhook_secret) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        key.id.as_bytes(),
                        key.name,
                        key.hash,
                        key.admin,
                        key.created_at,
                        key.revoked_at,
                        key.webhook_secret
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE hash = ?")
            .bind(hash.as_slice())
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(row::key)
            .transpose()
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(row::key)
            .collect()
    }

    async fn revoke_key(&self, id: Uuid, now: Millis) -> StoreResult<bool> {
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                    params![now, id.as_bytes()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.reader)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn list_channels(&self) -> StoreResult<Vec<ChannelSpec>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, spec FROM channels ORDER BY name")
                .fetch_all(&self.reader)
                .await?;
        rows.iter()
            .map(|(name, spec)| crate::channel_from_json(name, spec))
            .collect()
    }

    async fn create_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let (name, json) = (spec.name.clone(), crate::channel_json(spec)?);
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "INSERT INTO channels (name, spec, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                     ON CONFLICT (name) DO NOTHING",
                    params![name, json, now],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn update_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let (name, json) = (spec.name.clone(), crate::channel_json(spec)?);
        self.writer
            .write(move |conn| {
                let n = conn.execute(
                    "UPDATE channels SET spec = ?1, updated_at = ?2 WHERE name = ?3",
                    params![json, now, name],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn gateway_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        let (name, fresh) = (name.to_string(), crate::random_secret());
        // One writer: the first insert wins, and everyone reads it back.
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO gateway_secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                    params![name, fresh],
                )?;
                Ok(conn.query_row(
                    "SELECT value FROM gateway_secrets WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )?)
            })
            .await
    }
}
