//! The seed's Luma task API, end to end through the sandbox.

use crate::harness::{Backend, Gateway, TestApp, assert_same_shape, mean_rgb};
use serde_json::{Value, json};

on_both_backends!(
    video_task_completes_in_the_seed_shape,
    failed_tasks_say_why_and_have_no_media,
    batch_get_keeps_order_omits_unknown_and_lists_duplicates_once,
    extend_continues_a_completed_task,
    extend_refuses_an_unfinished_task,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
    a_slow_input_image_is_fetched_and_submitted_once,
);

const SEED: &str = include_str!("../fixtures/seed_batch_response.json");

async fn create(gw: &Gateway, key: &str, body: Value) -> String {
    let (status, v) = gw.post("/luma/generations", key, body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "pending");
    v["id"].as_str().expect("an id").to_string()
}

async fn video_task_completes_in_the_seed_shape(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let id = create(
        &gw,
        &gw.admin,
        json!({"user_prompt": "cat dance", "aspect_ratio": "9:16"}),
    )
    .await;
    let done = gw.wait_luma(&gw.admin, &id).await;
    assert_eq!(done["state"], "completed", "{done}");

    // The batch get answers the seed's structure, key for key, type for type.
    let (status, batch) = gw
        .post("/luma/tasks", &gw.admin, json!({"ids": [id]}))
        .await;
    assert_eq!(status, 200);
    let seed: Value = serde_json::from_str(SEED).unwrap();
    assert_same_shape(&seed, &batch, "$");

    let t = &batch[0];
    assert_eq!(t["request"]["prompt"], "cat dance");
    assert_eq!(t["request"]["aspect_ratio"], "9:16");
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(t["video"]["width"], 288);
    assert_eq!(t["video"]["height"], 512);
    assert_eq!(t["video_raw"]["duration"], 5.0);
    assert_eq!(t["thumbnail"]["width"], 288);
    assert!(t.get("failure_reason").is_none());
    // palette.grid: base64 of a 5×5 RGB grid.
    use base64::Engine as _;
    let grid = base64::engine::general_purpose::STANDARD
        .decode(t["thumbnail"]["palette"]["grid"].as_str().unwrap())
        .unwrap();
    assert_eq!(grid.len(), 75);

    // The video, thumbnail and last frame are served, with their types.
    let (s, ct, mp4) = gw.bytes(t["video"]["url"].as_str().unwrap()).await;
    assert_eq!((s, ct.as_str()), (200, "video/mp4"));
    assert!(mp4.len() > 10_000);
    let (s, ct, jpg) = gw.bytes(t["thumbnail"]["url"].as_str().unwrap()).await;
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));
    // The grid is the thumbnail's own colours, averaged.
    let img = image::load_from_memory(&jpg).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let cell = |cx: u32, cy: u32| {
        let (mut sum, mut n) = ([0u64; 3], 0u64);
        for y in cy * h / 5..(cy + 1) * h / 5 {
            for x in cx * w / 5..(cx + 1) * w / 5 {
                let p = img.get_pixel(x, y);
                for c in 0..3 {
                    sum[c] += u64::from(p[c]);
                }
                n += 1;
            }
        }
        sum.map(|s| (s / n) as i32)
    };
    for (i, (cx, cy)) in [(0, 0), (2, 2), (4, 4)].into_iter().enumerate() {
        let want = cell(cx, cy);
        let at = ((cy * 5 + cx) * 3) as usize;
        for c in 0..3 {
            assert!(
                (i32::from(grid[at + c]) - want[c]).abs() <= 2,
                "cell {i}: {grid:?}"
            );
        }
    }
    let (s, ct, _) = gw.bytes(t["last_frame"]["url"].as_str().unwrap()).await;
    assert_eq!((s, ct.as_str()), (200, "image/jpeg"));

    let (s, v) = gw
        .get(
            &format!("/luma/generations/{id}/download_video_url"),
            &gw.admin,
        )
        .await;
    assert_eq!(s, 200);
    // The same file, served as an attachment.
    let video_url = t["video"]["url"].as_str().unwrap();
    assert_eq!(v["url"], format!("{video_url}?download=1"));
    let download = gw
        .http
        .get(v["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(download.status().as_u16(), 200);
    assert!(
        download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );

    // Events were recorded in order, one per state.
    let events = gw.store().task_events(id.parse().unwrap()).await.unwrap();
    let states: Vec<_> = events.iter().map(|e| (e.seq, e.state.as_str())).collect();
    assert_eq!(
        states,
        vec![(1, "pending"), (2, "processing"), (3, "completed")]
    );
    gw.stop().await;
}

async fn failed_tasks_say_why_and_have_no_media(backend: Backend) {
    let gw = TestApp::on(backend)
        .with(|s| s.sandbox_failure_rate = 1.0)
        .start()
        .await;
    let id = create(&gw, &gw.admin, json!({"prompt": "doomed"})).await;
    let done = gw.wait_luma(&gw.admin, &id).await;
    assert_eq!(done["state"], "failed");
    assert!(
        done["failure_reason"].as_str().unwrap().contains("sandbox"),
        "{done}"
    );
    assert!(done["video"].is_null() && done["artifact"].is_null());
    let (s, v) = gw
        .get(
            &format!("/luma/generations/{id}/download_video_url"),
            &gw.admin,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("failed"));
    gw.stop().await;
}

async fn batch_get_keeps_order_omits_unknown_and_lists_duplicates_once(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let a = create(&gw, &gw.admin, json!({"user_prompt": "a"})).await;
    let b = create(&gw, &gw.admin, json!({"user_prompt": "b"})).await;
    let c = create(&gw, &gw.admin, json!({"user_prompt": "c"})).await;
    let unknown = "4665a07c-7641-4809-a133-10786201bb56";
    let (s, v) = gw
        .post(
            "/luma/tasks",
            &gw.admin,
            json!({"ids": [c, unknown, a, c, b, a]}),
        )
        .await;
    assert_eq!(s, 200);
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![c.as_str(), a.as_str(), b.as_str()]);
    // Unfinished tasks show null media.
    assert!(v[0]["video"].is_null() && v[0]["thumbnail"].is_null());

    // A Kling task's id is not a Luma task: left out.
    let (_, k) = gw
        .post(
            "/kling/v1/images/generations",
            &gw.admin,
            json!({"prompt": "img"}),
        )
        .await;
    let kid = k["data"]["task_id"].as_str().unwrap();
    let (_, v) = gw
        .post("/luma/tasks", &gw.admin, json!({"ids": [kid, a]}))
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);

    // 100 ids is fine; 101, none or a non-UUID is a 400 naming ids.
    let hundred: Vec<String> = std::iter::once(a.clone())
        .chain((0..99).map(|_| uuid::Uuid::now_v7().to_string()))
        .collect();
    let (s, v) = gw
        .post("/luma/tasks", &gw.admin, json!({"ids": hundred}))
        .await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    let over: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for bad in [
        json!({"ids": over}),
        json!({"ids": []}),
        json!({}),
        json!({"ids": ["nope"]}),
        json!({"ids": "x"}),
    ] {
        let (s, v) = gw.post("/luma/tasks", &gw.admin, bad.clone()).await;
        assert_eq!(s, 400, "{bad} -> {v}");
        assert!(v["detail"].as_str().unwrap().starts_with("ids"), "{v}");
    }
    gw.stop().await;
}

