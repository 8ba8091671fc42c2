//! OpenAI images (`POST /v1/images/generations`, the `openai` SDKs'
//! `images.generate`): the request, the answer and the error envelope.
//! The answer is synchronous: the server holds the request until the task
//! ends; this module only reads and writes the shapes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::credits::Refusal;
use crate::dialect::schema;
use crate::error::ApiError;
use crate::request::GenerationRequest;
use crate::task::{Dialect, NewTask, TaskKind};
use crate::validate::{max_chars, model_name, one_of, parse_json, required_text};

/// OpenAI's own default model.
pub const DEFAULT_MODEL: &str = "dall-e-2";
pub const MAX_PROMPT_CHARS: usize = 32_000;
pub const MAX_MODEL_CHARS: usize = 128;
pub const MAX_N: u32 = 10;
pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 4096;
pub const MAX_USER_CHARS: usize = 256;
/// As OpenAI's spec lists them.
pub const QUALITIES: &[&str] = &["auto", "standard", "hd", "low", "medium", "high"];
pub const STYLES: &[&str] = &["vivid", "natural"];

/// `POST /v1/images/generations`. Fields not listed are ignored, as OpenAI
/// ignores what a model does not use.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[schema(as = OpenAiCreateImage)]
pub struct CreateImage {
    #[schema(schema_with = schema::text::<MAX_PROMPT_CHARS>, required = true)]
    pub prompt: Option<String>,
    /// A model a channel serves (default `dall-e-2`, as OpenAI's).
    #[schema(schema_with = schema::optional_model::<MAX_MODEL_CHARS>)]
    pub model: Option<String>,
    /// 1 to 10 (default 1).
    #[serde(default, deserialize_with = "crate::validate::integer")]
    #[schema(minimum = 1, maximum = 10)]
    pub n: Option<u32>,
    /// `WxH` (each side 64 to 4096) or `auto`.
    #[schema(
        pattern = "^(auto|(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6])x(6[4-9]|[7-9][0-9]|[1-9][0-9]{2}|[1-3][0-9]{3}|40[0-8][0-9]|409[0-6]))$"
    )]
    pub size: Option<String>,
    /// `url` (default) or `b64_json`.
    #[schema(schema_with = response_format_schema)]
    pub response_format: Option<String>,
    /// Passed to the upstream.
    #[schema(schema_with = quality_schema)]
    pub quality: Option<String>,
    /// Passed to the upstream.
    #[schema(schema_with = style_schema)]
    pub style: Option<String>,
    /// The end user, as OpenAI takes it: checked (≤ 256 characters), not
    /// kept; upstreams are told gengate's key instead.
    #[schema(max_length = 256)]
    pub user: Option<String>,
    /// Streaming is not offered: false or left out.
    #[schema(schema_with = stream_schema)]
    pub stream: Option<bool>,
}

fn response_format_schema() -> utoipa::openapi::Object {
    schema::choice(&["url", "b64_json"])
}

fn quality_schema() -> utoipa::openapi::Object {
    schema::choice(QUALITIES)
}

fn style_schema() -> utoipa::openapi::Object {
    schema::choice(STYLES)
}

fn stream_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    // The type said, or utoipa writes `object`, which neither value is.
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Boolean, Type::Null]))
        .enum_values(Some([
            serde_json::Value::Bool(false),
            serde_json::Value::Null,
        ]))
        .build()
}

/// How the answer carries the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Url,
    B64Json,
}

pub struct ParsedCreate {
    pub task: NewTask,
    pub response_format: ResponseFormat,
}

/// A rule broken under one of OpenAI's models says whose rule it is.
fn for_model(e: ApiError, model: &str, openai: bool) -> ApiError {
    match e {
        ApiError::Validation { field, rule } if openai => ApiError::Validation {
            field,
            rule: format!("{rule} for {model}"),
        },
        other => other,
    }
}

/// `WxH`, each side within bounds.
fn size(s: &str) -> Result<(u32, u32), ApiError> {
    let bad = || {
        ApiError::validation(
            "size",
            format!("must be WIDTHxHEIGHT, each {MIN_SIDE} to {MAX_SIDE}, or auto (got {s:?})"),
        )
    };
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(MIN_SIDE..=MAX_SIDE).contains(&w) || !(MIN_SIDE..=MAX_SIDE).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// OpenAI's own rules for one of its models: the longest prompt, the
/// sizes (`auto` where the model takes it) and the most images.
pub struct ModelRules {
    pub max_prompt_chars: usize,
    pub sizes: &'static [&'static str],
    pub max_n: u32,
}

