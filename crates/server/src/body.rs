//! Reading a JSON request body: content type checked, size bounded.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gengate_core::ApiError;

/// Room for a 10 MB image in base64 (13.4 MB) plus the rest of the JSON.
pub const MAX_BODY_BYTES: usize = 15 * 1024 * 1024;

/// A body somewhat over the limit is read to its end (and dropped) so the
/// client, still sending, reliably gets the 413 instead of a reset
/// connection; beyond this, the connection is cut.
const DRAIN_LIMIT: usize = 4 * MAX_BODY_BYTES;

pub async fn read_json(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large);
    }
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| ApiError::MalformedJson("the body could not be read".into()))?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large);
    }
    Ok(buf.freeze())
}
