//! The real binary: first start, key commands, and restarts after SIGKILL
//! and SIGTERM with tasks in flight. Nothing accepted is ever lost.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::procs::{ADMIN, Place, cli, post, serve};
use crate::harness::{Backend, events, poll_until};
use gengate_testkit::fixtures::json_of;
use gengate_testkit::{Receiver, Reply};

on_both_backends!(
    first_start_makes_one_admin_key_and_keys_are_managed_from_the_cli,
    the_cli_credits_keys_shows_their_ledger_and_verifies_it,
    the_cli_sets_prices_and_reports_usage,
    a_killed_gengate_finishes_every_accepted_task_after_restart,
    api_and_worker_instances_split_the_work,
    a_callback_waiting_to_be_retried_survives_a_kill,
);

async fn first_start_makes_one_admin_key_and_keys_are_managed_from_the_cli(backend: Backend) {
    let place = Place::new(backend).await;
    let mut p = serve(&place, &[]).await;
    assert!(p.stdout.iter().any(|l| l == ADMIN), "{:?}", p.stdout);
    let http = reqwest::Client::new();

    let (ok, out, err) = cli(&place, &["keys", "create", "--name", "app"]).await;
    assert!(ok, "{err}");
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("gg_") && key.len() > 40, "{out}");
    // Any authenticated request does: a batch get of an unknown id.
    let batch_get = async |key: &str| {
        let body = json!({"ids": [uuid::Uuid::now_v7()]});
        post(&http, format!("{}/luma/tasks", p.base), key, body).await
    };
    assert_eq!(batch_get(&key).await.0, 200);

    let (ok, out, _) = cli(&place, &["keys", "create", "--name", "script", "--json"]).await;
    assert!(ok);
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["name"], "script");
    assert!(j["key"].as_str().unwrap().starts_with("gg_"));

    let (ok, out, _) = cli(&place, &["keys", "list", "--json"]).await;
    assert!(ok);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["admin", "app", "script"]);
    assert!(!out.contains(&key), "secrets are never listed");
    let app_id = list[1]["id"].as_str().unwrap().to_string();

    let (ok, out, err) = cli(&place, &["keys", "rotate-secret", &app_id]).await;
    assert!(ok, "{err}");
    assert!(out.lines().last().unwrap().starts_with("whsec_"), "{out}");
    let (ok, _, _) = cli(&place, &["keys", "revoke", &app_id]).await;
    assert!(ok);
    // Key lookups are remembered for a second: revocation bites within it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, v) = batch_get(&key).await;
    assert_eq!(s, 401, "{v}");
    let (ok, _, err) = cli(&place, &["keys", "revoke", &app_id]).await;
    assert!(!ok && err.contains("no active key"), "{err}");

    // A second start on the same store makes no new admin key.
    p.child.kill().await.unwrap();
    let mut p = serve(&place, &[]).await;
    assert!(
        !p.stdout.iter().any(|l| l.contains("admin key")),
        "{:?}",
        p.stdout
    );
    p.child.kill().await.unwrap();
    place.finish().await;
}

