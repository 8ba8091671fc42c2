//! Real upstreams through channels: gengate sending Kling-dialect tasks to
//! the emulated Kling API, routing by priority, failing over, and turning
//! each upstream error class into what a client can act on.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, channel_on, mean_rgb};
use gengate_core::{ChannelSpec, Credentials, ProviderKind};
use gengate_testkit::kling::color_for;
use gengate_testkit::{Fault, KlingAccount, KlingEmu};
use serde_json::json;

const ACCESS: &str = "ak-emulated";
const SECRET: &str = "sk-emulated-secret-never-shown";

fn keys() -> KlingAccount {
    KlingAccount::Keys {
        access_key: ACCESS.into(),
        secret_key: SECRET.into(),
    }
}

fn kling_channel(name: &str, emu: &KlingEmu, priority: i32) -> ChannelSpec {
    ChannelSpec {
        credentials: Credentials {
            access_key: Some(ACCESS.into()),
            secret_key: Some(SECRET.into()),
            ..Credentials::default()
        },
        priority,
        ..channel_on(
            emu,
            name,
            ProviderKind::Kling,
            &[("kling-image", "kling-v1-5")],
        )
    }
}

/// An emulated Kling with jobs of `run_for`, a gateway whose one channel
/// is it, and a client key.
async fn one_kling_channel(backend: Backend, run_for: Duration) -> (KlingEmu, Gateway, String) {
    let emu = KlingEmu::start(keys(), run_for).await;
    let gw = TestApp::on(backend)
        .channel(kling_channel("kling-a", &emu, 0))
        .start()
        .await;
    let key = gw.new_key("client").await;
    (emu, gw, key)
}

