//! Everything gengate keeps: tasks, their events and API keys, behind one
//! trait. The backend is chosen by the database URL's scheme; callers only
//! ever see [`TaskStore`].
//!
//! The trait is implemented once (`rules`) over what a backend supplies:
//! its statements (`sql`, built from the few things its SQL dialect spells
//! its own way) and how it runs one (`db`). Each backend module keeps only
//! its connection, its migrations and those few things.

use std::sync::Arc;

use async_trait::async_trait;
use gengate_core::credits::{EntryKind, LedgerEntry};
pub use gengate_core::usage::{UsageGroup, UsageRow};
use gengate_core::{
    Admission, ApiKey, ChannelSpec, Credits, Delivery, DeliveryAttempt, Dialect, Millis, NewTask,
    Price, Refusal, Settlement, Task, TaskEvent, TaskState, TaskUpdate,
};
use uuid::Uuid;

/// A backend's migrations, in order, from its folder of `migrations/`:
/// the same versions and names for every backend, so their schemas keep step.
macro_rules! migrations {
    ($dir:literal) => {
        $crate::migrations!($dir:
            1 "0001_initial",
            2 "0002_callbacks",
            3 "0003_channels",
            4 "0004_task_listing",
            5 "0005_listing_by_dialect",
            6 "0006_credits",
            7 "0007_task_ledger",
            8 "0008_retention",
            9 "0009_event_feed",
            10 "0010_upstream_error",
            11 "0011_key_requests"
        )
    };
    ($dir:literal: $($version:literal $name:literal),*) => {
        &[$(($version, include_str!(concat!("../migrations/", $dir, "/", $name, ".sql")))),*]
    };
}
pub(crate) use migrations;

mod db;
pub mod postgres;
mod row;
mod rules;
mod sql;
pub mod sqlite;
mod sqlite_writer;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (a duplicate `external_task_id`, say).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored value could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Backend(String),
    /// The key's balance or a limit refused a new task; nothing was stored.
    #[error("{0}")]
    Refused(Refusal),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which tasks [`TaskStore::page_tasks`] answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub model: Option<String>,
    pub dialect: Option<Dialect>,
    /// The channel that has (or last had) the task.
    pub channel: Option<String>,
    /// The task with this id, or with this `external_task_id`.
    pub search: Option<String>,
    /// Created strictly after this.
    pub created_after: Option<Millis>,
    /// Created strictly before this.
    pub created_before: Option<Millis>,
    /// Strictly past this position in the listing's order (a page's last
    /// task): newest first, older than `created_at` or as old with a
    /// smaller id; with `oldest_first`, the other way.
    pub past: Option<(Millis, Uuid)>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

/// Which tasks [`TaskStore::usage`] counts: created in `[from, to)`, of
/// `owner` or of every key.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    pub owner: Option<Uuid>,
    pub from: Millis,
    pub to: Millis,
    pub group_by: UsageGroup,
}

/// A key's balance next to the sum of its ledger entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerTotal {
    pub key_id: Uuid,
    pub balance: Credits,
    pub entries: Credits,
}

/// A stored file being deleted (see [`TaskStore::doom_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoomedFile {
    pub key: String,
    /// Bytes; 0 when its writer did not say.
    pub size: u64,
}

