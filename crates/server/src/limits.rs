//! What bounds the HTTP side, under the router: the accept loop (a cap on
//! open connections, a deadline for each request's headers so slow clients
//! cannot hold connections, the client's address for the handlers, a
//! graceful stop), and a cap on requests in progress. Over a cap, a client
//! gets 503 with `Retry-After`, never unbounded memory.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gengate_engine::net::Cidr;
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
    trusted_proxies: Arc<Vec<Cidr>>,
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
        let (app, trusted) = (app.clone(), trusted_proxies.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let client = client_of(peer.ip(), req.headers(), &trusted);
            req.extensions_mut().insert(ClientAddress(client));
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

/// The address of the client a request comes from (see [`client_of`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// The client's address, where the accept loop recorded it.
pub fn client_address(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions.get::<ClientAddress>().map(|c| c.0)
}

/// The client behind `peer`: the peer itself, unless it is one of the
/// `trusted` proxies; then the nearest address in `X-Forwarded-For` that is
/// not (a client can prepend anything; only the proxies' own additions,
/// read from the right, are believed).
fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_proxy = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_proxy(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_proxy(*ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted = vec!["10.0.0.0/8".parse::<Cidr>().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "192.0.2.9".parse().unwrap();
        let h = forwarded("198.51.100.1, 203.0.113.7, 10.9.9.9");
        // Read from the right, past the proxies: not the client-supplied first.
        assert_eq!(
            client_of(proxy, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_of(stranger, &h, &trusted),
            stranger,
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_of(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            client_of(proxy, &h, &[]),
            proxy,
            "no proxies trusted: the peer"
        );
    }
}
