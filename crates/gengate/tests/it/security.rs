//! What gengate shows a hostile or careless client: every admin route
//! refuses other keys, wrong keys are limited per address, CORS is off
//! unless configured, `/metrics` can be closed or moved, and every answer
//! carries the security headers. (That no key or secret reaches a log line,
//! a callback or the metrics is checked by the crash loop, over a whole run.)

use std::net::IpAddr;

use reqwest::Method;
use serde_json::Value;

use crate::harness::{Backend, TestApp};

on_both_backends!(every_admin_route_refuses_other_keys);

/// A value for a path parameter: an id that exists nowhere.
fn placeholder(param: &str) -> &'static str {
    match param {
        "id" => "01932c7e-8a3b-7c55-9d2e-4f6a1b2c3d4e",
        _ => "nothing-here",
    }
}

async fn every_admin_route_refuses_other_keys(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    let user = gw.new_key("user").await;
    let (_, doc) = gw.get("/openapi.json", &user).await;
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let tagged = op["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "admin"));
            if !(tagged || path.starts_with("/admin")) {
                continue;
            }
            let mut url = path.clone();
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    url = url.replace(&format!("{{{name}}}"), placeholder(name));
                }
            }
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = || Some(("application/json", b"{}".to_vec()));
            let (status, v) = gw.send(method.clone(), &url, Some(&user), body()).await;
            assert_eq!(status, 403, "{method} {url} with a user's key: {v}");
            let (status, v) = gw.send(method.clone(), &url, None, body()).await;
            assert_eq!(status, 401, "{method} {url} without a key: {v}");
            walked += 1;
        }
    }
    // Channels, keys, prices and the task listing, every method.
    assert!(walked >= 18, "only {walked} admin operations documented");
    gw.stop().await;
}

/// A client whose connections come from `from` (any of 127.0.0.0/8).
fn client_from(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(from))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_keys_are_limited_per_address() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(Backend::Sqlite).start().await;
    let url = format!("{}/v1/tasks", gw.base);
    let attacker = client_from([127, 0, 0, 7]);
    for i in 0..=gengate_engine::bad_keys::STRIKES {
        let resp = attacker
            .get(&url)
            .bearer_auth(format!("gg_guess_{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "guess {i}");
    }
    // Cooling down: even the right key is refused from there.
    let resp = attacker
        .get(&url)
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    // Another address is not.
    let resp = client_from([127, 0, 0, 8])
        .get(&url)
        .bearer_auth(&gw.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_wrong_keys_are_limited_per_forwarded_client() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(Backend::Sqlite)
        .with(|s| s.trusted_proxies = vec!["127.0.0.1/32".into()])
        .start()
        .await;
    let url = format!("{}/v1/tasks", gw.base);
    let from = |client: &str, key: &str| {
        gw.http
            .get(&url)
            .header("x-forwarded-for", format!("1.2.3.4, {client}"))
            .bearer_auth(key.to_string())
            .send()
    };
    for i in 0..=gengate_engine::bad_keys::STRIKES {
        let resp = from("203.0.113.7", &format!("gg_guess_{i}")).await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = from("203.0.113.7", &gw.admin).await.unwrap();
    assert_eq!(resp.status(), 429, "the guessing client cools down");
    let resp = from("203.0.113.8", &gw.admin).await.unwrap();
    assert_eq!(resp.status(), 200, "the proxy's other clients do not");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers() {
    let _turn = crate::harness::sharing_the_machine().await;
    let gw = TestApp::on(Backend::Sqlite).start().await;
    let (_, task) = gw
        .post(
            "/v1/tasks",
            &gw.admin,
            serde_json::json!({"model": "flux", "kind": "image", "input": {"prompt": "a fox"}}),
        )
        .await;
    let done = gw.wait_task(&gw.admin, task["id"].as_str().unwrap()).await;
    let file = done["outputs"][0]["url"].as_str().unwrap().to_string();
    for (url, key) in [
        (format!("{}/v1/tasks", gw.base), Some(gw.admin.as_str())),
        (format!("{}/v1/tasks", gw.base), None),
        (format!("{}/no/such/page", gw.base), None),
        (format!("{}/healthz", gw.base), None),
        (format!("{}/metrics", gw.base), None),
        (format!("{}/console", gw.base), None),
        (format!("{}/openapi.json", gw.base), None),
        (file, None),
    ] {
        let mut req = gw.http.get(&url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(h["x-frame-options"], "DENY", "{url}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{url}");
        assert!(h.get("access-control-allow-origin").is_none(), "{url}");
    }
    gw.stop().await;
}

/// A CORS preflight from `origin`: the allowed origin it answers, if any.
async fn preflight(http: &reqwest::Client, base: &str, origin: &str) -> Option<String> {
    let resp = http
        .request(Method::OPTIONS, format!("{base}/v1/tasks"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_unless_configured_and_then_only_for_its_origins() {
    let _turn = crate::harness::sharing_the_machine().await;
    let off = TestApp::on(Backend::Sqlite).start().await;
    assert_eq!(
        preflight(&off.http, &off.base, "https://app.example").await,
        None
    );
    off.stop().await;

    let on = TestApp::on(Backend::Sqlite)
        .with(|s| s.cors_origins = vec!["https://app.example".into()])
        .start()
        .await;
    assert_eq!(
        preflight(&on.http, &on.base, "https://app.example")
            .await
            .as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        preflight(&on.http, &on.base, "https://evil.example").await,
        None
    );
    let resp = on
        .http
        .get(format!("{}/v1/tasks", on.base))
        .header("origin", "https://app.example")
        .bearer_auth(&on.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    on.stop().await;

    let bad = gengate::config::Settings {
        cors_origins: vec!["https://app.example/path".into()],
        ..Default::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("cors_origins"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_can_need_a_token_or_move_to_their_own_address() {
    let _turn = crate::harness::sharing_the_machine().await;
    let token = "a-scrapers-token-0123456789";
    let gw = TestApp::on(Backend::Sqlite)
        .with(|s| s.metrics_token = Some(token.into()))
        .start()
        .await;
    let url = format!("{}/metrics", gw.base);
    let resp = gw.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw
        .http
        .get(&url)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = gw.http.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("gengate_"));
    gw.stop().await;

    let gw = TestApp::on(Backend::Sqlite)
        .with(|s| s.metrics_listen = Some("127.0.0.1:0".into()))
        .start()
        .await;
    let (status, _): (u16, Value) = gw.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 404, "not on the API's address");
    let at = gw.metrics_addr().expect("metrics have their own address");
    let resp = gw
        .http
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.text().await.unwrap().contains("gengate_"));
    gw.stop().await;
}
