//! gengate's HTTP side, routing only: one module per dialect (handlers
//! parse, call the task service, render), files, health, metrics and the
//! OpenAPI document; the router state in `state`, every error envelope in
//! `error`, keys and the auth extractors in `auth`.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub mod admin;
pub mod admin_keys;
pub mod auth;
pub mod body;
pub mod console;
pub mod deliveries;
pub mod dream_machine;
pub mod error;
mod extract;
pub mod feed;
pub mod files;
pub mod health;
pub mod kling;
pub mod limits;
pub mod luma;
pub mod metrics;
pub mod models_api;
pub mod openai_images;
pub mod openai_videos;
pub mod openapi;
pub mod prices;
pub mod rendered;
pub mod request_id;
mod state;
pub mod tasks_api;
pub mod upstream_callbacks;
pub mod usage;

pub use state::AppState;

/// How the HTTP side is set up beyond its state.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub limits: limits::Limits,
    /// Origins browsers may call the API from (CORS); none: no CORS
    /// headers, so browsers keep other sites' pages out.
    pub cors_origins: Vec<HeaderValue>,
    /// Whether this listener serves `/metrics` (not when it has its own).
    pub metrics_here: bool,
    /// `/metrics` only with this bearer token.
    pub metrics_token: Option<String>,
    /// Proxies whose `X-Forwarded-For` names the client (for the wrong-key
    /// limit); none: the TCP peer is the client.
    pub trusted_proxies: std::sync::Arc<Vec<gengate_engine::net::Cidr>>,
}

/// The routes: with `serve_api`, the dialects, files and OpenAPI; always
/// the health endpoints (a worker-only instance answers those alone).
pub fn router(state: AppState, serve_api: bool, opts: &HttpOptions) -> Router {
    metrics::install();
    let mut routes = Router::new().merge(health::router());
    if serve_api {
        routes = routes.merge(api_routes(&state, opts));
    }
    if opts.metrics_here {
        routes = routes.merge(metrics::router(opts.metrics_token.as_deref()));
    }
    let routes = routes
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(not_found)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"detail": "internal error"})),
            )
                .into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Bodies are bounded where they are read (body::read_json).
        .layer(axum::extract::DefaultBodyLimit::disable());
    with_security_headers(with_cors(routes, &opts.cors_origins))
}

/// `/metrics` alone, for its own listen address (`metrics_listen`).
pub fn metrics_router(token: Option<&str>) -> Router {
    with_security_headers(metrics::router(token))
}

/// The dialects, files and OpenAPI, each request bounded in time and in
/// number (health and metrics stay answerable under load: not capped).
fn api_routes(state: &AppState, opts: &HttpOptions) -> Router<AppState> {
    let routes = Router::new()
        .merge(luma::router())
        .merge(kling::router())
        .merge(dream_machine::router())
        .merge(deliveries::router())
        .merge(tasks_api::router())
        .merge(feed::router())
        .merge(console::router())
        .merge(models_api::router())
        .merge(admin::router())
        .merge(prices::router())
        .merge(usage::router())
        .merge(admin_keys::router())
        .merge(upstream_callbacks::router())
        .merge(files::router())
        .merge(openai_videos::router())
        .route("/openapi.json", get(openapi::serve))
        .merge(openapi::reference_page());
    let synchronous = Router::new()
        .merge(openai_images::router())
        .merge(dream_machine::sync_router());
    // A request (body upload included) gets REQUEST_TIMEOUT; one that
    // waits for its task gets that wait on top. File bodies stream after it.
    let sync_timeout = state.sync_wait.max(dream_machine_sync_max()) + REQUEST_TIMEOUT;
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(synchronous.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            sync_timeout,
        )))
        .route_layer(axum::middleware::from_fn_with_state(
            limits::InFlight::new(opts.limits.max_requests_in_flight),
            limits::cap_in_flight,
        ))
}

/// Headers every answer carries: no type sniffing, no framing, no referrer.
fn with_security_headers(routes: Router) -> Router {
    [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
    .into_iter()
    .fold(routes, |routes, (name, value)| {
        routes.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ))
    })
}

fn with_cors(routes: Router, origins: &[HeaderValue]) -> Router {
    if origins.is_empty() {
        return routes;
    }
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let asked = [
        header::AUTHORIZATION,
        header::CONTENT_TYPE,
        header::RANGE,
        HeaderName::from_static("idempotency-key"),
        HeaderName::from_static("last-event-id"),
    ];
    let shown = [
        header::RETRY_AFTER,
        header::CONTENT_RANGE,
        header::ETAG,
        HeaderName::from_static("x-request-id"),
    ];
    routes.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods(methods)
            .allow_headers(asked)
            .expose_headers(shown)
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"detail": "no such endpoint"})),
    )
        .into_response()
}

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `sync_timeout` Luma's image create takes.
fn dream_machine_sync_max() -> Duration {
    Duration::from_secs_f64(gengate_core::dialect::dream_machine::MAX_SYNC_TIMEOUT_SECS)
}
