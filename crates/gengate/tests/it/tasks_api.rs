//! gengate's own task API under `/v1/tasks`, and `/v1/models`, end to end
//! through the sandbox.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::harness::events::EventStream;
use crate::harness::{
    Backend, Event, Gateway, TASK_WAIT, TestApp, channel_on, mean_rgb, poll_until, sandbox_channel,
};
use gengate_core::{ChannelSpec, ProviderKind};
use gengate_testkit::RED_PNG;
use gengate_testkit::fixtures::json_of;
use gengate_testkit::replicate::ReplicateEmu;
use serde_json::{Value, json};

on_both_backends!(
    tasks_are_created_fetched_and_completed,
    bad_input_is_a_400_naming_the_field_and_stores_nothing,
    keys_never_see_each_others_tasks,
    idempotency_keys_answer_the_first_task,
    inline_images_are_used_and_name_the_same_request,
    list_filters_apply,
    cancel_stops_unfinished_tasks_and_refuses_finished_ones,
    events_stream_live_and_resume_after_last_event_id,
    other_dialects_tasks_show_here_but_not_the_reverse,
    models_lists_what_the_channels_serve,
    cancel_and_delete_ask_the_upstream_to_stop,
    callbacks_post_the_task_object_signed_on_each_change,
);

async fn create(gw: &Gateway, key: &str, body: Value) -> Value {
    let (status, v) = gw.post("/v1/tasks", key, body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["object"], "task");
    assert_eq!(v["state"], "pending");
    v
}

