//! Reading a request body: JSON, or (where OpenAI's API takes uploads)
//! multipart/form-data; content type checked, size bounded.

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
    if !mime(headers).eq_ignore_ascii_case("application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    read_limited(headers, body).await
}

fn mime(headers: &HeaderMap) -> &str {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ct.split(';').next().unwrap_or("").trim()
}

/// One part of a multipart/form-data body.
pub struct Part {
    pub name: String,
    /// Set when the part is a file.
    pub file_name: Option<String>,
    pub bytes: Bytes,
}

/// A body as JSON or as the parts of a form.
pub enum JsonOrForm {
    Json(Bytes),
    Form(Vec<Part>),
}

/// A JSON or multipart/form-data body, within the same limit.
pub async fn read_json_or_form(headers: &HeaderMap, body: Body) -> Result<JsonOrForm, ApiError> {
    let mime = mime(headers);
    if mime.eq_ignore_ascii_case("application/json") {
        return Ok(JsonOrForm::Json(read_limited(headers, body).await?));
    }
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::validation(
            "multipart",
            format!("is not valid multipart/form-data: {e}"),
        )
    };
    let boundary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad(&"no boundary"))
        .and_then(|ct| multer::parse_boundary(ct).map_err(|e| bad(&e)))?;
    let bytes = read_limited(headers, body).await?;
    let mut form = multer::Multipart::new(
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) }),
        boundary,
    );
    let mut parts = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| bad(&e))? {
        let name = field.name().unwrap_or_default().to_string();
        let file_name = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| bad(&e))?;
        parts.push(Part {
            name,
            file_name,
            bytes,
        });
    }
    Ok(JsonOrForm::Form(parts))
}

/// The body, refused past [`MAX_BODY_BYTES`].
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
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
