//! Another gengate as the upstream: a relay gateway whose channel is the
//! `gengate` provider, in front of an upstream gateway on the sandbox.
//! Clients of the relay get their own tasks and the relay's own copies of
//! the media; the upstream holds one task per relayed task; batched polls,
//! callbacks and refusals are checked against the real upstream server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::{Backend, Gateway, TestApp, poll_until, sandbox_channel, sharing_the_machine};
use gengate::config::Settings;
use gengate_core::{
    ChannelSpec, Credentials, Dialect, ImageFormat, ImageRole, ImageSource, ProviderKind, Task,
    TaskKind,
};
use gengate_providers::media::{probe_image, probe_mp4};
use gengate_providers::{
    InputBytes, OutputData, PollOutcome, Provider, ProviderError, Submission, for_channel,
};
use gengate_testkit::fixtures::pending_task;
use gengate_testkit::{ImageHost, RED_PNG, Receiver, Reply};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn gengate_channel(name: &str, base: &str, key: &str) -> ChannelSpec {
    ChannelSpec {
        base_url: Some(base.into()),
        credentials: Credentials {
            api_key: Some(key.into()),
            ..Credentials::default()
        },
        ..ChannelSpec::new(name, ProviderKind::Gengate)
    }
}

/// An upstream gateway, a key made on it for the relay, and the relay
/// whose channels `relay_channels` builds from the upstream's base and key.
struct Chain {
    up: Gateway,
    relay_key: String,
    down: Gateway,
    client: String,
}

async fn chain(
    upstream: impl FnOnce(&mut Settings),
    relay_channels: impl FnOnce(&str, &str) -> Vec<ChannelSpec>,
    relay: impl FnOnce(&mut Settings),
) -> Chain {
    let up = TestApp::on(Backend::Sqlite).with(upstream).start().await;
    let relay_key = up.new_key("relay").await;
    let channels = relay_channels(&up.base, &relay_key);
    let down = TestApp::on(Backend::Sqlite)
        .with(|s| s.channels = channels)
        .with(relay)
        .start()
        .await;
    let client = down.new_key("client").await;
    Chain {
        up,
        relay_key,
        down,
        client,
    }
}

async fn relay_chain(upstream: impl FnOnce(&mut Settings)) -> Chain {
    chain(
        upstream,
        |base, key| vec![gengate_channel("relay", base, key)],
        |_| {},
    )
    .await
}

impl Chain {
    async fn stop(self) {
        self.down.stop().await;
        self.up.stop().await;
    }

    /// The upstream's task behind a relayed one.
    async fn upstream_task(&self, relayed: &str) -> Task {
        let task = self
            .down
            .store()
            .load_task(relayed.parse().unwrap())
            .await
            .unwrap()
            .expect("the relayed task");
        let up_ref = task.upstream_ref.expect("submitted upstream");
        let id: Uuid = up_ref.rsplit('/').next().unwrap().parse().unwrap();
        self.up
            .store()
            .load_task(id)
            .await
            .unwrap()
            .expect("the upstream's task")
    }
}

