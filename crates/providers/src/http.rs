//! The HTTP side every real adapter shares: one upstream base URL, bounded
//! time per request, no redirects followed, bodies capped, `Retry-After`
//! read for the rate-limit class, and the one reading of a failed answer's
//! status as a [`ProviderError`] class.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;

use crate::ProviderError;

/// Bodies an upstream may send back (JSON envelopes, not media), at most.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug)]
pub enum UpstreamError {
    /// Connect, timeout, reset, or a body past the cap: worth retrying.
    Transport(String),
}

impl From<UpstreamError> for ProviderError {
    fn from(UpstreamError::Transport(why): UpstreamError) -> ProviderError {
        ProviderError::Retryable(why)
    }
}

/// What gengate does about an answer that is not 2xx, by its status alone:
/// 401 and 403 mean our credentials; 429 a rate limit; 408 and 5xx a
/// passing failure; any other status a refusal of the task itself.
/// Adapters whose upstream says more (Kling's codes, OpenAI's content
/// policy) read that first and fall back to this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Auth,
    RateLimited,
    Retryable,
    Permanent,
}

impl Class {
    pub fn of(status: StatusCode) -> Class {
        match status.as_u16() {
            401 | 403 => Class::Auth,
            429 => Class::RateLimited,
            408 | 500..=599 => Class::Retryable,
            _ => Class::Permanent,
        }
    }

    /// The error of this class, worded `what` (a rate limit carries only
    /// the upstream's `Retry-After`).
    pub fn error(self, retry_after: Option<Duration>, what: String) -> ProviderError {
        match self {
            Class::Auth => ProviderError::Auth(what),
            Class::RateLimited => ProviderError::RateLimited { retry_after },
            Class::Retryable => ProviderError::Retryable(what),
            Class::Permanent => ProviderError::Permanent(what),
        }
    }
}

/// A failed answer classed by its status and worded `what` whatever its class.
pub fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    what: String,
) -> ProviderError {
    Class::of(status).error(retry_after, what)
}

#[derive(Clone)]
pub struct Upstream {
    base: String,
    http: reqwest::Client,
    max_body: usize,
}

/// What came back: status, body, and `Retry-After` if the upstream sent one.
pub type Answer = (StatusCode, Bytes, Option<Duration>);

impl Upstream {
    /// `base` is the API root (`https://api.klingai.com`), without a trailing slash.
    pub fn new(base: &str, timeout: Duration) -> Result<Upstream, String> {
        Upstream::with_limits(base, timeout, MAX_BODY)
    }

    /// For upstreams whose answers carry media (synchronous image APIs):
    /// a longer `timeout` and a larger answer cap.
    pub fn with_limits(base: &str, timeout: Duration, max_body: usize) -> Result<Upstream, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Upstream {
            base: base.trim_end_matches('/').to_string(),
            http,
            max_body,
        })
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, UpstreamError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| UpstreamError::Transport(transport_reason(e)))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| UpstreamError::Transport(transport_reason(e)))?
        {
            if buf.len() + chunk.len() > self.max_body {
                return Err(UpstreamError::Transport(format!(
                    "the upstream's answer is over {} bytes",
                    self.max_body
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((status, Bytes::from(buf), retry_after))
    }
}

/// A `Retry-After` given in seconds (what upstreams and webhook receivers send).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What went wrong, without the URL (which may carry a token in its query).
fn transport_reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        "the upstream did not answer in time".into()
    } else if e.is_connect() {
        "could not connect to the upstream".into()
    } else {
        format!("talking to the upstream failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classed() {
        let classes: [(Class, &[u16]); 4] = [
            (Class::Auth, &[401, 403]),
            (Class::RateLimited, &[429]),
            (Class::Retryable, &[408, 500, 502, 599]),
            (Class::Permanent, &[302, 400, 404, 409, 422]),
        ];
        for (class, statuses) in classes {
            for status in statuses {
                let status = StatusCode::from_u16(*status).unwrap();
                assert_eq!(Class::of(status), class, "{status}");
            }
        }
        let wait = Some(Duration::from_secs(3));
        assert!(matches!(
            status_error(StatusCode::TOO_MANY_REQUESTS, wait, String::new()),
            ProviderError::RateLimited { retry_after } if retry_after == wait
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY, None, "x".into()),
            ProviderError::Retryable(m) if m == "x"
        ));
    }
}
