//! The console in a real browser: headless Debian Chromium driven by
//! playwright-core (`tests/console/console.test.mjs`, pinned in its
//! package-lock.json, installed by `.ci/run` or here). Sign-in, the
//! playground, the live task table, a task's media, a cancel, another key's
//! task out of sight, an admin's keys and channels; screenshots of every
//! page at 1280×800 in `target/console-screenshots/`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::browser::chromium;
use crate::harness::{Backend, TestApp, sharing_the_machine};

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// playwright-core in `tests/console/node_modules`, installed from the lock
/// file when missing; `false` (a skip) when npm is missing outside CI.
async fn playwright() -> bool {
    let dir = console_dir();
    if dir.join("node_modules/playwright-core").exists() {
        return true;
    }
    let installed = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !installed {
        assert!(
            std::env::var("CI").is_err(),
            "playwright-core is required under CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: could not install playwright-core (npm ci in tests/console)");
    }
    installed
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_browser() {
    let _machine = sharing_the_machine().await;
    let Some(chromium) = chromium() else { return };
    if !playwright().await {
        return;
    }
    // Slow enough to see a task before it completes, and to cancel one.
    let gw = TestApp::on(Backend::Sqlite)
        .sandbox_latency_ms(3000)
        .start()
        .await;
    let (user, other) = (gw.new_key("console user").await, gw.new_key("other").await);
    let body = json!({"model": "ray-2", "kind": "video", "input": {"prompt": "not yours"}});
    let (s, theirs) = gw.post("/v1/tasks", &other, body).await;
    assert_eq!(s, 201, "{theirs}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let run = tokio::process::Command::new("node")
        .arg("console.test.mjs")
        .current_dir(console_dir())
        .env("BASE", &gw.base)
        .env("USER_KEY", &user)
        .env("ADMIN_KEY", &gw.admin)
        .env("OTHER_TASK", theirs["id"].as_str().unwrap())
        .env("SHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the browser run ends")
        .expect("node runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        stdout.trim(),
        stderr
            .lines()
            .filter(|l| !l.contains("OpenH264"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["foreign"], json!([]), "{seen}");
    assert_eq!(seen["palette"]["count"], 25, "{seen}");
    assert_eq!(seen["sandboxHealth"], "ok", "{seen}");
    assert_eq!(seen["price"], "7", "{seen}");
    let (_, prices) = gw.get("/admin/prices", &gw.admin).await;
    let ray = prices["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == "ray-2");
    assert_eq!(
        ray.map(|p| p["per_task"].clone()),
        Some(json!(7)),
        "{prices}"
    );
    let (_, spare) = gw.get("/admin/channels/spare", &gw.admin).await;
    assert_eq!(
        spare["enabled"], false,
        "added and disabled in the console: {spare}"
    );
    // The page saw the task before it ended, and the store agrees it ended.
    assert!(
        matches!(seen["before"].as_str(), Some("pending" | "processing")),
        "{seen}"
    );
    let (_, t) = gw
        .get(
            &format!("/v1/tasks/{}", seen["task"].as_str().unwrap()),
            &user,
        )
        .await;
    assert_eq!(t["state"], "completed");
    let (_, c) = gw
        .get(
            &format!("/v1/tasks/{}", seen["canceled"].as_str().unwrap()),
            &user,
        )
        .await;
    assert_eq!(c["state"], "canceled");
    for page in [
        "sign-in",
        "playground",
        "tasks",
        "task",
        "usage",
        "keys",
        "channels",
        "admin-task",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG", "{page}");
    }
    // The console's own headers: its policy allows this origin only.
    let resp = gw
        .http
        .get(format!("{}/console/", gw.base))
        .send()
        .await
        .unwrap();
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    gw.stop().await;
}

/// Every metric the Grafana dashboard queries is in the README's list, and
/// every metric listed there is recorded somewhere in the code.
#[test]
fn the_dashboard_and_the_metric_list_agree_with_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("gengate_") && w.len() > "gengate_".len())
            .map(String::from)
            .collect()
    };
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/gengate.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("## Metrics")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let listed = names(section);
    let queried = names(&dashboard);
    assert!(
        queried.is_subset(&listed),
        "not listed: {:?}",
        queried.difference(&listed)
    );
    let mut code = String::new();
    for krate in ["core", "engine", "server", "store", "providers"] {
        let dir = root.join("crates").join(krate).join("src");
        for entry in walk(&dir) {
            code.push_str(&std::fs::read_to_string(entry).unwrap());
        }
    }
    let recorded = names(&code);
    assert!(
        listed.is_subset(&recorded),
        "not recorded: {:?}",
        listed.difference(&recorded)
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}
