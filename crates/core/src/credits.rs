//! Credits, as arithmetic: what a model costs ([`Price`], a [`PriceBook`]),
//! what a task is charged when it is accepted ([`Charge`], fixed on the
//! task), what it is refunded when it ends ([`refund`]), and a key's limits.
//! Integer credits only. The store writes the ledger; nothing here does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::request::GenerationRequest;
use crate::task::{Artifact, ArtifactRole, TaskKind, TaskState};

/// An amount of credits. Signed: a ledger entry takes them away or gives.
pub type Credits = i64;

/// The model a price applies to when no price names the task's model.
pub const ANY_MODEL: &str = "*";
/// Video seconds charged when a request does not say how long.
pub const DEFAULT_VIDEO_SECS: u32 = 5;
/// The largest price of any part, so that no product can overflow.
pub const MAX_PRICE: Credits = 1_000_000_000;

/// What one model costs, in credits. All parts add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The model (as clients name it), or `*` for every model without its own price.
    pub model: String,
    /// Charged once per task.
    #[serde(default)]
    pub per_task: i64,
    /// Charged per image asked for (`n`).
    #[serde(default)]
    pub per_image: i64,
    /// Charged per second of video asked for, by resolution (`540p`, `720p`,
    /// `1080p`, `4k`, or `*` for any other, and for requests that name none).
    #[serde(default)]
    pub per_video_second: BTreeMap<String, i64>,
}

impl Price {
    /// The first broken rule as `(field, rule)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, rule: &str| Err((field.to_string(), rule.to_string()));
        if self.model.trim().is_empty() || self.model.chars().count() > 200 {
            return err(
                "model",
                "must be a model name (1 to 200 characters) or \"*\"",
            );
        }
        let in_range = |c: Credits| (0..=MAX_PRICE).contains(&c);
        if !in_range(self.per_task) {
            return err("per_task", "must be an integer from 0 to 1000000000");
        }
        if !in_range(self.per_image) {
            return err("per_image", "must be an integer from 0 to 1000000000");
        }
        for (resolution, c) in &self.per_video_second {
            if resolution.is_empty() || resolution.chars().count() > 16 {
                return err("per_video_second", "resolutions are 1 to 16 characters");
            }
            if !in_range(*c) {
                return err(
                    &format!("per_video_second.{resolution}"),
                    "must be an integer from 0 to 1000000000",
                );
            }
        }
        Ok(())
    }

    /// The charge for a task of `kind` asking `request`.
    pub fn quote(&self, kind: TaskKind, request: &GenerationRequest) -> Charge {
        let (per_output, outputs) = match kind {
            TaskKind::Image => (self.per_image, request.n.max(1)),
            TaskKind::Video => {
                let secs = request.duration_secs.unwrap_or(DEFAULT_VIDEO_SECS);
                let resolution = request.resolution.as_deref().unwrap_or(ANY_MODEL);
                let per_second = self
                    .per_video_second
                    .get(resolution)
                    .or_else(|| self.per_video_second.get(ANY_MODEL))
                    .copied()
                    .unwrap_or(0);
                (per_second.saturating_mul(Credits::from(secs)), 1)
            }
        };
        Charge {
            per_task: self.per_task,
            per_output,
            outputs,
        }
    }
}

/// A price as the admin API takes it: the model is in the path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Charged once per task.
    #[serde(default, deserialize_with = "crate::validate::required_integer")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub per_task: i64,
    /// Charged per image asked for (`n`).
    #[serde(default, deserialize_with = "crate::validate::required_integer")]
    #[schema(minimum = 0, maximum = 1000000000)]
    pub per_image: i64,
    /// Charged per second of video, by resolution (`*`: any other).
    #[serde(default, deserialize_with = "credits_by_resolution")]
    #[schema(schema_with = per_video_second_schema)]
    pub per_video_second: BTreeMap<String, Credits>,
}

/// A map of whole numbers, `5.0` included (JSON Schema's integers).
fn credits_by_resolution<'de, D>(de: D) -> Result<BTreeMap<String, Credits>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw = BTreeMap::<String, serde_json::Number>::deserialize(de)?;
    raw.into_iter()
        .map(|(k, n)| Ok((k, crate::validate::whole(&n)?)))
        .collect()
}

/// A [`Price`] as JSON Schema, as `Price::check` takes it.
pub fn price_schema() -> serde_json::Value {
    let credits = serde_json::json!({"type": "integer", "minimum": 0, "maximum": MAX_PRICE});
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["model"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
            "per_task": credits,
            "per_image": credits,
            "per_video_second": serde_json::to_value(per_video_second_schema()).unwrap_or_default(),
        },
    })
}

/// Resolutions (1 to 16 characters) to credits (0 to `MAX_PRICE`).
fn per_video_second_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    let credits = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(MAX_PRICE));
    let resolution = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(16));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(credits))
        .property_names(Some(resolution))
        .build()
}

