//! Every video dialect reaches every video upstream: a Kling video request
//! made on Veo (through the emulated Gemini API) and on an OpenAI-videos
//! upstream, an OpenAI videos request made on Kling; each emulation checks
//! what it is sent (tests assert no violation), faults are ridden out or
//! fail the task with the upstream's words.

use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, channel_on};
use base64::Engine as _;
use gengate_core::{ChannelSpec, Credentials, ProviderKind};
use gengate_testkit::RED_PNG;
use gengate_testkit::faults::Fault;
use gengate_testkit::kling::{KlingAccount, KlingEmu};
use gengate_testkit::luma::LumaEmu;
use gengate_testkit::openai_videos::OpenAiVideosEmu;
use gengate_testkit::veo::VeoEmu;
use serde_json::{Value, json};

on_both_backends!(
    kling_video_requests_run_on_veo,
    a_wrong_veo_key_is_the_channels_fault_and_never_shown,
    kling_video_requests_run_on_luma,
    openai_video_requests_run_on_kling_and_kling_requests_on_openai_videos,
);

const T2V: &str = "/kling/v1/videos/text2video";
const I2V: &str = "/kling/v1/videos/image2video";
const VEO_KEY: &str = "veo-key-never-shown";

fn keyed(spec: ChannelSpec, key: &str) -> ChannelSpec {
    ChannelSpec {
        credentials: Credentials {
            api_key: Some(key.into()),
            ..Credentials::default()
        },
        ..spec
    }
}

async fn kling(gw: &Gateway, key: &str, path: &str, body: Value) -> String {
    let (status, v) = gw.post(path, key, body).await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    v["data"]["task_id"].as_str().unwrap().to_string()
}

/// The Kling view and gengate's own view of a finished video task.
async fn done(gw: &Gateway, key: &str, id: &str) -> (Value, Value) {
    let kling = gw.finished(key, id, &format!("{T2V}/{id}")).await["data"].clone();
    let (_, own) = gw.get(&format!("/v1/tasks/{id}"), key).await;
    (kling, own)
}

async fn seconds_of(gw: &Gateway, url: &str) -> f64 {
    let (status, _, mp4) = gw.bytes(url).await;
    assert_eq!(status, 200);
    gengate_media::probe_mp4(&mp4).unwrap().duration_secs
}

async fn kling_video_requests_run_on_veo(backend: Backend) {
    let veo = VeoEmu::start(VEO_KEY, Duration::from_millis(300)).await;
    let gw = TestApp::on(backend)
        .channel(keyed(
            channel_on(
                &veo,
                "veo",
                ProviderKind::GeminiVeo,
                &[("kling-v1", "veo-3.0-generate-001")],
            ),
            VEO_KEY,
        ))
        .with(|s| s.max_attempts = 4)
        .start()
        .await;
    let key = gw.new_key("client").await;

    // Text to video: Kling's fields become Veo's parameters; ten seconds
    // is as near as Veo goes (8), 9:16 and pro (1080p) as asked. A 503 on
    // the first create is ridden out.
    veo.inject(Fault::Error {
        status: 503,
        message: "The service is currently unavailable.".into(),
        retry_after: None,
    });
    let id = kling(
        &gw,
        &key,
        T2V,
        json!({"prompt": "a lighthouse", "negative_prompt": "fog", "duration": "10",
               "mode": "pro", "aspect_ratio": "9:16"}),
    )
    .await;
    let (task, _) = done(&gw, &key, &id).await;
    assert_eq!(task["task_status"], "succeed", "{task}");
    let url = task["task_result"]["videos"][0]["url"].as_str().unwrap();
    assert!((seconds_of(&gw, url).await - 8.0).abs() < 0.1);
    let sent = &veo.requests()[0];
    assert_eq!(
        sent["parameters"],
        json!({"aspectRatio": "9:16", "durationSeconds": 8, "resolution": "1080p",
               "personGeneration": "allow_all", "negativePrompt": "fog"}),
        "{sent}"
    );
    assert_eq!(veo.downloads(), 1, "fetched from Veo with the key");

    // Image to video: the frames go inline.
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let id = kling(
        &gw,
        &key,
        I2V,
        json!({"image": b64, "image_tail": b64, "prompt": "opening"}),
    )
    .await;
    let (task, _) = done(&gw, &key, &id).await;
    assert_eq!(task["task_status"], "succeed", "{task}");
    let sent = veo.requests().last().cloned().unwrap();
    assert_eq!(
        sent["instances"][0]["image"]["mimeType"], "image/png",
        "{sent}"
    );
    assert!(sent["instances"][0]["lastFrame"]["bytesBase64Encoded"].is_string());
    assert_eq!(sent["parameters"]["personGeneration"], "allow_adult");

    // Veo's refusals and failures reach the client in Veo's words, and say
    // the upstream failed the task.
    for (prompt, words) in [
        ("please FAIL", "veo: emulated failure"),
        (
            "please FILTER",
            "veo filtered the video: emulated safety filter",
        ),
    ] {
        let id = kling(&gw, &key, T2V, json!({"prompt": prompt})).await;
        let (task, own) = done(&gw, &key, &id).await;
        assert_eq!(
            (
                task["task_status"].as_str(),
                task["task_status_msg"].as_str()
            ),
            (Some("failed"), Some(words))
        );
        assert_eq!(own["upstream_error"], words, "{own}");
    }
    veo.inject(Fault::Error {
        status: 400,
        message: "The prompt could not be submitted.".into(),
        retry_after: None,
    });
    let id = kling(&gw, &key, T2V, json!({"prompt": "refused"})).await;
    let (task, _) = done(&gw, &key, &id).await;
    let msg = task["task_status_msg"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 400 INVALID_ARGUMENT") && msg.contains("could not be submitted"),
        "{msg}"
    );
    assert!(!msg.contains(VEO_KEY));

    // Kling's own controls: Veo does not take them, so they are refused;
    // nor a last frame without a first, named in the client's words.
    let (status, v) = gw
        .post(T2V, &key, json!({"prompt": "a", "cfg_scale": 0.5}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(1201)), "{v}");
    let (status, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "kling-v1", "kind": "video", "input": {"prompt": "a",
                   "images": [{"url": "https://img.test/end.png", "role": "end"}]}}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input.images[0].url"),
        "{v}"
    );
    assert_eq!(veo.violations(), 0);
    gw.stop().await;
}

