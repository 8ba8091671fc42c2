//! The gengate under test: the release binary, as its own process, on a
//! fresh data directory, on loopback.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const KEY: &str = "gg_bench_admin_key_0123456789abcdefghijklmnopqrst";

pub struct Gateway {
    pub base: String,
    child: Child,
    /// Removed when the gateway is dropped (after the process is killed).
    dir: tempfile::TempDir,
    /// The largest private memory seen so far, in kB (see [`Gateway::peak_private_mib`]).
    private_peak: Arc<AtomicU64>,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Build the release binary (a no-op when it is up to date).
pub fn build() -> anyhow::Result<PathBuf> {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "gengate"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build --release -p gengate failed");
    Ok(workspace_root().join("target/release/gengate"))
}

impl Gateway {
    pub async fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Gateway> {
        Gateway::start_in(bin, tempfile::tempdir()?, extra).await
    }

    /// Start on an existing data directory (one a stopped gateway left).
    pub async fn start_in(
        bin: &Path,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> anyhow::Result<Gateway> {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--allow-network", "127.0.0.1/32"])
            .args(extra)
            .env("GENGATE_ADMIN_KEY", KEY)
            .env("GENGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting gengate")?;
        let stdout = child.stdout.take().context("gengate's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("gengate listening on ") {
                    return Some(addr.to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("gengate did not start listening")?;
        let private_peak = Arc::new(AtomicU64::new(0));
        if let Some(pid) = child.id() {
            tokio::spawn(watch_private(pid, private_peak.clone()));
        }
        Ok(Gateway {
            base,
            child,
            dir,
            private_peak,
        })
    }

    /// The gateway's data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The SQLite database in the data directory.
    pub fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("gengate.db").display())
    }

    /// Stop with SIGTERM (a clean drain) and hand back the data directory.
    pub async fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        let pid = self.child.id().context("gengate already exited")?;
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(term.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("gengate did not stop within 60 s of SIGTERM")??;
        Ok(self.dir)
    }

    /// CPU time the gateway has used so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces), from the 3rd:
        // utime and stime are the 14th and 15th, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // /proc counts in USER_HZ, which Linux fixes at 100 for its ABI.
        Some(Duration::from_millis(ticks * 10))
    }

    /// Peak resident memory so far (VmHWM), in MiB. It counts the pages of
    /// the database file that SQLite maps (`mmap_size`): page cache the
    /// kernel may drop at will, resident only while mapped.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let kb = status_kb(self.child.id()?, &["VmHWM"])?;
        Some(kb as f64 / 1024.0)
    }

    /// Peak private memory so far, in MiB: resident memory that is gengate's
    /// own (anonymous and shared memory, not mapped files), sampled every
    /// 50 ms and now.
    pub fn peak_private_mib(&self) -> Option<f64> {
        let now = status_kb(self.child.id()?, PRIVATE)?;
        let kb = self.private_peak.fetch_max(now, Ordering::Relaxed).max(now);
        Some(kb as f64 / 1024.0)
    }
}

/// The fields of `/proc/<pid>/status` that make up private memory.
const PRIVATE: &[&str] = &["RssAnon", "RssShmem"];

/// The sum of `fields` of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, fields: &[&str]) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    fields.iter().try_fold(0, |sum, field| {
        let kb = status.lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })?;
        Some(sum + kb)
    })
}

/// Keep `peak` at the largest private memory of process `pid` until it exits.
async fn watch_private(pid: u32, peak: Arc<AtomicU64>) {
    while let Some(kb) = status_kb(pid, PRIVATE) {
        peak.fetch_max(kb, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
