//! Callback deliveries: their states, attempts, and the retry schedule.

use std::time::Duration;

use uuid::Uuid;

use crate::task::{Millis, TaskState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not yet delivered; attempts go on.
    Pending,
    Delivered,
    /// Given up after the last attempt of the schedule.
    Failed,
    /// The receiver answered 410 Gone: nothing more goes to that URL for the task.
    Gone,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Gone => "gone",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
            DeliveryState::Gone,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One callback: the event it announces, to one URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    /// The `webhook-id`: the same on every attempt.
    pub event_id: Uuid,
    pub event_state: TaskState,
    pub event_at: Millis,
    pub task_id: Uuid,
    pub owner: Uuid,
    pub seq: i64,
    pub url: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Millis,
}

/// What one attempt found.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub attempt: u32,
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub next_attempt_at: Option<Millis>,
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    RetryAt(Millis),
    GiveUp,
    Gone,
}

/// An attempt made, for the store to record with what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub delivery: Delivery,
    pub attempt: DeliveryAttempt,
    pub outcome: DeliveryOutcome,
}

/// When attempts are made: the first at once (`schedule[0]` is 0), each
/// retry after the next delay; past the last, the delivery is given up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule(Vec<Duration>);

/// Standard Webhooks' schedule, as svix runs it.
pub const DEFAULT_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule::parse(DEFAULT_SCHEDULE).unwrap_or(RetrySchedule(vec![Duration::ZERO]))
    }
}

impl RetrySchedule {
    /// `0s,5s,5m,30m,2h` — numbers with ms, s, m or h.
    pub fn parse(s: &str) -> Result<RetrySchedule, String> {
        let delays = s
            .split(',')
            .map(|part| {
                let part = part.trim();
                let split = part
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(part.len());
                let (n, unit) = part.split_at(split);
                let n: u64 = n
                    .parse()
                    .map_err(|_| format!("{part:?} is not a delay like 5s"))?;
                Ok(match unit {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    "m" => Duration::from_secs(n * 60),
                    "h" => Duration::from_secs(n * 3600),
                    _ => return Err(format!("{part:?}: the unit must be ms, s, m or h")),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        match delays.first() {
            None => return Err("the schedule needs at least one delay".into()),
            Some(first) if !first.is_zero() => {
                return Err("the first attempt is made at once: start the schedule with 0s".into());
            }
            Some(_) => {}
        }
        Ok(RetrySchedule(delays))
    }

    pub fn attempts(&self) -> usize {
        self.0.len()
    }

    /// The wait before attempt number `made + 1`, after `made` attempts
    /// failed; `None` when the schedule is spent.
    pub fn delay_after(&self, made: u32) -> Option<Duration> {
        self.0.get(usize::try_from(made).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_is_standard_webhooks() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(7), Some(Duration::from_secs(36_000)));
        assert_eq!(s.delay_after(8), None);
    }

    #[test]
    fn schedules_parse_with_units() {
        let s = RetrySchedule::parse("0ms, 20ms,1s").unwrap();
        assert_eq!(s.delay_after(1), Some(Duration::from_millis(20)));
        assert!(RetrySchedule::parse("5x").is_err());
        assert!(
            RetrySchedule::parse("5s,10s").is_err(),
            "the first attempt is at once"
        );
        assert!(RetrySchedule::parse("").is_err());
    }
}
