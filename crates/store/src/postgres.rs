//! The scale-out backend: many gengate instances on one PostgreSQL database.
//! Claims use `FOR UPDATE SKIP LOCKED`, so instances never block on each
//! other's work; new tasks `NOTIFY` idle instances, with polling as the
//! fallback when a notification is missed. What is PostgreSQL's own here:
//! the pool, LISTEN/NOTIFY, the migrations and the [`SqlDialect`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::db::{Db, Param, RowMap, Rows, WriteFn};
use crate::rules::Backend;
use crate::sql::{Sql, SqlDialect};
use crate::{StoreError, StoreResult};

/// Migrations, in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = crate::migrations!("postgres");

/// The channel new work is announced on.
const WORK_CHANNEL: &str = "gengate_work";

/// Serialises migrations when several instances start at once.
const MIGRATION_LOCK: i64 = 0x0067_656e_6761_7465; // "gengate"

pub struct PgStore {
    pool: PgPool,
    work: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// Asks [`announce`] for a NOTIFY.
    asked: Arc<Notify>,
    announcer: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.announcer.abort();
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
        let asked = Arc::new(Notify::new());
        let announcer = tokio::spawn(announce(pool.clone(), asked.clone()));
        Ok(PgStore {
            pool,
            work,
            listener,
            asked,
            announcer,
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

/// Send the NOTIFYs new tasks ask for, one at a time, each covering every
/// ask made while the one before was in flight. Not in the tasks' own
/// transactions: PostgreSQL serialises the commits of transactions that
/// NOTIFY (one lock on its notification queue, held through the commit's
/// flush), which made every accept wait for the one before.
async fn announce(pool: PgPool, asked: Arc<Notify>) {
    loop {
        asked.notified().await;
        let notify = sqlx::query("SELECT pg_notify($1, '')").bind(WORK_CHANNEL);
        if let Err(e) = notify.execute(&pool).await {
            // Polling covers a missed hint.
            tracing::warn!(error = %e, "NOTIFY failed");
        }
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

static DIALECT: SqlDialect = SqlDialect {
    mark: '$',
    json_in: "::jsonb",
    json_out: "::text",
    row_locks: true,
    pk_hint: "",
    ids: |first, _| format!("id = ANY(${first})"),
};

static SQL: LazyLock<Sql> = LazyLock::new(|| Sql::new(&DIALECT));

/// Statements through sqlx; an id list is bound as one array.
mod run {
    crate::db::sqlx_runner!(sqlx::Postgres, |q, ids| q.bind(ids));
}

impl Backend for PgStore {
    type Tx = PgConnection;

    fn sql(&self) -> &'static Sql {
        &SQL
    }

    async fn read<T: Send>(&self, sql: &str, params: &[Param<'_>], map: RowMap<T>) -> Rows<T> {
        run::rows(&self.pool, sql, params, map).await
    }

    async fn transaction<T: Send + 'static>(
        &self,
        f: impl WriteFn<PgConnection, T>,
    ) -> StoreResult<T> {
        let mut tx = self.pool.begin().await?;
        let out = f(&mut tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Autocommitted: no BEGIN and COMMIT round trips for one statement.
    async fn write<T: Send + 'static>(&self, f: impl WriteFn<PgConnection, T>) -> StoreResult<T> {
        f(&mut *self.pool.acquire().await?).await
    }

    fn announce_work(&self) {
        self.asked.notify_one();
    }

    async fn work_announced(&self) {
        self.work.notified().await;
    }
}

impl Db for PgConnection {
    async fn rows<T: Send>(&mut self, sql: &str, params: &[Param<'_>], map: RowMap<T>) -> Rows<T> {
        run::rows(self, sql, params, map).await
    }

    async fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        Ok(run::query(sql, params).execute(self).await?.rows_affected())
    }
}
