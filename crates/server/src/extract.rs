//! Request parts every dialect reads, refused in the handler's own
//! envelope: a JSON body (content type checked, size bounded) and a query.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use gengate_core::ApiError;

use crate::body::read_json;
use crate::error::{DialectError, ErrorShape};

/// The request's JSON body, as bytes for the dialect's own parser.
pub struct JsonBody<E>(pub Bytes, pub PhantomData<fn() -> E>);

impl<S: Send + Sync, E: ErrorShape> FromRequest<S> for JsonBody<E> {
    type Rejection = DialectError<E>;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = read_json(&parts.headers, body).await?;
        Ok(JsonBody(bytes, PhantomData))
    }
}

/// The query string as `T`; a 400 naming `query` when it does not fit.
pub struct Query<T, E>(pub T, pub PhantomData<fn() -> E>);

impl<S: Send + Sync, T: serde::de::DeserializeOwned, E: ErrorShape> FromRequestParts<S>
    for Query<T, E>
{
    type Rejection = DialectError<E>;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(q) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation("query", e.body_text()))?;
        Ok(Query(q, PhantomData))
    }
}

/// The `Idempotency-Key` header, checked; `None` when not sent.
pub fn idempotency_key(
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, gengate_core::ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| {
        gengate_core::ApiError::validation("Idempotency-Key", "must be visible ASCII characters")
    })?;
    Ok(Some(
        gengate_core::dialect::tasks::idempotency_key(v)?.to_string(),
    ))
}
