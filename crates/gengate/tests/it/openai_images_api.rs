//! OpenAI images at `POST /v1/images/generations`: synchronous answers in
//! OpenAI's shape (checked against OpenAI's own spec), its error envelope,
//! and what happens when the task fails or outlasts the wait.

use crate::harness::{Backend, Gateway, TestApp};
use base64::Engine as _;
use gengate_core::Dialect;
use serde_json::{Value, json};

on_both_backends!(
    images_come_back_in_the_answer_as_base64_or_urls,
    a_failed_generation_is_a_502_that_is_not_retried,
    a_generation_outlasting_the_wait_is_a_504_naming_the_task,
    bad_requests_are_400_with_the_param_and_store_nothing,
    a_waiting_answer_is_given_when_the_server_stops,
);

const PATH: &str = "/v1/images/generations";

fn conforms(status: u16, body: &Value) {
    gengate_testkit::openapi::openai()
        .check_response("POST", "/images/generations", status, body)
        .unwrap_or_else(|e| panic!("breaks OpenAI's spec: {e}\n{body}"));
}

/// POST and also return the headers that matter here.
async fn generate(
    gw: &Gateway,
    key: &str,
    body: Value,
) -> (u16, Value, Option<String>, Option<String>) {
    let resp = gw
        .http
        .post(format!("{}{PATH}", gw.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (retry, task) = (header("x-should-retry"), header("gengate-task-id"));
    let v: Value = resp.json().await.expect("JSON");
    (status, v, retry, task)
}

async fn images_come_back_in_the_answer_as_base64_or_urls(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (status, v, _, _) = generate(
        &gw,
        &gw.admin,
        json!({"model": "gpt-image-1", "prompt": "a red fox", "n": 2, "size": "1024x1536",
               "response_format": "b64_json", "quality": "high", "user": "u-1"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    conforms(status, &v);
    assert!(v["created"].as_i64().unwrap() > 1_700_000_000);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for d in data {
        assert!(d.get("url").is_none(), "{d}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["b64_json"].as_str().unwrap())
            .unwrap();
        let img = image::load_from_memory(&bytes).expect("an image");
        assert_eq!(
            (img.width(), img.height()),
            (1024, 1536),
            "the size asked for"
        );
    }

    let (status, v, _, _) = generate(
        &gw,
        &gw.admin,
        json!({"model": "dall-e-3", "prompt": "a blue fox"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    conforms(status, &v);
    let url = v["data"][0]["url"].as_str().unwrap();
    let (status, ct, bytes) = gw.bytes(url).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("image/"), "{ct}");
    let img = image::load_from_memory(&bytes).expect("an image");
    assert_eq!(
        (img.width(), img.height()),
        (1024, 1024),
        "size auto is square"
    );

    // The tasks are the key's, seen through gengate's own API; not another key's.
    let (_, listed) = gw.get("/v1/tasks?model=dall-e-3", &gw.admin).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["data"][0]["state"], "completed");
    let other = gw.new_key("other").await;
    let (_, theirs) = gw.get("/v1/tasks", &other).await;
    assert!(theirs["data"].as_array().unwrap().is_empty());

    // With Idempotency-Key a retry answers the first task's images; the
    // key reused for another request is a 409 in OpenAI's envelope.
    let once = |prompt: &str| {
        gw.http
            .post(format!("{}{PATH}", gw.base))
            .bearer_auth(&other)
            .header("idempotency-key", "img-1")
            .json(&json!({"model": "dall-e-3", "prompt": prompt}))
            .send()
    };
    let first: Value = once("a green fox").await.unwrap().json().await.unwrap();
    let again: Value = once("a green fox").await.unwrap().json().await.unwrap();
    assert_eq!(first["data"], again["data"], "{first} {again}");
    let refused = once("a grey fox").await.unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    let (_, theirs) = gw.get("/v1/tasks", &other).await;
    assert_eq!(theirs["data"].as_array().unwrap().len(), 1, "{theirs}");
    gw.stop().await;
}

async fn a_failed_generation_is_a_502_that_is_not_retried(backend: Backend) {
    let gw = TestApp::on(backend)
        .with(|s| s.sandbox_failure_rate = 1.0)
        .start()
        .await;
    let (status, v, retry, task) = generate(&gw, &gw.admin, json!({"prompt": "doomed"})).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "generation_failed");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(retry.as_deref(), Some("false"));
    let task = task.expect("Gengate-Task-Id");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(&task),
        "{v}"
    );
    let (status, t) = gw.get(&format!("/v1/tasks/{task}"), &gw.admin).await;
    assert_eq!((status, t["state"].as_str()), (200, Some("failed")), "{t}");
    gw.stop().await;
}

async fn a_generation_outlasting_the_wait_is_a_504_naming_the_task(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .with(|s| s.sync_wait_secs = 1)
        .start()
        .await;
    let started = std::time::Instant::now();
    let (status, v, retry, task) = generate(&gw, &gw.admin, json!({"prompt": "slow"})).await;
    assert_eq!(status, 504, "{v}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(v["error"]["code"], "task_pending");
    assert_eq!(
        retry.as_deref(),
        Some("false"),
        "a retry would make the image twice"
    );
    let task = task.expect("Gengate-Task-Id");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("/v1/tasks/{task}")), "{message}");
    // The task goes on, followed where the message says.
    let (status, t) = gw.get(&format!("/v1/tasks/{task}"), &gw.admin).await;
    assert_eq!(status, 200);
    assert!(
        matches!(t["state"].as_str(), Some("pending" | "processing")),
        "{t}"
    );
    gw.stop().await;
}

async fn bad_requests_are_400_with_the_param_and_store_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let cases = [
        (json!({}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "a", "n": 0}), "n"),
        (json!({"prompt": "a", "n": 11}), "n"),
        (json!({"prompt": "a", "size": "big"}), "size"),
        (json!({"prompt": "a", "size": "10000x10"}), "size"),
        (
            json!({"prompt": "a", "response_format": "png"}),
            "response_format",
        ),
        (json!({"prompt": "a", "quality": "ultra"}), "quality"),
        (json!({"prompt": "a", "style": "odd"}), "style"),
        (json!({"prompt": "a", "stream": true}), "stream"),
        (json!({"prompt": "a", "user": "x".repeat(300)}), "user"),
        (json!({"prompt": 7}), "prompt"),
        // OpenAI's models keep OpenAI's rules.
        (json!({"prompt": "a".repeat(1001)}), "prompt"),
        (json!({"prompt": "a", "model": "dall-e-3", "n": 2}), "n"),
        (
            json!({"prompt": "a", "model": "dall-e-2", "size": "1792x1024"}),
            "size",
        ),
        (
            json!({"prompt": "a", "model": "gpt-image-1", "size": "512x512"}),
            "size",
        ),
    ];
    for (body, param) in cases {
        let (status, v, _, _) = generate(&gw, &gw.admin, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(param),
            "{v}"
        );
    }
    let (status, v) = gw
        .send(
            reqwest::Method::POST,
            PATH,
            None,
            Some(("application/json", b"{\"prompt\":\"a\"}".to_vec())),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    let (status, v) = gw
        .send(
            reqwest::Method::POST,
            PATH,
            Some(&gw.admin),
            Some(("application/json", b"{not json".to_vec())),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(gw.task_count(&gw.admin, Dialect::OpenaiImages).await, 0);
    gw.stop().await;
}

/// A held answer does not outlast the server: when it begins to stop, the
/// request gets its 504 at once (within the grace period), not a dropped
/// connection the SDK would retry.
async fn a_waiting_answer_is_given_when_the_server_stops(backend: Backend) {
    let gw = TestApp::on(backend)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let request = gw
        .http
        .post(format!("{}{PATH}", gw.base))
        .bearer_auth(&gw.admin)
        .json(&json!({"prompt": "interrupted"}))
        .send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    gw.stop().await;
    let resp = pending
        .await
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(resp.status().as_u16(), 504);
    assert_eq!(resp.headers()["x-should-retry"], "false");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "task_pending", "{v}");
}
