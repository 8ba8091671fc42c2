//! What bounds the HTTP side, under the router: the accept loop (a cap on
//! open connections, a deadline for each request's headers so slow clients
//! cannot hold connections, the client's address for the handlers, a
//! graceful stop), and a cap on requests in progress. Over a cap, a client
//! gets 503 with `Retry-After`, never unbounded memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The HTTP side's bounds (settings `max_connections`,
/// `max_requests_in_flight`, `header_timeout_secs`, whose defaults are
/// gengate's settings').
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_requests_in_flight: usize,
    pub header_timeout: Duration,
}

/// What a client over a cap is told.
const BUSY_SECS: u64 = 1;

fn busy_body(what: &str) -> String {
    format!("{{\"detail\":\"too many {what}; retry after {BUSY_SECS} s\"}}")
}

/// Accept connections for `app` until `shutdown`, then close the listener
/// and let requests in progress finish (the caller bounds how long).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("gengate_http_refused_total", "cap" => "connections").increment(1);
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away is not the server's error.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answer a connection over the cap and close it, without reading it. A
/// fresh socket's send buffer takes the whole answer at once: no task and
/// no wait, so clients over the cap hold nothing here.
fn refuse(stream: TcpStream) {
    let body = busy_body("connections");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {BUSY_SECS}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// The cap on requests in progress, as a layer's state.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight(Arc::new(Semaphore::new(max)))
    }
}

/// Run the request if a place is free (held until its response head), or
/// answer 503 at once: waiting in line would only grow memory.
pub async fn cap_in_flight(State(cap): State<InFlight>, req: Request, next: Next) -> Response {
    let Ok(_place) = cap.0.try_acquire() else {
        metrics::counter!("gengate_http_refused_total", "cap" => "requests").increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, HeaderValue::from(BUSY_SECS)),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            busy_body("requests in progress"),
        )
            .into_response();
    };
    next.run(req).await
}

/// The client's address, where the accept loop recorded it.
pub fn client_address(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}
