//! The embedded backend: one SQLite file in WAL mode. Writes go through one
//! connection owned by the group-commit writer (SQLite has one writer
//! anyway); reads use a pool of their own. What is SQLite's own here: that
//! split, the pragmas, the migrations and the [`SqlDialect`].

use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params_from_iter};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::db::{Db, Param, RowMap, Rows, WriteFn, WriteFuture};
use crate::row::NamedRow;
use crate::rules::Backend;
use crate::sql::{Sql, SqlDialect};
use crate::sqlite_writer::Writer;
use crate::{StoreError, StoreResult};

/// Migrations, in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = crate::migrations!("sqlite");

/// How long a connection waits for another's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
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
            // A plan fixed at prepare time: otherwise SQLite plans a statement
            // whose LIMIT is a bound value with that value, and prepares it
            // again every time it runs (the claims of due tasks and of
            // deliveries, at every claim). No plan of ours depends on it.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
            // FULL: every commit is on disk before the client hears "accepted".
            // The writer reads pages through a mapping, as the readers do,
            // not a pread each (its page cache stays SQLite's default: every
            // commit walks it, so a larger one costs more than it saves). A
            // larger WAL between checkpoints (32 MiB) writes a hot page back
            // once per checkpoint rather than once every few commits. Each
            // job's savepoint keeps the pages it changes in a statement
            // journal: in memory, not a temporary file written page by page.
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA mmap_size = 1073741824; PRAGMA wal_autocheckpoint = 8192; \
                 PRAGMA temp_store = MEMORY;",
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

static DIALECT: SqlDialect = SqlDialect {
    mark: '?',
    json_in: "",
    json_out: "",
    row_locks: false,
    pk_hint: "+",
    ids: |first, n| {
        let marks: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
        format!("id IN ({})", marks.join(", "))
    },
};

static SQL: LazyLock<Sql> = LazyLock::new(|| Sql::new(&DIALECT));

/// Reads, through sqlx; an id list is bound one id per placeholder.
mod read {
    crate::db::sqlx_runner!(sqlx::Sqlite, |q, ids| ids
        .iter()
        .fold(q, |q, id| q.bind(*id)));
}

impl Backend for SqliteStore {
    type Tx = Connection;

    fn sql(&self) -> &'static Sql {
        &SQL
    }

    async fn read<T: Send>(&self, sql: &str, params: &[Param<'_>], map: RowMap<T>) -> Rows<T> {
        read::rows(&self.reader, sql, params, map).await
    }

    async fn transaction<T: Send + 'static>(
        &self,
        f: impl WriteFn<Connection, T>,
    ) -> StoreResult<T> {
        self.writer.write(move |conn| run_now(f(conn))).await
    }
}

/// Finish a write in the writer thread, without a hop to the runtime: each
/// of its steps is a synchronous rusqlite call (below) behind the future
/// the shared rules await, so it is done at the first poll.
fn run_now<T>(mut write: WriteFuture<'_, T>) -> StoreResult<T> {
    match write.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Backend(
            "a SQLite write waited on something other than SQLite".into(),
        )),
    }
}

impl Db for Connection {
    async fn rows<T: Send>(&mut self, sql: &str, params: &[Param<'_>], map: RowMap<T>) -> Rows<T> {
        let mut stmt = self.prepare_cached(sql)?;
        let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
        stmt.query_and_then(params_from_iter(params), |row| {
            map(&NamedRow { row, names: &names })
        })?
        .collect()
    }

    async fn exec(&mut self, sql: &str, params: &[Param<'_>]) -> StoreResult<u64> {
        let n = self
            .prepare_cached(sql)?
            .execute(params_from_iter(params))?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Id(v) | Param::OptId(Some(v)) => {
                ToSqlOutput::Borrowed(ValueRef::Blob(v.as_bytes()))
            }
            Param::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::Text(None) | Param::Int(None) | Param::OptId(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
            Param::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(*v)),
            Param::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Param::Flag(v) => ToSqlOutput::Owned(Value::Integer(i64::from(*v))),
            // Writes name ids one by one; only reads take a list.
            Param::Ids(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "an id list is bound through sqlx, one id per placeholder".into(),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use gengate_core::credits::EntryKind;
    use uuid::Uuid;

    use super::*;
    use crate::TaskStore;

    /// A database that 0006 wrote task charges and refunds into the ledger
    /// table: after 0007 the same entries are listed, none twice, and every
    /// balance still equals its entries.
    #[tokio::test]
    async fn migration_7_moves_task_entries_onto_their_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .unwrap();
        for (version, sql) in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [version])
                .unwrap();
        }
        let (key, refunded, kept, refund) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let b = |u: Uuid| u.as_bytes().to_vec();
        conn.execute(
            "INSERT INTO api_keys (id, name, hash, admin, created_at, unlimited, balance) \
             VALUES (?1, 'old', ?2, 0, 1, 0, 995)",
            rusqlite::params![b(key), vec![7u8; 32]],
        )
        .unwrap();
        for (id, state, charged, back, finished) in [
            (refunded, "failed", 17, 17, Some(50)),
            (kept, "pending", 5, 0, None),
        ] {
            conn.execute(
                "INSERT INTO tasks (id, owner, dialect, kind, model, request, state, created_at, \
                 updated_at, finished_at, deadline_at, version, event_seq, charged, refunded) \
                 VALUES (?1, ?2, 'luma', 'image', 'm', '{}', ?3, 10, 10, ?4, 99, 1, 1, ?5, ?6)",
                rusqlite::params![b(id), b(key), state, finished, charged, back],
            )
            .unwrap();
        }
        let entries = [
            (
                Uuid::now_v7(),
                1,
                "grant",
                1000,
                None,
                Some("initial credits"),
            ),
            (refunded, 10, "charge", -17, Some(refunded), None),
            (kept, 10, "charge", -5, Some(kept), None),
            (refund, 50, "refund", 17, Some(refunded), Some("failed")),
        ];
        for (id, at, kind, amount, task, reason) in entries {
            conn.execute(
                "INSERT INTO ledger (id, key_id, at, kind, amount, task_id, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![b(id), b(key), at, kind, amount, task.map(b), reason],
            )
            .unwrap();
        }
        drop(conn);

        let store = SqliteStore::open(path.to_str().unwrap(), true)
            .await
            .unwrap();
        let listed = store.ledger(key, 10).await.unwrap();
        let seen: Vec<_> = listed
            .iter()
            .map(|e| (e.id, e.at, e.kind, e.amount, e.task_id, e.reason.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    refund,
                    50,
                    EntryKind::Refund,
                    17,
                    Some(refunded),
                    Some("failed")
                ),
                (kept, 10, EntryKind::Charge, -5, Some(kept), None),
                (refunded, 10, EntryKind::Charge, -17, Some(refunded), None),
                (
                    entries[0].0,
                    1,
                    EntryKind::Grant,
                    1000,
                    None,
                    Some("initial credits")
                ),
            ]
        );
        let totals = store.ledger_totals().await.unwrap();
        assert_eq!((totals[0].balance, totals[0].entries), (995, 995));
    }
}
