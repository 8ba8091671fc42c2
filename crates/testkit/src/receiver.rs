//! A callback receiver: records every request, answers with scripted
//! statuses (then 200), and can go down and come back on the same address.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One scripted answer.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after_secs: None,
            delay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    /// Answer for requests once the script is spent (200 when unset).
    otherwise: Option<Reply>,
    received: Vec<Received>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let Ok(mut i) = inner.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let reply = i
            .script
            .pop_front()
            .or(i.otherwise)
            .unwrap_or(Reply::status(200));
        i.received.push(Received {
            at: Instant::now(),
            path: uri.path().to_string(),
            headers,
            body,
            status: reply.status,
        });
        reply
    };
    tokio::time::sleep(reply.delay).await;
    let mut resp = StatusCode::from_u16(reply.status)
        .unwrap_or(StatusCode::OK)
        .into_response();
    if let Some(secs) = reply.retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    resp
}

impl Receiver {
    /// Listen on `ip` (a loopback address such as 127.0.0.1 or 127.0.0.2).
    pub async fn start_on(ip: &str) -> Receiver {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a receiver on {ip}: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("receiver address: {e}"));
        let inner = Arc::new(Mutex::new(Inner::default()));
        let task = Some(serve(listener, inner.clone()));
        Receiver { addr, inner, task }
    }

    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1").await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer the next requests with these, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        if let Ok(mut i) = self.inner.lock() {
            i.script.extend(replies);
        }
    }

    /// Answer every request with this once the script is spent.
    pub fn otherwise(&self, reply: Reply) {
        if let Ok(mut i) = self.inner.lock() {
            i.otherwise = Some(reply);
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner
            .lock()
            .map(|i| i.received.clone())
            .unwrap_or_default()
    }

    /// Wait until `n` requests arrived (or `timeout` passed); returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n || start.elapsed() > timeout {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop answering: connections are refused until `up`.
    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listen again on the same address.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("rebinding the receiver on {}: {e}", self.addr));
        self.task = Some(serve(listener, self.inner.clone()));
    }
}

fn serve(
    listener: tokio::net::TcpListener,
    inner: Arc<Mutex<Inner>>,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new().fallback(receive).with_state(inner);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "receiver stopped");
        }
    })
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}