async fn submit(gw: &Gateway, key: &str, prompt: &str, n: u32) -> String {
    let (status, v) = gw
        .post(
            "/kling/v1/images/generations",
            key,
            json!({"prompt": prompt, "n": n, "aspect_ratio": "1:1"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["task_id"]
        .as_str()
        .expect("a task id")
        .to_string()
}

/// `count` one-image tasks prompted `{prefix} {i}`, submitted in turn.
async fn submit_many(gw: &Gateway, key: &str, prefix: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        ids.push(submit(gw, key, &format!("{prefix} {i}"), 1).await);
    }
    ids
}

async fn kling_channel_completes_tasks_with_mirrored_results(backend: Backend) {
    let (emu, gw, key) = one_kling_channel(backend, Duration::from_millis(300)).await;
    let id = submit(&gw, &key, "a red fox", 2).await;
    let done = gw.wait_kling(&key, &id).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    let images = done["task_result"]["images"].as_array().expect("images");
    assert_eq!(images.len(), 2);
    for (i, img) in images.iter().enumerate() {
        let url = img["url"].as_str().expect("a url");
        assert!(
            url.starts_with(&gw.base),
            "served by gengate, not the upstream: {url}"
        );
        let (status, ctype, bytes) = gw.bytes(url).await;
        assert_eq!((status, ctype.as_str()), (200, "image/png"));
        let decoded = image::load_from_memory(&bytes).expect("a PNG");
        assert_eq!((decoded.width(), decoded.height()), (256, 256));
        let want = color_for("a red fox", u32::try_from(i).unwrap());
        let got = mean_rgb(&bytes);
        for c in 0..3 {
            assert!(
                (got[c] - f64::from(want[c])).abs() < 1.0,
                "image {i}: {got:?} vs {want:?}"
            );
        }
    }
    // One upstream task, tagged with gengate's id, signed with the keys.
    assert_eq!(emu.tasks_by_external_id().get(&id), Some(&1));
    assert_eq!(emu.submits(), 1);
    let task = gw.task(&id).await;
    assert_eq!(task.channel.as_deref(), Some("kling-a"));
    gw.stop().await;
}

async fn failing_channel_hands_tasks_to_the_next(backend: Backend) {
    let primary = KlingEmu::start(keys(), Duration::from_millis(200)).await;
    let secondary = KlingEmu::start(keys(), Duration::from_millis(200)).await;
    for _ in 0..10 {
        primary.inject(Fault::Error {
            status: 500,
            code: 5000,
            retry_after: None,
        });
    }
    let gw = TestApp::on(backend)
        .channel(kling_channel("primary", &primary, 10))
        .channel(kling_channel("secondary", &secondary, 0))
        .start()
        .await;
    let key = gw.new_key("client").await;
    let ids = submit_many(&gw, &key, "task", 4).await;
    for id in &ids {
        let done = gw.wait_kling(&key, id).await;
        assert_eq!(done["task_status"], "succeed", "{done}");
        let task = gw.task(id).await;
        assert_eq!(task.channel.as_deref(), Some("secondary"));
    }
    assert_eq!(primary.submits(), 0, "the failing channel made nothing");
    assert_eq!(secondary.submits(), 4, "each task submitted once");
    // Operators see it on /metrics: the failures, the cooling, the successes.
    let (status, _, body) = gw.bytes(&format!("{}/metrics", gw.base)).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(body).unwrap();
    let value = |name: &str, labels: &[&str]| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && labels.iter().all(|p| l.contains(p)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{metrics}"))
    };
    let requests = "gengate_upstream_requests_total";
    let failed = [
        r#"channel="primary""#,
        r#"op="submit""#,
        r#"outcome="retryable""#,
    ];
    assert!(value(requests, &failed) >= 3.0);
    let ok = [
        r#"channel="secondary""#,
        r#"op="submit""#,
        r#"outcome="ok""#,
    ];
    assert!(value(requests, &ok) >= 4.0);
    assert_eq!(
        value("gengate_channel_cooling", &[r#"channel="primary""#]),
        1.0
    );
    // And on the admin API (the console's channels page): cooling, the last
    // minute's requests and errors, what was learned, nothing in flight.
    let (status, list) = gw.get("/admin/channels", &gw.admin).await;
    assert_eq!(status, 200, "{list}");
    let health = |name: &str| {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["health"].clone())
            .unwrap_or_else(|| panic!("{name} in {list}"))
    };
    let (p, s) = (health("primary"), health("secondary"));
    assert_eq!(p["cooling"], true, "{p}");
    assert!(
        p["cool_remaining_secs"].as_u64().is_some_and(|n| n > 0),
        "{p}"
    );
    assert!(p["consecutive_failures"].as_u64() >= Some(3), "{p}");
    assert_eq!(p["requests_last_minute"], p["errors_last_minute"], "{p}");
    assert_eq!(s["cooling"], false, "{s}");
    assert!(s["requests_last_minute"].as_u64() >= Some(4), "{s}");
    assert_eq!(s["errors_last_minute"], 0, "{s}");
    assert_eq!(s["in_flight"], 0, "{s}");
    assert!(
        s["learned_seconds"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "{s}"
    );
    gw.stop().await;
}

/// An upstream down the whole time while tasks keep coming: after a few
/// failures it cools down and is left alone, every task is served by the
/// next channel, and the dead one sees a handful of requests, not one (or
/// five retries) per task.
async fn a_down_upstream_gets_a_trickle_not_a_storm(backend: Backend) {
    let dead = KlingEmu::start(keys(), Duration::from_millis(200)).await;
    dead.set_down(true);
    let alive = KlingEmu::start(keys(), Duration::from_millis(200)).await;
    let gw = TestApp::on(backend)
        .channel(kling_channel("dead", &dead, 10))
        .channel(kling_channel("alive", &alive, 0))
        .start()
        .await;
    let key = gw.new_key("client").await;
    let mut ids = Vec::new();
    for wave in 0..6 {
        ids.extend(submit_many(&gw, &key, &format!("wave {wave}"), 10).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for id in &ids {
        let done = gw.wait_kling(&key, id).await;
        assert_eq!(done["task_status"], "succeed", "{done}");
    }
    assert_eq!(alive.submits(), 60, "each task submitted once, elsewhere");
    let probes = dead.refused_while_down();
    assert!(
        (3..=12).contains(&probes),
        "{probes} requests to the dead upstream for 60 tasks"
    );
    gw.stop().await;
}

async fn upstream_errors_become_reasons_a_client_can_act_on(backend: Backend) {
    let (emu, gw, key) = one_kling_channel(backend, Duration::from_millis(200)).await;

    // Content policy: permanent, the task fails at once with Kling's word.
    emu.inject(Fault::Error {
        status: 400,
        code: 1301,
        retry_after: None,
    });
    let refused = submit(&gw, &key, "refused", 1).await;
    let done = gw.wait_kling(&key, &refused).await;
    assert_eq!(done["task_status"], "failed");
    let msg = done["task_status_msg"].as_str().unwrap();
    assert!(msg.contains("1301"), "{msg}");

    // A rate limit and a malformed answer: retried, then completed, once.
    emu.inject(Fault::Error {
        status: 429,
        code: 1302,
        retry_after: Some(1),
    });
    emu.inject(Fault::Malformed);
    let retried = submit(&gw, &key, "retried", 1).await;
    let done = gw.wait_kling(&key, &retried).await;
    assert_eq!(done["task_status"], "succeed", "{done}");
    assert_eq!(emu.tasks_by_external_id().get(&retried), Some(&1));

    // The upstream fails the task itself.
    let failed = submit(&gw, &key, "please FAIL", 1).await;
    let done = gw.wait_kling(&key, &failed).await;
    assert_eq!(done["task_status"], "failed");
    assert_eq!(done["task_status_msg"], "kling: emulated failure");
    // Through /v1/tasks (and the console): the upstream failed it, in its words.
    let (_, v) = gw.get(&format!("/v1/tasks/{failed}"), &key).await;
    assert_eq!(v["upstream_error"], "kling: emulated failure", "{v}");
    gw.stop().await;
}

async fn refused_credentials_fail_without_showing_them(backend: Backend) {
    let emu = KlingEmu::start(
        KlingAccount::Keys {
            access_key: ACCESS.into(),
            secret_key: "a-different-secret".into(),
        },
        Duration::from_millis(200),
    )
    .await;
    let gw = TestApp::on(backend)
        .channel(kling_channel("kling-a", &emu, 0))
        .with(|s| s.max_attempts = 2)
        .start()
        .await;
    let key = gw.new_key("client").await;
    let id = submit(&gw, &key, "a cat", 1).await;
    let done = gw.wait_kling(&key, &id).await;
    assert_eq!(done["task_status"], "failed");
    let msg = done["task_status_msg"].as_str().unwrap();
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains(SECRET) && !msg.contains(ACCESS), "{msg}");
    assert_eq!(emu.submits(), 0);
    // gengate gave up on the channel: not the upstream's failure of the task.
    let (_, v) = gw.get(&format!("/v1/tasks/{id}"), &key).await;
    assert_eq!(
        (v["state"].as_str(), v.get("upstream_error")),
        (Some("failed"), None),
        "{v}"
    );
    gw.stop().await;
}

async fn a_model_no_channel_serves_is_refused_at_submit(backend: Backend) {
    let (emu, gw, key) = one_kling_channel(backend, Duration::from_millis(200)).await;
    let (status, v) = gw
        .post("/luma/generations", &key, json!({"user_prompt": "a wave"}))
        .await;
    assert_eq!(status, 400, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.starts_with("model_name"), "{detail}");
    assert!(
        detail.contains("no channel serves model \"ray-2\""),
        "{detail}"
    );
    let (status, v) = gw
        .post(
            "/kling/v1/images/generations",
            &key,
            json!({"prompt": "a cat", "model": "kling-v9"}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], 1201);
    assert!(v["message"].as_str().unwrap().starts_with("model"), "{v}");
    // Nothing was stored for either.
    assert_eq!(gw.task_count(&key, gengate_core::Dialect::Luma).await, 0);
    assert_eq!(gw.task_count(&key, gengate_core::Dialect::Kling).await, 0);
    assert_eq!(emu.submits(), 0);
    gw.stop().await;
}

async fn polls_learn_how_long_jobs_take(backend: Backend) {
    let (emu, gw, key) = one_kling_channel(backend, Duration::from_secs(2)).await;
    // Cold: nothing known, so polls start after a second and back off.
    let first = submit(&gw, &key, "cold", 1).await;
    gw.wait_kling(&key, &first).await;
    let cold_polls = emu.polls();
    // Learned: first polls land near the 2 s the channel's jobs take.
    let polls_before = emu.polls();
    let ids = submit_many(&gw, &key, "warm", 8).await;
    for id in &ids {
        let done = gw.wait_kling(&key, id).await;
        assert_eq!(done["task_status"], "succeed");
    }
    let per_task = (emu.polls() - polls_before) as f64 / ids.len() as f64;
    eprintln!("polls: {cold_polls} for the first task, {per_task} per task after");
    assert!(
        per_task <= 3.0,
        "{per_task} polls per task once learned ({cold_polls} for the first)"
    );
    gw.stop().await;
}

async fn channel_limits_hold_tasks_back_without_failing_them(backend: Backend) {
    let full = KlingEmu::start(keys(), Duration::from_millis(600)).await;
    let paced = KlingEmu::start(keys(), Duration::from_millis(100)).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            max_in_flight: Some(2),
            models: BTreeMap::from([("kling-image".into(), "kling-v1".into())]),
            ..kling_channel("two-at-a-time", &full, 0)
        })
        .channel(ChannelSpec {
            rate_limit_per_sec: Some(2.0),
            models: BTreeMap::from([("paced".into(), "kling-v1".into())]),
            ..kling_channel("two-per-second", &paced, 0)
        })
        // Waiting for room must not spend attempts.
        .with(|s| s.max_attempts = 1)
        .start()
        .await;
    let key = gw.new_key("client").await;
    let mut ids = submit_many(&gw, &key, "full", 6).await;
    for i in 0..6 {
        let (status, v) = gw
            .post(
                "/kling/v1/images/generations",
                &key,
                json!({"prompt": format!("paced {i}"), "model": "paced"}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        ids.push(v["data"]["task_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let done = gw.wait_kling(&key, id).await;
        assert_eq!(done["task_status"], "succeed", "{done}");
    }
    assert_eq!(full.submits(), 6);
    assert!(full.max_running() <= 2, "{} at once", full.max_running());
    // Two per second with a burst of two: six submits span at least 1.5 s.
    let times = paced.submit_times();
    assert_eq!(times.len(), 6);
    let span = times[5].duration_since(times[0]);
    assert!(span >= Duration::from_millis(1400), "{span:?}");
    gw.stop().await;
}

async fn a_channel_deadline_fails_tasks_that_run_past_it(backend: Backend) {
    let emu = KlingEmu::start(keys(), Duration::from_millis(200)).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            deadline_secs: BTreeMap::from([("kling-image".into(), 2)]),
            ..kling_channel("kling-a", &emu, 0)
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let stuck = submit(&gw, &key, "NEVER done", 1).await;
    let fine = submit(&gw, &key, "done soon", 1).await;
    let done = gw.wait_kling(&key, &stuck).await;
    assert_eq!(done["task_status"], "failed");
    assert_eq!(done["task_status_msg"], "timeout");
    let took = done["updated_at"].as_i64().unwrap() - done["created_at"].as_i64().unwrap();
    assert!(
        (2_000..30_000).contains(&took),
        "failed {took} ms after submit"
    );
    assert_eq!(gw.wait_kling(&key, &fine).await["task_status"], "succeed");
    gw.stop().await;
}

async fn requests_to_a_slow_channel_are_bounded(backend: Backend) {
    let emu = KlingEmu::start(keys(), Duration::from_millis(300)).await;
    emu.set_latency(Duration::from_millis(100));
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            max_concurrent_requests: Some(3),
            ..kling_channel("kling-a", &emu, 0)
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let ids = submit_many(&gw, &key, "slow", 12).await;
    for id in &ids {
        assert_eq!(gw.wait_kling(&key, id).await["task_status"], "succeed");
    }
    let most = emu.max_concurrent_requests();
    assert!((1..=3).contains(&most), "{most} requests at once");
    gw.stop().await;
}

async fn upstream_callbacks_bring_results_without_polls(backend: Backend) {
    let emu = KlingEmu::start(keys(), Duration::from_millis(600)).await;
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            callbacks: true,
            ..kling_channel("kling-a", &emu, 0)
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let ids = [
        submit(&gw, &key, "a red fox", 1).await,
        submit(&gw, &key, "a grey owl", 1).await,
        submit(&gw, &key, "FAIL at this", 1).await,
    ];
    for id in &ids[..2] {
        assert_eq!(gw.wait_kling(&key, id).await["task_status"], "succeed");
    }
    let failed = gw.wait_kling(&key, &ids[2]).await;
    assert_eq!(failed["task_status"], "failed", "{failed}");
    assert!(
        failed["task_status_msg"]
            .as_str()
            .unwrap()
            .contains("emulated failure"),
        "{failed}"
    );
    // Told by callbacks (processing, then the end), never asked.
    assert_eq!(emu.polls(), 0, "the upstream was polled");
    assert_eq!(emu.callbacks(), 6);

    let http = reqwest::Client::new();
    let url = emu.callback_url(&ids[0]).expect("a callback URL was given");
    assert!(
        url.starts_with(&format!(
            "{}/upstream/callbacks/kling-a/{}?token=",
            gw.base, ids[0]
        )),
        "{url}"
    );
    let about_other = emu.task_view(&ids[1]).unwrap();
    let post = |url: String, body: serde_json::Value| {
        let http = http.clone();
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // A real URL carrying news of another upstream job is refused.
    assert_eq!(post(url.clone(), about_other.clone()).await, 400);
    // A guessed token, a token moved to another task, an unknown task.
    let forged = format!(
        "{}/upstream/callbacks/kling-a/{}?token={}",
        gw.base,
        ids[1],
        "0".repeat(32)
    );
    assert_eq!(post(forged, about_other.clone()).await, 401);
    let moved = url.replace(&ids[0], &ids[1]);
    assert_eq!(post(moved, about_other.clone()).await, 401);
    let no_token = format!("{}/upstream/callbacks/kling-a/{}", gw.base, ids[1]);
    assert_eq!(post(no_token, about_other).await, 401);
    // The genuine callback again changes nothing (the task is done).
    let genuine = emu.task_view(&ids[0]).unwrap();
    assert_eq!(post(url, genuine).await, 204);
    assert_eq!(gw.wait_kling(&key, &ids[0]).await["task_status"], "succeed");
    gw.stop().await;
}

/// An upstream that calls back before its answer to the submit reaches
/// gengate: the news waits for the submit to be recorded and is applied,
/// instead of being refused and left to a poll minutes later.
async fn callbacks_arriving_before_the_submit_is_recorded_are_applied(backend: Backend) {
    let emu = KlingEmu::start(keys(), Duration::from_millis(300)).await;
    emu.delay_create_answers(Duration::from_millis(1200));
    let gw = TestApp::on(backend)
        .channel(ChannelSpec {
            callbacks: true,
            ..kling_channel("kling-a", &emu, 0)
        })
        .start()
        .await;
    let key = gw.new_key("client").await;
    let id = submit(&gw, &key, "an eager upstream", 1).await;
    let started = std::time::Instant::now();
    assert_eq!(gw.wait_kling(&key, &id).await["task_status"], "succeed");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        emu.polls(),
        0,
        "the result came by a poll, not the callback"
    );
    assert_eq!(emu.callbacks(), 2);
    gw.stop().await;
}

on_both_backends!(
    callbacks_arriving_before_the_submit_is_recorded_are_applied,
    requests_to_a_slow_channel_are_bounded,
    upstream_callbacks_bring_results_without_polls,
    a_channel_deadline_fails_tasks_that_run_past_it,
    channel_limits_hold_tasks_back_without_failing_them,
    polls_learn_how_long_jobs_take,
    kling_channel_completes_tasks_with_mirrored_results,
    failing_channel_hands_tasks_to_the_next,
    a_down_upstream_gets_a_trickle_not_a_storm,
    upstream_errors_become_reasons_a_client_can_act_on,
    refused_credentials_fail_without_showing_them,
    a_model_no_channel_serves_is_refused_at_submit,
);
