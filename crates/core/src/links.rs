//! How result URLs are written and checked. Plain: `{base}/{key}`, public
//! for as long as the file is kept. Signed (`file_url_ttl_secs`):
//! `{base}/{key}?expires={unix s}&signature={hex}`, the signature an
//! HMAC-SHA256 of `{key}\n{expires}` under the first of the operator's keys;
//! any of the keys verifies, so a new key can be put first while URLs signed
//! with the old one run out. Expiry falls on a window boundary (a multiple
//! of the TTL), so everyone is given the same URL for a window (caches hold)
//! and a URL is good for at least one TTL and at most two.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::task::{Millis, Task, TaskState};

#[derive(Debug, Clone)]
pub struct FileLinks {
    base: String,
    signing: Option<Signing>,
}

#[derive(Clone)]
struct Signing {
    keys: Vec<Vec<u8>>,
    ttl_secs: u64,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signing")
            .field("keys", &self.keys.len())
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

/// Why a request for a file is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this file's URL must be signed (expires and signature)")]
    Unsigned,
    #[error("this file's URL has expired")]
    Expired,
    #[error("this file's URL signature is not valid")]
    BadSignature,
}

/// The URLs of one moment: what a render writes.
#[derive(Debug, Clone, Copy)]
pub struct Links<'a> {
    links: &'a FileLinks,
    /// When signing: the expiry of URLs written now.
    expires: Option<u64>,
    now: Millis,
}

impl FileLinks {
    /// Plain URLs under `base` (e.g. `https://host/files`).
    pub fn plain(base: impl Into<String>) -> FileLinks {
        FileLinks {
            base: base.into().trim_end_matches('/').to_string(),
            signing: None,
        }
    }

    /// Signed URLs good for `ttl_secs` to twice that; `keys` sign with the
    /// first and verify with any (none: URLs are written plain, and every
    /// signed request is refused).
    pub fn signed(base: impl Into<String>, keys: &[String], ttl_secs: u64) -> FileLinks {
        FileLinks {
            signing: Some(Signing {
                keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
                ttl_secs: ttl_secs.max(1),
            }),
            ..FileLinks::plain(base)
        }
    }

    /// The URLs to write at `now`.
    pub fn at(&self, now: Millis) -> Links<'_> {
        let expires = self.signing.as_ref().map(|s| {
            let now = u64::try_from(now / 1000).unwrap_or_default();
            (now / s.ttl_secs + 2) * s.ttl_secs
        });
        Links {
            links: self,
            expires,
            now,
        }
    }

    /// Whether URLs are signed (and so expire).
    pub fn is_signed(&self) -> bool {
        self.signing.is_some()
    }

    /// Whether a request for `key` carrying `expires` and `signature` (the
    /// query's) may be served at `now`.
    pub fn check(
        &self,
        key: &str,
        expires: Option<&str>,
        signature: Option<&str>,
        now: Millis,
    ) -> Result<(), LinkError> {
        let Some(signing) = &self.signing else {
            return Ok(());
        };
        let (Some(expires), Some(signature)) = (expires, signature) else {
            return Err(LinkError::Unsigned);
        };
        let at: u64 = expires.parse().map_err(|_| LinkError::BadSignature)?;
        let signature = hex::decode(signature).map_err(|_| LinkError::BadSignature)?;
        if !signing
            .keys
            .iter()
            .any(|k| mac(k, key, at).verify_slice(&signature).is_ok())
        {
            return Err(LinkError::BadSignature);
        }
        if u64::try_from(now / 1000).unwrap_or_default() >= at {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

impl Links<'_> {
    /// Why a completed `task` shows no results: they expired under the
    /// retention rules (their files may be gone). What renders say instead.
    pub fn expired(&self, task: &Task) -> Option<String> {
        task.keep_until
            .filter(|k| *k <= self.now && task.state == TaskState::Completed)
            .map(crate::retention::expired_note)
    }

    /// The URL of the stored file `key`.
    pub fn url(&self, key: &str) -> String {
        let base = &self.links.base;
        let signing = self.links.signing.as_ref().and_then(|s| s.keys.first());
        match (signing, self.expires) {
            (Some(secret), Some(at)) => {
                let signature = hex::encode(mac(secret, key, at).finalize().into_bytes());
                format!("{base}/{key}?expires={at}&signature={signature}")
            }
            _ => format!("{base}/{key}"),
        }
    }

    /// [`url`](Self::url), served as an attachment (a download).
    pub fn download_url(&self, key: &str) -> String {
        let url = self.url(key);
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}download=1")
    }
}

fn mac(secret: &[u8], key: &str, expires: u64) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    m.update(key.as_bytes());
    m.update(b"\n");
    m.update(expires.to_string().as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(url: &str) -> (Option<String>, Option<String>) {
        let q = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let get = |name: &str| {
            q.split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .map(String::from)
        };
        (get("expires"), get("signature"))
    }

    #[test]
    fn plain_links_are_the_base_and_the_key() {
        let links = FileLinks::plain("http://h/files/");
        assert_eq!(
            links.at(5).url("results/a.mp4"),
            "http://h/files/results/a.mp4"
        );
        assert_eq!(
            links.at(5).download_url("results/a.mp4"),
            "http://h/files/results/a.mp4?download=1"
        );
        assert_eq!(links.check("results/a.mp4", None, None, 5), Ok(()));
        assert!(!links.is_signed());
    }

    #[test]
    fn signed_links_verify_expire_and_survive_a_key_rotation() {
        let key = "results/a.mp4";
        let old = FileLinks::signed("http://h/files", &["k1".into()], 60);
        let now = 1_000_000_000; // ms
        let url = old.at(now).url(key);
        let (expires, signature) = query(&url);
        let (e, s) = (expires.as_deref(), signature.as_deref());
        // Good for at least one TTL, at most two.
        let at: i64 = e.unwrap().parse().unwrap();
        assert!((now / 1000 + 60..=now / 1000 + 120).contains(&at), "{at}");
        assert_eq!(old.check(key, e, s, now), Ok(()));
        assert_eq!(old.check(key, e, s, at * 1000), Err(LinkError::Expired));
        assert_eq!(
            old.check("results/b.mp4", e, s, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            old.check(key, Some("9999999999"), s, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            old.check(key, e, Some("zz"), now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(old.check(key, None, s, now), Err(LinkError::Unsigned));
        // The same URL for everyone within a window.
        assert_eq!(old.at(now + 1).url(key), url);

        // A new key first: old URLs still verify, new ones use the new key.
        let rotated = FileLinks::signed("http://h/files", &["k2".into(), "k1".into()], 60);
        assert_eq!(rotated.check(key, e, s, now), Ok(()));
        assert_ne!(rotated.at(now).url(key), url);
        let retired = FileLinks::signed("http://h/files", &["k2".into()], 60);
        assert_eq!(retired.check(key, e, s, now), Err(LinkError::BadSignature));
        assert!(retired.at(now).download_url(key).ends_with("&download=1"));
    }
}
