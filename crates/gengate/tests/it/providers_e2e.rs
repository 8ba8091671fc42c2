//! gengate with a channel on every kind of upstream at once (Kling and
//! Replicate sharing one model, Luma with callbacks, OpenAI images,
//! ComfyUI), each emulation injecting faults: every task ends `completed`
//! or `failed` with a reason a user can act on, none is stuck, none is
//! submitted twice where the upstream has an idempotency key, and no
//! request broke an upstream's spec.

use std::time::Duration;

use crate::harness::{Backend, TestApp, Upstream, channel_on};
use gengate_core::{ChannelSpec, Credentials, ProviderKind};
use gengate_testkit::comfyui::ComfyEmu;
use gengate_testkit::faults::Fault;
use gengate_testkit::luma::LumaEmu;
use gengate_testkit::openai_images::OpenAiImagesEmu;
use gengate_testkit::replicate::{self, ReplicateEmu};
use gengate_testkit::{KlingAccount, KlingEmu};
use serde_json::json;

const KLING_KEY: &str = "kling-secret-key";
const REPLICATE_TOKEN: &str = "r8_secret_token";
const LUMA_KEY: &str = "luma-secret-key";
const OPENAI_KEY: &str = "sk-secret-openai";
const SECRETS: &[&str] = &[KLING_KEY, REPLICATE_TOKEN, LUMA_KEY, OPENAI_KEY];

fn channel(
    upstream: &impl Upstream,
    name: &str,
    provider: ProviderKind,
    key: &str,
    model: (&str, &str),
) -> ChannelSpec {
    ChannelSpec {
        credentials: Credentials {
            api_key: (!key.is_empty()).then(|| key.to_string()),
            ..Credentials::default()
        },
        ..channel_on(upstream, name, provider, &[model])
    }
}

/// The OpenAI images emulation serving model `dalle` as `dall-e-2`.
fn openai_channel(openai: &OpenAiImagesEmu) -> ChannelSpec {
    channel(
        openai,
        "openai",
        ProviderKind::OpenaiImages,
        OPENAI_KEY,
        ("dalle", "dall-e-2"),
    )
}

fn error(status: u16, retry_after: Option<u64>) -> Fault {
    Fault::Error {
        status,
        message: format!("injected {status}"),
        retry_after,
    }
}

