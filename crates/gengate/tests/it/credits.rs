//! Credits end to end: prices charged at accept in every dialect, refused
//! in each dialect's own envelope with nothing stored, refunded once when a
//! task ends without its result, limits per key, prices changed over the
//! admin API, and the usage report.

use std::collections::BTreeMap;

use std::collections::HashMap;
use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, channel_on, poll_until, sandbox_channel};
use gengate_core::credits::EntryKind;
use gengate_core::{ChannelSpec, Credentials, Dialect, KeyLimits, Price, ProviderKind, TaskState};
use gengate_testkit::luma::LumaEmu;
use gengate_testkit::openai_images::OpenAiImagesEmu;
use serde_json::{Value, json};

on_both_backends!(
    each_dialect_refuses_a_spent_key_in_its_own_envelope,
    tasks_are_charged_their_price_and_refunded_when_nothing_comes,
    a_price_changed_after_accept_leaves_accepted_tasks_alone,
    limits_per_key_refuse_in_flight_spend_and_models,
    fewer_images_than_charged_are_refunded_the_difference,
    usage_reports_tasks_and_credits_by_model_and_as_csv,
);

mod alone {
    use super::ends_racing_each_other_refund_each_task_once;
    on_both_backends!(alone: ends_racing_each_other_refund_each_task_once);
}

/// 1 per task, 2 per image, 3 per second of video (5 at 1080p), for
/// every model.
fn price_list() -> Vec<Price> {
    vec![Price {
        model: "*".into(),
        per_task: 1,
        per_image: 2,
        per_video_second: BTreeMap::from([("*".into(), 3), ("1080p".into(), 5)]),
    }]
}

/// A gengate with `price_list`, the sandbox serving every model (at a
/// cost to the operator of 1 per task), and a sandbox channel whose every
/// job fails serving `doomed`.
async fn priced(backend: Backend) -> Gateway {
    let cost = Price {
        model: "*".into(),
        per_task: 1,
        ..Price::default()
    };
    TestApp::on(backend)
        .with(|s| s.prices = price_list())
        .channel(ChannelSpec {
            cost: vec![cost],
            ..sandbox_channel("sandbox", &["*"], 50)
        })
        .channel(ChannelSpec {
            failure_rate: Some(1.0),
            priority: 10,
            ..sandbox_channel("broken", &["doomed"], 20)
        })
        .start()
        .await
}

async fn balance(gw: &Gateway, key: &str) -> i64 {
    gw.key_record(key).await.balance
}

/// Every key's balance equals the sum of its ledger entries.
async fn ledger_holds(gw: &Gateway) {
    for t in gw.store().ledger_totals().await.unwrap() {
        assert_eq!(t.balance, t.entries, "{t:?}");
    }
}

async fn each_dialect_refuses_a_spent_key_in_its_own_envelope(backend: Backend) {
    let gw = priced(backend).await;
    // 2 credits: every create below costs at least 3.
    let key = gw.new_key_with("spent", 2).await;
    let cases = [
        ("/luma/generations", json!({"user_prompt": "x"}), 402),
        (
            "/dream-machine/v1/generations/image",
            json!({"model": "photon-1", "prompt": "x"}),
            402,
        ),
        (
            "/v1/tasks",
            json!({"model": "ray-2", "kind": "video", "input": {"prompt": "x"}}),
            402,
        ),
        ("/kling/v1/images/generations", json!({"prompt": "x"}), 429),
        ("/v1/images/generations", json!({"prompt": "x"}), 429),
    ];
    for (path, body, status) in cases {
        let (s, v) = gw.post(path, &key, body).await;
        assert_eq!(s, status, "{path}: {v}");
        let message = match path {
            "/kling/v1/images/generations" => {
                assert_eq!(v["code"], 1102, "Kling's balance code: {v}");
                assert!(v["data"].is_null(), "{v}");
                &v["message"]
            }
            "/v1/images/generations" => {
                assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                &v["error"]["message"]
            }
            "/v1/tasks" => {
                assert_eq!(v["error"]["status"], 402, "{v}");
                &v["error"]["message"]
            }
            _ => &v["detail"],
        };
        let message = message.as_str().unwrap_or_default();
        assert!(
            message.contains("insufficient credits") && message.contains("balance is 2"),
            "{path}: {v}"
        );
    }
    for dialect in Dialect::ALL {
        assert_eq!(gw.task_count(&key, dialect).await, 0, "{dialect:?}");
    }
    assert_eq!(balance(&gw, &key).await, 2);
    let record = gw.key_record(&key).await;
    assert_eq!(gw.store().ledger(record.id, 10).await.unwrap().len(), 1);
    // Luma's /credits shows the real balance.
    let (s, v) = gw.get("/dream-machine/v1/credits", &key).await;
    assert_eq!(
        (s, v["credit_balance"].as_f64(), &v["unlimited"]),
        (200, Some(2.0), &json!(false))
    );
    gw.stop().await;
}

