//! What the Luma, Replicate, OpenAI images and ComfyUI emulations share:
//! [`Fault`]s queued by tests and served instead of an answer, the server
//! whose connections a [`Fault::Reset`] can close, and the counters tests
//! read. Each emulation brings only its upstream's error body.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A fault an emulation serves instead of its next answer (queued, in order).
#[derive(Clone, Debug)]
pub enum Fault {
    /// The upstream's own error body with this status and message;
    /// `retry_after` (seconds) as the header.
    Error {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// HTTP 200 with a body that is not JSON.
    Malformed,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Close the connection without answering: the client sees a transport
    /// error, not an HTTP status.
    Reset,
}

/// An upstream's own error body for a status and a message.
pub type ErrorBody = fn(StatusCode, &str) -> Response;

/// One emulation's queue of faults.
pub struct Faults {
    queue: Mutex<VecDeque<Fault>>,
    error: ErrorBody,
}

impl Faults {
    /// `error` answers [`Fault::Error`] as the upstream would.
    pub fn new(error: ErrorBody) -> Arc<Faults> {
        Arc::new(Faults {
            queue: Mutex::default(),
            error,
        })
    }

    /// Serve `fault` instead of the next guarded answer.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(fault);
        }
    }

    /// `routes` (those added so far) with each request taking the next
    /// fault first. [`Fault::Reset`] needs the app run by [`serve`].
    pub fn guard<S: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        routes: Router<S>,
    ) -> Router<S> {
        routes.route_layer(from_fn_with_state(self.clone(), answer))
    }
}

async fn answer(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    // The request is read whole first, as the handlers' extractors would:
    // a socket closed with data unread would reset before the answer.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let request = Request::from_parts(parts, Body::from(body));
    let fault = faults.queue.lock().ok().and_then(|mut q| q.pop_front());
    match fault {
        None => next.run(request).await,
        Some(Fault::Error {
            status,
            message,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (faults.error)(status, &message);
            if let Some(secs) = retry_after {
                r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            r
        }
        Some(Fault::Malformed) => (StatusCode::OK, "<html>not json</html>").into_response(),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(request).await
        }
        Some(Fault::Reset) => {
            let Some(ConnectInfo(switch)) = request.extensions().get::<ConnectInfo<ResetSwitch>>()
            else {
                panic!("Fault::Reset needs the emulation served by faults::serve");
            };
            switch.0.store(true, Ordering::SeqCst);
            // Never sent: the connection fails its first write.
            StatusCode::OK.into_response()
        }
    }
}

/// A listener on 127.0.0.1:0 and its address.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serves `app` on `listener`, each connection with its own switch that
/// [`Fault::Reset`] throws, so only the faulted request's connection closes.
pub fn serve(listener: TcpListener, app: Router) -> Server {
    let app = app.into_make_service_with_connect_info::<ResetSwitch>();
    Server(tokio::spawn(async move {
        let _ = axum::serve(ResettingListener(listener), app).await;
    }))
}

/// A running emulation's server, stopped when dropped (with its emulation).
pub struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Set: the connection fails its next write, which makes the server drop
/// (close) it with nothing sent.
#[derive(Clone, Default)]
struct ResetSwitch(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, ResettingListener>> for ResetSwitch {
    fn connect_info(stream: IncomingStream<'_, ResettingListener>) -> Self {
        stream.io().switch.clone()
    }
}

struct ResettingListener(TcpListener);

impl Listener for ResettingListener {
    type Io = ResettingStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ResettingStream, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.0.accept().await {
                let switch = ResetSwitch::default();
                return (ResettingStream { stream, switch }, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct ResettingStream {
    stream: TcpStream,
    switch: ResetSwitch,
}

impl AsyncRead for ResettingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.switch.0.load(Ordering::SeqCst) {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A count an emulation keeps for tests to read.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Counts one more; gives the count before it (a sequence number from 0).
    pub fn add(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One request on `conn`; what came back before it closed (if it did).
    async fn exchange(conn: &mut TcpStream) -> Vec<u8> {
        let request = b"GET / HTTP/1.1\r\nhost: emu\r\n\r\n";
        conn.write_all(request).await.expect("write");
        let mut buf = vec![0; 1024];
        let n = conn.read(&mut buf).await.unwrap_or(0);
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn a_reset_closes_its_own_connection_with_nothing_sent() {
        let faults = Faults::new(|status: StatusCode, _: &str| status.into_response());
        let (listener, addr) = bind().await;
        let routes = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let _server = serve(listener, faults.guard(routes));
        let mut other = TcpStream::connect(addr).await.expect("connect");
        assert!(exchange(&mut other).await.starts_with(b"HTTP/1.1 200"));

        let mut reset = TcpStream::connect(addr).await.expect("connect");
        faults.inject(Fault::Reset);
        assert_eq!(exchange(&mut reset).await, b"");
        // The connection alongside, kept alive, still answers.
        assert!(exchange(&mut other).await.starts_with(b"HTTP/1.1 200"));
    }
}
