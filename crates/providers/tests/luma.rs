//! The luma adapter against the emulated Dream Machine API, which checks
//! every request (and its own answers) against Luma's official OpenAPI spec:
//! each operation, keyframes and extend as Luma receives them, callbacks,
//! real media, and every error class.

mod common;
use common::poll_until_done;

use std::time::Duration;

use gengate_core::{
    ArtifactRole, ChannelSpec, ImageFormat, ImageRole, ProviderKind, Task, TaskKind,
};
use gengate_providers::http::Upstream;
use gengate_providers::luma::Luma;
use gengate_providers::media;
use gengate_providers::{
    InputBytes, OutputData, PollOutcome, Provider, ProviderError, Submission, for_channel,
};
use gengate_testkit::faults::Fault;
use gengate_testkit::kling::color_for;
use gengate_testkit::luma::LumaEmu;
use gengate_testkit::{ImageHost, Receiver};
use serde_json::json;

const KEY: &str = "luma-test-key";
const RUN_FOR: Duration = Duration::from_millis(400);

fn task(kind: TaskKind, prompt: &str) -> Task {
    let mut t = gengate_testkit::fixtures::pending_task(kind, prompt);
    t.request.aspect_ratio = "16:9".into();
    t.request.n = 1;
    t
}

fn adapter(emu: &LumaEmu, key: &str) -> Luma {
    Luma::new(
        Upstream::new(&emu.base_url(), Duration::from_secs(1)).unwrap(),
        key.into(),
    )
}

fn input(role: ImageRole, url: Option<&str>) -> InputBytes {
    InputBytes {
        role,
        format: ImageFormat::Png,
        bytes: bytes::Bytes::from_static(gengate_testkit::RED_PNG),
        url: url.map(String::from),
    }
}

async fn submit(l: &Luma, job: Submission<'_>) -> Result<String, ProviderError> {
    l.submit(job).await.map(|s| s.upstream_ref)
}

/// The one output URL of a finished generation, checked to be a `role`.
async fn output_url(l: &Luma, r: &str, role: ArtifactRole) -> String {
    match poll_until_done(l, r).await {
        PollOutcome::Succeeded(out) => {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].role, role);
            match &out[0].data {
                OutputData::Url(u) => u.clone(),
                other => panic!("expected a URL, got {other:?}"),
            }
        }
        other => panic!("expected success, got {other:?}"),
    }
}

async fn fetch(url: &str) -> bytes::Bytes {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.bytes().await.unwrap()
}

/// Nothing the adapter sent was refused by Luma's spec, and nothing the
/// emulation answered strays from it.
fn assert_faithful(emu: &LumaEmu) {
    assert_eq!(emu.spec_violations(), 0);
    assert_eq!(emu.own_violations(), Vec::<String>::new());
}

