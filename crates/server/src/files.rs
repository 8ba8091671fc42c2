//! `/files/results/{file}`: results streamed from storage (whichever
//! instance stored them) with `Range`, `ETag`, `HEAD` and caching forever,
//! since a result's name is its content's hash; or, with
//! `file_urls = "presigned"`, a redirect to a short-lived storage URL. With
//! signed URLs (`file_url_ttl_secs`) a request must carry a valid, unexpired
//! signature (403 otherwise).
//! Inputs clients uploaded are stored beside results but never served.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gengate_engine::artifacts::RESULTS_PREFIX;
use gengate_engine::storage::{GetRange, MediaStore, StorageError};
use serde::Deserialize;

use crate::AppState;

const NO_SUCH_FILE: &str = "no such file (results are deleted once their retention passes)";

/// Where clients fetch results from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileUrls {
    /// gengate streams them from storage.
    Proxy,
    /// gengate redirects to a storage URL signed for this long.
    Presigned(Duration),
}

pub fn router() -> Router<AppState> {
    // `get` answers HEAD too; the handler then reads no body.
    Router::new().route("/files/results/{file}", get(serve))
}

#[derive(Deserialize)]
pub struct FileQuery {
    /// Present: answer as a download (`Content-Disposition: attachment`).
    download: Option<String>,
    /// With signed result URLs (`file_url_ttl_secs`): when it runs out.
    expires: Option<String>,
    signature: Option<String>,
}

/// A stored result (documented in `openapi`'s `Files`).
pub async fn serve(
    State(state): State<AppState>,
    method: Method,
    Path(file): Path<String>,
    Query(query): Query<FileQuery>,
    headers: HeaderMap,
) -> Response {
    let Some((hash, content_type)) = parse_name(&file) else {
        return detail(StatusCode::NOT_FOUND, "no such file");
    };
    let media = state.engine.media();
    let key = format!("{RESULTS_PREFIX}/{file}");
    let (expires, signature) = (query.expires.as_deref(), query.signature.as_deref());
    let now = gengate_engine::now_ms();
    if let Err(refused) = state.file_links.check(&key, expires, signature, now) {
        return detail(StatusCode::FORBIDDEN, &refused.to_string());
    }
    if let FileUrls::Presigned(ttl) = state.file_urls {
        return match media.presign(&key, ttl).await {
            Some(Ok(url)) => redirect(&url),
            Some(Err(e)) => unavailable(&e),
            None => unavailable(&StorageError::Config("cannot presign".into())),
        };
    }
    let etag = format!("\"{hash}\"");
    let mut out = HeaderMap::new();
    // A signed URL must not outlive its expiry in a cache.
    let cache = match expires.and_then(|e| e.parse::<i64>().ok()) {
        Some(at) if state.file_links.is_signed() => {
            format!("private, max-age={}", (at - now / 1000).max(0))
        }
        _ => "public, max-age=31536000, immutable".to_string(),
    };
    out.insert(header::CACHE_CONTROL, value(&cache));
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if query.download.is_some() {
        let disposition = format!("attachment; filename=\"{file}\"");
        out.insert(header::CONTENT_DISPOSITION, value(&disposition));
    }
    respond(media, &method, &headers, &key, &etag, out).await
}

/// The stored file `key` as an answer with the headers in `out` (its type,
/// caching, `etag`): 304 when the client has it, `Range` (206, 416), `HEAD`.
pub async fn respond(
    media: &MediaStore,
    method: &Method,
    headers: &HeaderMap,
    key: &str,
    etag: &str,
    mut out: HeaderMap,
) -> Response {
    out.insert(header::ETAG, value(etag));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let head = *method == Method::HEAD;
    // A range is checked against the file's size first: one the file does
    // not hold is a 416 saying how long it is, never a storage error.
    let range = match wanted {
        None => None,
        Some(wanted) => {
            let size = match media.read(key, None, true).await {
                Ok(found) => found.meta.size,
                Err(StorageError::NotFound) => return detail(StatusCode::NOT_FOUND, NO_SUCH_FILE),
                Err(e) => return unavailable(&e),
            };
            let Some(range) = wanted.within(size) else {
                out.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
                return (StatusCode::RANGE_NOT_SATISFIABLE, out).into_response();
            };
            let part = format!("bytes {}-{}/{size}", range.start, range.end - 1);
            out.insert(header::CONTENT_RANGE, value(&part));
            Some(range)
        }
    };
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    // A HEAD with a range has all it needs from the size.
    if let (true, Some(r)) = (head, &range) {
        out.insert(
            header::CONTENT_LENGTH,
            value(&(r.end - r.start).to_string()),
        );
        return (status, out).into_response();
    }
    let bounded = range.clone().map(GetRange::Bounded);
    let found = match media.read(key, bounded, head).await {
        Ok(found) => found,
        Err(StorageError::NotFound) => return detail(StatusCode::NOT_FOUND, NO_SUCH_FILE),
        Err(e) => return unavailable(&e),
    };
    let length = range.map_or(found.meta.size, |r| r.end - r.start);
    out.insert(header::CONTENT_LENGTH, value(&length.to_string()));
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(MediaStore::body(found))
    };
    (status, out, body).into_response()
}

