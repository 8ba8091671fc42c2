//! Callbacks as a receiver sees them: every state change, in order, signed
//! per Standard Webhooks, retried on the (compressed) schedule, stopped by
//! 410, and never sent to an address the policy refuses.

use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, poll_until};
use gengate_core::DeliveryState;
use gengate_testkit::{Received, Receiver, Reply};
use serde_json::{Value, json};

on_both_backends!(
    a_tasks_whole_life_arrives_in_order_and_signed,
    failed_attempts_are_retried_with_the_same_webhook_id,
    gone_stops_deliveries_to_that_url,
    retry_after_is_honoured,
    internal_addresses_are_refused_at_submit_and_at_delivery,
    a_rotated_secret_signs_beside_the_old_one,
    owners_list_deliveries_and_ask_for_redelivery,
    a_receiver_that_comes_back_gets_its_callbacks,
    a_slow_receiver_does_not_hold_back_others,
);

const WAIT: Duration = Duration::from_secs(30);
/// How often what no event announces (a recorded delivery) is looked at.
const POLL: Duration = Duration::from_millis(50);

/// Fast schedule for tests: the real one is hours long.
fn quick(s: &mut gengate::config::Settings) {
    s.callback_retry_schedule = "0ms,100ms,200ms,300ms".into();
}

fn verify(secret: &str, r: &Received) -> Value {
    let wh = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?}"));
    serde_json::from_slice(&r.body).expect("a JSON body")
}

