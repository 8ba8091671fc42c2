//! Standard Webhooks signatures on gengate's callbacks to clients: `v1,` +
//! base64 HMAC-SHA256 of `id.timestamp.body` under each of the key's
//! `whsec_` secrets, made by the one implementation both directions share
//! ([`gengate_providers::signing::WebhookKey`], over `standardwebhooks`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gengate_providers::signing::WebhookKey;
use rand::RngCore;

pub const SECRET_PREFIX: &str = "whsec_";

/// A new random signing secret, `whsec_` + base64 of 24 bytes.
pub fn new_secret() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(raw))
}

#[derive(Debug, thiserror::Error)]
#[error("a webhook secret must be whsec_ followed by base64 (and the body UTF-8 text)")]
pub struct BadSecret;

/// The `webhook-signature` header value: one `v1,…` per secret,
/// space-separated, so a key's old secret keeps signing while rotation
/// overlaps. `body` is the JSON sent.
pub fn signature(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, BadSecret> {
    let mut out = Vec::with_capacity(secrets.len());
    for secret in secrets {
        // Keys' secrets always carry the prefix; a value without it is not one.
        if !secret.starts_with(SECRET_PREFIX) {
            return Err(BadSecret);
        }
        let key = WebhookKey::parse(secret).map_err(|_| BadSecret)?;
        out.push(key.sign(msg_id, timestamp, body).ok_or(BadSecret)?);
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_vector() {
        let body = br#"{"id":"1234567890","status":"succeeded","message":"","create_time":1781080778802,"update_time":1781080794151}"#;
        let sig = signature(
            &["whsec_dGVzdHNlY3JldHRlc3RzZWNyZXR0ZXN0c2VjcmV0MTI="],
            "9876543210",
            1781080794,
            body,
        )
        .unwrap();
        assert_eq!(sig, "v1,UsKlJP00XoQyOn410NM9xv34sP+Gl0jnOO9Lcpr7NJ4=");
    }

    #[test]
    fn two_secrets_sign_twice_and_bad_secrets_are_refused() {
        let (a, b) = (new_secret(), new_secret());
        let both = signature(&[&a, &b], "m", 1, b"x").unwrap();
        let parts: Vec<_> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature(&[&a], "m", 1, b"x").unwrap());
        assert!(signature(&["nope"], "m", 1, b"x").is_err());
    }
}