fn video(prompt: &str) -> Value {
    json!({"model": "ray-2", "kind": "video", "input": {"prompt": prompt}})
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// The error message of a gengate error envelope, checked for its shape.
fn error_message(status: u16, v: &Value) -> String {
    assert_eq!(v["error"]["status"], status, "{v}");
    v["error"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

async fn tasks_are_created_fetched_and_completed(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("app").await;
    let v = create(
        &gw,
        &key,
        json!({"model": "ray-2", "kind": "video", "input": {
            "prompt": "a red fox", "aspect_ratio": "9:16", "duration": 5, "seed": 7,
            "loop": true, "resolution": "720p"
        }}),
    )
    .await;
    assert_eq!(v["dialect"], "gengate");
    assert_eq!(v["kind"], "video");
    assert_eq!(v["model"], "ray-2");
    assert_eq!(v["input"]["prompt"], "a red fox");
    assert_eq!(v["input"]["aspect_ratio"], "9:16");
    assert_eq!(v["input"]["duration"], 5);
    assert_eq!(v["input"]["seed"], 7);
    assert_eq!(v["input"]["loop"], true);
    assert_eq!(v["input"]["resolution"], "720p");
    assert_eq!(v["input"]["images"], json!([]));
    assert_eq!(v["outputs"], json!([]));
    assert!(v["created_at"].as_str().unwrap().ends_with('Z'));

    // An image task with two outputs.
    let img = create(
        &gw,
        &key,
        json!({"model": "flux", "kind": "image", "input": {"prompt": "two cats", "n": 2, "aspect_ratio": "1:1"}}),
    )
    .await;
    let done = gw.wait_task(&key, &id(&img)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2, "{done}");
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o["role"], "image");
        assert_eq!(o["index"], i);
        assert_eq!(o["width"], o["height"], "1:1: {o}");
        let (s, ct, bytes) = gw.bytes(o["url"].as_str().unwrap()).await;
        assert_eq!(s, 200);
        assert_eq!(ct, o["content_type"].as_str().unwrap());
        assert!(!bytes.is_empty());
    }
    assert!(done["finished_at"].is_string());
    assert!(done["last_event_seq"].as_i64().unwrap() >= 3);

    let v = gw.wait_task(&key, &id(&v)).await;
    assert_eq!(v["state"], "completed", "{v}");
    let roles: Vec<&str> = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert!(
        roles.contains(&"video") && roles.contains(&"thumbnail"),
        "{v}"
    );
    assert_eq!(v["failure_reason"], Value::Null);

    // Batch get: in the order asked, unknown ids left out, duplicates once.
    let unknown = "0190a07c-7641-7809-a133-10786201bb57";
    let (status, b) = gw
        .post(
            "/v1/tasks/batch-get",
            &key,
            json!({"ids": [id(&img), unknown, id(&v), id(&img)]}),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["object"], "list");
    let got: Vec<String> = b["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(got, vec![id(&img), id(&v)]);
    // A second batch get (finished tasks now served rendered) says the same.
    let (_, again) = gw
        .post(
            "/v1/tasks/batch-get",
            &key,
            json!({"ids": [id(&img), id(&v)]}),
        )
        .await;
    assert_eq!(again["data"], b["data"]);

    // Everything is described in the OpenAPI document.
    let (_, doc) = gw.get("/openapi.json", &key).await;
    for path in [
        "/v1/tasks",
        "/v1/tasks/{id}",
        "/v1/tasks/batch-get",
        "/v1/tasks/{id}/cancel",
        "/v1/tasks/{id}/events",
        "/v1/models",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert!(doc["components"]["schemas"]["TaskInput"].is_object());
    gw.stop().await;
}

async fn bad_input_is_a_400_naming_the_field_and_stores_nothing(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("app").await;
    let cases = [
        (json!({"input": {"prompt": "a"}}), "model"),
        (json!({"model": "m", "kind": "image"}), "input"),
        (json!({"model": "m", "input": {"prompt": "a"}}), "kind"),
        (
            json!({"model": "m", "kind": "sound", "input": {"prompt": "a"}}),
            "kind",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {}}),
            "input.prompt",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a".repeat(5001)}}),
            "input.prompt",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "n": 10}}),
            "input.n",
        ),
        (
            json!({"model": "m", "kind": "video", "input": {"prompt": "a", "n": 2}}),
            "input.n",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "aspect_ratio": "wide"}}),
            "input.aspect_ratio",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "images": [{"url": "ftp://x/y.png"}]}}),
            "input.images[0].url",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "images": [{"url": "https://x.test/y.png", "role": "end"}]}}),
            "input.images[0].role",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "image_fidelity": 2}}),
            "input.image_fidelity",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "duration": 5}}),
            "input.duration",
        ),
        (
            json!({"model": "m", "kind": "video", "input": {"prompt": "a", "duration": 0}}),
            "input.duration",
        ),
        (
            json!({"model": "m", "kind": "video", "input": {"prompt": "a", "resolution": "8k"}}),
            "input.resolution",
        ),
        (
            json!({"model": "m", "kind": "video", "input": {"prompt": "a", "extend_from": "nope"}}),
            "input.extend_from",
        ),
        (
            json!({"model": "m", "kind": "video", "input": {"prompt": "a", "extend_from": "0190a07c-7641-7809-a133-10786201bb57"}}),
            "input.extend_from",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "seed": "x"}}),
            "input.seed",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a", "promt": "typo"}}),
            "promt",
        ),
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a"}, "callback_url": "nope"}),
            "callback_url",
        ),
        // Refused at once: gengate would have to call an internal address.
        (
            json!({"model": "m", "kind": "image", "input": {"prompt": "a"}, "callback_url": "http://169.254.169.254/x"}),
            "callback_url",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = gw.post("/v1/tasks", &key, body.clone()).await;
        assert_eq!(status, 400, "{body} answered {v}");
        let msg = error_message(400, &v);
        assert!(msg.contains(field), "{body}: {msg:?} does not name {field}");
    }
    // A header that breaks its rule.
    let resp = gw
        .http
        .post(format!("{}/v1/tasks", gw.base))
        .bearer_auth(&key)
        .header("idempotency-key", "k".repeat(256))
        .json(&video("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(error_message(400, &v).contains("Idempotency-Key"), "{v}");
    // Not JSON, no key, malformed.
    let (s, v) = gw
        .send(
            reqwest::Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(("text/plain", b"hi".to_vec())),
        )
        .await;
    assert_eq!(s, 415, "{v}");
    error_message(415, &v);
    let (s, v) = gw
        .send(
            reqwest::Method::POST,
            "/v1/tasks",
            Some(&key),
            Some(("application/json", b"{".to_vec())),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = gw.send(reqwest::Method::GET, "/v1/tasks", None, None).await;
    assert_eq!(s, 401, "{v}");
    error_message(401, &v);
    // Nothing was stored.
    let (s, list) = gw.get("/v1/tasks", &key).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"], json!([]), "{list}");

    // Lists, batch gets and events name their parameter too.
    for (q, field) in [
        ("state=done", "state"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
        ("created_after=yesterday", "created_after"),
    ] {
        let (s, v) = gw.get(&format!("/v1/tasks?{q}"), &key).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(error_message(400, &v).contains(field), "{q}: {v}");
    }
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    for (body, field) in [
        (json!({}), "ids"),
        (json!({"ids": []}), "ids"),
        (json!({"ids": many}), "ids"),
        (
            json!({"ids": [uuid::Uuid::now_v7().to_string(), "x"]}),
            "ids[1]",
        ),
    ] {
        let (s, v) = gw.post("/v1/tasks/batch-get", &key, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(error_message(400, &v).contains(field), "{body}: {v}");
    }
    let t = create(&gw, &key, video("a")).await;
    let resp = gw
        .http
        .get(format!("{}/v1/tasks/{}/events", gw.base, id(&t)))
        .bearer_auth(&key)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(error_message(400, &v).contains("Last-Event-ID"), "{v}");
    let (s, v) = gw.get("/v1/tasks/not-a-uuid", &key).await;
    assert_eq!(s, 404, "{v}");
    error_message(404, &v);
    gw.stop().await;
}

async fn keys_never_see_each_others_tasks(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (a, b) = (gw.new_key("a").await, gw.new_key("b").await);
    let t = create(&gw, &a, video("mine")).await;
    let tid = id(&t);
    let (s, v) = gw.get(&format!("/v1/tasks/{tid}"), &b).await;
    assert_eq!(s, 404, "{v}");
    assert!(error_message(404, &v).contains(&tid));
    let (s, v) = gw
        .post("/v1/tasks/batch-get", &b, json!({"ids": [tid]}))
        .await;
    assert_eq!((s, v["data"].clone()), (200, json!([])));
    let (_, v) = gw.get("/v1/tasks", &b).await;
    assert_eq!(v["data"], json!([]));
    let (s, _) = gw
        .post(&format!("/v1/tasks/{tid}/cancel"), &b, json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw.get(&format!("/v1/tasks/{tid}/events"), &b).await;
    assert_eq!(s, 404);
    // The owner sees it everywhere.
    let (s, _) = gw.get(&format!("/v1/tasks/{tid}"), &a).await;
    assert_eq!(s, 200);
    let (_, v) = gw.get("/v1/tasks", &a).await;
    assert_eq!(v["data"][0]["id"], tid.as_str());
    let (_, v) = gw
        .post("/v1/tasks/batch-get", &a, json!({"ids": [tid]}))
        .await;
    assert_eq!(v["data"][0]["id"], tid.as_str());
    gw.stop().await;
}

async fn post_idem(
    gw: &Gateway,
    key: &str,
    idem: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let resp = gw
        .http
        .post(format!("{}/v1/tasks", gw.base))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (status, replayed, resp.json().await.unwrap())
}

async fn inline_images_are_used_and_name_the_same_request(backend: Backend) {
    use base64::Engine as _;
    let gw = TestApp::on(backend).start().await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let tinted = |data: String| {
        json!({"model": "flux", "kind": "image", "input": {"prompt": "tinted", "aspect_ratio": "1:1",
               "images": [{"data": data}], "image_fidelity": 1.0}})
    };
    let inputs = || std::fs::read_dir(gw.dir.path().join("media/inputs")).map_or(0, |d| d.count());

    // Refused by name, nothing stored.
    for (bad, why) in [
        ("not base64!".to_string(), "base64"),
        ("R0lGODlhAQABAAAAACw=".to_string(), "png"),
    ] {
        let (status, v) = gw.post("/v1/tasks", &gw.admin, tinted(bad)).await;
        assert_eq!(status, 400, "{v}");
        let message = error_message(400, &v);
        assert!(
            message.contains("input.images[0].data") && message.contains(why),
            "{v}"
        );
    }
    assert_eq!(inputs(), 0);

    // Sent inline: stored once (never served), shown without a URL, used.
    let (s, _, first) = post_idem(&gw, &gw.admin, "pic", &tinted(b64.clone())).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["input"]["images"], json!([{"role": "reference"}]));
    assert_eq!(inputs(), 1);
    let done = gw.wait_task(&gw.admin, &id(&first)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let (_, _, picture) = gw.bytes(done["outputs"][0]["url"].as_str().unwrap()).await;
    let [r, g, _] = mean_rgb(&picture);
    assert!(r > g * 1.3, "the red reference shows: {r} {g}");

    // A retry carries the same bytes (here as a data URI): the same request.
    let (s, replayed, again) = post_idem(
        &gw,
        &gw.admin,
        "pic",
        &tinted(format!("data:image/png;base64,{b64}")),
    )
    .await;
    assert_eq!((s, replayed.as_deref()), (200, Some("true")), "{again}");
    assert_eq!(again["id"], first["id"]);
    // Another picture under the same key is another request.
    let other = base64::engine::general_purpose::STANDARD.encode(&picture);
    let (s, _, v) = post_idem(&gw, &gw.admin, "pic", &tinted(other)).await;
    assert_eq!(s, 409, "{v}");
    gw.stop().await;
}

async fn idempotency_keys_answer_the_first_task(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let (a, b) = (gw.new_key("a").await, gw.new_key("b").await);
    let body = video("once");
    let (s, replayed, first) = post_idem(&gw, &a, "order-1", &body).await;
    assert_eq!((s, replayed), (201, None), "{first}");
    // The same request (keys in another order) answers the first task.
    let same = json!({"input": {"prompt": "once"}, "kind": "video", "model": "ray-2"});
    let (s, replayed, again) = post_idem(&gw, &a, "order-1", &same).await;
    assert_eq!((s, replayed.as_deref()), (200, Some("true")), "{again}");
    assert_eq!(again["id"], first["id"]);
    // A different request under the same key is a conflict naming the header.
    let (s, _, v) = post_idem(&gw, &a, "order-1", &video("twice")).await;
    assert_eq!(s, 409, "{v}");
    assert!(error_message(409, &v).contains("Idempotency-Key"), "{v}");
    // Another key string, or another API key, is another task.
    let (s, _, other) = post_idem(&gw, &a, "order-2", &body).await;
    assert_eq!(s, 201);
    assert_ne!(other["id"], first["id"]);
    let (s, _, theirs) = post_idem(&gw, &b, "order-1", &body).await;
    assert_eq!(s, 201, "{theirs}");
    assert_ne!(theirs["id"], first["id"]);
    // Concurrent first uses: one task, the others answer it.
    let results =
        futures::future::join_all((0..8).map(|_| post_idem(&gw, &a, "burst", &body))).await;
    let ids: HashSet<String> = results.iter().map(|(_, _, v)| id(v)).collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| r.0 == 201).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|r| r.0 == 201 || r.0 == 200));
    // Three tasks for key a (order-1, order-2, burst), however often asked.
    let (_, list) = gw.get("/v1/tasks?limit=100", &a).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    gw.stop().await;
}

/// Hundreds of sandbox videos rendered at once: alone, or a timed test
/// beside it starves (a 1.5 s task took over 60 s).
mod alone {
    use super::cursor_pages_skip_and_repeat_nothing_under_concurrent_inserts;
    on_both_backends!(alone: cursor_pages_skip_and_repeat_nothing_under_concurrent_inserts);
}

/// (created_at, id) of a listed task, for checking the order.
fn position(v: &Value) -> (String, String) {
    (v["created_at"].as_str().unwrap().into(), id(v))
}

async fn cursor_pages_skip_and_repeat_nothing_under_concurrent_inserts(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("pager").await;
    let mut before = HashSet::new();
    for chunk in 0..6 {
        let made = futures::future::join_all(
            (0..50).map(|i| create(&gw, &key, video(&format!("t{chunk}-{i}")))),
        )
        .await;
        before.extend(made.iter().map(id));
    }
    assert_eq!(before.len(), 300);
    // Insert more while paging.
    let inserting = {
        let (http, base, key) = (gw.http.clone(), gw.base.clone(), key.clone());
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..60 {
                let v = json_of(
                    http.post(format!("{base}/v1/tasks"))
                        .bearer_auth(&key)
                        .json(&video(&format!("late-{i}"))),
                )
                .await;
                made.push(id(&v));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            made
        })
    };
    let (mut seen, mut order, mut cursor, mut pages) = (Vec::new(), Vec::new(), None::<String>, 0);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=23&cursor={c}"),
            None => "/v1/tasks?limit=23".to_string(),
        };
        let (s, page) = gw.get(&path, &key).await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 23);
        seen.extend(data.iter().map(id));
        order.extend(data.iter().map(position));
        assert_eq!(page["has_more"], page["next_cursor"].is_string());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let late = inserting.await.unwrap();
    assert!(pages >= 14, "{pages} pages");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a task was listed twice");
    for t in &before {
        assert!(unique.contains(t), "task {t} was skipped");
    }
    // Anything else listed is one of the tasks inserted meanwhile.
    let late: HashSet<String> = late.into_iter().collect();
    assert!(seen.iter().all(|t| before.contains(t) || late.contains(t)));
    // Newest first.
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        order.iter().map(|p| &p.0).collect::<Vec<_>>(),
        sorted.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    gw.stop().await;
}

