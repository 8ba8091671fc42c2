//! API keys: random `gg_` secrets, kept only as SHA-256, checked in
//! constant time; and the extractors that give a handler its caller's key
//! ([`Caller`]) or refuse a non-admin ([`Admin`]) in the handler's envelope.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use gengate_core::{ApiError, ApiKey, KeyLimits, Millis};

use gengate_store::TaskStore;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::AppState;
use crate::error::{DialectError, ErrorShape};

pub const KEY_PREFIX: &str = "gg_";

pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new key: the secret (shown once) and the record to store.
pub fn new_key(name: &str, admin: bool, now: Millis) -> (String, ApiKey) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let key = ApiKey {
        id: Uuid::now_v7(),
        name: name.to_string(),
        hash: hash_key(&secret),
        admin,
        created_at: now,
        revoked_at: None,
        webhook_secret: Some(gengate_engine::webhooks::signing::new_secret()),
        previous_webhook_secret: None,
        previous_secret_until: None,
        enabled: true,
        unlimited: false,
        balance: 0,
        limits: KeyLimits::default(),
    };
    (secret, key)
}

/// How long a key lookup is remembered: a revoked key stops working
/// within this, and requests skip the database meanwhile.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Remembered lookups at most (unknown keys included).
const KEY_CACHE_ENTRIES: usize = 10_000;

/// What a lookup found (`None`: no such key), and when.
type Seen = HashMap<[u8; 32], (Option<ApiKey>, Instant)>;

/// Key lookups by secret hash, remembered for `KEY_CACHE_TTL`.
pub struct Keys {
    store: Arc<dyn TaskStore>,
    seen: Mutex<Seen>,
}

impl Keys {
    pub fn new(store: Arc<dyn TaskStore>) -> Keys {
        Keys {
            store,
            seen: Mutex::default(),
        }
    }

    async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<ApiKey>, ApiError> {
        if let Ok(seen) = self.seen.lock()
            && let Some((key, at)) = seen.get(hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(key.clone());
        }
        let key = self.store.key_by_hash(hash).await.map_err(|e| {
            tracing::error!(error = %e, "key lookup failed");
            ApiError::Unavailable("key store unreachable".into())
        })?;
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= KEY_CACHE_ENTRIES {
                seen.clear();
            }
            seen.insert(*hash, (key.clone(), Instant::now()));
        }
        Ok(key)
    }

    /// The key a request presents as `Authorization: Bearer gg_...`.
    pub async fn authenticate(&self, headers: &axum::http::HeaderMap) -> Result<ApiKey, ApiError> {
        let missing = ApiError::Unauthorized("missing API key: send Authorization: Bearer <key>");
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(missing.clone())?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(missing)?;
        let hash = hash_key(secret);
        match self.lookup(&hash).await? {
            Some(k) if bool::from(k.hash.ct_eq(&hash)) && k.revoked_at.is_none() => Ok(k),
            _ => Err(ApiError::Unauthorized("unknown or revoked API key")),
        }
    }
}

/// The key the request presents; a request without a valid one is refused
/// (401) in `E`'s envelope before the handler runs.
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
        let key = state.keys.authenticate(&parts.headers).await?;
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
            return Err(ApiError::Forbidden.into());
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (a, ka) = new_key("a", false, 0);
        let (b, _) = new_key("b", true, 0);
        assert!(a.starts_with(KEY_PREFIX) && a.len() >= 3 + 43);
        assert_ne!(a, b);
        assert_eq!(ka.hash, hash_key(&a));
    }
}