async fn create_luma(gw: &Gateway, key: &str, body: Value) -> String {
    let (status, v) = gw.post("/luma/generations", key, body).await;
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn create_kling(gw: &Gateway, key: &str, body: Value) -> String {
    let (status, v) = gw.post("/kling/v1/images/generations", key, body).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["task_id"].as_str().unwrap().to_string()
}

/// Fetches one of the relay's result URLs: it must be the relay's own.
async fn relay_file(down: &Gateway, url: &Value) -> Vec<u8> {
    let url = url.as_str().expect("a media URL");
    assert!(
        url.starts_with(&format!("{}/files/", down.base)),
        "served by the relay itself: {url}"
    );
    let (status, _, bytes) = down.bytes(url).await;
    assert_eq!(status, 200, "{url}");
    bytes
}

async fn upstream_file(up: &Gateway, url: &Value) -> Vec<u8> {
    let (status, _, bytes) = up.bytes(url.as_str().expect("a media URL")).await;
    assert_eq!(status, 200, "{url}");
    bytes
}

#[tokio::test(flavor = "multi_thread")]
async fn videos_and_images_complete_with_the_relays_own_media() {
    let _turn = sharing_the_machine().await;
    let host = ImageHost::start().await;
    let c = relay_chain(|_| {}).await;
    let red = host.url("/red.png");
    let video = create_luma(
        &c.down,
        &c.client,
        json!({"user_prompt": "a lighthouse at dusk", "aspect_ratio": "9:16",
               "duration": "5s", "loop": true, "image_url": red}),
    )
    .await;
    let image = create_kling(
        &c.down,
        &c.client,
        json!({"prompt": "two red kites", "negative_prompt": "clouds", "n": 2,
               "aspect_ratio": "1:1", "image": red, "image_fidelity": 0.4}),
    )
    .await;

    let v = c.down.wait_luma(&c.client, &video).await;
    assert_eq!(v["state"], "completed", "{v}");
    let uv = c.upstream_task(&video).await;
    let (_, theirs) =
        c.up.get(&format!("/luma/generations/{}", uv.id), &c.relay_key)
            .await;
    for field in ["video", "thumbnail", "last_frame"] {
        let mine = relay_file(&c.down, &v[field]["url"]).await;
        assert!(
            mine == upstream_file(&c.up, &theirs[field]["url"]).await,
            "{field}: the relay's copy differs from the upstream's"
        );
        if field == "video" {
            let mp4 = probe_mp4(&mine).expect("an MP4");
            assert!(mp4.height > mp4.width, "9:16 kept: {mp4:?}");
            assert!(mp4.duration_secs > 1.0, "{mp4:?}");
        } else {
            probe_image(&mine).expect("a still");
        }
    }
    assert_eq!(
        v["thumbnail"]["palette"]["grid"],
        theirs["thumbnail"]["palette"]["grid"]
    );

    let k = c.down.wait_kling(&c.client, &image).await;
    assert_eq!(k["task_status"], "succeed", "{k}");
    let ui = c.upstream_task(&image).await;
    let (_, theirs) =
        c.up.get(
            &format!("/kling/v1/images/generations/{}", ui.id),
            &c.relay_key,
        )
        .await;
    let images = k["task_result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{k}");
    for (i, img) in images.iter().enumerate() {
        assert_eq!(img["index"], i);
        let mine = relay_file(&c.down, &img["url"]).await;
        let info = probe_image(&mine).expect("an image");
        assert_eq!(info.width, info.height, "1:1 kept");
        let up_url = &theirs["data"]["task_result"]["images"][i]["url"];
        assert!(
            mine == upstream_file(&c.up, up_url).await,
            "image {i}: the relay's copy differs from the upstream's"
        );
    }

    // One upstream task each, asked for exactly what the client asked.
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Luma).await, 1);
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Kling).await, 1);
    let uv = c.upstream_task(&video).await;
    assert_eq!(
        (
            uv.model.as_str(),
            uv.request.prompt.as_str(),
            uv.request.aspect_ratio.as_str()
        ),
        ("ray-2", "a lighthouse at dusk", "9:16")
    );
    assert_eq!(
        (uv.request.duration_secs, uv.request.loop_video),
        (Some(5), Some(true))
    );
    assert_eq!(
        uv.request.images[0].source,
        ImageSource::Url { url: red.clone() }
    );
    assert_eq!(ui.model, "kling-image");
    assert_eq!(ui.external_id, Some(format!("gengate-{image}")));
    assert_eq!(ui.request.negative_prompt.as_deref(), Some("clouds"));
    assert_eq!((ui.request.n, ui.request.image_fidelity), (2, Some(0.4)));
    assert_eq!(ui.request.images[0].source, ImageSource::Url { url: red });

    // Extending the relayed video continues the upstream's own generation.
    let (status, ext) = c
        .down
        .post(
            &format!("/luma/generations/{video}/extend"),
            &c.client,
            json!({"user_prompt": "the storm comes"}),
        )
        .await;
    assert_eq!(status, 201, "{ext}");
    let ext_id = ext["id"].as_str().unwrap().to_string();
    let done = c.down.wait_luma(&c.client, &ext_id).await;
    assert_eq!(done["state"], "completed", "{done}");
    relay_file(&c.down, &done["video"]["url"]).await;
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Luma).await, 2);
    let ue = c.upstream_task(&ext_id).await;
    assert_eq!(ue.request.extend_from, Some(uv.id));
    assert_eq!(ue.request.prompt, "the storm comes");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_and_refusals_reach_the_client_with_their_reason() {
    let _turn = sharing_the_machine().await;
    let c = chain(
        |s| s.sandbox_failure_rate = 1.0,
        |base, key| {
            vec![
                gengate_channel("relay", base, key),
                // Maps a model to a name the upstream's Luma dialect refuses.
                ChannelSpec {
                    models: BTreeMap::from([("ray-bad".into(), "not a model!".into())]),
                    priority: 1,
                    ..gengate_channel("misnamed", base, key)
                },
            ]
        },
        |_| {},
    )
    .await;
    let video = create_luma(&c.down, &c.client, json!({"user_prompt": "doomed"})).await;
    let image = create_kling(&c.down, &c.client, json!({"prompt": "doomed"})).await;
    let v = c.down.wait_luma(&c.client, &video).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["video"].is_null());
    let reason = v["failure_reason"].as_str().unwrap();
    assert!(reason.contains("simulated upstream failure"), "{reason}");
    let k = c.down.wait_kling(&c.client, &image).await;
    assert_eq!(k["task_status"], "failed", "{k}");
    let reason = k["task_status_msg"].as_str().unwrap();
    assert!(reason.contains("simulated upstream failure"), "{reason}");
    // Failed once upstream, not submitted again.
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Luma).await, 1);
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Kling).await, 1);

    let refused = create_luma(
        &c.down,
        &c.client,
        json!({"user_prompt": "misnamed", "model_name": "ray-bad"}),
    )
    .await;
    let v = c.down.wait_luma(&c.client, &refused).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_eq!(
        v["failure_reason"],
        "the upstream gengate refused the task: model_name: must be 1 to 64 of \
         letters, digits, '-', '_' or '.'"
    );
    assert_eq!(c.up.task_count(&c.relay_key, Dialect::Luma).await, 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_fails_the_task_without_showing_the_key() {
    let _turn = sharing_the_machine().await;
    const WRONG: &str = "gg_not-a-key-of-the-upstream-0123456789abcdef";
    let c = chain(
        |_| {},
        |base, _| vec![gengate_channel("relay", base, WRONG)],
        |s| s.max_attempts = 2,
    )
    .await;

    let provider = for_channel(&gengate_channel("relay", &c.up.base, WRONG), None).unwrap();
    let task = luma_task("refused");
    match provider.submit(Submission::new(&task, "ray-2", 0)).await {
        Err(ProviderError::Auth(detail)) => {
            assert!(detail.contains("401"), "{detail}");
            assert!(!detail.contains(WRONG), "{detail}");
        }
        other => panic!("expected the auth class, got {other:?}"),
    }
    let unknown = format!("luma/{}", Uuid::now_v7());
    let polled = provider.poll_batch(&[&unknown], 0).await;
    assert!(
        matches!(polled[..], [Err(ProviderError::Auth(_))]),
        "{polled:?}"
    );

    let id = create_luma(&c.down, &c.client, json!({"user_prompt": "refused"})).await;
    let v = c.down.wait_luma(&c.client, &id).await;
    assert_eq!(v["state"], "failed", "{v}");
    let reason = v["failure_reason"].as_str().unwrap();
    assert!(reason.contains("credentials"), "{reason}");
    assert!(!reason.contains(WRONG), "{reason}");
    c.stop().await;
}

fn luma_task(prompt: &str) -> Task {
    Task {
        dialect: Dialect::Luma,
        request: gengate_core::GenerationRequest {
            n: 1,
            aspect_ratio: "16:9".into(),
            ..pending_task(TaskKind::Video, prompt).request
        },
        ..pending_task(TaskKind::Video, prompt)
    }
}

async fn submit(provider: &dyn Provider, task: &Task, model: &str) -> String {
    provider
        .submit(Submission::new(task, model, 0))
        .await
        .expect("submitted")
        .upstream_ref
}

fn video_url(outcome: &PollOutcome) -> &str {
    match outcome {
        PollOutcome::Succeeded(outputs) => match &outputs[0].data {
            OutputData::Url(u) => u,
            other => panic!("expected a URL, got {other:?}"),
        },
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn many_video_tasks_are_polled_in_batches() {
    let _turn = sharing_the_machine().await;
    let up = TestApp::on(Backend::Sqlite)
        .channel(ChannelSpec {
            latency_ms: Some(1500),
            ..ChannelSpec::new("sandbox", ProviderKind::Sandbox)
        })
        .channel(ChannelSpec {
            priority: 1,
            failure_rate: Some(1.0),
            ..sandbox_channel("failing", &["doomed"], 100)
        })
        .start()
        .await;
    let key = up.new_key("relay").await;
    let tap = Tap::start(&up.base).await;
    let provider = for_channel(&gengate_channel("relay", &tap.base(), &key), None).unwrap();
    assert_eq!(provider.poll_batch_size(), 100);

    // Finished ones, succeeded and failed in turn, then ones still running.
    let mut finished = Vec::new();
    for i in 0..60 {
        let model = if i % 2 == 0 { "ray-2" } else { "doomed" };
        finished.push(submit(provider.as_ref(), &luma_task("batched"), model).await);
    }
    for r in &finished {
        let id = r.rsplit('/').next().unwrap();
        up.wait_luma(&key, id).await;
    }
    let mut running = Vec::new();
    for _ in 0..45 {
        running.push(submit(provider.as_ref(), &luma_task("batched"), "ray-2").await);
    }
    let image = pending_task(TaskKind::Image, "one image");
    let kling_ref = submit(provider.as_ref(), &image, "kling-image").await;
    let unknown = format!("luma/{}", Uuid::now_v7());

    let mut refs: Vec<&str> = finished.iter().map(String::as_str).collect();
    refs.extend(running.iter().map(String::as_str));
    refs.push(&kling_ref);
    refs.push(&unknown);
    let before = tap.requests();
    let outcomes = provider.poll_batch(&refs, 0).await;
    let sent = tap.requests()[before.len()..].to_vec();
    // 105 Luma tasks: two batch gets (100 + 5); the image on its own.
    let batch = "POST /luma/tasks";
    assert_eq!(
        sent.iter().filter(|l| l.as_str() == batch).count(),
        2,
        "{sent:?}"
    );
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent.contains(&format!(
        "GET /kling/v1/images/generations/{}",
        kling_ref.rsplit('/').next().unwrap()
    )));

    assert_eq!(outcomes.len(), refs.len());
    for (i, (r, outcome)) in finished.iter().zip(&outcomes).enumerate() {
        let outcome = outcome.as_ref().expect("polled");
        let id = r.rsplit('/').next().unwrap();
        if i % 2 == 0 {
            let (_, upstream) = up.get(&format!("/luma/generations/{id}"), &key).await;
            assert_eq!(video_url(outcome), upstream["video"]["url"], "{r}");
        } else {
            assert!(
                matches!(outcome, PollOutcome::Failed(m) if m.contains("simulated upstream failure")),
                "{r}: {outcome:?}"
            );
        }
    }
    for (r, outcome) in running.iter().zip(&outcomes[60..105]) {
        assert!(
            matches!(outcome, Ok(PollOutcome::Running { .. })),
            "{r}: {outcome:?}"
        );
    }
    assert!(outcomes[105].is_ok(), "{:?}", outcomes[105]);
    assert!(
        matches!(&outcomes[106], Err(ProviderError::Permanent(m)) if m.contains("does not know")),
        "{:?}",
        outcomes[106]
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retaken_image_task_is_submitted_once_with_its_uploaded_image() {
    let _turn = sharing_the_machine().await;
    let up = TestApp::on(Backend::Sqlite).start().await;
    let key = up.new_key("relay").await;
    let provider = for_channel(&gengate_channel("relay", &up.base, &key), None).unwrap();
    let task = pending_task(TaskKind::Image, "retaken");
    // An image the client uploaded has no URL: it goes up as base64.
    let uploaded = || InputBytes {
        role: ImageRole::Reference,
        format: ImageFormat::Png,
        bytes: RED_PNG.into(),
        url: None,
    };
    let mut refs = Vec::new();
    for _ in 0..2 {
        let job = Submission {
            inputs: vec![uploaded()],
            ..Submission::new(&task, "kling-image", 0)
        };
        refs.push(provider.submit(job).await.expect("submitted").upstream_ref);
    }
    assert_eq!(refs[0], refs[1]);
    assert_eq!(up.task_count(&key, Dialect::Kling).await, 1);
    let id = refs[0].rsplit('/').next().unwrap().parse().unwrap();
    let upstream = up.store().load_task(id).await.unwrap().unwrap();
    let sha = hex::encode(Sha256::digest(RED_PNG));
    assert_eq!(
        upstream.request.images[0].source,
        ImageSource::Stored {
            key: format!("inputs/{sha}.png"),
            format: ImageFormat::Png
        }
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_callbacks_read_as_news_of_the_task() {
    let _turn = sharing_the_machine().await;
    let rx = Receiver::start().await;
    let up = TestApp::on(Backend::Sqlite).start().await;
    let key = up.new_key("relay").await;
    // With the relay key's signing secret, callbacks must carry its signature.
    let mut channel = gengate_channel("relay", &up.base, &key);
    channel.credentials.webhook_secret = up.key_record(&key).await.webhook_secret;
    assert!(channel.credentials.webhook_secret.is_some());
    let provider = for_channel(&channel, None).unwrap();
    let video = luma_task("called back");
    let image = pending_task(TaskKind::Image, "called back");
    let mut refs = Vec::new();
    for (task, model, path) in [
        (&video, "ray-2", "/video"),
        (&image, "kling-image", "/image"),
    ] {
        let url = rx.url(path);
        let job = Submission {
            callback_url: Some(&url),
            ..Submission::new(task, model, 0)
        };
        refs.push((provider.submit(job).await.unwrap().upstream_ref, path));
    }
    for (upstream_ref, path) in refs {
        // Every change is called back; wait for the one announcing the end.
        let last = poll_until(
            "a callback announcing the end",
            WAIT,
            Duration::from_millis(200),
            async || {
                let got: Vec<_> = rx
                    .received()
                    .into_iter()
                    .filter(|r| r.path == path)
                    .collect();
                got.iter()
                    .map(|r| provider.read_callback(&r.headers, &r.body).expect("read"))
                    .find(|n| !matches!(n.outcome, PollOutcome::Running { .. }))
                    .ok_or_else(|| format!("{} callbacks", got.len()))
            },
        )
        .await;
        assert!(
            upstream_ref.ends_with(&last.upstream_id),
            "{upstream_ref} vs {}",
            last.upstream_id
        );
        let polled = provider.poll(&upstream_ref, 0).await.unwrap();
        let urls = |o: &PollOutcome| match o {
            PollOutcome::Succeeded(outs) => outs
                .iter()
                .map(|o| match &o.data {
                    OutputData::Url(u) => u.clone(),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("expected success, got {other:?}"),
        };
        assert_eq!(urls(&last.outcome), urls(&polled), "{path}");
        // The same callback, altered on the way, is refused.
        let genuine = rx.received().into_iter().find(|r| r.path == path).unwrap();
        let mut altered = genuine.body.to_vec();
        altered.push(b' ');
        let refused = provider.read_callback(&genuine.headers, &altered);
        assert!(
            matches!(refused, Err(ProviderError::Auth(_))),
            "{refused:?}"
        );
    }
    let unsigned = provider.read_callback(&Default::default(), b"{}");
    assert!(
        matches!(unsigned, Err(ProviderError::Auth(_))),
        "{unsigned:?}"
    );
    up.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_that_are_not_gengates_are_classed() {
    let _turn = sharing_the_machine().await;
    let mut fake = Receiver::start().await;
    let provider = for_channel(&gengate_channel("relay", &fake.url(""), "gg_k"), None).unwrap();
    let task = luma_task("classed");
    let reply = |status, retry_after_secs| Reply {
        retry_after_secs,
        ..Reply::status(status)
    };
    fake.script([
        reply(503, None),
        reply(429, Some(7)),
        reply(200, None),
        reply(400, None),
    ]);
    let mut classes = Vec::new();
    for _ in 0..4 {
        classes.push(
            provider
                .submit(Submission::new(&task, "ray-2", 0))
                .await
                .unwrap_err(),
        );
    }
    assert!(
        matches!(&classes[0], ProviderError::Retryable(m) if m.contains("503")),
        "{classes:?}"
    );
    assert!(
        matches!(classes[1], ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{classes:?}"
    );
    assert!(
        matches!(&classes[2], ProviderError::Retryable(m) if m.contains("not JSON")),
        "{classes:?}"
    );
    assert!(
        matches!(&classes[3], ProviderError::Permanent(m) if m.contains("400")),
        "{classes:?}"
    );
    // The key went up as a bearer token, and nowhere else.
    assert!(
        fake.received()
            .iter()
            .all(|r| r.headers["authorization"] == "Bearer gg_k")
    );
    fake.down();
    let down = provider.submit(Submission::new(&task, "ray-2", 0)).await;
    assert!(
        matches!(&down, Err(ProviderError::Retryable(_))),
        "{down:?}"
    );
}

/// A TCP relay in front of a gateway that notes the request line of every
/// HTTP request passing through. (The upstream's /metrics cannot count
/// them: the recorder is process-wide, shared by every gateway in the
/// test binary.)
struct Tap {
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    async fn start(target: &str) -> Tap {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&target).await.unwrap();
                tokio::spawn(pipe(client, server, seen.clone()));
            }
        });
        Tap { addr, lines }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `METHOD /path` of every request so far, in order of arrival.
    fn requests(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Copies both ways, reading the client's side as HTTP/1.1 requests: a
/// head up to the blank line, then `Content-Length` bytes of body.
async fn pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = [0u8; 16 * 1024];
        let mut pending = Vec::new();
        let mut body_left = 0;
        while let Ok(n @ 1..) = cr.read(&mut buf).await {
            pending.extend_from_slice(&buf[..n]);
            loop {
                if body_left > 0 {
                    let skip = body_left.min(pending.len());
                    pending.drain(..skip);
                    body_left -= skip;
                    if body_left > 0 {
                        break;
                    }
                }
                let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    break;
                };
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                pending.drain(..end + 4);
                let mut head_lines = head.lines();
                let request = head_lines.next().unwrap_or_default();
                lines
                    .lock()
                    .unwrap()
                    .push(request.trim_end_matches(" HTTP/1.1").to_string());
                body_left = head_lines
                    .filter_map(|h| h.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = tokio::io::copy(&mut sr, &mut cw);
    let _ = tokio::join!(up, down);
}