/// The stored files gengate keeps track of, and those of them whose term
/// has passed at a given moment (being deleted included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileTotals {
    pub files: u64,
    pub bytes: u64,
    pub expired_files: u64,
    pub expired_bytes: u64,
}

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Store a new task and its first event in one transaction, with what
    /// `admission` asks: the key charged (a ledger entry) and its limits
    /// checked. [`StoreError::Refused`] when they refuse; nothing is stored.
    async fn create_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        now: Millis,
        deadline_at: Millis,
        admission: &Admission,
    ) -> StoreResult<Task>;

    /// [`TaskStore::create_task`] at `(now, deadline_at)`, leased to
    /// `(worker, until)`: the instance that accepts a task hands it to its
    /// engine at once, and no claim takes it meanwhile. Should that
    /// instance die first, the lease lapses and the task is due as any.
    async fn create_leased_task(
        &self,
        owner: Uuid,
        new: &NewTask,
        times: (Millis, Millis),
        admission: &Admission,
        lease: (&str, Millis),
    ) -> StoreResult<Task>;

    /// One task of `owner`; `None` for unknown ids and other keys' tasks alike.
    async fn get_task(&self, owner: Uuid, id: Uuid) -> StoreResult<Option<Task>>;

    /// Tasks of `owner` made through `dialect` among `ids`, in no given order.
    async fn get_tasks(
        &self,
        owner: Uuid,
        dialect: Dialect,
        ids: &[Uuid],
    ) -> StoreResult<Vec<Task>>;

    /// Tasks of `owner` among `ids`, whatever dialect made them, in no given order.
    async fn get_owned_tasks(&self, owner: Uuid, ids: &[Uuid]) -> StoreResult<Vec<Task>>;

    /// Up to `limit` of `owner`'s tasks (every key's when `None`: an
    /// admin's view) matching `filter`, newest first: by `created_at` then
    /// `id`, both descending, a total order, so paging by position never
    /// skips or repeats a task.
    async fn page_tasks(
        &self,
        owner: Option<Uuid>,
        filter: &TaskFilter,
        limit: u32,
    ) -> StoreResult<Vec<Task>>;

    /// Clear task `id`'s `external_id` if it is still `external_id` (an
    /// expired idempotency key, free for a new task). `false` otherwise.
    async fn forget_external_id(
        &self,
        owner: Uuid,
        id: Uuid,
        external_id: &str,
    ) -> StoreResult<bool>;

    /// Delete `owner`'s task `id` with its events and callback deliveries
    /// (Luma's `DELETE /generations/{id}`). `false` if there was none.
    /// Stored result files stay: other tasks may share them.
    async fn delete_task(&self, owner: Uuid, id: Uuid) -> StoreResult<bool>;

    /// The task `owner` created with this `external_task_id`.
    async fn get_task_by_external_id(
        &self,
        owner: Uuid,
        external_id: &str,
    ) -> StoreResult<Option<Task>>;

    /// A page of `owner`'s tasks in `dialect`, newest first, and the total count.
    async fn list_tasks(
        &self,
        owner: Uuid,
        dialect: Dialect,
        offset: u64,
        limit: u32,
    ) -> StoreResult<(Vec<Task>, u64)>;

    /// Any task, for the engine.
    async fn load_task(&self, id: Uuid) -> StoreResult<Option<Task>>;

    /// Any tasks among `ids`, for the engine, in no given order.
    async fn load_tasks(&self, ids: &[Uuid]) -> StoreResult<Vec<Task>>;

    /// Lease up to `limit` unfinished tasks that are due, for `lease_ms`.
    /// A task whose lease has expired (its worker died) is due again.
    async fn claim_due(
        &self,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Task>>;

    /// Give up the leases `worker` holds (at shutdown), so another start
    /// need not wait for them to expire. Returns how many were released.
    async fn release_leases(&self, worker: &str) -> StoreResult<u64>;

    /// Keep `worker`'s lease on task `id` until `until` (a long upstream
    /// request under way). False: the lease is no longer `worker`'s.
    async fn extend_lease(&self, id: Uuid, worker: &str, until: Millis) -> StoreResult<bool>;

    /// Resolves when another instance may have added work. Single-process
    /// backends never resolve; the engine's own wake-ups and timer suffice.
    async fn wait_for_work(&self) {
        std::future::pending::<()>().await
    }

    /// When the earliest unfinished task falls due, to sleep until then.
    async fn next_due_at(&self) -> StoreResult<Option<Millis>>;

    /// Apply `updates` in turn, in one transaction: the first if the task
    /// is still at `expected_version` (compare and swap), each next on the
    /// version the one before left. Each appends an event when it changes
    /// the state and gives back its `refund` to the task's key; the lease
    /// is released. The task after the last; `None` when another writer got
    /// there first: then nothing is written.
    async fn update_task(
        &self,
        id: Uuid,
        expected_version: i64,
        updates: &[TaskUpdate],
        now: Millis,
    ) -> StoreResult<Option<Task>>;

    /// A task's events in order.
    async fn task_events(&self, id: Uuid) -> StoreResult<Vec<TaskEvent>>;

    /// Up to `limit` events of `owner`'s tasks (every key's: `None`) after
    /// the position `after` (created_at, id) and recorded at `until` or
    /// before, oldest first, each with its task as it is now.
    async fn events_since(
        &self,
        owner: Option<Uuid>,
        after: (Millis, Uuid),
        until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<(TaskEvent, Task)>>;

    /// Counts of unfinished tasks, for readiness and metrics.
    async fn open_task_count(&self) -> StoreResult<u64>;

    /// Tasks submitted to each channel and not finished yet, by channel
    /// name: what a channel's `max_in_flight` is checked against.
    async fn in_flight_by_channel(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Callback deliveries due at `now` whose earlier deliveries (same task,
    /// same URL) are all settled, leased for `lease_ms`: in order per task.
    async fn claim_deliveries(
        &self,
        now: Millis,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>>;

    /// Record attempts and what follows each, all in one transaction (a
    /// deliverer settles what ended together in one write). `Gone` also
    /// settles the task's later deliveries to the same URL; a delivery
    /// deleted with its task meanwhile is skipped.
    async fn finish_deliveries(&self, settled: &[Settlement], now: Millis) -> StoreResult<()>;

    /// A task's deliveries in order, each with its attempts.
    async fn task_deliveries(
        &self,
        task_id: Uuid,
    ) -> StoreResult<Vec<(Delivery, Vec<DeliveryAttempt>)>>;

    /// Queue `delivery`'s event again to its URL (same `webhook-id`), at once.
    /// `None` when there is no such delivery for `task_id`.
    async fn redeliver(
        &self,
        task_id: Uuid,
        delivery_id: Uuid,
        now: Millis,
    ) -> StoreResult<Option<Delivery>>;

    /// A new key; a balance it starts with is its first ledger entry.
    async fn create_key(&self, key: &ApiKey) -> StoreResult<()>;
    /// Save `key`'s name, enabled, unlimited and limits (never its balance,
    /// which only ledger entries move). `false`: no such key.
    async fn save_key_settings(&self, key: &ApiKey) -> StoreResult<bool>;
    /// Give (or, for an adjustment, take) `amount` credits with a ledger
    /// entry; the key's new balance, `None` when there is no such key.
    async fn add_credits(
        &self,
        id: Uuid,
        kind: EntryKind,
        amount: Credits,
        reason: &str,
        now: Millis,
    ) -> StoreResult<Option<Credits>>;
    /// A key's ledger entries, newest first.
    async fn ledger(&self, key_id: Uuid, limit: u32) -> StoreResult<Vec<LedgerEntry>>;
    /// Every key's balance and the sum of its entries.
    async fn ledger_totals(&self) -> StoreResult<Vec<LedgerTotal>>;
    /// Tasks and credits by group and state.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;
    /// Add counted API requests: `(key, day start in Unix ms, requests)`.
    async fn add_requests(&self, counts: &[(Uuid, Millis, u64)]) -> StoreResult<()>;
    /// Requests per day (start in Unix ms) in `[from, to)`, of `owner` or
    /// of every key, in day order.
    async fn requests_by_day(
        &self,
        owner: Option<Uuid>,
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<(Millis, u64)>>;
    /// Prices added over the admin API, by model.
    async fn list_prices(&self) -> StoreResult<Vec<Price>>;
    /// Add or replace the price of `price.model`.
    async fn put_price(&self, price: &Price, now: Millis) -> StoreResult<()>;
    /// `false`: there was no such price.
    async fn delete_price(&self, model: &str) -> StoreResult<bool>;
    async fn get_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>>;
    /// Make `secret` the key's signing secret; the old one keeps signing
    /// until `overlap_until`. `false` when there is no such key.
    async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        secret: &str,
        overlap_until: Millis,
    ) -> StoreResult<bool>;
    async fn key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKey>>;
    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// `false` when no such key is active.
    async fn revoke_key(&self, id: Uuid, now: Millis) -> StoreResult<bool>;
    async fn count_keys(&self) -> StoreResult<u64>;

    /// Channels added through the admin API or CLI (gengate.toml's are
    /// never stored), by name.
    async fn list_channels(&self) -> StoreResult<Vec<ChannelSpec>>;
    /// `false`: the name is taken.
    async fn create_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool>;
    /// Replace the settings of the channel named `spec.name`. `false`: no
    /// such channel.
    async fn update_channel(&self, spec: &ChannelSpec, now: Millis) -> StoreResult<bool>;
    /// Keep the stored file `key` (`size` bytes, 0 if not known) until at
    /// least `until` (`None`: for ever); a file shared by several tasks is
    /// kept as long as the longest needs it. Call it before writing the
    /// file or relying on it being there. `false`: the file is being
    /// deleted; write it again once the sweep is done with it.
    async fn keep_file(&self, key: &str, size: u64, until: Option<Millis>) -> StoreResult<bool>;

    /// Mark up to `limit` files whose term passed before `as_of` as being
    /// deleted (nothing can keep them after that), and return up to `limit`
    /// of the files being deleted, those an interrupted sweep left included.
    async fn doom_files(&self, as_of: Millis, limit: u32) -> StoreResult<Vec<DoomedFile>>;

    /// Forget files being deleted once their objects are gone.
    async fn forget_files(&self, keys: &[String]) -> StoreResult<()>;

    /// Totals of the files kept track of, and of those expired at `as_of`.
    async fn file_totals(&self, as_of: Millis) -> StoreResult<FileTotals>;

    /// Hold the lease `name` for `holder` until `until` if it is free,
    /// lapsed at `now`, or `holder`'s already: work one instance at a time
    /// does. `false`: another holds it.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> StoreResult<bool>;

    /// Give up `holder`'s lease `name`, if it holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// A random 32-byte secret by name, made on first use and the same for
    /// every instance sharing the store (e.g. the key gengate signs
    /// upstream callback URLs with). Concurrent first uses agree.
    async fn gateway_secret(&self, name: &str) -> StoreResult<Vec<u8>>;
}

/// A channel's settings as stored (JSON, credentials included).
pub(crate) fn channel_json(spec: &ChannelSpec) -> StoreResult<String> {
    serde_json::to_string(spec).map_err(|e| StoreError::Backend(e.to_string()))
}

pub(crate) fn channel_from_json(name: &str, json: &str) -> StoreResult<ChannelSpec> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("channel {name:?}: {e}")))
}

/// 32 bytes from the OS's random source: the fully random bytes of v4
/// UUIDs (all but the version and variant bytes).
pub(crate) fn random_secret() -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    while out.len() < 32 {
        let u = Uuid::new_v4();
        let b = u.as_bytes();
        out.extend(b[..6].iter().chain(&b[7..8]).chain(&b[9..]));
    }
    out.truncate(32);
    out
}