#[tokio::test]
async fn text_to_video_becomes_a_real_mp4_and_calls_back() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let receiver = Receiver::start().await;
    let l = adapter(&emu, KEY);
    let mut t = task(TaskKind::Video, "a red kite at dawn");
    t.request.duration_secs = Some(9);
    t.request.loop_video = Some(true);
    t.request.resolution = Some("720p".into());
    let callback = receiver.url("/callbacks/luma/tok-1");
    let mut j = Submission::new(&t, "ray-2", 0);
    j.callback_url = Some(&callback);
    let id = submit(&l, j).await.unwrap();

    assert_eq!(
        emu.request_of(&id).unwrap(),
        json!({
            "model": "ray-2",
            "prompt": "a red kite at dawn",
            "aspect_ratio": "16:9",
            "loop": true,
            "resolution": "720p",
            "duration": "9s",
            "callback_url": callback,
        })
    );
    assert!(matches!(
        l.poll(&id, 0).await.unwrap(),
        PollOutcome::Running { .. }
    ));
    let url = output_url(&l, &id, ArtifactRole::Video).await;
    assert!(url.ends_with(".mp4"), "{url}");
    let info = media::probe_mp4(&fetch(&url).await).unwrap();
    assert_eq!(info.codec, "avc1");
    assert_eq!((info.width, info.height), (160, 96));
    assert!((info.duration_secs - 1.0).abs() < 0.1, "{info:?}");

    // Luma calls back when dreaming starts and when the generation completes.
    let got = receiver.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.path == "/callbacks/luma/tok-1"));
    let dreaming = l.read_callback(&got[0].headers, &got[0].body).unwrap();
    assert_eq!(dreaming.upstream_id, id);
    assert!(matches!(dreaming.outcome, PollOutcome::Running { .. }));
    let done = l.read_callback(&got[1].headers, &got[1].body).unwrap();
    assert_eq!(done.upstream_id, id);
    let PollOutcome::Succeeded(out) = done.outcome else {
        panic!("expected success, got {:?}", done.outcome);
    };
    assert!(matches!(&out[0].data, OutputData::Url(u) if *u == url));
    assert_eq!(emu.callbacks(), 2);

    let err = l.read_callback(&got[0].headers, b"<html>").unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert_eq!(emu.submits(), 1);
    assert_faithful(&emu);
}

#[tokio::test]
async fn images_send_reference_urls_and_come_back_in_the_prompts_colour() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let host = ImageHost::start().await;
    let l = adapter(&emu, KEY);
    let mut t = task(TaskKind::Image, "a blue teapot");
    t.request.image_fidelity = Some(0.6);
    let reference = host.url("/red.png");
    let mut j = Submission::new(&t, "photon-1", 0);
    j.inputs = vec![input(ImageRole::Reference, Some(&reference))];
    let id = submit(&l, j).await.unwrap();
    assert_eq!(
        emu.request_of(&id).unwrap(),
        json!({
            "model": "photon-1",
            "prompt": "a blue teapot",
            "aspect_ratio": "16:9",
            "image_ref": [{"url": reference, "weight": 0.6}],
        })
    );
    let url = output_url(&l, &id, ArtifactRole::Image).await;
    let bytes = fetch(&url).await;
    let info = media::probe_image(&bytes).unwrap();
    assert_eq!(info.format, media::ImageFormat::Jpeg);
    assert_eq!((info.width, info.height), (256, 144));
    let (got, want) = (
        media::average_color(&bytes).unwrap(),
        color_for("a blue teapot", 0),
    );
    for c in 0..3 {
        assert!(got[c].abs_diff(want[c]) < 40, "{got:?} vs {want:?}");
    }

    // One image per generation: more is refused before Luma is asked.
    let mut two = task(TaskKind::Image, "two teapots");
    two.request.n = 2;
    let err = submit(&l, Submission::new(&two, "photon-1", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused(m) if m.contains("n = 1") && m.contains("n = 2")),
        "{err:?}"
    );
    assert_eq!(emu.submits(), 1);
    assert_faithful(&emu);
}

