//! What every endpoint answers to requests that are wrong before any field
//! is read: keys, content types, sizes, unknown ids; and isolation between keys.

use crate::harness::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

on_both_backends!(
    keys_are_required_and_checked,
    bodies_must_be_json_objects_within_the_limit,
    unknown_ids_and_paths_are_404,
    no_endpoint_reveals_another_keys_tasks,
    health_and_openapi,
    tasks_past_their_deadline_fail_with_timeout,
);

const LUMA: &str = "/luma/generations";
const KLING: &str = "/kling/v1/images/generations";

/// Is this body the dialect's error envelope?
fn luma_error(v: &Value) -> &str {
    v["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("not a Luma error: {v}"))
}

fn kling_error(v: &Value, code: u64) -> &str {
    assert_eq!(v["code"], code, "{v}");
    assert!(v["data"].is_null());
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("not a Kling error: {v}"))
}

async fn keys_are_required_and_checked(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let body = || Some(("application/json", br#"{"prompt":"a"}"#.to_vec()));
    for (method, path) in [
        (Method::POST, LUMA),
        (
            Method::GET,
            "/luma/generations/4665a07c-7641-4809-a133-10786201bb56",
        ),
        (Method::POST, "/luma/tasks"),
    ] {
        let (s, v) = gw.send(method.clone(), path, None, body()).await;
        assert_eq!(s, 401, "{path}");
        assert!(luma_error(&v).contains("missing API key"));
        let (s, v) = gw
            .send(method, path, Some("gg_not_a_real_key"), body())
            .await;
        assert_eq!(s, 401, "{path}");
        assert!(luma_error(&v).contains("unknown"));
    }
    let (s, v) = gw.send(Method::POST, KLING, None, body()).await;
    assert_eq!(s, 401);
    kling_error(&v, 1001);
    let (s, v) = gw.send(Method::GET, KLING, Some("gg_nope"), None).await;
    assert_eq!(s, 401);
    kling_error(&v, 1000);
    // Nothing was stored for anyone.
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Luma).await,
        0
    );
    gw.stop().await;
}

async fn bodies_must_be_json_objects_within_the_limit(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = Some(gw.admin.as_str());
    for path in [LUMA, "/luma/tasks", KLING] {
        let (s, v) = gw
            .send(
                Method::POST,
                path,
                key,
                Some(("text/plain", b"{}".to_vec())),
            )
            .await;
        assert_eq!(s, 415, "{path}: {v}");
        let (s, v) = gw.send(Method::POST, path, key, None).await;
        assert_eq!(s, 415, "{path} without a content type: {v}");
        let (s, v) = gw
            .send(
                Method::POST,
                path,
                key,
                Some(("application/json", b"{\"prompt\": ".to_vec())),
            )
            .await;
        assert_eq!(s, 400, "{path}: {v}");
        let (s, v) = gw
            .send(
                Method::POST,
                path,
                key,
                Some(("application/json", b"[1, 2]".to_vec())),
            )
            .await;
        assert_eq!(s, 400, "{path}: {v}");
        let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(16 * 1024 * 1024));
        let (s, v) = gw
            .send(
                Method::POST,
                path,
                key,
                Some(("application/json; charset=utf-8", huge.into_bytes())),
            )
            .await;
        assert_eq!(s, 413, "{path}: {v}");
    }
    let (_, v) = gw
        .send(
            Method::POST,
            KLING,
            key,
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    kling_error(&v, 1200);
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Luma).await,
        0
    );
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Kling).await,
        0
    );
    gw.stop().await;
}

async fn unknown_ids_and_paths_are_404(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("{LUMA}/{unknown}"),
        format!("{LUMA}/not-a-uuid"),
        format!("{LUMA}/{unknown}/download_video_url"),
    ] {
        let (s, v) = gw.get(&path, &gw.admin).await;
        assert_eq!(s, 404, "{path}");
        assert!(luma_error(&v).contains("not found"));
    }
    let (s, v) = gw.get(&format!("{KLING}/{unknown}"), &gw.admin).await;
    assert_eq!(s, 404);
    kling_error(&v, 1203);
    let (s, v) = gw
        .get(&format!("{KLING}/no-such-external-id"), &gw.admin)
        .await;
    assert_eq!(s, 404);
    kling_error(&v, 1203);
    let (s, _) = gw.get("/no/such/endpoint", &gw.admin).await;
    assert_eq!(s, 404);
    gw.stop().await;
}

