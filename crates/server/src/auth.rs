//! API keys: random `gg_` secrets, kept only as SHA-256, checked in constant time.

use base64::Engine as _;
use gengate_core::{ApiError, ApiKey, Millis};
use gengate_store::TaskStore;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

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
    };
    (secret, key)
}

/// The key a request presents as `Authorization: Bearer gg_...`.
pub async fn authenticate(
    store: &dyn TaskStore,
    headers: &axum::http::HeaderMap,
) -> Result<ApiKey, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ))?;
    let secret = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ))?;
    let hash = hash_key(secret);
    let key = store.key_by_hash(&hash).await.map_err(|e| {
        tracing::error!(error = %e, "key lookup failed");
        ApiError::Unavailable("key store unreachable".into())
    })?;
    match key {
        Some(k) if bool::from(k.hash.ct_eq(&hash)) && k.revoked_at.is_none() => Ok(k),
        _ => Err(ApiError::Unauthorized("unknown or revoked API key")),
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