#[tokio::test]
async fn keyframes_and_extend_reach_luma_as_sent() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let l = adapter(&emu, KEY);
    let (start, end) = ("http://127.0.0.1:9/start.png", "http://127.0.0.1:9/end.png");
    let t = task(TaskKind::Video, "a door opening");
    let mut j = Submission::new(&t, "ray-flash-2", 0);
    j.inputs = vec![
        input(ImageRole::Start, Some(start)),
        input(ImageRole::End, Some(end)),
    ];
    let parent = submit(&l, j).await.unwrap();
    assert_eq!(
        emu.request_of(&parent).unwrap()["keyframes"],
        json!({
            "frame0": {"type": "image", "url": start},
            "frame1": {"type": "image", "url": end},
        })
    );
    output_url(&l, &parent, ArtifactRole::Video).await;

    // Extending: Luma continues its own generation; the parent's last frame,
    // which the engine passes along without a URL, is not needed.
    let ext = task(TaskKind::Video, "the door closes");
    let mut j = Submission::new(&ext, "ray-flash-2", 0);
    j.parent_upstream_ref = Some(&parent);
    j.inputs = vec![
        input(ImageRole::Start, None),
        input(ImageRole::End, Some(end)),
    ];
    let child = submit(&l, j).await.unwrap();
    assert_eq!(
        emu.request_of(&child).unwrap()["keyframes"],
        json!({
            "frame0": {"type": "generation", "id": parent},
            "frame1": {"type": "image", "url": end},
        })
    );
    output_url(&l, &child, ArtifactRole::Video).await;

    // Luma fetches inputs by URL: an uploaded start frame cannot be sent.
    let mut j = Submission::new(&t, "ray-2", 0);
    j.inputs = vec![input(ImageRole::Start, None)];
    let err = submit(&l, j).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused(m) if m.contains("start frame") && m.contains("URL")),
        "{err:?}"
    );
    // Extending a generation Luma does not have: its refusal reaches the user.
    let gone = uuid::Uuid::new_v4().to_string();
    let mut j = Submission::new(&ext, "ray-2", 0);
    j.parent_upstream_ref = Some(&gone);
    let err = submit(&l, j).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("400") && m.contains(&gone)),
        "{err:?}"
    );
    assert_eq!(emu.submits(), 2);
    assert_faithful(&emu);
}

#[tokio::test]
async fn errors_are_classed_for_the_engine() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let l = adapter(&emu, KEY);
    let t = task(TaskKind::Video, "waves");
    let attempt = || submit(&l, Submission::new(&t, "ray-2", 0));

    let err = submit(&adapter(&emu, "wrong-key"), Submission::new(&t, "ray-2", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Auth(m) if m.contains("Invalid API key") && !m.contains("wrong-key")),
        "{err:?}"
    );

    emu.inject(Fault::Error {
        status: 429,
        message: "Too many requests".into(),
        retry_after: Some(7),
    });
    let err = attempt().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)),
        "{err:?}"
    );

    let moderation = "prompt not allowed because advanced moderation failed";
    emu.inject(Fault::Error {
        status: 400,
        message: moderation.into(),
        retry_after: None,
    });
    let err = attempt().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains(moderation)),
        "{err:?}"
    );

    // Each a retry for the engine, each with its own reason for operators.
    for (fault, reason) in [
        (
            Fault::Error {
                status: 503,
                message: "Service unavailable".into(),
                retry_after: None,
            },
            "HTTP 503: Service unavailable",
        ),
        (Fault::Malformed, "not a generation"),
        (Fault::Reset, "talking to the upstream failed"),
        // Longer than the adapter's 1 s for one request.
        (
            Fault::Delay(Duration::from_secs(2)),
            "did not answer in time",
        ),
    ] {
        emu.inject(fault.clone());
        let err = attempt().await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Retryable(m) if m.contains(reason)),
            "{fault:?}: {err:?}"
        );
    }
    assert_eq!(emu.submits(), 0);

    // Polls are classed the same way.
    let id = attempt().await.unwrap();
    emu.inject(Fault::Error {
        status: 502,
        message: "Bad gateway".into(),
        retry_after: None,
    });
    let err = l.poll(&id, 0).await.unwrap_err();
    assert!(matches!(err, ProviderError::Retryable(_)), "{err:?}");
    assert!(l.poll(&id, 0).await.is_ok());
    assert_faithful(&emu);
}