/// Open the store a URL names: `postgres://…` (or `postgresql://…`), or
/// `sqlite://PATH` (or a bare path). With `migrate`, pending migrations run
/// first; without, a schema behind this build is an error.
pub async fn open(url: &str, migrate: bool) -> StoreResult<Arc<dyn TaskStore>> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("postgres" | "postgresql") => {
            Ok(Arc::new(postgres::PgStore::connect(url, migrate).await?))
        }
        Some("sqlite") => Ok(Arc::new(
            sqlite::SqliteStore::open(&url["sqlite://".len()..], migrate).await?,
        )),
        Some(other) => Err(StoreError::Backend(format!(
            "unsupported database URL scheme {other:?} (supported: postgres://, sqlite://)"
        ))),
        None => Ok(Arc::new(sqlite::SqliteStore::open(url, migrate).await?)),
    }
}

/// Refuse to run on a schema older than this build's migrations.
pub(crate) fn require_schema(have: Option<i64>, migrations: &[(i64, &str)]) -> StoreResult<()> {
    let latest = migrations.last().map_or(0, |m| m.0);
    let have = have.unwrap_or(0);
    if have < latest {
        return Err(StoreError::Backend(format!(
            "the database schema is at version {have} but this gengate needs {latest}: run `gengate migrate`"
        )));
    }
    Ok(())
}
