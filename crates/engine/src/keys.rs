//! API keys, one set of rules for the admin API (`/admin/keys`) and
//! `gengate keys`: random `gg_` secrets, kept only as SHA-256 and checked
//! in constant time; creating, changing, revoking and crediting keys; and
//! authentication, with each key's enabled flag and request rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gengate_core::credits::{EntryKind, LedgerEntry, MAX_PRICE};
use gengate_core::{ApiError, ApiKey, Credits, KeyLimits, Millis};
use gengate_store::{LedgerTotal, StoreError, TaskStore};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::now_ms;
use crate::request_counts::RequestCounts;

pub const KEY_PREFIX: &str = "gg_";
/// A key's name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// A grant's or adjustment's reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// The most credits a key starts with, or one grant or adjustment moves.
pub const MAX_CREDITS: Credits = MAX_PRICE;
/// Ledger entries in one page, at most.
pub const MAX_LEDGER_PAGE: u32 = 1000;
/// How long a rotated-out callback signing secret keeps signing, so
/// receivers can switch over.
pub const SECRET_OVERLAP_MS: Millis = 24 * 3600 * 1000;

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
        webhook_secret: Some(crate::webhooks::signing::new_secret()),
        previous_webhook_secret: None,
        previous_secret_until: None,
        enabled: true,
        unlimited: false,
        balance: 0,
        limits: KeyLimits::default(),
    };
    (secret, key)
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("no key with id {0}")]
    NotFound(Uuid),
    #[error("no active key with id {0}: it is already revoked")]
    Revoked(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        match e {
            KeyError::Invalid { field, rule } => ApiError::validation(field, rule),
            KeyError::NotFound(_) => ApiError::NotFound(e.to_string()),
            KeyError::Revoked(_) => ApiError::Conflict(e.to_string()),
            KeyError::Store(e) => crate::service::store_error(e),
        }
    }
}

fn invalid<T>(field: &str, rule: &str) -> Result<T, KeyError> {
    Err(KeyError::Invalid {
        field: field.to_string(),
        rule: rule.to_string(),
    })
}

/// A key to make.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub admin: bool,
    /// What it starts with; `None`: the configured default, unless unlimited.
    pub credits: Option<Credits>,
    pub unlimited: bool,
    pub limits: KeyLimits,
}

/// A change to a key's settings: each field given replaces that one
/// (`limits` as a whole).
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub unlimited: Option<bool>,
    pub limits: Option<KeyLimits>,
}

/// What `gengate ledger verify` found: keys checked, and those whose
/// balance is not the sum of their entries.
pub struct Verified {
    pub keys: usize,
    pub mismatched: Vec<LedgerTotal>,
}

/// A new callback signing secret, and until when the old one also signs.
pub struct Rotated {
    pub webhook_secret: String,
    pub previous_secret_until: Millis,
}

/// How long a key lookup is remembered: a revoked key stops working
/// within this (at once on the instance that revoked it), and requests
/// skip the database meanwhile.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Remembered lookups at most (unknown keys included).
const KEY_CACHE_ENTRIES: usize = 10_000;

/// What a lookup found (`None`: no such key), and when.
type Seen = HashMap<[u8; 32], (Option<ApiKey>, Instant)>;

pub struct KeyService {
    store: Arc<dyn TaskStore>,
    default_credits: Credits,
    seen: Mutex<Seen>,
    rates: Rates,
    requests: RequestCounts,
    bad_keys: crate::bad_keys::BadKeys,
}

impl KeyService {
    /// Keys in `store`; a new key given neither credits nor `unlimited`
    /// starts with `default_credits`.
    pub fn new(store: Arc<dyn TaskStore>, default_credits: Credits) -> KeyService {
        KeyService {
            store,
            default_credits,
            seen: Mutex::default(),
            rates: Rates::default(),
            requests: RequestCounts::default(),
            bad_keys: Default::default(),
        }
    }

    /// Record the requests [`KeyService::authenticate`] let through, every
    /// few seconds, until `shutdown`.
    pub async fn record_requests(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.requests.run(self.store.as_ref(), shutdown).await;
    }

    /// Record what is counted now (the requests answered while draining).
    pub async fn flush_requests(&self) {
        self.requests.flush(self.store.as_ref()).await;
    }

