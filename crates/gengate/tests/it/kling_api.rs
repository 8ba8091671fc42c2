//! Kling image generation, end to end through the sandbox.

use crate::harness::{Backend, Gateway, TestApp, mean_rgb};
use base64::Engine as _;
use gengate_testkit::{ImageHost, RED_PNG};
use serde_json::{Value, json};

on_both_backends!(
    images_are_generated_at_the_asked_ratio,
    the_same_prompt_and_seed_give_the_same_image,
    reference_images_by_url_and_inline_are_used,
    image_urls_that_cannot_be_used_fail_the_task_clearly,
    failures_use_klings_states,
    external_task_ids_are_unique_per_key,
    listing_pages_newest_first,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
);

const PATH: &str = "/kling/v1/images/generations";

async fn create(gw: &Gateway, key: &str, body: Value) -> Value {
    let (status, v) = gw.post(PATH, key, body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["task_status"], "submitted");
    v["data"].clone()
}

async fn images_are_generated_at_the_asked_ratio(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let t = create(
        &gw,
        &gw.admin,
        json!({"prompt": "a red fox", "n": 3, "aspect_ratio": "3:2", "external_task_id": "fox-1"}),
    )
    .await;
    assert_eq!(t["task_info"]["external_task_id"], "fox-1");
    assert!(
        t["created_at"].as_i64().unwrap() > 1_700_000_000_000,
        "Unix ms"
    );
    let id = t["task_id"].as_str().unwrap();
    let done = gw.wait_kling(&gw.admin, id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    let images = done["task_result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    let mut seen = Vec::new();
    for (i, img) in images.iter().enumerate() {
        assert_eq!(img["index"], i);
        let (s, ct, bytes) = gw.bytes(img["url"].as_str().unwrap()).await;
        assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (960, 640));
        seen.push(bytes);
    }
    assert_ne!(seen[0], seen[1], "n images are n different images");
    assert!(done["updated_at"].as_i64() >= done["created_at"].as_i64());

    // The same task by its external id.
    let (s, v) = gw.get(&format!("{PATH}/fox-1"), &gw.admin).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["task_id"], id);
    gw.stop().await;
}

async fn the_same_prompt_and_seed_give_the_same_image(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let a = create(
        &gw,
        &gw.admin,
        json!({"prompt": "same", "aspect_ratio": "1:1"}),
    )
    .await;
    let b = create(
        &gw,
        &gw.admin,
        json!({"prompt": "same", "aspect_ratio": "1:1"}),
    )
    .await;
    let c = create(
        &gw,
        &gw.admin,
        json!({"prompt": "other", "aspect_ratio": "1:1"}),
    )
    .await;
    let mut files = Vec::new();
    for t in [a, b, c] {
        let done = gw
            .wait_kling(&gw.admin, t["task_id"].as_str().unwrap())
            .await;
        files.push(
            gw.bytes(done["task_result"]["images"][0]["url"].as_str().unwrap())
                .await
                .2,
        );
    }
    assert_eq!(files[0], files[1]);
    assert_ne!(files[0], files[2]);
    gw.stop().await;
}

async fn reference_images_by_url_and_inline_are_used(backend: Backend) {
    let host = ImageHost::start().await;
    let gw = TestApp::on(backend).start().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let plain = create(
        &gw,
        &gw.admin,
        json!({"prompt": "tinted", "aspect_ratio": "1:1"}),
    )
    .await;
    let by_url = create(
        &gw,
        &gw.admin,
        json!({"prompt": "tinted", "aspect_ratio": "1:1", "image": host.url("/red.png"), "image_fidelity": 1.0}),
    )
    .await;
    let inline = create(
        &gw,
        &gw.admin,
        json!({"prompt": "tinted", "aspect_ratio": "1:1", "image": b64, "image_fidelity": 1.0}),
    )
    .await;
    let data_uri = create(
        &gw,
        &gw.admin,
        json!({"prompt": "tinted", "aspect_ratio": "1:1", "image": format!("data:image/png;base64,{b64}"), "image_fidelity": 1.0}),
    )
    .await;
    let mut redness = Vec::new();
    for t in [plain, by_url, inline, data_uri] {
        let done = gw
            .wait_kling(&gw.admin, t["task_id"].as_str().unwrap())
            .await;
        assert_eq!(done["task_status"], "succeed", "{done}");
        let bytes = gw
            .bytes(done["task_result"]["images"][0]["url"].as_str().unwrap())
            .await
            .2;
        let [r, g, _] = mean_rgb(&bytes);
        redness.push(r / g.max(1.0));
    }
    // Uploaded inputs are stored but never served back.
    use sha2::Digest as _;
    let input = format!(
        "{}/files/inputs/{}.png",
        gw.base,
        hex::encode(sha2::Sha256::digest(RED_PNG))
    );
    assert!(
        gw.dir
            .path()
            .join("media/inputs")
            .read_dir()
            .unwrap()
            .count()
            == 1
    );
    assert_eq!(gw.bytes(&input).await.0, 404);
    // The reference image (solid red) pulls the picture towards red, by
    // URL and inline alike.
    for (i, r) in redness.iter().enumerate().skip(1) {
        assert!(*r > redness[0] * 1.3, "case {i}: {redness:?}");
    }
    gw.stop().await;
}

