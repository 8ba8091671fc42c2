//! `gengate tasks`, the CLI client of a running gengate: submit and wait
//! writes the results, `--json` parses, and the exit codes say how it went
//! (0 completed, 1 failed or canceled, 2 bad usage or no answer).

use std::path::Path;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::procs::{ADMIN, BIN, Place, serve};
use crate::harness::{Backend, sharing_the_machine};

/// `gengate tasks ARGS` against `url` with `key`: exit code, stdout, stderr.
async fn tasks(
    url: &str,
    key: Option<&str>,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("tasks")
        .args(args)
        .env("GENGATE_URL", url)
        .env_remove("GENGATE_KEY")
        // Its own directory: settings read from nowhere else.
        .current_dir(std::env::temp_dir());
    if let Some(key) = key {
        cmd.env("GENGATE_KEY", key);
    }
    let out = cmd.output().await.expect("the CLI runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn submit_wait_get_list_cancel_and_exit_codes() {
    let _machine = sharing_the_machine().await;
    let place = Place::new(Backend::Sqlite).await;
    let gw = serve(&place, &["--sandbox-latency-ms", "1500"]).await;
    let url = gw.base.as_str();
    let out_dir = place.dir.path().join("results");
    let out_arg = out_dir.to_str().unwrap();

    // Submit and wait: completed (0), its files written.
    let (code, out, err) = tasks(
        url,
        Some(ADMIN),
        &[
            "--json",
            "submit",
            "--model",
            "ray-2",
            "--prompt",
            "a lighthouse",
            "--kind",
            "video",
            "--wait",
            "--output",
            out_arg,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let done = json(&out);
    assert_eq!(done["state"], "completed", "{done}");
    let id = done["id"].as_str().unwrap().to_string();
    let video = out_dir.join(format!("{id}-video-0.mp4"));
    let bytes = std::fs::read(&video).unwrap_or_else(|e| panic!("{}: {e}", video.display()));
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4");
    assert!(Path::new(&out_dir.join(format!("{id}-thumbnail-0.jpg"))).exists());

    // Get and list, as JSON and as lines.
    let (code, out, _) = tasks(url, Some(ADMIN), &["--json", "get", &id]).await;
    assert_eq!((code, json(&out)["id"].as_str()), (0, Some(id.as_str())));
    let (code, out, _) = tasks(url, Some(ADMIN), &["list", "--state", "completed"]).await;
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with(&id), "{out}");
    let (code, out, _) = tasks(url, Some(ADMIN), &["--json", "list", "--limit", "1"]).await;
    assert_eq!((code, json(&out)["data"].as_array().unwrap().len()), (0, 1));

    // Canceled while waited for: 1. Plain lines off a terminal. It starts
    // from a picture file, sent inside the request.
    let picture = place.dir.path().join("start.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 40, 40]))
        .save(&picture)
        .unwrap();
    let submit_slow = |image: &str| {
        [
            "--json",
            "submit",
            "--model",
            "ray-2",
            "--prompt",
            "to cancel",
            "--kind",
            "video",
            "--image",
            image,
        ]
        .map(str::to_string)
    };
    let missing = place.dir.path().join("missing.png");
    let (code, _, err) = tasks(url, Some(ADMIN), &submit_slow(missing.to_str().unwrap())).await;
    assert_eq!(code, 2);
    assert!(err.contains("--image"), "{err}");
    let (code, out, err) = tasks(url, Some(ADMIN), &submit_slow(picture.to_str().unwrap())).await;
    assert_eq!(code, 0, "{err}");
    let submitted = json(&out);
    assert_eq!(
        submitted["input"]["images"],
        serde_json::json!([{"role": "start"}])
    );
    let slow = submitted["id"].as_str().unwrap().to_string();
    let (code, out, _) = tasks(url, Some(ADMIN), &["--json", "cancel", &slow]).await;
    assert_eq!((code, json(&out)["state"].as_str()), (0, Some("canceled")));
    let (code, out, err) = tasks(url, Some(ADMIN), &["wait", &slow, &id]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("{slow} canceled")), "{err}");
    assert!(out.contains(&format!("{id}  completed")), "{out}");

    // 2: no key, a refused key, no gengate there, bad usage.
    let (code, _, err) = tasks(url, None, &["list"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("GENGATE_KEY"), "{err}");
    let (code, _, err) = tasks(url, Some("gg_wrong"), &["list"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = tasks("http://127.0.0.1:9", Some(ADMIN), &["list"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no answer"), "{err}");
    let (code, _, _) = tasks(url, Some(ADMIN), &["submit", "--model", "ray-2"]).await;
    assert_eq!(code, 2, "--prompt is required");
    let (code, _, err) = tasks(url, Some(ADMIN), &["get", "nope"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("404"), "{err}");

    // What the requests left on /metrics: counted by API, route and status;
    // the queue's depth.
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created = metrics.lines().find(|l| {
        l.starts_with("gengate_http_requests_total{")
            && [
                "api=\"gengate\"",
                "route=\"/v1/tasks\"",
                "method=\"POST\"",
                "status=\"201\"",
            ]
            .iter()
            .all(|part| l.contains(part))
    });
    assert!(created.is_some_and(|l| l.ends_with(" 2")), "{metrics}");
    assert!(
        metrics.contains("status=\"404\""),
        "the refused get is counted"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gengate_tasks_open ")),
        "{metrics}"
    );
    drop(gw);
    place.finish().await;
}
