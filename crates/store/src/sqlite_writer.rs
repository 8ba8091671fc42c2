//! SQLite's one writer, with group commit. Every write is a job sent to a
//! thread that owns the write connection; it takes whatever jobs are
//! waiting, runs them in one transaction (each inside its own savepoint, so
//! one job's failure undoes only that job) and commits once. Submits that
//! arrive together thus share one fsync instead of queueing for one each,
//! and no caller hears "done" before its write is on disk.
//!
//! The thread runs the statements itself (rusqlite, synchronous): an async
//! driver would hand every statement to its own thread and back, a wake-up
//! each, which measured as the bottleneck once fsyncs were shared.

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, StoreResult};

/// Told whether the transaction holding the job committed.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A job: runs its statements, says whether they succeeded, and how to
/// answer its caller once the commit is known.
type Job = Box<dyn FnOnce(&mut Connection) -> (bool, Reply) + Send>;

/// Jobs waiting beyond this make callers wait to enqueue (backpressure).
const QUEUE: usize = 8192;
/// One transaction holds at most this many jobs, so a commit stays short.
const MAX_BATCH: usize = 1024;

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Hand `conn` to the writer thread; it stops when the writer is dropped.
    pub(crate) fn start(conn: Connection) -> StoreResult<Writer> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Backend(format!("starting the SQLite writer: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Run `f` in the next group transaction; its result is returned once
    /// that transaction has committed (or the error if it did not).
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let answer = match committed {
                    Ok(()) => result,
                    Err(e) => Err(result.err().unwrap_or(StoreError::Backend(e))),
                };
                let _ = tx.send(answer);
            });
            (ok, reply)
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("the SQLite writer dropped a write".into()))?
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (replies, outcome) = commit_batch(&mut conn, batch.drain(..));
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

/// Run a statement without rows, prepared once: a savepoint per job is
/// parsed once per connection, not once per job.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// One transaction for the whole batch. A failing job is rolled back to
/// its savepoint; if even that fails the whole batch is rolled back and
/// every caller gets an error. (A job that never ran is dropped with its
/// reply channel, which its caller also sees as an error.)
fn commit_batch(
    conn: &mut Connection,
    batch: impl Iterator<Item = Job>,
) -> (Vec<Reply>, Result<(), String>) {
    let mut replies = Vec::new();
    let mut broken = conn.execute_batch("BEGIN IMMEDIATE").err();
    for job in batch {
        if broken.is_some() {
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            broken = Some(e);
            continue;
        }
        let (ok, reply) = job(conn);
        replies.push(reply);
        let end = if ok {
            exec(conn, "RELEASE job")
        } else {
            exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
        };
        broken = end.err();
    }
    let outcome = match broken {
        None => conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
        Some(e) => Err(e.to_string()),
    };
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
        tracing::error!(error = ?outcome, "SQLite group commit failed; its writes were rolled back");
    }
    (replies, outcome)
}
