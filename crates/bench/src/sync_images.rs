//! Scenario `sync`: synchronous `POST /v1/images/generations` through an
//! openai-images channel whose upstream answers at once. The answer comes
//! when the images are stored, so this measures what gengate adds to a
//! fast upstream: accept, dispatch, copy the result, complete, answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gengate_testkit::openai_images::OpenAiImagesEmu;
use serde_json::json;

use crate::gateway::{Gateway, KEY};
use crate::load::{self, Request};
use crate::report::{Row, stats};
use crate::scenarios::{Plan, verdict};

const CONNECTIONS: usize = 16;

pub async fn sync_images(bin: &Path, plan: Plan) -> anyhow::Result<Vec<Row>> {
    let emu = OpenAiImagesEmu::start(Some("sk-bench".into()), Duration::ZERO).await;
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("gengate.toml");
    std::fs::write(
        &config,
        format!(
            "[[channels]]\nname = \"openai\"\nprovider = \"openai-images\"\nbase_url = \"{}\"\n\
             credentials = {{ api_key = \"sk-bench\" }}\nmodels = {{ \"dalle\" = \"dall-e-2\" }}\n",
            emu.base_url()
        ),
    )?;
    let gw = Gateway::start(bin, &["--config", &config.to_string_lossy()]).await?;
    let req = Request {
        method: reqwest::Method::POST,
        url: format!("{}/v1/images/generations", gw.base),
        key: Some(KEY.into()),
        body: Some(Bytes::from(serde_json::to_vec(&json!({
            "model": "dalle", "prompt": "bench", "size": "256x256", "response_format": "url"
        }))?)),
    };
    let run = Arc::new(move |_| req.clone());
    // A short warm-up: connections open, the channel's first requests made.
    load::run(CONNECTIONS, Duration::from_secs(1), None, run.clone()).await;
    let (mut p50, mut p99, mut rate) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.reps {
        let out = load::run(CONNECTIONS, plan.duration(), None, run.clone()).await;
        anyhow::ensure!(
            out.errors == 0,
            "{} synchronous requests failed",
            out.errors
        );
        p50.push(out.percentile_ms(0.5));
        p99.push(out.percentile_ms(0.99));
        rate.push(out.rate());
    }
    let (p50, p99, rate) = (stats(p50), stats(p99), stats(rate));
    Ok(vec![
        Row {
            scenario: "12 sync images",
            figure: format!(
                "POST /v1/images/generations, upstream answering at once, {CONNECTIONS} conns: p50 (p99 median {:.1} ms)",
                p99.0
            ),
            unit: "ms",
            values: Some(p50),
            target: "≤ 10".into(),
            verdict: verdict(p50.0 <= 10.0),
        },
        Row {
            scenario: "12 sync images",
            figure: "the same: answered requests".into(),
            unit: "req/s",
            values: Some(rate),
            target: "≥ 1 500".into(),
            verdict: verdict(rate.0 >= 1500.0),
        },
    ])
}
