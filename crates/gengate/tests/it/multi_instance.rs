//! Scale-out under failure: three gengate processes on one PostgreSQL
//! database and one data directory; 5 000 tasks submitted round-robin; one
//! process killed with SIGKILL midway and started again later.
//!
//! Every accepted task reaches a terminal state; the sandbox's own submit log
//! shows each task submitted once, except tasks the killed process had
//! submitted without recording it; every task's events are recorded once
//! each, in order. And with every task charged and three in ten failing:
//! each key's balance stays the sum of its ledger, and a key pays exactly
//! for the tasks that completed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::procs::{ADMIN, Place, Proc, cli, post, serve};
use crate::harness::{Backend, poll_until, the_machine_alone};
use gengate_testkit::Receiver;
use gengate_testkit::fixtures::json_of;

const TASKS: usize = 5000;
const KILL_AT: usize = 2000;
const RESTART_AT: usize = 3500;

fn flags(log: &str) -> Vec<String> {
    [
        "--allow-network",
        "127.0.0.1/32",
        "--no-migrate",
        "--sandbox-latency-ms",
        "1000",
        "--lease-secs",
        "3",
        "--sandbox-submit-log",
        log,
    ]
    .map(String::from)
    .to_vec()
}

/// Create task `i` through `base` with `key`: mostly images, every tenth a
/// video, from a handful of prompts (the sandbox renders each once per
/// process), calling back to `hook` when given.
async fn create(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    i: usize,
    hook: Option<&str>,
) -> Option<String> {
    let (path, mut body) = if i.is_multiple_of(10) {
        let body = json!({"user_prompt": format!("scene {}", i % 2)});
        ("luma/generations", body)
    } else {
        let body = json!({"prompt": format!("picture {}", i % 7), "aspect_ratio": "1:1"});
        ("kling/v1/images/generations", body)
    };
    if let Some(hook) = hook {
        body["callback_url"] = hook.into();
    }
    match post(http, format!("{base}/{path}"), key, body).await {
        (201, v) => v["id"].as_str().map(String::from),
        (200, v) => v["data"]["task_id"].as_str().map(String::from),
        _ => None,
    }
}

/// The schema made once, then three instances on it.
async fn migrate_and_serve_three(place: &Place, flags: &[&str]) -> Vec<Option<Proc>> {
    let (ok, _, err) = cli(place, &["migrate"]).await;
    assert!(ok, "gengate migrate: {err}");
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Some(serve(place, flags).await));
    }
    procs
}

