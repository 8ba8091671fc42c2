//! Channels as configured — which upstream serves which models, with what
//! credentials and limits — and the order a task tries them in. Pure: the
//! engine supplies channel health and the random draws.

use crate::credits::Price;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A channel setting that breaks a rule; `field` names it as `[[channels]]`
/// does (`credentials.api_key`, say), for a 400 or a CLI message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct SpecError {
    pub channel: String,
    pub field: String,
    pub rule: String,
}

impl SpecError {
    fn message(&self) -> String {
        if self.field == "name" {
            format!("channel name {:?} {}", self.channel, self.rule)
        } else {
            format!("channel {:?}: {} {}", self.channel, self.field, self.rule)
        }
    }
}

/// The upstream a channel talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Sandbox,
    Luma,
    Kling,
    Replicate,
    OpenaiImages,
    Comfyui,
    Gengate,
    GeminiVeo,
    OpenaiVideos,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Sandbox => "sandbox",
            ProviderKind::Luma => "luma",
            ProviderKind::Kling => "kling",
            ProviderKind::Replicate => "replicate",
            ProviderKind::OpenaiImages => "openai-images",
            ProviderKind::Comfyui => "comfyui",
            ProviderKind::Gengate => "gengate",
            ProviderKind::GeminiVeo => "gemini-veo",
            ProviderKind::OpenaiVideos => "openai-videos",
        }
    }
}

/// Secrets a channel authenticates with. Never shown: `Debug` and the
/// admin views print only which fields are set.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// A bearer token (Luma, Replicate, OpenAI, Kling's API-key mode, gengate).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Kling's access key and secret key, signed into a short-lived JWT.
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    /// The secret an upstream signs its callbacks with (Replicate's
    /// `whsec_...`, Standard Webhooks).
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Credentials")
            .field("api_key", &set(&self.api_key))
            .field("access_key", &set(&self.access_key))
            .field("secret_key", &set(&self.secret_key))
            .field("webhook_secret", &set(&self.webhook_secret))
            .finish()
    }
}

/// The lowest `rate_limit_per_sec`: one request in about 11 days (the
/// limiter's period must fit a `Duration`).
pub const MIN_RATE_PER_SEC: f64 = 1e-6;
/// The highest `rate_limit_per_sec` (more is no limit at all).
pub const MAX_RATE_PER_SEC: f64 = 1e9;

/// Any client-facing model name, in a channel's `models` map.
pub const ANY_MODEL: &str = "*";

/// One channel, as written in `gengate.toml` (`[[channels]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    /// Unique; tasks record the channel they were sent to by this name.
    pub name: String,
    pub provider: ProviderKind,
    /// The upstream's API root; every provider but the sandbox needs one.
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub credentials: Credentials,
    /// Client-facing model name → the upstream's model name. `"*"` serves
    /// every model, passing its name through unless mapped to another.
    pub models: BTreeMap<String, String>,
    /// Higher first; channels of equal priority share by weight.
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Tasks submitted and not yet finished on this channel, at most.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Requests to the upstream under way at once from one instance, at
    /// most (polls wait their turn; default 64).
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    /// Upstream requests per second, at most (submits and polls alike).
    #[serde(default)]
    pub rate_limit_per_sec: Option<f64>,
    /// Deadline per client-facing model, in seconds, overriding the
    /// gateway's video/image defaults (the longest among the channels
    /// serving a model applies, fixed when the task is accepted).
    #[serde(default)]
    pub deadline_secs: BTreeMap<String, u64>,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Give upstreams that call back (Luma, Kling, Replicate, gengate) a
    /// callback URL of gengate's own, so results arrive without polling;
    /// polls become a slow fallback. Needs gengate reachable from the
    /// upstream at `public_url`.
    #[serde(default)]
    pub callbacks: bool,
    /// Sandbox only: how long its jobs take, and how often they fail.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// ComfyUI only: the file holding the workflow template (API-format
    /// JSON) with placeholders for prompt, negative prompt, seed and size.
    #[serde(default)]
    pub workflow: Option<String>,
    /// What the operator pays this channel's upstream, per model (`*`: the
    /// rest), priced as the price book is: fixed on a task when it
    /// completes, for the usage report's margin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost: Vec<Price>,
}

