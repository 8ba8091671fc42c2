//! A load generator: `connections` keep-alive connections, each sending
//! one request after another for a fixed time, recording every latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What one request is: a method, URL, key and body (the same each time).
#[derive(Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub key: Option<String>,
    pub body: Option<Bytes>,
}

pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies of successful requests, microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Send `make(i)` requests on `connections` connections for `duration`
/// (or until `limit` requests were sent).
pub async fn run(
    connections: usize,
    duration: Duration,
    limit: Option<u64>,
    make: Arc<dyn Fn(u64) -> Request + Send + Sync>,
) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let make = make.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            // One client per worker: exactly one keep-alive connection each.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap_or_default();
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if limit.is_some_and(|l| i >= l) {
                    break;
                }
                let r = make(i);
                let mut req = client.request(r.method, &r.url);
                if let Some(k) = &r.key {
                    req = req.bearer_auth(k);
                }
                if let Some(b) = r.body {
                    req = req.header("content-type", "application/json").body(b);
                }
                let t = Instant::now();
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        if resp.bytes().await.is_ok() {
                            ok += 1;
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, lat)
        }));
    }
    let mut out = Outcome {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        if let Ok((ok, errors, lat)) = t.await {
            out.ok += ok;
            out.errors += errors;
            out.latencies_us.extend(lat);
        }
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    out
}
