//! [`TaskStore`] written once, for every backend: what each operation
//! reads and writes, in which transaction, and the rules that do not depend
//! on the database (the outbox after a 410, compare-and-swap updates,
//! deleting a task with what hangs off it). A backend supplies only a
//! [`Backend`]: its statements ([`Sql`]) and how it runs them.

use std::future::Future;

use async_trait::async_trait;
use gengate_core::credits::{EntryKind, LedgerEntry, utc_day};
use gengate_core::{
    Admission, ApiKey, ChannelSpec, Credits, Delivery, DeliveryAttempt, DeliveryOutcome, Dialect,
    Millis, NewTask, Price, Refusal, Settlement, Task, TaskEvent, TaskState, TaskUpdate,
};
use uuid::Uuid;

use crate::db::{Db, Param, RowMap, Rows, WriteFn, params};
use crate::sql::{IdScope, Sql};
use crate::{
    DoomedFile, FileTotals, LedgerTotal, StoreError, StoreResult, TaskFilter, TaskStore,
    UsageQuery, UsageRow, row,
};

/// What a backend provides; [`TaskStore`] follows from it.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The connection a write runs on.
    type Tx: Db;

    fn sql(&self) -> &'static Sql;

    /// Run one read statement, outside any write.
    fn read<T: Send>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: RowMap<T>,
    ) -> impl Future<Output = Rows<T>> + Send;

    /// Run `f`'s statements in one transaction: all of them or none.
    fn transaction<T: Send + 'static>(
        &self,
        f: impl WriteFn<Self::Tx, T>,
    ) -> impl Future<Output = StoreResult<T>> + Send;

    /// Run `f`'s one statement, atomic by itself (a backend may spare it
    /// the begin and commit of a transaction).
    fn write<T: Send + 'static>(
        &self,
        f: impl WriteFn<Self::Tx, T>,
    ) -> impl Future<Output = StoreResult<T>> + Send {
        self.transaction(f)
    }

    /// After a new task no instance holds has committed: tell other
    /// instances sharing the database that there is work (a hint; a missed
    /// one is covered by polling). Nothing to tell by default.
    fn announce_work(&self) {}

    /// Resolves when another instance announced work; never by default.
    fn work_announced(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

fn json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Backend(e.to_string()))
}

fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// The row a statement always returns (an INSERT's RETURNING, an aggregate).
fn one<T>(rows: Vec<T>) -> StoreResult<T> {
    first(rows).ok_or_else(|| StoreError::Backend("a statement returned no row".into()))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

/// Record an event, and queue its callback when the task has a URL: in the
/// caller's transaction, so neither exists without the other.
async fn record_event(
    tx: &mut impl Db,
    sql: &Sql,
    task: &Task,
    state: TaskState,
    detail: Option<&str>,
    now: Millis,
) -> StoreResult<()> {
    let event_id = Uuid::now_v7();
    let event = params![
        event_id,
        task.id,
        task.event_seq,
        state.as_str(),
        detail,
        now
    ];
    tx.exec(&sql.insert_event, event).await?;
    let Some(url) = task.callback_url.as_deref() else {
        return Ok(());
    };
    let delivery = params![
        Uuid::now_v7(),
        event_id,
        state.as_str(),
        now,
        task.id,
        task.owner,
        task.event_seq,
        url
    ];
    tx.exec(&sql.insert_delivery, delivery).await?;
    Ok(())
}

/// Append a grant or adjustment to the ledger table and move the key's
/// balance by its amount: the two never apart. (A task's charge and refund
/// are entries on the task's row.) The key's new balance; `None` when there
/// is no such key.
async fn book(
    tx: &mut impl Db,
    sql: &Sql,
    key_id: Uuid,
    (kind, amount, reason): (EntryKind, Credits, &str),
    now: Millis,
) -> StoreResult<Option<Credits>> {
    let moved = params![amount, key_id];
    let balance = tx.rows(&sql.credit_key, moved, |r| r.int("balance"));
    let balance = first(balance.await?);
    if balance.is_some() {
        let entry = params![Uuid::now_v7(), key_id, now, kind.as_str(), amount, reason];
        tx.exec(&sql.insert_entry, entry).await?;
    }
    Ok(balance)
}

/// In a new task's transaction, before its row: take the charge from the
/// key's balance and the day's spend, checking both in the one statement
/// that locks the key's row (PostgreSQL), then the tasks in flight: so
/// instances accepting for the same key at once cannot race past a limit.
async fn admit(
    tx: &mut impl Db,
    sql: &Sql,
    owner: Uuid,
    admission: &Admission,
    now: Millis,
) -> StoreResult<()> {
    let needed = admission.charge.total();
    let (day, retry_after_secs) = utc_day(now);
    let charge = params![needed, owner, day, admission.daily_spend];
    let taken = tx
        .rows(&sql.charge_key, charge, |r| r.int("balance"))
        .await?;
    if taken.is_empty() {
        let of_key = params![owner, day];
        let spending = tx.rows(&sql.key_spending, of_key, |r| {
            Ok((r.int("balance")?, r.flag("unlimited")?, r.int("spent")?))
        });
        let (balance, unlimited, spent) = one(spending.await?)?;
        let refusal = match admission.daily_spend {
            Some(limit) if unlimited || balance >= needed => Refusal::DailySpend {
                limit,
                spent,
                needed,
                retry_after_secs,
            },
            _ => Refusal::Credits { balance, needed },
        };
        return Err(StoreError::Refused(refusal));
    }
    if let Some(limit) = admission.max_in_flight {
        let of_key = params![owner];
        let open = one(tx.rows(&sql.open_tasks_of, of_key, |r| r.int("n")).await?)?;
        if count(open) >= u64::from(limit) {
            return Err(StoreError::Refused(Refusal::InFlight { limit }));
        }
    }
    Ok(())
}

/// A new task and its first event, leased to a worker when `lease` names
/// one (see [`TaskStore::create_leased_task`]).
async fn insert_task<B: Backend>(
    b: &B,
    owner: Uuid,
    new: &NewTask,
    (now, deadline_at): (Millis, Millis),
    admission: &Admission,
    lease: Option<(String, Millis)>,
) -> StoreResult<Task> {
    let sql = b.sql();
    let (id, request, new) = (Uuid::now_v7(), json(&new.request)?, new.clone());
    let (admission, charge) = (*admission, admission.charge);
    // A leased task is its accepting engine's: no other instance may take it.
    let unheld = lease.is_none();
    let task = b
        .transaction(move |tx| {
            Box::pin(async move {
                if !admission.is_free() {
                    admit(tx, sql, owner, &admission, now).await?;
                }
                let values = params![
                    id,
                    owner,
                    new.dialect.as_str(),
                    new.kind.as_str(),
                    new.model.as_str(),
                    request.as_str(),
                    &new.callback_url,
                    &new.external_id,
                    &new.channel,
                    now,
                    deadline_at,
                    charge.total(),
                    charge.per_output,
                    i64::from(charge.outputs),
                    lease.as_ref().map(|l| l.0.as_str()),
                    lease.as_ref().map(|l| l.1)
                ];
                // The row is the charge's ledger entry; `admit` took it
                // from the balance.
                let task = one(tx.rows(&sql.insert_task, values, row::task).await?)?;
                record_event(tx, sql, &task, TaskState::Pending, None, now).await?;
                Ok(task)
            })
        })
        .await?;
    if unheld {
        b.announce_work();
    }
    Ok(task)
}

/// One compare-and-swap update of task `id` at `version`, with its event
/// and what a state change writes besides (see [`TaskStore::update_task`]).
async fn apply_update(
    tx: &mut impl Db,
    sql: &Sql,
    (id, version): (Uuid, i64),
    update: &TaskUpdate,
    artifacts: &Option<String>,
    now: Millis,
) -> StoreResult<Option<Task>> {
    let values = params![
        update.state.map(TaskState::as_str),
        &update.channel,
        &update.upstream_ref,
        &update.failure_reason,
        update.progress.map(i64::from),
        artifacts.as_deref(),
        i64::from(update.bump_attempts),
        now,
        update.next_due_at,
        id,
        version,
        update.refund,
        update.upstream_cost,
        (update.refund > 0).then(Uuid::now_v7),
        update.keep_until,
        &update.upstream_error
    ];
    let applied = first(tx.rows(&sql.update_task, values, row::task).await?);
    let (Some(task), Some(state)) = (&applied, update.state) else {
        return Ok(applied);
    };
    record_event(tx, sql, task, state, update.detail.as_deref(), now).await?;
    // Its files are kept as long as the task's results.
    if state == TaskState::Completed {
        let mut keys: Vec<&str> = task.artifacts.iter().map(|a| a.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            // Read first: tasks with the same result (the sandbox's, retries')
            // would each write, and on PostgreSQL queue for, its one row.
            let kept = params![key, task.keep_until];
            if !tx
                .rows(&sql.file_kept, kept, |r| r.int("size"))
                .await?
                .is_empty()
            {
                continue;
            }
            let kept = params![key, 0i64, task.keep_until];
            // Being deleted (its write's hold ran out): the task must not
            // complete pointing at it; stored again, it will.
            if tx.exec(&sql.keep_file, kept).await? == 0 {
                return Err(StoreError::Conflict(format!(
                    "{key} is being deleted (retention)"
                )));
            }
        }
    }
    // The row, which says it was refunded, is the refund's ledger entry:
    // only the key's balance is left to move.
    if update.refund > 0 {
        let day = utc_day(now).0;
        let back = params![update.refund, task.owner, day];
        tx.exec(&sql.refund_key, back).await?;
    }
    Ok(applied)
}

#[async_trait]
impl<B: Backend> TaskStore for B {
    async fn create_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        now: Millis,
        deadline_at: Millis,
        admission: &Admission,
    ) -> StoreResult<Task> {
        insert_task(self, owner, new, (now, deadline_at), admission, None).await
    }

    async fn create_leased_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        (now, deadline_at): (Millis, Millis),
        admission: &Admission,
        (worker, lease_until): (&str, Millis),
    ) -> StoreResult<Task> {
        let lease = Some((worker.to_string(), lease_until));
        insert_task(self, owner, new, (now, deadline_at), admission, lease).await
    }

    async fn get_task(&self, owner: Uuid, id: Uuid) -> StoreResult<Option<Task>> {
        let sql = &self.sql().task_of_owner;
        Ok(first(self.read(sql, params![id, owner], row::task).await?))
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
        let sql = self.sql().tasks_by_ids(ids.len(), IdScope::OwnerAndDialect);
        self.read(&sql, params![owner, dialect.as_str(), ids], row::task)
            .await
    }

    async fn get_owned_tasks(&self, owner: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.sql().tasks_by_ids(ids.len(), IdScope::Owner);
        self.read(&sql, params![owner, ids], row::task).await
    }

    async fn page_tasks(
        &self,
        owner: Option<Uuid>,
        filter: &TaskFilter,
        limit: u32,
    ) -> StoreResult<Vec<Task>> {
        let (sql, values) = self.sql().page(owner, filter, limit);
        self.read(&sql, &values, row::task).await
    }

    async fn forget_external_id(
        &self,
        owner: Uuid,
        id: Uuid,
        external_id: &str,
    ) -> StoreResult<bool> {
        let (sql, external_id) = (self.sql(), external_id.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![id, owner, external_id.as_str()];
                Ok(tx.exec(&sql.forget_external_id, values).await? == 1)
            })
        })
        .await
    }

    async fn delete_task(&self, owner: Uuid, id: Uuid) -> StoreResult<bool> {
        let sql = self.sql();
        self.transaction(move |tx| {
            Box::pin(async move {
                let owned = params![id, owner];
                if tx
                    .rows(&sql.owned_task, owned, |_| Ok(()))
                    .await?
                    .is_empty()
                {
                    return Ok(false);
                }
                if let Some(lock) = &sql.lock_deliveries {
                    tx.rows(lock, params![id], |_| Ok(())).await?;
                }
                for delete in &sql.delete_task {
                    tx.exec(delete, params![id]).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn get_task_by_external_id(
        &self,
        owner: Uuid,
        external_id: &str,
    ) -> StoreResult<Option<Task>> {
        let sql = &self.sql().task_by_external_id;
        let by = params![owner, external_id];
        Ok(first(self.read(sql, by, row::task).await?))
    }

    async fn list_tasks(
        &self,
        owner: Uuid,
        dialect: Dialect,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<Task>, u64)> {
        let sql = self.sql();
        let of_owner = params![owner, dialect.as_str()];
        let total = one(self
            .read(&sql.count_listed, of_owner, |r| r.int("n"))
            .await?)?;
        let page = params![
            owner,
            dialect.as_str(),
            i64::from(limit),
            i64::try_from(offset).unwrap_or(i64::MAX)
        ];
        let tasks = self.read(&sql.list_page, page, row::task).await?;
        Ok((tasks, count(total)))
    }

    async fn load_task(&self, id: Uuid) -> StoreResult<Option<Task>> {
        Ok(first(
            self.read(&self.sql().task, params![id], row::task).await?,
        ))
    }

    async fn load_tasks(&self, ids: &[Uuid]) -> StoreResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.sql().tasks_by_ids(ids.len(), IdScope::Any);
        self.read(&sql, params![ids], row::task).await
    }

    async fn claim_due(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Task>> {
        let (sql, worker) = (self.sql(), worker.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![worker.as_str(), now + lease_ms, now, i64::from(limit)];
                tx.rows(&sql.claim_due, values, row::task).await
            })
        })
        .await
    }

    async fn release_leases(&self, worker: &str) -> StoreResult<u64> {
        let (sql, worker) = (self.sql(), worker.to_string());
        self.write(move |tx| {
            Box::pin(async move { tx.exec(&sql.release_leases, params![worker.as_str()]).await })
        })
        .await
    }

    async fn extend_lease(&self, id: Uuid, worker: &str, until: Millis) -> StoreResult<bool> {
        let (sql, worker) = (self.sql(), worker.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![id, worker.as_str(), until];
                Ok(tx.exec(&sql.extend_lease, values).await? == 1)
            })
        })
        .await
    }

    async fn wait_for_work(&self) {
        self.work_announced().await
    }

    async fn next_due_at(&self) -> StoreResult<Option<Millis>> {
        let at = self.read(&self.sql().next_due_at, &[], |r| r.opt_int("n"));
        one(at.await?)
    }

    async fn update_task(
        &self,
        id: Uuid,
        expected_version: i64,
        updates: &[TaskUpdate],
        now: Millis,
    ) -> StoreResult<Option<Task>> {
        let sql = self.sql();
        let steps = updates
            .iter()
            .map(|u| Ok((u.clone(), u.artifacts.as_ref().map(json).transpose()?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.transaction(move |tx| {
            Box::pin(async move {
                let mut version = expected_version;
                let mut task = None;
                for (i, (update, artifacts)) in steps.iter().enumerate() {
                    let step = apply_update(tx, sql, (id, version), update, artifacts, now).await?;
                    match &step {
                        Some(t) => version = t.version,
                        // Nothing written yet: another writer got there first.
                        None if i == 0 => return Ok(None),
                        // The transaction holds the row: a later step cannot
                        // lose a race, only break the state machine's rules.
                        None => {
                            return Err(StoreError::Backend(format!(
                                "step {i} of an update of task {id} did not apply"
                            )));
                        }
                    }
                    task = step;
                }
                Ok(task)
            })
        })
        .await
    }

    async fn task_events(&self, id: Uuid) -> StoreResult<Vec<TaskEvent>> {
        self.read(&self.sql().task_events, params![id], row::event)
            .await
    }

    async fn events_since(
        &self,
        owner: Option<Uuid>,
        (at, id): (Millis, Uuid),
        until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<(TaskEvent, Task)>> {
        let sql = self.sql();
        let limit = i64::from(limit);
        match owner {
            Some(owner) => {
                let values = params![at, id, until, limit, owner];
                self.read(&sql.events_since_of, values, row::event_with_task)
                    .await
            }
            None => {
                let values = params![at, id, until, limit];
                self.read(&sql.events_since, values, row::event_with_task)
                    .await
            }
        }
    }

    async fn open_task_count(&self) -> StoreResult<u64> {
        let n = self.read(&self.sql().open_task_count, &[], |r| r.int("n"));
        Ok(count(one(n.await?)?))
    }

    async fn in_flight_by_channel(&self) -> StoreResult<Vec<(String, u64)>> {
        let sql = &self.sql().in_flight_by_channel;
        self.read(sql, &[], |r| Ok((r.text("channel")?, count(r.int("n")?))))
            .await
    }

    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = self.sql();
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![now + lease_ms, now, i64::from(limit)];
                tx.rows(&sql.claim_deliveries, values, row::delivery).await
            })
        })
        .await
    }

    async fn finish_deliveries(&self, settled: &[Settlement], now: Millis) -> StoreResult<()> {
        let (sql, settled) = (self.sql(), settled.to_vec());
        self.transaction(move |tx| {
            Box::pin(async move {
                for Settlement {
                    delivery,
                    attempt,
                    outcome,
                } in &settled
                {
                    let (state, next) = row::outcome_columns(*outcome);
                    let status = attempt.status.map(i64::from);
                    let settle = params![state, next, status, &attempt.error, now, delivery.id];
                    if tx.exec(&sql.settle_delivery, settle).await? == 0 {
                        // Deleted with its task meanwhile: nothing left to record.
                        continue;
                    }
                    let recorded = params![
                        Uuid::now_v7(),
                        delivery.id,
                        i64::from(attempt.attempt),
                        attempt.at,
                        status,
                        &attempt.error,
                        attempt.latency_ms,
                        attempt.next_attempt_at
                    ];
                    tx.exec(&sql.insert_attempt, recorded).await?;
                    if *outcome == DeliveryOutcome::Gone {
                        let later = params![now, delivery.task_id, delivery.url.as_str()];
                        tx.exec(&sql.gone_after, later).await?;
                    }
                }
                Ok(())
            })
        })
        .await
    }

    async fn task_deliveries(
        &self,
        task_id: Uuid,
    ) -> StoreResult<Vec<(Delivery, Vec<DeliveryAttempt>)>> {
        let sql = self.sql();
        let of_task = params![task_id];
        let deliveries = self
            .read(&sql.task_deliveries, of_task, row::delivery)
            .await?;
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let of_delivery = params![d.id];
            let attempts = self.read(&sql.delivery_attempts, of_delivery, row::attempt);
            let attempts = attempts.await?;
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
        let sql = self.sql();
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![Uuid::now_v7(), now, delivery_id, task_id];
                Ok(first(tx.rows(&sql.redeliver, values, row::delivery).await?))
            })
        })
        .await
    }

    async fn create_key(&self, key: &ApiKey) -> StoreResult<()> {
        let (sql, key, limits) = (self.sql(), key.clone(), json(&key.limits)?);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![
                    key.id,
                    key.name.as_str(),
                    key.hash.as_slice(),
                    key.admin,
                    key.created_at,
                    key.revoked_at,
                    &key.webhook_secret,
                    key.enabled,
                    key.unlimited,
                    0,
                    limits.as_str()
                ];
                tx.exec(&sql.insert_key, values).await?;
                if key.balance != 0 {
                    let initial = (EntryKind::Grant, key.balance, "initial credits");
                    book(tx, sql, key.id, initial, key.created_at).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn save_key_settings(&self, key: &ApiKey) -> StoreResult<bool> {
        let (sql, limits) = (self.sql(), json(&key.limits)?);
        let (id, name, enabled, unlimited) = (key.id, key.name.clone(), key.enabled, key.unlimited);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![name.as_str(), enabled, unlimited, limits.as_str(), id];
                Ok(tx.exec(&sql.update_key_settings, values).await? == 1)
            })
        })
        .await
    }

    async fn add_credits(
        &self,
        id: Uuid,
        kind: EntryKind,
        amount: Credits,
        reason: &str,
        now: Millis,
    ) -> StoreResult<Option<Credits>> {
        let (sql, reason) = (self.sql(), reason.to_string());
        self.transaction(move |tx| {
            Box::pin(async move { book(tx, sql, id, (kind, amount, &reason), now).await })
        })
        .await
    }

    async fn ledger(&self, key_id: Uuid, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        let page = params![key_id, i64::from(limit)];
        self.read(&self.sql().ledger_page, page, row::entry).await
    }

    async fn ledger_totals(&self) -> StoreResult<Vec<LedgerTotal>> {
        self.read(&self.sql().ledger_totals, &[], row::ledger_total)
            .await
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        // Task ids are v7: their first 48 bits are the creation time in ms.
        // A second of margin each way covers two clocks read a moment apart.
        let id_at = |ms: Millis| {
            let ms = u64::try_from(ms.max(0)).unwrap_or(0);
            uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid()
        };
        let (lo, hi) = (
            id_at(query.from - 1000),
            id_at(query.to.saturating_add(1000)),
        );
        let sql = self.sql().usage(query.group_by, query.owner.is_some());
        let mut values = params![query.from, query.to, lo, hi].to_vec();
        values.extend(query.owner.map(Param::from));
        self.read(&sql, &values, row::usage).await
    }

    async fn add_requests(&self, counts: &[(Uuid, Millis, u64)]) -> StoreResult<()> {
        let (sql, counts) = (self.sql(), counts.to_vec());
        self.write(move |tx| {
            Box::pin(async move {
                for (key, day, n) in counts {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    tx.exec(&sql.add_requests, params![key, day, n]).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn requests_by_day(
        &self,
        owner: Option<Uuid>,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<(Millis, u64)>> {
        let sql = self.sql().requests_by_day(owner.is_some());
        let mut values = params![from, to].to_vec();
        values.extend(owner.map(Param::from));
        self.read(&sql, &values, |r| {
            Ok((
                r.int("day")?,
                u64::try_from(r.int("requests")?).unwrap_or(0),
            ))
        })
        .await
    }

    async fn list_prices(&self) -> StoreResult<Vec<Price>> {
        self.read(&self.sql().list_prices, &[], |r| {
            serde_json::from_str(&r.text("spec")?)
                .map_err(|e| StoreError::Corrupt(format!("price: {e}")))
        })
        .await
    }

    async fn put_price(&self, price: &Price, now: Millis) -> StoreResult<()> {
        let (sql, model, spec) = (self.sql(), price.model.clone(), json(price)?);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![model.as_str(), spec.as_str(), now];
                tx.exec(&sql.put_price, values).await.map(drop)
            })
        })
        .await
    }

    async fn delete_price(&self, model: &str) -> StoreResult<bool> {
        let (sql, model) = (self.sql(), model.to_string());
        self.write(move |tx| {
            Box::pin(
                async move { Ok(tx.exec(&sql.delete_price, params![model.as_str()]).await? == 1) },
            )
        })
        .await
    }

    async fn get_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        Ok(first(
            self.read(&self.sql().key_by_id, params![id], row::key)
                .await?,
        ))
    }

    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        secret: &str,
        overlap_until: Millis,
    ) -> StoreResult<bool> {
        let (sql, secret) = (self.sql(), secret.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![overlap_until, secret.as_str(), id];
                Ok(tx.exec(&sql.rotate_webhook_secret, values).await? == 1)
            })
        })
        .await
    }

    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKey>> {
        let by = params![hash.as_slice()];
        Ok(first(
            self.read(&self.sql().key_by_hash, by, row::key).await?,
        ))
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.read(&self.sql().list_keys, &[], row::key).await
    }

    async fn revoke_key(&self, id: Uuid, now: Millis) -> StoreResult<bool> {
        let sql = self.sql();
        self.write(move |tx| {
            Box::pin(async move { Ok(tx.exec(&sql.revoke_key, params![now, id]).await? == 1) })
        })
        .await
    }

    async fn count_keys(&self) -> StoreResult<u64> {
        let n = self.read(&self.sql().count_keys, &[], |r| r.int("n"));
        Ok(count(one(n.await?)?))
    }

    async fn list_channels(&self) -> StoreResult<Vec<ChannelSpec>> {
        let sql = &self.sql().list_channels;
        self.read(sql, &[], |r| {
            crate::channel_from_json(&r.text("name")?, &r.text("spec")?)
        })
        .await
    }

    async fn create_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let (sql, name, json) = (self.sql(), spec.name.clone(), crate::channel_json(spec)?);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![name.as_str(), json.as_str(), now];
                Ok(tx.exec(&sql.insert_channel, values).await? == 1)
            })
        })
        .await
    }

    async fn update_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool> {
        let (sql, name, json) = (self.sql(), spec.name.clone(), crate::channel_json(spec)?);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![json.as_str(), now, name.as_str()];
                Ok(tx.exec(&sql.update_channel, values).await? == 1)
            })
        })
        .await
    }

    async fn keep_file(&self, key: &str, size: u64, until: Option<Millis>) -> StoreResult<bool> {
        let (sql, key) = (self.sql(), key.to_string());
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![key.as_str(), size, until];
                Ok(tx.exec(&sql.keep_file, values).await? == 1)
            })
        })
        .await
    }

    async fn doom_files(&self, as_of: Millis, limit: u32) -> StoreResult<Vec<DoomedFile>> {
        let sql = self.sql();
        let limit = i64::from(limit);
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.exec(&sql.doom_files, params![as_of, limit]).await?;
                tx.rows(&sql.doomed_files, params![limit], |r| {
                    Ok(DoomedFile {
                        key: r.text("key")?,
                        size: count(r.int("size")?),
                    })
                })
                .await
            })
        })
        .await
    }

    async fn forget_files(&self, keys: &[String]) -> StoreResult<()> {
        let (sql, keys) = (self.sql(), keys.to_vec());
        self.transaction(move |tx| {
            Box::pin(async move {
                for key in &keys {
                    tx.exec(&sql.forget_file, params![key.as_str()]).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn file_totals(&self, as_of: Millis) -> StoreResult<FileTotals> {
        let values = params![as_of];
        let rows = self.read(&self.sql().file_totals, values, |r| {
            Ok(FileTotals {
                files: count(r.int("files")?),
                bytes: count(r.int("bytes")?),
                expired_files: count(r.int("expired_files")?),
                expired_bytes: count(r.int("expired_bytes")?),
            })
        });
        one(rows.await?)
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> StoreResult<bool> {
        let (sql, name, holder) = (self.sql(), name.to_string(), holder.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![name.as_str(), holder.as_str(), now, until];
                Ok(tx.exec(&sql.take_lease, values).await? == 1)
            })
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (sql, name, holder) = (self.sql(), name.to_string(), holder.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                tx.exec(&sql.release_lease, params![name.as_str(), holder.as_str()])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    async fn gateway_secret(&self, name: &str) -> StoreResult<Vec<u8>> {
        let (sql, name, fresh) = (self.sql(), name.to_string(), crate::random_secret());
        self.write(move |tx| {
            Box::pin(async move {
                let values = params![name.as_str(), fresh.as_slice()];
                one(tx
                    .rows(&sql.gateway_secret, values, |r| r.bytes("value"))
                    .await?)
            })
        })
        .await
    }
}