/// `POST /luma/generations` as the admin, calling back to `callback_url`.
async fn generate(gw: &Gateway, prompt: impl Into<Value>, callback_url: &str) -> (u16, Value) {
    let body = json!({"user_prompt": prompt.into(), "callback_url": callback_url});
    gw.post("/luma/generations", &gw.admin, body).await
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn a_tasks_whole_life_arrives_in_order_and_signed(backend: Backend) {
    let rx = Receiver::start().await;
    let gw = TestApp::on(backend).with(quick).start().await;
    let secret = gw
        .key_record(&gw.admin)
        .await
        .webhook_secret
        .expect("a secret");

    let (s, v) = generate(&gw, "signed", &rx.url("/luma")).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = gw
        .post(
            "/kling/v1/images/generations",
            &gw.admin,
            json!({"prompt": "signed", "callback_url": rx.url("/kling"), "external_task_id": "cb-1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let got = rx.wait_for(6, WAIT).await;
    assert_eq!(got.len(), 6, "three events each: {got:?}");

    let luma: Vec<Value> = got
        .iter()
        .filter(|r| r.path == "/luma")
        .map(|r| verify(&secret, r))
        .collect();
    let states: Vec<&str> = luma.iter().map(|b| b["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["pending", "processing", "completed"]);
    assert!(
        luma[0]["video"].is_null(),
        "an early event shows the task as it was then"
    );
    assert!(luma[2]["video"]["url"].as_str().is_some());

    let kling: Vec<Value> = got
        .iter()
        .filter(|r| r.path == "/kling")
        .map(|r| verify(&secret, r))
        .collect();
    let states: Vec<&str> = kling
        .iter()
        .map(|b| b["task_status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["submitted", "processing", "succeed"]);
    assert_eq!(kling[2]["task_info"]["external_task_id"], "cb-1");
    assert_eq!(
        kling[2]["task_result"]["images"].as_array().unwrap().len(),
        1
    );

    let ids: std::collections::HashSet<&str> =
        got.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(ids.len(), 6, "one webhook-id per event");
    gw.stop().await;
}

async fn failed_attempts_are_retried_with_the_same_webhook_id(backend: Backend) {
    let rx = Receiver::start().await;
    rx.script([Reply::status(500), Reply::status(500)]);
    let gw = TestApp::on(backend)
        .with(quick)
        .sandbox_latency_ms(60_000) // only the first event matters here
        .start()
        .await;
    let (_, v) = generate(&gw, "retry", &rx.url("/")).await;
    let id: uuid::Uuid = v["id"].as_str().unwrap().parse().unwrap();
    let got = rx.wait_for(4, WAIT).await;
    // pending: 500, 500, 200; then processing: 200.
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200, 200]);
    let first = header(&got[0], "webhook-id");
    assert!(
        got[..3].iter().all(|r| header(r, "webhook-id") == first),
        "same id on every retry"
    );
    assert_ne!(header(&got[3], "webhook-id"), first);

    // Every attempt is recorded.
    let deliveries = gw.store().task_deliveries(id).await.unwrap();
    let (d, attempts) = &deliveries[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    let recorded: Vec<Option<u16>> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(recorded, [Some(500), Some(500), Some(200)]);
    assert!(attempts[0].next_attempt_at.is_some() && attempts[2].next_attempt_at.is_none());
    gw.stop().await;
}

async fn gone_stops_deliveries_to_that_url(backend: Backend) {
    let rx = Receiver::start().await;
    rx.script([Reply::status(410)]);
    let gw = TestApp::on(backend).with(quick).start().await;
    let (_, v) = generate(&gw, "gone", &rx.url("/")).await;
    let id = v["id"].as_str().unwrap().to_string();
    gw.wait_luma(&gw.admin, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 1, "nothing after the 410");
    let deliveries = gw
        .store()
        .task_deliveries(id.parse().unwrap())
        .await
        .unwrap();
    assert!(!deliveries.is_empty());
    assert!(
        deliveries
            .iter()
            .all(|(d, _)| d.state == DeliveryState::Gone),
        "{deliveries:?}"
    );
    gw.stop().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let rx = Receiver::start().await;
    rx.script([Reply {
        retry_after_secs: Some(1),
        ..Reply::status(429)
    }]);
    let gw = TestApp::on(backend)
        .with(quick)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    generate(&gw, "later", &rx.url("/")).await;
    let got = rx.wait_for(2, WAIT).await;
    // The pending event twice, then (maybe already) the processing event.
    assert_eq!(
        got[..2].iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    let gap = got[1].at.duration_since(got[0].at);
    // The schedule says 100 ms; the receiver asked for a second.
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    gw.stop().await;
}

async fn internal_addresses_are_refused_at_submit_and_at_delivery(backend: Backend) {
    let allowed = Receiver::start_on("127.0.0.2").await;
    let refused = Receiver::start().await; // 127.0.0.1
    let gw = TestApp::on(backend)
        .with(quick)
        .with(|s| s.allow_network = vec!["127.0.0.2/32".into()])
        .start()
        .await;
    let port = refused.addr.port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        "http://[::1]:9/".into(),
    ] {
        let (s, v) = generate(&gw, "x", &url).await;
        assert_eq!(s, 400, "{url}: {v}");
        assert!(
            v["detail"].as_str().unwrap().starts_with("callback_url"),
            "{v}"
        );
        let (s, v) = gw
            .post(
                "/kling/v1/images/generations",
                &gw.admin,
                json!({"prompt": "x", "image": url}),
            )
            .await;
        assert_eq!(s, 400, "{url}: {v}");
        assert!(v["message"].as_str().unwrap().starts_with("image"), "{v}");
    }
    assert_eq!(
        gw.task_count(&gw.admin, gengate_core::Dialect::Luma).await,
        0
    );

    // An allowed address is fine.
    let (s, _) = generate(&gw, "x", &allowed.url("/")).await;
    assert_eq!(s, 201);
    assert!(!allowed.wait_for(1, WAIT).await.is_empty());

    // A URL that was accepted but is internal when it is sent to (as after
    // DNS rebinding) is refused then, and the refusal recorded.
    let key = gw.key_record(&gw.admin).await;
    let new = gengate_core::NewTask {
        callback_url: Some(refused.url("/")),
        ..gengate_core::dialect::luma::parse_create(br#"{"user_prompt":"rebound"}"#).unwrap()
    };
    let now = gengate_engine::now_ms();
    let task = gw
        .store()
        .create_task(
            key.id,
            &new,
            now,
            now + 60_000,
            &gengate_core::Admission::FREE,
        )
        .await
        .unwrap();
    let (d, attempts) = poll_until("an attempt recorded", WAIT, POLL, async || {
        match gw
            .store()
            .task_deliveries(task.id)
            .await
            .unwrap()
            .into_iter()
            .next()
        {
            // The delivery and its attempts are read one after the other:
            // wait until both show the attempt.
            Some((d, a)) if !a.is_empty() && d.last_error.is_some() => Ok((d, a)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let error = attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("refused"), "{error}");
    assert!(d.last_error.unwrap().contains("refused"));
    assert!(
        refused.received().is_empty(),
        "nothing reached the refused address"
    );
    gw.stop().await;
}

async fn a_rotated_secret_signs_beside_the_old_one(backend: Backend) {
    let rx = Receiver::start().await;
    let gw = TestApp::on(backend)
        .with(quick)
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let key = gw.key_record(&gw.admin).await;
    let old = key.webhook_secret.clone().unwrap();
    let new = gengate_engine::webhooks::signing::new_secret();
    let until = gengate_engine::now_ms() + 24 * 3600 * 1000;
    assert!(
        gw.store()
            .rotate_webhook_secret(key.id, &new, until)
            .await
            .unwrap()
    );
    generate(&gw, "rotated", &rx.url("/")).await;
    let got = rx.wait_for(1, WAIT).await;
    let sig = header(&got[0], "webhook-signature");
    assert_eq!(
        sig.split(' ').count(),
        2,
        "two signatures during the overlap: {sig}"
    );
    // A receiver with either secret accepts it.
    verify(&old, &got[0]);
    verify(&new, &got[0]);
    gw.stop().await;
}

async fn owners_list_deliveries_and_ask_for_redelivery(backend: Backend) {
    let rx = Receiver::start().await;
    let gw = TestApp::on(backend).with(quick).start().await;
    let other = gw.new_key("other").await;
    let (_, v) = generate(&gw, "listed", &rx.url("/")).await;
    let id = v["id"].as_str().unwrap().to_string();
    gw.wait_luma(&gw.admin, &id).await;
    rx.wait_for(3, WAIT).await;
    let path = format!("/v1/tasks/{id}/deliveries");
    let list = poll_until(
        "every delivery recorded delivered",
        WAIT,
        POLL,
        async || {
            let (s, list) = gw.get(&path, &gw.admin).await;
            assert_eq!(s, 200, "{list}");
            let data = list["data"].as_array().unwrap();
            if data.iter().all(|d| d["state"] == "delivered") {
                Ok(list)
            } else {
                Err(list.to_string())
            }
        },
    )
    .await;
    let data = list["data"].as_array().unwrap();
    let events: Vec<&str> = data.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["pending", "processing", "completed"]);
    assert_eq!(data[0]["attempts"][0]["status"], 200);
    assert!(data[0]["attempts"][0]["latency_ms"].as_i64().is_some());

    // Redelivery sends the same event again, under the same webhook-id.
    let first = data[0]["id"].as_str().unwrap();
    let (s, v) = gw
        .post(&format!("{path}/{first}/redeliver"), &gw.admin, json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["webhook_id"], data[0]["webhook_id"]);
    let got = rx.wait_for(4, WAIT).await;
    assert_eq!(
        header(&got[3], "webhook-id"),
        data[0]["webhook_id"].as_str().unwrap()
    );

    // Another key learns nothing.
    let (s, v) = gw.get(&path, &other).await;
    assert_eq!(s, 404, "{v}");
    assert!(v["error"]["message"].as_str().is_some());
    let (s, _) = gw
        .post(&format!("{path}/{first}/redeliver"), &other, json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .post(
            &format!("{path}/{}/redeliver", uuid::Uuid::now_v7()),
            &gw.admin,
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    gw.stop().await;
}

async fn a_receiver_that_comes_back_gets_its_callbacks(backend: Backend) {
    let mut rx = Receiver::start().await;
    rx.down();
    let gw = TestApp::on(backend)
        .with(|s| s.callback_retry_schedule = "0ms,400ms,800ms,1s,2s,4s".into())
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    let (_, v) = generate(&gw, "patient", &rx.url("/")).await;
    let id: uuid::Uuid = v["id"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    rx.up().await;
    let got = rx.wait_for(1, WAIT).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["state"], "pending");
    // The receiver has the callback before the attempt that sent it is
    // recorded.
    let attempts = poll_until("the delivering attempt recorded", WAIT, POLL, async || {
        let deliveries = gw.store().task_deliveries(id).await.unwrap();
        let (_, attempts) = deliveries.into_iter().next().expect("a delivery");
        if attempts.iter().any(|a| a.status.is_some()) {
            Ok(attempts)
        } else {
            Err(format!("{attempts:?}"))
        }
    })
    .await;
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(
        attempts[0].status.is_none() && attempts[0].error.is_some(),
        "{attempts:?}"
    );
    gw.stop().await;
}

async fn a_slow_receiver_does_not_hold_back_others(backend: Backend) {
    let slow = Receiver::start_on("127.0.0.2").await;
    slow.otherwise(Reply {
        delay: Duration::from_secs(3),
        ..Reply::status(200)
    });
    let healthy = Receiver::start().await;
    let gw = TestApp::on(backend)
        .with(quick)
        .with(|s| s.allow_network.push("127.0.0.2/32".into()))
        .sandbox_latency_ms(60_000)
        .start()
        .await;
    for i in 0..12 {
        generate(&gw, format!("slow {i}"), &slow.url("/")).await;
    }
    slow.wait_for(1, WAIT).await;
    generate(&gw, "quick", &healthy.url("/")).await;
    let got = healthy.wait_for(1, WAIT).await;
    let first_slow = slow.received()[0].at;
    assert!(
        got[0].at < first_slow + Duration::from_secs(3),
        "the healthy receiver waited for the slow one"
    );
    gw.stop().await;
}
