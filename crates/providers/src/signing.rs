//! Standard Webhooks signatures, one implementation for both directions:
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`, space-separated)
//! under a `whsec_<base64>` secret, made by the `standardwebhooks` crate.
//! Upstreams' callbacks (Replicate, another gengate) are verified here; the
//! engine signs gengate's own callbacks to clients with [`WebhookKey::sign`]
//! (it lives here because the engine depends on this crate, not the reverse).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use standardwebhooks::Webhook;
use subtle::ConstantTimeEq;

use crate::ProviderError;

/// How far a callback's timestamp may be from now, either way (replays).
const TOLERANCE_SECS: u64 = 300;

/// A signing secret's key.
#[derive(Clone)]
pub struct WebhookKey(Arc<Webhook>);

impl WebhookKey {
    /// The key in a `whsec_<base64>` secret (the prefix is optional).
    pub fn parse(secret: &str) -> Result<WebhookKey, String> {
        let not_one = || "is not a signing secret (whsec_ followed by base64)".to_string();
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        // An empty key is no secret: anyone could sign with it.
        let key = STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(not_one)?;
        let webhook = Webhook::from_bytes(key).map_err(|_| not_one())?;
        Ok(WebhookKey(Arc::new(webhook)))
    }

    /// The `v1,<base64>` signature of `body` sent as message `msg_id` at
    /// `timestamp` (Unix seconds); `None` if `body` is not UTF-8 text,
    /// which Standard Webhooks does not sign.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
        self.0.sign(msg_id, timestamp, body).ok()
    }

    /// Whether `body` with `headers` was signed with this key within the
    /// tolerance of `now` (Unix seconds). `who` names the sender in errors.
    /// The crate's own `verify` reads the system clock and words its own
    /// errors, so the clock and the error classes are here and the crate
    /// makes the signature that one of the header's must equal.
    pub fn verify(
        &self,
        who: &str,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), ProviderError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| ProviderError::Auth(format!("{who} callback without {name}")))
        };
        let id = header("webhook-id")?;
        let timestamp = header("webhook-timestamp")?;
        let signatures = header("webhook-signature")?;
        let ts: i64 = timestamp.parse().map_err(|_| {
            ProviderError::Permanent(format!(
                "{who} callback has an unreadable webhook-timestamp"
            ))
        })?;
        if now.abs_diff(ts) > TOLERANCE_SECS {
            return Err(ProviderError::Permanent(format!(
                "{who} callback is over 5 minutes old (or from the future): refused as a replay"
            )));
        }
        let genuine = self.sign(id, ts, body).is_some_and(|expected| {
            signatures
                .split(' ')
                // Compared in constant time: timing tells nothing of the signature.
                .any(|s| s.as_bytes().ct_eq(expected.as_bytes()).into())
        });
        if genuine {
            Ok(())
        } else {
            Err(ProviderError::Auth(format!(
                "{who} callback signature does not match credentials.webhook_secret"
            )))
        }
    }
}

/// A callback's body from `who` read as JSON, once its signature holds
/// where the channel has a key (upstreams without one, Kling, are unsigned).
pub(crate) fn callback_body<T: serde::de::DeserializeOwned>(
    key: Option<&WebhookKey>,
    who: &str,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<T, ProviderError> {
    if let Some(key) = key {
        key.verify(who, headers, body, unix_secs())?;
    }
    serde_json::from_slice(body)
        .map_err(|e| ProviderError::Permanent(format!("{who} callback is not JSON as sent: {e}")))
}

/// Now, in Unix seconds.
pub(crate) fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification.
        let key = WebhookKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            "webhook-id",
            "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
        );
        h.insert("webhook-timestamp", "1614265330".parse().unwrap());
        h.insert(
            "webhook-signature",
            "v1,bm9ldHUKLpe7p5aJ2H7fyo3ZlNrcPdEGZrD3RW1C2c8= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .parse()
                .unwrap(),
        );
        let body = br#"{"test": 2432232314}"#;
        key.verify("x", &h, body, 1_614_265_330).unwrap();
        assert_eq!(
            key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body)
                .as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert!(matches!(
            key.verify("x", &h, b"\xff", 1_614_265_330),
            Err(ProviderError::Auth(_))
        ));
        assert!(matches!(
            key.verify("x", &h, br#"{"test": 2432232315}"#, 1_614_265_330),
            Err(ProviderError::Auth(_))
        ));
        assert!(matches!(
            key.verify("x", &h, body, 1_614_265_330 + 301),
            Err(ProviderError::Permanent(_))
        ));
        assert!(WebhookKey::parse("whsec_").is_err());
        assert!(WebhookKey::parse("not base64!").is_err());
    }
}
