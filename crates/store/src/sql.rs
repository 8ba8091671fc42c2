//! Every statement the store runs, written once. What differs between
//! SQLite and PostgreSQL is named in a [`SqlDialect`] (placeholders, JSON
//! casts, row locks, an id list, a planner hint); each backend gives its
//! own and gets its statements built from it once, at first use.

use gengate_core::Dialect;

use uuid::Uuid;

use crate::db::Param;
use crate::{TaskFilter, UsageGroup};

/// Whose tasks a lookup by ids may answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdScope {
    /// Any task (the engine's view).
    Any,
    /// `$1`'s tasks.
    Owner,
    /// `$1`'s tasks made through dialect `$2`.
    OwnerAndDialect,
}

/// What one SQL dialect spells its own way.
pub(crate) struct SqlDialect {
    /// The placeholder mark: `$` (PostgreSQL) or `?` (SQLite, which numbers
    /// `?N` explicitly where `$N` would be numbered by first appearance).
    pub mark: char,
    /// Cast on a value written to a JSON column (PostgreSQL's are JSONB).
    pub json_in: &'static str,
    /// Cast on a JSON column read back as text.
    pub json_out: &'static str,
    /// Several writers share the database, so claims skip rows another
    /// holds and a delete locks what it removes (PostgreSQL). SQLite has
    /// one writer.
    pub row_locks: bool,
    /// Put before `owner` and `dialect` in look-ups by primary key: SQLite's
    /// unary `+` keeps its planner on the primary key (without statistics it
    /// may walk the owner's listing index instead, a scan that grows with
    /// every task the key ever made).
    pub pk_hint: &'static str,
    /// `id` is one of `n` ids bound from placeholder `$first` on.
    pub ids: fn(first: usize, n: usize) -> String,
}

impl SqlDialect {
    /// A statement written with `$N` placeholders, in this dialect.
    fn finish(&self, sql: String) -> String {
        if self.mark == '$' {
            sql
        } else {
            sql.replace('$', &self.mark.to_string())
        }
    }
}

const DELIVERY_COLUMNS: &str = "id, event_id, event_state, event_at, task_id, owner, seq, url, \
    state, attempts, next_attempt_at, last_status, last_error, created_at";

/// A ledger entry's columns.
const ENTRY: &str = "id, key_id, at, kind, amount, task_id, reason";
/// A task's charge as a ledger entry, from its row.
const TASK_CHARGE: &str = "id, owner AS key_id, created_at AS at, 'charge' AS kind, \
    -charged AS amount, id AS task_id, NULL AS reason";
/// A task's refund as a ledger entry: made only as the task ended, for why.
const TASK_REFUND: &str = "refund_id AS id, owner AS key_id, finished_at AS at, \
    'refund' AS kind, refunded AS amount, id AS task_id, state AS reason";

/// Events after a position and up to a time, oldest first, with their
/// tasks' columns (the events' own prefixed `ev_`), filtered by `and`.
fn events_since(cols: &str, and: &str) -> String {
    format!(
        "SELECT e.id AS ev_id, e.seq AS ev_seq, e.state AS ev_state, e.detail AS ev_detail, \
         e.created_at AS ev_at, t.* \
         FROM task_events e JOIN (SELECT {cols} FROM tasks) t ON t.id = e.task_id \
         WHERE (e.created_at, e.id) > ($1, $2) AND e.created_at <= $3{and} \
         ORDER BY e.created_at, e.id LIMIT $4"
    )
}

/// A task's terminal states, as the SQL that keeps them final spells them.
const TERMINAL: &str = "('completed', 'failed', 'canceled')";

