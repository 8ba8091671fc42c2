//! `/console`: the operator's web console. Three files compiled into the
//! binary (a page, a stylesheet, one ES module): no build step, nothing
//! fetched from elsewhere, and a Content-Security-Policy that allows
//! nothing but this origin (and, with `file_urls = "presigned"`, media
//! from the storage the result URLs redirect to). The console signs in with
//! an API key and works through the public API like any client.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::AppState;
use crate::files::FileUrls;

const PAGE: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/style.css");

/// Scripts, styles, images, media and API calls from this origin only
/// (images and media also from `media`, where presigned result URLs lead);
/// no inline script or style, no framing, no form posting elsewhere.
fn csp(media: Option<&str>) -> String {
    let media = media.map(|origin| format!(" {origin}")).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:{media}; \
         media-src 'self'{media}; connect-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// The page, whose policy is the one that counts for everything it loads.
async fn page(State(state): State<AppState>) -> Response {
    let media = match state.file_urls {
        FileUrls::Presigned(_) => state.engine.media().presign_origin().await,
        FileUrls::Proxy => None,
    };
    file(PAGE, "text/html; charset=utf-8", media.as_deref())
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(page))
        .route(
            "/console/app.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8", None) }),
        )
        .route(
            "/console/style.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8", None) }),
        )
}

fn file(body: &'static str, content_type: &'static str, media: Option<&str>) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(policy) = HeaderValue::from_str(&csp(media)) {
        h.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    // Small and changed by upgrades: revalidated every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