async fn a_wrong_veo_key_is_the_channels_fault_and_never_shown(backend: Backend) {
    let veo = VeoEmu::start(VEO_KEY, Duration::from_millis(100)).await;
    let wrong = "veo-wrong-key-never-shown";
    let gw = TestApp::on(backend)
        .channel(keyed(
            channel_on(
                &veo,
                "veo",
                ProviderKind::GeminiVeo,
                &[("kling-v1", "veo-3.0-generate-001")],
            ),
            wrong,
        ))
        .with(|s| s.max_attempts = 2)
        .start()
        .await;
    let key = gw.new_key("client").await;
    let id = kling(&gw, &key, T2V, json!({"prompt": "a cat"})).await;
    let (task, own) = done(&gw, &key, &id).await;
    assert_eq!(task["task_status"], "failed", "{task}");
    let msg = task["task_status_msg"].as_str().unwrap();
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains(wrong) && !msg.contains(VEO_KEY), "{msg}");
    assert!(
        own.get("upstream_error").is_none(),
        "not the upstream's refusal of the task: {own}"
    );
    assert_eq!(veo.submits(), 0);
    gw.stop().await;
}

async fn kling_video_requests_run_on_luma(backend: Backend) {
    let luma = LumaEmu::start("luma-key", Duration::from_millis(200)).await;
    let gw = TestApp::on(backend)
        .channel(keyed(
            channel_on(&luma, "luma", ProviderKind::Luma, &[("kling-v1", "ray-2")]),
            "luma-key",
        ))
        .start()
        .await;
    let key = gw.new_key("client").await;
    // Ten seconds is Luma's 9, pro its 1080p.
    let id = kling(
        &gw,
        &key,
        T2V,
        json!({"prompt": "a lighthouse", "duration": "10", "mode": "pro", "aspect_ratio": "9:16"}),
    )
    .await;
    let (task, _) = done(&gw, &key, &id).await;
    assert_eq!(task["task_status"], "succeed", "{task}");
    let sent = luma.requests().pop().expect("Luma saw it");
    assert_eq!(
        (
            &sent["duration"],
            &sent["resolution"],
            &sent["aspect_ratio"],
            &sent["model"]
        ),
        (
            &json!("9s"),
            &json!("1080p"),
            &json!("9:16"),
            &json!("ray-2")
        ),
        "{sent}"
    );
    // Luma takes frames by URL only: an uploaded one fails the task in
    // words, never silently dropped.
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let id = kling(&gw, &key, I2V, json!({"image": b64})).await;
    let (task, _) = done(&gw, &key, &id).await;
    assert_eq!(task["task_status"], "failed", "{task}");
    assert!(
        task["task_status_msg"].as_str().unwrap().contains("URL"),
        "{task}"
    );
    assert_eq!(luma.spec_violations(), 0);
    gw.stop().await;
}

