//! gengate's HTTP side, routing only: one module per dialect (handlers
//! parse, call the task service, render), files, health, metrics and the
//! OpenAPI document; the router state in `state`, every error envelope in
//! `error`, keys and the auth extractors in `auth`.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
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

/// The routes: with `serve_api`, the dialects, files and OpenAPI; always
/// the health endpoints (a worker-only instance answers those alone).
pub fn router(state: AppState, serve_api: bool) -> Router {
    metrics::install();
    let mut routes = Router::new()
        .merge(health::router())
        .route("/metrics", get(metrics::serve));
    let mut synchronous = Router::new();
    if serve_api {
        routes = routes
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
        synchronous = synchronous
            .merge(openai_images::router())
            .merge(dream_machine::sync_router());
    }
    // A request (body upload included) gets REQUEST_TIMEOUT; one that
    // waits for its task gets that wait on top. File bodies stream after it.
    let sync_timeout = state.sync_wait.max(dream_machine_sync_max()) + REQUEST_TIMEOUT;
    let routes = routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .merge(synchronous.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            sync_timeout,
        )));
    routes
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
        .layer(axum::extract::DefaultBodyLimit::disable())
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"detail": "no such endpoint"})),
    )
        .into_response()
}

/// Serve until `shutdown` resolves, then stop taking requests and finish
/// the ones in progress (bounded by the caller).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    serve_api: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, serve_api))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long one request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `sync_timeout` Luma's image create takes.
fn dream_machine_sync_max() -> Duration {
    Duration::from_secs_f64(gengate_core::dialect::dream_machine::MAX_SYNC_TIMEOUT_SECS)
}

/// How long graceful shutdown waits for open requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
