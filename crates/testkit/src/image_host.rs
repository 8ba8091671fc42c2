//! A web server holding input images, as a client's CDN would: a good PNG,
//! a GIF, a missing file, one too large, one too slow, and a good one
//! after a chosen delay (`/late/{ms}.png`, its requests counted).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// An 8×8 PNG of solid rgb(200, 30, 40).
pub const RED_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x02, 0x00, 0x00, 0x00, 0x4b, 0x6d, 0x29,
    0xdc, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x38, 0x21, 0xa7, 0x81,
    0x15, 0x31, 0x0c, 0x2d, 0x09, 0x00, 0x88, 0x4e, 0x43, 0x81, 0xc4, 0xc8, 0x1c, 0xb4, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// How long `/slow.png` takes to answer.
pub const SLOW: Duration = Duration::from_secs(20);

pub struct ImageHost {
    pub addr: SocketAddr,
    late_requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ImageHost {
    pub async fn start() -> ImageHost {
        let late_requests = Arc::new(AtomicU64::new(0));
        let counter = late_requests.clone();
        let app = Router::new()
            .route(
                "/late/{file}",
                get(move |Path(file): Path<String>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        let ms = file.trim_end_matches(".png").parse().unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        ([(header::CONTENT_TYPE, "image/png")], RED_PNG)
                    }
                }),
            )
            .route(
                "/red.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], RED_PNG) }),
            )
            .route(
                "/anim.gif",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "image/gif")],
                        &b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"[..],
                    )
                }),
            )
            .route(
                "/huge.png",
                get(|| async {
                    // A PNG signature followed by 11 MB: over the 10 MB limit.
                    let mut body = RED_PNG.to_vec();
                    body.resize(11 * 1024 * 1024, 0);
                    ([(header::CONTENT_TYPE, "image/png")], body)
                }),
            )
            .route(
                "/slow.png",
                get(|| async {
                    tokio::time::sleep(SLOW).await;
                    ([(header::CONTENT_TYPE, "image/png")], RED_PNG)
                }),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the image host: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("image host address: {e}"));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "image host stopped");
            }
        });
        ImageHost {
            addr,
            late_requests,
            task,
        }
    }

    /// Requests `/late/...` has had.
    pub fn late_requests(&self) -> u64 {
        self.late_requests.load(Ordering::Relaxed)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ImageHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}
