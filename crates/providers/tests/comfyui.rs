//! The comfyui adapter against the emulated ComfyUI server, with the sample
//! workflow template operators copy: placeholders filled as typed values,
//! real images at the asked size, failures with ComfyUI's reason, restart
//! and cancel, every error class, and channel settings errors.

mod common;
use common::poll_until_done;

use std::time::Duration;

use gengate_core::{ChannelSpec, ProviderKind, Task, TaskKind};
use gengate_providers::comfyui::ComfyUi;
use gengate_providers::http::Upstream;
use gengate_providers::media::{average_color, probe_image, probe_mp4};
use gengate_providers::{OutputData, PollOutcome, Provider, ProviderError, Submission};
use gengate_testkit::comfyui::{ComfyEmu, color_for};
use gengate_testkit::faults::Fault;
use serde_json::Value;

const TEMPLATE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testkit/fixtures/comfyui/txt2img.json"
);

fn template() -> Value {
    serde_json::from_str(&std::fs::read_to_string(TEMPLATE).unwrap()).unwrap()
}

fn task(prompt: &str, n: u32) -> Task {
    let mut t = gengate_testkit::fixtures::pending_task(TaskKind::Image, prompt);
    t.request.n = n;
    t.request.aspect_ratio = "16:9".into();
    t.request.seed = Some(42);
    t.request.negative_prompt = Some("blurry".into());
    t
}

fn adapter_with(emu: &ComfyEmu, key: Option<&str>, wf: Value) -> ComfyUi {
    let up = Upstream::new(&emu.base_url(), Duration::from_secs(5)).unwrap();
    ComfyUi::new(up, &emu.base_url(), key.map(String::from), wf).unwrap()
}

fn adapter(emu: &ComfyEmu) -> ComfyUi {
    adapter_with(emu, None, template())
}

async fn submit(p: &ComfyUi, t: &Task) -> Result<String, ProviderError> {
    let job = Submission::new(t, "sdxl", 0);
    p.submit(job).await.map(|s| s.upstream_ref)
}

async fn fetch(url: &str) -> bytes::Bytes {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await.unwrap()
}

#[tokio::test]
async fn placeholders_are_filled_and_images_come_back_at_the_asked_size() {
    let emu = ComfyEmu::start(Duration::from_millis(100)).await;
    let p = adapter(&emu);
    let r = submit(&p, &task("a red barn", 2)).await.unwrap();
    assert!(matches!(
        p.poll(&r, 0).await.unwrap(),
        PollOutcome::Running { .. }
    ));

    // One run with a batch of two; every placeholder a typed value.
    assert_eq!(emu.prompt_ids(), vec![r.clone()]);
    let wf = emu.prompt(&r).unwrap();
    assert_eq!(wf["3"]["inputs"]["seed"], 42);
    assert_eq!(wf["5"]["inputs"]["width"], 1024);
    assert_eq!(wf["5"]["inputs"]["height"], 576);
    assert_eq!(wf["5"]["inputs"]["batch_size"], 2);
    assert_eq!(wf["6"]["inputs"]["text"], "a red barn");
    assert_eq!(wf["7"]["inputs"]["text"], "blurry");
    // Links and fixed values are left alone.
    assert_eq!(wf["3"]["inputs"]["model"], serde_json::json!(["4", 0]));

    let PollOutcome::Succeeded(out) = poll_until_done(&p, &r).await else {
        panic!("expected success");
    };
    assert_eq!(out.len(), 2);
    for (i, o) in out.iter().enumerate() {
        let OutputData::Url(url) = &o.data else {
            panic!("expected a /view URL, got {:?}", o.data);
        };
        // The subfolder has a space: the query is encoded.
        assert!(
            url.contains("/view?filename=") && url.contains("subfolder=gengate+outputs"),
            "{url}"
        );
        let png = fetch(url).await;
        let info = probe_image(&png).unwrap();
        assert_eq!((info.width, info.height), (1024, 576));
        let want = color_for("a red barn", u32::try_from(i).unwrap());
        let got = average_color(&png).unwrap();
        assert!(
            got.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 24),
            "{got:?} vs {want:?}"
        );
        assert_eq!(o.index, u32::try_from(i).unwrap());
    }
    assert_eq!(emu.submits(), 1);
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn a_template_without_batch_size_runs_n_times_with_successive_seeds() {
    let emu = ComfyEmu::start(Duration::from_millis(50)).await;
    let mut wf = template();
    wf["5"]["inputs"]["batch_size"] = 1.into();
    let p = adapter_with(&emu, None, wf);
    let r = submit(&p, &task("twice", 2)).await.unwrap();
    let ids = emu.prompt_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(r, ids.join(","));
    let seeds: Vec<_> = ids
        .iter()
        .map(|id| emu.prompt(id).unwrap()["3"]["inputs"]["seed"].clone())
        .collect();
    assert_eq!(seeds, [42, 43]);
    let PollOutcome::Succeeded(out) = poll_until_done(&p, &r).await else {
        panic!("expected success");
    };
    assert_eq!(out.iter().map(|o| o.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn video_outputs_are_videos() {
    let emu = ComfyEmu::start(Duration::ZERO).await;
    let mut wf = template();
    wf["9"] = serde_json::json!({
        "class_type": "VHS_VideoCombine",
        "inputs": {"images": ["8", 0], "frame_rate": 24, "filename_prefix": "clip", "format": "video/h264-mp4"}
    });
    wf["5"]["inputs"]["width"] = 256.into();
    wf["5"]["inputs"]["height"] = 144.into();
    let p = adapter_with(&emu, None, wf);
    let r = submit(&p, &task("waves", 1)).await.unwrap();
    let PollOutcome::Succeeded(out) = poll_until_done(&p, &r).await else {
        panic!("expected success");
    };
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].role, gengate_core::ArtifactRole::Video);
    let OutputData::Url(url) = &out[0].data else {
        panic!("expected a URL");
    };
    let info = probe_mp4(&fetch(url).await).unwrap();
    assert_eq!((info.width, info.height), (256, 144));
}

#[tokio::test]
async fn failures_carry_comfyui_s_reason() {
    let emu = ComfyEmu::start(Duration::from_millis(30)).await;
    let p = adapter(&emu);
    let r = submit(&p, &task("FAIL please", 1)).await.unwrap();
    let PollOutcome::Failed(why) = poll_until_done(&p, &r).await else {
        panic!("expected a failure");
    };
    assert!(
        why.contains("KSampler") && why.contains("exceed allowed memory"),
        "{why}"
    );

    // A workflow using a node the server lacks: refused with ComfyUI's words.
    let mut wf = template();
    wf["8"]["class_type"] = "NoSuchNode".into();
    let bad = adapter_with(&emu, None, wf);
    let err = submit(&bad, &task("x", 1)).await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("NoSuchNode does not exist")),
        "{err:?}"
    );
    // A number placeholder left as text is caught by ComfyUI's type checks.
    let mut wf = template();
    wf["5"]["inputs"]["width"] = "{{wide}}".into();
    let bad = adapter_with(&emu, None, wf);
    let err = submit(&bad, &task("x", 1)).await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("node 5 (EmptyLatentImage)") && m.contains("INT")),
        "{err:?}"
    );
    assert_eq!(emu.spec_violations(), 2);
}