/// The statements of one dialect.
pub(crate) struct Sql {
    dialect: &'static SqlDialect,
    task_columns: String,
    pub insert_task: String,
    pub task_of_owner: String,
    pub task_by_external_id: String,
    pub count_listed: String,
    pub list_page: String,
    pub task: String,
    pub forget_external_id: String,
    pub owned_task: String,
    /// PostgreSQL only: wait for a delivery attempt being recorded, so one
    /// recorded later finds its delivery gone.
    pub lock_deliveries: Option<String>,
    /// Children first: attempts, deliveries, events, the task.
    pub delete_task: [String; 6],
    pub claim_due: String,
    pub release_leases: String,
    pub extend_lease: String,
    pub next_due_at: String,
    pub update_task: String,
    pub insert_event: String,
    pub insert_delivery: String,
    pub task_events: String,
    /// Every key's events in time order, each with its task ($4: limit).
    pub events_since: String,
    /// The same, of one key's tasks ($5: the key).
    pub events_since_of: String,
    pub open_task_count: String,
    pub in_flight_by_channel: String,
    pub claim_deliveries: String,
    pub settle_delivery: String,
    pub insert_attempt: String,
    pub gone_after: String,
    pub task_deliveries: String,
    pub delivery_attempts: String,
    pub redeliver: String,
    pub key_by_id: String,
    pub key_by_hash: String,
    pub list_keys: String,
    pub insert_key: String,
    pub rotate_webhook_secret: String,
    pub revoke_key: String,
    pub count_keys: String,
    pub list_channels: String,
    pub insert_channel: String,
    pub update_channel: String,
    pub gateway_secret: String,
    pub update_key_settings: String,
    /// Takes the charge when the balance allows (or the key is unlimited),
    /// locking the key's row until the accept commits.
    pub charge_key: String,
    pub key_spending: String,
    pub credit_key: String,
    pub refund_key: String,
    pub insert_entry: String,
    pub open_tasks_of: String,
    pub ledger_page: String,
    pub ledger_totals: String,
    pub list_prices: String,
    pub put_price: String,
    pub delete_price: String,
    pub keep_file: String,
    pub file_kept: String,
    pub doom_files: String,
    pub doomed_files: String,
    pub forget_file: String,
    pub file_totals: String,
    pub take_lease: String,
    pub add_requests: String,
    pub release_lease: String,
}

