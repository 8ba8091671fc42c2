//! The replicate adapter against the emulated Replicate API: predictions by
//! model and by version (checked against the official spec), real output
//! files, cancel, error classes, and signed webhooks read back.

use std::time::Duration;

use gengate_core::{
    ArtifactRole, ChannelSpec, ImageFormat, ImageRole, ProviderKind, Task, TaskKind,
};
use gengate_providers::http::Upstream;
use gengate_providers::replicate::Replicate;
use gengate_providers::{
    InputBytes, Output, OutputData, PollOutcome, Provider, ProviderError, Submission,
};
use gengate_testkit::Receiver;
use gengate_testkit::faults::Fault;
use gengate_testkit::fixtures::json_of;
use gengate_testkit::replicate::{
    IMAGE_MODEL, IMAGE_VERSION, ReplicateEmu, VIDEO_MODEL, VIDEO_VERSION, sign,
};

const TOKEN: &str = "r8_test_token";
const RUN_FOR: Duration = Duration::from_millis(200);

async fn emu() -> ReplicateEmu {
    ReplicateEmu::start(TOKEN, RUN_FOR).await
}

fn adapter_with(
    emu: &ReplicateEmu,
    token: &str,
    secret: Option<&str>,
    timeout: Duration,
) -> Replicate {
    let upstream = Upstream::new(&emu.base_url(), timeout).unwrap();
    Replicate::new(upstream, token.into(), secret).unwrap()
}

fn adapter(emu: &ReplicateEmu) -> Replicate {
    adapter_with(
        emu,
        TOKEN,
        Some(&emu.webhook_secret()),
        Duration::from_secs(5),
    )
}

fn task(kind: TaskKind, prompt: &str, n: u32) -> Task {
    let mut t = gengate_testkit::fixtures::pending_task(kind, prompt);
    t.request.n = n;
    t
}

async fn submit_to(
    r: &Replicate,
    t: &Task,
    model: &str,
    inputs: Vec<InputBytes>,
    callback_url: Option<&str>,
) -> Result<String, ProviderError> {
    let job = Submission {
        inputs,
        callback_url,
        ..Submission::new(t, model, 0)
    };
    r.submit(job).await.map(|s| s.upstream_ref)
}

async fn submit(r: &Replicate, prompt: &str) -> Result<String, ProviderError> {
    submit_to(
        r,
        &task(TaskKind::Image, prompt, 1),
        IMAGE_MODEL,
        Vec::new(),
        None,
    )
    .await
}

