//! Running one statement, whatever the backend: the values a statement is
//! given ([`Param`]), the connection inside a write ([`Db`]) and the sqlx
//! runners both backends read with. The rules above this layer never see a
//! driver.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use crate::row::Columns;
use crate::{StoreError, StoreResult};

/// One value bound to a statement's placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Id(Uuid),
    OptId(Option<Uuid>),
    /// An id list: one array placeholder on PostgreSQL, one placeholder per
    /// id on SQLite (see [`crate::sql::SqlDialect::ids`]).
    Ids(&'a [Uuid]),
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bytes(&'a [u8]),
    Flag(bool),
}

impl From<Uuid> for Param<'_> {
    fn from(v: Uuid) -> Self {
        Param::Id(v)
    }
}

impl From<Option<Uuid>> for Param<'_> {
    fn from(v: Option<Uuid>) -> Self {
        Param::OptId(v)
    }
}

impl<'a> From<&'a [Uuid]> for Param<'a> {
    fn from(v: &'a [Uuid]) -> Self {
        Param::Ids(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::Text(v.as_deref())
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Bytes(v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Flag(v)
    }
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

/// A statement's values, in placeholder order.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::db::Param::from($v)),*] };
}
pub(crate) use params;

/// What a statement's rows were read into.
pub(crate) type Rows<T> = StoreResult<Vec<T>>;

/// Reads one row into a value.
pub(crate) type RowMap<T> = fn(&dyn Columns) -> StoreResult<T>;

/// What a write does on its connection; the backend decides where it runs
/// and commits it.
pub(crate) type WriteFuture<'c, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'c>>;

/// A write: its statements on the backend's connection `C`, as a future.
pub(crate) trait WriteFn<C, T>:
    for<'c> FnOnce(&'c mut C) -> WriteFuture<'c, T> + Send + 'static
{
}

impl<C, T, F> WriteFn<C, T> for F where
    F: for<'c> FnOnce(&'c mut C) -> WriteFuture<'c, T> + Send + 'static
{
}

/// A connection inside a write (SQLite's writer thread, a PostgreSQL
/// transaction or autocommitted statement).
pub(crate) trait Db: Send {
    /// Run `sql` and read every row it returns with `map`.
    fn rows<T: Send>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        map: RowMap<T>,
    ) -> impl Future<Output = Rows<T>> + Send;

    /// Run `sql`; how many rows it changed.
    fn exec(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// One backend's sqlx statements: `query` binds [`Param`]s (given how the
/// backend binds an id list), `rows` runs one on any executor (a pool or a
/// connection) and reads its rows.
macro_rules! sqlx_runner {
    ($db:ty, |$q:ident, $ids:ident| $bind_ids:expr) => {
        pub(crate) async fn rows<'e, T>(
            e: impl sqlx::Executor<'e, Database = $db>,
            sql: &str,
            params: &[$crate::db::Param<'_>],
            map: $crate::db::RowMap<T>,
        ) -> $crate::db::Rows<T> {
            query(sql, params)
                .fetch_all(e)
                .await?
                .iter()
                .map(|r| map(r))
                .collect()
        }

        pub(crate) fn query<'q>(
            sql: &str,
            params: &[$crate::db::Param<'_>],
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments> {
            use $crate::db::Param;
            // Statements are built from constants only; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for p in params {
                q = match *p {
                    Param::Id(v) => q.bind(v),
                    Param::OptId(v) => q.bind(v),
                    Param::Ids($ids) => {
                        let $q = q;
                        $bind_ids
                    }
                    Param::Text(v) => q.bind(v),
                    Param::Int(v) => q.bind(v),
                    Param::Bytes(v) => q.bind(v),
                    Param::Flag(v) => q.bind(v),
                };
            }
            q
        }
    };
}
pub(crate) use sqlx_runner;