impl Sql {
    pub(crate) fn new(d: &'static SqlDialect) -> Sql {
        let s = |sql: String| d.finish(sql);
        let (json_in, json_out, h) = (d.json_in, d.json_out, d.pk_hint);
        let skip_locked = if d.row_locks {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let for_update = if d.row_locks { " FOR UPDATE" } else { "" };
        let cols = format!(
            "id, owner, dialect, kind, model, request{json_out} AS request, callback_url, \
             external_id, channel, upstream_ref, attempts, state, failure_reason, progress, \
             artifacts{json_out} AS artifacts, created_at, updated_at, started_at, finished_at, \
             deadline_at, version, event_seq, charged, charge_per_output, charge_outputs, \
             refunded, upstream_cost, keep_until, upstream_error"
        );
        Sql {
            dialect: d,
            insert_task: s(format!(
                "INSERT INTO tasks (id, owner, dialect, kind, model, request, callback_url, \
                 external_id, channel, state, created_at, updated_at, deadline_at, version, \
                 event_seq, due_at, charged, charge_per_output, charge_outputs, lease_owner, \
                 lease_until) \
                 VALUES ($1, $2, $3, $4, $5, $6{json_in}, $7, $8, $9, 'pending', $10, $10, $11, \
                 1, 1, $10, $12, $13, $14, $15, $16) \
                 RETURNING {cols}"
            )),
            task_of_owner: s(format!(
                "SELECT {cols} FROM tasks WHERE id = $1 AND {h}owner = $2"
            )),
            task_by_external_id: s(format!(
                "SELECT {cols} FROM tasks WHERE owner = $1 AND external_id = $2"
            )),
            count_listed: s(
                "SELECT COUNT(*) AS n FROM tasks WHERE owner = $1 AND dialect = $2".into(),
            ),
            list_page: s(format!(
                "SELECT {cols} FROM tasks WHERE owner = $1 AND dialect = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
            )),
            task: s(format!("SELECT {cols} FROM tasks WHERE id = $1")),
            forget_external_id: s("UPDATE tasks SET external_id = NULL \
                 WHERE id = $1 AND owner = $2 AND external_id = $3"
                .into()),
            owned_task: s(format!(
                "SELECT 1 AS n FROM tasks WHERE id = $1 AND owner = $2{for_update}"
            )),
            lock_deliveries: d.row_locks.then(|| {
                s(format!(
                    "SELECT 1 AS n FROM deliveries WHERE task_id = $1{for_update}"
                ))
            }),
            // A deleted task's ledger entries stay, in the ledger table.
            delete_task: [
                format!(
                    "INSERT INTO ledger ({ENTRY}) \
                     SELECT {TASK_CHARGE} FROM tasks WHERE id = $1 AND charged > 0"
                ),
                format!(
                    "INSERT INTO ledger ({ENTRY}) \
                     SELECT {TASK_REFUND} FROM tasks WHERE id = $1 AND refunded > 0"
                ),
                "DELETE FROM delivery_attempts WHERE delivery_id IN \
                 (SELECT id FROM deliveries WHERE task_id = $1)"
                    .into(),
                "DELETE FROM deliveries WHERE task_id = $1".into(),
                "DELETE FROM task_events WHERE task_id = $1".into(),
                "DELETE FROM tasks WHERE id = $1".into(),
            ]
            .map(s),
            claim_due: s(format!(
                "UPDATE tasks SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
                   SELECT id FROM tasks WHERE due_at IS NOT NULL AND due_at <= $3 \
                   AND (lease_until IS NULL OR lease_until <= $3) ORDER BY due_at LIMIT $4\
                   {skip_locked}) \
                 RETURNING {cols}"
            )),
            release_leases: s("UPDATE tasks SET lease_owner = NULL, lease_until = NULL \
                 WHERE lease_owner = $1"
                .into()),
            extend_lease: s(
                "UPDATE tasks SET lease_until = $3 WHERE id = $1 AND lease_owner = $2".into(),
            ),
            next_due_at: s("SELECT MIN(due_at) AS n FROM tasks WHERE due_at IS NOT NULL".into()),
            // A state change stamps the times it implies, ends the task's
            // schedule when terminal and takes the next event number; a
            // terminal task never changes again.
            update_task: s(format!(
                "UPDATE tasks SET \
                   state = COALESCE($1, state), \
                   channel = COALESCE($2, channel), \
                   upstream_ref = COALESCE($3, upstream_ref), \
                   failure_reason = COALESCE($4, failure_reason), \
                   progress = COALESCE($5, progress), \
                   artifacts = COALESCE($6{json_in}, artifacts), \
                   attempts = attempts + $7, \
                   updated_at = CASE WHEN $1 IS NULL AND $5 IS NULL THEN updated_at ELSE $8 END, \
                   started_at = CASE WHEN $1 = 'processing' AND started_at IS NULL THEN $8 \
                     ELSE started_at END, \
                   finished_at = CASE WHEN $1 IN {TERMINAL} THEN $8 ELSE finished_at END, \
                   due_at = CASE WHEN $1 IN {TERMINAL} THEN NULL ELSE COALESCE($9, due_at) END, \
                   version = version + 1, \
                   event_seq = event_seq + CASE WHEN $1 IS NULL THEN 0 ELSE 1 END, \
                   lease_owner = NULL, lease_until = NULL, \
                   refunded = refunded + $12, \
                   refund_id = COALESCE($14, refund_id), \
                   upstream_cost = COALESCE($13, upstream_cost), \
                   keep_until = CASE WHEN $1 IN {TERMINAL} THEN $15 ELSE keep_until END, \
                   upstream_error = COALESCE($16, upstream_error) \
                 WHERE id = $10 AND version = $11 AND state NOT IN {TERMINAL} \
                 RETURNING {cols}"
            )),
            insert_event: s(
                "INSERT INTO task_events (id, task_id, seq, state, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
                    .into(),
            ),
            // After a 410 from this URL, later events are recorded but not
            // sent: their deliveries start out gone.
            insert_delivery: s(
                "INSERT INTO deliveries (id, event_id, event_state, event_at, \
                 task_id, owner, seq, url, state, next_attempt_at, created_at, updated_at) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, \
                   CASE WHEN g.gone THEN 'gone' ELSE 'pending' END, \
                   CASE WHEN g.gone THEN NULL ELSE $4 END, $4, $4 \
                 FROM (SELECT EXISTS (SELECT 1 FROM deliveries \
                   WHERE task_id = $5 AND url = $8 AND state = 'gone') AS gone) g"
                    .into(),
            ),
            task_events: s(
                "SELECT id, task_id, seq, state, detail, created_at FROM task_events \
                 WHERE task_id = $1 ORDER BY seq"
                    .into(),
            ),
            events_since: s(events_since(&cols, "")),
            events_since_of: s(events_since(&cols, " AND t.owner = $5")),
            open_task_count: s("SELECT COUNT(*) AS n FROM tasks WHERE due_at IS NOT NULL".into()),
            in_flight_by_channel: s("SELECT channel, COUNT(*) AS n FROM tasks \
                 WHERE due_at IS NOT NULL AND state = 'processing' AND channel IS NOT NULL \
                 GROUP BY channel"
                .into()),
            // In order per task and URL: a delivery waits while an earlier
            // one to the same URL is still pending.
            claim_deliveries: s(format!(
                "UPDATE deliveries SET lease_until = $1 WHERE id IN ( \
                   SELECT d.id FROM deliveries d \
                   WHERE d.next_attempt_at IS NOT NULL AND d.next_attempt_at <= $2 \
                   AND (d.lease_until IS NULL OR d.lease_until <= $2) \
                   AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id \
                       AND p.url = d.url AND p.seq < d.seq AND p.state = 'pending') \
                   ORDER BY d.next_attempt_at LIMIT $3{skip_locked}) \
                 RETURNING {DELIVERY_COLUMNS}"
            )),
            settle_delivery: s(
                "UPDATE deliveries SET attempts = attempts + 1, state = $1, \
                 next_attempt_at = $2, lease_until = NULL, last_status = $3, last_error = $4, \
                 updated_at = $5 WHERE id = $6"
                    .into(),
            ),
            insert_attempt: s(
                "INSERT INTO delivery_attempts (id, delivery_id, attempt, at, \
                 status, error, latency_ms, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    .into(),
            ),
            gone_after: s(
                "UPDATE deliveries SET state = 'gone', next_attempt_at = NULL, \
                 updated_at = $1 WHERE task_id = $2 AND url = $3 AND state = 'pending'"
                    .into(),
            ),
            task_deliveries: s(format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_id = $1 \
                 ORDER BY seq, created_at"
            )),
            delivery_attempts: s("SELECT attempt, at, status, error, latency_ms, \
                 next_attempt_at FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempt"
                .into()),
            // The same event (and so the same `webhook-id`), due at once.
            redeliver: s(format!(
                "INSERT INTO deliveries (id, event_id, event_state, event_at, task_id, owner, \
                   seq, url, state, attempts, next_attempt_at, created_at, updated_at) \
                 SELECT $1, event_id, event_state, event_at, task_id, owner, seq, url, \
                   'pending', 0, $2, $2, $2 \
                 FROM deliveries WHERE id = $3 AND task_id = $4 \
                 RETURNING {DELIVERY_COLUMNS}"
            )),
            key_by_id: s("SELECT * FROM api_keys WHERE id = $1".into()),
            key_by_hash: s("SELECT * FROM api_keys WHERE hash = $1".into()),
            list_keys: s("SELECT * FROM api_keys ORDER BY created_at, id".into()),
            insert_key: s(
                "INSERT INTO api_keys (id, name, hash, admin, created_at, revoked_at, \
                 webhook_secret, enabled, unlimited, balance, limits) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                    .into(),
            ),
            rotate_webhook_secret: s("UPDATE api_keys SET \
                 previous_webhook_secret = webhook_secret, previous_secret_until = $1, \
                 webhook_secret = $2 WHERE id = $3"
                .into()),
            revoke_key: s(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL".into(),
            ),
            count_keys: s("SELECT COUNT(*) AS n FROM api_keys".into()),
            list_channels: s("SELECT name, spec FROM channels ORDER BY name".into()),
            insert_channel: s("INSERT INTO channels (name, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING"
                .into()),
            update_channel: s(
                "UPDATE channels SET spec = $1, updated_at = $2 WHERE name = $3".into(),
            ),
            // One statement: a concurrent first insert makes this one wait
            // for it, then keep the winner's value and return it.
            gateway_secret: s("INSERT INTO gateway_secrets (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = gateway_secrets.value RETURNING value"
                .into()),
            update_key_settings: s("UPDATE api_keys SET name = $1, enabled = $2, \
                 unlimited = $3, limits = $4 WHERE id = $5"
                .into()),
            // The balance (unless unlimited) and the day's spend (when
            // capped: $4) must allow the charge; `spent` restarts each day.
            charge_key: s("UPDATE api_keys SET balance = balance - $1, \
                 spent = CASE WHEN spend_day = $3 THEN spent + $1 ELSE $1 END, spend_day = $3 \
                 WHERE id = $2 AND (unlimited OR balance >= $1) \
                 AND ($4 IS NULL OR CASE WHEN spend_day = $3 THEN spent ELSE 0 END + $1 <= $4) \
                 RETURNING balance"
                .into()),
            key_spending: s("SELECT balance, unlimited, \
                 CASE WHEN spend_day = $2 THEN spent ELSE 0 END AS spent \
                 FROM api_keys WHERE id = $1"
                .into()),
            credit_key: s(
                "UPDATE api_keys SET balance = balance + $1 WHERE id = $2 RETURNING balance".into(),
            ),
            // A refund gives back to the day's spend too, when it is that day.
            refund_key: s("UPDATE api_keys SET balance = balance + $1, \
                 spent = CASE WHEN spend_day = $3 THEN spent - $1 ELSE spent END \
                 WHERE id = $2"
                .into()),
            insert_entry: s("INSERT INTO ledger (id, key_id, at, kind, amount, reason) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
                .into()),
            open_tasks_of: s(
                "SELECT COUNT(*) AS n FROM tasks WHERE owner = $1 AND due_at IS NOT NULL".into(),
            ),
            // The ledger table's entries, and the charges and refunds its
            // tasks carry (migration 0007 says how): the newest of each.
            ledger_page: s(format!(
                "SELECT {ENTRY} FROM ( \
                   SELECT {ENTRY} FROM ( \
                     SELECT {ENTRY} FROM ledger WHERE key_id = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2) l \
                   UNION ALL SELECT {ENTRY} FROM ( \
                     SELECT {TASK_CHARGE} FROM tasks WHERE owner = $1 AND charged > 0 \
                     ORDER BY created_at DESC, id DESC LIMIT $2) c \
                   UNION ALL SELECT {ENTRY} FROM ( \
                     SELECT {TASK_REFUND} FROM tasks WHERE owner = $1 AND refunded > 0 \
                     ORDER BY finished_at DESC LIMIT $2) r \
                 ) e ORDER BY at DESC, id DESC LIMIT $2"
            )),
            ledger_totals: s("SELECT k.id AS id, k.balance AS balance, CAST( \
                 COALESCE((SELECT SUM(l.amount) FROM ledger l WHERE l.key_id = k.id), 0) \
                 + COALESCE((SELECT SUM(t.refunded - t.charged) FROM tasks t \
                   WHERE t.owner = k.id), 0) AS BIGINT) AS entries \
                 FROM api_keys k ORDER BY k.id"
                .into()),
            list_prices: s("SELECT model, spec FROM prices ORDER BY model".into()),
            put_price: s(
                "INSERT INTO prices (model, spec, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (model) DO UPDATE SET spec = excluded.spec, \
                 updated_at = excluded.updated_at"
                    .into(),
            ),
            delete_price: s("DELETE FROM prices WHERE model = $1".into()),
            // The longer term wins (NULL, for ever, over any); a file being
            // deleted is left alone (no row changes).
            keep_file: s(
                "INSERT INTO files (key, size, keep_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   size = CASE WHEN excluded.size > files.size THEN excluded.size \
                     ELSE files.size END, \
                   keep_until = CASE WHEN files.keep_until IS NULL \
                       OR excluded.keep_until IS NULL THEN NULL \
                     WHEN excluded.keep_until > files.keep_until THEN excluded.keep_until \
                     ELSE files.keep_until END \
                 WHERE files.deleting = FALSE"
                    .into(),
            ),
            // A file kept at least until $2 (NULL: for ever) and not being
            // deleted: keeping it that long again changes nothing. (A term
            // only grows, and only a lapsed one is doomed.)
            file_kept: s(
                "SELECT size FROM files WHERE key = $1 AND deleting = FALSE \
                 AND (keep_until IS NULL OR ($2 IS NOT NULL AND keep_until >= $2))"
                    .into(),
            ),
            // The outer conditions are checked again on each row as it is
            // updated: a term extended meanwhile saves the file.
            doom_files: s("UPDATE files SET deleting = TRUE \
                 WHERE deleting = FALSE AND keep_until < $1 AND key IN (\
                   SELECT key FROM files WHERE deleting = FALSE AND keep_until < $1 \
                   ORDER BY keep_until LIMIT $2)"
                .into()),
            doomed_files: s("SELECT key, size FROM files WHERE deleting = TRUE \
                 ORDER BY key LIMIT $1"
                .into()),
            forget_file: s("DELETE FROM files WHERE key = $1 AND deleting = TRUE".into()),
            file_totals: s("SELECT COUNT(*) AS files, \
                 CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes, \
                 CAST(COALESCE(SUM(CASE WHEN deleting = TRUE OR keep_until < $1 \
                   THEN 1 ELSE 0 END), 0) AS BIGINT) AS expired_files, \
                 CAST(COALESCE(SUM(CASE WHEN deleting = TRUE OR keep_until < $1 \
                   THEN size ELSE 0 END), 0) AS BIGINT) AS expired_bytes \
                 FROM files"
                .into()),
            take_lease: s(
                "INSERT INTO leases (name, holder, held_until) VALUES ($1, $2, $4) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                   held_until = excluded.held_until \
                 WHERE leases.held_until < $3 OR leases.holder = excluded.holder"
                    .into(),
            ),
            release_lease: s("DELETE FROM leases WHERE name = $1 AND holder = $2".into()),
            add_requests: s(
                "INSERT INTO key_requests (key_id, day, requests) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id, day) DO UPDATE \
                 SET requests = key_requests.requests + excluded.requests"
                    .into(),
            ),
            task_columns: cols,
        }
    }

    /// The tasks among `n` ids that `scope` allows. Bound in order: the
    /// owner and dialect it names, then the ids.
    pub(crate) fn tasks_by_ids(&self, n: usize, scope: IdScope) -> String {
        let (cols, h) = (&self.task_columns, self.dialect.pk_hint);
        let (of, first) = match scope {
            IdScope::Any => (String::new(), 1),
            IdScope::Owner => (format!("{h}owner = $1 AND "), 2),
            IdScope::OwnerAndDialect => (format!("{h}owner = $1 AND {h}dialect = $2 AND "), 3),
        };
        let ids = (self.dialect.ids)(first, n);
        self.dialect
            .finish(format!("SELECT {cols} FROM tasks WHERE {of}{ids}"))
    }

    /// Requests per day in `[$1, $2)`, of key `$3` when `by_owner`.
    pub(crate) fn requests_by_day(&self, by_owner: bool) -> String {
        let owner = if by_owner { " AND key_id = $3" } else { "" };
        self.dialect.finish(format!(
            "SELECT day, CAST(SUM(requests) AS BIGINT) AS requests FROM key_requests \
             WHERE day >= $1 AND day < $2{owner} GROUP BY day ORDER BY day"
        ))
    }

    /// Tasks by group and state, created in `[$1, $2)` and with ids in
    /// `[$3, $4)` (v7 ids sort by creation time: the primary key's range
    /// bounds the scan), of owner `$5` when `by_owner`.
    pub(crate) fn usage(&self, group: UsageGroup, by_owner: bool) -> String {
        let grp = match group {
            UsageGroup::Day => "CAST(created_at - created_at % 86400000 AS TEXT)",
            UsageGroup::Model => "model",
            UsageGroup::Channel => "COALESCE(channel, '')",
        };
        let owner = if by_owner { " AND owner = $5" } else { "" };
        self.dialect.finish(format!(
            "SELECT {grp} AS grp, state, COUNT(*) AS n, \
             CAST(SUM(charged) AS BIGINT) AS charged, \
             CAST(SUM(refunded) AS BIGINT) AS refunded, \
             CAST(SUM(upstream_cost) AS BIGINT) AS upstream_cost \
             FROM tasks WHERE created_at >= $1 AND created_at < $2 \
             AND id >= $3 AND id < $4{owner} \
             GROUP BY {grp}, state ORDER BY grp, state"
        ))
    }

    /// A page of a key's tasks of every dialect, newest first: one range of
    /// the (owner, dialect, created_at, id) index per dialect, each cut at
    /// the page size, merged. Bound in order: owner, then the filter's
    /// values as given, then the page size. Conditions are constants.
    /// The statement and values of a page of tasks: `owner`'s (on its
    /// listing index, one range per dialect merged) or every key's.
    pub(crate) fn page<'a>(
        &self,
        owner: Option<Uuid>,
        filter: &'a TaskFilter,
        limit: u32,
    ) -> (String, Vec<Param<'a>>) {
        let mut values = Vec::new();
        let mut conds = Vec::new();
        // `cond` with its `?`s numbered in order, for `vs`.
        let mut bind = |cond: &str, vs: Vec<Param<'a>>| {
            let mut numbered = String::new();
            for (i, part) in cond.split('?').enumerate() {
                if i > 0 {
                    values.push(vs[i - 1]);
                    numbered.push_str(&format!("${}", values.len()));
                }
                numbered.push_str(part);
            }
            conds.push(numbered);
        };
        if let Some(owner) = owner {
            bind("owner = ?", vec![Param::Id(owner)]);
        }
        if let Some(state) = filter.state {
            bind("state = ?", vec![Param::from(state.as_str())]);
        }
        if let Some(model) = &filter.model {
            bind("model = ?", vec![Param::from(model.as_str())]);
        }
        if let Some(channel) = &filter.channel {
            bind("channel = ?", vec![Param::from(channel.as_str())]);
        }
        if let Some(search) = &filter.search {
            let external = Param::from(search.as_str());
            match Uuid::try_parse(search) {
                // An external id may look like a UUID too.
                Ok(id) => bind("(id = ? OR external_id = ?)", vec![Param::Id(id), external]),
                Err(_) => bind("external_id = ?", vec![external]),
            }
        }
        if let Some(at) = filter.created_after {
            bind("created_at > ?", vec![Param::from(at)]);
        }
        if let Some(at) = filter.created_before {
            bind("created_at < ?", vec![Param::from(at)]);
        }
        if let Some((at, id)) = filter.past {
            let past = if filter.oldest_first {
                "(created_at, id) > (?, ?)"
            } else {
                "(created_at, id) < (?, ?)"
            };
            bind(past, vec![Param::from(at), Param::Id(id)]);
        }
        values.push(Param::from(i64::from(limit)));
        let limit = format!("${}", values.len());
        let conds = if conds.is_empty() {
            "TRUE".to_string()
        } else {
            conds.join(" AND ")
        };
        let cols = &self.task_columns;
        let order = if filter.oldest_first {
            "ORDER BY created_at ASC, id ASC"
        } else {
            "ORDER BY created_at DESC, id DESC"
        };
        let dialects: Vec<Dialect> = match filter.dialect {
            Some(d) => vec![d],
            None if owner.is_some() => Dialect::ALL.to_vec(),
            // Every key's: no index to walk per dialect.
            None => Vec::new(),
        };
        let sql = if dialects.is_empty() {
            format!("SELECT {cols} FROM tasks WHERE {conds} {order} LIMIT {limit}")
        } else {
            let ranges: Vec<String> = dialects
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    format!(
                        "SELECT * FROM (SELECT {cols} FROM tasks WHERE {conds} AND dialect = '{}' \
                         {order} LIMIT {limit}) AS d{i}",
                        d.as_str()
                    )
                })
                .collect();
            format!("{} {order} LIMIT {limit}", ranges.join(" UNION ALL "))
        };
        (self.dialect.finish(sql), values)
    }
}