async fn openai_video_requests_run_on_kling_and_kling_requests_on_openai_videos(backend: Backend) {
    let kling_emu = KlingEmu::start(
        KlingAccount::Keys {
            access_key: "ak".into(),
            secret_key: "sk-kling".into(),
        },
        Duration::from_millis(200),
    )
    .await;
    let openai = OpenAiVideosEmu::start("sk-openai", Duration::from_millis(200)).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            credentials: Credentials {
                access_key: Some("ak".into()),
                secret_key: Some("sk-kling".into()),
                ..Credentials::default()
            },
            ..channel_on(
                &kling_emu,
                "kling",
                ProviderKind::Kling,
                &[("sora-2", "kling-v1")],
            )
        })
        .channel(keyed(
            channel_on(
                &openai,
                "router",
                ProviderKind::OpenaiVideos,
                &[("kling-v2", "sora-2-pro")],
            ),
            "sk-openai",
        ))
        .start()
        .await;
    let key = gw.new_key("client").await;

    // OpenAI's words on Kling: 12 s is Kling's 10, 1792x1024 its pro 16:9.
    let (status, v) = gw
        .post(
            "/v1/videos",
            &key,
            json!({"prompt": "a harbour", "seconds": "12", "size": "1792x1024"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let video = v["id"].as_str().unwrap().to_string();
    let task = gengate_core::dialect::openai_videos::parse_id(&video)
        .unwrap()
        .to_string();
    gw.wait_done(&key, &task).await;
    let (_, v) = gw.get(&format!("/v1/videos/{video}"), &key).await;
    assert_eq!(v["status"], "completed", "{v}");
    let sent = kling_emu.request(&task).expect("Kling saw it");
    assert_eq!(
        (&sent["duration"], &sent["mode"], &sent["aspect_ratio"]),
        (&json!("10"), &json!("pro"), &json!("16:9")),
        "{sent}"
    );
    let resp = gw
        .http
        .get(format!(
            "{}/v1/videos/{video}/content?variant=thumbnail",
            gw.base
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "stills of Kling's MP4 too");

    // Kling's words on an OpenAI-videos upstream: 5 s is its 4, std 720p.
    let id = kling(
        &gw,
        &key,
        T2V,
        json!({"model_name": "kling-v2", "prompt": "a quay", "duration": "5"}),
    )
    .await;
    let (done_task, _) = done(&gw, &key, &id).await;
    assert_eq!(done_task["task_status"], "succeed", "{done_task}");
    let url = done_task["task_result"]["videos"][0]["url"]
        .as_str()
        .unwrap();
    assert!((seconds_of(&gw, url).await - 4.0).abs() < 0.1);
    let sent = openai.requests()[0].clone();
    assert_eq!(
        (&sent["model"], &sent["seconds"], &sent["size"]),
        (&json!("sora-2-pro"), &json!("4"), &json!("1280x720")),
        "{sent}"
    );
    assert_eq!((openai.creates(), openai.downloads()), (1, 1));

    // It takes a first frame only: a last one is refused by name.
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let (status, v) = gw
        .post(
            I2V,
            &key,
            json!({"model_name": "kling-v2", "image": b64, "image_tail": b64}),
        )
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(1201)), "{v}");
    assert!(
        v["message"].as_str().unwrap().starts_with("image_tail"),
        "{v}"
    );

    // Its failures come back in its words; its rate limit is waited out.
    openai.inject(Fault::Error {
        status: 429,
        message: "Rate limit reached.".into(),
        retry_after: Some(1),
    });
    let id = kling(
        &gw,
        &key,
        T2V,
        json!({"model_name": "kling-v2", "prompt": "please FAIL"}),
    )
    .await;
    let (failed, own) = done(&gw, &key, &id).await;
    assert_eq!(failed["task_status"], "failed", "{failed}");
    assert_eq!(
        own["upstream_error"], "openai-videos: emulated failure (video_generation_failed)",
        "{own}"
    );
    assert_eq!(openai.violations(), 0);
    gw.stop().await;
}