async fn extend_continues_a_completed_task(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let id = create(
        &gw,
        &gw.admin,
        json!({"user_prompt": "waves", "aspect_ratio": "1:1"}),
    )
    .await;

    let parent = gw.wait_luma(&gw.admin, &id).await;
    let (s, v) = gw
        .post(
            &format!("/luma/generations/{id}/extend"),
            &gw.admin,
            json!({"user_prompt": "more waves"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["request"]["extend_from"], id.as_str());
    assert_eq!(
        v["request"]["aspect_ratio"], "1:1",
        "keeps the parent's frame"
    );
    let ext = v["id"].as_str().unwrap().to_string();
    let done = gw.wait_luma(&gw.admin, &ext).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["video"]["width"], 384);
    // The continuation starts where its parent ended.
    let last = mean_rgb(
        &gw.bytes(parent["last_frame"]["url"].as_str().unwrap())
            .await
            .2,
    );
    let first = mean_rgb(&gw.bytes(done["thumbnail"]["url"].as_str().unwrap()).await.2);
    for c in 0..3 {
        assert!(
            (last[c] - first[c]).abs() <= 40.0,
            "parent ends {last:?}, extension starts {first:?}"
        );
    }

    let (s, _) = gw
        .post(
            &format!("/luma/generations/{}/extend", uuid::Uuid::now_v7()),
            &gw.admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

async fn extend_refuses_an_unfinished_task(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let id = create(&gw, &gw.admin, json!({"user_prompt": "slow"})).await;
    let (s, v) = gw
        .post(
            &format!("/luma/generations/{id}/extend"),
            &gw.admin,
            json!({"user_prompt": "more"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("completed"));
    gw.stop().await;
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let cases = [
        (json!({}), "user_prompt"),
        (json!({"user_prompt": ""}), "user_prompt"),
        (json!({"user_prompt": 5}), "user_prompt"),
        (json!({"user_prompt": "x".repeat(5001)}), "user_prompt"),
        (
            json!({"user_prompt": "a", "aspect_ratio": "5:4"}),
            "aspect_ratio",
        ),
        (json!({"user_prompt": "a", "loop": "yes"}), "loop"),
        (
            json!({"user_prompt": "a", "expand_prompt": 1}),
            "expand_prompt",
        ),
        (
            json!({"user_prompt": "a", "image_url": "file:///etc/passwd"}),
            "image_url",
        ),
        (
            json!({"user_prompt": "a", "image_end_url": "not a url"}),
            "image_end_url",
        ),
        (
            json!({"user_prompt": "a", "callback_url": "ftp://x.test/"}),
            "callback_url",
        ),
        (
            json!({"user_prompt": "a", "notify_hook": "javascript:alert(1)"}),
            "callback_url",
        ),
        (
            json!({"user_prompt": "a", "resolution": "8k"}),
            "resolution",
        ),
        (json!({"user_prompt": "a", "duration": "30s"}), "duration"),
        (
            json!({"user_prompt": "a", "model_name": "bad name!"}),
            "model_name",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = gw.post("/luma/generations", &gw.admin, body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(field),
            "{body}: {detail:?} should name {field}"
        );
    }
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Luma).await,
        0
    );
    gw.stop().await;
}

/// An input image slower than the lease: the worker keeps its lease while
/// fetching, so no other pass retakes the task and does it again.
async fn a_slow_input_image_is_fetched_and_submitted_once(backend: Backend) {
    let host = gengate_testkit::image_host::ImageHost::start().await;
    let gw = TestApp::on(backend)
        .with(|s| {
            s.lease_secs = 1;
            s.sandbox_submit_log = Some(s.data_dir.join("submits.log"));
        })
        .start()
        .await;
    let id = create(
        &gw,
        &gw.admin,
        json!({"user_prompt": "slow start", "image_url": host.url("/late/2500.png")}),
    )
    .await;
    let done = gw.wait_luma(&gw.admin, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(host.late_requests(), 1, "the image was fetched again");
    let log = std::fs::read_to_string(gw.settings.data_dir.join("submits.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.starts_with(&id)).count(),
        1,
        "{log}"
    );
    gw.stop().await;
}
