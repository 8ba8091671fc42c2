//! Standard Webhooks verification on any headers and body: the input is
//! split into a key, the three headers and the body. Made-up headers must
//! never verify; the body signed with the key must, and one byte of it
//! changed must not.
#![no_main]

use gengate_providers::signing::WebhookKey;
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderValue};

const NOW: i64 = 1_700_000_000;

fn headers(id: &[u8], ts: &[u8], signature: &[u8]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert("webhook-id", HeaderValue::from_bytes(id).ok()?);
    h.insert("webhook-timestamp", HeaderValue::from_bytes(ts).ok()?);
    h.insert(
        "webhook-signature",
        HeaderValue::from_bytes(signature).ok()?,
    );
    Some(h)
}

fuzz_target!(|data: &[u8]| {
    // key \n id \n timestamp \n signature \n body
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let (Some(secret), Some(id), Some(ts), Some(sig), Some(body)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return;
    };
    let Ok(key) = WebhookKey::parse(&String::from_utf8_lossy(secret)) else {
        return;
    };
    if let Some(h) = headers(id, ts, sig) {
        // A signature that verifies was made with the key: over 2^-256.
        if key.verify("fuzz", &h, body, NOW).is_ok() {
            let id = std::str::from_utf8(id).unwrap();
            let ts: i64 = std::str::from_utf8(ts).unwrap().parse().unwrap();
            let genuine = key.sign(id, ts, body).unwrap();
            assert!(
                String::from_utf8_lossy(sig)
                    .split(' ')
                    .any(|s| s == genuine)
            );
        }
    }
    // A header's text is visible ASCII; other ids cannot be sent as text
    // (and are refused as missing).
    if !id.iter().all(|b| (b' '..=b'~').contains(b)) {
        return;
    }
    let id = std::str::from_utf8(id).unwrap();
    let Some(genuine) = key.sign(id, NOW, body) else {
        return;
    };
    let Some(h) = headers(
        id.as_bytes(),
        NOW.to_string().as_bytes(),
        genuine.as_bytes(),
    ) else {
        return;
    };
    assert!(key.verify("fuzz", &h, body, NOW).is_ok());
    if let Some(last) = body.len().checked_sub(1) {
        let mut changed = body.to_vec();
        changed[last] ^= 1;
        assert!(key.verify("fuzz", &h, &changed, NOW).is_err());
    }
});
