//! Headless Chromium loads, seeks and plays the sandbox's MP4 from gengate,
//! and renders the API reference page with nothing but gengate to reach.
//! `.ci/run` installs Chromium; under `CI=true` its absence fails the test.

use std::path::PathBuf;
use std::time::Duration;

use crate::harness::{Backend, TestApp};
use serde_json::{Value, json};

on_both_backends!(
    chromium_plays_and_seeks_the_sandbox_video,
    the_api_reference_renders_every_api_offline,
);

pub(crate) fn chromium() -> Option<PathBuf> {
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

/// The page's DOM after up to 20 s of (virtual) time, and Chromium's
/// stderr. Only loopback resolves: any other host fails, so a page that
/// needed the internet would show it.
async fn dump_dom(chromium: &std::path::Path, url: &str, extra: &[&str]) -> (String, String) {
    // One Chromium at a time: several at once on a small machine starve
    // each other, and a page's media can miss its (virtual) time budget.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
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
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("Chromium finishes")
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn chromium_plays_and_seeks_the_sandbox_video(backend: Backend) {
    let Some(chromium) = chromium() else { return };
    let gw = TestApp::on(backend).start().await;
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
    let (dom, stderr) = dump_dom(
        &chromium,
        &format!("file://{}", page.display()),
        &["--autoplay-policy=no-user-gesture-required"],
    )
    .await;
    let report = dom
        .split("<div id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</div>").next())
        .unwrap_or_else(|| panic!("no report in {dom}\n{}", stderr));
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

async fn the_api_reference_renders_every_api_offline(backend: Backend) {
    let gw = TestApp::on(backend).start().await;
    // The page and what it loads are gengate's own: no absolute URL.
    let (status, ct, html) = gw.bytes(&format!("{}/docs/", gw.base)).await;
    assert_eq!((status, ct.as_str()), (200, "text/html"));
    let html = String::from_utf8(html).unwrap();
    for attr in ["src=\"", "href=\""] {
        for link in html.split(attr).skip(1) {
            let link = link.split('"').next().unwrap();
            assert!(!link.contains("//"), "the page loads {link} from elsewhere");
            let (status, _, _) = gw.bytes(&format!("{}/docs/{link}", gw.base)).await;
            assert_eq!(status, 200, "{link}");
        }
    }
    let (status, _, init) = gw
        .bytes(&format!("{}/docs/swagger-initializer.js", gw.base))
        .await;
    assert_eq!(status, 200);
    let init = String::from_utf8(init).unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    let Some(chromium) = chromium() else {
        gw.stop().await;
        return;
    };
    let (dom, stderr) = dump_dom(&chromium, &format!("{}/docs/", gw.base), &[]).await;
    for shown in [
        "/dream-machine/v1/generations/video",
        "/v1/images/generations",
        "/v1/tasks/{id}/events",
        "/luma/tasks",
        "/kling/v1/images/generations",
        "opblock-tag",
    ] {
        assert!(
            dom.contains(shown),
            "the page does not show {shown}:\n{dom}\n{stderr}"
        );
    }
    gw.stop().await;
}
