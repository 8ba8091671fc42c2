//! Scenario 8: results mirrored from an upstream's URLs into storage, a
//! local directory and an S3 server (moto) side by side, in this process
//! with the engine's own `Mirror`; and the memory that takes. Every result
//! is a distinct 50 MB MP4 (a real sandbox clip followed by a `free` box of
//! pseudo-random bytes, which players and probes skip), streamed by a local
//! file host, so nothing is stored twice and nothing is cheap to compress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use gengate_core::ArtifactRole;
use gengate_engine::artifacts::Mirror;
use gengate_engine::storage::{MediaStore, S3Settings};
use gengate_providers::{Output, OutputData};
use gengate_testkit::S3Server;

use crate::report::{Row, stats};

const MIB: u64 = 1 << 20;
/// Each result's size.
const RESULT_BYTES: u64 = 50 * MIB;
/// Results mirrored at once, as the engine does for concurrent tasks.
const AT_ONCE: usize = 4;
/// Chunks the host streams.
const CHUNK: usize = 256 << 10;

/// Credentials for moto (which takes any); read by `MediaStore::open`.
pub const S3_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "bench"),
    ("AWS_SECRET_ACCESS_KEY", "bench-secret"),
    ("AWS_REGION", "us-east-1"),
];

pub async fn mirroring(quick: bool) -> anyhow::Result<Vec<Row>> {
    let clip = gengate_media::render_video(&gengate_media::VideoSpec {
        width: 320,
        height: 240,
        seed: 8,
        frames: 24,
        fps: 24,
        base_color: None,
        looped: false,
    })?
    .mp4;
    let host = serve(Bytes::from(clip)).await?;
    let s3 = S3Server::start().await.context("moto's S3 server")?;
    s3.create_bucket("bench").await;
    let dir = tempfile::tempdir()?;
    let local = MediaStore::local(dir.path().join("media"))?;
    let settings = S3Settings {
        endpoint: Some(s3.endpoint.clone()),
        allow_http: Some(true),
        ..S3Settings::default()
    };
    let bucket = MediaStore::open("s3://bench/mirror", &settings)?;
    let spool = dir.path().join("spool");
    // Where each result's term is kept, as a gateway's engine keeps it.
    let db = format!("sqlite://{}", dir.path().join("gengate.db").display());
    let store = gengate_store::open(&db, true).await?;
    let mirrors = [
        (
            "a local directory",
            Mirror::new(store.clone(), local, spool.clone(), 2 << 30),
        ),
        ("S3 (moto)", Mirror::new(store, bucket, spool, 2 << 30)),
    ];
    // moto keeps objects in memory: fewer there.
    let (reps, per_rep, memory_run) = if quick {
        (3, 8, [40, 16])
    } else {
        (5, 12, [100, 24])
    };
    let mut next = 0u64;
    let mut rows = Vec::new();
    let mut rates = [Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, (_, mirror)) in mirrors.iter().enumerate() {
            let (took, _) = run(mirror, &host, next, per_rep).await?;
            next += per_rep as u64;
            rates[i].push(per_rep as f64 / took.as_secs_f64());
        }
    }
    let ratios: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(s, l)| s / l).collect();
    for (i, (name, _)) in mirrors.iter().enumerate() {
        let r = stats(rates[i].clone());
        let mb = |x: f64| x * (RESULT_BYTES / MIB) as f64;
        rows.push(Row {
            scenario: "8 mirroring",
            figure: format!("50 MB results into {name}, {AT_ONCE} at once, {per_rep} a rep"),
            unit: "tasks/s",
            values: Some(r),
            target: String::new(),
            verdict: String::new(),
        });
        rows.push(Row {
            scenario: "8 mirroring",
            figure: format!("the same into {name}"),
            unit: "MB/s",
            values: Some((mb(r.0), mb(r.1), mb(r.2))),
            target: String::new(),
            verdict: String::new(),
        });
    }
    rows.push(Row {
        scenario: "8 mirroring",
        figure: "S3 ÷ local directory, each rep in turn".into(),
        unit: "ratio",
        values: Some(stats(ratios)),
        target: String::new(),
        verdict: String::new(),
    });
    for ((name, mirror), count) in mirrors.iter().zip(memory_run) {
        let (_, grew) = run(mirror, &host, next, count).await?;
        next += count as u64;
        let grew = grew as f64 / MIB as f64;
        rows.push(Row {
            scenario: "8 mirroring",
            figure: format!("resident memory growth while mirroring {count} × 50 MB into {name}"),
            unit: "MiB",
            values: Some((grew, grew, grew)),
            target: "≤ 64 (flat: streamed)".into(),
            verdict: if grew <= 64.0 { "met" } else { "**missed**" }.into(),
        });
    }
    Ok(rows)
}

/// Mirror results `first..first + count`, `AT_ONCE` at a time: how long it
/// took, and how far the process's resident memory rose above where it
/// started (sampled every 20 ms).
async fn run(
    mirror: &Mirror,
    host: &str,
    first: u64,
    count: usize,
) -> anyhow::Result<(Duration, u64)> {
    let base = rss().unwrap_or_default();
    let peak = Arc::new(AtomicU64::new(base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss().unwrap_or_default(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let start = Instant::now();
    let results: Vec<_> = futures::stream::iter(first..first + count as u64)
        .map(|n| {
            let output = Output {
                role: ArtifactRole::Video,
                index: 0,
                data: OutputData::Url(format!("{host}/v/{n}.mp4")),
            };
            mirror.store(vec![output])
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let took = start.elapsed();
    sampler.abort();
    for r in results {
        let stored = r.map_err(|e| anyhow::anyhow!("mirroring: {e}"))?;
        anyhow::ensure!(stored.len() == 1, "one artifact per result");
    }
    Ok((took, peak.load(Ordering::Relaxed).saturating_sub(base)))
}

/// This process's resident memory, in bytes.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A file host on 127.0.0.1: `/v/{n}.mp4` is `clip` and a `free` box
/// filling it to 50 MB with bytes seeded by `n`, streamed in chunks.
async fn serve(clip: Bytes) -> anyhow::Result<String> {
    let app = Router::new().route(
        "/v/{file}",
        get(move |Path(file): Path<String>| {
            let clip = clip.clone();
            async move {
                let n: u64 = file.trim_end_matches(".mp4").parse().unwrap_or_default();
                let padding = RESULT_BYTES - clip.len() as u64;
                let mut header = Vec::with_capacity(8);
                header.extend_from_slice(&u32::try_from(padding).unwrap_or(u32::MAX).to_be_bytes());
                header.extend_from_slice(b"free");
                let mut left = padding - 8;
                let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let filler = futures::stream::iter(std::iter::from_fn(move || {
                    if left == 0 {
                        return None;
                    }
                    let len = left.min(CHUNK as u64) as usize;
                    left -= len as u64;
                    let mut chunk = Vec::with_capacity(len + 8);
                    while chunk.len() < len {
                        // xorshift64: distinct, incompressible bytes per result.
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        chunk.extend_from_slice(&state.to_le_bytes());
                    }
                    chunk.truncate(len);
                    Some(Ok::<_, std::io::Error>(Bytes::from(chunk)))
                }));
                let head =
                    futures::stream::iter([Ok::<_, std::io::Error>(clip), Ok(Bytes::from(header))]);
                let body = Body::from_stream(head.chain(filler));
                ([("content-length", RESULT_BYTES.to_string())], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}
