//! Overload: slow clients cannot hold connections, and over the caps on
//! connections and requests in progress a client gets 503 with
//! `Retry-After` at once while health stays answerable. These bounds are
//! the HTTP side's, the same on either store: SQLite only. The engine's own
//! bound (its permits) holds under a burst without stranding a task.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestApp;

/// Everything the server sends until it closes the connection, or `None`
/// when it is still open after `within`.
async fn until_closed(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(crate::harness::Backend::Sqlite)
        .with(|s| s.header_timeout_secs = 1)
        .start()
        .await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for i in 0..300 {
        let mut conn = TcpStream::connect(&addr).await.expect("connects");
        // Half of them send half a request header, the others nothing.
        if i % 2 == 0 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gengate\r\nX-Slow: ")
                .await
                .unwrap();
        }
        held.push(conn);
    }
    // A well-behaved client is served meanwhile.
    let (status, _) = gw.get("/v1/tasks", &gw.admin).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (i, conn) in held.iter_mut().enumerate() {
        let answer = until_closed(conn, Duration::from_secs(5)).await;
        let answer = answer.unwrap_or_else(|| panic!("connection {i} is still held"));
        // Never a request served from half a header.
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    // A kept-alive connection that starts no next request is closed too.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: gengate\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(
        answer
            .expect("closed after its idle time")
            .starts_with("HTTP/1.1 200")
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_get_503_and_are_closed() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(crate::harness::Backend::Sqlite)
        .with(|s| s.max_connections = 4)
        .start()
        .await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The accept loop takes them in order: give it the four first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let answer = until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("refused and closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // A place freed is a place taken.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::new();
    let resp = fresh
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(held);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_the_in_flight_cap_get_503_while_health_answers() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(crate::harness::Backend::Sqlite)
        .sandbox_latency_ms(3000)
        .with(|s| s.max_requests_in_flight = 2)
        .start()
        .await;
    // Two synchronous image requests hold both places while their images
    // are made.
    let slow = |prompt: &'static str| {
        let req = gw
            .http
            .post(format!("{}/v1/images/generations", gw.base))
            .bearer_auth(&gw.admin)
            .json(&json!({"model": "dall-e-3", "prompt": prompt}));
        tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
    };
    let held = [slow("a slow fox"), slow("a slower fox")];
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = gw
        .http
        .get(format!("{}/v1/tasks", gw.base))
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("too many requests in progress"),
        "{body}"
    );
    let (status, _) = gw.get("/healthz", &gw.admin).await;
    assert_eq!(status, 200, "health is not capped");
    for h in held {
        assert_eq!(
            h.await.unwrap().unwrap(),
            200,
            "the requests in progress finish"
        );
    }
    let (status, _) = gw.get("/v1/tasks", &gw.admin).await;
    assert_eq!(status, 200, "places are given back");
    gw.stop().await;
}

/// A burst beyond the engine's permits: new tasks go straight to the
/// engine while it has room, the rest wait in the store to be claimed, and
/// every one finishes promptly: none is left leased and untouched until
/// its lease (30 s here) lapses.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_beyond_the_engines_permits_finishes_without_waiting_on_a_lease() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(crate::harness::Backend::Sqlite)
        .sandbox_latency_ms(0)
        .with(|s| {
            s.concurrency = 4;
            s.lease_secs = 30;
        })
        .start()
        .await;
    let key = gw.new_key("burst").await;
    let started = std::time::Instant::now();
    let submitted = futures::future::join_all((0..200).map(|i| {
        let body = json!({"prompt": format!("burst {i}"), "aspect_ratio": "1:1"});
        gw.post("/kling/v1/images/generations", &key, body)
    }))
    .await;
    let mut ids = Vec::new();
    for (status, v) in submitted {
        assert_eq!(status, 200, "{v}");
        ids.push(v["data"]["task_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let data = gw.wait_kling(&key, id).await;
        assert_eq!(data["task_status"], "succeed", "{data}");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "200 tasks at 4 permits took {took:?}: some waited for a lease to lapse"
    );
}