async fn every_provider_under_faults_ends_every_task(backend: Backend) {
    let run_for = Duration::from_millis(400);
    let kling = KlingEmu::start(KlingAccount::ApiKey(KLING_KEY.into()), run_for).await;
    let replicate = ReplicateEmu::start(REPLICATE_TOKEN, run_for).await;
    let luma = LumaEmu::start(LUMA_KEY, run_for).await;
    let openai = OpenAiImagesEmu::start(Some(OPENAI_KEY.into()), Duration::from_millis(50)).await;
    let comfy = ComfyEmu::start(run_for).await;

    kling.inject(gengate_testkit::Fault::Error {
        status: 500,
        code: 5000,
        retry_after: None,
    });
    kling.inject(gengate_testkit::Fault::Error {
        status: 429,
        code: 1302,
        retry_after: Some(1),
    });
    kling.inject(gengate_testkit::Fault::Malformed);
    replicate.inject(Fault::Reset);
    replicate.inject(error(503, None));
    luma.inject(error(500, None));
    luma.inject(Fault::Reset);
    openai.inject(error(429, Some(1)));
    openai.inject(Fault::Reset);
    comfy.inject(error(502, None));

    let workflow = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testkit/fixtures/comfyui/txt2img.json"
    );
    let gw = TestApp::on(backend)
        .channel(channel(
            &kling,
            "kling",
            ProviderKind::Kling,
            KLING_KEY,
            ("shared-image", "kling-v1"),
        ))
        .channel(channel(
            &replicate,
            "replicate",
            ProviderKind::Replicate,
            REPLICATE_TOKEN,
            ("shared-image", replicate::IMAGE_MODEL),
        ))
        .channel(ChannelSpec {
            callbacks: true,
            ..channel(
                &luma,
                "luma",
                ProviderKind::Luma,
                LUMA_KEY,
                ("ray-2", "ray-2"),
            )
        })
        .channel(openai_channel(&openai))
        .channel(ChannelSpec {
            workflow: Some(workflow.into()),
            ..channel(
                &comfy,
                "comfy",
                ProviderKind::Comfyui,
                "",
                ("comfy-sd", "txt2img"),
            )
        })
        .start()
        .await;
    let key = gw.new_key("client").await;

    // (id, dialect is Luma, should fail)
    let mut tasks = Vec::new();
    for (model, count) in [("shared-image", 8), ("dalle", 3), ("comfy-sd", 3)] {
        for i in 0..count {
            let fail = i == 0;
            let prompt = format!("{model} {i}{}", if fail { " FAIL" } else { "" });
            let (status, v) = gw
                .post(
                    "/kling/v1/images/generations",
                    &key,
                    json!({"model": model, "prompt": prompt, "n": 1, "aspect_ratio": "1:1"}),
                )
                .await;
            assert_eq!(status, 200, "{v}");
            tasks.push((
                v["data"]["task_id"].as_str().unwrap().to_string(),
                false,
                fail,
            ));
        }
    }
    for i in 0..3 {
        let fail = i == 0;
        let prompt = format!("a wave {i}{}", if fail { " FAIL" } else { "" });
        let (status, v) = gw
            .post(
                "/luma/generations",
                &key,
                json!({"model_name": "ray-2", "prompt": prompt, "aspect_ratio": "16:9"}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        tasks.push((v["id"].as_str().unwrap().to_string(), true, fail));
    }

    for (id, is_luma, fail) in &tasks {
        let (state, reason, urls) = if *is_luma {
            let t = gw.wait_luma(&key, id).await;
            let url = t["video"]["url"].as_str().map(String::from);
            (
                t["state"].as_str().unwrap().to_string(),
                t["failure_reason"].as_str().unwrap_or_default().to_string(),
                url.into_iter().collect::<Vec<_>>(),
            )
        } else {
            let t = gw.wait_kling(&key, id).await;
            let urls = t["task_result"]["images"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["url"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let state = match t["task_status"].as_str().unwrap() {
                "succeed" => "completed",
                other => other,
            };
            (
                state.to_string(),
                t["task_status_msg"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                urls,
            )
        };
        if *fail {
            assert_eq!(state, "failed", "{id}");
            assert!(!reason.is_empty(), "{id} failed without a reason");
        } else {
            assert_eq!(state, "completed", "{id}: {reason}");
            assert!(!urls.is_empty(), "{id} has no results");
            for url in &urls {
                assert!(url.starts_with(&gw.base), "{id}: not gengate's URL: {url}");
                let (status, _, bytes) = gw.bytes(url).await;
                assert_eq!(status, 200);
                assert!(!bytes.is_empty());
            }
        }
        for secret in SECRETS {
            assert!(!reason.contains(secret), "{id}: a credential in {reason:?}");
        }
    }

    // Kling has an idempotency key: no task was made twice there.
    for (external, made) in kling.tasks_by_external_id() {
        assert_eq!(made, 1, "{external} was submitted {made} times");
    }
    // Each shared-model task was taken by one of its two channels (Kling
    // starts with three faults in a row, so it is cooled down and Replicate
    // takes the rest), and every upstream saw only requests its spec allows.
    assert!(kling.submits() + replicate.submits() >= 8);
    assert_eq!(luma.spec_violations(), 0);
    assert_eq!(replicate.spec_violations(), 0);
    assert_eq!(openai.spec_violations(), 0);
    assert_eq!(comfy.spec_violations(), 0);
    // Luma reported by callback.
    assert!(luma.callbacks() > 0);
    gw.stop().await;
}

/// A synchronous upstream answering after several leases' worth of time:
/// the worker keeps its lease meanwhile, so no other pass retakes the task
/// and pays for it again, and the images land without a poll.
async fn a_slow_synchronous_upstream_is_paid_once(backend: Backend) {
    let openai = OpenAiImagesEmu::start(Some(OPENAI_KEY.into()), Duration::from_millis(2500)).await;
    let gw = TestApp::on(backend)
        .with(|s| s.lease_secs = 1)
        .channel(openai_channel(&openai))
        .start()
        .await;
    let key = gw.new_key("client").await;
    let (status, v) = gw
        .post(
            "/kling/v1/images/generations",
            &key,
            json!({"model": "dalle", "prompt": "a slow lighthouse", "n": 2}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"]["task_id"].as_str().unwrap();
    let done = gw.wait_kling(&key, id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    assert_eq!(done["task_result"]["images"].as_array().unwrap().len(), 2);
    assert_eq!(openai.submits(), 1, "the task was submitted again");
    gw.stop().await;
}

/// A channel serving every model but making only images gets no video
/// task: the video goes to the channel that makes videos, even at a lower
/// priority.
async fn video_tasks_skip_channels_that_make_only_images(backend: Backend) {
    let openai = OpenAiImagesEmu::start(Some(OPENAI_KEY.into()), Duration::ZERO).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            priority: 10,
            ..channel(
                &openai,
                "openai",
                ProviderKind::OpenaiImages,
                OPENAI_KEY,
                ("*", "dall-e-2"),
            )
        })
        .channel(ChannelSpec {
            latency_ms: Some(100),
            ..ChannelSpec::new("sandbox", ProviderKind::Sandbox)
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let (status, v) = gw
        .post("/luma/generations", &key, json!({"prompt": "a wave"}))
        .await;
    assert_eq!(status, 201, "{v}");
    let done = gw.wait_luma(&key, v["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(done["video"]["url"].is_string(), "{done}");
    assert_eq!(openai.submits(), 0);
    gw.stop().await;
}

on_both_backends!(
    video_tasks_skip_channels_that_make_only_images,
    every_provider_under_faults_ends_every_task,
    a_slow_synchronous_upstream_is_paid_once,
);
