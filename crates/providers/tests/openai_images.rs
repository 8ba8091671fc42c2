//! The openai-images adapter against the emulated OpenAI images API: real
//! images of the asked size, requests the spec and the models accept,
//! images answered at submit however long the request takes, and every
//! error class.

use std::time::Duration;

use gengate_core::{ChannelSpec, ProviderKind, Task, TaskKind};
use gengate_providers::media::{average_color, probe_image};
use gengate_providers::openai_images::OpenAiImages;
use gengate_providers::{Output, OutputData, PollOutcome, Provider, ProviderError, Submission};
use gengate_testkit::faults::Fault;
use gengate_testkit::openai_images::{OpenAiImagesEmu, color_for};

const KEY: &str = "sk-test-1";

fn task(prompt: &str, n: u32) -> Task {
    let mut t = gengate_testkit::fixtures::pending_task(TaskKind::Image, prompt);
    t.request.n = n;
    // dall-e-2's smallest square keeps the emulation's rendering quick.
    t.request.resolution = Some("256x256".into());
    t
}

fn adapter(emu: &OpenAiImagesEmu, key: Option<&str>) -> OpenAiImages {
    OpenAiImages::new(&emu.base_url(), key.map(String::from)).unwrap()
}

async fn submit(p: &OpenAiImages, t: &Task, model: &str) -> Result<Vec<Output>, ProviderError> {
    let job = Submission::new(t, model, 0);
    let submitted = p.submit(job).await?;
    assert!(submitted.upstream_ref.starts_with("oai_"));
    Ok(submitted.outputs.expect("images answered at submit"))
}

/// Each output decoded: (width, height, average colour).
fn decoded(out: &[Output]) -> Vec<(u32, u32, [u8; 3])> {
    out.iter()
        .map(|o| {
            let OutputData::Inline { bytes, extension } = &o.data else {
                panic!("expected inline bytes, got {:?}", o.data);
            };
            assert_eq!(*extension, "png");
            let info = probe_image(bytes).unwrap();
            (info.width, info.height, average_color(bytes).unwrap())
        })
        .collect()
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
}

#[tokio::test]
async fn images_come_back_inline_at_the_asked_size() {
    let emu = OpenAiImagesEmu::start(Some(KEY.into()), Duration::from_millis(30)).await;
    let p = adapter(&emu, Some(KEY));
    let t = task("a red lighthouse", 2);
    let out = submit(&p, &t, "dall-e-2").await.unwrap();
    let images = decoded(&out);
    assert_eq!(images.len(), 2);
    for (i, (w, h, color)) in images.into_iter().enumerate() {
        assert_eq!((w, h), (256, 256));
        let want = color_for("a red lighthouse", u32::try_from(i).unwrap());
        assert!(near(color, want), "image {i}: {color:?} vs {want:?}");
        assert_eq!(out[i].index, u32::try_from(i).unwrap());
    }
    let sent = emu.last_request().unwrap();
    assert_eq!(sent["size"], "256x256");
    assert_eq!(sent["n"], 2);
    assert_eq!(sent["response_format"], "b64_json");
    assert_eq!(sent["user"], t.owner.to_string());
    assert_eq!(emu.submits(), 1);
    assert_eq!(emu.spec_violations(), 0);
    // A poll comes only if the images could not be stored: nothing is kept
    // upstream, so the task fails clearly instead of hanging.
    let PollOutcome::Failed(why) = p.poll("oai_x", 0).await.unwrap() else {
        panic!("expected a failure");
    };
    assert!(why.contains("submit the task again"), "{why}");
}

