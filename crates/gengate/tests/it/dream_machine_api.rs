//! Luma's official API under `/dream-machine/v1`, spoken to as the lumaai
//! SDK would, every answer checked against Luma's own OpenAPI spec.

use std::time::{Duration, Instant};

use crate::harness::{Backend, Gateway, TestApp, mean_rgb};
use gengate_core::Dialect;
use gengate_testkit::image_host::ImageHost;
use gengate_testkit::receiver::Receiver;
use serde_json::{Value, json};

on_both_backends!(
    videos_and_images_go_queued_to_completed_in_luma_shape,
    a_generation_keyframe_continues_a_completed_video,
    listing_pages_by_offset_over_this_api_only,
    delete_cancels_and_removes_a_generation,
    bad_requests_are_400_naming_the_field_and_store_nothing,
    callbacks_post_the_generation_on_each_change,
    a_deleted_generation_is_gone_from_batch_gets_too,
    a_sync_image_answers_before_its_sync_timeout,
);

const BASE: &str = "/dream-machine/v1";

/// Checks `body` against Luma's spec for `method path` answered `status`.
fn conforms(method: &str, path: &str, status: u16, body: &Value) {
    gengate_testkit::openapi::luma()
        .check_response(method, path, status, body)
        .unwrap_or_else(|e| panic!("{method} {path} ({status}) breaks Luma's spec: {e}\n{body}"));
}

async fn create(gw: &Gateway, key: &str, what: &str, body: Value) -> Value {
    let path = format!("{BASE}/generations/{what}");
    let (status, v) = gw.post(&path, key, body).await;
    assert_eq!(status, 201, "{v}");
    conforms("POST", &format!("/generations/{what}"), status, &v);
    v
}

async fn get(gw: &Gateway, key: &str, id: &str) -> (u16, Value) {
    let (status, v) = gw.get(&format!("{BASE}/generations/{id}"), key).await;
    conforms("GET", &format!("/generations/{id}"), status, &v);
    (status, v)
}

/// Waits for a generation to be completed or failed, looking at it in
/// this API when it is taken up and at its end: the generation, and the
/// states seen.
async fn finish(gw: &Gateway, key: &str, id: &str) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let mut look = async || {
        let (status, v) = get(gw, key, id).await;
        assert_eq!(status, 200, "{v}");
        let state = v["state"].as_str().unwrap().to_string();
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        v
    };
    let taken = gw.watch(key, id, |s| s == "processing").await;
    if taken.last().is_some_and(|e| e.state == "processing") {
        look().await;
    }
    gw.wait_done(key, id).await;
    let v = look().await;
    assert!(
        matches!(v["state"].as_str(), Some("completed" | "failed")),
        "{v}"
    );
    (v, seen)
}

