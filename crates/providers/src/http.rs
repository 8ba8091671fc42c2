//! The HTTP side every real adapter shares: one upstream base URL, bounded
//! time per request, no redirects followed, bodies capped, and `Retry-After`
//! read for the rate-limit class.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

/// Bodies an upstream may send back (JSON envelopes, not media), at most.
const MAX_BODY: usize = 4 << 20;

#[derive(Debug)]
pub enum UpstreamError {
    /// Connect, timeout, reset, or a body past the cap: worth retrying.
    Transport(String),
}

#[derive(Clone)]
pub struct Upstream {
    base: String,
    http: reqwest::Client,
    max_body: usize,
}

/// What came back: status, body, and `Retry-After` if the upstream sent one.
pub type Answer = (reqwest::StatusCode, Bytes, Option<Duration>);

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
