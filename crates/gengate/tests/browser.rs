//! Headless Chromium loads, seeks and plays the sandbox's MP4 from gengate.
//! `.ci/run` installs Chromium; under `CI=true` its absence fails the test.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Backend, Gateway};
use serde_json::{Value, json};

on_both_backends!(chromium_plays_and_seeks_the_sandbox_video,);

fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "Chromium is required under CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: Chromium not installed (apt-get install chromium, or run .ci/run)");
    }
    found
}

const PAGE: &str = r#"<!doctype html><html><body><div id="out">pending</div>
<video id="v" muted preload="auto" src="VIDEO_URL"></video>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
const report = (extra) => out.textContent = JSON.stringify(Object.assign({
  duration: v.duration, width: v.videoWidth, height: v.videoHeight,
  ready: v.readyState, time: v.currentTime,
  canplay: v.canPlayType('video/mp4; codecs="avc1.42E01E"')}, extra));
let seekedAt = null;
v.addEventListener('loadedmetadata', () => { v.currentTime = 2.5; });
v.addEventListener('seeked', () => { if (seekedAt === null) { seekedAt = v.currentTime; v.play(); } });
v.addEventListener('timeupdate', () => {
  if (seekedAt !== null && v.currentTime > seekedAt + 0.5) report({seeked: seekedAt, played: true});
});
v.addEventListener('error', () => report({error: v.error && v.error.code}));
</script></body></html>"#;

async fn chromium_plays_and_seeks_the_sandbox_video(backend: Backend) {
    let Some(chromium) = chromium() else { return };
    let gw = Gateway::start(backend).await;
    let (_, v) = gw
        .post(
            "/luma/generations",
            &gw.admin,
            json!({"user_prompt": "browser"}),
        )
        .await;
    let task = gw.wait_luma(&gw.admin, v["id"].as_str().unwrap()).await;
    let url = task["video"]["url"].as_str().unwrap();

    let page = gw.dir.path().join("play.html");
    std::fs::write(&page, PAGE.replace("VIDEO_URL", url)).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("Chromium finishes")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let report = dom
        .split("<div id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</div>").next())
        .unwrap_or_else(|| {
            panic!(
                "no report in {dom}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let r: Value = serde_json::from_str(&report.replace("&quot;", "\""))
        .unwrap_or_else(|_| panic!("report: {report}"));
    assert_eq!(r["canplay"], "probably", "{r}");
    assert_eq!(r["played"], true, "{r}");
    assert!((r["duration"].as_f64().unwrap() - 5.0).abs() < 0.05, "{r}");
    assert_eq!(
        (r["width"].as_u64(), r["height"].as_u64()),
        (Some(512), Some(288)),
        "{r}"
    );
    assert!(r["ready"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["seeked"].as_f64().unwrap() >= 2.4, "{r}");
    gw.stop().await;
}
