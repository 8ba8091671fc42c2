//! The scale-out backend: many gengate instances on one PostgreSQL database.
//! Claims use `FOR UPDATE SKIP LOCKED`, so instances never block on each
//! other's work; new tasks `NOTIFY` idle instances, with polling as the
//! fallback when a notification is missed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gengate_core::{
    ApiKey, ChannelSpec, Delivery, DeliveryAttempt, DeliveryOutcome, Dialect, Millis, NewTask,
    Task, TaskEvent, TaskState, TaskUpdate,
};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{StoreError, StoreResult, TaskFilter, TaskStore, row};

/// Migrations, in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../migrations/postgres/0002_callbacks.sql")),
    (3, include_str!("../migrations/postgres/0003_channels.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_task_listing.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_listing_by_dialect.sql"),
    ),
];

/// The channel new work is announced on.
const WORK_CHANNEL: &str = "gengate_work";

/// Serialises migrations when several instances start at once.
const MIGRATION_LOCK: i64 = 0x0067_656e_6761_7465; // "gengate"

const DELIVERY_COLUMNS: &str = "id, event_id, event_state, event_at, task_id, owner, seq, url, \
    state, attempts, next_attempt_at, last_status, last_error, created_at";

const TASK_COLUMNS: &str = "id, owner, dialect, kind, model, request::text AS request, callback_url, \
    external_id, channel, upstream_ref, attempts, state, failure_reason, progress, \
    artifacts::text AS artifacts, created_at, updated_at, started_at, finished_at, deadline_at, \
    version, event_seq";

/// SQL built from constants (column lists), never from input.
macro_rules! sql {
    ($($t:tt)*) => { AssertSqlSafe(format!($($t)*)) };
}

pub struct PgStore {
    pool: PgPool,
    work: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connect; run pending migrations when `migrate`, else refuse a schema
    /// that is behind this build.
    pub async fn connect(url: &str, migrate: bool) -> StoreResult<PgStore> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        if migrate {
            run_migrations(&pool).await?;
        } else {
            check_schema(&pool).await?;
        }
        let work = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), work.clone()));
        Ok(PgStore {
            pool,
            work,
            listener,
        })
    }
}