/// The rules of `model` when it is one of OpenAI's (other models, served by
/// other upstreams, have the general ones).
pub fn openai_rules(model: &str) -> Option<ModelRules> {
    match model {
        "dall-e-2" => Some(ModelRules {
            max_prompt_chars: 1000,
            sizes: &["256x256", "512x512", "1024x1024"],
            max_n: 10,
        }),
        "dall-e-3" => Some(ModelRules {
            max_prompt_chars: 4000,
            sizes: &["1024x1024", "1792x1024", "1024x1792"],
            max_n: 1,
        }),
        m if m.starts_with("gpt-image-") => Some(ModelRules {
            max_prompt_chars: 32_000,
            sizes: &["auto", "1024x1024", "1536x1024", "1024x1536"],
            max_n: 10,
        }),
        _ => None,
    }
}

pub fn parse_create(body: &[u8]) -> Result<ParsedCreate, ApiError> {
    let b: CreateImage = parse_json(body)?;
    let model = match b.model.clone().filter(|m| !m.is_empty()) {
        None => DEFAULT_MODEL.to_string(),
        Some(m) => {
            model_name("model", &m, MAX_MODEL_CHARS)?;
            m
        }
    };
    let rules = openai_rules(&model);
    let max_prompt = rules
        .as_ref()
        .map_or(MAX_PROMPT_CHARS, |r| r.max_prompt_chars);
    let prompt = required_text("prompt", b.prompt, max_prompt)
        .map_err(|e| for_model(e, &model, rules.is_some()))?;
    let n = b.n.unwrap_or(1);
    let max_n = rules.as_ref().map_or(MAX_N, |r| r.max_n);
    if !(1..=max_n).contains(&n) {
        let whose = if rules.is_some() {
            format!(" for {model}")
        } else {
            String::new()
        };
        return Err(ApiError::validation(
            "n",
            format!("must be 1 to {max_n}{whose} (got {n})"),
        ));
    }
    if let (Some(r), Some(size)) = (&rules, b.size.as_deref())
        && !r.sizes.contains(&size)
    {
        return Err(ApiError::validation(
            "size",
            format!(
                "must be one of {} for {model} (got {size:?})",
                r.sizes.join(", ")
            ),
        ));
    }
    let (aspect_ratio, resolution) = match b.size.as_deref() {
        None | Some("auto") => ("1:1".to_string(), None),
        Some(s) => {
            let (w, h) = size(s)?;
            let g = gcd(w, h);
            (format!("{}:{}", w / g, h / g), Some(format!("{w}x{h}")))
        }
    };
    let response_format = match b.response_format.as_deref() {
        None | Some("url") => ResponseFormat::Url,
        Some("b64_json") => ResponseFormat::B64Json,
        Some(other) => {
            return Err(ApiError::validation(
                "response_format",
                format!("must be url or b64_json (got {other:?})"),
            ));
        }
    };
    if let Some(q) = &b.quality {
        one_of("quality", q, QUALITIES)?;
    }
    if let Some(s) = &b.style {
        one_of("style", s, STYLES)?;
    }
    if let Some(u) = &b.user {
        max_chars("user", u, MAX_USER_CHARS)?;
    }
    if b.stream == Some(true) {
        return Err(ApiError::validation(
            "stream",
            "is not supported by this gateway: leave it out or false",
        ));
    }
    Ok(ParsedCreate {
        task: NewTask {
            dialect: Dialect::OpenaiImages,
            kind: TaskKind::Image,
            model,
            request: GenerationRequest {
                prompt,
                aspect_ratio,
                n,
                resolution,
                quality: b.quality.filter(|q| q != "auto"),
                style: b.style,
                ..GenerationRequest::default()
            },
            callback_url: None,
            external_id: None,
            channel: None,
        },
        response_format,
    })
}

/// `{created, data}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImagesResponse {
    /// Unix seconds the task was created.
    pub created: i64,
    pub data: Vec<Image>,
}

/// One image: `url` or `b64_json`, as asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Image {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
}