async fn list_filters_apply(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("f").await;
    let first = create(&gw, &key, video("old")).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = first["created_at"].as_str().unwrap().to_string();
    let other = create(
        &gw,
        &key,
        json!({"model": "other-model", "kind": "image", "input": {"prompt": "x"}}),
    )
    .await;
    let newer = create(&gw, &key, video("new")).await;
    let (_, v) = gw.get("/v1/tasks?model=other-model", &key).await;
    let ids: Vec<String> = v["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![id(&other)]);
    let (_, v) = gw
        .get(&format!("/v1/tasks?created_after={cutoff}"), &key)
        .await;
    let ids: Vec<String> = v["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, vec![id(&newer), id(&other)]);
    gw.wait_task(&key, &id(&other)).await;
    let (_, v) = gw
        .get("/v1/tasks?state=completed&model=other-model", &key)
        .await;
    assert_eq!(v["data"][0]["id"], id(&other).as_str(), "{v}");
    let (_, v) = gw.get("/v1/tasks?state=canceled", &key).await;
    assert_eq!(v["data"], json!([]));
    gw.stop().await;
}

async fn cancel_stops_unfinished_tasks_and_refuses_finished_ones(backend: Backend) {
    let gw = TestApp::on(backend).sandbox_latency_ms(1500).start().await;
    let key = gw.new_key("c").await;
    // At once (pending, or just taken) and once at the upstream.
    let early = create(&gw, &key, video("early")).await;
    let (s, v) = gw
        .post(&format!("/v1/tasks/{}/cancel", id(&early)), &key, json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "canceled");
    assert!(v["failure_reason"].as_str().unwrap().contains("canceled"));
    let running = create(&gw, &key, video("running")).await;
    gw.wait_state(&key, &id(&running), "processing").await;
    let (s, v) = gw
        .post(
            &format!("/v1/tasks/{}/cancel", id(&running)),
            &key,
            json!({}),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("canceled")), "{v}");
    // A task run to its end cannot be canceled.
    let done = create(&gw, &key, video("done")).await;
    let done = gw.wait_task(&key, &id(&done)).await;
    assert_eq!(done["state"], "completed");
    let (s, v) = gw
        .post(&format!("/v1/tasks/{}/cancel", id(&done)), &key, json!({}))
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(error_message(409, &v).contains("completed"));
    // Canceled is final: the upstream's late result does not revive them,
    // and a second cancel is a 409.
    for t in [&early, &running] {
        let (_, v) = gw.get(&format!("/v1/tasks/{}", id(t)), &key).await;
        assert_eq!(v["state"], "canceled", "{v}");
        assert_eq!(v["outputs"], json!([]));
        let (s, _) = gw
            .post(&format!("/v1/tasks/{}/cancel", id(t)), &key, json!({}))
            .await;
        assert_eq!(s, 409);
    }
    gw.stop().await;
}

/// Task `tid`'s whole event stream, resumed after `last` (header) or by
/// `query`.
async fn stream(gw: &Gateway, key: &str, tid: &str, last: Option<&str>, query: &str) -> Vec<Event> {
    let mut req = gw
        .http
        .get(format!("{}/v1/tasks/{tid}/events{query}", gw.base))
        .bearer_auth(key);
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    // The body ends after the terminal event: reading it all returns.
    EventStream::open(req).await.all(TASK_WAIT).await
}

async fn events_stream_live_and_resume_after_last_event_id(backend: Backend) {
    let gw = TestApp::on(backend).sandbox_latency_ms(500).start().await;
    let key = gw.new_key("sse").await;
    let t = create(&gw, &key, video("streamed")).await;
    let tid = id(&t);
    // Opened while the task runs: every event, live, ending with the terminal one.
    let all = stream(&gw, &key, &tid, None, "").await;
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{all:?}");
    assert_eq!(all[0].state, "pending");
    let last = all.last().unwrap();
    assert_eq!(last.state, "completed", "{all:?}");
    assert!(all.iter().any(|e| e.state == "processing"));
    for Event {
        seq, state, data, ..
    } in &all
    {
        assert_eq!(data["seq"], *seq);
        assert_eq!(data["state"], state.as_str());
        assert_eq!(data["task_id"], tid.as_str());
        assert_eq!(data["task"]["state"], state.as_str());
    }
    assert_eq!(last.data["task"]["outputs"][0]["role"], "video");
    // Resumed after the first event: the rest, and the end.
    let rest = stream(&gw, &key, &tid, Some("1"), "").await;
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[1..].to_vec()
    );
    // The same by query parameter, for clients that cannot set headers.
    let rest = stream(&gw, &key, &tid, None, "?last_event_id=2").await;
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[2..].to_vec()
    );
    // After the terminal event: nothing more, and the stream ends.
    let none = stream(&gw, &key, &tid, Some(&last.seq.to_string()), "").await;
    assert!(none.is_empty(), "{none:?}");
    // A canceled task's stream ends with its cancel.
    let c = create(&gw, &key, video("to cancel")).await;
    let (s, _) = gw
        .post(&format!("/v1/tasks/{}/cancel", id(&c)), &key, json!({}))
        .await;
    assert_eq!(s, 200);
    let evs = stream(&gw, &key, &id(&c), None, "").await;
    assert_eq!(evs.last().unwrap().state, "canceled", "{evs:?}");
    gw.stop().await;
}