    /// Make a key: its secret (to show once) and its record.
    pub async fn create(&self, new: NewKey) -> Result<(String, ApiKey), KeyError> {
        check_name(&new.name)?;
        if matches!(new.credits, Some(c) if !(0..=MAX_CREDITS).contains(&c)) {
            return invalid("credits", "must be an integer from 0 to 1000000000");
        }
        check_limits(&new.limits)?;
        let (secret, mut key) = new_key(&new.name, new.admin, now_ms());
        key.unlimited = new.unlimited;
        key.limits = new.limits;
        key.balance = new.credits.unwrap_or(if new.unlimited {
            0
        } else {
            self.default_credits
        });
        self.store.create_key(&key).await?;
        Ok((secret, key))
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        Ok(self.store.list_keys().await?)
    }

    pub async fn get(&self, id: Uuid) -> Result<ApiKey, KeyError> {
        self.store.get_key(id).await?.ok_or(KeyError::NotFound(id))
    }

    /// Change a key's settings; the key as it now is.
    pub async fn update(&self, id: Uuid, patch: KeyPatch) -> Result<ApiKey, KeyError> {
        if let Some(name) = &patch.name {
            check_name(name)?;
        }
        if let Some(limits) = &patch.limits {
            check_limits(limits)?;
        }
        let mut key = self.get(id).await?;
        key.name = patch.name.unwrap_or(key.name);
        key.enabled = patch.enabled.unwrap_or(key.enabled);
        key.unlimited = patch.unlimited.unwrap_or(key.unlimited);
        key.limits = patch.limits.unwrap_or(key.limits);
        if !self.store.save_key_settings(&key).await? {
            return Err(KeyError::NotFound(id));
        }
        self.forget(&key);
        Ok(key)
    }

    /// Revoke a key for good; the key as it now is.
    pub async fn revoke(&self, id: Uuid) -> Result<ApiKey, KeyError> {
        let key = self.get(id).await?;
        if key.revoked_at.is_some() || !self.store.revoke_key(id, now_ms()).await? {
            return Err(KeyError::Revoked(id));
        }
        self.forget(&key);
        self.get(id).await
    }

    /// A new callback signing secret; the old one keeps signing beside it
    /// for [`SECRET_OVERLAP_MS`].
    pub async fn rotate_secret(&self, id: Uuid) -> Result<Rotated, KeyError> {
        let secret = crate::webhooks::signing::new_secret();
        let until = now_ms() + SECRET_OVERLAP_MS;
        if !self.store.rotate_webhook_secret(id, &secret, until).await? {
            return Err(KeyError::NotFound(id));
        }
        Ok(Rotated {
            webhook_secret: secret,
            previous_secret_until: until,
        })
    }