/// OpenAI's error envelope: `{"error": {message, type, param, code}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = OpenAiErrorDetail)]
pub struct ErrorDetail {
    pub message: String,
    /// invalid_request_error, authentication_error, rate_limit_error,
    /// server_error, or timeout (the task is still running).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorEnvelope {
    /// `err` in OpenAI's words: its field becomes `param`.
    pub fn from_api(err: &ApiError) -> ErrorEnvelope {
        let (kind, code) = match err {
            ApiError::Validation { .. } | ApiError::MalformedJson(_) => {
                ("invalid_request_error", None)
            }
            ApiError::Unauthorized(_) => ("authentication_error", Some("invalid_api_key")),
            ApiError::Forbidden(_) => ("permission_error", None),
            ApiError::RateLimited { .. } | ApiError::Refused(Refusal::InFlight { .. }) => {
                ("rate_limit_error", Some("rate_limit_exceeded"))
            }
            ApiError::Refused(_) => ("insufficient_quota", Some("insufficient_quota")),
            ApiError::NotFound(_) | ApiError::Gone(_) => {
                ("invalid_request_error", Some("not_found"))
            }
            ApiError::Conflict(_) => ("invalid_request_error", Some("conflict")),
            ApiError::PayloadTooLarge { .. } | ApiError::UnsupportedMediaType => {
                ("invalid_request_error", None)
            }
            _ => ("server_error", None),
        };
        let param = match err {
            ApiError::Validation { field, .. } => Some(field.clone()),
            _ => None,
        };
        ErrorEnvelope {
            error: ErrorDetail {
                message: err.to_string(),
                kind,
                param,
                code: code.map(Into::into),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<ParsedCreate, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            Err(other) => panic!("expected a validation error, got {other:?}"),
            Ok(_) => panic!("expected a validation error, got a task"),
        }
    }

    #[test]
    fn size_becomes_ratio_and_resolution() {
        let p = parse_create(br#"{"prompt":"fox","model":"flux","size":"1792x1024","n":2,"response_format":"b64_json","quality":"hd"}"#)
            .unwrap();
        assert_eq!(p.task.request.aspect_ratio, "7:4");
        assert_eq!(p.task.request.resolution.as_deref(), Some("1792x1024"));
        assert_eq!(p.task.request.n, 2);
        assert_eq!(p.task.request.quality.as_deref(), Some("hd"));
        assert_eq!(p.task.model, "flux");
        assert_eq!(p.response_format, ResponseFormat::B64Json);
        let d = parse_create(br#"{"prompt":"fox","size":"auto","model":"gpt-image-1"}"#).unwrap();
        assert_eq!(d.task.request.aspect_ratio, "1:1");
        assert_eq!(d.response_format, ResponseFormat::Url);
    }

    #[test]
    fn rules_name_their_field() {
        let p = |b: &str| field(parse_create(b.as_bytes()));
        assert_eq!(p(r#"{}"#), "prompt");
        assert_eq!(p(r#"{"prompt":" "}"#), "prompt");
        assert_eq!(p(r#"{"prompt":"a","n":0}"#), "n");
        assert_eq!(p(r#"{"prompt":"a","n":11}"#), "n");
        assert_eq!(p(r#"{"prompt":"a","n":"2"}"#), "n");
        assert_eq!(p(r#"{"prompt":"a","size":"1024"}"#), "size");
        assert_eq!(p(r#"{"prompt":"a","size":"8192x1024"}"#), "size");
        assert_eq!(
            p(r#"{"prompt":"a","response_format":"png"}"#),
            "response_format"
        );
        assert_eq!(p(r#"{"prompt":"a","quality":"ultra"}"#), "quality");
        assert_eq!(p(r#"{"prompt":"a","style":"odd"}"#), "style");
        assert_eq!(p(r#"{"prompt":"a","model":"has space"}"#), "model");
        assert_eq!(p(r#"{"prompt":"a","stream":true}"#), "stream");
    }

    #[test]
    fn openai_models_keep_openai_rules() {
        let p = |b: &str| parse_create(b.as_bytes());
        let long = |n: usize| "a".repeat(n);
        // Prompt lengths: 1000, 4000, 32000.
        assert!(p(&format!(r#"{{"prompt":"{}"}}"#, long(1000))).is_ok());
        assert_eq!(
            field(p(&format!(r#"{{"prompt":"{}"}}"#, long(1001)))),
            "prompt"
        );
        assert!(
            p(&format!(
                r#"{{"prompt":"{}","model":"dall-e-3"}}"#,
                long(4000)
            ))
            .is_ok()
        );
        assert_eq!(
            field(p(&format!(
                r#"{{"prompt":"{}","model":"dall-e-3"}}"#,
                long(4001)
            ))),
            "prompt"
        );
        assert!(
            p(&format!(
                r#"{{"prompt":"{}","model":"gpt-image-1"}}"#,
                long(32000)
            ))
            .is_ok()
        );
        // Sizes and n.
        assert_eq!(field(p(r#"{"prompt":"a","size":"1792x1024"}"#)), "size");
        assert!(p(r#"{"prompt":"a","model":"dall-e-3","size":"1792x1024"}"#).is_ok());
        assert_eq!(field(p(r#"{"prompt":"a","model":"dall-e-3","n":2}"#)), "n");
        assert_eq!(
            field(p(r#"{"prompt":"a","model":"dall-e-3","size":"auto"}"#)),
            "size"
        );
        assert!(p(r#"{"prompt":"a","model":"gpt-image-1","size":"1536x1024","n":4}"#).is_ok());
        // The message says whose rule.
        let Err(e) = p(r#"{"prompt":"a","model":"dall-e-3","n":2}"#) else {
            panic!()
        };
        assert!(e.to_string().contains("for dall-e-3"), "{e}");
        // Other models keep the general rules.
        assert!(p(r#"{"prompt":"a","model":"flux","size":"640x960","n":9}"#).is_ok());
    }

    #[test]
    fn errors_carry_the_field_as_param() {
        let e = ErrorEnvelope::from_api(&ApiError::validation("size", "bad"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["param"], "size");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("size"));
    }
}
