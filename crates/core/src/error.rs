//! Error kinds every dialect maps to its own envelope, in one function each.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum ApiError {
    /// A field broke a rule; `field` names it as the client wrote it.
    #[error("{field}: {rule}")]
    Validation { field: String, rule: String },
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid key that may not do this (not an admin's, or disabled).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// What was asked for existed and is gone for good (results deleted
    /// under the retention policy).
    #[error("{0}")]
    Gone(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The key's balance or one of its limits stands in the way.
    #[error("{0}")]
    Refused(crate::credits::Refusal),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Details go to the log, never to the client.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Seconds a client should wait before trying again, where waiting helps.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Refused(r) => r.retry_after_secs(),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    pub fn validation(field: impl Into<String>, rule: impl Into<String>) -> ApiError {
        ApiError::Validation {
            field: field.into(),
            rule: rule.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::Validation { .. } | ApiError::MalformedJson(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Gone(_) => 410,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::Refused(r) => r.status(),
            ApiError::RateLimited { .. } => 429,
            ApiError::Internal => 500,
            ApiError::Unavailable(_) => 503,
        }
    }
}
