//! SIGTERM under load: gengate stops within `drain_timeout_secs`; requests
//! in progress are answered whole (a waiting synchronous one included),
//! leases are released (so the next start takes the tasks at once, not
//! after `lease_secs`), and every acknowledged task completes after.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::procs::{ADMIN, Place, serve};
use crate::harness::{Backend, events};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_answers_and_loses_nothing() {
    let _turn = crate::harness::sharing_the_machine().await;
    let place = Place::new(Backend::Sqlite).await;
    // Leases far longer than the test: only released ones are retaken soon.
    let flags = [
        "--sandbox-latency-ms",
        "1500",
        "--lease-secs",
        "120",
        "--drain-timeout-secs",
        "4",
    ];
    let mut p = serve(&place, &flags).await;
    let http = reqwest::Client::new();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, base, acknowledged) = (http.clone(), p.base.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            let mut cut = 0;
            while Instant::now() < stop_at + Duration::from_secs(3) {
                n += 1;
                let body = json!({"model": "flux", "kind": "image",
                                  "input": {"prompt": format!("client {c} task {n}")}});
                let sent = http
                    .post(format!("{base}/v1/tasks"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await;
                let Ok(resp) = sent else {
                    // Refused or closed before an answer: nothing promised.
                    cut += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let status = resp.status().as_u16();
                let v: Value = resp.json().await.expect("an answer is whole");
                if status == 201 {
                    acknowledged
                        .lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap().into());
                }
            }
            cut
        }));
    }
    // A synchronous request waiting for its images when the signal comes.
    let sync = {
        let req = http
            .post(format!("{}/v1/images/generations", p.base))
            .bearer_auth(ADMIN)
            .json(&json!({"model": "dall-e-3", "prompt": "waiting at shutdown"}));
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::sleep(stop_at - Instant::now()).await;
    let pid = p.child.id().expect("running").to_string();
    let signalled = Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stopped within drain_timeout_secs and a little")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(took < Duration::from_secs(7), "drained in {took:?}");
    let answered = sync
        .await
        .unwrap()
        .expect("the waiting request is answered");
    let code = answered.status().as_u16();
    let body: Value = answered.json().await.expect("whole");
    assert!(matches!(code, 200 | 503 | 504), "{code}: {body}");
    let mut cut = 0;
    for c in clients {
        cut += c.await.unwrap();
    }
    assert!(cut > 0, "the listener closed while clients were sending");
    let log = std::fs::read_to_string(place.dir.path().join("gengate.log")).unwrap();
    assert!(log.contains("engine stopped"), "the engine drained");

    // Started again: every acknowledged task completes, well before the
    // 120 s leases would have run out.
    let p = serve(&place, &flags).await;
    let ids = acknowledged.lock().unwrap().clone();
    assert!(ids.len() >= 20, "only {} acknowledged", ids.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = events::wait_done(&http, &p.base, ADMIN, id, left).await;
        assert_eq!(seen.last().unwrap().state, "completed", "{id}");
    }
    drop(p);
    place.finish().await;
}