async fn image_urls_that_cannot_be_used_fail_the_task_clearly(backend: Backend) {
    let host = ImageHost::start().await;
    let gw = TestApp::on(backend)
        .with(|s| s.fetch_timeout_secs = 1)
        .start()
        .await;
    let cases = [
        ("/missing.png", "HTTP 404"),
        ("/anim.gif", "not a jpg, jpeg or png"),
        ("/huge.png", "larger than 10 MB"),
        ("/slow.png", "no answer within 1 s"),
    ];
    let mut ids = Vec::new();
    for (path, _) in cases {
        let t = create(
            &gw,
            &gw.admin,
            json!({"prompt": "p", "image": host.url(path)}),
        )
        .await;
        ids.push(t["task_id"].as_str().unwrap().to_string());
    }
    for ((path, why), id) in cases.iter().zip(ids) {
        let done = gw.wait_kling(&gw.admin, &id).await;
        assert_eq!(done["task_status"], "failed", "{path}: {done}");
        let msg = done["task_status_msg"].as_str().unwrap();
        assert!(msg.starts_with("image: "), "{path}: {msg}");
        assert!(msg.contains(why), "{path}: {msg:?} should say {why:?}");
    }
    gw.stop().await;
}

async fn failures_use_klings_states(backend: Backend) {
    let gw = TestApp::on(backend)
        .with(|s| s.sandbox_failure_rate = 1.0)
        .start()
        .await;
    let t = create(&gw, &gw.admin, json!({"prompt": "doomed"})).await;
    let done = gw
        .wait_kling(&gw.admin, t["task_id"].as_str().unwrap())
        .await;
    assert_eq!(done["task_status"], "failed");
    assert!(
        done["task_status_msg"]
            .as_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(done["task_result"]["images"], json!([]));
    gw.stop().await;
}

async fn external_task_ids_are_unique_per_key(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let other = gw.new_key("other").await;
    create(
        &gw,
        &gw.admin,
        json!({"prompt": "a", "external_task_id": "mine"}),
    )
    .await;
    let (s, v) = gw
        .post(
            PATH,
            &gw.admin,
            json!({"prompt": "b", "external_task_id": "mine"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["code"], 1201);
    assert!(v["message"].as_str().unwrap().contains("external_task_id"));
    assert!(!v["request_id"].as_str().unwrap().is_empty());
    // Another key may use the same external id.
    create(
        &gw,
        &other,
        json!({"prompt": "c", "external_task_id": "mine"}),
    )
    .await;
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Kling).await,
        1
    );
    gw.stop().await;
}

async fn listing_pages_newest_first(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = create(&gw, &gw.admin, json!({"prompt": format!("p{i}")})).await;
        ids.push(t["task_id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let page = |n: u32, size: u32| {
        let gw = &gw;
        async move {
            let (s, v) = gw
                .get(&format!("{PATH}?pageNum={n}&pageSize={size}"), &gw.admin)
                .await;
            assert_eq!(s, 200, "{v}");
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(1, 3).await, ids[0..3]);
    assert_eq!(page(3, 3).await, ids[6..7]);
    assert!(page(4, 3).await.is_empty());
    let (s, v) = gw.get(PATH, &gw.admin).await;
    assert_eq!(
        (s, v["data"].as_array().unwrap().len()),
        (200, 7),
        "defaults"
    );
    for bad in ["pageNum=0", "pageSize=501", "pageSize=0", "pageNum=x"] {
        let (s, v) = gw.get(&format!("{PATH}?{bad}"), &gw.admin).await;
        assert_eq!(s, 400, "{bad}: {v}");
        let field = bad.split('=').next().unwrap();
        assert!(v["message"].as_str().unwrap().starts_with(field), "{v}");
    }
    gw.stop().await;
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let gif =
        base64::engine::general_purpose::STANDARD.encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let big = "A".repeat(14 * 1024 * 1024);
    let cases = [
        (json!({}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "p".repeat(501)}), "prompt"),
        (json!({"prompt": ["a"]}), "prompt"),
        (
            json!({"prompt": "a", "negative_prompt": "n".repeat(201)}),
            "negative_prompt",
        ),
        (json!({"prompt": "a", "n": 0}), "n"),
        (json!({"prompt": "a", "n": 10}), "n"),
        (json!({"prompt": "a", "n": 2.5}), "n"),
        (
            json!({"prompt": "a", "image_fidelity": 1.01}),
            "image_fidelity",
        ),
        (
            json!({"prompt": "a", "image_fidelity": "high"}),
            "image_fidelity",
        ),
        (
            json!({"prompt": "a", "aspect_ratio": "21:9"}),
            "aspect_ratio",
        ),
        (json!({"prompt": "a", "image": gif}), "image"),
        (json!({"prompt": "a", "image": "%%%not base64%%%"}), "image"),
        (
            json!({"prompt": "a", "image": "data:image/png,rawbytes"}),
            "image",
        ),
        (json!({"prompt": "a", "image": big}), "image"),
        (
            json!({"prompt": "a", "callback_url": "gopher://x.test"}),
            "callback_url",
        ),
        (json!({"prompt": "a", "model": "m".repeat(65)}), "model"),
        (
            json!({"prompt": "a", "external_task_id": "x".repeat(129)}),
            "external_task_id",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = gw.post(PATH, &gw.admin, body.clone()).await;
        let shown: String = body.to_string().chars().take(80).collect();
        assert_eq!(s, 400, "{shown} -> {v}");
        assert_eq!(v["code"], 1201, "{v}");
        assert!(v["data"].is_null());
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.starts_with(field),
            "{shown}: {msg:?} should name {field}"
        );
    }
    // Exactly at the limits is fine.
    let (s, v) = gw
        .post(PATH, &gw.admin, json!({"prompt": "p".repeat(500), "negative_prompt": "n".repeat(200), "n": 9, "image_fidelity": 0}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Kling).await,
        1
    );
    gw.stop().await;
}