/// The JSON Schema of a channel as the admin API takes it: a `oneOf` per
/// provider holding the rules [`ChannelSpec::check`] and the adapters
/// apply (base_url, credentials, sandbox-only fields); with `partial`, a
/// PATCH: the same fields, each optional, checked with the stored ones.
pub fn spec_schema(partial: bool) -> serde_json::Value {
    use serde_json::json;
    let text = json!({"type": ["string", "null"], "minLength": 1});
    let int =
        |min: i64, max: u64| json!({"type": ["integer", "null"], "minimum": min, "maximum": max});
    let absent = json!({"type": "null"});
    // Standard Webhooks secrets: whsec_ then non-empty base64.
    let whsec = json!({"type": ["string", "null"],
        "pattern": "^(whsec_)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"});
    let credentials = |api_key: bool, kling_pair: bool, signed: bool| {
        let mut props = json!({
            "api_key": text,
            "access_key": if kling_pair { text.clone() } else { absent.clone() },
            "secret_key": if kling_pair { text.clone() } else { absent.clone() },
            "webhook_secret": if signed { whsec.clone() } else { text.clone() },
        });
        let mut c = json!({"type": "object", "additionalProperties": false});
        if api_key && !partial {
            props["api_key"] = json!({"type": "string", "minLength": 1});
            c["required"] = json!(["api_key"]);
        }
        c["properties"] = props;
        c
    };
    let common = json!({
        "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "models": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"},
                   "description": "client model name → upstream model name; \"*\" serves every model"},
        "priority": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
        "weight": {"type": "integer", "minimum": 1, "maximum": u32::MAX},
        "max_in_flight": int(1, u64::from(u32::MAX)),
        "max_concurrent_requests": int(1, u64::from(u32::MAX)),
        "rate_limit_per_sec": {"type": ["number", "null"], "minimum": MIN_RATE_PER_SEC, "maximum": MAX_RATE_PER_SEC},
        "deadline_secs": {"type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": u64::MAX}},
        "enabled": {"type": "boolean"},
        "callbacks": {"type": "boolean"},
        "workflow": {"type": ["string", "null"]},
        "cost": {"type": "array", "items": crate::credits::price_schema(),
                 "description": "what the upstream charges the operator, priced per model as [[prices]] are"},
        "latency_ms": absent, "failure_rate": absent,
    });
    let url = json!({"type": "string", "pattern": "^https?://"});
    let variant = |provider: &str,
                   extra: serde_json::Value,
                   creds: serde_json::Value,
                   base_url_required: bool| {
        let mut props = common.clone();
        props["provider"] = json!({"enum": [provider]});
        props["base_url"] = if base_url_required && !partial {
            url.clone()
        } else {
            json!({"type": ["string", "null"], "pattern": "^https?://"})
        };
        props["credentials"] = creds;
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let mut required = vec!["name", "provider", "models"];
        if base_url_required {
            required.push("base_url");
        }
        let mut v = json!({"type": "object", "additionalProperties": false, "properties": props});
        if !partial {
            v["required"] = json!(required);
        }
        v
    };
    // Credentials a provider cannot do without must be given.
    let needs = |mut v: serde_json::Value, field: &str| {
        if let Some(r) = v.get_mut("required").and_then(|r| r.as_array_mut()) {
            r.push(json!(field));
        }
        v
    };
    let keyed = |p: &str, signed: bool| {
        needs(
            variant(p, json!({}), credentials(true, false, signed), true),
            "credentials",
        )
    };
    let kling_creds = {
        let mut c = credentials(false, true, false);
        if !partial {
            c["anyOf"] = json!([
                {"required": ["api_key"], "properties": {"api_key": {"type": "string"}}},
                {"required": ["access_key", "secret_key"],
                 "properties": {"access_key": {"type": "string"}, "secret_key": {"type": "string"}}}
            ]);
        }
        c
    };
    let variants = vec![
        variant(
            "sandbox",
            json!({"latency_ms": int(0, u64::MAX), "failure_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}),
            credentials(false, false, false),
            false,
        ),
        keyed("luma", false),
        needs(
            variant("kling", json!({}), kling_creds, true),
            "credentials",
        ),
        keyed("replicate", true),
        keyed("gengate", true),
        variant(
            "openai-images",
            json!({}),
            credentials(false, false, false),
            true,
        ),
        needs(
            variant(
                "comfyui",
                json!({"workflow": {"type": "string", "description": "The path, on the gengate server, of an API-format workflow JSON"}}),
                credentials(false, false, false),
                true,
            ),
            "workflow",
        ),
    ];
    if partial {
        // The provider may be left out: any one variant's fields, optional.
        return json!({"type": "object", "anyOf": variants});
    }
    json!({"oneOf": variants})
}

fn default_weight() -> u32 {
    1
}

fn default_enabled() -> bool {
    true
}

impl ChannelSpec {
    /// A channel of `provider` serving every model under its own name, with
    /// the defaults a `[[channels]]` entry gets for the fields it leaves out.
    pub fn new(name: &str, provider: ProviderKind) -> ChannelSpec {
        ChannelSpec {
            name: name.into(),
            provider,
            base_url: None,
            credentials: Credentials::default(),
            models: BTreeMap::from([(ANY_MODEL.into(), ANY_MODEL.into())]),
            priority: 0,
            weight: default_weight(),
            max_in_flight: None,
            max_concurrent_requests: None,
            rate_limit_per_sec: None,
            deadline_secs: BTreeMap::new(),
            enabled: default_enabled(),
            callbacks: false,
            latency_ms: None,
            failure_rate: None,
            workflow: None,
            cost: Vec::new(),
        }
    }

    /// `field` of this channel breaks `rule`.
    pub fn error(&self, field: &str, rule: &str) -> SpecError {
        SpecError {
            channel: self.name.clone(),
            field: field.to_string(),
            rule: rule.to_string(),
        }
    }

    /// The upstream's name for `model`, if this channel serves it.
    pub fn upstream_model<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        match self.models.get(model) {
            Some(m) => Some(m),
            None => self
                .models
                .get(ANY_MODEL)
                .map(|m| if m == ANY_MODEL { model } else { m.as_str() }),
        }
    }

    /// What is wrong with this channel's settings, naming the field.
    pub fn check(&self) -> Result<(), SpecError> {
        let field = |f: &str, why: &str| Err(self.error(f, why));
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return field(
                "name",
                "must be 1 to 64 of letters, digits, '-', '_' or '.'",
            );
        }
        if self.models.is_empty() {
            return field("models", "must name at least one model (or \"*\")");
        }
        if self.deadline_secs.values().any(|s| *s == 0) {
            return field("deadline_secs", "must be at least 1 second");
        }
        if self.weight == 0 {
            return field("weight", "must be at least 1");
        }
        if self.max_in_flight == Some(0) {
            return field("max_in_flight", "must be at least 1");
        }
        if self.max_concurrent_requests == Some(0) {
            return field("max_concurrent_requests", "must be at least 1");
        }
        if self
            .rate_limit_per_sec
            .is_some_and(|r| !(MIN_RATE_PER_SEC..=MAX_RATE_PER_SEC).contains(&r))
        {
            return field("rate_limit_per_sec", "must be between 1e-6 and 1e9");
        }
        if self.failure_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return field("failure_rate", "must be between 0 and 1");
        }
        let sandbox = self.provider == ProviderKind::Sandbox;
        if !sandbox && (self.latency_ms.is_some() || self.failure_rate.is_some()) {
            return field("latency_ms/failure_rate", "apply to sandbox channels only");
        }
        match &self.base_url {
            None if !sandbox => return field("base_url", "is required"),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                return field("base_url", "must be an http:// or https:// URL");
            }
            _ => {}
        }
        let c = &self.credentials;
        let needs_key = !matches!(
            self.provider,
            ProviderKind::Sandbox | ProviderKind::Comfyui | ProviderKind::OpenaiImages
        );
        let kling_pair = c.access_key.is_some() && c.secret_key.is_some();
        if c.access_key.is_some() != c.secret_key.is_some() {
            return field(
                "credentials",
                "need both access_key and secret_key, or neither",
            );
        }
        if kling_pair && self.provider != ProviderKind::Kling {
            return field(
                "credentials",
                "access_key/secret_key are for kling channels",
            );
        }
        if needs_key && c.api_key.is_none() && !kling_pair {
            return field("credentials.api_key", "is required for this provider");
        }
        for price in &self.cost {
            if let Err((f, rule)) = price.check() {
                return field(&format!("cost.{f}"), &rule);
            }
        }
        Ok(())
    }
}