async fn tasks_are_charged_their_price_and_refunded_when_nothing_comes(backend: Backend) {
    let gw = priced(backend).await;
    let key = gw.new_key_with("buyer", 1000).await;

    // Kling, three images: 1 + 3 × 2.
    let (s, v) = gw
        .post(
            "/kling/v1/images/generations",
            &key,
            json!({"prompt": "x", "n": 3}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["final_unit_deduction"], "7", "{v}");
    let kling = v["data"]["task_id"].as_str().unwrap().to_string();
    // Dream Machine, 9 s at 1080p: 1 + 9 × 5.
    let (s, v) = gw
        .post(
            "/dream-machine/v1/generations/video",
            &key,
            json!({"model": "ray-2", "prompt": "x", "duration": "9s", "resolution": "1080p"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let dream = v["id"].as_str().unwrap().to_string();
    // gengate's own API, 5 s at 720p: 1 + 5 × 3; and one bound to fail.
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "ray-2", "kind": "video", "input": {"prompt": "x", "duration": 5, "resolution": "720p"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["credits"],
        json!({"charged": 16, "refunded": 0, "net": 16})
    );
    let video = v["id"].as_str().unwrap().to_string();
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "doomed", "kind": "image", "input": {"prompt": "x", "n": 2}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let doomed = v["id"].as_str().unwrap().to_string();
    assert_eq!(balance(&gw, &key).await, 1000 - 7 - 46 - 16 - 5);

    assert_eq!(gw.wait_kling(&key, &kling).await["task_status"], "succeed");
    for id in [&dream, &video] {
        assert_eq!(gw.wait_task(&key, id).await["state"], "completed");
    }
    let failed = gw.wait_task(&key, &doomed).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(
        failed["credits"],
        json!({"charged": 5, "refunded": 5, "net": 0})
    );
    // What completed is paid; what failed came back, once.
    assert_eq!(balance(&gw, &key).await, 1000 - 7 - 46 - 16);
    let (_, v) = gw.get(&format!("/v1/tasks/{dream}"), &key).await;
    assert_eq!(
        v["credits"],
        json!({"charged": 46, "refunded": 0, "net": 46})
    );
    let record = gw.key_record(&key).await;
    let entries = gw.store().ledger(record.id, 100).await.unwrap();
    let refunds: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Refund)
        .map(|e| (e.task_id.unwrap().to_string(), e.amount))
        .collect();
    assert_eq!(refunds, [(doomed.clone(), 5)]);
    // Canceling a pending task refunds it too.
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "ray-2", "kind": "video", "input": {"prompt": "never"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = gw
        .post(&format!("/v1/tasks/{id}/cancel"), &key, json!({}))
        .await;
    if v["state"] == "canceled" {
        assert_eq!((s, &v["credits"]["net"]), (200, &json!(0)), "{v}");
    }
    gw.wait_task(&key, &id).await;
    let t = gw.task(&id).await;
    assert_eq!(
        t.net_charge(),
        if t.state == gengate_core::TaskState::Completed {
            16
        } else {
            0
        }
    );
    ledger_holds(&gw).await;
    gw.stop().await;
}

async fn a_price_changed_after_accept_leaves_accepted_tasks_alone(backend: Backend) {
    let gw = TestApp::on(backend)
        .channel(sandbox_channel("sandbox", &["*"], 400))
        .start()
        .await;
    let key = gw.new_key_with("buyer", 100).await;
    let put = |body: Value| {
        gw.send_json(
            reqwest::Method::PUT,
            "/admin/prices/photon-1",
            &gw.admin,
            body,
        )
    };
    let image = || {
        let body = json!({"model": "photon-1", "prompt": "x"});
        gw.post("/dream-machine/v1/generations/image", &key, body)
    };
    let (s, v) = put(json!({"per_image": 4})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["source"], "api");
    let (s, v) = image().await;
    assert_eq!(s, 201, "{v}");
    let first = v["id"].as_str().unwrap().to_string();
    // Dearer now: the task accepted before keeps its price.
    let (s, _) = put(json!({"per_image": 40})).await;
    assert_eq!(s, 200);
    gw.wait_task(&key, &first).await;
    assert_eq!(gw.task(&first).await.net_charge(), 4);
    assert_eq!(balance(&gw, &key).await, 96);
    let (s, v) = image().await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(balance(&gw, &key).await, 56);

    // Bad prices are refused naming the field; nothing changes.
    for (body, field) in [
        (json!({"per_image": -1}), "per_image"),
        (json!({"per_task": 1.5}), "per_task"),
        (
            json!({"per_video_second": {"720p": -2}}),
            "per_video_second",
        ),
        (json!({"per_video_second": {"": 2}}), "per_video_second"),
        (json!({"per_second": 1}), "per_second"),
    ] {
        let (s, v) = put(body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let (s, v) = gw.get("/admin/prices", &gw.admin).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["per_image"], 40, "{v}");
    // Only admins set prices; a price removed makes the model free again.
    let delete = |key: &str| {
        let (gw, key) = (&gw, key.to_string());
        async move {
            let path = "/admin/prices/photon-1";
            gw.send(reqwest::Method::DELETE, path, Some(&key), None)
                .await
                .0
        }
    };
    assert_eq!(delete(&key).await, 403);
    assert_eq!(delete(&gw.admin).await, 204);
    assert_eq!(delete(&gw.admin).await, 404);
    let (s, v) = image().await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(balance(&gw, &key).await, 56);
    gw.stop().await;
}

/// An upstream that answers fewer images than asked (as content filters
/// do): the task completes with what came, and the key gets back the
/// price of the rest, once. Through OpenAI's synchronous create.
async fn fewer_images_than_charged_are_refunded_the_difference(backend: Backend) {
    const OPENAI_KEY: &str = "sk-partial";
    let openai = OpenAiImagesEmu::start(Some(OPENAI_KEY.into()), Duration::from_millis(20)).await;
    openai.answer_at_most(1);
    let gw = TestApp::on(backend)
        .with(|s| s.prices = price_list())
        .channel(ChannelSpec {
            credentials: Credentials {
                api_key: Some(OPENAI_KEY.into()),
                ..Credentials::default()
            },
            ..channel_on(
                &openai,
                "openai",
                ProviderKind::OpenaiImages,
                &[("dall-e-2", "dall-e-2")],
            )
        })
        .start()
        .await;
    let key = gw.new_key_with("buyer", 100).await;
    let r = gw
        .http
        .post(format!("{}/v1/images/generations", gw.base))
        .bearer_auth(&key)
        .json(&json!({"model": "dall-e-2", "prompt": "three foxes", "n": 3, "size": "256x256"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1, "{v}");
    let (_, list) = gw.get("/v1/tasks", &key).await;
    let task = list["data"][0]["id"]
        .as_str()
        .expect("the task")
        .to_string();
    // 1 + 3 × 2 charged; two images did not come: 4 back.
    let t = gw.task(&task).await;
    assert_eq!((t.charge.total(), t.refunded, t.net_charge()), (7, 4, 3));
    assert_eq!(balance(&gw, &key).await, 97);
    let (_, v) = gw.get(&format!("/v1/tasks/{task}"), &key).await;
    assert_eq!(v["credits"], json!({"charged": 7, "refunded": 4, "net": 3}));
    ledger_holds(&gw).await;
    gw.stop().await;
}

async fn limits_per_key_refuse_in_flight_spend_and_models(backend: Backend) {
    let gw = TestApp::on(backend)
        .with(|s| s.prices = price_list())
        .channel(sandbox_channel("sandbox", &["*"], 1500))
        .start()
        .await;
    let key = gw.new_key_with("limited", 1000).await;
    let mut record = gw.key_record(&key).await;
    record.limits = KeyLimits {
        max_in_flight: Some(2),
        models: Some(vec!["kling-image".into(), "ray-2".into()]),
        ..KeyLimits::default()
    };
    assert!(gw.store().save_key_settings(&record).await.unwrap());
    // Key lookups are remembered for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let kling = |prompt: &str| json!({"prompt": prompt});
    for i in 0..2 {
        let (s, v) = gw
            .post("/kling/v1/images/generations", &key, kling(&format!("{i}")))
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = gw
        .post("/kling/v1/images/generations", &key, kling("third"))
        .await;
    assert_eq!((s, &v["code"]), (429, &json!(1303)), "{v}");
    let (s, v) = gw
        .post("/luma/generations", &key, json!({"user_prompt": "third"}))
        .await;
    assert_eq!(s, 429, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("in flight"), "{v}");
    // A model the key may not use: 400 naming the dialect's model field.
    let (s, v) = gw
        .post(
            "/dream-machine/v1/generations/image",
            &key,
            json!({"model": "photon-1", "prompt": "x"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().starts_with("model:"), "{v}");
    assert_eq!(gw.task_count(&key, Dialect::DreamMachine).await, 0);
    assert_eq!(balance(&gw, &key).await, 1000 - 2 * 3);

    // A daily cap of 5: one image task (3) fits, a second does not.
    let mut record = gw.key_record(&key).await;
    record.limits = KeyLimits {
        daily_spend: Some(8),
        ..KeyLimits::default()
    };
    assert!(gw.store().save_key_settings(&record).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, v) = gw
        .post("/kling/v1/images/generations", &key, kling("over"))
        .await;
    assert_eq!((s, &v["code"]), (429, &json!(1102)), "{v}");
    let (s, v) = gw
        .post(
            "/v1/tasks",
            &key,
            json!({"model": "kling-image", "kind": "image", "input": {"prompt": "x"}}),
        )
        .await;
    assert_eq!(s, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily spend"),
        "{v}"
    );
    ledger_holds(&gw).await;
    gw.stop().await;
}

async fn usage_reports_tasks_and_credits_by_model_and_as_csv(backend: Backend) {
    let gw = priced(backend).await;
    let (a, b) = (
        gw.new_key_with("a", 100).await,
        gw.new_key_with("b", 100).await,
    );
    let mut ids = Vec::new();
    for (key, model) in [(&a, "ray-2"), (&a, "doomed"), (&b, "ray-2")] {
        let body = json!({"model": model, "kind": "image", "input": {"prompt": "x"}});
        let (s, v) = gw.post("/v1/tasks", key, body).await;
        assert_eq!(s, 201, "{v}");
        ids.push((key.clone(), v["id"].as_str().unwrap().to_string()));
    }
    for (key, id) in &ids {
        gw.wait_task(key, id).await;
    }
    let (s, v) = gw.get("/v1/usage?group_by=model", &a).await;
    assert_eq!(s, 200, "{v}");
    let a_id = gw.key_record(&a).await.id.to_string();
    assert_eq!(v["key"], a_id);
    let lines: Vec<_> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["group"].as_str().unwrap().to_string(),
                l["tasks"]["completed"].as_u64().unwrap(),
                l["tasks"]["failed"].as_u64().unwrap(),
                l["credits"]["net"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("doomed".to_string(), 0, 1, 0),
            ("ray-2".to_string(), 1, 0, 3)
        ]
    );
    // A key sees only its own; an admin sees everyone's, or one key's.
    let (s, _) = gw
        .get(&format!("/v1/usage?key={}", gw.key_record(&b).await.id), &a)
        .await;
    assert_eq!(s, 403);
    let (s, v) = gw.get("/v1/usage?group_by=channel", &gw.admin).await;
    assert_eq!(s, 200, "{v}");
    let total: u64 = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["tasks"]["total"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3, "{v}");
    let (s, v) = gw.get(&format!("/v1/usage?key={a_id}"), &gw.admin).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["tasks"]["total"], 2, "{v}");
    // API requests per day: a key's three calls (refused ones not counted),
    // recorded within seconds.
    let c = gw.new_key_with("c", 0).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/v1/tasks", &c).await.0, 200);
    }
    assert_eq!(gw.get("/v1/tasks", "gg_not_a_key").await.0, 401);
    let c_id = gw.key_record(&c).await.id;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    poll_until(
        "c's requests in the report",
        Duration::from_secs(20),
        Duration::from_millis(500),
        async || {
            let (_, v) = gw.get(&format!("/v1/usage?key={c_id}"), &gw.admin).await;
            (v["requests"] == json!([{"day": today, "requests": 3}]))
                .then_some(())
                .ok_or_else(|| v.to_string())
        },
    )
    .await;
    // CSV on asking.
    let r = gw
        .http
        .get(format!("{}/v1/usage?group_by=model", gw.base))
        .bearer_auth(&a)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "group,tasks,completed,failed,canceled,open,charged,refunded,net,upstream_cost,margin",
            "doomed,1,0,1,0,0,3,3,0,0,0",
            "ray-2,1,1,0,0,0,3,0,3,1,2",
        ]
    );
    // Bad queries name the parameter.
    for (q, field) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("key=x", "key"),
    ] {
        let (s, v) = gw.get(&format!("/v1/usage?{q}"), &a).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with(field),
            "{q}: {v}"
        );
    }
    gw.stop().await;
}

/// Hundreds of tasks whose ends race: jobs (half of them failing) and
/// upstream callbacks finishing just as the deadline passes and as the
/// client cancels. Whoever wins each task, its key is refunded once.
async fn ends_racing_each_other_refund_each_task_once(backend: Backend) {
    const LUMA_KEY: &str = "luma-race-key";
    let run_for = Duration::from_millis(900);
    let luma = LumaEmu::start(LUMA_KEY, run_for).await;
    let gw = TestApp::on(backend)
        .with(|s| {
            s.prices = price_list();
            s.image_deadline_secs = 1;
            s.video_deadline_secs = 1;
        })
        .channel(ChannelSpec {
            failure_rate: Some(0.5),
            ..sandbox_channel("sandbox", &["racy"], 900)
        })
        .channel(ChannelSpec {
            callbacks: true,
            credentials: Credentials {
                api_key: Some(LUMA_KEY.into()),
                ..Credentials::default()
            },
            ..channel_on(&luma, "luma", ProviderKind::Luma, &[("ray-2", "ray-2")])
        })
        .start()
        .await;
    let start = 1_000_000;
    let key = gw.new_key_with("racer", start).await;
    // Every other task is canceled: one in ten at once (so some surely are),
    // the rest 850 ms after it was made, as its job, callback and deadline land.
    let mut ids = Vec::new();
    let mut cancels = Vec::new();
    for i in 0..200 {
        let (s, v) = if i % 4 == 0 {
            gw.post(
                "/luma/generations",
                &key,
                json!({"user_prompt": format!("{i}")}),
            )
            .await
        } else {
            let body = json!({"model": "racy", "kind": "image", "input": {"prompt": format!("{i}"), "n": 2}});
            gw.post("/v1/tasks", &key, body).await
        };
        assert!(s == 200 || s == 201, "{v}");
        let id = v["id"].as_str().unwrap().to_string();
        if i % 2 == 1 {
            let after = Duration::from_millis(if i % 10 == 1 { 0 } else { 850 });
            let (http, url) = (gw.http.clone(), format!("{}/v1/tasks/{id}/cancel", gw.base));
            let key = key.clone();
            cancels.push(tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let r = http.post(url).bearer_auth(key).send().await.unwrap();
                r.status().as_u16()
            }));
        }
        ids.push(id);
    }
    for c in cancels {
        let s = c.await.unwrap();
        assert!(s == 200 || s == 409, "cancel answered {s}");
    }
    poll_until(
        "every task ended",
        Duration::from_secs(60),
        Duration::from_millis(200),
        async || match gw.store().open_task_count().await.unwrap() {
            0 => Ok(()),
            n => Err(format!("{n} open")),
        },
    )
    .await;

    let record = gw.key_record(&key).await;
    let entries = gw.store().ledger(record.id, 10_000).await.unwrap();
    let mut per_task: HashMap<_, Vec<EntryKind>> = HashMap::new();
    for e in &entries {
        if let Some(t) = e.task_id {
            per_task.entry(t).or_default().push(e.kind);
        }
    }
    let (mut paid, mut outcomes) = (0, HashMap::new());
    for id in &ids {
        let t = gw.task(id).await;
        *outcomes.entry(t.state).or_insert(0) += 1;
        let kinds = &per_task[&t.id];
        let refunds = kinds.iter().filter(|k| **k == EntryKind::Refund).count();
        match t.state {
            TaskState::Completed => {
                assert_eq!((refunds, t.refunded), (0, 0), "{id} completed: {kinds:?}");
            }
            _ => assert_eq!(
                (refunds, t.refunded),
                (1, t.charge.total()),
                "{id} {:?}: {kinds:?}",
                t.state
            ),
        }
        paid += t.net_charge();
    }
    // Each way to end happened, so the race was run.
    for state in [TaskState::Completed, TaskState::Failed, TaskState::Canceled] {
        assert!(
            outcomes.get(&state).copied().unwrap_or(0) > 0,
            "{outcomes:?}"
        );
    }
    assert_eq!(balance(&gw, &key).await, start - paid, "{outcomes:?}");
    ledger_holds(&gw).await;
    gw.stop().await;
}
