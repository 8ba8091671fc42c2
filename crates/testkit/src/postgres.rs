//! A fresh PostgreSQL database per test on the machine's server
//! (`GENGATE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Outside CI an unreachable server skips the test with a visible message;
//! under `CI=true` it fails it.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const PREFIX: &str = "gengate_t_";

pub struct PgTestDb {
    /// URL of the new, empty database.
    pub url: String,
    server: String,
    name: String,
}

fn server_url() -> String {
    std::env::var("GENGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.into())
}

/// A connection to the test server; `None` (skip, said aloud) when it
/// cannot be reached outside CI, a failure under CI.
async fn connect_server(server: &str) -> Option<PgConnection> {
    match PgConnection::connect(server).await {
        Ok(c) => Some(c),
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "PostgreSQL at {server} is unreachable under CI: {e}"
            );
            eprintln!(
                "SKIPPED: PostgreSQL at {server} is unreachable ({e}); start it to run this test"
            );
            None
        }
    }
}

impl PgTestDb {
    /// Whether the test server answers (with the same skip/fail rule as `create`).
    pub async fn reachable() -> bool {
        connect_server(&server_url()).await.is_some()
    }

    pub async fn create() -> Option<PgTestDb> {
        let server = server_url();
        let mut conn = connect_server(&server).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        sweep_stale(&mut conn, now).await;
        let name = format!("{PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
        // Database names cannot be bound; this one is made of digits and hex only.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        Some(PgTestDb {
            url: format!("{base}/{name}"),
            server,
            name,
        })
    }

    pub async fn drop_db(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.server).await {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// Databases left by tests that panicked more than an hour ago.
async fn sweep_stale(conn: &mut PgConnection, now: u64) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'gengate\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let made: u64 = name
            .trim_start_matches(PREFIX)
            .split('_')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(made) > 3600 {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}
