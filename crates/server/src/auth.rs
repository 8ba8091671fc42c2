//! The extractors that give a handler its caller's key ([`Caller`]) or
//! refuse a non-admin ([`Admin`]) in the handler's envelope; the keys
//! themselves are `gengate_engine::keys`.

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gengate_core::{ApiError, ApiKey};

use crate::AppState;
use crate::error::{DialectError, ErrorShape};

/// The secret a request presents as `Authorization: Bearer gg_...`.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let missing = ApiError::Unauthorized("missing API key: send Authorization: Bearer <key>");
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(missing.clone())?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(missing)
}

/// The key the request presents; a request without a valid one is refused
/// (401; 403 for a disabled key, 429 over its rate) in `E`'s envelope
/// before the handler runs.
pub struct Caller<E> {
    pub key: ApiKey,
    shape: PhantomData<fn() -> E>,
}

impl<E> Deref for Caller<E> {
    type Target = ApiKey;
    fn deref(&self) -> &ApiKey {
        &self.key
    }
}

impl<E: ErrorShape> FromRequestParts<AppState> for Caller<E> {
    type Rejection = DialectError<E>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let from = crate::limits::client_address(&parts.extensions);
        let key = state
            .keys
            .authenticate(bearer(&parts.headers)?, from)
            .await?;
        Ok(Caller {
            key,
            shape: PhantomData,
        })
    }
}

/// An admin key; any other is refused: 401 without a valid key, 403 with
/// a key that is not an admin's.
pub struct Admin<E>(pub Caller<E>);

impl<E: ErrorShape> FromRequestParts<AppState> for Admin<E> {
    type Rejection = DialectError<E>;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::<E>::from_request_parts(parts, state).await?;
        if !caller.admin {
            return Err(ApiError::Forbidden("this endpoint needs an admin key").into());
        }
        Ok(Admin(caller))
    }
}