/// Polls until the prediction ends; also answers whether a progress
/// figure was seen on the way.
async fn poll_until_done(r: &Replicate, id: &str) -> (PollOutcome, bool) {
    let mut saw_progress = false;
    for _ in 0..200 {
        match r.poll(id, 0).await.unwrap() {
            PollOutcome::Running { progress, .. } => {
                saw_progress |= progress.is_some();
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            done => return (done, saw_progress),
        }
    }
    panic!("{id} never finished");
}

async fn succeeded(r: &Replicate, id: &str) -> Vec<Output> {
    match poll_until_done(r, id).await.0 {
        PollOutcome::Succeeded(out) => out,
        other => panic!("expected success, got {other:?}"),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn fetch(o: &Output) -> bytes::Bytes {
    let OutputData::Url(url) = &o.data else {
        panic!("expected a URL, got {:?}", o.data);
    };
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.bytes().await.unwrap()
}

fn png_input(url: Option<&str>, role: ImageRole) -> InputBytes {
    InputBytes {
        role,
        format: ImageFormat::Png,
        bytes: bytes::Bytes::from_static(gengate_testkit::RED_PNG),
        url: url.map(String::from),
    }
}

#[tokio::test]
async fn by_model_and_by_version_with_real_files_and_no_spec_violation() {
    let emu = emu().await;
    let r = adapter(&emu);

    let mut t = task(TaskKind::Image, "a lighthouse at dusk", 2);
    t.request.aspect_ratio = "16:9".into();
    t.request.negative_prompt = Some("fog".into());
    t.request.seed = Some(42);
    let by_model = submit_to(&r, &t, IMAGE_MODEL, Vec::new(), None)
        .await
        .unwrap();
    let (done, saw_progress) = poll_until_done(&r, &by_model).await;
    assert!(saw_progress, "progress is read from the logs' tqdm bar");
    let PollOutcome::Succeeded(out) = done else {
        panic!("expected success, got {done:?}");
    };
    assert_eq!(out.len(), 2);
    let mut files = Vec::new();
    for (i, o) in out.iter().enumerate() {
        assert_eq!((o.role, o.index), (ArtifactRole::Image, i as u32));
        let png = fetch(o).await;
        let info = gengate_providers::media::probe_image(&png).unwrap();
        assert_eq!((info.width, info.height), (256, 144));
        files.push(png);
    }
    assert_ne!(files[0], files[1], "each output is its own image");

    let pinned = format!("{IMAGE_MODEL}:{IMAGE_VERSION}");
    let reference = png_input(Some("https://images.example/ref.png"), ImageRole::Reference);
    let by_pinned = submit_to(
        &r,
        &task(TaskKind::Image, "a boat", 1),
        &pinned,
        vec![reference],
        None,
    )
    .await
    .unwrap();
    assert_eq!(succeeded(&r, &by_pinned).await.len(), 1);

    let start = png_input(None, ImageRole::Start);
    let mut v = task(TaskKind::Video, "waves", 1);
    v.request.duration_secs = Some(5);
    let by_version = submit_to(&r, &v, VIDEO_VERSION, vec![start], None)
        .await
        .unwrap();
    let out = succeeded(&r, &by_version).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].role, ArtifactRole::Video);
    let mp4 = fetch(&out[0]).await;
    assert_eq!(
        gengate_providers::media::probe_mp4(&mp4).unwrap().codec,
        "avc1"
    );

    // What went up, as the models received it.
    let inputs = emu.inputs();
    assert_eq!(inputs[0]["prompt"], "a lighthouse at dusk");
    assert_eq!(inputs[0]["num_outputs"], 2);
    assert_eq!(inputs[0]["aspect_ratio"], "16:9");
    assert_eq!(inputs[0]["negative_prompt"], "fog");
    assert_eq!(inputs[0]["seed"], 42);
    assert_eq!(inputs[1]["image"], "https://images.example/ref.png");
    let data_uri = inputs[2]["image"].as_str().unwrap();
    assert!(data_uri.starts_with("data:image/png;base64,"), "{data_uri}");
    assert_eq!(inputs[2]["duration"], 5);
    assert!(inputs[2].get("num_outputs").is_none());

    assert_eq!(emu.submits(), 3);
    assert_eq!(emu.spec_violations(), 0);
    assert_eq!(emu.response_violations(), 0);
}

#[tokio::test]
async fn cancel_and_failure_reach_the_user_as_reasons() {
    let emu = emu().await;
    let r = adapter(&emu);
    let never = submit(&r, "NEVER ends").await.unwrap();
    r.cancel(&never).await.unwrap();
    assert_eq!(emu.cancels(), 1);
    let (done, _) = poll_until_done(&r, &never).await;
    assert!(
        matches!(&done, PollOutcome::Failed(m) if m == "canceled upstream"),
        "{done:?}"
    );

    let fail = submit(&r, "please FAIL").await.unwrap();
    let (done, _) = poll_until_done(&r, &fail).await;
    assert!(
        matches!(&done, PollOutcome::Failed(m) if m.contains("emulated model failure")),
        "{done:?}"
    );
    assert_eq!(emu.spec_violations(), 0);
    assert_eq!(emu.response_violations(), 0);
}

#[tokio::test]
async fn errors_are_classed() {
    let emu = emu().await;
    let r = adapter(&emu);

    let wrong = adapter_with(&emu, "r8_wrong", None, Duration::from_secs(5));
    let err = submit(&wrong, "x").await;
    assert!(
        matches!(&err, Err(ProviderError::Auth(m)) if m.contains("valid authentication token") && !m.contains("r8_wrong")),
        "{err:?}"
    );

    emu.inject(Fault::Error {
        status: 429,
        message: "Request was throttled.".into(),
        retry_after: Some(7),
    });
    let err = submit(&r, "x").await;
    assert!(
        matches!(err, Err(ProviderError::RateLimited { retry_after: Some(d) }) if d == Duration::from_secs(7)),
        "{err:?}"
    );

    emu.inject(Fault::Error {
        status: 503,
        message: "Service unavailable".into(),
        retry_after: None,
    });
    let err = submit(&r, "x").await;
    assert!(matches!(err, Err(ProviderError::Retryable(_))), "{err:?}");

    emu.inject(Fault::Malformed);
    let err = submit(&r, "x").await;
    assert!(
        matches!(&err, Err(ProviderError::Retryable(m)) if m.contains("malformed")),
        "{err:?}"
    );

    emu.inject(Fault::Reset);
    let err = submit(&r, "x").await;
    assert!(matches!(err, Err(ProviderError::Retryable(_))), "{err:?}");

    let impatient = adapter_with(&emu, TOKEN, None, Duration::from_millis(300));
    emu.inject(Fault::Delay(Duration::from_secs(1)));
    let err = submit(&impatient, "x").await;
    assert!(
        matches!(&err, Err(ProviderError::Retryable(m)) if m.contains("in time")),
        "{err:?}"
    );

    // The upstream's own refusals keep its message.
    let err = submit(&r, "   ").await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("422") && m.contains("prompt is required")),
        "{err:?}"
    );
    let t = task(TaskKind::Image, "x", 1);
    let err = submit_to(&r, &t, &"0".repeat(64), Vec::new(), None).await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("does not exist")),
        "{err:?}"
    );
    let err = submit_to(&r, &t, "someone/else", Vec::new(), None).await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("404")),
        "{err:?}"
    );
    let before = emu.submits();
    // A model name the adapter cannot send: refused before any request.
    let err = submit_to(&r, &t, "flux", Vec::new(), None).await;
    assert!(matches!(err, Err(ProviderError::Refused(_))), "{err:?}");

    // Nothing was created by any of that, and the upstream recovered.
    assert_eq!((before, emu.submits()), (0, 0));
    assert_eq!(
        succeeded(&r, &submit(&r, "fine").await.unwrap())
            .await
            .len(),
        1
    );
    assert_eq!(emu.spec_violations(), 0);
    assert_eq!(emu.response_violations(), 0);
}