/// Relay NOTIFYs to the engine. On any trouble, wake it anyway (it may have
/// missed one) and reconnect after a pause.
async fn listen(pool: PgPool, work: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut l) => {
                if let Err(e) = l.listen(WORK_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed");
                } else {
                    loop {
                        match l.recv().await {
                            Ok(_) => work.notify_one(),
                            Err(e) => {
                                tracing::warn!(error = %e, "LISTEN connection lost");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "LISTEN connection failed"),
        }
        work.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn run_migrations(pool: &PgPool) -> StoreResult<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = async {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .execute(&mut *conn)
        .await?;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied PostgreSQL migration");
        }
        Ok::<(), StoreError>(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    result
}

async fn check_schema(pool: &PgPool) -> StoreResult<()> {
    let have: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
        .fetch_one(pool)
        .await
        .unwrap_or(None);
    crate::require_schema(have, MIGRATIONS)
}

/// Record an event, and queue its callback when the task has a URL: in the
/// caller's transaction, so neither exists without the other.
async fn insert_event(
    tx: &mut Transaction<'_, Postgres>,
    task: &Task,
    state: TaskState,
    detail: Option<&str>,
    now: Millis,
) -> StoreResult<()> {
    let event_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO task_events (id, task_id, seq, state, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event_id)
    .bind(task.id)
    .bind(task.event_seq)
    .bind(state.as_str())
    .bind(detail)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if let Some(url) = &task.callback_url {
        // After a 410 from this URL, later events are recorded but not sent.
        let gone: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deliveries WHERE task_id = $1 AND url = $2 AND state = 'gone')",
        )
        .bind(task.id)
        .bind(url)
        .fetch_one(&mut **tx)
        .await?;
        let (delivery_state, next) = if gone {
            ("gone", None)
        } else {
            ("pending", Some(now))
        };
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
             state, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(Uuid::now_v7())
        .bind(event_id)
        .bind(state.as_str())
        .bind(now)
        .bind(task.id)
        .bind(task.owner)
        .bind(task.event_seq)
        .bind(url)
        .bind(delivery_state)
        .bind(next)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

#[async_trait]
impl TaskStore for PgStore {
    async fn create_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        now: Millis,
        deadline_at: Millis,
    ) -> StoreResult<Task> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sql!(
            "INSERT INTO tasks (id, owner, dialect, kind, model, request, callback_url, external_id, \
             channel, state, created_at, updated_at, deadline_at, version, event_seq, due_at) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, 'pending', $10, $10, $11, 1, 1, $10) \
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(id)
        .bind(owner)
        .bind(new.dialect.as_str())
        .bind(new.kind.as_str())
        .bind(&new.model)
        .bind(json(&new.request)?)
        .bind(&new.callback_url)
        .bind(&new.external_id)
        .bind(&new.channel)
        .bind(now)
        .bind(deadline_at)
        .fetch_one(&mut *tx)
        .await?;
        let task = row::task(&row)?;
        insert_event(&mut tx, &task, TaskState::Pending, None, now).await?;
        // Delivered at commit, to every instance listening.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(task)
    }

    async fn get_task(&self, owner: Uuid, id: Uuid) -> StoreResult<Option<Task>> {
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND owner = $2"
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(&self.pool)
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
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) AND owner = $2 AND dialect = $3"
        ))
        .bind(ids)
        .bind(owner)
        .bind(dialect.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::task)
        .collect()
    }

    async fn get_owned_tasks(&self, owner: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Task>> {
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) AND owner = $2"
        ))
        .bind(ids)
        .bind(owner)
        .fetch_all(&self.pool)
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
        let sql = crate::page_sql(TASK_COLUMNS, filter, '$');
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(owner);
        if let Some(st) = filter.state {
            q = q.bind(st.as_str());
        }
        if let Some(m) = &filter.model {
            q = q.bind(m.clone());
        }
        if let Some(t) = filter.created_after {
            q = q.bind(t);
        }
        if let Some((at, id)) = filter.before {
            q = q.bind(at).bind(id);
        }
        q.bind(i64::from(limit))
            .fetch_all(&self.pool)
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
        let done = sqlx::query(
            "UPDATE tasks SET external_id = NULL WHERE id = $1 AND owner = $2 AND external_id = $3",
        )
        .bind(id)
        .bind(owner)
        .bind(external_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_task(&self, owner: Uuid, id: Uuid) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Locks the row: a concurrent engine update waits, then finds nothing.
        let owned = sqlx::query("SELECT 1 FROM tasks WHERE id = $1 AND owner = $2 FOR UPDATE")
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !owned {
            return Ok(false);
        }
        // Waits for a delivery attempt being recorded; one recorded later
        // finds its delivery gone.
        sqlx::query("SELECT id FROM deliveries WHERE task_id = $1 FOR UPDATE")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for sql in [
            "DELETE FROM delivery_attempts WHERE delivery_id IN \
             (SELECT id FROM deliveries WHERE task_id = $1)",
            "DELETE FROM deliveries WHERE task_id = $1",
            "DELETE FROM task_events WHERE task_id = $1",
            "DELETE FROM tasks WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn get_task_by_external_id(
        &self,
        owner: Uuid,
        external_id: &str,
    ) -> StoreResult<Option<Task>> {
        sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE owner = $1 AND external_id = $2"
        ))
        .bind(owner)
        .bind(external_id)
        .fetch_optional(&self.pool)
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
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE owner = $1 AND dialect = $2")
                .bind(owner)
                .bind(dialect.as_str())
                .fetch_one(&self.pool)
                .await?;
        let tasks = sqlx::query(sql!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE owner = $1 AND dialect = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(owner)
        .bind(dialect.as_str())
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::task)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok((tasks, u64::try_from(total).unwrap_or_default()))
    }

    async fn load_task(&self, id: Uuid) -> StoreResult<Option<Task>> {
        sqlx::query(sql!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
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
        sqlx::query(sql!(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
               SELECT id FROM tasks WHERE due_at IS NOT NULL AND due_at <= $3 \
               AND (lease_until IS NULL OR lease_until <= $3) ORDER BY due_at LIMIT $4 \
               FOR UPDATE SKIP LOCKED) \
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::task)
        .collect()
    }

    async fn release_leases(&self, worker: &str) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1",
        )
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn extend_lease(&self, id: Uuid, worker: &str, until: Millis) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE tasks SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
                .bind(id)
                .bind(worker)
                .bind(until)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        Ok(
            sqlx::query_scalar("SELECT min(due_at) FROM tasks WHERE due_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn wait_for_work(&self) {
        self.work.notified().await;
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(sql!(
            "UPDATE tasks SET \
               state = COALESCE($1, state), \
               channel = COALESCE($2, channel), \
               upstream_ref = COALESCE($3, upstream_ref), \
               failure_reason = COALESCE($4, failure_reason), \
               progress = COALESCE($5, progress), \
               artifacts = COALESCE($6::jsonb, artifacts), \
               attempts = attempts + $7, \
               updated_at = CASE WHEN $1 IS NULL AND $5 IS NULL THEN updated_at ELSE $8 END, \
               started_at = CASE WHEN $1 = 'processing' AND started_at IS NULL THEN $8 ELSE started_at END, \
               finished_at = CASE WHEN $1 IN ('completed', 'failed', 'canceled') THEN $8 ELSE finished_at END, \
               due_at = CASE WHEN $1 IN ('completed', 'failed', 'canceled') THEN NULL ELSE COALESCE($9, due_at) END, \
               version = version + 1, \
               event_seq = event_seq + CASE WHEN $1 IS NULL THEN 0 ELSE 1 END, \
               lease_owner = NULL, lease_until = NULL \
             WHERE id = $10 AND version = $11 AND state NOT IN ('completed', 'failed', 'canceled') \
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
        .bind(id)
        .bind(expected_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let task = row::task(&row)?;
        if let Some(st) = update.state {
            insert_event(&mut tx, &task, st, update.detail.as_deref(), now).await?;
        }
        tx.commit().await?;
        Ok(Some(task))
    }

    async fn task_events(&self, id: Uuid) -> StoreResult<Vec<TaskEvent>> {
        sqlx::query(
            "SELECT id, task_id, seq, state, detail, created_at FROM task_events \
             WHERE task_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::event)
        .collect()
    }

    async fn open_task_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE due_at IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn in_flight_by_channel(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT channel, count(*) FROM tasks WHERE due_at IS NOT NULL AND state = 'processing' \
             AND channel IS NOT NULL GROUP BY channel",
        )
        .fetch_all(&self.pool)
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
        sqlx::query(sql!(
            "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
               SELECT d.id FROM deliveries d \
               WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $2 \
               AND (d.lease_until IS NULL OR d.lease_until <= $2) \
               AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id \
                   AND p.url = d.url AND p.seq < d.seq AND p.state = 'pending') \
               ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::delivery)
        .collect()
    }

    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        attempt: &DeliveryAttempt,
        outcome: DeliveryOutcome,
        now: Millis,
    ) -> StoreResult<()> {
        let (state, next) = row::outcome_columns(outcome);
        let mut tx = self.pool.begin().await?;
        let found = sqlx::query(
            "UPDATE deliveries SET attempts = attempts + 1, state = $1, next_attempt_at = $2, \
             lease_until = NULL, last_status = $3, last_error = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(state)
        .bind(next)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(now)
        .bind(delivery.id)
        .execute(&mut *tx)
        .await?;
        if found.rows_affected() == 0 {
            // Deleted with its task meanwhile: nothing left to record.
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO delivery_attempts (id, delivery_id, attempt, at, status, error, latency_ms, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(Uuid::now_v7())
        .bind(delivery.id)
        .bind(i64::from(attempt.attempt))
        .bind(attempt.at)
        .bind(attempt.status.map(i64::from))
        .bind(&attempt.error)
        .bind(attempt.latency_ms)
        .bind(attempt.next_attempt_at)
        .execute(&mut *tx)
        .await?;
        if outcome == DeliveryOutcome::Gone {
            sqlx::query(
                "UPDATE deliveries SET state = 'gone', next_attempt_at = NULL, updated_at = $1 \
                 WHERE task_id = $2 AND url = $3 AND state = 'pending'",
            )
            .bind(now)
            .bind(delivery.task_id)
            .bind(&delivery.url)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn task_deliveries(
        &self,
        task_id: Uuid,
    ) -> StoreResult<Vec<(Delivery, Vec<DeliveryAttempt>)>> {
        let deliveries = sqlx::query(sql!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_id = $1 ORDER BY seq, created_at"
        ))
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row::delivery)
        .collect::<StoreResult<Vec<_>>>()?;
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let attempts = sqlx::query(
                "SELECT attempt, at, status, error, latency_ms, next_attempt_at FROM delivery_attempts \
                 WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(d.id)
            .fetch_all(&self.pool)
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
        sqlx::query(sql!(
            "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, seq, url, \
               state, attempts, next_attempt_at, created_at, updated_at) \
             SELECT $1, event_id, event_state, event_at, task_id, owner, seq, url, 'pending', 0, $2, $2, $2 \
             FROM deliveries WHERE id = $3 AND task_id = $4 \
             RETURNING {DELIVERY_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(now)
        .bind(delivery_id)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(row::delivery)
        .transpose()
    }

    async fn get_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let done = sqlx::query(
            "UPDATE api_keys SET previous_webhook_secret = webhook_secret, \
             previous_secret_until = $1, webhook_secret = $2 WHERE id = $3",
        )
        .bind(overlap_until)
        .bind(secret)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, admin, created_at, revoked_at, webhook_secret) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id)
        .bind(&key.name)
        .bind(key.hash.as_slice())
        .bind(key.admin)
        .bind(key.created_at)
        .bind(key.revoked_at)
        .bind(&key.webhook_secret)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(row::key)
            .transpose()
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row::key)
            .collect()
    }

    async fn revoke_key(&self, id: Uuid, now: Millis) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    async fn list_channels(&self) -> StoreResult<Vec<ChannelSpec>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, spec FROM channels ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|(name, spec)| crate::channel_from_json(name, spec))
            .collect()
    }

    async fn create_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO channels (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&spec.name)
        .bind(crate::channel_json(spec)?)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE channels SET spec = $1, updated_at = $2 WHERE name = $3")
            .bind(crate::channel_json(spec)?)
            .bind(now)
            .bind(&spec.name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn gateway_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        // One statement: a concurrent first insert makes this one wait for
        // it, then update nothing and return the winner's value.
        Ok(sqlx::query_scalar(
            "INSERT INTO gateway_secrets (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = gateway_secrets.value RETURNING value",
        )
        .bind(name)
        .bind(crate::random_secret())
        .fetch_one(&self.pool)
        .await?)
    }
}