/// The channels to try for `model`, best first, as indices into
/// `channels`: enabled ones that serve it and are `healthy`, highest
/// priority first; within one priority, a weighted random order (each
/// channel's key is `u^(1/weight)` for a draw `u` in (0, 1], largest
/// first), so traffic splits by weight.
pub fn candidates(
    channels: &[ChannelSpec],
    model: &str,
    healthy: impl Fn(&ChannelSpec) -> bool,
    mut draw: impl FnMut() -> f64,
) -> Vec<usize> {
    let mut keyed: Vec<(i32, f64, usize)> = channels
        .iter()
        .enumerate()
        .filter(|(_, c)| c.enabled && c.upstream_model(model).is_some() && healthy(c))
        .map(|(i, c)| {
            let u = draw().clamp(f64::MIN_POSITIVE, 1.0);
            (c.priority, u.powf(1.0 / f64::from(c.weight)), i)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, priority: i32, weight: u32, models: &[(&str, &str)]) -> ChannelSpec {
        ChannelSpec {
            models: models
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            priority,
            weight,
            ..ChannelSpec::new(name, ProviderKind::Sandbox)
        }
    }

    #[test]
    fn models_map_to_upstream_names_and_star_passes_through() {
        let c = spec("a", 0, 1, &[("kling-image", "kling-v2"), ("*", "*")]);
        assert_eq!(c.upstream_model("kling-image"), Some("kling-v2"));
        assert_eq!(c.upstream_model("ray-2"), Some("ray-2"));
        let only = spec("b", 0, 1, &[("ray-2", "ray-2-upstream")]);
        assert_eq!(only.upstream_model("kling-image"), None);
        let fixed = spec("c", 0, 1, &[("*", "flux")]);
        assert_eq!(fixed.upstream_model("anything"), Some("flux"));
    }

    #[test]
    fn higher_priority_first_then_unhealthy_and_disabled_are_skipped() {
        let mut off = spec("off", 9, 1, &[("*", "*")]);
        off.enabled = false;
        let chans = [
            spec("low", 0, 1, &[("*", "*")]),
            spec("high", 5, 1, &[("*", "*")]),
            spec("sick", 7, 1, &[("*", "*")]),
            off,
            spec("other-model", 8, 1, &[("x", "x")]),
        ];
        let names: Vec<_> = candidates(&chans, "m", |c| c.name != "sick", || 0.5)
            .into_iter()
            .map(|i| chans[i].name.as_str())
            .collect();
        assert_eq!(names, ["high", "low"]);
    }

    #[test]
    fn equal_priorities_split_by_weight() {
        let chans = [
            spec("heavy", 1, 3, &[("*", "*")]),
            spec("light", 1, 1, &[("*", "*")]),
        ];
        // A fixed LCG stands in for the engine's random draws.
        let mut x: u64 = 42;
        let mut draw = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let first_heavy = (0..10_000)
            .filter(|_| chans[candidates(&chans, "m", |_| true, &mut draw)[0]].name == "heavy")
            .count();
        // Weight 3 against 1: heavy goes first 3 times in 4.
        assert!((7_000..8_000).contains(&first_heavy), "{first_heavy}");
    }

    #[test]
    fn checks_name_the_field() {
        let mut c = spec("k", 0, 1, &[("*", "*")]);
        c.provider = ProviderKind::Kling;
        let field = |c: &ChannelSpec| c.check().unwrap_err().field;
        assert_eq!(field(&c), "base_url");
        c.base_url = Some("https://api.klingai.com".into());
        assert_eq!(field(&c), "credentials.api_key");
        c.credentials.access_key = Some("ak".into());
        let e = c.check().unwrap_err();
        assert_eq!(e.field, "credentials");
        assert!(e.to_string().contains("both access_key and secret_key"));
        c.credentials.secret_key = Some("sk".into());
        assert_eq!(c.check(), Ok(()));
        c.deadline_secs.insert("kling-image".into(), 0);
        assert_eq!(field(&c), "deadline_secs");
        c.deadline_secs.clear();
        c.weight = 0;
        assert_eq!(field(&c), "weight");
        c.weight = 1;
        for bad in [5e-324, 1e-7, 0.0, -1.0, f64::NAN, 2e9] {
            c.rate_limit_per_sec = Some(bad);
            assert_eq!(field(&c), "rate_limit_per_sec", "{bad}");
        }
        c.rate_limit_per_sec = Some(MIN_RATE_PER_SEC);
        assert_eq!(c.check(), Ok(()));
        c.rate_limit_per_sec = None;
        let mut s = spec("bad name!", 0, 1, &[("*", "*")]);
        assert_eq!(field(&s), "name");
        assert!(s.check().unwrap_err().to_string().contains("channel name"));
        s.name = "ok".into();
        s.models.clear();
        assert_eq!(field(&s), "models");
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let mut c = spec("k", 0, 1, &[("*", "*")]);
        c.credentials.api_key = Some("sk-very-secret".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("<set>"));
    }
}
