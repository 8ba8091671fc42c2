//! The kling adapter against the emulated Kling API: auth either way, each
//! endpoint, and a retaken task finding its first submission.

mod common;
use common::poll_until_done;

use std::time::Duration;

use gengate_core::{ImageFormat, ImageRole, Task, TaskKind};
use gengate_providers::http::Upstream;
use gengate_providers::kling::{Kling, KlingAuth};
use gengate_providers::{InputBytes, OutputData, PollOutcome, Provider, ProviderError, Submission};
use gengate_testkit::{KlingAccount, KlingEmu};

fn task(kind: TaskKind, prompt: &str) -> Task {
    let mut t = gengate_testkit::fixtures::pending_task(kind, prompt);
    t.model = "kling-image".into();
    t.request.aspect_ratio = "16:9".into();
    t.request.n = 1;
    t
}

fn adapter(emu: &KlingEmu, auth: KlingAuth) -> Kling {
    Kling::new(
        Upstream::new(&emu.base_url(), Duration::from_secs(5)).unwrap(),
        auth,
    )
}

async fn submit(k: &Kling, t: &Task, inputs: Vec<InputBytes>) -> Result<String, ProviderError> {
    let job = Submission {
        inputs,
        ..Submission::new(t, "kling-v1", 0)
    };
    k.submit(job).await.map(|s| s.upstream_ref)
}

#[tokio::test]
async fn api_key_auth_and_a_retaken_task_is_not_submitted_twice() {
    let emu = KlingEmu::start(
        KlingAccount::ApiKey("key-1".into()),
        Duration::from_millis(100),
    )
    .await;
    let k = adapter(&emu, KlingAuth::ApiKey("key-1".into()));
    let t = task(TaskKind::Image, "a lighthouse");
    let first = submit(&k, &t, Vec::new()).await.unwrap();
    // The same task again, as after a crash between submit and commit.
    let again = submit(&k, &t, Vec::new()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(emu.submits(), 1);
    assert!(first.starts_with("images/generations/"), "{first}");
    let PollOutcome::Succeeded(out) = poll_until_done(&k, &first).await else {
        panic!("expected success");
    };
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0].data, OutputData::Url(u) if u.starts_with(&emu.base_url())));

    let wrong = adapter(&emu, KlingAuth::ApiKey("key-2".into()));
    let err = submit(&wrong, &task(TaskKind::Image, "x"), Vec::new()).await;
    assert!(
        matches!(err, Err(ProviderError::Auth(ref m)) if m.contains("1000")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_invalid_request_keeps_kling_s_refusal() {
    let emu = KlingEmu::start(KlingAccount::ApiKey("k".into()), Duration::from_millis(100)).await;
    let k = adapter(&emu, KlingAuth::ApiKey("k".into()));
    let t = task(TaskKind::Image, "a lighthouse");
    let job = Submission::new(&t, "no-such-model", 0);
    // 1201 is also how Kling refuses a known external_task_id; the lookup
    // by that id finds nothing, so the refusal itself is the answer.
    let err = k.submit(job).await.map(|s| s.upstream_ref);
    assert!(
        matches!(err, Err(ProviderError::Permanent(ref m)) if m.contains("1201") && m.contains("model_name")),
        "{err:?}"
    );
    assert_eq!(emu.submits(), 0);
}

#[tokio::test]
async fn signed_keys_and_the_video_endpoints() {
    let account = KlingAccount::Keys {
        access_key: "ak".into(),
        secret_key: "sk".into(),
    };
    let emu = KlingEmu::start(account, Duration::from_millis(100)).await;
    let k = adapter(
        &emu,
        KlingAuth::Signed {
            access_key: "ak".into(),
            secret_key: "sk".into(),
        },
    );
    let text = submit(&k, &task(TaskKind::Video, "waves"), Vec::new())
        .await
        .unwrap();
    assert!(text.starts_with("videos/text2video/"), "{text}");
    let start = InputBytes {
        role: ImageRole::Start,
        format: ImageFormat::Png,
        bytes: bytes::Bytes::from_static(gengate_testkit::RED_PNG),
        url: None,
    };
    let image = submit(&k, &task(TaskKind::Video, "waves"), vec![start])
        .await
        .unwrap();
    assert!(image.starts_with("videos/image2video/"), "{image}");
    let PollOutcome::Succeeded(out) = poll_until_done(&k, &image).await else {
        panic!("expected success");
    };
    assert_eq!(out[0].role, gengate_core::ArtifactRole::Video);

    let forged = adapter(
        &emu,
        KlingAuth::Signed {
            access_key: "ak".into(),
            secret_key: "not-sk".into(),
        },
    );
    let err = submit(&forged, &task(TaskKind::Image, "x"), Vec::new()).await;
    assert!(matches!(err, Err(ProviderError::Auth(_))), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_upstream_is_retryable() {
    let port = gengate_testkit::fixtures::closed_port();
    let k = Kling::new(
        Upstream::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap(),
        KlingAuth::ApiKey("k".into()),
    );
    let err = submit(&k, &task(TaskKind::Image, "x"), Vec::new()).await;
    assert!(matches!(err, Err(ProviderError::Retryable(_))), "{err:?}");
}