/// A `Range` asked for, before the file's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    /// `bytes=first-` or `bytes=first-last`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Last(u64),
}

impl Wanted {
    /// The bytes of a file of `size` this asks for; `None` when it holds none.
    fn within(self, size: u64) -> Option<std::ops::Range<u64>> {
        match self {
            Wanted::From(first, _) if first >= size => None,
            Wanted::From(first, last) => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some(first..end)
            }
            Wanted::Last(n) if n == 0 || size == 0 => None,
            Wanted::Last(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

/// `<64 hex>.<ext>`: the hash and the content type; nothing else is a result.
fn parse_name(file: &str) -> Option<(&str, &'static str)> {
    let (hash, ext) = file.split_once('.')?;
    let content_type = match ext {
        "mp4" => "video/mp4",
        "jpg" => "image/jpeg",
        "png" => "image/png",
        _ => return None,
    };
    let hex = hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then_some((hash, content_type))
}

/// One range of `bytes=first-last`, `bytes=first-` or `bytes=-suffix`.
/// Anything else (several ranges, other units, nonsense) is ignored and the
/// whole file served, as HTTP allows.
fn parse_range(v: &str) -> Option<Wanted> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        return last.parse().ok().map(Wanted::Last);
    }
    let first: u64 = first.parse().ok()?;
    if last.is_empty() {
        return Some(Wanted::From(first, None));
    }
    let last: u64 = last.parse().ok()?;
    (last >= first).then_some(Wanted::From(first, Some(last)))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

fn detail(status: StatusCode, detail: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "detail": detail }))).into_response()
}

fn redirect(url: &str) -> Response {
    let mut out = HeaderMap::new();
    out.insert(header::LOCATION, value(url));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::TEMPORARY_REDIRECT, out).into_response()
}

fn unavailable(e: &StorageError) -> Response {
    tracing::warn!(error = %e, "serving a file from storage failed");
    let mut r = detail(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable");
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_fit_the_file_as_http_says() {
        let r = |s, size| parse_range(s).map(|w| w.within(size));
        assert_eq!(r("bytes=0-9", 100), Some(Some(0..10)));
        assert_eq!(
            r("bytes=0-999", 100),
            Some(Some(0..100)),
            "clamped to the file"
        );
        assert_eq!(r("bytes=5-", 100), Some(Some(5..100)));
        assert_eq!(r("bytes=-3", 100), Some(Some(97..100)));
        assert_eq!(r("bytes=-300", 100), Some(Some(0..100)), "the whole file");
        assert_eq!(r("bytes=99-", 100), Some(Some(99..100)));
        for outside in ["bytes=100-", "bytes=100-200"] {
            assert_eq!(r(outside, 100), Some(None), "{outside}");
        }
        assert_eq!(r("bytes=-5", 0), Some(None), "an empty file holds no bytes");
        assert_eq!(r("bytes=-0", 100), Some(None), "no bytes at all");
        for ignored in ["bytes=9-0", "bytes=0-1,4-5", "items=0-1", "bytes=x-", ""] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn only_hash_names_are_results() {
        let h = "a".repeat(64);
        assert_eq!(parse_name(&format!("{h}.mp4")), Some((&h[..], "video/mp4")));
        assert!(parse_name(&format!("{h}.gif")).is_none());
        assert!(parse_name(&format!("{}.png", "A".repeat(64))).is_none());
        assert!(parse_name("../gengate.db").is_none());
    }
}