impl PriceBody {
    pub fn for_model(self, model: &str) -> Price {
        Price {
            model: model.to_string(),
            per_task: self.per_task,
            per_image: self.per_image,
            per_video_second: self.per_video_second,
        }
    }
}

/// Prices by model, with `*` for the rest. A model with no price (and no
/// `*`) costs nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBook {
    prices: BTreeMap<String, Price>,
}

impl PriceBook {
    /// Later prices for the same model replace earlier ones.
    pub fn new(prices: impl IntoIterator<Item = Price>) -> PriceBook {
        PriceBook {
            prices: prices.into_iter().map(|p| (p.model.clone(), p)).collect(),
        }
    }

    pub fn price(&self, model: &str) -> Option<&Price> {
        self.prices
            .get(model)
            .or_else(|| self.prices.get(ANY_MODEL))
    }

    /// What a task of `model` and `kind` asking `request` is charged.
    pub fn quote(&self, model: &str, kind: TaskKind, request: &GenerationRequest) -> Charge {
        self.price(model)
            .map(|p| p.quote(kind, request))
            .unwrap_or_default()
    }

    pub fn prices(&self) -> impl Iterator<Item = &Price> {
        self.prices.values()
    }
}

/// What a task was charged when accepted: `per_task` plus `per_output` for
/// each of `outputs` (images; one video). Fixed on the task: a later change
/// of price does not touch tasks already accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub per_task: i64,
    pub per_output: i64,
    pub outputs: u32,
}

impl Charge {
    pub fn total(&self) -> Credits {
        self.per_task
            .saturating_add(self.per_output.saturating_mul(Credits::from(self.outputs)))
    }

    pub fn is_free(&self) -> bool {
        self.total() == 0
    }
}

/// The outputs a task delivered, as charged: images, or one video.
pub fn delivered(kind: TaskKind, artifacts: &[Artifact]) -> u32 {
    let role = match kind {
        TaskKind::Image => ArtifactRole::Image,
        TaskKind::Video => ArtifactRole::Video,
    };
    let n = artifacts.iter().filter(|a| a.role == role).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What a task that ends in `state` with `delivered` outputs is refunded of
/// `charge`: all of it when it ends without a result (failed, timed out,
/// canceled), the outputs it did not deliver when it completes with fewer
/// than were charged, nothing otherwise or before it ends.
pub fn refund(charge: &Charge, state: TaskState, delivered: u32) -> Credits {
    match state {
        TaskState::Failed | TaskState::Canceled => charge.total(),
        TaskState::Completed => {
            let missing = charge.outputs.saturating_sub(delivered);
            charge.per_output.saturating_mul(Credits::from(missing))
        }
        TaskState::Pending | TaskState::Processing => 0,
    }
}

/// Why an entry is in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits given by an operator.
    Grant,
    /// A task accepted.
    Charge,
    /// A task that ended without (all of) what it was charged for.
    Refund,
    /// An operator's correction (either sign).
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Charge => "charge",
            EntryKind::Refund => "refund",
            EntryKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        [
            EntryKind::Grant,
            EntryKind::Charge,
            EntryKind::Refund,
            EntryKind::Adjustment,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One change of a key's balance. Entries are only ever added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LedgerEntry {
    pub id: uuid::Uuid,
    pub key_id: uuid::Uuid,
    /// Unix ms.
    pub at: crate::task::Millis,
    pub kind: EntryKind,
    /// Signed: a charge is negative, a grant or refund positive.
    pub amount: i64,
    pub task_id: Option<uuid::Uuid>,
    pub reason: Option<String>,
}

/// What a key may do, beyond its balance. `None`: no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per second on each instance (bursts of as many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100000)]
    pub requests_per_sec: Option<u32>,
    /// Tasks accepted and not finished, across instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_in_flight: Option<u32>,
    /// Credits charged (net of refunds) per UTC day, across instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub daily_spend: Option<i64>,
    /// The only models the key may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

impl KeyLimits {
    /// The first broken rule as `(field, rule)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, rule: &str| Err((field.to_string(), rule.to_string()));
        if matches!(self.requests_per_sec, Some(r) if !(1..=100_000).contains(&r)) {
            return err("limits.requests_per_sec", "must be from 1 to 100000");
        }
        if matches!(self.max_in_flight, Some(r) if !(1..=1_000_000).contains(&r)) {
            return err("limits.max_in_flight", "must be from 1 to 1000000");
        }
        if matches!(self.daily_spend, Some(c) if c < 0) {
            return err("limits.daily_spend", "must not be negative");
        }
        if let Some(models) = &self.models
            && models.iter().any(|m| m.trim().is_empty() || m.len() > 200)
        {
            return err("limits.models", "each model is 1 to 200 characters");
        }
        Ok(())
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// What the store checks, in the accept transaction, before a task is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Admission {
    pub charge: Charge,
    pub max_in_flight: Option<u32>,
    /// Checked against what the key spent since the UTC day began.
    pub daily_spend: Option<Credits>,
}

impl Admission {
    /// No charge and no limit: what a free task of an unlimited key asks.
    pub const FREE: Admission = Admission {
        charge: Charge {
            per_task: 0,
            per_output: 0,
            outputs: 0,
        },
        max_in_flight: None,
        daily_spend: None,
    };

    /// Nothing to charge and no limit to check: the plain insert will do.
    pub fn is_free(&self) -> bool {
        self.charge.is_free() && self.max_in_flight.is_none() && self.daily_spend.is_none()
    }
}

/// Why the store refused to accept a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("insufficient credits: the task costs {needed}, the key's balance is {balance}")]
    Credits { balance: Credits, needed: Credits },
    #[error("the key already has {limit} tasks in flight, its limit")]
    InFlight { limit: u32 },
    #[error(
        "the key's daily spend limit of {limit} credits would be passed ({spent} spent today, the task costs {needed})"
    )]
    DailySpend {
        limit: Credits,
        spent: Credits,
        needed: Credits,
        /// Until the next UTC day starts.
        retry_after_secs: u64,
    },
}