#[tokio::test]
async fn failed_generations_say_why_and_cancel_deletes() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let l = adapter(&emu, KEY);
    let failing = task(TaskKind::Video, "please FAIL");
    let id = submit(&l, Submission::new(&failing, "ray-2", 0))
        .await
        .unwrap();
    let outcome = poll_until_done(&l, &id).await;
    assert!(
        matches!(&outcome, PollOutcome::Failed(m) if m.starts_with("luma: ") && m.contains("emulated failure")),
        "{outcome:?}"
    );

    let endless = task(TaskKind::Video, "NEVER stop");
    let id = submit(&l, Submission::new(&endless, "ray-2", 0))
        .await
        .unwrap();
    tokio::time::sleep(RUN_FOR * 2).await;
    assert!(matches!(
        l.poll(&id, 0).await.unwrap(),
        PollOutcome::Running { .. }
    ));
    l.cancel(&id).await.unwrap();
    assert_eq!(emu.deletes(), 1);
    let err = l.poll(&id, 0).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("404") && m.contains("not found")),
        "{err:?}"
    );
    // Already gone is as good as deleted.
    l.cancel(&id).await.unwrap();
    assert_eq!(emu.deletes(), 1);
    assert_faithful(&emu);
}

#[tokio::test]
async fn the_emulation_refuses_what_lumas_spec_refuses() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let l = adapter(&emu, KEY);
    let t = task(TaskKind::Video, "waves");
    let err = submit(&l, Submission::new(&t, "ray-9", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("422") && m.contains("ray-9")),
        "{err:?}"
    );
    let mut odd = task(TaskKind::Image, "a cat");
    odd.request.aspect_ratio = "5:4".into();
    let err = submit(&l, Submission::new(&odd, "photon-1", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("5:4")),
        "{err:?}"
    );
    assert_eq!(emu.spec_violations(), 2);
    assert_eq!(emu.submits(), 0);
}

#[tokio::test]
async fn ping_and_credits_answer_with_the_key_only() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let http = reqwest::Client::new();
    let get = |path: &str, key: &str| {
        http.get(format!("{}{path}", emu.base_url()))
            .bearer_auth(key)
            .send()
    };
    let ping: serde_json::Value = get("/ping", KEY).await.unwrap().json().await.unwrap();
    assert_eq!(ping, json!({"message": "pong"}));
    assert_eq!(get("/credits", "nope").await.unwrap().status(), 401);
    let balance = || async {
        let v: serde_json::Value = get("/credits", KEY).await.unwrap().json().await.unwrap();
        v["credit_balance"].as_f64().unwrap()
    };
    let before = balance().await;
    let t = task(TaskKind::Image, "a cat");
    submit(
        &adapter(&emu, KEY),
        Submission::new(&t, "photon-flash-1", 0),
    )
    .await
    .unwrap();
    assert!(balance().await < before);
    assert_faithful(&emu);
}

#[tokio::test]
async fn channels_need_a_base_url_and_an_api_key() {
    let emu = LumaEmu::start(KEY, RUN_FOR).await;
    let mut spec = ChannelSpec::new("dream", ProviderKind::Luma);
    let err = for_channel(&spec, None).err().unwrap();
    assert_eq!(
        (err.channel.as_str(), err.field.as_str()),
        ("dream", "base_url"),
        "{err}"
    );
    spec.base_url = Some(emu.base_url());
    let err = for_channel(&spec, None).err().unwrap();
    assert_eq!(
        (err.channel.as_str(), err.field.as_str()),
        ("dream", "credentials.api_key"),
        "{err}"
    );
    spec.credentials.api_key = Some(KEY.into());
    let p = for_channel(&spec, None).unwrap();
    assert_eq!(p.kind(), "luma");
    let t = task(TaskKind::Image, "a cat");
    let id = p
        .submit(Submission::new(&t, "photon-1", 0))
        .await
        .unwrap()
        .upstream_ref;
    assert!(emu.request_of(&id).is_some());
}

#[tokio::test]
async fn an_unreachable_upstream_is_retryable() {
    let port = gengate_testkit::fixtures::closed_port();
    let l = Luma::new(
        Upstream::new(
            &format!("http://127.0.0.1:{port}/dream-machine/v1"),
            Duration::from_secs(2),
        )
        .unwrap(),
        KEY.into(),
    );
    let t = task(TaskKind::Video, "x");
    let err = submit(&l, Submission::new(&t, "ray-2", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Retryable(_)), "{err:?}");
}
