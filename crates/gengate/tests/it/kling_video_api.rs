//! Kling's video API (`/kling/v1/videos/text2video` and `…/image2video`):
//! through the sandbox, and through an emulated Kling that checks what it
//! is sent; bad input refused by name in Kling's envelope, nothing stored.

use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, channel_on};
use base64::Engine as _;
use gengate_core::{ChannelSpec, Credentials, Dialect, ProviderKind};
use gengate_testkit::kling::{KlingAccount, KlingEmu};
use gengate_testkit::{ImageHost, RED_PNG};
use serde_json::{Value, json};

on_both_backends!(
    videos_are_made_at_the_asked_length_and_listed_apart,
    kling_channels_get_klings_own_controls,
    bad_input_is_refused_by_name_and_stores_nothing,
);

const T2V: &str = "/kling/v1/videos/text2video";
const I2V: &str = "/kling/v1/videos/image2video";

async fn create(gw: &Gateway, key: &str, path: &str, body: Value) -> Value {
    let (status, v) = gw.post(path, key, body).await;
    assert_eq!((status, &v["code"]), (200, &json!(0)), "{v}");
    assert_eq!(v["data"]["task_status"], "submitted");
    v["data"].clone()
}

/// A video task's `data`, once terminal (`id` a task id; `name` the id or
/// external_task_id it is asked for by).
async fn finished(gw: &Gateway, key: &str, id: &str, name: &str) -> Value {
    gw.finished(key, id, &format!("{T2V}/{name}")).await["data"].clone()
}

async fn videos_are_made_at_the_asked_length_and_listed_apart(backend: Backend) {
    let host = ImageHost::start().await;
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("client").await;
    let text = create(
        &gw,
        &key,
        T2V,
        json!({"prompt": "a lighthouse", "duration": "10", "mode": "pro", "aspect_ratio": "9:16",
               "external_task_id": "clip-1"}),
    )
    .await;
    assert_eq!(text["task_info"]["external_task_id"], "clip-1");
    assert!(text["task_result"]["images"].is_null(), "{text}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let framed = create(
        &gw,
        &key,
        I2V,
        json!({"image": b64, "image_tail": host.url("/red.png"), "prompt": "opening"}),
    )
    .await;

    // By external_task_id, at either endpoint; ten seconds as asked.
    let done = finished(&gw, &key, text["task_id"].as_str().unwrap(), "clip-1").await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    let videos = done["task_result"]["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 1, "{done}");
    assert_eq!(videos[0]["duration"], "10.0");
    let (status, _, mp4) = gw.bytes(videos[0]["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let info = gengate_media::probe_mp4(&mp4).unwrap();
    assert!(info.height > info.width, "9:16: {info:?}");
    let id = framed["task_id"].as_str().unwrap();
    let done = gw.finished(&key, id, &format!("{I2V}/{id}")).await["data"].clone();
    assert_eq!(done["task_status"], "succeed", "{done}");

    // Listed among videos (either endpoint lists both), not among images.
    let (_, list) = gw.get(&format!("{I2V}?pageSize=10"), &key).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id, text["task_id"].as_str().unwrap()]);
    let (_, images) = gw.get("/kling/v1/images/generations", &key).await;
    assert_eq!(images["data"], json!([]), "{images}");
    // A video is not found among images, nor an unknown endpoint.
    let (s, v) = gw
        .get(&format!("/kling/v1/images/generations/{id}"), &key)
        .await;
    assert_eq!((s, &v["code"]), (404, &json!(1203)));
    let (s, _) = gw.get("/kling/v1/videos/text2image", &key).await;
    assert_eq!(s, 404);
    gw.stop().await;
}

async fn kling_channels_get_klings_own_controls(backend: Backend) {
    let emu = KlingEmu::start(
        KlingAccount::Keys {
            access_key: "ak".into(),
            secret_key: "sk-video".into(),
        },
        Duration::from_millis(200),
    )
    .await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            credentials: Credentials {
                access_key: Some("ak".into()),
                secret_key: Some("sk-video".into()),
                ..Credentials::default()
            },
            ..channel_on(
                &emu,
                "kling",
                ProviderKind::Kling,
                &[("kling-v1", "kling-v1")],
            )
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let camera = json!({"type": "simple", "config": {"horizontal": 0, "zoom": 5}});
    let t = create(
        &gw,
        &key,
        T2V,
        json!({"model_name": "kling-v1", "prompt": "a dolly zoom", "mode": "pro", "cfg_scale": 0.7,
               "camera_control": camera, "duration": "10"}),
    )
    .await;
    let id = t["task_id"].as_str().unwrap();
    let done = finished(&gw, &key, id, id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    assert_eq!(
        done["task_result"]["videos"][0]["duration"], "10.0",
        "{done}"
    );
    // What Kling was sent (its external id is the task's id).
    let sent = emu.request(id).expect("the emulator saw the task");
    assert_eq!(
        (
            &sent["mode"],
            &sent["cfg_scale"],
            &sent["camera_control"],
            &sent["duration"]
        ),
        (&json!("pro"), &json!(0.7), &camera, &json!("10")),
        "{sent}"
    );
    gw.stop().await;
}

async fn bad_input_is_refused_by_name_and_stores_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("client").await;
    let field = |v: &Value| -> String {
        assert_eq!(v["code"], 1201, "{v}");
        v["message"].as_str().unwrap().to_string()
    };
    for (path, body, name) in [
        (T2V, json!({}), "prompt"),
        (T2V, json!({"prompt": "a".repeat(2501)}), "prompt"),
        (T2V, json!({"prompt": "a", "duration": "7"}), "duration"),
        (T2V, json!({"prompt": "a", "mode": "max"}), "mode"),
        (T2V, json!({"prompt": "a", "cfg_scale": 1.5}), "cfg_scale"),
        (
            T2V,
            json!({"prompt": "a", "aspect_ratio": "4:3"}),
            "aspect_ratio",
        ),
        (
            T2V,
            json!({"prompt": "a", "image": "https://x.test/a.png"}),
            "image",
        ),
        (
            T2V,
            json!({"prompt": "a", "camera_control": {"type": "spin"}}),
            "camera_control.type",
        ),
        (I2V, json!({"prompt": "a"}), "image"),
        (I2V, json!({"image": "not an image"}), "image"),
        (
            I2V,
            json!({"image": "https://x.test/a.png", "image_tail": "ftp://x.test/b.png"}),
            "image_tail",
        ),
        // Valid for Kling, but no channel here takes it: refused, not dropped.
        (T2V, json!({"prompt": "a", "cfg_scale": 0.5}), "cfg_scale"),
        (
            T2V,
            json!({"prompt": "a", "camera_control": {"type": "down_back"}}),
            "camera_control",
        ),
    ] {
        let (status, v) = gw.post(path, &key, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(field(&v).starts_with(name), "{body}: {v}");
    }
    let (status, v) = gw
        .post(T2V, &key, json!({"prompt": "a", "colour": "red"}))
        .await;
    assert_eq!((status, &v["code"]), (400, &json!(1201)), "{v}");
    assert_eq!(gw.task_count(&key, Dialect::KlingVideo).await, 0);
    gw.stop().await;
}