    /// Give credits (a grant, more than 0) or correct the balance (an
    /// adjustment, either sign); the key's new balance.
    pub async fn credit(
        &self,
        id: Uuid,
        kind: EntryKind,
        amount: Credits,
        reason: &str,
    ) -> Result<Credits, KeyError> {
        match kind {
            EntryKind::Grant if !(1..=MAX_CREDITS).contains(&amount) => {
                return invalid("amount", "a grant is from 1 to 1000000000 credits");
            }
            EntryKind::Adjustment if amount == 0 || amount.abs() > MAX_CREDITS => {
                return invalid(
                    "amount",
                    "an adjustment is from -1000000000 to 1000000000 credits, not 0",
                );
            }
            EntryKind::Grant | EntryKind::Adjustment => {}
            EntryKind::Charge | EntryKind::Refund => {
                return invalid("kind", "must be grant or adjustment");
            }
        }
        if reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return invalid("reason", "must be 1 to 500 characters, not all blank");
        }
        self.store
            .add_credits(id, kind, amount, reason, now_ms())
            .await?
            .ok_or(KeyError::NotFound(id))
    }

    /// The key's last `limit` ledger entries, newest first.
    pub async fn ledger(&self, id: Uuid, limit: u32) -> Result<Vec<LedgerEntry>, KeyError> {
        if !(1..=MAX_LEDGER_PAGE).contains(&limit) {
            return invalid("limit", "must be from 1 to 1000");
        }
        self.get(id).await?;
        Ok(self.store.ledger(id, limit).await?)
    }

    /// Every key's balance against the sum of its ledger entries.
    pub async fn verify(&self) -> Result<Verified, KeyError> {
        let totals = self.store.ledger_totals().await?;
        Ok(Verified {
            keys: totals.len(),
            mismatched: totals
                .into_iter()
                .filter(|t| t.balance != t.entries)
                .collect(),
        })
    }

    /// The key whose secret a request presents: 401 for an unknown or
    /// revoked one, 403 for a disabled one, 429 over its request rate.
    /// The key `secret` names, for a request from `from` (the client's
    /// address, when known: wrong keys from one address are limited).
    pub async fn authenticate(
        &self,
        secret: &str,
        from: Option<IpAddr>,
    ) -> Result<ApiKey, ApiError> {
        if let Some(from) = from {
            self.bad_keys.admit(from, Instant::now())?;
        }
        let hash = hash_key(secret);
        let key = match self.lookup(&hash).await? {
            Some(k) if bool::from(k.hash.ct_eq(&hash)) && k.revoked_at.is_none() => k,
            _ => {
                // The address, never the key: a log is no place for secrets.
                if let Some(from) = from
                    && self.bad_keys.strike(from, Instant::now())
                {
                    tracing::warn!(client = %from, "too many wrong API keys; the address cools down");
                }
                return Err(ApiError::Unauthorized("unknown or revoked API key"));
            }
        };
        if !key.enabled {
            return Err(ApiError::Forbidden("this key is disabled"));
        }
        self.rates.admit(key.id, key.limits.requests_per_sec)?;
        self.requests.add(key.id, now_ms());
        Ok(key)
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

    /// A change made here applies to this instance's next request at once.
    fn forget(&self, key: &ApiKey) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(&key.hash);
        }
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return invalid("name", "must be 1 to 200 characters, not all blank");
    }
    Ok(())
}

fn check_limits(limits: &KeyLimits) -> Result<(), KeyError> {
    limits
        .check()
        .map_err(|(field, rule)| KeyError::Invalid { field, rule })
}

/// Limiters of keys not seen for this long may be dropped.
const RATE_IDLE: Duration = Duration::from_secs(60);
/// Keys with a limiter at most; past it, idle ones are dropped first.
const RATE_ENTRIES: usize = 10_000;

/// One key's request rate on this instance.
struct Rate {
    per_sec: NonZeroU32,
    limiter: DefaultDirectRateLimiter,
    seen: Instant,
}

/// Each rate-limited key's limiter, by key id.
#[derive(Default)]
struct Rates(Mutex<HashMap<Uuid, Rate>>);

impl Rates {
    /// Take one request of key `id`'s rate, or answer how long to wait.
    fn admit(&self, id: Uuid, per_sec: Option<u32>) -> Result<(), ApiError> {
        let Some(per_sec) = per_sec.and_then(NonZeroU32::new) else {
            return Ok(());
        };
        let Ok(mut rates) = self.0.lock() else {
            return Ok(());
        };
        if rates.len() >= RATE_ENTRIES && !rates.contains_key(&id) {
            rates.retain(|_, r| r.seen.elapsed() < RATE_IDLE);
            if rates.len() >= RATE_ENTRIES {
                // All busy: starting everyone's burst afresh beats growing.
                rates.clear();
            }
        }
        let fresh = || Rate {
            per_sec,
            limiter: RateLimiter::direct(Quota::per_second(per_sec)),
            seen: Instant::now(),
        };
        let rate = rates.entry(id).or_insert_with(fresh);
        if rate.per_sec != per_sec {
            *rate = fresh();
        }
        rate.seen = Instant::now();
        rate.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds, rounded up: never a Retry-After of 0.
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + 1,
            }
        })
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

    #[test]
    fn a_key_gets_its_rate_as_a_burst_then_waits_and_a_new_limit_starts_afresh() {
        let rates = Rates::default();
        let id = Uuid::now_v7();
        assert!((0..3).all(|_| rates.admit(id, Some(3)).is_ok()));
        let Err(ApiError::RateLimited { retry_after_secs }) = rates.admit(id, Some(3)) else {
            panic!("a fourth request in the second passes");
        };
        assert_eq!(retry_after_secs, 1);
        assert!(rates.admit(id, Some(5)).is_ok());
        assert!((0..10).all(|_| rates.admit(Uuid::now_v7(), None).is_ok()));
    }
}
