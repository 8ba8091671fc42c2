//! Reading a JSON request body: content type checked, size bounded.

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use gengate_core::ApiError;

/// Room for a 10 MB image in base64 (13.4 MB) plus the rest of the JSON.
pub const MAX_BODY_BYTES: usize = 15 * 1024 * 1024;

pub async fn read_json(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        })
}