impl Refusal {
    /// 402 for the balance (more credits are needed), 429 for a limit
    /// (waiting helps). Dialects may answer otherwise (OpenAI: 429).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Credits { .. } => 402,
            Refusal::InFlight { .. } | Refusal::DailySpend { .. } => 429,
        }
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Credits { .. } => None,
            // A task in flight ends soon enough to try again in a second.
            Refusal::InFlight { .. } => Some(1),
            Refusal::DailySpend {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
        }
    }
}

impl From<Refusal> for crate::ApiError {
    fn from(r: Refusal) -> crate::ApiError {
        crate::ApiError::Refused(r)
    }
}

/// The start of the UTC day `now` falls in, and the seconds left in it.
pub fn utc_day(now: crate::task::Millis) -> (crate::task::Millis, u64) {
    const DAY_MS: i64 = 86_400_000;
    let start = now - now.rem_euclid(DAY_MS);
    let left_ms = start + DAY_MS - now;
    (
        start,
        u64::try_from(left_ms.div_euclid(1000) + 1).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> Price {
        Price {
            model: "m".into(),
            per_task: 2,
            per_image: 5,
            per_video_second: BTreeMap::from([("1080p".into(), 10), ("*".into(), 4)]),
        }
    }

    fn request(n: u32, secs: Option<u32>, res: Option<&str>) -> GenerationRequest {
        GenerationRequest {
            n,
            duration_secs: secs,
            resolution: res.map(String::from),
            ..GenerationRequest::default()
        }
    }

    #[test]
    fn images_cost_per_task_plus_per_image() {
        let c = price().quote(TaskKind::Image, &request(3, None, None));
        assert_eq!(c.total(), 2 + 3 * 5);
        assert_eq!(refund(&c, TaskState::Completed, 3), 0);
        assert_eq!(refund(&c, TaskState::Completed, 1), 10);
        assert_eq!(refund(&c, TaskState::Failed, 0), 17);
        assert_eq!(refund(&c, TaskState::Canceled, 0), 17);
        assert_eq!(refund(&c, TaskState::Processing, 0), 0);
    }

    #[test]
    fn video_costs_per_second_by_resolution() {
        let p = price();
        let hd = p.quote(TaskKind::Video, &request(1, Some(9), Some("1080p")));
        assert_eq!(hd.total(), 2 + 9 * 10);
        let other = p.quote(TaskKind::Video, &request(1, Some(5), Some("720p")));
        assert_eq!(other.total(), 2 + 5 * 4);
        let unsaid = p.quote(TaskKind::Video, &request(1, None, None));
        assert_eq!(unsaid.total(), 2 + DEFAULT_VIDEO_SECS as i64 * 4);
        assert_eq!(refund(&hd, TaskState::Completed, 1), 0);
        assert_eq!(refund(&hd, TaskState::Completed, 0), 90);
    }

    #[test]
    fn the_book_prefers_the_model_then_the_star_then_free() {
        let star = Price {
            model: "*".into(),
            per_task: 1,
            ..Price::default()
        };
        let book = PriceBook::new([price(), star]);
        let r = request(1, None, None);
        assert_eq!(book.quote("m", TaskKind::Image, &r).total(), 7);
        assert_eq!(book.quote("other", TaskKind::Image, &r).total(), 1);
        assert!(
            PriceBook::default()
                .quote("m", TaskKind::Image, &r)
                .is_free()
        );
    }

    #[test]
    fn bad_prices_and_limits_name_the_field() {
        let neg = Price {
            per_image: -1,
            ..price()
        };
        assert_eq!(neg.check().unwrap_err().0, "per_image");
        let blank = Price {
            model: " ".into(),
            ..price()
        };
        assert_eq!(blank.check().unwrap_err().0, "model");
        let l = KeyLimits {
            max_in_flight: Some(0),
            ..KeyLimits::default()
        };
        assert_eq!(l.check().unwrap_err().0, "limits.max_in_flight");
        assert!(price().check().is_ok());
    }
}
