//! Every error envelope the server answers in, and the one place an error
//! becomes a response: status, the dialect's body, and `Retry-After` where
//! waiting helps. Handlers return [`DialectError<E>`]; `?` turns an
//! `ApiError` or a `StoreError` into it.

use std::marker::PhantomData;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gengate_core::ApiError;
use gengate_core::dialect::DetailError;
use gengate_core::dialect::openai_images::ErrorEnvelope;
use gengate_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered with `err`'s status, `body` (the dialect's envelope)
/// and `Retry-After` where waiting helps.
pub fn error_response(err: &ApiError, status: u16, body: impl Serialize) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(v) = err
        .retry_after_secs()
        .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
    {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

/// How a dialect words an error: the body of its envelope, and the status
/// where the dialect's own API answers another than gengate's.
pub trait ErrorShape {
    fn body(err: &ApiError) -> impl Serialize;

    fn status(err: &ApiError) -> u16 {
        err.status()
    }
}

/// OpenAI and Kling answer a spent balance with 429, not 402.
fn refused_is_429(err: &ApiError) -> u16 {
    match err {
        ApiError::Refused(_) => 429,
        other => other.status(),
    }
}

/// An error answered in `E`'s envelope: what every handler returns.
pub struct DialectError<E>(pub ApiError, PhantomData<fn() -> E>);

impl<E> From<ApiError> for DialectError<E> {
    fn from(e: ApiError) -> Self {
        DialectError(e, PhantomData)
    }
}

impl<E> From<StoreError> for DialectError<E> {
    fn from(e: StoreError) -> Self {
        gengate_engine::service::store_error(e).into()
    }
}

impl<E: ErrorShape> IntoResponse for DialectError<E> {
    fn into_response(self) -> Response {
        error_response(&self.0, E::status(&self.0), E::body(&self.0))
    }
}

/// Both Luma APIs: `{"detail": ...}`.
impl ErrorShape for DetailError {
    fn body(err: &ApiError) -> impl Serialize {
        DetailError {
            detail: err.to_string(),
        }
    }
}

/// OpenAI's `{"error": {message, type, param, code}}`.
impl ErrorShape for ErrorEnvelope {
    fn body(err: &ApiError) -> impl Serialize {
        ErrorEnvelope::from_api(err)
    }

    fn status(err: &ApiError) -> u16 {
        refused_is_429(err)
    }
}

/// gengate's own envelope (`/v1/tasks`, deliveries, admin).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// HTTP status, as a number.
    pub status: u16,
    pub message: String,
}

impl ErrorShape for ErrorBody {
    fn body(err: &ApiError) -> impl Serialize {
        ErrorBody {
            error: ErrorDetail {
                status: err.status(),
                message: err.to_string(),
            },
        }
    }
}

/// Errors in gengate's own envelope.
pub type Error = DialectError<ErrorBody>;

/// Kling's `{code, message, request_id, data: null}`, with Kling's codes
/// and this request's id.
#[derive(Debug, Serialize, ToSchema)]
pub struct KlingError {
    /// Kling's error code: 1000/1001 key, 1103 forbidden, 1200 body,
    /// 1201 parameter, 1203 not found, 1302 rate limit, 5000/5001 server.
    pub code: u32,
    pub message: String,
    pub request_id: String,
    /// Always null on an error.
    #[schema(schema_with = null)]
    pub data: (),
}

fn null() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

impl ErrorShape for KlingError {
    fn body(err: &ApiError) -> impl Serialize {
        KlingError {
            code: gengate_core::dialect::kling::error_code(err),
            message: err.to_string(),
            request_id: crate::request_id::current(),
            data: (),
        }
    }

    fn status(err: &ApiError) -> u16 {
        refused_is_429(err)
    }
}