#[tokio::test]
async fn a_restarted_server_and_a_canceled_run() {
    let emu = ComfyEmu::start(Duration::from_millis(50)).await;
    let p = adapter(&emu);
    let r = submit(&p, &task("NEVER ends", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(matches!(
        p.poll(&r, 0).await.unwrap(),
        PollOutcome::Running { .. }
    ));
    p.cancel(&r).await.unwrap();
    assert_eq!(emu.interrupts(), 1);
    let PollOutcome::Failed(why) = p.poll(&r, 0).await.unwrap() else {
        panic!("expected the interrupted run to fail");
    };
    assert!(why.contains("interrupted"), "{why}");

    let r = submit(&p, &task("NEVER ends", 1)).await.unwrap();
    emu.restart();
    let PollOutcome::Failed(why) = p.poll(&r, 0).await.unwrap() else {
        panic!("expected a forgotten run to fail");
    };
    assert!(
        why.contains("restarted") && why.contains("submit the task again"),
        "{why}"
    );
}

#[tokio::test]
async fn errors_are_classed() {
    let emu = ComfyEmu::start(Duration::ZERO).await;
    emu.require_api_key("proxy-key");
    let p = adapter_with(&emu, Some("proxy-key"), template());
    let t = task("x", 1);
    let anonymous = adapter(&emu);
    assert!(matches!(
        submit(&anonymous, &t).await,
        Err(ProviderError::Auth(_))
    ));

    emu.inject(Fault::Error {
        status: 429,
        message: "Too many requests".into(),
        retry_after: Some(3),
    });
    let err = submit(&p, &t).await;
    assert!(
        matches!(err, Err(ProviderError::RateLimited { retry_after: Some(d) }) if d == Duration::from_secs(3)),
        "{err:?}"
    );
    for fault in [
        Fault::Error {
            status: 502,
            message: "Bad gateway".into(),
            retry_after: None,
        },
        Fault::Malformed,
        Fault::Reset,
    ] {
        emu.inject(fault.clone());
        let err = submit(&p, &t).await;
        assert!(
            matches!(err, Err(ProviderError::Retryable(_))),
            "{fault:?}: {err:?}"
        );
    }
    // Polls are classed the same way.
    let r = submit(&p, &t).await.unwrap();
    emu.inject(Fault::Error {
        status: 500,
        message: "emulated fault".into(),
        retry_after: None,
    });
    assert!(matches!(
        p.poll(&r, 0).await,
        Err(ProviderError::Retryable(_))
    ));
    assert!(matches!(
        poll_until_done(&p, &r).await,
        PollOutcome::Succeeded(_)
    ));
    assert_eq!(emu.spec_violations(), 0);
}

#[test]
fn from_spec_names_the_field() {
    let mut spec = ChannelSpec::new("gpu", ProviderKind::Comfyui);
    spec.base_url = Some("http://127.0.0.1:9".into());
    let err = |s: &ChannelSpec| gengate_providers::for_channel(s, None).err().unwrap();
    let e = err(&spec);
    assert_eq!(
        (e.channel.as_str(), e.field.as_str()),
        ("gpu", "workflow"),
        "{e}"
    );

    let dir = std::env::temp_dir().join(format!("gengate-comfy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    spec.workflow = Some(dir.join("missing.json").display().to_string());
    let e = err(&spec);
    assert!(
        e.field == "workflow" && e.rule.contains("cannot be read"),
        "{e}"
    );
    for (text, why) in [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object of nodes"),
        (r#"{"1": {"inputs": {}}}"#, "class_type"),
        (
            r#"{"1": {"class_type": "SaveImage", "inputs": {}}}"#,
            "{{prompt}}",
        ),
    ] {
        let f = dir.join("wf.json");
        std::fs::write(&f, text).unwrap();
        spec.workflow = Some(f.display().to_string());
        let e = err(&spec);
        assert!(e.field == "workflow" && e.rule.contains(why), "{text}: {e}");
    }
    spec.workflow = Some(TEMPLATE.into());
    assert_eq!(
        gengate_providers::for_channel(&spec, None).unwrap().kind(),
        "comfyui"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