#[tokio::test]
async fn dall_e_3_gets_one_request_per_image_and_gpt_image_no_response_format() {
    let emu = OpenAiImagesEmu::start(Some(KEY.into()), Duration::ZERO).await;
    let p = adapter(&emu, Some(KEY));
    let mut t = task("two moons", 2);
    t.request.aspect_ratio = "16:9".into();
    t.request.resolution = None;
    let out = submit(&p, &t, "dall-e-3").await.unwrap();
    let sizes: Vec<_> = decoded(&out).into_iter().map(|(w, h, _)| (w, h)).collect();
    assert_eq!(sizes, [(1792, 1024), (1792, 1024)]);
    let indices: Vec<_> = out.iter().map(|o| o.index).collect();
    assert_eq!(indices, [0, 1]);
    assert_eq!(emu.submits(), 2);
    assert_eq!(emu.last_request().unwrap()["n"], 1);

    let mut t = task("a square", 1);
    t.request.resolution = None;
    assert_eq!(submit(&p, &t, "gpt-image-1").await.unwrap().len(), 1);
    let sent = emu.last_request().unwrap();
    assert!(sent.get("response_format").is_none(), "{sent}");
    assert_eq!(sent["size"], "1024x1024");
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn a_keyless_server_answering_urls() {
    let emu = OpenAiImagesEmu::start(None, Duration::ZERO).await;
    emu.answer_with_urls(true);
    let p = adapter(&emu, None);
    let mut t = task("a field", 1);
    t.request.resolution = Some("320x192".into());
    let out = submit(&p, &t, "local-sd").await.unwrap();
    let OutputData::Url(url) = &out[0].data else {
        panic!("expected a URL, got {:?}", out[0].data);
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let png = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    let info = probe_image(&png).unwrap();
    assert_eq!((info.width, info.height), (320, 192));
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn errors_are_classed() {
    let emu = OpenAiImagesEmu::start(Some(KEY.into()), Duration::ZERO).await;
    let p = adapter(&emu, Some(KEY));
    let t = task("x", 1);

    let wrong = adapter(&emu, Some("sk-wrong"));
    let err = submit(&wrong, &t, "dall-e-2").await;
    assert!(
        matches!(&err, Err(ProviderError::Auth(m)) if m.contains("Incorrect API key")),
        "{err:?}"
    );
    let none = adapter(&emu, None);
    assert!(matches!(
        submit(&none, &t, "dall-e-2").await,
        Err(ProviderError::Auth(_))
    ));

    emu.inject(Fault::Error {
        status: 429,
        message: "Rate limit reached for images per minute. Please try again later.".into(),
        retry_after: Some(7),
    });
    let err = submit(&p, &t, "dall-e-2").await;
    assert!(
        matches!(err, Err(ProviderError::RateLimited { retry_after: Some(d) }) if d == Duration::from_secs(7)),
        "{err:?}"
    );
    for fault in [
        Fault::Error {
            status: 503,
            message: "The server had an error while processing your request.".into(),
            retry_after: None,
        },
        Fault::Malformed,
        Fault::Reset,
    ] {
        emu.inject(fault.clone());
        let err = submit(&p, &t, "dall-e-2").await;
        let Err(ProviderError::Retryable(why)) = err else {
            panic!("{fault:?}: expected retryable, got {err:?}");
        };
        // A reset is a transport failure, not an answer that failed to parse.
        let transport = why.contains("talking to the upstream failed");
        assert_eq!(transport, matches!(fault, Fault::Reset), "{fault:?}: {why}");
    }

    let err = submit(&p, &task("FAIL this", 1), "dall-e-2").await;
    let Err(ProviderError::Permanent(why)) = err else {
        panic!("expected a permanent refusal, got {err:?}");
    };
    assert!(
        why.contains("content policy") && why.contains("safety system"),
        "{why}"
    );
    // Nothing in the reason a user should not see.
    assert!(!why.contains(KEY) && !why.contains("127.0.0.1"), "{why}");

    // The model's own rules are upstream refusals too.
    let err = submit(&p, &t, "no-such-model").await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("does not exist")),
        "{err:?}"
    );
    assert_eq!(emu.spec_violations(), 0);
}

#[tokio::test]
async fn a_slow_answer_is_awaited_and_a_slow_refusal_still_classed() {
    let emu = OpenAiImagesEmu::start(Some(KEY.into()), Duration::from_millis(300)).await;
    let p = adapter(&emu, Some(KEY));
    assert_eq!(
        submit(&p, &task("slow", 1), "dall-e-2")
            .await
            .unwrap()
            .len(),
        1
    );
    emu.inject(Fault::Delay(Duration::from_millis(200)));
    let err = submit(&p, &task("FAIL later", 1), "dall-e-2").await;
    assert!(
        matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("content policy")),
        "{err:?}"
    );
}

#[test]
fn from_spec_names_the_missing_field() {
    let mut spec = ChannelSpec::new("oai", ProviderKind::OpenaiImages);
    let err = gengate_providers::for_channel(&spec, None).err().unwrap();
    assert_eq!(
        (err.channel.as_str(), err.field.as_str()),
        ("oai", "base_url"),
        "{err}"
    );
    // A self-hosted server without a key is fine.
    spec.base_url = Some("http://127.0.0.1:9/v1".into());
    let p = gengate_providers::for_channel(&spec, None).unwrap();
    assert_eq!(p.kind(), "openai-images");
}
