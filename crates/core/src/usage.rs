//! Usage reports: tasks by outcome and their credits, per day, model or
//! channel, made from the rows the store counts. Pure: parsing the query,
//! summing, and the CSV form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::credits::Credits;
use crate::error::ApiError;
use crate::task::{Millis, TaskState};
use crate::time::rfc3339_ms;

const DAY_MS: Millis = 86_400_000;
/// The default report covers this many days before now.
pub const DEFAULT_DAYS: i64 = 30;
/// A report covers at most this many days.
pub const MAX_DAYS: i64 = 366;

/// How tasks are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    /// The UTC day the task was created (`YYYY-MM-DD`).
    Day,
    Model,
    /// The channel that ran it (empty: none did).
    Channel,
}

impl UsageGroup {
    pub fn parse(s: &str) -> Option<UsageGroup> {
        match s {
            "day" => Some(UsageGroup::Day),
            "model" => Some(UsageGroup::Model),
            "channel" => Some(UsageGroup::Channel),
            _ => None,
        }
    }
}

/// Tasks of one group in one state, with their credits, as the store counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// For [`UsageGroup::Day`], the day's start in Unix ms, as text.
    pub group: String,
    pub state: TaskState,
    pub tasks: u64,
    pub charged: Credits,
    pub refunded: Credits,
    pub upstream_cost: Credits,
}

/// `GET /v1/usage` query parameters, as text (a bad one is a 400 naming it).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Tasks created at or after this instant (RFC 3339 or Unix ms); default 30 days ago.
    #[param(
        pattern = "^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    pub from: Option<String>,
    /// Tasks created before this instant; default now. At most 366 days after `from`.
    #[param(
        pattern = "^(-?[0-9]{1,18}|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    pub to: Option<String>,
    /// day (default), model or channel.
    #[param(schema_with = group_param)]
    pub group_by: Option<String>,
    /// Admin keys: one key's usage (its id); without it, every key's.
    #[param(
        pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    pub key: Option<String>,
}

fn group_param() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["", "day", "model", "channel"]))
        .build()
}

/// A usage request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRequest {
    pub from: Millis,
    pub to: Millis,
    pub group_by: UsageGroup,
    pub key: Option<uuid::Uuid>,
}

impl UsageParams {
    pub fn check(self, now: Millis) -> Result<UsageRequest, ApiError> {
        let instant = |field: &str, v: Option<&str>| -> Result<Option<Millis>, ApiError> {
            match v {
                None | Some("") => Ok(None),
                Some(s) => crate::time::parse_instant(s).map(Some).ok_or_else(|| {
                    ApiError::validation(
                        field,
                        format!("must be an RFC 3339 time or Unix milliseconds (got {s:?})"),
                    )
                }),
            }
        };
        let to = instant("to", self.to.as_deref())?.unwrap_or(now);
        let from = instant("from", self.from.as_deref())?.unwrap_or(to - DEFAULT_DAYS * DAY_MS);
        if from >= to {
            return Err(ApiError::validation("to", "must be after from"));
        }
        if to - from > MAX_DAYS * DAY_MS {
            return Err(ApiError::validation(
                "to",
                format!("a report covers at most {MAX_DAYS} days"),
            ));
        }
        let group_by = match self.group_by.as_deref() {
            None | Some("") => UsageGroup::Day,
            Some(g) => UsageGroup::parse(g).ok_or_else(|| {
                ApiError::validation(
                    "group_by",
                    format!("must be day, model or channel (got {g:?})"),
                )
            })?,
        };
        let key = match self.key.as_deref() {
            None | Some("") => None,
            Some(k) => Some(
                k.parse()
                    .map_err(|_| ApiError::validation("key", "must be a key id"))?,
            ),
        };
        Ok(UsageRequest {
            from,
            to,
            group_by,
            key,
        })
    }
}

/// Tasks of a group by how they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct TaskCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Pending or processing.
    pub open: u64,
}

/// Credits of a group's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct CreditTotals {
    pub charged: i64,
    pub refunded: i64,
    /// Charged less refunded: what the keys paid.
    pub net: i64,
    /// What the channels' cost lists say the tasks cost upstream.
    pub upstream_cost: i64,
    /// Net less upstream cost.
    pub margin: i64,
}

/// One group of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageLine {
    /// The day (`YYYY-MM-DD`), the model or the channel.
    pub group: String,
    pub tasks: TaskCounts,
    pub credits: CreditTotals,
}

/// Authenticated API requests of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DayRequests {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub requests: u64,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub group_by: UsageGroup,
    /// The key reported on; null: every key.
    pub key: Option<uuid::Uuid>,
    pub data: Vec<UsageLine>,
    /// API requests per day over the days the report touches, whatever it
    /// groups tasks by (recorded every few seconds, so the last ones may
    /// not show yet).
    pub requests: Vec<DayRequests>,
}

impl UsageRequest {
    /// The days the report touches: from the start of `from`'s day to `to`.
    pub fn days(&self) -> (Millis, Millis) {
        (self.from - self.from.rem_euclid(DAY_MS), self.to)
    }
}