#[tokio::test]
async fn the_emulation_refuses_what_the_spec_refuses() {
    let emu = emu().await;
    let post = |path: &str, body: serde_json::Value| {
        client()
            .post(format!("{}{path}", emu.base_url()))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let resp = post(
        "/predictions",
        serde_json::json!({"version": IMAGE_VERSION, "input": 3}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("/input"),
        "{problem}"
    );
    let by_model = format!("/models/{VIDEO_MODEL}/predictions");
    let resp = post(
        &by_model,
        serde_json::json!({"version": VIDEO_VERSION, "input": {"prompt": "x"}}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(emu.spec_violations(), 2);
    assert_eq!(emu.submits(), 0);

    // The signing secret is also where the real API serves it.
    let secret = json_of(
        client()
            .get(format!("{}/webhooks/default/secret", emu.base_url()))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(secret["key"], emu.webhook_secret());
}

#[tokio::test]
async fn webhooks_arrive_once_per_task_and_are_verified() {
    let emu = emu().await;
    let r = adapter(&emu);
    let receiver = Receiver::start().await;
    let done_url = receiver.url("/callbacks/replicate/t-done");
    let canceled_url = receiver.url("/callbacks/replicate/t-canceled");
    let t = task(TaskKind::Image, "a red kite", 2);
    let id = submit_to(&r, &t, IMAGE_MODEL, Vec::new(), Some(&done_url))
        .await
        .unwrap();
    let never = submit_to(
        &r,
        &task(TaskKind::Image, "NEVER", 1),
        IMAGE_MODEL,
        Vec::new(),
        Some(&canceled_url),
    )
    .await
    .unwrap();
    r.cancel(&never).await.unwrap();
    receiver.wait_for(2, Duration::from_secs(5)).await;
    // Long enough for any further event to have been sent.
    tokio::time::sleep(RUN_FOR * 2).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one callback per task, the completed one");
    let done = got.iter().find(|g| g.path.ends_with("t-done")).unwrap();
    let canceled = got.iter().find(|g| g.path.ends_with("t-canceled")).unwrap();

    let news = r.read_callback(&done.headers, &done.body).unwrap();
    assert_eq!(news.upstream_id, id);
    assert!(
        matches!(&news.outcome, PollOutcome::Succeeded(out) if out.len() == 2),
        "{:?}",
        news.outcome
    );
    let news = r.read_callback(&canceled.headers, &canceled.body).unwrap();
    assert_eq!(news.upstream_id, never);
    assert!(
        matches!(&news.outcome, PollOutcome::Failed(m) if m == "canceled upstream"),
        "{:?}",
        news.outcome
    );

    let tampered = String::from_utf8_lossy(&done.body).replace("a red kite", "a red kits");
    let err = r.read_callback(&done.headers, tampered.as_bytes());
    assert!(matches!(err, Err(ProviderError::Auth(_))), "{err:?}");

    let other_secret = "whsec_c2VjcmV0LW9mLWFub3RoZXItYWNjb3VudA==";
    let stranger = adapter_with(&emu, TOKEN, Some(other_secret), Duration::from_secs(5));
    let err = stranger.read_callback(&done.headers, &done.body);
    assert!(matches!(err, Err(ProviderError::Auth(_))), "{err:?}");

    // Genuinely signed, but ten minutes old: a replay.
    let stale_ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 600;
    let mut stale = done.headers.clone();
    let msg = done.headers["webhook-id"].to_str().unwrap().to_string();
    stale.insert("webhook-timestamp", stale_ts.to_string().parse().unwrap());
    let signature = sign(&emu.webhook_secret(), &msg, stale_ts, &done.body);
    stale.insert("webhook-signature", signature.parse().unwrap());
    let err = r.read_callback(&stale, &done.body);
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("5 minutes")),
        "{err:?}"
    );
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn the_emulation_honours_other_event_filters() {
    let emu = emu().await;
    let receiver = Receiver::start().await;
    let body = serde_json::json!({
        "input": {"prompt": "x"},
        "webhook": receiver.url("/hook"),
        "webhook_events_filter": ["start", "completed"],
    });
    let resp = client()
        .post(format!(
            "{}/models/{IMAGE_MODEL}/predictions",
            emu.base_url()
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    receiver.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(RUN_FOR).await;
    let statuses: Vec<String> = receiver
        .received()
        .iter()
        .map(|g| {
            serde_json::from_slice::<serde_json::Value>(&g.body).unwrap()["status"].to_string()
        })
        .collect();
    assert_eq!(statuses, ["\"starting\"", "\"succeeded\""]);
}

#[test]
fn channels_name_the_missing_or_bad_credential() {
    let mut spec = ChannelSpec::new("r", ProviderKind::Replicate);
    spec.base_url = Some("http://127.0.0.1:9/v1".into());
    let err = gengate_providers::for_channel(&spec, None).err().unwrap();
    assert_eq!(
        (err.channel.as_str(), err.field.as_str()),
        ("r", "credentials.api_key"),
        "{err}"
    );
    spec.credentials.api_key = Some(TOKEN.into());
    spec.credentials.webhook_secret = Some("whsec_not base64!".into());
    let err = gengate_providers::for_channel(&spec, None).err().unwrap();
    assert_eq!(err.field, "credentials.webhook_secret", "{err}");
    spec.credentials.webhook_secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    let p = gengate_providers::for_channel(&spec, None).unwrap();
    assert_eq!(p.kind(), "replicate");
}
