//! Results and inputs in S3-compatible storage (moto's server): instances
//! that share a database and a bucket but not a directory submit each
//! other's tasks and serve each other's files; files stream with ranges;
//! a result over the size limit fails its task by name.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::procs::{ADMIN, Place, cli_env, post, serve_with_env};
use crate::harness::{Backend, TestApp, poll_until, sharing_the_machine};
use gengate_testkit::fixtures::json_of;
use gengate_testkit::{RED_PNG, S3Server, TcpGate};

/// `AWS_*` for `s3`, and the storage URL of `bucket`.
fn storage_env(s3: &S3Server, bucket: &str) -> Vec<(&'static str, String)> {
    let mut env = s3.env();
    env.push(("GENGATE_STORAGE_URL", format!("s3://{bucket}/gengate")));
    env
}

/// A and B on one PostgreSQL database and one bucket, each with its own
/// data directory: A only answers the API, so B's worker runs the task A
/// accepted (reading the image A stored), and both serve its result.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_one_bucket_for_inputs_and_results() {
    let _machine = sharing_the_machine().await;
    if !crate::harness::postgres_available().await {
        return;
    }
    let Some(s3) = S3Server::start().await else {
        return;
    };
    s3.create_bucket("shared").await;
    let env = storage_env(&s3, "shared");
    let place_a = Place::new(Backend::Postgres).await;
    let db = place_a.pg.as_ref().expect("a database").url.clone();
    // B: the same database, a directory of its own.
    let place_b = Place {
        dir: tempfile::tempdir().unwrap(),
        pg: None,
    };
    let common = [
        "--allow-network",
        "127.0.0.1/32",
        "--sandbox-latency-ms",
        "200",
    ];
    let a = serve_with_env(&place_a, &[&common[..], &["--role", "api"]].concat(), &env).await;
    let b = serve_with_env(
        &place_b,
        &[&common[..], &["--database-url", &db]].concat(),
        &env,
    )
    .await;
    let http = reqwest::Client::new();

    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let body =
        json!({"prompt": "tinted", "aspect_ratio": "1:1", "image": b64, "image_fidelity": 1.0});
    let id = submit_kling(&http, &a.base, body).await;
    // The input is in the bucket, not in either directory.
    let task = kling_done(&http, &a.base, &id, Duration::from_secs(60)).await;
    assert_eq!(task["data"]["task_status"], "succeed", "{task}");
    for dir in [place_a.dir.path(), place_b.dir.path()] {
        assert!(
            !dir.join("media").exists(),
            "nothing stored in {}",
            dir.display()
        );
    }

    let url = task["data"]["task_result"]["images"][0]["url"]
        .as_str()
        .expect("an image url")
        .to_string();
    let file = url
        .split_once("/files/")
        .expect("a files url")
        .1
        .to_string();
    let stored = http
        .get(format!("{}/files/{file}", b.base))
        .send()
        .await
        .unwrap();
    let stored = stored.bytes().await.unwrap();
    let objects = s3.objects("shared").await;
    let key = format!("gengate/{file}");
    assert!(
        objects.contains(&(key.clone(), stored.len() as u64)),
        "{key} in the bucket: {objects:?}"
    );
    assert!(
        objects
            .iter()
            .any(|(k, _)| k.starts_with("gengate/inputs/")),
        "the uploaded image is in the bucket: {objects:?}"
    );
    for base in [&a.base, &b.base] {
        let whole = http
            .get(format!("{base}/files/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(whole.status().as_u16(), 200);
        let headers = whole.headers().clone();
        assert_eq!(headers["content-type"], "image/jpeg");
        assert_eq!(headers["accept-ranges"], "bytes");
        assert!(
            headers["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = headers["etag"].to_str().unwrap().to_string();
        assert_eq!(
            whole.bytes().await.unwrap(),
            stored,
            "{base} serves the stored bytes"
        );

        let part = http
            .get(format!("{base}/files/{file}"))
            .header("range", "bytes=2-9")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status().as_u16(), 206);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes 2-9/{}", stored.len()).as_str()
        );
        assert_eq!(part.bytes().await.unwrap(), &stored[2..10]);

        let head = http
            .head(format!("{base}/files/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), 200);
        assert_eq!(
            head.headers()["content-length"],
            stored.len().to_string().as_str()
        );

        let same = http
            .get(format!("{base}/files/{file}"))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(same.status().as_u16(), 304);

        let outside = http
            .get(format!("{base}/files/{file}"))
            .header("range", format!("bytes={}-", stored.len() + 10))
            .send()
            .await
            .unwrap();
        assert_eq!(outside.status().as_u16(), 416);
        assert_eq!(
            outside.headers()["content-range"],
            format!("bytes */{}", stored.len()).as_str()
        );
    }
    drop((a, b));
    place_a.finish().await;
}

/// Submit a Kling image task of `body` through `base`: its id.
async fn submit_kling(http: &reqwest::Client, base: &str, body: Value) -> String {
    let url = format!("{base}/kling/v1/images/generations");
    let (status, created) = post(http, url, ADMIN, body).await;
    assert_eq!(status, 200, "{created}");
    created["data"]["task_id"]
        .as_str()
        .expect("a task id")
        .to_string()
}

/// Kling task `id` (asked through `base`), once it has ended.
async fn kling_done(http: &reqwest::Client, base: &str, id: &str, within: Duration) -> Value {
    let every = Duration::from_millis(100);
    poll_until("the task done", within, every, async || {
        let t = json_of(
            http.get(format!("{base}/kling/v1/images/generations/{id}"))
                .bearer_auth(ADMIN),
        )
        .await;
        match t["data"]["task_status"].as_str() {
            Some("succeed" | "failed") => Ok(t),
            _ => Err(t.to_string()),
        }
    })
    .await
}

/// Submit a Kling image task through `base` and wait for its end.
async fn kling_image(http: &reqwest::Client, base: &str, within: Duration) -> Value {
    let body = json!({"prompt": "a lighthouse", "aspect_ratio": "1:1"});
    let id = submit_kling(http, base, body).await;
    kling_done(http, base, &id, within).await
}

/// Storage down while a result is being stored: the task waits (it is
/// neither failed nor lost), the failures show in the metrics, and it
/// completes once storage is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_waits_out_a_storage_outage() {
    let _machine = sharing_the_machine().await;
    let Some(s3) = S3Server::start().await else {
        return;
    };
    s3.create_bucket("flaky").await;
    let target = s3
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let gate = TcpGate::to(target).await;
    let mut env = storage_env(&s3, "flaky");
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", format!("http://{}", gate.addr)));
    let place = Place::new(Backend::Sqlite).await;
    let gw = serve_with_env(&place, &["--sandbox-latency-ms", "100"], &env).await;
    let http = reqwest::Client::new();

    gate.shut();
    let body = json!({"prompt": "a lighthouse", "aspect_ratio": "1:1"});
    let id = submit_kling(&http, &gw.base, body).await;
    let every = Duration::from_millis(200);
    poll_until(
        "failed stores counted",
        Duration::from_secs(30),
        every,
        async || {
            let metrics = http
                .get(format!("{}/metrics", gw.base))
                .send()
                .await
                .unwrap();
            let metrics = metrics.text().await.unwrap();
            if metrics.contains("gengate_storage_errors_total{op=\"put\"}") {
                Ok(())
            } else {
                Err("no storage error yet".into())
            }
        },
    )
    .await;
    let during = json_of(
        http.get(format!("{}/kling/v1/images/generations/{id}", gw.base))
            .bearer_auth(ADMIN),
    )
    .await;
    assert!(
        matches!(
            during["data"]["task_status"].as_str(),
            Some("submitted" | "processing")
        ),
        "waiting, not failed: {during}"
    );

    gate.open();
    let done = kling_done(&http, &gw.base, &id, Duration::from_secs(90)).await;
    assert_eq!(done["data"]["task_status"], "succeed", "{done}");
    let url = done["data"]["task_result"]["images"][0]["url"]
        .as_str()
        .unwrap();
    let served = http.get(url).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    drop(gw);
    place.finish().await;
}

/// `file_urls = "presigned"`: result URLs redirect to the bucket, signed
/// for `presign_ttl_secs`; the signed URL serves the file.
#[tokio::test(flavor = "multi_thread")]
async fn presigned_result_urls_redirect_to_the_bucket() {
    let _machine = sharing_the_machine().await;
    let Some(s3) = S3Server::start().await else {
        return;
    };
    s3.create_bucket("signed").await;
    let mut env = storage_env(&s3, "signed");
    env.push(("GENGATE_FILE_URLS", "presigned".into()));
    env.push(("GENGATE_PRESIGN_TTL_SECS", "2".into()));
    let place = Place::new(Backend::Sqlite).await;
    let gw = serve_with_env(&place, &["--sandbox-latency-ms", "100"], &env).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let task = kling_image(&http, &gw.base, Duration::from_secs(60)).await;
    assert_eq!(task["data"]["task_status"], "succeed", "{task}");
    let url = task["data"]["task_result"]["images"][0]["url"]
        .as_str()
        .unwrap();
    let answer = http.get(url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    let signed = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(signed.starts_with(&s3.endpoint), "{signed}");
    assert!(signed.contains("X-Amz-Signature="), "{signed}");
    let file = http.get(&signed).send().await.unwrap();
    assert_eq!(file.status().as_u16(), 200);
    let bytes = file.bytes().await.unwrap();
    assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    // S3 refuses the URL once its X-Amz-Expires has passed (moto does not
    // check, so the test reads the signed lifetime).
    assert!(signed.contains("X-Amz-Expires=2&"), "{signed}");
    // The console may show what the redirects lead to: the bucket's origin
    // joins its policy for images and media, and nothing else does.
    let page = http
        .get(format!("{}/console/", gw.base))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    let origin = s3.endpoint.trim_end_matches('/');
    for directive in [
        format!("img-src 'self' data: {origin};"),
        format!("media-src 'self' {origin};"),
    ] {
        assert!(policy.contains(&directive), "{policy}");
    }
    assert!(policy.contains("connect-src 'self';"), "{policy}");
    drop(gw);
    place.finish().await;
}

/// Signed result URLs (`file_url_ttl_secs`): every URL a task shows is
/// signed and served; without its signature, tampered with or expired it is
/// refused with a 403; Luma's download URL is served as an attachment.
#[tokio::test(flavor = "multi_thread")]
async fn signed_result_urls_are_served_until_they_expire() {
    let _machine = sharing_the_machine().await;
    let keys = vec!["a-file-url-key-of-at-least-32-characters".to_string()];
    let signing = keys.clone();
    let gw = TestApp::on(Backend::Sqlite)
        .with(move |s| {
            s.file_url_ttl_secs = 60;
            s.file_url_keys = signing;
        })
        .start()
        .await;
    let key = gw.new_key("viewer").await;
    let (status, created) = gw
        .post(
            "/luma/generations",
            &key,
            json!({"user_prompt": "a harbour at dawn"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let task = gw.wait_luma(&key, id).await;
    assert_eq!(task["state"], "completed", "{task}");

    let video = task["video"]["url"].as_str().unwrap().to_string();
    assert!(
        video.contains("?expires=") && video.contains("&signature="),
        "{video}"
    );
    let http = &gw.http;
    let ok = http.get(&video).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.headers()["content-type"], "video/mp4");
    let cache = ok.headers()["cache-control"].to_str().unwrap();
    let max_age: u64 = cache
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (60..=120).contains(&max_age),
        "not cached past its expiry: {cache}"
    );

    let bare = video.split_once('?').unwrap().0;
    let flipped = if video.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{flipped}", &video[..video.len() - 1]);
    let file_key = bare.split_once("/files/").unwrap().1;
    let expired = gengate_core::FileLinks::signed(format!("{}/files", gw.base), &keys, 60)
        .at(1_000_000)
        .url(file_key);
    for (url, why) in [
        (bare.to_string(), "must be signed"),
        (tampered, "signature is not valid"),
        (expired, "has expired"),
    ] {
        let refused = http.get(&url).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{url}");
        let body: Value = refused.json().await.unwrap();
        assert!(body["detail"].as_str().unwrap().contains(why), "{body}");
    }

    let (status, download) = gw
        .get(&format!("/luma/generations/{id}/download_video_url"), &key)
        .await;
    assert_eq!(status, 200, "{download}");
    let download = download["url"].as_str().unwrap();
    let attached = http.get(download).send().await.unwrap();
    assert_eq!(attached.status().as_u16(), 200);
    let disposition = attached.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    gw.stop().await;
}

/// `gengate storage usage` counts what a finished task stored, and
/// `gengate storage copy --to` moves it to another storage (here a bucket),
/// leaving what is already there; usage then reads the same from both.
#[tokio::test(flavor = "multi_thread")]
async fn the_storage_cli_counts_and_copies_to_a_bucket() {
    let _machine = sharing_the_machine().await;
    let Some(s3) = S3Server::start().await else {
        return;
    };
    s3.create_bucket("moved").await;
    let place = Place::new(Backend::Sqlite).await;
    let gw = serve_with_env(&place, &["--sandbox-latency-ms", "100"], &[]).await;
    let http = reqwest::Client::new();
    let task = kling_image(&http, &gw.base, Duration::from_secs(60)).await;
    assert_eq!(task["data"]["task_status"], "succeed", "{task}");
    drop(gw);

    let env: Vec<(&str, String)> = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, local, err) = cli_env(&place, &["storage", "usage", "--json"], &env).await;
    assert!(ok, "{err}");
    let local: Value = serde_json::from_str(local.trim()).unwrap();
    assert_eq!(local[0]["kind"], "results", "{local}");
    assert!(local[0]["objects"].as_u64().unwrap() >= 1, "{local}");

    let to = ["storage", "copy", "--to", "s3://moved/archive"];
    let (ok, out, err) = cli_env(&place, &to, &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("0 were there already"), "{out}");
    let (ok, out, err) = cli_env(&place, &to, &env).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("copied 0 objects"), "{out}");

    let mut in_bucket = env.clone();
    in_bucket.push(("GENGATE_STORAGE_URL", "s3://moved/archive"));
    let (ok, moved, err) = cli_env(&place, &["storage", "usage", "--json"], &in_bucket).await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(moved.trim()).unwrap(), local);

    let (ok, _, err) = cli_env(&place, &["storage", "copy", "--to", "ftp://x"], &env).await;
    assert!(!ok);
    assert!(
        err.contains("expected file:///dir or s3://bucket/prefix"),
        "{err}"
    );
    place.finish().await;
}

/// Retention: results kept a day (a model's, thirty), uploaded inputs until
/// their task's deadline. `storage gc --dry-run` counts and deletes
/// nothing; judged two days on, gc deletes the day-old task's result and
/// the input but keeps the result it shares (by hash) with a thirty-day
/// task, which goes once that task's term has passed too. On SQLite with a
/// local directory, and on PostgreSQL with a bucket.
async fn expired_files_are_deleted_and_shared_ones_kept(backend: Backend) {
    let _machine = sharing_the_machine().await;
    if backend == Backend::Postgres && !crate::harness::postgres_available().await {
        return;
    }
    let (s3, env) = match backend {
        Backend::Sqlite => (None, Vec::new()),
        Backend::Postgres => {
            let Some(s3) = S3Server::start().await else {
                return;
            };
            s3.create_bucket("kept").await;
            let env = storage_env(&s3, "kept");
            (Some(s3), env)
        }
    };
    let place = Place::new(backend).await;
    let config = place.dir.path().join("retention.toml");
    std::fs::write(
        &config,
        "retention_days = 1\n[retention.models]\n\"keeper\" = 30\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let gw = serve_with_env(
        &place,
        &["--sandbox-latency-ms", "100", "--config", &config],
        &env,
    )
    .await;
    let http = reqwest::Client::new();
    let b64 = base64::engine::general_purpose::STANDARD.encode(RED_PNG);
    let tasks = [
        json!({"model": "brief", "prompt": "alone", "aspect_ratio": "1:1", "image": b64}),
        json!({"model": "brief", "prompt": "shared", "aspect_ratio": "1:1"}),
        json!({"model": "keeper", "prompt": "shared", "aspect_ratio": "1:1"}),
    ];
    let mut urls = Vec::new();
    for body in tasks {
        let id = submit_kling(&http, &gw.base, body).await;
        let done = kling_done(&http, &gw.base, &id, Duration::from_secs(60)).await;
        assert_eq!(done["data"]["task_status"], "succeed", "{done}");
        let url = done["data"]["task_result"]["images"][0]["url"].as_str();
        urls.push(url.expect("an image url").to_string());
    }
    let [alone, shared, kept] = &urls[..] else {
        unreachable!()
    };
    assert_eq!(shared, kept, "one file, by content hash");
    let status = async |url: &str| http.get(url).send().await.unwrap().status().as_u16();

    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gc = async |args: &[&str]| {
        let args = [&["storage", "gc", "--json", "--config", &config], args].concat();
        let (ok, out, err) = cli_env(&place, &args, &env).await;
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let days = |n: i64| (chrono::Utc::now() + chrono::Duration::days(n)).to_rfc3339();
    let dry = gc(&["--dry-run", "--as-of", &days(2)]).await;
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["files"], 2, "the day-old result and the input: {dry}");
    assert_eq!(gc(&[]).await["files"], 0, "nothing has expired yet");
    assert_eq!(status(alone).await, 200, "a dry run deletes nothing");

    // Judged later than now, files go before their term: only when asked.
    let later = days(2);
    let args = ["storage", "gc", "--config", &config, "--as-of", &later];
    let (ok, _, err) = cli_env(&place, &args, &env).await;
    assert!(!ok && err.contains("--early"), "{err}");
    assert_eq!(status(alone).await, 200);
    let swept = gc(&["--as-of", &days(2), "--early"]).await;
    assert_eq!(swept["files"], 2, "{swept}");
    assert_eq!(status(alone).await, 404);
    assert_eq!(status(shared).await, 200, "still needed by the 30-day task");
    if let Some(s3) = &s3 {
        let objects = s3.objects("kept").await;
        assert_eq!(objects.len(), 1, "only the shared result: {objects:?}");
    }
    assert_eq!(gc(&["--as-of", &days(2), "--early"]).await["files"], 0);
    assert_eq!(gc(&["--as-of", &days(31), "--early"]).await["files"], 1);
    assert_eq!(status(shared).await, 404);
    drop(gw);
    place.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_expired_files_are_deleted_and_shared_ones_kept() {
    expired_files_are_deleted_and_shared_ones_kept(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_expired_files_are_deleted_and_shared_ones_kept() {
    expired_files_are_deleted_and_shared_ones_kept(Backend::Postgres).await;
}

/// A result over `max_result_mb` fails its task with a reason naming the
/// limit; nothing of it is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_over_the_size_limit_fails_its_task_by_name() {
    let _machine = sharing_the_machine().await;
    let gw = TestApp::on(Backend::Sqlite)
        .with(|s| s.max_result_mb = 1)
        .start()
        .await;
    // A 1080p, 12 s sandbox video is over 1 MB.
    let body = json!({"model": "big", "kind": "video",
                      "input": {"prompt": "a long wide shot", "resolution": "1080p", "duration": 12}});
    let (status, v) = gw.post("/v1/tasks", &gw.admin, body).await;
    assert_eq!(status, 201, "{v}");
    let done = gw.wait_task(&gw.admin, v["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    let reason = done["failure_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("1 MB limit (max_result_mb)"),
        "the reason names the limit: {done}"
    );
    let media = gw.dir.path().join("media/results");
    let kept = std::fs::read_dir(&media).map_or(0, |d| d.count());
    assert_eq!(kept, 0, "nothing of it stored in {}", media.display());
    gw.stop().await;
}