async fn other_dialects_tasks_show_here_but_not_the_reverse(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let key = gw.new_key("mixed").await;
    let (s, luma) = gw
        .post(
            "/luma/generations",
            &key,
            json!({"user_prompt": "from luma"}),
        )
        .await;
    assert_eq!(s, 201, "{luma}");
    let lid = id(&luma);
    let (s, v) = gw.get(&format!("/v1/tasks/{lid}"), &key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["dialect"], "luma");
    assert_eq!(v["kind"], "video");
    assert_eq!(v["input"]["prompt"], "from luma");
    let (s, kling) = gw
        .post(
            "/kling/v1/images/generations",
            &key,
            json!({"prompt": "from kling", "external_task_id": "k-1"}),
        )
        .await;
    assert_eq!(s, 200, "{kling}");
    let kid = kling["data"]["task_id"].as_str().unwrap().to_string();
    let (_, v) = gw.get(&format!("/v1/tasks/{kid}"), &key).await;
    assert_eq!(
        (v["dialect"].as_str(), v["external_id"].as_str()),
        (Some("kling"), Some("k-1"))
    );

    let mine = create(&gw, &key, video("from v1")).await;
    let mid = id(&mine);
    let (_, list) = gw.get("/v1/tasks", &key).await;
    let listed: Vec<String> = list["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(listed, vec![mid.clone(), kid.clone(), lid.clone()]);
    let (_, b) = gw
        .post("/v1/tasks/batch-get", &key, json!({"ids": [lid, mid, kid]}))
        .await;
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    // The other dialects keep showing only their own.
    let (s, _) = gw.get(&format!("/luma/generations/{mid}"), &key).await;
    assert_eq!(s, 404);
    let (s, v) = gw.post("/luma/tasks", &key, json!({"ids": [mid]})).await;
    assert_eq!((s, v), (200, json!([])));
    let (s, _) = gw
        .get(&format!("/kling/v1/images/generations/{mid}"), &key)
        .await;
    assert_eq!(s, 404);
    // An idempotency key never reaches Kling's external ids.
    let (s, _, _) = post_idem(&gw, &key, "k-1", &video("idem")).await;
    assert_eq!(s, 201);
    gw.stop().await;
}

async fn models_lists_what_the_channels_serve(backend: Backend) {
    let gw = TestApp::on(backend)
        .channel(sandbox_channel("sb", &["ray-2", "flux"], 100))
        .channel(ChannelSpec {
            base_url: Some("http://127.0.0.1:9".into()),
            models: BTreeMap::from([
                ("dall-e-3".to_string(), "dall-e-3".to_string()),
                ("flux".to_string(), "flux-dev".to_string()),
            ]),
            ..ChannelSpec::new("oi", ProviderKind::OpenaiImages)
        })
        .channel(ChannelSpec {
            enabled: false,
            ..sandbox_channel("off", &["hidden"], 100)
        })
        .start()
        .await;
    let key = gw.new_key("m").await;
    let (s, v) = gw.get("/v1/models", &key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["any_model"], false);
    let data = v["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["dall-e-3", "flux", "ray-2"], "{v}");
    for m in data {
        assert_eq!(m["object"], "model");
        assert!(m["created"].is_i64());
        assert!(m["owned_by"].is_string());
    }
    assert_eq!(data[0]["kinds"], json!(["image"]));
    assert_eq!(data[2]["kinds"], json!(["image", "video"]));
    let video_inputs = data[2]["inputs"]["video"].as_array().unwrap();
    assert!(video_inputs.contains(&json!("duration")));
    assert!(data[0]["inputs"]["video"].is_null());
    assert!(
        data[0]["inputs"]["image"]
            .as_array()
            .unwrap()
            .contains(&json!("prompt"))
    );
    let (s, _) = gw
        .send(reqwest::Method::GET, "/v1/models", None, None)
        .await;
    assert_eq!(s, 401);

    // The catalogue decides a task that names no kind, and refuses unknown models.
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "dall-e-3", "input": {"prompt": "x"}}),
        )
        .await;
    assert_eq!((s, v["kind"].as_str()), (201, Some("image")), "{v}");
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "ray-2", "input": {"prompt": "x"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_message(400, &v).contains("kind"));
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "hidden", "kind": "image", "input": {"prompt": "x"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_message(400, &v).starts_with("model"), "{v}");
    gw.stop().await;
}