async fn videos_and_images_go_queued_to_completed_in_luma_shape(backend: Backend) {
    let gw = TestApp::on(backend).sandbox_latency_ms(400).start().await;
    let host = ImageHost::start().await;
    let v = create(
        &gw,
        &gw.admin,
        "video",
        json!({"model": "ray-2", "prompt": "a lake at dusk", "aspect_ratio": "9:16",
               "loop": true, "resolution": "720p", "duration": "5s",
               "keyframes": {"frame0": {"type": "image", "url": host.url("/red.png")}}}),
    )
    .await;
    assert_eq!(v["state"], "queued");
    assert_eq!(v["generation_type"], "video");
    assert_eq!(v["model"], "ray-2");
    assert!(
        v.get("assets").is_none(),
        "no assets before completion: {v}"
    );
    assert_eq!(
        v["request"]["keyframes"]["frame0"]["url"],
        host.url("/red.png")
    );
    assert_eq!(v["request"]["aspect_ratio"], "9:16");
    assert_eq!(v["request"]["duration"], "5s");
    let id = v["id"].as_str().unwrap();
    let (done, seen) = finish(&gw, &gw.admin, id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(
        seen.contains(&"dreaming".to_string()),
        "states seen: {seen:?}"
    );
    assert!(done.get("failure_reason").is_none());
    let (status, ct, mp4) = gw.bytes(done["assets"]["video"].as_str().unwrap()).await;
    assert_eq!((status, ct.as_str()), (200, "video/mp4"));
    let probe = gengate_media::probe_mp4(&mp4).expect("an MP4");
    assert_eq!(
        (probe.width, probe.height),
        (352, 624),
        "9:16 at the sandbox's 720p step"
    );
    // It loops: the last frame is next to the first (the red keyframe's).
    let (_, task) = gw.get(&format!("/v1/tasks/{id}"), &gw.admin).await;
    let still = |role: &str| {
        task["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["role"] == role)
            .and_then(|o| o["url"].as_str())
            .unwrap()
            .to_string()
    };
    let first = mean_rgb(&gw.bytes(&still("thumbnail")).await.2);
    let last = mean_rgb(&gw.bytes(&still("last_frame")).await.2);
    assert!(
        first.iter().zip(last).all(|(a, b)| (a - b).abs() < 4.0),
        "{first:?} {last:?}"
    );

    let img = create(
        &gw,
        &gw.admin,
        "image",
        json!({"model": "photon-1", "prompt": "a red fox", "aspect_ratio": "1:1"}),
    )
    .await;
    assert_eq!(img["generation_type"], "image");
    let (done, _) = finish(&gw, &gw.admin, img["id"].as_str().unwrap()).await;
    let (status, _, bytes) = gw.bytes(done["assets"]["image"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let decoded = image::load_from_memory(&bytes).expect("an image");
    assert_eq!((decoded.width(), decoded.height()), (1024, 1024));

    // sync: the answer waits for the image.
    let started = Instant::now();
    let sync = create(
        &gw,
        &gw.admin,
        "image",
        json!({"model": "photon-1", "prompt": "a blue fox", "sync": true, "sync_timeout": 30}),
    )
    .await;
    assert_eq!(sync["state"], "completed", "{sync}");
    assert!(sync["assets"]["image"].is_string());
    assert!(started.elapsed() >= Duration::from_millis(300));

    // ping, credits.
    let (status, pong) = gw.get(&format!("{BASE}/ping"), &gw.admin).await;
    assert_eq!((status, pong["message"].as_str()), (200, Some("pong")));
    conforms("GET", "/ping", status, &pong);
    let (status, credits) = gw.get(&format!("{BASE}/credits"), &gw.admin).await;
    assert_eq!(status, 200);
    conforms("GET", "/credits", status, &credits);
    assert_eq!(credits["unlimited"], true);
    gw.stop().await;
}

async fn a_generation_keyframe_continues_a_completed_video(backend: Backend) {
    let gw = TestApp::on(backend).sandbox_latency_ms(300).start().await;
    let other = gw.new_key("other").await;
    let first = create(
        &gw,
        &gw.admin,
        "video",
        json!({"model": "ray-2", "prompt": "a walk", "aspect_ratio": "1:1"}),
    )
    .await;
    let first_id = first["id"].as_str().unwrap().to_string();
    let frame0 = |id: &str| {
        json!({"model": "ray-2", "prompt": "on and on",
        "keyframes": {"frame0": {"type": "generation", "id": id}}})
    };
    // Not completed yet: a 400 (the SDKs would retry a 409, to no avail).
    let (status, v) = gw
        .post(
            &format!("{BASE}/generations/video"),
            &gw.admin,
            frame0(&first_id),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("keyframes.frame0.id"),
        "{v}"
    );
    finish(&gw, &gw.admin, &first_id).await;
    // Another key cannot continue it.
    let (status, v) = gw
        .post(
            &format!("{BASE}/generations/video"),
            &other,
            frame0(&first_id),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("keyframes.frame0.id"),
        "{v}"
    );
    let next = create(&gw, &gw.admin, "video", frame0(&first_id)).await;
    assert_eq!(next["request"]["keyframes"]["frame0"]["type"], "generation");
    assert_eq!(
        next["request"]["keyframes"]["frame0"]["id"],
        first_id.as_str()
    );
    // It keeps the frame of what it continues.
    assert_eq!(next["request"]["aspect_ratio"], "1:1");
    let (done, _) = finish(&gw, &gw.admin, next["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "completed", "{done}");
    gw.stop().await;
}

async fn listing_pages_by_offset_over_this_api_only(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let other = gw.new_key("other").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let v = create(
            &gw,
            &gw.admin,
            "video",
            json!({"model": "ray-2", "prompt": format!("clip {i}")}),
        )
        .await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Tasks made through other APIs are not this API's.
    let (status, seed) = gw
        .post(
            "/luma/generations",
            &gw.admin,
            json!({"user_prompt": "seed dialect"}),
        )
        .await;
    assert_eq!(status, 201);
    let page = |q: &str| format!("{BASE}/generations{q}");
    let (status, first) = gw.get(&page("?limit=2"), &gw.admin).await;
    assert_eq!(status, 200, "{first}");
    conforms("GET", "/generations", status, &first);
    assert_eq!(
        (first["count"].as_u64(), first["has_more"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(
        (first["limit"].as_u64(), first["offset"].as_u64()),
        (Some(2), Some(0))
    );
    let (_, last) = gw.get(&page("?limit=2&offset=4"), &gw.admin).await;
    assert_eq!(
        (last["count"].as_u64(), last["has_more"].as_bool()),
        (Some(1), Some(false))
    );
    let (_, all) = gw.get(&page(""), &gw.admin).await;
    let listed: Vec<&str> = all["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(all["limit"], 100);
    // Another key sees none of them, and none of them by id.
    let (_, theirs) = gw.get(&page(""), &other).await;
    assert_eq!(theirs["count"], 0);
    assert_eq!(get(&gw, &other, &ids[0]).await.0, 404);
    // A task of another API is not found here.
    assert_eq!(
        get(&gw, &gw.admin, seed["id"].as_str().unwrap()).await.0,
        404
    );
    for bad in ["?limit=0", "?limit=101", "?limit=x", "?offset=-1"] {
        let (status, v) = gw.get(&page(bad), &gw.admin).await;
        assert_eq!(status, 400, "{bad}: {v}");
        let field = if bad.contains("offset") {
            "offset"
        } else {
            "limit"
        };
        assert!(v["detail"].as_str().unwrap().contains(field), "{bad}: {v}");
    }
    gw.stop().await;
}

async fn delete_cancels_and_removes_a_generation(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let other = gw.new_key("other").await;
    let v = create(
        &gw,
        &gw.admin,
        "video",
        json!({"model": "ray-2", "prompt": "a long one"}),
    )
    .await;
    let id = v["id"].as_str().unwrap();
    let del = |key: String| {
        let gw = &gw;
        async move {
            gw.send(
                reqwest::Method::DELETE,
                &format!("{BASE}/generations/{id}"),
                Some(&key),
                None,
            )
            .await
        }
    };
    // Another key's delete is a 404 and removes nothing.
    let (status, _) = del(other.clone()).await;
    assert_eq!(status, 404);
    assert_eq!(get(&gw, &gw.admin, id).await.0, 200);
    let (status, body) = del(gw.admin.clone()).await;
    assert_eq!(status, 204, "{body}");
    let (status, v) = get(&gw, &gw.admin, id).await;
    assert_eq!(status, 404);
    assert!(v["detail"].as_str().unwrap().contains(id), "{v}");
    // Gone from gengate's own API too, and from the store.
    let (status, _) = gw.get(&format!("/v1/tasks/{id}"), &gw.admin).await;
    assert_eq!(status, 404);
    assert_eq!(gw.task_count(&gw.admin, Dialect::DreamMachine).await, 0);
    let (status, _) = del(gw.admin.clone()).await;
    assert_eq!(status, 404);
    gw.stop().await;
}

async fn bad_requests_are_400_naming_the_field_and_store_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let cases = [
        ("video", json!({"prompt": "no model"}), "model"),
        ("video", json!({"model": "ray-2"}), "prompt"),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "aspect_ratio": "2:1"}),
            "aspect_ratio",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "duration": "7s"}),
            "duration",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "resolution": "8k"}),
            "resolution",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "keyframes": {"frame0": {"type": "video", "url": "https://x.test/v.mp4"}}}),
            "keyframes.frame0.type",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "keyframes": {"frame1": {"type": "image"}}}),
            "keyframes.frame1.url",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "keyframes": {"frame0": {"type": "generation", "id": "nope"}}}),
            "keyframes.frame0.id",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "keyframes": {"frame0": {"type": "generation", "id": "0190a07c-7641-7809-a133-10786201bb57"}}}),
            "keyframes.frame0.id",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "concepts": [{"key": "dolly_zoom"}]}),
            "concepts",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "callback_url": "http://10.0.0.1/hook"}),
            "callback_url",
        ),
        (
            "video",
            json!({"model": "ray-2", "prompt": "a", "keyframes": {"frame0": {"type": "image", "url": "http://192.168.1.1/a.jpg"}}}),
            "keyframes.frame0.url",
        ),
        (
            "image",
            json!({"model": "photon-1", "prompt": "a", "format": "gif"}),
            "format",
        ),
        (
            "image",
            json!({"model": "photon-1", "prompt": "a", "style_ref": [{"url": "https://x.test/a.jpg"}]}),
            "style_ref",
        ),
        (
            "image",
            json!({"model": "photon-1", "prompt": "a", "image_ref": [{"url": "https://x.test/a.jpg", "weight": 3}]}),
            "image_ref[0].weight",
        ),
        (
            "image",
            json!({"model": "photon-1", "prompt": "a", "sync": true, "sync_timeout": 0}),
            "sync_timeout",
        ),
        ("image", json!({"model": "photon-1", "prompt": 5}), "prompt"),
    ];
    for (what, body, field) in cases {
        let (status, v) = gw
            .post(
                &format!("{BASE}/generations/{what}"),
                &gw.admin,
                body.clone(),
            )
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        let detail = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{{detail}} envelope: {v}"));
        assert!(
            detail.contains(field),
            "{body}: {detail} should name {field}"
        );
    }
    // Not JSON, no key, a wrong key.
    let (status, v) = gw
        .send(
            reqwest::Method::POST,
            &format!("{BASE}/generations/video"),
            Some(&gw.admin),
            Some(("text/plain", b"hi".to_vec())),
        )
        .await;
    assert_eq!(status, 415, "{v}");
    let (status, v) = gw
        .send(
            reqwest::Method::GET,
            &format!("{BASE}/generations"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert!(v["detail"].is_string(), "{v}");
    let (status, _) = gw.get(&format!("{BASE}/ping"), "gg_wrong").await;
    assert_eq!(status, 401);
    assert_eq!(gw.task_count(&gw.admin, Dialect::DreamMachine).await, 0);
    gw.stop().await;
}

async fn callbacks_post_the_generation_on_each_change(backend: Backend) {
    let rx = Receiver::start().await;
    let gw = TestApp::on(backend).sandbox_latency_ms(200).start().await;
    let v = create(
        &gw,
        &gw.admin,
        "video",
        json!({"model": "ray-2", "prompt": "called back", "callback_url": rx.url("/luma")}),
    )
    .await;
    let id = v["id"].as_str().unwrap();
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let states: Vec<String> = got
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["id"], id);
            conforms("GET", &format!("/generations/{id}"), 200, &body);
            body["state"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(states, ["queued", "dreaming", "completed"], "{states:?}");
    gw.stop().await;
}

/// Finished tasks are served from a cache of renderings; a deleted
/// generation must not linger there.
async fn a_deleted_generation_is_gone_from_batch_gets_too(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let v = create(
        &gw,
        &gw.admin,
        "image",
        json!({"model": "photon-1", "prompt": "kept a moment"}),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    finish(&gw, &gw.admin, &id).await;
    for _ in 0..2 {
        let (status, page) = gw
            .post("/v1/tasks/batch-get", &gw.admin, json!({"ids": [id]}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    }
    let (status, _) = gw
        .send(
            reqwest::Method::DELETE,
            &format!("{BASE}/generations/{id}"),
            Some(&gw.admin),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, page) = gw
        .post("/v1/tasks/batch-get", &gw.admin, json!({"ids": [id]}))
        .await;
    assert_eq!(page["data"], json!([]), "a deleted generation was served");
    gw.stop().await;
}

/// `sync` waits, but answers a little before `sync_timeout` (counted from
/// the request's arrival), so an SDK never times out and retries.
async fn a_sync_image_answers_before_its_sync_timeout(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let started = Instant::now();
    let v = create(
        &gw,
        &gw.admin,
        "image",
        json!({"model": "photon-1", "prompt": "slow", "sync": true, "sync_timeout": 10}),
    )
    .await;
    let took = started.elapsed();
    assert!(
        matches!(v["state"].as_str(), Some("queued" | "dreaming")),
        "{v}"
    );
    // Answered at 9 s (a tenth of sync_timeout early): a second to spare
    // on a loaded machine.
    assert!(took >= Duration::from_secs(8), "answered after {took:?}");
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    gw.stop().await;
}