/// Waits (up to 5 minutes) for `count` (a `SELECT count(*)`) to be 0.
async fn none_left(db: &mut sqlx::PgConnection, what: &str, count: &'static str) {
    poll_until(
        what,
        Duration::from_secs(300),
        Duration::from_millis(500),
        async || match sqlx::query_scalar::<_, i64>(count)
            .fetch_one(&mut *db)
            .await
            .unwrap()
        {
            0 => Ok(()),
            left => Err(format!("{left} left")),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_one_killed_lose_nothing_and_submit_once() {
    if !crate::harness::postgres_available().await {
        return;
    }
    // 5 000 tasks through three processes take both cores for minutes.
    let _alone = the_machine_alone().await;
    let place = Place::new(Backend::Postgres).await;
    let db_url = place.pg.as_ref().expect("a database").url.clone();
    let log = place.dir.path().join("submits.log");
    let log = log.to_str().expect("utf-8 path").to_string();
    let flags = flags(&log);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();

    let mut procs = migrate_and_serve_three(&place, &flags).await;
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let hook = receiver.url("/hook");

    let t0 = Instant::now();
    // Submit in order, 32 at a time, round-robin over the live instances.
    let mut accepted = Vec::with_capacity(TASKS);
    let mut killed_pid = None;
    let mut down: Option<usize> = None;
    let mut next = 0;
    while next < TASKS {
        if next >= KILL_AT && killed_pid.is_none() {
            let mut p = procs[1].take().expect("instance 1 runs");
            killed_pid = p.child.id();
            p.child.kill().await.expect("SIGKILL");
            down = Some(1);
        }
        if next >= RESTART_AT && down.is_some() {
            let p = serve(&place, &flags).await;
            procs[1] = Some(p);
            down = None;
        }
        let batch_end = (next + 32).min(TASKS);
        let live: Vec<String> = procs.iter().flatten().map(|p| p.base.clone()).collect();
        let batch: Vec<(usize, String)> = (next..batch_end)
            .map(|i| (i, live[i % live.len()].clone()))
            .collect();
        let results: Vec<Option<String>> = futures::stream::iter(batch)
            .map(|(i, base)| {
                let http = http.clone();
                let hook = hook.clone();
                async move { create(&http, &base, ADMIN, i, Some(&hook)).await }
            })
            .buffered(32)
            .collect()
            .await;
        for (i, r) in (next..batch_end).zip(results) {
            let id = r.unwrap_or_else(|| panic!("task {i} was refused by a live instance"));
            accepted.push(id);
        }
        next = batch_end;
    }
    assert_eq!(accepted.len(), TASKS);
    eprintln!(
        "{TASKS} tasks accepted in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Every task in the database reaches a terminal state.
    let mut db = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("database");
    let sql = "SELECT count(*) FROM tasks WHERE due_at IS NOT NULL";
    none_left(&mut db, "every task terminal", sql).await;
    eprintln!(
        "all terminal {:.1} s after the first submit",
        t0.elapsed().as_secs_f64()
    );
    let states: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT id, state FROM tasks")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let states: HashMap<String, String> = states
        .into_iter()
        .map(|(id, st)| (id.to_string(), st))
        .collect();
    for id in &accepted {
        assert_eq!(
            states.get(id).map(String::as_str),
            Some("completed"),
            "task {id}"
        );
    }

    // The upstream's count: once per task, twice only after the crash.
    let killed_pid = killed_pid.expect("an instance was killed").to_string();
    let mut submits: HashMap<String, Vec<String>> = HashMap::new();
    for line in std::fs::read_to_string(&log).expect("submit log").lines() {
        let (task, pid) = line.split_once(' ').expect("`<task> <pid>` lines");
        submits
            .entry(task.to_string())
            .or_default()
            .push(pid.to_string());
    }
    let mut resubmitted = 0;
    for id in states.keys() {
        let by = submits.get(id).map(Vec::as_slice).unwrap_or_default();
        match by {
            [_] => {}
            [first, _] if *first == killed_pid => resubmitted += 1,
            other => panic!("task {id} submitted by {other:?} (killed: {killed_pid})"),
        }
    }
    eprintln!(
        "{} tasks, {resubmitted} submitted twice because of the SIGKILL",
        states.len()
    );
    assert!(
        resubmitted <= 64 * 2,
        "at most what the killed process had in hand"
    );

    // Each task's events: once each, in order.
    let events: Vec<(uuid::Uuid, Vec<i64>, Vec<String>)> = sqlx::query_as(
        "SELECT task_id, array_agg(seq ORDER BY seq), array_agg(state ORDER BY seq) \
         FROM task_events GROUP BY task_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(events.len(), states.len());
    for (id, seqs, names) in events {
        assert_eq!(seqs, vec![1, 2, 3], "task {id}");
        assert_eq!(names, ["pending", "processing", "completed"], "task {id}");
    }

    // Every event of every task reached the receiver, in order per task.
    let sql = "SELECT count(*) FROM deliveries WHERE state <> 'delivered'";
    none_left(&mut db, "every callback delivered", sql).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for r in receiver.received() {
        let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
        let (id, state) = match body.get("task_id") {
            Some(id) => (id.as_str(), body["task_status"].as_str()),
            None => (body["id"].as_str(), body["state"].as_str()),
        };
        let (Some(id), Some(state)) = (id, state) else {
            panic!("an unexpected body: {body}")
        };
        let states = seen.entry(id.to_string()).or_default();
        // At least once: a repeat (after the crash) comes right after itself.
        if states.last().map(String::as_str) != Some(state) {
            states.push(state.to_string());
        }
    }
    assert_eq!(seen.len(), states.len(), "callbacks for every task");
    let duplicates = receiver.received().len() - 3 * states.len();
    for (id, got) in &seen {
        let want = if got[0] == "submitted" {
            ["submitted", "processing", "succeed"]
        } else {
            ["pending", "processing", "completed"]
        };
        assert_eq!(got, &want, "task {id}");
    }
    eprintln!(
        "{} callbacks, {duplicates} sent twice because of the SIGKILL",
        receiver.received().len()
    );

    // Instances sharing the data directory serve each other's results.
    let some_video = accepted[0].clone();
    for p in procs.iter().flatten() {
        let v = json_of(
            http.get(format!("{}/luma/generations/{some_video}", p.base))
                .bearer_auth(ADMIN),
        )
        .await;
        let url = v["video"]["url"].as_str().expect("a video url").to_string();
        let path = url.split_once("/files/").expect("a files url").1;
        let r = http
            .get(format!("{}/files/{path}", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{} serves {path}", p.base);
    }
    for p in procs.iter_mut().flatten() {
        let _ = p.child.kill().await;
    }
    drop(db);
    place.finish().await;
}

/// The ledger under the same failures: three instances on PostgreSQL, each
/// task charged, three in ten failing upstream (refunded), one instance
/// SIGKILLed midway and started again.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_one_killed_keep_the_ledger() {
    const N: usize = 600;
    if !crate::harness::postgres_available().await {
        return;
    }
    let _alone = the_machine_alone().await;
    let place = Place::new(Backend::Postgres).await;
    let db_url = place.pg.as_ref().expect("a database").url.clone();
    let log = place.dir.path().join("submits.log");
    let mut flags = flags(log.to_str().expect("utf-8 path"));
    flags.extend(["--sandbox-failure-rate", "0.3"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut procs = migrate_and_serve_three(&place, &flags).await;
    let http = reqwest::Client::new();
    // 2 a task, 3 an image, 1 a second of video: an image task costs 5, a
    // 5 s video 7.
    let base = procs[0].as_ref().expect("instance 0").base.clone();
    let price = json!({"per_task": 2, "per_image": 3, "per_video_second": {"*": 1}});
    let r = http
        .put(format!("{base}/admin/prices/*"))
        .bearer_auth(ADMIN)
        .json(&price)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Every instance re-reads stored prices within 3 s.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let start: i64 = 1_000_000;
    let (ok, out, err) = cli(
        &place,
        &[
            "keys",
            "create",
            "--name",
            "buyer",
            "--credits",
            "1000000",
            "--json",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let made: Value = serde_json::from_str(out.trim()).expect("JSON");
    let key = made["key"].as_str().expect("a key").to_string();

    let mut accepted = 0;
    let mut next = 0;
    while next < N {
        if next == N / 3 {
            let mut p = procs[1].take().expect("instance 1 runs");
            p.child.kill().await.expect("SIGKILL");
        }
        if next == 2 * N / 3 {
            procs[1] = Some(serve(&place, &flags).await);
        }
        let end = (next + 32).min(N);
        let live: Vec<String> = procs.iter().flatten().map(|p| p.base.clone()).collect();
        let made: Vec<Option<String>> = futures::stream::iter(next..end)
            .map(|i| {
                let (http, base, key) = (http.clone(), live[i % live.len()].clone(), key.clone());
                async move { create(&http, &base, &key, i, None).await }
            })
            .buffered(32)
            .collect()
            .await;
        accepted += made.iter().flatten().count();
        next = end;
    }
    assert_eq!(accepted, N, "a live instance refused a task");

    let mut db = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("database");
    let sql = "SELECT count(*) FROM tasks WHERE due_at IS NOT NULL";
    none_left(&mut db, "every task terminal", sql).await;
    // A task that failed came back in full, as one refund entry; one that
    // completed did not.
    let wrong = "SELECT count(*) FROM tasks WHERE (state = 'completed' AND refunded <> 0) \
        OR (state <> 'completed' AND refunded <> charged) \
        OR ((refund_id IS NOT NULL) <> (refunded > 0))";
    none_left(&mut db, "every task refunded as it ended", wrong).await;
    // Every key's balance is the sum of its entries.
    let (ok, out, err) = cli(&place, &["ledger", "verify"]).await;
    assert!(ok, "ledger verify: {out}{err}");
    let (completed, failed, paid): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'completed'), \
         count(*) FILTER (WHERE state = 'failed'), \
         CAST(COALESCE(SUM(charged) FILTER (WHERE state = 'completed'), 0) AS BIGINT) FROM tasks",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(completed + failed, N as i64);
    assert!(
        completed > 0 && failed > 0,
        "{completed} completed, {failed} failed"
    );
    let balance: i64 = sqlx::query_scalar("SELECT balance FROM api_keys WHERE name = 'buyer'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        start - balance,
        paid,
        "the key paid for what completed, and only that"
    );
    eprintln!("{completed} completed, {failed} failed and refunded; {paid} credits paid");
    for p in procs.iter_mut().flatten() {
        let _ = p.child.kill().await;
    }
    drop(db);
    place.finish().await;
}
