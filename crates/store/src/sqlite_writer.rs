//! SQLite's one writer, with group commit. Every write is a job sent to a
//! task that owns the write connection; it takes whatever jobs are waiting,
//! runs them in one transaction (each inside its own savepoint, so one
//! job's failure undoes only that job) and commits once. Submits that
//! arrive together thus share one fsync instead of queueing for one each,
//! and no caller hears "done" before its write is on disk.

use std::future::Future;
use std::pin::Pin;

use sqlx::{Connection, Executor, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, StoreResult};

pub(crate) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Told whether the transaction holding the job committed.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A job: runs its statements, says whether they succeeded, and how to
/// answer its caller once the commit is known.
type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, (bool, Reply)> + Send>;

/// Jobs waiting beyond this make callers wait to enqueue (backpressure).
const QUEUE: usize = 8192;
/// One transaction holds at most this many jobs, so a commit stays short.
const MAX_BATCH: usize = 1024;

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub(crate) fn start(conn: SqliteConnection) -> Writer {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(conn, rx));
        Writer { jobs }
    }

    /// Run `f` in the next group transaction; its result is returned once
    /// that transaction has committed (or the error if it did not).
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = higher_ranked(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let reply: Reply = Box::new(move |committed: Result<(), String>| {
                    let answer = match committed {
                        Ok(()) => result,
                        Err(e) => Err(result.err().unwrap_or(StoreError::Backend(e))),
                    };
                    let _ = tx.send(answer);
                });
                (ok, reply)
            })
        });
        self.jobs
            .send(Box::new(job))
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the SQLite writer dropped a write".into()))?
    }
}

/// Pins the closure's signature to the higher-ranked one a [`Job`] needs.
fn higher_ranked<F>(f: F) -> F
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, (bool, Reply)> + Send + 'static,
{
    f
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (replies, outcome) = commit_batch(&mut conn, batch.drain(..)).await;
        for reply in replies {
            reply(outcome.clone());
        }
    }
    let _ = conn.close().await;
}

/// One transaction for the whole batch. A failing job is rolled back to
/// its savepoint; if even that fails the whole batch is rolled back and
/// every caller gets an error. (A job that never ran is dropped with its
/// reply channel, which its caller also sees as an error.)
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: impl Iterator<Item = Job>,
) -> (Vec<Reply>, Result<(), String>) {
    let mut replies = Vec::new();
    let mut broken = None;
    // Closing one job's savepoint and opening the next's is one statement
    // batch: each round trip to SQLite's thread costs a wake-up.
    let mut open = "BEGIN IMMEDIATE; SAVEPOINT job";
    let mut close = "RELEASE job; COMMIT";
    for job in batch {
        if broken.is_some() {
            continue;
        }
        if let Err(e) = conn.execute(open).await {
            broken = Some(e.to_string());
            continue;
        }
        let (ok, reply) = job(conn).await;
        replies.push(reply);
        (open, close) = if ok {
            ("RELEASE job; SAVEPOINT job", "RELEASE job; COMMIT")
        } else {
            (
                "ROLLBACK TO job; RELEASE job; SAVEPOINT job",
                "ROLLBACK TO job; RELEASE job; COMMIT",
            )
        };
    }
    let outcome = match broken {
        None => conn
            .execute(close)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Some(e) => Err(e),
    };
    if outcome.is_err() {
        let _ = conn.execute("ROLLBACK").await;
        tracing::error!(error = ?outcome, "SQLite group commit failed; its writes were rolled back");
    }
    (replies, outcome)
}
