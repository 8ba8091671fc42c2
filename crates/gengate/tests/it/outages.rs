//! The database going away under a running gengate: PostgreSQL cut off
//! (through a gate), SQLite on a full disk. The API answers 503 with
//! `Retry-After` at once (never a hang, never a 500), the engine backs off
//! instead of storming, and once the database is back every acknowledged
//! task finishes and nothing is half-written.

use std::time::{Duration, Instant};

use gengate_testkit::{PgTestDb, TcpGate};
use serde_json::{Value, json};

use crate::harness::procs::{ADMIN, Place, serve};
use crate::harness::{events, poll_until};

/// Submit one image task through `/v1/tasks`: its id when accepted, or the
/// refusal's status and `Retry-After`.
async fn submit(http: &reqwest::Client, base: &str, n: usize) -> Result<String, (u16, String)> {
    let body =
        json!({"model": "flux", "kind": "image", "input": {"prompt": format!("outage {n}")}});
    let resp = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(ADMIN)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("an answer, not a hang");
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        201 => Ok(v["id"].as_str().unwrap().to_string()),
        _ => Err((status, retry)),
    }
}

/// Every id terminal, and how many completed.
async fn all_terminal(http: &reqwest::Client, base: &str, ids: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut completed = 0;
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        events::wait_done(http, base, ADMIN, id, left).await;
        let v: Value = http
            .get(format!("{base}/v1/tasks/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["state"].as_str() {
            Some("completed") => completed += 1,
            Some("failed" | "canceled" | "timed_out") => {}
            other => panic!("task {id} is {other:?}"),
        }
    }
    completed
}

/// While the database is unreachable: submits, reads and readiness answer
/// 503 with `Retry-After` within seconds; liveness stays 200.
async fn answers_while_down(http: &reqwest::Client, base: &str, known: &str) {
    for n in 0..5 {
        let started = Instant::now();
        let (status, retry) = submit(http, base, 1000 + n).await.expect_err("refused");
        assert_eq!(status, 503, "a submit while the database is down");
        assert!(!retry.is_empty(), "with Retry-After");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "answered, not hung"
        );
    }
    let resp = http
        .get(format!("{base}/v1/tasks/{known}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let live = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
}

/// Failed claims counted on /metrics: the engine noticed and backs off.
async fn claim_failures(http: &reqwest::Client, base: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("gengate_store_errors_total{op=\"claim\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_cut_off_answers_503_and_everything_resumes() {
    let _turn = crate::harness::sharing_the_machine().await;
    let Some(db) = PgTestDb::create().await else {
        return;
    };
    let gate = TcpGate::to("127.0.0.1:5432".parse().unwrap()).await;
    let gated = db
        .url
        .replacen(":5432/", &format!(":{}/", gate.addr.port()), 1);
    let place = Place {
        dir: tempfile::tempdir().unwrap(),
        pg: None,
    };
    let flags = ["--database-url", &gated, "--sandbox-latency-ms", "500"];
    let p = serve(&place, &flags).await;
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..10 {
        accepted.push(submit(&http, &p.base, n).await.expect("accepted"));
    }

    gate.shut();
    answers_while_down(&http, &p.base, &accepted[0]).await;
    // Several seconds down: the engine's claims fail, a few times, not a storm.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let failed = claim_failures(&http, &p.base).await;
    assert!(
        (1.0..=12.0).contains(&failed),
        "{failed} failed claims in ~8 s"
    );

    gate.open();
    poll_until(
        "accepting again",
        Duration::from_secs(30),
        Duration::from_millis(300),
        async || {
            submit(&http, &p.base, 99)
                .await
                .map(|id| accepted.push(id))
                .map_err(|e| format!("{e:?}"))
        },
    )
    .await;
    let completed = all_terminal(&http, &p.base, &accepted).await;
    assert_eq!(
        completed,
        accepted.len(),
        "every acknowledged task completed"
    );

    // Nothing half-written: every stored task is one a client was given.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored as usize, accepted.len());
    let log = std::fs::read_to_string(place.dir.path().join("gengate.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    drop(p);
    db.drop_db().await;
}

/// A tmpfs of `mb` MiB mounted at a new directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").is_err(),
                "mounting a tmpfs (needs root) failed under CI"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    /// Fill what is left with a ballast file.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.path().join("ballast")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_on_a_full_disk_answers_503_and_recovers_uncorrupted() {
    let _turn = crate::harness::sharing_the_machine().await;
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    // Database, results and the log all on the small disk, as on a
    // machine with one: log lines that cannot be written are dropped, not
    // fatal (they used to panic the connection's task, closing it unanswered).
    let place = Place {
        dir: tempfile::tempdir_in(disk.dir.path()).unwrap(),
        pg: None,
    };
    let p = serve(&place, &["--sandbox-latency-ms", "300"]).await;
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..5 {
        accepted.push(submit(&http, &p.base, n).await.expect("accepted"));
    }
    all_terminal(&http, &p.base, &accepted).await;

    disk.fill();
    // Writes now fail; a short burst of submits is refused, none half-kept.
    let mut refused = 0;
    for n in 0..20 {
        match submit(&http, &p.base, 100 + n).await {
            Ok(id) => accepted.push(id),
            Err((status, retry)) => {
                assert_eq!(status, 503, "a full disk is a 503, not a {status}");
                assert!(!retry.is_empty());
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full disk refused nothing");

    disk.free();
    poll_until(
        "accepting again",
        Duration::from_secs(30),
        Duration::from_millis(300),
        async || {
            submit(&http, &p.base, 999)
                .await
                .map(|id| accepted.push(id))
                .map_err(|e| format!("{e:?}"))
        },
    )
    .await;
    let completed = all_terminal(&http, &p.base, &accepted).await;
    assert_eq!(completed, accepted.len());
    drop(p);
    // The database is whole, and holds exactly the acknowledged tasks.
    let url = format!("sqlite://{}", place.dir.path().join("gengate.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored as usize, accepted.len());
}