/// The report over the store's `rows`, one line per group in order, and
/// its `requests` per day (each day's start in Unix ms).
pub fn report(req: &UsageRequest, rows: &[UsageRow], requests: &[(Millis, u64)]) -> UsageReport {
    let mut lines: BTreeMap<String, UsageLine> = BTreeMap::new();
    for r in rows {
        let group = match req.group_by {
            UsageGroup::Day => r
                .group
                .parse::<Millis>()
                .map(|ms| rfc3339_ms(ms)[..10].to_string())
                .unwrap_or_else(|_| r.group.clone()),
            _ => r.group.clone(),
        };
        let line = lines.entry(group.clone()).or_insert_with(|| UsageLine {
            group,
            tasks: TaskCounts::default(),
            credits: CreditTotals::default(),
        });
        let t = &mut line.tasks;
        t.total += r.tasks;
        match r.state {
            TaskState::Completed => t.completed += r.tasks,
            TaskState::Failed => t.failed += r.tasks,
            TaskState::Canceled => t.canceled += r.tasks,
            TaskState::Pending | TaskState::Processing => t.open += r.tasks,
        }
        let c = &mut line.credits;
        c.charged += r.charged;
        c.refunded += r.refunded;
        c.upstream_cost += r.upstream_cost;
        c.net = c.charged - c.refunded;
        c.margin = c.net - c.upstream_cost;
    }
    UsageReport {
        from: rfc3339_ms(req.from),
        to: rfc3339_ms(req.to),
        group_by: req.group_by,
        key: req.key,
        data: lines.into_values().collect(),
        requests: requests
            .iter()
            .map(|&(day, requests)| DayRequests {
                day: rfc3339_ms(day)[..10].to_string(),
                requests,
            })
            .collect(),
    }
}

/// The columns of a report as a table: the group, then each figure.
pub const COLUMNS: [&str; 11] = [
    "group",
    "tasks",
    "completed",
    "failed",
    "canceled",
    "open",
    "charged",
    "refunded",
    "net",
    "upstream_cost",
    "margin",
];

impl UsageLine {
    /// The figures after the group, in [`COLUMNS`] order.
    pub fn figures(&self) -> [i128; 10] {
        let (t, c) = (&self.tasks, &self.credits);
        [
            t.total.into(),
            t.completed.into(),
            t.failed.into(),
            t.canceled.into(),
            t.open.into(),
            c.charged.into(),
            c.refunded.into(),
            c.net.into(),
            c.upstream_cost.into(),
            c.margin.into(),
        ]
    }
}

/// The report as CSV, a header line and one line per group.
pub fn csv(report: &UsageReport) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for l in &report.data {
        let figures: Vec<String> = l.figures().iter().map(i128::to_string).collect();
        out.push_str(&format!("{},{}\n", csv_field(&l.group), figures.join(",")));
    }
    out
}

/// Quoted when it holds a comma, quote or line break; a leading `=`, `+`,
/// `-` or `@` is escaped so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        group: &str,
        state: TaskState,
        tasks: u64,
        charged: Credits,
        refunded: Credits,
    ) -> UsageRow {
        UsageRow {
            group: group.into(),
            state,
            tasks,
            charged,
            refunded,
            upstream_cost: tasks as Credits,
        }
    }

    #[test]
    fn rows_sum_into_lines_by_outcome() {
        let req = UsageParams {
            group_by: Some("day".into()),
            ..UsageParams::default()
        }
        .check(1_764_633_600_000 + 5000)
        .unwrap();
        let day = "1764633600000";
        let rows = [
            row(day, TaskState::Completed, 3, 30, 0),
            row(day, TaskState::Failed, 1, 10, 10),
            row(day, TaskState::Pending, 2, 20, 0),
        ];
        let r = report(&req, &rows, &[(1_764_633_600_000, 7)]);
        assert_eq!(
            r.requests,
            [DayRequests {
                day: "2025-12-02".into(),
                requests: 7
            }]
        );
        assert_eq!(req.days().0 % DAY_MS, 0, "whole days");
        assert!(req.days().0 <= req.from);
        assert_eq!(r.data.len(), 1);
        let l = &r.data[0];
        assert_eq!(l.group, "2025-12-02");
        assert_eq!(
            (
                l.tasks.total,
                l.tasks.completed,
                l.tasks.failed,
                l.tasks.open
            ),
            (6, 3, 1, 2)
        );
        assert_eq!(
            (l.credits.net, l.credits.upstream_cost, l.credits.margin),
            (50, 6, 44)
        );
        let csv = csv(&r);
        assert_eq!(
            csv.lines().nth(1),
            Some("2025-12-02,6,3,1,0,2,60,10,50,6,44")
        );
    }

    #[test]
    fn bad_queries_name_the_field() {
        let field = |p: UsageParams| match p.check(10 * DAY_MS) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let q = |from: &str, to: &str, group: &str, key: &str| UsageParams {
            from: Some(from.into()),
            to: Some(to.into()),
            group_by: Some(group.into()),
            key: Some(key.into()),
        };
        assert_eq!(field(q("yesterday", "", "", "")), "from");
        assert_eq!(field(q("5", "5", "", "")), "to");
        assert_eq!(field(q("0", "", "week", "")), "group_by");
        assert_eq!(field(q("", "", "", "nope")), "key");
        assert_eq!(field(q("0", &(400 * DAY_MS).to_string(), "", "")), "to");
    }

    #[test]
    fn csv_fields_cannot_become_formulas_or_columns() {
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("ray-2"), "ray-2");
    }
}