async fn the_cli_credits_keys_shows_their_ledger_and_verifies_it(backend: Backend) {
    let place = Place::new(backend).await;
    let (ok, out, err) = cli(
        &place,
        &["keys", "create", "--name", "app", "--credits", "40"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("balance 40"), "{out}");
    assert!(out.contains("signing secret: whsec_"), "{out}");
    let (ok, out, err) = cli(&place, &["keys", "create", "--name", "s", "--json"]).await;
    assert!(ok, "{err}");
    let j: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (j["balance"].as_i64(), j["enabled"].as_bool()),
        (Some(0), Some(true))
    );
    let (ok, out, _) = cli(&place, &["keys", "list", "--json"]).await;
    assert!(ok);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["balance"], 40, "{list}");

    let (ok, out, err) = cli(&place, &["keys", "credit", &id, "15", "--reason", "bonus"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("balance 55"), "{out}");
    let (ok, out, err) = cli(&place, &["keys", "credit", &id, "-5", "--adjust"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("balance 50"), "{out}");
    let (ok, _, err) = cli(&place, &["keys", "credit", &id, "-5"]).await;
    assert!(!ok && err.contains("amount"), "a negative grant: {err}");
    let (ok, out, err) = cli(
        &place,
        &["keys", "update", &id, "--disable", "--max-in-flight", "3"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("disabled"), "{out}");

    let (ok, out, err) = cli(&place, &["keys", "show", &id]).await;
    assert!(ok, "{err}");
    for shown in [
        "balance:    50",
        "status:     disabled",
        "\"max_in_flight\":3",
        "bonus",
        "adjustment",
        "initial credits",
    ] {
        assert!(out.contains(shown), "{shown} missing: {out}");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    for args in [
        ["keys", "show", &unknown].as_slice(),
        &["keys", "credit", &unknown, "5"],
    ] {
        let (ok, _, err) = cli(&place, args).await;
        assert!(
            !ok && err.contains(&format!("no key with id {unknown}")),
            "{err}"
        );
    }

    let (ok, out, err) = cli(&place, &["ledger", "verify"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "ledger verified: 2 keys");
    place.finish().await;
}

async fn the_cli_sets_prices_and_reports_usage(backend: Backend) {
    let place = Place::new(backend).await;
    // Every task 2, and 3 an image; set before the server starts.
    let (ok, out, err) = cli(
        &place,
        &[
            "prices",
            "set",
            "*",
            "--per-task",
            "2",
            "--per-image",
            "3",
            "--per-second",
            "720p=4",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("price of * set"), "{out}");
    let (ok, _, err) = cli(&place, &["prices", "set", "x", "--per-second", "720p"]).await;
    assert!(!ok && err.contains("RESOLUTION=CREDITS"), "{err}");
    let (ok, _, err) = cli(&place, &["prices", "set", "x", "--per-task=-1"]).await;
    assert!(!ok && err.contains("per_task"), "{err}");
    let (ok, out, _) = cli(&place, &["prices", "list", "--json"]).await;
    assert!(ok);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        list,
        json!([{"model": "*", "per_task": 2, "per_image": 3, "per_video_second": {"720p": 4}, "source": "api"}])
    );
    let (ok, out, err) = cli(
        &place,
        &[
            "keys",
            "create",
            "--name",
            "app",
            "--credits",
            "100",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let key = serde_json::from_str::<Value>(out.trim()).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();

    let mut p = serve(&place, &["--sandbox-latency-ms", "50"]).await;
    let http = reqwest::Client::new();
    let (s, v) = post(
        &http,
        format!("{}/kling/v1/images/generations", p.base),
        &key,
        json!({"prompt": "x", "n": 2}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["final_unit_deduction"], "8", "{v}");
    let id = v["data"]["task_id"].as_str().unwrap().to_string();
    events::wait_done(&http, &p.base, &key, &id, Duration::from_secs(60)).await;
    p.child.kill().await.unwrap();

    let (ok, out, err) = cli(&place, &["usage", "--group-by", "model", "--json"]).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["data"][0]["group"], "kling-image", "{report}");
    assert_eq!(report["data"][0]["tasks"]["completed"], 1, "{report}");
    assert_eq!(report["data"][0]["credits"]["net"], 8, "{report}");
    let (ok, out, err) = cli(&place, &["usage", "--group-by", "model", "--csv"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().nth(1),
        Some("kling-image,1,1,0,0,0,8,0,8,0,8"),
        "{out}"
    );
    let (ok, _, err) = cli(&place, &["usage", "--group-by", "week"]).await;
    assert!(!ok && err.contains("group_by"), "{err}");
    let (ok, _, err) = cli(&place, &["ledger", "verify"]).await;
    assert!(ok, "{err}");

    let (ok, _, err) = cli(&place, &["prices", "delete", "*"]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&place, &["prices", "delete", "*"]).await;
    assert!(!ok && err.contains("no stored price"), "{err}");
    place.finish().await;
}

/// Submit a mix of tasks, returning (luma ids, kling ids).
async fn submit(http: &reqwest::Client, base: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut luma, mut kling) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i % 3 == 0 {
            let (s, v) = post(
                http,
                format!("{base}/luma/generations"),
                ADMIN,
                json!({"user_prompt": format!("v{i}")}),
            )
            .await;
            assert_eq!(s, 201, "{v}");
            luma.push(v["id"].as_str().unwrap().to_string());
        } else {
            let (s, v) = post(
                http,
                format!("{base}/kling/v1/images/generations"),
                ADMIN,
                json!({"prompt": format!("i{i}"), "aspect_ratio": "1:1"}),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            kling.push(v["data"]["task_id"].as_str().unwrap().to_string());
        }
    }
    (luma, kling)
}

/// Wait until every task is terminal (each one's event stream has ended,
/// within two minutes in all); returns how many completed.
async fn all_finish(
    http: &reqwest::Client,
    base: &str,
    luma: &[String],
    kling: &[String],
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in luma.iter().chain(kling) {
        let left = deadline.saturating_duration_since(Instant::now());
        events::wait_done(http, base, ADMIN, id, left).await;
    }
    let r = http
        .post(format!("{base}/luma/tasks"))
        .bearer_auth(ADMIN)
        .json(&json!({"ids": luma}))
        .send()
        .await
        .unwrap();
    let tasks: Vec<Value> = r.json().await.unwrap();
    assert_eq!(
        tasks.len(),
        luma.len(),
        "every accepted Luma task is still there"
    );
    let mut open = tasks
        .iter()
        .filter(|t| !matches!(t["state"].as_str(), Some("completed" | "failed")))
        .count();
    let mut completed = tasks.iter().filter(|t| t["state"] == "completed").count();
    for id in kling {
        let r = http
            .get(format!("{base}/kling/v1/images/generations/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        match v["data"]["task_status"].as_str() {
            Some("succeed") => completed += 1,
            Some("failed") => {}
            _ => open += 1,
        }
    }
    assert_eq!(open, 0, "{open} tasks never finished");
    completed
}

async fn a_killed_gengate_finishes_every_accepted_task_after_restart(backend: Backend) {
    let place = Place::new(backend).await;
    let flags = ["--sandbox-latency-ms", "1500", "--lease-secs", "2"];
    let http = reqwest::Client::new();
    let mut p = serve(&place, &flags).await;
    let (luma, kling) = submit(&http, &p.base, 15).await;
    // Kill while results are being made and stored: leased, half done.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    p.child.kill().await.unwrap(); // SIGKILL: no chance to clean up

    let mut p = serve(&place, &flags).await;
    // Another crash while the retaken work is under way, this time SIGTERM.
    let (luma2, kling2) = submit(&http, &p.base, 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = p.child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .expect("SIGTERM stops gengate within its drain bound")
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");

    let mut p = serve(&place, &flags).await;
    let luma: Vec<String> = luma.into_iter().chain(luma2).collect();
    let kling: Vec<String> = kling.into_iter().chain(kling2).collect();
    let completed = all_finish(&http, &p.base, &luma, &kling).await;
    assert_eq!(
        completed,
        luma.len() + kling.len(),
        "the sandbox fails nothing at rate 0"
    );
    p.child.kill().await.unwrap();
    place.finish().await;
}

async fn api_and_worker_instances_split_the_work(backend: Backend) {
    let place = Place::new(backend).await;
    let http = reqwest::Client::new();
    let flags = ["--sandbox-latency-ms", "200"];
    let mut api = serve(&place, &[&["--role", "api"][..], &flags].concat()).await;
    // No worker yet: the tasks are accepted and wait.
    let (luma, kling) = submit(&http, &api.base, 3).await;
    let generation = || {
        http.get(format!("{}/luma/generations/{}", api.base, luma[0]))
            .bearer_auth(ADMIN)
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = json_of(generation()).await;
    assert_eq!(v["state"], "pending", "an api-only instance runs no engine");

    let mut worker = serve(&place, &[&["--role", "worker"][..], &flags].concat()).await;
    let r = http
        .post(format!("{}/luma/tasks", worker.base))
        .bearer_auth(ADMIN)
        .json(&json!({"ids": luma}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "a worker serves no API");
    let r = http
        .get(format!("{}/readyz", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "but answers health checks");

    let completed = all_finish(&http, &api.base, &luma, &kling).await;
    assert_eq!(completed, luma.len() + kling.len());
    // The API instance serves what the worker stored.
    let v = json_of(generation()).await;
    let video = http
        .get(v["video"]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(video.status().as_u16(), 200);
    api.child.kill().await.unwrap();
    worker.child.kill().await.unwrap();
    place.finish().await;
}

async fn a_callback_waiting_to_be_retried_survives_a_kill(backend: Backend) {
    let place = Place::new(backend).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(500)]);
    let http = reqwest::Client::new();
    let flags = [
        "--callback-retry-schedule",
        "0ms,2s,2s,2s",
        "--allow-network",
        "127.0.0.1/32",
        "--sandbox-latency-ms",
        "60000",
    ];
    let mut p = serve(&place, &flags).await;
    let (s, v) = post(
        &http,
        format!("{}/luma/generations", p.base),
        ADMIN,
        json!({"user_prompt": "hold on", "callback_url": rx.url("/")}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    // Kill once the failed first attempt is recorded: mid-backoff.
    poll_until(
        "the first attempt recorded",
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || {
            let r = http
                .get(format!("{}/v1/tasks/{id}/deliveries", p.base))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            match v["data"][0]["attempts"].as_array() {
                Some(a) if !a.is_empty() => Ok(()),
                _ => Err(v.to_string()),
            }
        },
    )
    .await;
    p.child.kill().await.unwrap();

    let mut p = serve(&place, &flags).await;
    let got = rx.wait_for(3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = rx.received();
    assert_eq!(
        got_all.len(),
        3,
        "nothing twice: {:?}",
        got_all.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let ids: Vec<&str> = got
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect();
    let states: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        got.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 200, 200]
    );
    assert_eq!(ids[0], ids[1], "the retry carries the same webhook-id");
    assert_eq!(states, ["pending", "pending", "processing"]);
    p.child.kill().await.unwrap();
    place.finish().await;
}
