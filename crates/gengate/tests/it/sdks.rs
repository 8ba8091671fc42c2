//! The official Python SDKs, unchanged, pointed at gengate: `lumaai`
//! (Luma's official API) and `openai` (`images.generate`, `videos.*`). They run from a
//! virtual environment made by `crates/testkit/python/venv.sh` with the pinned
//! `tests/sdk/requirements.txt`, from the registry: `.ci/run` makes it,
//! and a test makes it if it is missing. Without Python or the registry,
//! the tests skip, except under `CI=true`, where they fail.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Backend, Gateway, TestApp, sandbox_channel};
use base64::Engine as _;
use serde_json::Value;

on_both_backends!(
    the_lumaai_sdk_works_unchanged,
    the_openai_sdk_works_unchanged,
    the_openai_sdk_makes_videos_unchanged
);

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// The SDK venv's python (the venv made first if needed); `None` to skip.
fn python() -> Option<PathBuf> {
    let requirements = sdk_dir().join("requirements.txt");
    gengate_testkit::python::venv_bin("sdk-venv", "GENGATE_SDK_VENV", &requirements)
        .map(|bin| bin.join("python"))
}

/// Run `script` against `gw` with `key`; its last line of output is JSON.
fn run(python: &std::path::Path, script: &str, gw: &Gateway, key: &str) -> Value {
    let out = Command::new(python)
        .arg(sdk_dir().join(script))
        .env("GENGATE_URL", &gw.base)
        .env("GENGATE_KEY", key)
        // Loopback only, whatever the machine's proxy settings say.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"))
}

async fn the_lumaai_sdk_works_unchanged(backend: Backend) {
    let Some(python) = python() else { return };
    let gw = TestApp::on(backend).sandbox_latency_ms(200).start().await;
    let key = gw.new_key_with("lumaai", 500).await;
    let out = tokio::task::block_in_place(|| run(&python, "lumaai_client.py", &gw, &key));
    let (status, ct, mp4) = gw.bytes(out["video"].as_str().unwrap()).await;
    assert_eq!((status, ct.as_str()), (200, "video/mp4"));
    let probe = gengate_media::probe_mp4(&mp4).expect("an MP4");
    assert_eq!((probe.width, probe.height), (288, 512), "9:16");
    // What the SDK deleted is gone from gengate's own API; the rest is there.
    let (status, _) = gw
        .get(
            &format!("/v1/tasks/{}", out["deleted"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(status, 404);
    for id in out["kept"].as_array().unwrap() {
        let (status, t) = gw
            .get(&format!("/v1/tasks/{}", id.as_str().unwrap()), &key)
            .await;
        assert_eq!(
            (status, t["state"].as_str()),
            (200, Some("completed")),
            "{t}"
        );
    }
    gw.stop().await;
}

async fn the_openai_sdk_works_unchanged(backend: Backend) {
    let Some(python) = python() else { return };
    let gw = TestApp::on(backend)
        .channel(sandbox_channel("sandbox", &["dall-e-2", "dall-e-3"], 200))
        .start()
        .await;
    let key = gw.new_key("openai").await;
    let out = tokio::task::block_in_place(|| run(&python, "openai_client.py", &gw, &key));
    let png = base64::engine::general_purpose::STANDARD
        .decode(out["b64"].as_str().unwrap())
        .unwrap();
    let img = image::load_from_memory(&png).expect("an image");
    assert_eq!(
        (img.width(), img.height()),
        (512, 512),
        "the size asked for"
    );
    let (status, _, bytes) = gw.bytes(out["url"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    image::load_from_memory(&bytes).expect("the URL serves an image");
    // The tasks are the key's, two made, none twice by a retry.
    let (_, listed) = gw.get("/v1/tasks", &key).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    // models.list read the catalogue: the channels' models.
    assert_eq!(
        out["models"],
        serde_json::json!(["dall-e-2", "dall-e-3"]),
        "{out}"
    );
    gw.stop().await;
}

async fn the_openai_sdk_makes_videos_unchanged(backend: Backend) {
    let Some(python) = python() else { return };
    let gw = TestApp::on(backend)
        .channel(sandbox_channel("sandbox", &["sora-2"], 200))
        .start()
        .await;
    let key = gw.new_key("openai").await;
    let out = tokio::task::block_in_place(|| run(&python, "openai_videos_client.py", &gw, &key));
    // What the SDK saw is what gengate holds: two videos (one deleted), the
    // remix made from the first.
    let (_, listed) = gw.get("/v1/videos", &key).await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            out["remix"].as_str().unwrap(),
            out["made"].as_str().unwrap()
        ]
    );
    assert!(out["video_bytes"].as_u64().unwrap() > 1000, "{out}");
    gw.stop().await;
}