async fn no_endpoint_reveals_another_keys_tasks(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let alice = gw.new_key("alice").await;
    let bob = gw.new_key("bob").await;
    let (_, v) = gw
        .post(LUMA, &alice, json!({"user_prompt": "alice's"}))
        .await;
    let luma_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = gw
        .post(
            KLING,
            &alice,
            json!({"prompt": "alice's", "external_task_id": "a-1"}),
        )
        .await;
    let kling_id = v["data"]["task_id"].as_str().unwrap().to_string();
    gw.wait_luma(&alice, &luma_id).await;
    gw.wait_kling(&alice, &kling_id).await;

    // Bob sees none of it, and gets the same answer as for an unknown id.
    for path in [
        format!("{LUMA}/{luma_id}"),
        format!("{LUMA}/{luma_id}/download_video_url"),
    ] {
        let (s, v) = gw.get(&path, &bob).await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    let (s, _) = gw
        .post(&format!("{LUMA}/{luma_id}/extend"), &bob, json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, v) = gw
        .post("/luma/tasks", &bob, json!({"ids": [luma_id]}))
        .await;
    assert_eq!((s, v), (200, json!([])));
    for path in [format!("{KLING}/{kling_id}"), format!("{KLING}/a-1")] {
        let (s, _) = gw.get(&path, &bob).await;
        assert_eq!(s, 404, "{path}");
    }
    let (s, v) = gw.get(KLING, &bob).await;
    assert_eq!((s, v["data"].clone()), (200, json!([])));
    // Alice still sees hers.
    let (s, v) = gw
        .post("/luma/tasks", &alice, json!({"ids": [luma_id]}))
        .await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    // Finished tasks are served from rendered bytes; still only to their owner.
    let (s, again) = gw
        .post("/luma/tasks", &alice, json!({"ids": [luma_id]}))
        .await;
    assert_eq!((s, &again), (200, &v));
    let (s, v) = gw
        .post("/luma/tasks", &bob, json!({"ids": [luma_id]}))
        .await;
    assert_eq!((s, v), (200, json!([])));
    let (s, v) = gw.get(KLING, &alice).await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 1));
    gw.stop().await;
}

async fn health_and_openapi(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (s, _) = gw.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, 200);
    let (s, v) = gw.send(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")));
    let (s, doc) = gw.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/luma/generations", "post"),
        ("/luma/generations/{id}", "get"),
        ("/luma/generations/{id}/extend", "post"),
        ("/luma/generations/{id}/download_video_url", "get"),
        ("/luma/tasks", "post"),
        ("/kling/v1/images/generations", "post"),
        ("/kling/v1/images/generations", "get"),
        ("/kling/v1/images/generations/{id}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/files/results/{file}", "get"),
        ("/metrics", "get"),
        ("/v1/tasks/{id}/deliveries", "get"),
        ("/v1/tasks/{id}/deliveries/{delivery_id}/redeliver", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    // Every answer carries a request id.
    let resp = gw
        .http
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("x-request-id"));
    gw.stop().await;
}

async fn tasks_past_their_deadline_fail_with_timeout(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .with(|s| {
            s.video_deadline_secs = 1;
            s.image_deadline_secs = 1;
        })
        .start()
        .await;
    let (_, v) = gw
        .post(LUMA, &gw.admin, json!({"user_prompt": "too slow"}))
        .await;
    let luma_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = gw
        .post(KLING, &gw.admin, json!({"prompt": "too slow"}))
        .await;
    let kling_id = v["data"]["task_id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let done = gw.wait_luma(&gw.admin, &luma_id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["failure_reason"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let done = gw.wait_kling(&gw.admin, &kling_id).await;
    assert_eq!(
        (
            done["task_status"].as_str(),
            done["task_status_msg"].as_str()
        ),
        (Some("failed"), Some("timeout"))
    );
    gw.stop().await;
}
