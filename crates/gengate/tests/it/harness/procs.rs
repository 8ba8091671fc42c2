//! Running the real `gengate` binary: where its data lives, starting it,
//! its command line, and HTTP calls a client makes.

use std::process::Stdio;
use std::time::Duration;

use gengate_testkit::PgTestDb;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Backend;

/// Where a test's processes keep their data: a directory, and a fresh
/// PostgreSQL database when the backend is PostgreSQL.
pub struct Place {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgTestDb>,
}

impl Place {
    pub async fn new(backend: Backend) -> Place {
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgTestDb::create().await.expect("PostgreSQL reachable")),
        };
        Place {
            dir: tempfile::tempdir().unwrap(),
            pg,
        }
    }

    /// `--data-dir` and, for PostgreSQL, `--database-url`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--data-dir".to_string(),
            self.dir.path().display().to_string(),
        ];
        if let Some(db) = &self.pg {
            a.extend(["--database-url".to_string(), db.url.clone()]);
        }
        a
    }

    pub async fn finish(self) {
        if let Some(db) = self.pg {
            db.drop_db().await;
        }
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_gengate");
pub const ADMIN: &str = "gg_test_admin_key_0123456789abcdefghijklmnopq";

pub struct Proc {
    pub child: Child,
    pub base: String,
    pub stdout: Vec<String>,
}

/// Start `gengate serve` on a free port; returns once it listens.
pub async fn serve(place: &Place, extra: &[&str]) -> Proc {
    serve_with_env(place, extra, &[]).await
}

/// [`serve`] with environment variables set for the process.
pub async fn serve_with_env(place: &Place, extra: &[&str], env: &[(&str, String)]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(place.dir.path().join("gengate.log"))
        .unwrap();
    let mut command = Command::new(BIN);
    loopback_aws(&mut command).envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(place.args())
        .args(extra)
        .env("GENGATE_ADMIN_KEY", ADMIN)
        .env_remove("GENGATE_LISTEN")
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("gengate starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push(line.clone());
            if let Some(addr) = line.strip_prefix("gengate listening on ") {
                return addr.to_string();
            }
        }
        panic!("gengate exited before listening: {stdout:?}");
    })
    .await
    .expect("listening in time");
    Proc {
        child,
        base,
        stdout,
    }
}

pub async fn cli(place: &Place, args: &[&str]) -> (bool, String, String) {
    cli_env(place, args, &[]).await
}

/// [`cli`] with environment variables set for the command.
pub async fn cli_env(place: &Place, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(BIN);
    loopback_aws(&mut command).envs(env.iter().copied());
    let out = command
        .args(args)
        .args(place.args())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The machine's `AWS_*` variables removed (a developer's own endpoint or
/// credentials must not leak into a test), and instance metadata, which S3
/// clients ask for credentials when none are given, pointed at a closed
/// loopback port: a test's storage traffic stays on 127.0.0.1.
fn loopback_aws(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(name);
    }
    let closed = gengate_testkit::fixtures::closed_port();
    cmd.env(
        "AWS_METADATA_ENDPOINT",
        format!("http://127.0.0.1:{closed}"),
    )
}

pub async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}