/// Waits for the emulated Replicate to have been asked to cancel `n` jobs.
async fn upstream_cancels(replicate: &ReplicateEmu, n: u64, what: &str) {
    poll_until(
        what,
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || match replicate.cancels() {
            c if c >= n => Ok(()),
            c => Err(format!("{c} cancels")),
        },
    )
    .await;
}

async fn cancel_and_delete_ask_the_upstream_to_stop(backend: Backend) {
    let token = "r8_cancel_test";
    let replicate = ReplicateEmu::start(token, Duration::from_secs(60)).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            credentials: gengate_core::Credentials {
                api_key: Some(token.into()),
                ..Default::default()
            },
            ..channel_on(
                &replicate,
                "replicate",
                ProviderKind::Replicate,
                &[
                    ("still", gengate_testkit::replicate::IMAGE_MODEL),
                    ("clip", gengate_testkit::replicate::VIDEO_MODEL),
                ],
            )
        })
        .start()
        .await;
    let key = gw.new_key("c").await;
    let task = create(
        &gw,
        &key,
        json!({"model": "still", "kind": "image", "input": {"prompt": "a fox"}}),
    )
    .await;
    gw.wait_state(&key, &id(&task), "processing").await;
    assert_eq!(replicate.submits(), 1);
    let (s, v) = gw
        .post(&format!("/v1/tasks/{}/cancel", id(&task)), &key, json!({}))
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("canceled")), "{v}");
    upstream_cancels(&replicate, 1, "the upstream asked to cancel").await;
    // Luma's DELETE of a running generation cancels it upstream as well.
    let (s, g) = gw
        .post(
            "/dream-machine/v1/generations/video",
            &key,
            json!({"model": "clip", "prompt": "a long clip"}),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_string();
    gw.wait_state(&key, &gid, "processing").await;
    let (s, _) = gw
        .send(
            reqwest::Method::DELETE,
            &format!("/dream-machine/v1/generations/{gid}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(s, 204);
    upstream_cancels(&replicate, 2, "the deleted generation canceled upstream").await;
    assert_eq!(replicate.spec_violations(), 0);
    gw.stop().await;
}

async fn callbacks_post_the_task_object_signed_on_each_change(backend: Backend) {
    let rx = gengate_testkit::receiver::Receiver::start().await;
    let gw = TestApp::on(backend).sandbox_latency_ms(200).start().await;
    let key = gw.new_key("c").await;
    let mut body = video("called back");
    body["callback_url"] = rx.url("/hook").into();
    let task = create(&gw, &key, body).await;
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    let secret = gw
        .key_record(&key)
        .await
        .webhook_secret
        .expect("a signing secret");
    let wh = standardwebhooks::Webhook::new(&secret).unwrap();
    let states: Vec<String> = got
        .iter()
        .map(|r| {
            wh.verify(&r.body, &r.headers)
                .expect("signed with the key's secret");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                (v["object"].as_str(), v["id"].as_str()),
                (Some("task"), Some(id(&task).as_str())),
                "{v}"
            );
            assert_eq!(v["dialect"], "gengate");
            v["state"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(states, ["pending", "processing", "completed"]);
    let last: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(last["outputs"][0]["role"], "video", "{last}");
    gw.stop().await;
}
