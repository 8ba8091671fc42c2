//! Bounded HTTP GETs of media: status checked, size capped while streaming,
//! time bounded by the client's timeout.

use std::time::Duration;

use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("larger than {} MB", .0 / (1024 * 1024))]
    TooLarge(u64),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("connection failed")]
    Connect,
    /// The request could not be made as asked (a bad URL, too many
    /// redirects): trying again will not help.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Worth trying again later (the other side may recover).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(s) => *s >= 500 || *s == 429,
            FetchError::Timeout(_) | FetchError::Connect | FetchError::Other(_) => true,
            FetchError::TooLarge(_) | FetchError::Refused(_) => false,
        }
    }
}

/// A GET's body, read chunk by chunk and refused past its cap.
pub struct Capped {
    resp: reqwest::Response,
    max_bytes: u64,
    read: u64,
    timeout: Duration,
}

impl Capped {
    /// GET `url`: a success status and a declared length within the cap.
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Capped, FetchError> {
        let resp = http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| classify(e, timeout))?;
        Capped::answer(resp, max_bytes, timeout)
    }

    /// GET `url` with `header` (an upstream's key) on a client that follows
    /// no redirects: they are followed here, at most 3, and the header goes
    /// only to `url`'s own origin, never to storage it redirects to.
    pub async fn open_keyed(
        http: &reqwest::Client,
        url: &str,
        header: (&str, &str),
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Capped, FetchError> {
        let bad = |e: url::ParseError| FetchError::Refused(format!("bad URL: {e}"));
        let mut at = url::Url::parse(url).map_err(bad)?;
        let origin = at.origin();
        for _ in 0..=3 {
            let mut req = http.get(at.clone()).timeout(timeout);
            if at.origin() == origin {
                req = req.header(header.0, header.1);
            }
            let resp = req.send().await.map_err(|e| classify(e, timeout))?;
            if !resp.status().is_redirection() {
                return Capped::answer(resp, max_bytes, timeout);
            }
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FetchError::Status(resp.status().as_u16()))?;
            at = at.join(to).map_err(bad)?;
        }
        Err(FetchError::Refused("more than 3 redirects".into()))
    }

    fn answer(
        resp: reqwest::Response,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Capped, FetchError> {
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        Ok(Capped {
            resp,
            max_bytes,
            read: 0,
            timeout,
        })
    }

    /// The next chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        let Some(chunk) = self
            .resp
            .chunk()
            .await
            .map_err(|e| classify(e, self.timeout))?
        else {
            return Ok(None);
        };
        self.read += chunk.len() as u64;
        if self.read > self.max_bytes {
            return Err(FetchError::TooLarge(self.max_bytes));
        }
        Ok(Some(chunk))
    }
}

fn classify(e: reqwest::Error, timeout: Duration) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(timeout)
    } else if e.is_connect() {
        FetchError::Connect
    } else if e.is_builder() || e.is_redirect() {
        FetchError::Refused(e.without_url().to_string())
    } else {
        // Not the URL: an upstream's is often signed.
        FetchError::Other(e.without_url().to_string())
    }
}

/// A whole body in memory, for what is small (input images).
pub async fn get_capped(
    http: &reqwest::Client,
    url: &str,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let mut body = Capped::open(http, url, max_bytes as u64, timeout).await?;
    let mut out = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
