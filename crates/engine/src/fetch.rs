//! Bounded HTTP GETs of media: status checked, size capped while streaming,
//! time bounded by the client's timeout.

use std::time::Duration;

use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("larger than {} MB", .0 / (1024 * 1024))]
    TooLarge(usize),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("connection failed")]
    Connect,
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// Worth trying again later (the other side may recover).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(s) => *s >= 500 || *s == 429,
            FetchError::Timeout(_) | FetchError::Connect | FetchError::Other(_) => true,
            FetchError::TooLarge(_) => false,
        }
    }
}

pub async fn get_capped(
    http: &reqwest::Client,
    url: &str,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Vec<u8>, FetchError> {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Timeout(timeout)
        } else if e.is_connect() {
            FetchError::Connect
        } else {
            FetchError::Other(e.to_string())
        }
    };
    let resp = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(classify)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(FetchError::TooLarge(max_bytes));
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify)?;
        if body.len() + chunk.len() > max_bytes {
            return Err(FetchError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
