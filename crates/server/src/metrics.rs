//! `/metrics` in Prometheus' text format. The recorder is process-wide, so
//! it is installed once, by whichever server starts first.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder (once per process).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    });
}

/// `/metrics`: open, or only with `Authorization: Bearer <token>`
/// (`metrics_token`).
pub fn router<S: Clone + Send + Sync + 'static>(token: Option<&str>) -> Router<S> {
    let route = Router::new().route("/metrics", axum::routing::get(serve));
    let Some(token) = token else {
        return route;
    };
    // Compared as digests: the time taken says nothing of the token.
    let expected: Arc<[u8; 32]> = Arc::new(Sha256::digest(token.as_bytes()).into());
    route.route_layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let expected = expected.clone();
            async move {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
                if given.as_ref() == Some(&*expected) {
                    next.run(req).await
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "metrics need Authorization: Bearer <metrics_token>",
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// The metrics, for a Prometheus scrape.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn serve() -> Response {
    match HANDLE.get().and_then(Option::as_ref) {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics are not enabled").into_response(),
    }
}

/// Count every routed request by API, route, method and status, and time
/// it (until its response head: a streamed body is not waited for).
pub async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = matched.as_ref().map_or("", MatchedPath::as_str).to_string();
    // Methods are the client's words: only the standard ones are labels.
    let method = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let resp = next.run(req).await;
    let api = api_of(&route);
    metrics::counter!(
        "gengate_http_requests_total",
        "api" => api,
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("gengate_http_request_duration_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Which API (a dialect, or gengate's other surfaces) a route belongs to.
fn api_of(route: &str) -> &'static str {
    const APIS: [(&str, &str); 12] = [
        ("/luma/", "luma"),
        ("/kling/", "kling"),
        ("/dream-machine/", "dream_machine"),
        ("/v1/images/", "openai_images"),
        ("/v1/", "gengate"),
        ("/admin/", "admin"),
        ("/files/", "files"),
        ("/upstream/", "upstream_callbacks"),
        ("/console", "console"),
        ("/docs", "docs"),
        ("/openapi.json", "docs"),
        ("/", "health"),
    ];
    APIS.iter()
        .find(|(prefix, _)| route.starts_with(prefix))
        .map_or("other", |(_, api)| api)
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_belong_to_their_api() {
        for (route, api) in [
            ("/luma/tasks", "luma"),
            ("/kling/v1/images/generations/{id}", "kling"),
            ("/dream-machine/v1/generations/video", "dream_machine"),
            ("/v1/images/generations", "openai_images"),
            ("/v1/tasks/{id}", "gengate"),
            ("/v1/events", "gengate"),
            ("/admin/keys", "admin"),
            ("/console/app.js", "console"),
            ("/healthz", "health"),
        ] {
            assert_eq!(super::api_of(route), api, "{route}");
        }
    }
}
